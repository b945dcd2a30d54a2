"""`httpjail --server`: the proxy alone, on the ports HTTPJAIL_HTTP_BIND / _HTTPS_BIND name.

Ports are always free ones found at test time (8080 may be taken on the machine), and
clients are pointed at the proxy explicitly with `curl -x`.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import time
from collections.abc import Iterator

import pytest

RULE = ["--js", "r.host === 'ok.test'"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


@contextlib.contextmanager
def server(jail, http_bind: str, https_bind: str, ports: tuple[int, ...], args: tuple[str, ...] = (),
           env: dict[str, str] | None = None) -> Iterator[subprocess.Popen[str]]:
    """A running `httpjail --server`; yields once every port in `ports` accepts."""
    env = {"HTTPJAIL_HTTP_BIND": http_bind, "HTTPJAIL_HTTPS_BIND": https_bind, **(env or {})}
    proc = jail.popen(["--server", *RULE, *args], env=env)
    try:
        deadline = time.monotonic() + 20
        while not all(port_open(p) for p in ports):
            if proc.poll() is not None:
                out, err = proc.communicate()
                raise AssertionError(f"httpjail --server exited {proc.returncode}: {err}")
            assert time.monotonic() < deadline, "the server did not start listening"
            time.sleep(0.05)
        yield proc
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()


def curl(port: int, url: str, ca, *extra: str) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if "proxy" not in k.lower()}
    return subprocess.run(
        ["curl", "-sS", "--max-time", "10", "-x", f"http://127.0.0.1:{port}", "--cacert", str(ca),
         "-w", "\n%{http_code}", *extra, url],
        capture_output=True, text=True, timeout=20, env=env,
    )  # fmt: skip


def test_server_filters_and_stops_on_sigterm(jail, upstream, config_home):
    http_port, https_port = free_port(), free_port()
    ca = config_home / "httpjail" / "ca-cert.pem"
    with server(jail, str(http_port), f"127.0.0.1:{https_port}", (http_port, https_port)) as proc:
        allowed = curl(http_port, upstream.url("ok.test", "/echo?server=1"), ca)
        assert allowed.returncode == 0, allowed.stderr
        body, status = allowed.stdout.rsplit("\n", 1)
        assert status == "200" and '"path": "/echo?server=1"' in body
        denied = curl(http_port, upstream.url("other.test", "/echo"), ca)
        assert denied.stdout.endswith("\n403")
        assert "/echo" not in upstream.seen_paths("other.test")
        via_https_port = curl(https_port, upstream.url("ok.test", "/echo?port=2"), ca)
        assert via_https_port.stdout.endswith("\n200"), via_https_port.stderr
        plain = curl(http_port, upstream.url("ok.test", "/echo?plain=1", tls=False), ca)
        assert plain.stdout.endswith("\n200"), plain.stderr

        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert f"127.0.0.1:{http_port}" in err and f"127.0.0.1:{https_port}" in err
    assert "Traceback" not in err
    assert not port_open(http_port) and not port_open(https_port)


def test_server_stops_on_sigint(jail):
    port = free_port()
    with server(jail, f":{port}", "0", (port,)) as proc:
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert "Traceback" not in err
    assert not port_open(port)


@pytest.mark.parametrize("form", ["{port}", ":{port}", "127.0.0.1:{port}"])
def test_bind_syntax(jail, form):
    http_port, https_port = free_port(), free_port()
    with server(
        jail, form.format(port=http_port), form.format(port=https_port), (http_port, https_port)
    ) as proc:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=15)
    assert proc.returncode == 0


@pytest.mark.parametrize("var", ["HTTPJAIL_HTTP_BIND", "HTTPJAIL_HTTPS_BIND"])
def test_port_in_use_is_a_clear_error(jail, var):
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        env = {"HTTPJAIL_HTTP_BIND": "0", "HTTPJAIL_HTTPS_BIND": "0", var: str(port)}
        result = jail.run([*RULE, "--server"], env=env, timeout=30)
    assert result.returncode != 0
    assert result.stderr.startswith("httpjail:")
    assert str(port) in result.stderr and var in result.stderr
    assert "Traceback" not in result.stderr


def test_bad_bind_value_is_a_clear_error(jail):
    result = jail.run(["--server"], env={"HTTPJAIL_HTTP_BIND": "localhost:eighty"}, timeout=30)
    assert result.returncode == 2
    assert "HTTPJAIL_HTTP_BIND" in result.stderr and "localhost:eighty" in result.stderr
    assert "Traceback" not in result.stderr


def test_sigterm_with_a_request_in_flight_stops_cleanly(jail, upstream):
    # A client is in the middle of a streamed response (the /sse pause) when the server
    # is told to stop: it stops at once, with no traceback about the cut connection.
    port = free_port()
    with server(jail, str(port), "0", (port,)) as proc:
        with socket.create_connection(("127.0.0.1", port), timeout=10) as client:
            url = upstream.url("ok.test", "/sse", tls=False)
            client.sendall(f"GET {url} HTTP/1.1\r\nHost: ok.test:{upstream.http_port}\r\n\r\n".encode())
            seen = b""
            while b"data: first" not in seen:
                chunk = client.recv(4096)
                assert chunk, f"connection closed early: {seen!r}"
                seen += chunk
            start = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            out, err = proc.communicate(timeout=15)
    assert proc.returncode == 0, err
    assert time.monotonic() - start < 5
    assert "Traceback" not in err and "Exception in callback" not in err, err


def test_server_mode_names_the_placeholder_and_puts_the_secret_in(jail, upstream, config_home):
    key = "sk-test-" + secrets.token_hex(20)
    http_port, https_port = free_port(), free_port()
    ca = config_home / "httpjail" / "ca-cert.pem"
    args = ("--secret", "TEST_API_KEY@ok.test")
    with server(jail, str(http_port), str(https_port), (http_port, https_port), args,
                {"TEST_API_KEY": key}) as proc:
        assert proc.stderr is not None
        while not (line := proc.stderr.readline()).startswith("httpjail: TEST_API_KEY: give clients "):
            assert line, "httpjail --server exited without naming the placeholder"
        placeholder = line.split()[4]
        tag = secrets.token_hex(4)
        sent = curl(http_port, upstream.url("ok.test", f"/echo/{tag}"), ca,
                    "-H", f"Authorization: Bearer {placeholder}")
        assert sent.stdout.endswith("\n200"), sent.stderr
        [got] = [s for s in upstream.seen if s.path == f"/echo/{tag}"]
        assert got.headers["authorization"] == f"Bearer {key}"
        assert key not in sent.stdout
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=15)
    assert key not in out + err + line
