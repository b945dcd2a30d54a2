"""Protocols through the proxy: plain HTTP proxying with keep-alive, HTTP/2 between the
client and the proxy, and WebSocket upgrades (evaluated like any other request).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

CLIENTS = Path(__file__).parent / "clients"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_keep_alive_connection_carries_many_requests(jail, upstream, tls):
    """One client connection, ten requests to one upstream: all answered, none hangs.

    (mitmproxy's connection pool matches on the server address; rewriting it made the
    sixth request on a connection hang.)
    """
    urls = [upstream.url("ok.test", f"/echo?n={i}", tls=tls) for i in range(10)]
    cmd = ["curl", "-sS", "-m", "20", "-w", "|%{http_code}|%{num_connects}\\n", *urls]
    result = jail.run(["--js", "r.host === 'ok.test'"], cmd, timeout=60)
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert len(lines) == 10
    for i, line in enumerate(lines):
        body, status, _ = line.rsplit("|", 2)
        assert status == "200"
        assert json.loads(body)["path"] == f"/echo?n={i}"
    # curl reused its connection to the proxy after the first request
    assert [line.rsplit("|", 1)[1] for line in lines[1:]] == ["0"] * 9


def test_plain_http_is_forwarded_in_origin_form(jail, upstream):
    before = len(upstream.seen)
    url = upstream.url("ok.test", "/echo?q=1", tls=False)
    result = jail.run(["--js", "r.scheme === 'http' && r.path === '/echo'"], ["curl", "-sS", url])
    assert result.returncode == 0, result.stderr
    echo = json.loads(result.stdout)
    assert echo["path"] == "/echo?q=1"  # not http://ok.test:PORT/echo?q=1
    seen = upstream.seen[before:]
    assert [(s.method, s.host, s.path) for s in seen] == [("GET", "ok.test", "/echo?q=1")]


@pytest.mark.parametrize("path,expected", [("/echo", "200"), ("/denied", "403")])
def test_http2_between_client_and_proxy(jail, upstream, path, expected):
    url = upstream.url("ok.test", path)
    fmt = "\\n%{http_version} %{http_code}"
    result = jail.run(
        ["--js", "r.path === '/echo'"], ["curl", "-sS", "--http2", "-w", fmt, "-D", "-", url]
    )
    assert result.returncode == 0, result.stderr
    body, last = result.stdout.rsplit("\n", 1)
    assert last == f"2 {expected}"
    head = body.lower()
    if expected == "403":
        assert "x-httpjail-reason: rule-denied" in head
        assert "request blocked by httpjail" in head
    else:
        assert '"path": "/echo"' in body


@pytest.mark.parametrize("tls", [False, True], ids=["ws", "wss"])
def test_websocket_echo_and_denied_upgrade(jail, upstream, tls):
    port = upstream.https_port if tls else upstream.http_port
    scheme = "wss" if tls else "ws"
    allowed = f"{scheme}://ws.test:{port}/ws"
    denied = f"{scheme}://other.test:{port}/ws"
    rule = "r.host === 'ws.test' && r.path === '/ws' && r.headers['upgrade'] === 'websocket'"
    client = f"{sys.executable} {CLIENTS / 'wsclient.py'}"
    before = len(upstream.seen)
    script = f"{client} {allowed} hello-{scheme}; {client} {denied} nope"
    result = jail.run(["--js", rule], ["sh", "-c", script])
    assert result.returncode == 0, result.stderr
    ok, refused = (json.loads(line) for line in result.stdout.splitlines())
    assert ok == {"status": 101, "echo": f"hello-{scheme}", "reason": None}
    assert refused == {"status": 403, "echo": None, "reason": "rule-denied"}
    assert [(s.host, s.path) for s in upstream.seen[before:]] == [("ws.test", "/ws")]


def test_websocket_upgrade_denied_by_path_rule(jail, upstream):
    """The upgrade request is evaluated like any request: a rule denying /ws denies it."""
    url = f"wss://ws.test:{upstream.https_port}/ws"
    before = len(upstream.seen)
    result = jail.run(
        ["--js", "r.path !== '/ws'"], [sys.executable, str(CLIENTS / "wsclient.py"), url, "hi"]
    )
    assert json.loads(result.stdout) == {"status": 403, "echo": None, "reason": "rule-denied"}
    assert upstream.seen[before:] == []


def test_http2_streams_on_one_connection_are_decided_separately(jail, upstream):
    urls = [upstream.url("ok.test", p) for p in ("/echo?a", "/denied", "/bytes/200000", "/echo?b")]
    fmt = "%{url} %{http_version} %{http_code} %{size_download}\\n"
    cmd = ["curl", "-sS", "--http2", "--parallel", "-w", fmt]
    for url in urls:
        cmd += ["-o", "/dev/null", url]
    result = jail.run(["--js", "r.path !== '/denied'"], cmd)
    assert result.returncode == 0, result.stderr
    got = {line.split()[0]: line.split()[1:] for line in result.stdout.splitlines()}
    assert got[urls[1]][:2] == ["2", "403"]
    assert got[urls[2]] == ["2", "200", "200000"]
    assert got[urls[0]][:2] == got[urls[3]][:2] == ["2", "200"]
