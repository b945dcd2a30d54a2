"""The proxy's own barriers, which no rule can lift, seen from a jailed client.

Host header or TLS SNI that disagrees with the target, request loops, tunnels in
tunnels, bytes that are not HTTP, HTTP/2 bodies smuggling a second request, the
max_tx_bytes limit in both of its forms, a dead upstream, and what a refusal looks like.
"""

from __future__ import annotations

import json
import socket
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

CLIENTS = Path(__file__).parent / "clients"
TUNNEL = [sys.executable, str(CLIENTS / "tunnel.py")]


class Sink:
    """A raw TCP server on 127.0.0.1 that counts connections and bytes (the escape detector)."""

    def __init__(self) -> None:
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.bytes = 0
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._drain, args=(conn,), daemon=True).start()

    def _drain(self, conn: socket.socket) -> None:
        with conn:
            conn.settimeout(5)
            try:
                while data := conn.recv(65536):
                    self.bytes += len(data)
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()


@pytest.fixture
def sink() -> Iterator[Sink]:
    s = Sink()
    yield s
    s.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def one_json(text: str) -> dict:
    (line,) = [line for line in text.splitlines() if line.startswith("{")]
    return json.loads(line)


def log_entries(path: Path) -> list[str]:
    """The request log without timestamps: `+ GET url`, `- TCP host:port` ..."""
    return [line.split(" ", 1)[1] for line in path.read_text().splitlines()]


def audit_records(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines()]


# --- Host, :authority and SNI ------------------------------------------------------------


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_host_header_not_matching_the_target_is_refused(jail, upstream, tmp_path, tls):
    url = upstream.url("ok.test", "/echo", tls=tls)
    log = tmp_path / "req.log"
    before = len(upstream.seen)
    result = jail.run(
        ["--js", "true", "--request-log", str(log)],
        ["curl", "-sS", "--http1.1", "-D", "-", "-H", "Host: evil.test", url],
    )
    assert result.returncode == 0, result.stderr
    head, _, body = result.stdout.split("Connection established\n\n")[-1].partition("\n\n")
    assert head.startswith("HTTP/1.1 403")
    assert "X-Httpjail-Reason: host-mismatch" in head
    assert body.startswith("Request blocked by httpjail\nHost header 'evil.test' does not match")
    assert upstream.seen[before:] == []
    assert log_entries(log) == [f"- GET {url}"]


