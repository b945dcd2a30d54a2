"""Run a program on a pseudo-terminal of its own, as from an interactive shell."""

from __future__ import annotations

import os
import pty
import select
import subprocess
import time
from collections.abc import Mapping, Sequence


def converse(argv: Sequence[str], env: Mapping[str, str], prompt: bytes, reply: bytes,
             until: bytes, timeout: float = 60) -> tuple[int, bytes]:
    """Start `argv` in a session of its own whose controlling terminal is a new pty
    (`setsid -c`); write `reply` once `prompt` appeared; read until `until` appeared.
    Returns (exit status, everything it wrote)."""
    primary, secondary = pty.openpty()
    proc = subprocess.Popen(["setsid", "-c", *argv], stdin=secondary, stdout=secondary, stderr=secondary,
                            env=dict(env))
    os.close(secondary)
    output = b""
    deadline = time.monotonic() + timeout
    sent = False
    try:
        while time.monotonic() < deadline and until not in output:
            ready, _, _ = select.select([primary], [], [], 0.5)
            if ready:
                try:
                    output += os.read(primary, 1024)
                except OSError:
                    break
            if prompt in output and not sent:
                os.write(primary, reply)
                sent = True
        return proc.wait(timeout=timeout), output
    finally:
        os.close(primary)
