"""The pieces of scripts/bench: the client (run as its own process, jailed or not), the
servers it talks to, and the proxies it compares."""
