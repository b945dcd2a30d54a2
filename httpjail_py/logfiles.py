"""Append-only line files written off the event loop.

`LineWriter.write` only puts the line on a queue; a thread appends and flushes each line,
so a crash loses at most the line in flight and the proxy never waits on the disk.
"""

from __future__ import annotations

import datetime
import queue
import threading
from pathlib import Path

from httpjail_py.errors import ConfigError
from httpjail_py.jail.signals import block_in_this_thread

__all__ = ["LineWriter", "request_log_line", "utc_timestamp"]

_STOP = object()


def utc_timestamp(when: datetime.datetime | None = None) -> str:
    """httpjail's time format: `2025-09-22T14:23:45.123Z` (UTC, milliseconds)."""
    when = when or datetime.datetime.now(datetime.UTC)
    return when.astimezone(datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.") + f"{when.microsecond // 1000:03d}Z"


def request_log_line(allowed: bool, method: str, target: str, when: datetime.datetime | None = None) -> str:
    """One line of the request log, exactly httpjail's format."""
    return f"{utc_timestamp(when)} {'+' if allowed else '-'} {method} {target}"


class LineWriter:
    def __init__(self, path: Path, flag: str) -> None:
        try:
            self._file = open(path, "a", buffering=1, encoding="utf-8")  # noqa: SIM115
        except OSError as e:
            raise ConfigError(f"{flag} {path}: cannot open it for appending: {e.strerror or e}") from e
        self.path = path
        self._queue: queue.SimpleQueue[object] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._drain, name=f"writer {path}", daemon=True)
        self._thread.start()

    def write(self, line: str) -> None:
        self._queue.put(line)

    def _drain(self) -> None:
        block_in_this_thread()
        while (item := self._queue.get()) is not _STOP:
            self._file.write(f"{item}\n")
            self._file.flush()

    def close(self) -> None:
        """Write everything queued, then close. Blocking: call at shutdown."""
        self._queue.put(_STOP)
        self._thread.join()
        self._file.close()
