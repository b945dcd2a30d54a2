"""The Docker jail (`--docker-run`): a container whose only way out is the proxy."""
