"""The mitmproxy addon: the one place that turns flows into `RequestInfo` and applies
`Decision`s.

Order of events for a request (all on mitmproxy's event loop):

    requestheaders  checks (loop, Host/SNI agreement: `precheck`), then the rule and the
                    destination policy (`decide`), then the secrets put in (`injector`,
                    which refuses a placeholder bound for the wrong host); deny answers
                    our 403 at once (patches: the body is not read), allow streams the
                    body upstream through a byte counter (and max_tx_bytes cut)
    server_connect  the last gate before any outbound socket: only a (host, port) that a
                    rule allowed for this client connection may be dialled, and only
                    at addresses the destination policy accepts
    responseheaders the response streams back (SSE, large downloads) through a counter
                    (and, from a secret's hosts, a filter that replaces echoed values)
    response/error  one audit record

Anything that is not HTTP (raw TCP inside a tunnel or after an upgrade, UDP), and any
request mitmproxy itself refuses as invalid (e.g. a CONNECT inside a CONNECT tunnel), is
refused and logged.
"""

from __future__ import annotations

import asyncio
import datetime
import logging
import secrets
import time
from collections.abc import Callable

from mitmproxy import http, tcp, udp
from mitmproxy.connection import Client
from mitmproxy.proxy import server_hooks

from httpjail_py.audit import AuditRecord
from httpjail_py.config import DEFAULT_HEADER_TIMEOUT
from httpjail_py.credentials import Credentials
from httpjail_py.engines.base import Decision, Reason, RequestInfo, RuleEngine
from httpjail_py.logfiles import utc_timestamp
from httpjail_py.proxy import patches
from httpjail_py.proxy.decide import decide
from httpjail_py.proxy.flowstate import FlowState, request_head_size
from httpjail_py.proxy.injector import CredentialInjector
from httpjail_py.proxy.jails import JailRegistry, is_transparent, normal_host
from httpjail_py.proxy.limits import JailLimits
from httpjail_py.proxy.precheck import LOOP_HEADER, precheck
from httpjail_py.proxy.refusal import STATUS, blocked_response
from httpjail_py.proxy.resolver import UpstreamResolver
from httpjail_py.proxy.slowclients import SlowClientGuard
from httpjail_py.proxy.transparent import TransparentGuard, close_connections
from httpjail_py.recorder import Recorder

__all__ = ["JailAddon", "LOOP_HEADER"]

log = logging.getLogger("httpjail.proxy")

_ADMITTED = "httpjail-admitted"  # the jail a request is counted against while in flight
_STATE = "httpjail"


