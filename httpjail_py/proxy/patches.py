"""The places where we change mitmproxy's own behaviour (mitmproxy 12.x internals).

1. Answer a refused request at once, however much body it still has to send.
   A response set in `requestheaders` is sent only after mitmproxy has read the whole
   request body into memory (`HttpStream.state_consume_request_body`), and a client that
   sent `Expect: 100-continue` is first told to go ahead: a jailed process posting 1 GiB
   to a denied host made the proxy hold 1 GiB, and heard "no" only at the end. A streamed
   upload cut for `max_tx_bytes` could only be stopped by closing connections, so the
   client saw "502 server closed connection" or an empty reply, never why.
   Now, when the addon calls `answer_now(flow, response)`, the stream sends that response
   right away and forgets the request: the rest of its body is dropped as it arrives
   (HttpLayer discards data for a stream it no longer has, see mitmproxy#5343). A
   streamed request that is cut also has its upstream request aborted (HTTP/1: the
   connection closed; HTTP/2: the stream reset), so the upstream never sees it complete.

2. Frame HTTP/2 request bodies for HTTP/1 upstreams.
   An HTTP/2 request needs no Content-Length. mitmproxy forwarded such a request to an
   HTTP/1 server with neither Content-Length nor Transfer-Encoding, so the server took it
   as bodiless and read the body as the *next request* on the connection: a request that
   no rule saw (request smuggling; a rule allowing only `POST /v1/messages` let through
   whatever request the body spelled). `Http1Client.send` now adds
   `Transfer-Encoding: chunked` to such requests.

3. Give up on an upstream that does not answer the connect.
   mitmproxy dials with `asyncio.open_connection` and no deadline, so a destination that
   drops SYNs held the request (and its slot under --max-connections) for the kernel's
   two minutes of retries. `ConnectionHandler.open_connection` now has the deadline of
   the option `CONNECT_TIMEOUT_OPTION` (--connect-timeout); past it the request fails
   like any refused connect, with a 502 saying it timed out.

4. Keep secrets out of what mitmproxy itself tells the client.
   For a reply that is not valid HTTP, mitmproxy answers 502 with the bytes it got
   (`unexpected server response: b'...'`): a service of a secret's host that echoes the
   request in such a reply would hand the jail the real value. A flow with a redactor in
   `flow.metadata[REDACT]` has its error messages passed through it. And an empty DATA
   frame in the middle of an HTTP/2 response is dropped before the body's stream filter
   sees it: the filter takes b"" as the end of the body (as mitmproxy calls it at the
   end), and would let go of the start of a value it holds back.

`install()` checks that the internals exist and returns False when they do not; the
proxy then refuses to start (2 and 4 are security fixes), naming the mitmproxy version.
"""

from __future__ import annotations

import asyncio
import contextvars
import logging
import time
from collections.abc import Callable, Coroutine, Generator
from typing import Any

from mitmproxy import http

__all__ = ["ANSWER_NOW", "CONNECT_TIMEOUT_OPTION", "REDACT", "answer_now", "install", "installed"]

log = logging.getLogger("httpjail.proxy")

ANSWER_NOW = "httpjail.answer_now"
CONNECT_TIMEOUT_OPTION = "httpjail_connect_timeout"
REDACT = "httpjail.redact"  # flow metadata: str -> str, applied to the flow's error messages
_installed = False
# The deadline of the connect being made in this task (None: no deadline).
_connect_deadline: contextvars.ContextVar[float | None] = contextvars.ContextVar(
    "httpjail_connect_deadline", default=None)


class _AsyncioWithConnectDeadline:
    """What `mitmproxy.proxy.server` sees as `asyncio`: the module itself, except that
    `open_connection` keeps to the deadline of the connection handler calling it."""

    def __getattr__(self, name: str) -> Any:
        return getattr(asyncio, name)

    @staticmethod
    async def open_connection(*args: Any, **kwargs: Any) -> Any:
        seconds = _connect_deadline.get()
        if seconds is None:
            return await asyncio.open_connection(*args, **kwargs)
        deadline = asyncio.timeout(seconds)
        try:
            async with deadline:
                return await asyncio.open_connection(*args, **kwargs)
        except TimeoutError:
            if not deadline.expired():  # the kernel's own ETIMEDOUT: its message is right
                raise
            # mitmproxy reports str(error), which is "" for a bare TimeoutError.
            raise TimeoutError(f"connect timed out after {seconds:g} s") from None


def answer_now(flow: http.HTTPFlow, response: http.Response) -> None:
    """Make `response` the answer to `flow`, sent before the request body is read."""
    flow.response = response
    flow.metadata[ANSWER_NOW] = True
    # mitmproxy would answer `Expect: 100-continue` with "go ahead" after our hook.
    flow.request.headers.pop("expect", None)


def installed() -> bool:
    return _installed


