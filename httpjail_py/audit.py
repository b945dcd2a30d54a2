"""The audit log (`--audit-log FILE`): one JSON object per request, JSON lines.

Fields, in order: `time` (UTC, ms, when the request arrived), `jail`, `client`
(address:port of the jailed client), `method`, `url`, `host`, `port`, `decision`
(`allow` or `deny`), `reason` (`rule-allowed`, `rule-denied`, `rule-error`,
`body-limit`, `host-mismatch`, `loop-detected`, `not-http`, `upstream-error`),
`message` (why, or null), `engine` (`js`, ...), `status` (the response status sent to
the client, or null when none was), `bytes_sent` (request line, headers and body sent
by the client), `bytes_received` (response headers and body), `duration_ms`.

Things refused before any rule ran get a record too, with `engine` `httpjail`: bytes
that are not HTTP (`method` `TCP` or `UDP`, `url` `host:port`), a CONNECT inside a
tunnel (`method` `CONNECT`, `url` `host:port`) and requests mitmproxy refuses as
invalid HTTP (`status` 400), all with reason `not-http`.

No header or body is ever written, so credentials do not reach this file.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass

__all__ = ["AuditRecord"]


@dataclass(frozen=True, slots=True, kw_only=True)
class AuditRecord:
    time: str
    jail: str
    client: str
    method: str
    url: str
    host: str
    port: int
    decision: str
    reason: str
    message: str | None
    engine: str
    status: int | None
    bytes_sent: int
    bytes_received: int
    duration_ms: float

    def to_json(self) -> str:
        return json.dumps(asdict(self), separators=(",", ":"), ensure_ascii=False)
