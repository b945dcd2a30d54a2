"""Whether a process the tests started is still running."""

from __future__ import annotations

import time
from pathlib import Path


def alive(pid: int) -> bool:
    """True while `pid` runs. A zombie counts as gone: in a container, PID 1 may never
    reap the orphans it inherits."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def wait_gone(pid: int, within: float = 2.0) -> bool:
    """True once `pid` is gone; False if it still runs after `within` seconds (a SIGKILL
    takes a moment to land)."""
    end = time.monotonic() + within
    while alive(pid):
        if time.monotonic() > end:
            return False
        time.sleep(0.02)
    return True