def test_http2_authority_not_matching_the_tunnel_is_refused(jail, upstream):
    """curl sends -H Host as :authority over HTTP/2; the tunnel went to ok.test."""
    url = upstream.url("ok.test", "/echo")
    before = len(upstream.seen)
    result = jail.run(
        ["--js", "true"],
        ["curl", "-sS", "--http2", "-D", "-", "-w", "%{http_version}", "-H", "Host: evil.test", url],
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 200 Connection established")  # the CONNECT
    assert "HTTP/2 403" in result.stdout and result.stdout.endswith("2")
    assert "x-httpjail-reason: host-mismatch" in result.stdout
    assert upstream.seen[before:] == []


def test_tls_sni_not_matching_the_target_is_refused(jail, upstream):
    target = f"ok.test:{upstream.https_port}"
    before = len(upstream.seen)
    result = jail.run(["--js", "true"], [*TUNNEL, "sni", target, "evil.test"])
    out = one_json(result.stdout)
    assert out["connect"] == 200
    assert out["reply"].startswith("HTTP/1.1 403")
    assert "X-Httpjail-Reason: host-mismatch" in out["reply"]
    assert "TLS SNI 'evil.test' does not match the request target ok.test" in out["reply"]
    assert upstream.seen[before:] == []


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_requests_through_an_https_proxy_url_are_not_an_sni_mismatch(jail, upstream, tls):
    """The SNI of a TLS connection to the proxy itself names the proxy, not the target."""
    url = upstream.url("ok.test", "/echo", tls=tls)
    script = (
        'port=${HTTP_PROXY##*:}; curl -sS -w "\\n%{http_code}" --proxy-insecure '
        f'--resolve "proxy.invalid:$port:127.0.0.1" -x "https://proxy.invalid:$port" {url}'
    )
    result = jail.run(["--js", "true"], ["sh", "-c", script])
    assert result.stdout.endswith("\n200"), result.stdout + result.stderr


# --- loops, tunnels, not HTTP ------------------------------------------------------------


def test_request_for_the_proxy_itself_is_refused_before_it_loops(jail, upstream, tmp_path):
    """loop.test resolves to the proxy's own address and port: the destination policy
    refuses it even though --resolve names the address (the loop header would catch it
    one hop later, as it does when the proxy is reached at an address it does not know)."""
    port = free_port()
    log = tmp_path / "req.log"
    bind = {"HTTPJAIL_HTTP_BIND": f"127.0.0.1:{port}", "HTTPJAIL_HTTPS_BIND": f"127.0.0.1:{port}"}
    url = f"http://loop.test:{port}/again"
    result = jail.run(
        ["--js", "true", "--resolve", f"loop.test:{port}:127.0.0.1", "--request-log", str(log)],
        ["curl", "-sS", "-m", "10", "-D", "-", url],
        env=bind,
        timeout=30,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("HTTP/1.1 403")
    assert "X-Httpjail-Reason: destination-private" in result.stdout
    assert "destination 127.0.0.1 (loop.test) is the proxy itself" in result.stdout
    assert log_entries(log) == [f"- GET {url}"]


def test_request_to_the_proxy_address_itself_is_not_forwarded(jail, upstream):
    script = 'curl -sS -m 10 -o /dev/null -w "%{http_code}" "http://127.0.0.1:${HTTP_PROXY##*:}/"'
    result = jail.run(["--js", "true"], ["sh", "-c", script], timeout=30)
    assert result.returncode == 0, result.stderr
    assert result.stdout in ("400", "403", "502"), result.stdout


def test_connect_inside_a_tunnel_is_refused(jail, upstream, sink, tmp_path):
    log = tmp_path / "req.log"
    result = jail.run(
        ["--js", "true", "--resolve", f"sink.test:{sink.port}:127.0.0.1", "--request-log", str(log)],
        [*TUNNEL, "nested", f"ok.test:{upstream.https_port}", f"sink.test:{sink.port}"],
    )
    out = one_json(result.stdout)
    assert out["connect"] == 200
    assert out["reply"].startswith("HTTP/1.1 400"), out
    assert "CONNECT" in out["reply"]
    assert sink.connections == 0
    assert log_entries(log) == [f"- CONNECT sink.test:{sink.port}"]


@pytest.mark.parametrize("mode", ["raw", "tlsraw", "silent"])
def test_bytes_that_are_not_http_do_not_leave_the_tunnel(jail, sink, tmp_path, mode):
    target = f"sink.test:{sink.port}"
    log, audit = tmp_path / "req.log", tmp_path / "audit.jsonl"
    result = jail.run(
        ["--js", "true", "--resolve", f"{target}:127.0.0.1", "--request-log", str(log),
         "--audit-log", str(audit)],
        [*TUNNEL, mode, target],
    )
    out = one_json(result.stdout)
    assert out["connect"] == 200
    assert out["reply"] == ""
    assert (sink.connections, sink.bytes) == (0, 0)
    if mode == "silent":  # nothing to decide on, and nothing dialled (lazy connections)
        assert log_entries(log) == []
        return
    assert log_entries(log) == [f"- TCP {target}"]
    (record,) = audit_records(audit)
    assert (record["method"], record["url"], record["decision"], record["reason"]) == (
        "TCP", target, "deny", "not-http",
    )


def test_raw_bytes_after_an_upgrade_are_not_relayed(jail, upstream, tmp_path):
    """The upgrade request is HTTP and allowed; what follows a 101 (not WebSocket) is not."""
    url = upstream.url("ok.test", "/upgrade", tls=False)
    log = tmp_path / "req.log"
    before = len(upstream.seen)
    result = jail.run(["--js", "true", "--request-log", str(log)], [*TUNNEL, "upgrade", url])
    out = one_json(result.stdout)
    assert out["reply"] == ""  # no echo: nothing was relayed
    raw = [s for s in upstream.seen[before:] if s.method == "RAW"]
    assert len(raw) <= 1 and all(s.body_len == 0 for s in raw), raw
    assert log_entries(log) == [f"+ GET {url}", f"- TCP ok.test:{upstream.http_port}"]


def test_http2_body_cannot_smuggle_a_request_to_an_http1_upstream(jail, upstream, tmp_path):
    """An HTTP/2 body without Content-Length must reach HTTP/1 framed, not as a new request."""
    payload = f"GET /smuggled HTTP/1.1\r\nHost: ok.test:{upstream.https_port}\r\n\r\n".encode()
    body = tmp_path / "body"
    body.write_bytes(payload)
    before = len(upstream.seen)
    result = jail.run(
        ["--js", "r.method === 'POST' && r.path === '/echo'"],
        ["curl", "-sS", "--http2", "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{body}",
         upstream.url("ok.test", "/echo")],
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["body_len"] == len(payload)
    seen = [(s.method, s.path, s.body_len) for s in upstream.seen[before:]]
    assert seen == [("POST", "/echo", len(payload))]


# --- max_tx_bytes --------------------------------------------------------------------------

LIMIT_RULE = "({allow: {max_tx_bytes: 1000}})"


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_max_tx_bytes_refuses_a_declared_length_up_front(jail, upstream, tmp_path, tls):
    big = tmp_path / "big"
    big.write_bytes(b"b" * (8 << 20))  # large enough that curl asks `Expect: 100-continue`
    url = upstream.url("ok.test", "/echo?big", tls=tls)
    audit = tmp_path / "audit.jsonl"
    before = len(upstream.seen)
    fmt = "\\n%{http_code} %{size_upload}"
    result = jail.run(
        ["--js", LIMIT_RULE, "--audit-log", str(audit)],
        # curl sends the body anyway after 1 s without an answer; the command starts
        # before the proxy has loaded, which may take longer than that.
        ["curl", "-sS", "--http1.1", "--expect100-timeout", "30", "-D", "-", "--data-binary", f"@{big}",
         "-w", fmt, url],
    )
    assert result.returncode == 0, result.stderr
    head, _, rest = result.stdout.split("Connection established\n\n")[-1].partition("\n\n")
    # The body was never read: the connection must not carry another request.
    assert "\nconnection: close" in head.lower()
    body, status_line = rest.rsplit("\n", 1)
    status, uploaded = status_line.split()
    assert status == "413"
    assert int(uploaded) < (1 << 20), "the client was told to send the body after all"
    assert body.startswith("Request blocked by httpjail\nrequest of ")
    assert "exceeds the rule's max_tx_bytes of 1000" in body
    assert upstream.seen[before:] == []
    (record,) = audit_records(audit)
    assert (record["decision"], record["reason"], record["status"]) == ("deny", "body-limit", 413)


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_max_tx_bytes_cuts_a_chunked_upload(jail, upstream, tmp_path, http):
    body = tmp_path / "body"
    body.write_bytes(b"c" * 200_000)
    url = upstream.url("ok.test", "/echo?chunked")
    audit, log = tmp_path / "audit.jsonl", tmp_path / "req.log"
    before = len(upstream.seen)
    result = jail.run(
        ["--js", LIMIT_RULE, "--audit-log", str(audit), "--request-log", str(log)],
        ["curl", "-sS", http, "-H", "Transfer-Encoding: chunked", "--data-binary", f"@{body}",
         "-w", "\\n%{http_code}", url],
    )
    text, status = result.stdout.rsplit("\n", 1)
    assert status == "413", result.stdout + result.stderr
    assert text.startswith("Request blocked by httpjail\nupload cut after ")
    # The upstream never saw a complete request (its headers may have gone, the end did not).
    assert [s for s in upstream.seen[before:] if s.path == "/echo?chunked"] == []
    (record,) = audit_records(audit)
    assert (record["decision"], record["reason"], record["status"]) == ("deny", "body-limit", 413)
    assert record["message"].startswith("upload cut after ")
    assert log_entries(log) == [f"+ POST {url}"]


def test_max_tx_bytes_lets_a_small_upload_through(jail, upstream):
    url = upstream.url("ok.test", "/echo?small")
    result = jail.run(["--js", LIMIT_RULE], ["curl", "-sS", "--data-binary", "x" * 300, url])
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["body_len"] == 300
    assert upstream.seen[-1].path == "/echo?small" and upstream.seen[-1].body_len == 300


# --- dead upstream, and the refusal itself -------------------------------------------------


def test_upstream_down_is_a_502_with_the_reason(jail, upstream, tmp_path):
    port = free_port()  # nothing listens there
    url = f"https://down.test:{port}/echo"
    audit = tmp_path / "audit.jsonl"
    result = jail.run(
        ["--js", "true", "--resolve", f"down.test:{port}:127.0.0.1", "--audit-log", str(audit)],
        ["curl", "-sS", "-w", "\\n%{http_code}", url],
    )
    body, status = result.stdout.rsplit("\n", 1)
    assert status == "502", result.stdout
    assert "Connect call failed" in body or "refused" in body.lower()
    (record,) = audit_records(audit)
    assert record["url"] == url
    assert (record["decision"], record["reason"], record["status"]) == ("allow", "upstream-error", 502)
    assert record["message"]


@pytest.mark.parametrize("tls", [False, True], ids=["http", "https"])
def test_deny_response_says_why(jail, upstream, tls):
    url = upstream.url("api.test", "/v1/x", tls=tls)
    rule = "r.host === 'ok.test' || {deny_message: 'only ok.test, not ' + r.host}"
    result = jail.run(["--js", rule], ["curl", "-sS", "--http1.1", "-D", "-", url])
    assert result.returncode == 0, result.stderr
    # (text mode: curl's CRLFs read as "\n")
    response = result.stdout.split("HTTP/1.1 200 Connection established\n\n")[-1]
    head, _, body = response.partition("\n\n")
    lines = head.split("\n")
    headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    assert lines[0] == "HTTP/1.1 403 Forbidden"
    assert headers["content-type"].startswith("text/plain")
    assert headers["httpjail"] == "true"
    assert headers["x-httpjail-reason"] == "rule-denied"
    assert body == "Request blocked by httpjail\nonly ok.test, not api.test\n"


@pytest.mark.parametrize("http", ["--http1.1", "--http2"])
def test_denied_upload_is_answered_without_reading_the_body(jail, upstream, tmp_path, http):
    size = 32 << 20
    big = tmp_path / "big"
    big.write_bytes(b"d" * size)
    url = upstream.url("other.test", "/echo")
    fmt = "%{http_code} %{size_upload}"
    result = jail.run(
        ["--js", "r.host === 'ok.test'"],
        ["curl", "-sS", http, "--expect100-timeout", "30", "--data-binary", f"@{big}", "-o", "/dev/null",
         "-w", fmt, url],  # the expect timeout: as above
    )
    status, uploaded = result.stdout.split()
    assert status == "403"
    # HTTP/1.1: curl waits for `100 Continue`, gets the 403 instead, sends nothing.
    # HTTP/2: curl sends from the start and stops when the 403 arrives.
    assert int(uploaded) < ((1 << 20) if http == "--http1.1" else size // 2), uploaded
