"""What the addon remembers about one request while it is in flight (kept in flow.metadata)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from httpjail_py.engines.base import Decision, RequestInfo

__all__ = ["FlowState", "request_head_size"]


@dataclass(slots=True)
class FlowState:
    info: RequestInfo
    decision: Decision
    engine: str
    started: float = field(default_factory=time.monotonic)
    started_wall: float = field(default_factory=time.time)
    bytes_sent: int = 0
    bytes_received: int = 0
    audited: bool = False
    cut: str | None = None  # why the upload was cut off, when it was


def request_head_size(method: str, path: str, http_version: str, headers: list[tuple[str, str]]) -> int:
    """Bytes of the request line and headers as HTTP/1.1 would send them (what max_tx_bytes counts)."""
    size = len(method) + 1 + len(path.encode()) + 1 + len(http_version) + 2
    for name, value in headers:
        size += len(name.encode()) + 2 + len(value.encode()) + 2
    return size + 2
