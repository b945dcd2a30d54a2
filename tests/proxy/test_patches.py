"""httpjail_py/proxy/patches.py in isolation; its effects are tested end to end in
test_checks.py (early refusals, max_tx_bytes cuts, HTTP/2 bodies to HTTP/1 upstreams)."""

from __future__ import annotations

import asyncio
from typing import Any

from mitmproxy import http
from mitmproxy.proxy import server
from mitmproxy.proxy.layers import http as layers_http
from mitmproxy.proxy.layers.http import _http1
from mitmproxy.test import tflow

from httpjail_py.proxy import patches


def _patched() -> tuple[object, ...]:
    return (
        layers_http.HttpStream.state_wait_for_request_headers,
        layers_http.HttpStream.state_stream_request_body,
        _http1.Http1Client.send,
        server.ConnectionHandler.open_connection,
        layers_http.HttpStream.handle_protocol_error,
        layers_http.HttpStream.state_stream_response_body,
    )


def test_install_is_idempotent_and_wraps_the_methods() -> None:
    assert patches.install() is True
    wrapped = _patched()
    assert patches.install() is True and patches.installed()
    assert _patched() == wrapped
    assert all(getattr(f, "__module__", None) == patches.__name__ for f in wrapped)
    # mitmproxy's server dials through our asyncio, which keeps to the connect deadline.
    seen_by_server: Any = vars(server)["asyncio"]
    assert seen_by_server.open_connection is not asyncio.open_connection
    assert seen_by_server.Lock is asyncio.Lock


def test_answer_now_sets_the_response_and_drops_expect() -> None:
    flow = tflow.tflow()
    flow.request.headers["Expect"] = "100-continue"
    response = http.Response.make(403, b"no")
    patches.answer_now(flow, response)
    assert flow.response is response
    assert flow.metadata[patches.ANSWER_NOW] is True
    assert "expect" not in flow.request.headers
