"""Signalling a process group that may already be gone."""

from __future__ import annotations

import os

__all__ = ["signal_group"]


def signal_group(pgid: int, sig: int) -> bool:
    """Send `sig` to process group `pgid`. Returns False when no such group of ours exists.

    A group outlives its leader while anything it started is still in it, so callers send
    this even after the leader exited. PermissionError means the id now names a group of
    another user: not ours to signal, and nothing of ours is left in it.
    """
    try:
        os.killpg(pgid, sig)
    except (ProcessLookupError, PermissionError):
        return False
    return True
