"""The Docker jail's tests share the strong jail's sink (one per test, under a host lock)."""

from tests.jail.linux.conftest import quiet_sink

__all__ = ["quiet_sink"]
