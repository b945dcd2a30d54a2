"""The run's configuration: one frozen `Config`, built by the CLI, read by everything else.

The `parse_*` functions are pure and raise `ValueError`; the CLI turns that into a
`ConfigError` naming the flag and the value.
"""

from __future__ import annotations

import enum
import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from httpjail_py.credentials import Credentials
from httpjail_py.ratelimit import RateLimit

__all__ = [
    "Config",
    "Listener",
    "RunMode",
    "RuleSource",
    "Bind",
    "parse_bind",
    "parse_resolve",
    "DEFAULT_JS_TIME_LIMIT",
    "JAIL_POOL",
    "DEFAULT_HEADER_TIMEOUT",
    "DEFAULT_CONNECT_TIMEOUT",
    "DEFAULT_MAX_IN_FLIGHT",
]

DEFAULT_JS_TIME_LIMIT = 0.1  # seconds of CPU a JS rule may use per request
# Requests in flight per jail: generous, it protects the host (file descriptors, memory),
# not anyone's traffic.
DEFAULT_MAX_IN_FLIGHT = 1000
# Seconds a client may take to send a request head (slowloris); see proxy/slowclients.py.
DEFAULT_HEADER_TIMEOUT = 30.0
# Seconds for the TCP connect to an upstream: a destination that drops SYNs would otherwise
# hold the request for the kernel's two minutes of retries.
DEFAULT_CONNECT_TIMEOUT = 30.0
# Where strong jails take their /30s from: the proxy never dials into it.
JAIL_POOL = ipaddress.IPv4Network("10.200.0.0/16")


class RunMode(enum.Enum):
    RUN = "run"  # jail a child command
    SERVER = "server"  # standalone proxy, no child
    TEST = "test"  # evaluate the rule against one URL and exit
    CLEANUP = "cleanup"  # remove what killed jails left behind, and exit


@dataclass(frozen=True, slots=True, kw_only=True)
class RuleSource:
    """Where the rule comes from: `kind` is `js`, `js-file`, `sh`, `proc` or `deny-all`."""

    kind: str
    text: str = ""
    path: Path | None = None


@dataclass(frozen=True, slots=True)
class Bind:
    host: str
    port: int

    def __str__(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"


@dataclass(frozen=True, slots=True)
class Listener:
    """One proxy listener: `regular` (a forward proxy: HTTP_PROXY, CONNECT) or
    `transparent` (connections redirected by the jail's NAT, destination from
    SO_ORIGINAL_DST)."""

    mode: str
    bind: Bind

    def spec(self) -> str:
        """The mitmproxy mode spec, e.g. `transparent@10.200.0.1:0`."""
        return f"{self.mode}@{self.bind}"


@dataclass(frozen=True, slots=True, kw_only=True)
class Config:
    mode: RunMode
    rule: RuleSource
    command: tuple[str, ...] = ()
    weak: bool = False
    docker_run: bool = False  # `command` is then `[docker run options] IMAGE [CMD...]`
    test_method: str = "GET"
    test_url: str = ""
    request_log: Path | None = None
    audit_log: Path | None = None
    timeout: float | None = None
    verbosity: int = 0
    http_bind: Bind = Bind("127.0.0.1", 0)
    https_bind: Bind = Bind("127.0.0.1", 0)
    resolve: dict[tuple[str, int], str] = field(default_factory=dict)
    upstream_cas: tuple[Path, ...] = ()
    verify_upstream: bool = True
    js_time_limit: float = DEFAULT_JS_TIME_LIMIT
    rule_timeout: float | None = None  # --sh / --proc; None: the engine's default
    allow_private: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = ()
    max_connections: int = DEFAULT_MAX_IN_FLIGHT  # requests in flight per jail
    rate: RateLimit | None = None  # requests per second per jail; None: no limit
    header_timeout: float = DEFAULT_HEADER_TIMEOUT  # seconds for a request head
    connect_timeout: float = DEFAULT_CONNECT_TIMEOUT  # seconds for an upstream TCP connect
    credentials: Credentials = Credentials()  # --secret, --secret-file, --header


def _is_number(text: str) -> bool:
    # str.isdigit() also accepts "²" (int() then fails) and other scripts' digits.
    return text.isascii() and text.isdigit()


def _parse_port(text: str) -> int:
    if not _is_number(text) or not 0 <= int(text) <= 65535:
        raise ValueError(f"{text!r} is not a port number (0-65535)")
    return int(text)


def _parse_ip(text: str) -> str:
    try:
        return str(ipaddress.ip_address(text.strip("[]")))
    except ValueError:
        raise ValueError(f"{text!r} is not an IP address") from None


def parse_bind(value: str, default: Bind) -> Bind:
    """Parse httpjail's bind syntax: `port`, `:port`, `ip:port`, `[v6]:port` or `ip`.

    Returns the bind with missing parts taken from `default`. Raises ValueError.
    """
    value = value.strip()
    if not value:
        return default
    if _is_number(value):
        return Bind(default.host, _parse_port(value))
    if value.startswith(":") and value.count(":") == 1:  # not "::1", a bare IPv6 address
        return Bind(default.host, _parse_port(value[1:]))
    if value.startswith("["):
        host, sep, rest = value[1:].partition("]")
        if not sep:
            raise ValueError(f"{value!r}: missing ']'")
        port = _parse_port(rest[1:]) if rest.startswith(":") else default.port
        if rest and not rest.startswith(":"):
            raise ValueError(f"{value!r}: expected ':port' after ']'")
        return Bind(_parse_ip(host), port)
    if value.count(":") == 1:
        host, port_text = value.split(":")
        return Bind(_parse_ip(host), _parse_port(port_text))
    return Bind(_parse_ip(value), default.port)


def parse_resolve(value: str) -> tuple[tuple[str, int], str]:
    """Parse curl's `HOST:PORT:ADDR` (ADDR may be a bracketed IPv6 address).

    Returns ((host, port), addr). Raises ValueError.
    """
    parts = value.split(":", 2)
    if len(parts) != 3 or not parts[0]:
        raise ValueError(f"{value!r} is not HOST:PORT:ADDR")
    host, port_text, addr = parts
    return (host.lower().rstrip("."), _parse_port(port_text)), _parse_ip(addr)