class JailAddon:
    def __init__(
        self,
        engine: RuleEngine,
        recorder: Recorder,
        *,
        jail_id: str = "",
        resolver: UpstreamResolver | None = None,
        limits: JailLimits | None = None,
        header_timeout: float = DEFAULT_HEADER_TIMEOUT,
        credentials: Credentials | None = None,
    ) -> None:
        self.engine = engine
        self.recorder = recorder
        self.limits = limits or JailLimits()
        # Where allowed requests may go (the destination policy), and the addresses dialled.
        self.resolver = resolver or UpstreamResolver()
        self.jails = JailRegistry(jail_id)
        # Each proxy instance stamps outgoing requests with its own nonce; seeing it come
        # back means the request looped through us (httpjail issue #84).
        self.loop_nonce = secrets.token_hex(8)
        self._allowed_targets: dict[str, set[tuple[str, int]]] = {}
        self.started: asyncio.Event = asyncio.Event()
        self.injector = CredentialInjector(credentials or Credentials())
        # mitmproxy calls the hooks of these after ours.
        self.addons = [
            TransparentGuard(self.jails, self._record_refusal),
            SlowClientGuard(header_timeout),
            self.injector,
        ]

    def register_jail(self, address: str, jail_id: str, name_for: Callable[[str], str | None]) -> None:
        """Attribute connections from `address` to `jail_id`; `name_for` reads its fake addresses."""
        self.jails.register(address, jail_id, name_for)

    def unregister_jail(self, address: str) -> None:
        self.jails.unregister(address)

    def running(self) -> None:
        """mitmproxy's hook: the listeners are set up (or failed to be)."""
        self.started.set()

    # --- HTTP ----------------------------------------------------------------------

    def http_connect(self, flow: http.HTTPFlow) -> None:
        """A CONNECT only opens a tunnel (no upstream connection: connection_strategy is
        lazy); every request inside it is evaluated. A CONNECT *inside* a tunnel is refused.

        mitmproxy refuses that itself (with a 400, before this hook; `requestheaders` logs
        it), since it parses a tunnel's content in transparent mode. This is the second
        lock: inside a tunnel the flow already has a server address (the tunnel's), while
        a CONNECT on the proxy connection has none. (Counting CONNECTs per client
        connection would be wrong: HTTP/2 to an https:// proxy multiplexes several.)
        """
        if flow.server_conn.address is None or flow.response:
            return
        decision = Decision.deny("CONNECT inside a CONNECT tunnel is not allowed", Reason.NOT_HTTP)
        request = flow.request
        target = request.authority or f"{request.host}:{request.port}"
        self._record_refusal(flow.client_conn, "CONNECT", target, request.host, request.port, decision, 403)
        flow.response = blocked_response(decision)

    async def requestheaders(self, flow: http.HTTPFlow) -> None:
        if flow.response or not flow.live:
            return
        if flow.error:  # mitmproxy refused the request itself and answers it (400)
            self._record_invalid(flow)
            return
        jail = self.jails.jail_id(flow.client_conn)
        if (refusal := self.limits.admit(jail)) is not None:
            request = flow.request
            self._record_refusal(
                flow.client_conn, request.method, request.pretty_url, request.host, request.port,
                refusal, STATUS[refusal.reason],
            )
            patches.answer_now(flow, blocked_response(refusal))
            return
        flow.metadata[_ADMITTED] = jail
        decision = self.jails.name_transparent(flow) if is_transparent(flow.client_conn) else None
        info = self._request_info(flow)
        if decision is None:
            decision = precheck(flow, info, self.loop_nonce)
        engine = "httpjail"
        if decision is None:
            decision, info, engine = await decide(self.engine, self.resolver, info)
        request = flow.request
        head = request_head_size(
            request.method, request.path, request.http_version, list(request.headers.items(multi=True))
        )
        state = FlowState(info, decision, engine, bytes_sent=head)
        flow.metadata[_STATE] = state
        if decision.allowed and decision.max_tx_bytes is not None:
            decision = self._apply_tx_limit(flow, state, head, decision.max_tx_bytes)
            state.decision = decision
        if decision.allowed and (refusal := self.injector.inject(flow, info)) is not None:
            decision = state.decision = refusal
        self.recorder.decided(info.method, info.url, info.host, decision)
        if not decision.allowed:
            patches.answer_now(flow, blocked_response(decision))
            return
        self._allowed_targets.setdefault(flow.client_conn.id, set()).add((request.host, request.port))
        seen = request.headers.get(LOOP_HEADER, "")
        request.headers[LOOP_HEADER] = f"{seen}, {self.loop_nonce}" if seen else self.loop_nonce
        request.stream = self._upload_counter(flow, state)

    def _request_info(self, flow: http.HTTPFlow) -> RequestInfo:
        request = flow.request
        path, _, query = request.path.partition("?")
        return RequestInfo(
            method=request.method,
            scheme=request.scheme,
            host=normal_host(request.host),
            port=request.port,
            path=path or "/",
            query=query,
            headers={k.lower(): v for k, v in request.headers.items()},
            requester_ip=flow.client_conn.peername[0] if flow.client_conn.peername else "",
            jail=self.jails.jail_id(flow.client_conn),
        )

    def _apply_tx_limit(self, flow: http.HTTPFlow, state: FlowState, head: int, limit: int) -> Decision:
        """Refuse up front when Content-Length already says the request is too big."""
        length = flow.request.headers.get("content-length")
        total = head + int(length) if length and length.isdigit() else head
        if total > limit:
            return Decision.deny(
                f"request of {total} bytes exceeds the rule's max_tx_bytes of {limit}",
                Reason.BODY_LIMIT,
            )
        return state.decision

    def _upload_counter(
        self, flow: http.HTTPFlow, state: FlowState
    ) -> Callable[[bytes], bytes | list[bytes]]:
        limit = state.decision.max_tx_bytes

        def count(chunk: bytes) -> bytes | list[bytes]:
            # Dropping a chunk must return [] and never b"": mitmproxy sends b"" on as an
            # empty HTTP/1 chunk, which is the chunked terminator, and the upstream then
            # sees a complete (truncated) request.
            if state.cut:
                return []
            state.bytes_sent += len(chunk)
            if limit is not None and state.bytes_sent > limit:
                state.cut = (
                    f"upload cut after {state.bytes_sent - len(chunk)} bytes: "
                    f"over the rule's max_tx_bytes of {limit}"
                )
                log.warning("%s %s: %s", state.info.method, state.info.url, state.cut)
                if patches.installed() and flow.response is None:
                    cut = Decision.deny(state.cut, Reason.BODY_LIMIT)
                    patches.answer_now(flow, blocked_response(cut))
                else:
                    asyncio.get_running_loop().call_soon(self._abort, flow)
                return []
            return chunk

        return count

    def _abort(self, flow: http.HTTPFlow | tcp.TCPFlow | udp.UDPFlow) -> None:
        """Close the client and server connections of `flow` at once (no clean end)."""
        close_connections(flow.client_conn, flow.server_conn, flow.client_conn)

    def responseheaders(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(_STATE)
        if state is None or not state.decision.allowed or flow.response is None:
            return
        if flow.metadata.get(patches.ANSWER_NOW):  # our own 413, counted in _audit
            return

        def count(chunk: bytes) -> bytes:
            state.bytes_received += len(chunk)
            return chunk

        state.bytes_received += len(bytes(flow.response.headers))
        flow.response.stream = count

    def response(self, flow: http.HTTPFlow) -> None:
        self._release(flow)
        self._audit(flow)

    def _release(self, flow: http.HTTPFlow) -> None:
        if (jail := flow.metadata.pop(_ADMITTED, None)) is not None:
            self.limits.release(jail)

    def error(self, flow: http.HTTPFlow) -> None:
        self._release(flow)
        state: FlowState | None = flow.metadata.get(_STATE)
        if state is not None and state.decision.allowed and flow.response is None and not state.cut:
            log.info("%s %s: upstream failed: %s", state.info.method, state.info.url, flow.error)
        self._audit(flow)

    def _audit(self, flow: http.HTTPFlow) -> None:
        state: FlowState | None = flow.metadata.get(_STATE)
        if state is None or state.audited:
            return
        state.audited = True
        decision = state.decision
        reason, message = str(decision.reason), decision.message
        status = flow.response.status_code if flow.response else None
        if state.cut:
            reason, message = str(Reason.BODY_LIMIT), state.cut
        elif decision.allowed and flow.error and flow.response is None:
            reason, message, status = str(Reason.UPSTREAM_ERROR), flow.error.msg, 502
        if flow.response is not None and (not decision.allowed or flow.metadata.get(patches.ANSWER_NOW)):
            state.bytes_received = len(bytes(flow.response.headers)) + len(flow.response.raw_content or b"")
        info = state.info
        peer = flow.client_conn.peername
        self.recorder.finished(
            AuditRecord(
                time=utc_timestamp(datetime.datetime.fromtimestamp(state.started_wall, datetime.UTC)),
                jail=self.jails.jail_id(flow.client_conn),
                client=f"{peer[0]}:{peer[1]}" if peer else "",
                method=info.method,
                url=info.url,
                host=info.host,
                port=info.port,
                decision=decision.action.value if not state.cut else "deny",
                reason=reason,
                message=message,
                engine=state.engine,
                status=status,
                bytes_sent=state.bytes_sent,
                bytes_received=state.bytes_received,
                duration_ms=round((time.monotonic() - state.started) * 1000, 3),
            )
        )

    # --- the last gate, and everything that is not HTTP -------------------------------

    async def server_connect(self, data: server_hooks.ServerConnectionHookData) -> None:
        if data.server.error:  # refused already (a stream that is not HTTP), and logged
            return
        address = data.server.address
        allowed = self._allowed_targets.get(data.client.id, set())
        if address is None or (address[0], address[1]) not in allowed:
            data.server.error = f"httpjail: no rule allowed a connection to {address}"
            log.warning("refused an upstream connection to %s that no rule allowed", address)
            return
        # The policy again, at the dial: an IP literal never reaches the resolver's
        # getaddrinfo, and a name is dialled at exactly the addresses checked here.
        lookup = await self.resolver.lookup(str(address[0]), int(address[1]))
        if not lookup.ok:
            data.server.error = f"httpjail: {lookup.problem()}"
            log.warning("refused an upstream connection: %s", lookup.problem())

    def tcp_start(self, flow: tcp.TCPFlow) -> None:
        self._refuse_stream(flow, "TCP")

    def udp_start(self, flow: udp.UDPFlow) -> None:
        self._refuse_stream(flow, "UDP")

    def _refuse_stream(self, flow: tcp.TCPFlow | udp.UDPFlow, kind: str) -> None:
        address = flow.server_conn.address
        host, port = (str(address[0]), int(address[1])) if address else ("unknown", 0)
        host = self.jails.display(flow.client_conn, host)
        decision = Decision.deny(f"{kind} that is not HTTP is not allowed", Reason.NOT_HTTP)
        self._record_refusal(flow.client_conn, kind, f"{host}:{port}", host, port, decision, None)
        # flow.kill() alone does not stop mitmproxy's TCP layer: it dials the server
        # right after this hook, and relays to one that is already connected (after an
        # HTTP 101 to a protocol other than WebSocket). A connection error set here makes
        # mitmproxy refuse the dial (besides server_connect's own check); the abort
        # closes both sides of an upgraded connection.
        flow.kill()
        if flow.server_conn.timestamp_start is None:
            flow.server_conn.error = f"httpjail: {decision.message}"
        asyncio.get_running_loop().call_soon(self._abort, flow)

    def _record_invalid(self, flow: http.HTTPFlow) -> None:
        """Log a request that mitmproxy refused before any rule ran (it answers 400)."""
        request = flow.request
        error = flow.error.msg if flow.error else "invalid request"
        if request.method.upper() == "CONNECT":
            message, target = "CONNECT inside a CONNECT tunnel is not allowed", request.authority
        else:
            message, target = f"refused as invalid HTTP: {error}", request.pretty_url
        decision = Decision.deny(message, Reason.NOT_HTTP)
        self._record_refusal(
            flow.client_conn, request.method, target, request.host, request.port, decision, 400
        )

    def _record_refusal(
        self,
        client: Client,
        method: str,
        target: str,
        host: str,
        port: int,
        decision: Decision,
        status: int | None,
    ) -> None:
        """One request-log line and one audit record for something refused before any rule."""
        self.recorder.decided(method, target, host, decision)
        peer = client.peername
        self.recorder.finished(
            AuditRecord(
                time=utc_timestamp(),
                jail=self.jails.jail_id(client),
                client=f"{peer[0]}:{peer[1]}" if peer else "",
                method=method,
                url=target,
                host=normal_host(host),
                port=port,
                decision="deny",
                reason=str(decision.reason),
                message=decision.message,
                engine="httpjail",
                status=status,
                bytes_sent=0,
                bytes_received=0,
                duration_ms=0.0,
            )
        )

    def client_disconnected(self, client: Client) -> None:
        self._allowed_targets.pop(client.id, None)