def install() -> bool:
    """Install the patches (once). Returns whether they are in place."""
    global _installed
    if _installed:
        return True
    try:
        from mitmproxy.proxy.layers import http as layers_http
        from mitmproxy.proxy.layers.http import _events, _hooks, _http1

        stream_cls: Any = layers_http.HttpStream
        h1_client: Any = _http1.Http1Client
        wait_headers: Callable[..., Generator[Any, Any, None]] = stream_cls.state_wait_for_request_headers
        stream_body: Callable[..., Generator[Any, Any, None]] = stream_cls.state_stream_request_body
        stream_response: Callable[..., Generator[Any, Any, None]] = stream_cls.state_stream_response_body
        protocol_error: Callable[..., Generator[Any, Any, None]] = stream_cls.handle_protocol_error
        response_data = _events.ResponseData
        h1_send: Callable[..., Generator[Any, Any, None]] = h1_client.send
        for name in ("state_consume_request_body", "state_errored", "send_response", "flow_done",
                     "state_wait_for_response_headers"):
            getattr(stream_cls, name)
        request_headers = _events.RequestHeaders
        request_protocol_error = _events.RequestProtocolError
        kill = _events.ErrorCode.KILL
        send_http = layers_http.SendHttp
        response_headers_hook = _hooks.HttpResponseHeadersHook
        from mitmproxy.proxy import server as proxy_server

        handler_cls: Any = proxy_server.ConnectionHandler
        open_connection: Callable[..., Coroutine[Any, Any, None]] = handler_cls.open_connection
        handler_cls.__annotations__["layer"]  # the handler's options are read through it
        server_module: Any = proxy_server
        if server_module.asyncio is not asyncio:
            raise AttributeError("mitmproxy.proxy.server does not dial through the asyncio module")
    except (ImportError, AttributeError) as e:
        log.error("mitmproxy internals differ from 12.x: %s", e)
        return False

    # --- 1. answer refused requests at once --------------------------------------------

    def marked(self: Any) -> bool:
        return bool(self.flow.metadata.get(ANSWER_NOW)) and self.flow.response is not None

    def answer(self: Any) -> Generator[Any, Any, None]:
        # As mitmproxy does for a response set in the `request` hook, minus reading the
        # body first. `state_errored` swallows the body events already queued in this
        # stream; flow_done() ends the response and drops the stream.
        self.client_state = self.state_errored
        request, response = self.flow.request, self.flow.response
        if not (request.is_http2 or request.is_http3):
            # The body was not read, so what the client sends next on this connection
            # would be taken for the rest of it: tell the client not to reuse it.
            response.headers["connection"] = "close"
        response.timestamp_start = time.time()
        yield response_headers_hook(self.flow)
        yield from self.send_response()
        yield from self.flow_done()

    def state_wait_for_request_headers(self: Any, event: Any) -> Generator[Any, Any, None]:
        yield from wait_headers(self, event)
        if not event.end_stream and self.client_state == self.state_consume_request_body and marked(self):
            yield from answer(self)

    def state_stream_request_body(self: Any, event: Any) -> Generator[Any, Any, None]:
        yield from stream_body(self, event)
        if self.client_state != self.state_stream_request_body or not marked(self):
            return
        yield send_http(request_protocol_error(self.stream_id, "upload refused", kill), self.context.server)
        if self.server_state == self.state_wait_for_response_headers:
            yield from answer(self)
        else:  # the upstream answered already; too late for ours
            self.flow.metadata.pop(ANSWER_NOW, None)
            self.client_state = self.state_errored

    # --- 2. frame HTTP/2 bodies for HTTP/1 upstreams ------------------------------------

    def send(self: Any, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, request_headers) and not event.end_stream:
            request = event.request
            if (request.is_http2 or request.is_http3) and "content-length" not in request.headers:
                # Both the head mitmproxy writes and its chunk framing of the body read
                # this header (Http1Client keeps `event.request`).
                request.headers["transfer-encoding"] = "chunked"
        yield from h1_send(self, event)

    # --- 3. a deadline for the upstream connect ----------------------------------------

    async def open_connection_in_time(self: Any, command: Any) -> None:
        # The handler keeps no context of its own; its first layer holds the options.
        seconds = getattr(self.layer.context.options, CONNECT_TIMEOUT_OPTION, None)
        # The handler runs each connect in a task of its own, so this value is seen by
        # that connect alone.
        _connect_deadline.set(seconds)
        await open_connection(self, command)

    # --- 4. secrets out of mitmproxy's own messages ----------------------------------------

    def handle_protocol_error(self: Any, event: Any) -> Generator[Any, Any, None]:
        if (redact := self.flow.metadata.get(REDACT)) is not None:
            event.message = redact(event.message)
        yield from protocol_error(self, event)

    def state_stream_response_body(self: Any, event: Any) -> Generator[Any, Any, None]:
        if isinstance(event, response_data) and not event.data:
            return
        yield from stream_response(self, event)

    state_wait_for_request_headers.__name__ = "state_wait_for_request_headers"
    state_stream_request_body.__name__ = "state_stream_request_body"
    stream_cls.state_wait_for_request_headers = state_wait_for_request_headers
    stream_cls.state_stream_request_body = state_stream_request_body
    h1_client.send = send
    stream_cls.handle_protocol_error = handle_protocol_error
    state_stream_response_body.__name__ = "state_stream_response_body"
    stream_cls.state_stream_response_body = state_stream_response_body
    open_connection_in_time.__name__ = "open_connection"
    handler_cls.open_connection = open_connection_in_time
    server_module.asyncio = _AsyncioWithConnectDeadline()
    _installed = True
    return True
