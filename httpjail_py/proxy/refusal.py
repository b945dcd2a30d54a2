"""What a refused request gets back: a short text saying why, and the reason as a header
(`X-Httpjail-Reason`) that an agent can act on, with the status that fits the reason."""

from __future__ import annotations

from mitmproxy import http

from httpjail_py.engines.base import Decision, Reason

__all__ = ["BLOCKED_MESSAGE", "STATUS", "blocked_response"]

BLOCKED_MESSAGE = "Request blocked by httpjail"
# A refusal's status when it is not 403.
STATUS = {
    Reason.BODY_LIMIT: 413,
    Reason.RATE_LIMIT: 429,
    Reason.UPSTREAM_ERROR: 502,
    Reason.CONNECTION_LIMIT: 503,
}


def blocked_response(decision: Decision) -> http.Response:
    """Our refusal: text/plain, `Request blocked by httpjail` and a line saying why."""
    reason_line = decision.message or "denied"
    headers = {
        "Content-Type": "text/plain; charset=utf-8",
        "HTTPJAIL": "true",
        "X-Httpjail-Reason": str(decision.reason),
        "Cache-Control": "no-store",
    }
    if decision.reason is Reason.RATE_LIMIT:
        headers["Retry-After"] = "1"
    body = f"{BLOCKED_MESSAGE}\n{reason_line}\n"
    return http.Response.make(STATUS.get(decision.reason, 403), body, headers)
