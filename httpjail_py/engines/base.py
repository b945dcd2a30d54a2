"""The rule engine interface and the two values that cross it.

Every engine implements `async evaluate(RequestInfo) -> Decision` and `aclose()`.
`evaluate` never raises: an engine that fails returns a deny `Decision` whose
`reason` is `rule-error` and whose message says what went wrong (fail closed).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any, Protocol

__all__ = ["Action", "Decision", "RequestInfo", "RuleEngine", "Reason", "DEFAULT_PORTS"]

DEFAULT_PORTS = {"http": 80, "https": 443}


class Action(enum.Enum):
    ALLOW = "allow"
    DENY = "deny"


class Reason(enum.StrEnum):
    """Machine-readable cause of a decision (the `X-Httpjail-Reason` header, the audit log)."""

    RULE_ALLOWED = "rule-allowed"
    RULE_DENIED = "rule-denied"
    RULE_ERROR = "rule-error"
    BODY_LIMIT = "body-limit"
    HOST_MISMATCH = "host-mismatch"
    LOOP = "loop-detected"
    NOT_HTTP = "not-http"
    UPSTREAM_ERROR = "upstream-error"
    DESTINATION_PRIVATE = "destination-private"
    RATE_LIMIT = "rate-limit"
    CONNECTION_LIMIT = "connection-limit"
    SECRET_TO_WRONG_HOST = "secret-to-wrong-host"


@dataclass(frozen=True, slots=True, kw_only=True)
class RequestInfo:
    """What a rule sees of a request: httpjail's fields plus ours (port, query, headers, jail)."""

    method: str
    scheme: str
    host: str
    port: int
    path: str
    query: str = ""
    headers: dict[str, str] = field(default_factory=dict)
    requester_ip: str = ""
    jail: str = ""
    ip: str = ""
    """The address the proxy will dial; "" until the name is resolved (after a first
    allow: a name no rule allowed is never resolved, so DNS cannot carry data out)."""

    def __post_init__(self) -> None:
        # Rules compare header names as r.headers['content-type'], whoever built us.
        object.__setattr__(self, "headers", {k.lower(): v for k, v in self.headers.items()})

    @property
    def url(self) -> str:
        default = DEFAULT_PORTS.get(self.scheme)
        host = f"[{self.host}]" if ":" in self.host else self.host
        authority = host if self.port == default else f"{host}:{self.port}"
        query = f"?{self.query}" if self.query else ""
        return f"{self.scheme}://{authority}{self.path}{query}"

    def as_rule_input(self) -> dict[str, Any]:
        """The `r` object handed to rules (JSON-compatible)."""
        return {
            "url": self.url,
            "method": self.method,
            "scheme": self.scheme,
            "host": self.host,
            "port": self.port,
            "path": self.path,
            "query": self.query,
            "headers": dict(self.headers),
            "requester_ip": self.requester_ip,
            "jail": self.jail,
            "ip": self.ip,
        }


@dataclass(frozen=True, slots=True, kw_only=True)
class Decision:
    action: Action
    reason: Reason
    message: str | None = None  # shown in the 403 body and logged
    max_tx_bytes: int | None = None  # allow, but cap request line + headers + body

    @property
    def allowed(self) -> bool:
        return self.action is Action.ALLOW

    @classmethod
    def allow(cls, max_tx_bytes: int | None = None) -> Decision:
        return cls(action=Action.ALLOW, reason=Reason.RULE_ALLOWED, max_tx_bytes=max_tx_bytes)

    @classmethod
    def deny(cls, message: str | None = None, reason: Reason = Reason.RULE_DENIED) -> Decision:
        return cls(action=Action.DENY, reason=reason, message=message)

    @classmethod
    def error(cls, message: str) -> Decision:
        return cls(action=Action.DENY, reason=Reason.RULE_ERROR, message=message)


class RuleEngine(Protocol):
    name: str
    reads_address: bool
    """Whether the rule may look at `ip`: then an allowed request is evaluated again
    once its address is known, and both evaluations must allow."""

    async def evaluate(self, request: RequestInfo) -> Decision:
        """Decide on `request`. Never raises; failures deny with reason `rule-error`."""
        ...

    async def aclose(self) -> None: ...
