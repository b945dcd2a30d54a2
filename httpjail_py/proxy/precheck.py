"""Refusals that come before any rule and that no rule can override: a request that came
back to the same proxy (a loop), and a request whose Host header or TLS SNI names another
target than the one it is sent to (a rule would judge one name while another is reached)."""

from __future__ import annotations

from mitmproxy import http
from mitmproxy.net.http import url as mitm_url

from httpjail_py.engines.base import DEFAULT_PORTS, Decision, Reason, RequestInfo
from httpjail_py.proxy.jails import normal_host

__all__ = ["LOOP_HEADER", "precheck"]

LOOP_HEADER = "Httpjail-Loop-Prevention"


def precheck(flow: http.HTTPFlow, info: RequestInfo, loop_nonce: str) -> Decision | None:
    """The refusal of `flow`, or None when the request may go to the rule. `loop_nonce` is
    what this proxy stamps on the requests it sends (in LOOP_HEADER)."""
    request = flow.request
    if loop_nonce in request.headers.get(LOOP_HEADER, ""):
        return Decision.deny("request loop: this request came back to the same httpjail proxy", Reason.LOOP)
    host_header = request.host_header
    if host_header:
        try:
            h_host, h_port = mitm_url.parse_authority(host_header, check=True)
        except ValueError:
            return Decision.deny(f"malformed Host header {host_header!r}", Reason.HOST_MISMATCH)
        h_port = h_port or DEFAULT_PORTS.get(request.scheme, request.port)
        if (normal_host(h_host), h_port) != (normal_host(request.host), request.port):
            return Decision.deny(
                f"Host header {host_header!r} does not match the request target {info.host}:{info.port}",
                Reason.HOST_MISMATCH,
            )
    # The SNI names the target only when TLS ends here for this request: a plain http://
    # request sent over TLS to the proxy itself (an https:// proxy URL) carries the
    # proxy's name.
    sni = flow.client_conn.sni if request.scheme == "https" else None
    if sni and normal_host(sni) != normal_host(request.host):
        return Decision.deny(
            f"TLS SNI {sni!r} does not match the request target {info.host}", Reason.HOST_MISMATCH
        )
    return None
