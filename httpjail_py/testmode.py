"""`--test [METHOD] URL`: evaluate the rule against one request and print the verdict."""

from __future__ import annotations

from urllib.parse import urlsplit

from httpjail_py.engines.base import DEFAULT_PORTS, RequestInfo, RuleEngine

__all__ = ["parse_test_args", "request_from_url", "run_test"]


def parse_test_args(values: list[str]) -> tuple[str, str]:
    """httpjail's forms: `URL`, `METHOD URL`, or one argument `"METHOD URL"`."""
    if len(values) == 1:
        parts = values[0].split()
        if len(parts) == 2:
            return parts[0].upper(), parts[1]
        return "GET", values[0].strip()
    return values[0].upper(), values[1]


def request_from_url(method: str, url: str) -> RequestInfo:
    """Raises ValueError for a URL that is not http(s)://host..."""
    parts = urlsplit(url)
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        raise ValueError(f"{url!r} is not an http:// or https:// URL with a host")
    port = parts.port or DEFAULT_PORTS[scheme]
    return RequestInfo(
        method=method,
        scheme=scheme,
        host=parts.hostname.lower().rstrip("."),
        port=port,
        path=parts.path or "/",
        query=parts.query,
        headers={"host": parts.netloc.rpartition("@")[2]},
        requester_ip="127.0.0.1",
    )


async def run_test(engine: RuleEngine, method: str, url: str) -> int:
    """Print `ALLOW|DENY METHOD URL` (and the deny message on a second line). 0 allows."""
    decision = await engine.evaluate(request_from_url(method, url))
    print(f"{'ALLOW' if decision.allowed else 'DENY'} {method} {url}")
    if decision.message:
        print(decision.message)
    return 0 if decision.allowed else 1
