"""The upstreams (nginx, the SSE server) and the proxies compared (mitmdump, squid), all
on 127.0.0.1, in a directory of the run's own; everything stops with `Stack.close()`."""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve().parent
SMALL_BODY = b"x" * 200


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_for_port(port: int, proc: subprocess.Popen[bytes], what: str, timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} before it listened")
        with socket.socket() as s:
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout:g} s")


def rss_kib(pid: int) -> int:
    """Resident memory of `pid` and its threads (KiB); 0 once it is gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


@dataclass
class Stack:
    directory: Path
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, argv: list[str], **kw: object) -> subprocess.Popen[bytes]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, **kw)  # type: ignore[call-overload]
        self.processes.append(proc)
        return proc

    def close(self) -> None:
        for proc in reversed(self.processes):
            with contextlib.suppress(ProcessLookupError):
                proc.terminate()
        for proc in self.processes:
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()


@dataclass
class Upstreams:
    http_port: int
    https_port: int
    sse_port: int
    ca: Path
    nginx_pid: int

    def url(self, path: str, tls: bool = False) -> str:
        return (
            f"https://127.0.0.1:{self.https_port}{path}"
            if tls
            else f"http://127.0.0.1:{self.http_port}{path}"
        )


def start_upstreams(stack: Stack, big_bytes: int, events: int) -> Upstreams:
    sys.path.insert(0, str(HERE.parent.parent))
    from tests.upstream import make_test_pki

    d = stack.directory / "upstream"
    (d / "files").mkdir(parents=True)
    ca, cert, key = make_test_pki(d)
    (d / "files" / "small").write_bytes(SMALL_BODY)
    with open(d / "files" / "big", "wb") as f:
        f.truncate(big_bytes)  # sparse: nothing on disk, served as zeros
    http_port, https_port = free_port(), free_port()
    (d / "tmp").mkdir()
    (d / "nginx.conf").write_text(f"""
daemon off;
worker_processes 2;
pid {d}/nginx.pid;
error_log {d}/error.log;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;
    uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;
    sendfile on; keepalive_requests 1000000; keepalive_timeout 120s;
    server {{
        listen 127.0.0.1:{http_port};
        listen 127.0.0.1:{https_port} ssl;
        ssl_certificate {cert}; ssl_certificate_key {key};
        root {d}/files;
        location = /upload {{ client_max_body_size 0; return 200 "ok\\n"; }}
    }}
}}
""")
    nginx = stack.start(["nginx", "-c", str(d / "nginx.conf"), "-p", str(d)])
    wait_for_port(https_port, nginx, "nginx")
    portfile = d / "sse.port"
    sse = stack.start(
        [
            sys.executable,
            str(HERE / "sseserver.py"),
            str(cert),
            str(key),
            str(portfile),
            "--events",
            str(events),
        ]
    )
    deadline = time.monotonic() + 20
    while not portfile.exists() or not portfile.read_text():
        if sse.poll() is not None or time.monotonic() > deadline:
            raise RuntimeError("the SSE server did not start")
        time.sleep(0.05)
    return Upstreams(http_port, https_port, int(portfile.read_text()), ca, nginx.pid)


@dataclass
class Proxy:
    name: str
    url: str
    cafile: Path  # what a client through it must trust for HTTPS
    pid: int


def start_mitmdump(stack: Stack, upstreams: Upstreams) -> Proxy:
    confdir = stack.directory / "mitmdump"
    confdir.mkdir()
    port = free_port()
    mitmdump = shutil.which("mitmdump", path=str(Path(sys.executable).parent)) or "mitmdump"
    proc = stack.start(
        [
            mitmdump,
            "-q",
            "--listen-host",
            "127.0.0.1",
            "--listen-port",
            str(port),
            "--set",
            f"confdir={confdir}",
            "--set",
            f"ssl_verify_upstream_trusted_ca={upstreams.ca}",
            "--set",
            "stream_large_bodies=1",
            "--set",
            "connection_strategy=lazy",
        ]
    )
    wait_for_port(port, proc, "mitmdump")
    return Proxy("mitmdump", f"http://127.0.0.1:{port}", confdir / "mitmproxy-ca-cert.pem", proc.pid)


def start_squid(stack: Stack, upstreams: Upstreams) -> Proxy:
    d = stack.directory / "squid"
    d.mkdir()
    os.chmod(d, 0o777)  # squid drops to its own user
    port = free_port()
    (d / "squid.conf").write_text(f"""
http_port 127.0.0.1:{port}
http_access allow localhost
http_access deny all
cache deny all
cache_mem 8 MB
access_log none
cache_store_log none
cache_log {d}/cache.log
pid_filename {d}/squid.pid
coredump_dir {d}
shutdown_lifetime 0 seconds
workers 1
""")
    proc = stack.start(["squid", "-N", "-f", str(d / "squid.conf")])
    wait_for_port(port, proc, "squid")
    return Proxy("squid", f"http://127.0.0.1:{port}", upstreams.ca, proc.pid)
