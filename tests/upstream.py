"""The tests' fake internet: HTTP and HTTPS servers of our own on 127.0.0.1.

They are reached through the proxy with `--resolve NAME:PORT:127.0.0.1` and trusted with
`--upstream-ca`, so no test ever sends a packet beyond loopback. Every request they see is
recorded in `Upstream.seen` so tests can assert what actually arrived.

Endpoints (any host name in `NAMES`):
    /echo...        any method; JSON of method, path, headers, body length and sha256
    /bytes/N        N bytes of b"x", streamed in 64 KiB chunks with a Content-Length
    /sse            text/event-stream: `data: first`, a 1.5 s pause, `data: second`, end
    /ws             WebSocket echo (text and binary); `/ws?tell-auth` prefixes each echo with
                    the Authorization header of the upgrade request
    /echo-gzip      as /echo, gzip-compressed whatever the request's Accept-Encoding
    /not-http       answers with a line that is not HTTP, repeating the request's head
    /upgrade        `Upgrade: raw-echo`: answers 101, then echoes raw bytes; records a
                    `RAW` entry in `seen` whose body_len counts the raw bytes as they arrive
    /git/REPO...    git smart HTTP (`git http-backend`) over the repositories in git_root
    /simple/...     a PEP 503 package index serving one wheel, `tinypkg` 1.0
"""

from __future__ import annotations

import base64
import datetime
import gzip
import hashlib
import http.server
import io
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import threading
import time
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from tests import wsframes

NAMES = ("ok.test", "api.test", "other.test", "git.test", "pypi.test", "ws.test", "evil.test")


def _name(cn: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)])


def make_test_pki(
    directory: Path, names: tuple[str, ...] = NAMES, stem: str = "upstream"
) -> tuple[Path, Path, Path]:
    """A test CA and a server certificate for `names` (and 127.0.0.1), written as
    <stem>-ca.pem, <stem>-cert.pem and <stem>-key.pem. Returns those three paths."""
    now = datetime.datetime.now(datetime.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("httpjail test upstream CA"))
        .issuer_name(_name("httpjail test upstream CA"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(True, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    key = ec.generate_private_key(ec.SECP256R1())
    sans: list[x509.GeneralName] = [x509.DNSName(n) for n in names]
    sans.append(x509.IPAddress(ipaddress.ip_address("127.0.0.1")))
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(names[0]))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(days=1))
        .not_valid_after(now + datetime.timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    paths = directory / f"{stem}-ca.pem", directory / f"{stem}-cert.pem", directory / f"{stem}-key.pem"
    paths[0].write_bytes(ca.public_bytes(serialization.Encoding.PEM))
    paths[1].write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    paths[2].write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    return paths


def make_wheel(directory: Path) -> Path:
    """A minimal valid wheel, tinypkg 1.0, built by hand."""
    name = "tinypkg-1.0-py3-none-any.whl"
    files = {
        "tinypkg/__init__.py": b"VALUE = 42\n",
        "tinypkg-1.0.dist-info/METADATA": b"Metadata-Version: 2.1\nName: tinypkg\nVersion: 1.0\n",
        "tinypkg-1.0.dist-info/WHEEL": (
            b"Wheel-Version: 1.0\nGenerator: tests\nRoot-Is-Purelib: true\nTag: py3-none-any\n"
        ),
    }
    record = []
    for path, data in files.items():
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        record.append(f"{path},sha256={digest},{len(data)}")
    record.append("tinypkg-1.0.dist-info/RECORD,,")
    out = directory / name
    with zipfile.ZipFile(out, "w") as z:
        for path, data in files.items():
            z.writestr(path, data)
        z.writestr("tinypkg-1.0.dist-info/RECORD", "\n".join(record) + "\n")
    return out


def make_git_repo(root: Path) -> Path:
    """A bare repository `demo.git` with one commit holding README.md."""
    work = root / "demo-work"
    env = {**os.environ, "GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
           "GIT_COMMITTER_EMAIL": "t@t", "GIT_CONFIG_NOSYSTEM": "1", "HOME": str(root)}
    subprocess.run(["git", "init", "-q", "-b", "main", str(work)], check=True, env=env)
    (work / "README.md").write_text("hello from the test git server\n")
    subprocess.run(["git", "-C", str(work), "add", "README.md"], check=True, env=env)
    subprocess.run(["git", "-C", str(work), "commit", "-q", "-m", "first"], check=True, env=env)
    subprocess.run(["git", "clone", "-q", "--bare", str(work), str(root / "demo.git")], check=True, env=env)
    return root / "demo.git"


@dataclass
class Seen:
    method: str
    host: str
    path: str
    headers: dict[str, str]
    body_len: int


@dataclass
class Upstream:
    http_port: int
    https_port: int
    ca: Path
    root: Path
    seen: list[Seen] = field(default_factory=list)
    _servers: list[http.server.ThreadingHTTPServer] = field(default_factory=list)

    def resolve_args(self) -> list[str]:
        """`--resolve` for every test name on both ports, all to 127.0.0.1."""
        args: list[str] = []
        for name in NAMES:
            for port in (self.http_port, self.https_port):
                args += ["--resolve", f"{name}:{port}:127.0.0.1"]
        return args

    def url(self, name: str, path: str = "/echo", tls: bool = True) -> str:
        scheme, port = ("https", self.https_port) if tls else ("http", self.http_port)
        return f"{scheme}://{name}:{port}{path}"

    def seen_paths(self, host: str | None = None) -> list[str]:
        return [s.path for s in self.seen if host is None or s.host == host]

    def close(self) -> None:
        for server in self._servers:
            server.shutdown()
            server.server_close()


class TestHandler(http.server.BaseHTTPRequestHandler):
    """What every test server's handler needs: quiet, HTTP/1.1, whole bodies in and out."""

    __test__ = False  # not a test class, whatever pytest thinks of the name
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _read_body(self) -> bytes:
        """The whole body. Raises ConnectionError when the peer stops before its end, so
        an incomplete request is never recorded (as a real server would not act on it)."""
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            out = io.BytesIO()
            while True:
                line = self.rfile.readline()
                if not line.endswith(b"\n"):
                    raise ConnectionError("chunked body ended before its last chunk")
                size = int(line.split(b";")[0].strip(), 16)
                if size == 0:
                    while (trailer := self.rfile.readline()).strip():
                        pass
                    if not trailer.endswith(b"\n"):
                        raise ConnectionError("chunked body ended before its last chunk")
                    return out.getvalue()
                data = self.rfile.read(size)
                if len(data) < size or not self.rfile.readline().endswith(b"\n"):
                    raise ConnectionError("chunked body ended inside a chunk")
                out.write(data)
        length = int(self.headers.get("Content-Length") or 0)
        data = self.rfile.read(length) if length else b""
        if len(data) < length:
            raise ConnectionError(f"body ended after {len(data)} of {length} bytes")
        return data

    def _send(
        self,
        status: int,
        body: bytes,
        content_type: str = "application/json",
        extra: dict[str, str] | None = None,
    ) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        for k, v in (extra or {}).items():
            self.send_header(k, v)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

class _Handler(TestHandler):
    upstream: Upstream  # set on the subclass per server

    def _record(self, body_len: int) -> None:
        host = (self.headers.get("Host") or "").rsplit(":", 1)[0]
        self.upstream.seen.append(
            Seen(self.command, host, self.path, {k.lower(): v for k, v in self.headers.items()}, body_len)
        )

    # --- dispatch -------------------------------------------------------------------

    def _dispatch(self) -> None:
        path = self.path.split("?")[0]
        if path == "/ws" and self.headers.get("Upgrade", "").lower() == "websocket":
            self._record(0)
            return self._websocket()
        if path == "/upgrade" and self.headers.get("Upgrade", "").lower() == "raw-echo":
            return self._raw_upgrade()
        if path.startswith("/git/"):
            return self._git()
        if path == "/not-http":
            self.wfile.write(b"NOT HTTP; you sent: " + str(self.requestline).encode() + b" "
                             + str(self.headers).encode().replace(b"\n", b" ") + b"\r\n\r\n")
            self.close_connection = True
            return None
        body = self._read_body()
        self._record(len(body))
        if path.startswith("/bytes/"):
            return self._bytes(int(path.rsplit("/", 1)[1]))
        if path == "/sse":
            return self._sse()
        if path.startswith("/simple") or path.startswith("/packages/"):
            return self._index(path)
        info = {
            "method": self.command,
            "path": self.path,
            "headers": {k.lower(): v for k, v in self.headers.items()},
            "body_len": len(body),
            "body_sha256": hashlib.sha256(body).hexdigest(),
        }
        if path == "/echo-gzip":
            body = gzip.compress(json.dumps(info).encode())
            return self._send(200, body, extra={"Content-Encoding": "gzip"})
        self._send(200, json.dumps(info).encode())

    do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_HEAD = do_OPTIONS = _dispatch

    def _bytes(self, n: int) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "application/octet-stream")
        self.send_header("Content-Length", str(n))
        self.end_headers()
        chunk = b"x" * 65536
        left = n
        while left > 0:
            piece = chunk[: min(left, len(chunk))]
            self.wfile.write(piece)
            left -= len(piece)

    def _sse(self) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Cache-Control", "no-cache")
        self.send_header("Connection", "close")
        self.end_headers()
        self.wfile.write(b"data: first\n\n")
        self.wfile.flush()
        time.sleep(1.5)
        self.wfile.write(b"data: second\n\n")
        self.wfile.flush()
        self.close_connection = True

    def _index(self, path: str) -> None:
        wheel = next(self.upstream.root.glob("tinypkg-*.whl"))
        if path.rstrip("/") in ("/simple", ""):
            body = b'<html><body><a href="/simple/tinypkg/">tinypkg</a></body></html>'
            return self._send(200, body, "text/html")
        if path.rstrip("/") == "/simple/tinypkg":
            digest = hashlib.sha256(wheel.read_bytes()).hexdigest()
            link = f'<a href="/packages/{wheel.name}#sha256={digest}">{wheel.name}</a>'
            return self._send(200, f"<html><body>{link}</body></html>".encode(), "text/html")
        if path == f"/packages/{wheel.name}":
            return self._send(200, wheel.read_bytes(), "application/octet-stream")
        self._send(404, b"not found", "text/plain")

    def _git(self) -> None:
        body = self._read_body()
        self._record(len(body))
        path, _, query = self.path.partition("?")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "GIT_PROJECT_ROOT": str(self.upstream.root),
            "GIT_HTTP_EXPORT_ALL": "1",
            "PATH_INFO": path[len("/git"):],
            "QUERY_STRING": query,
            "REQUEST_METHOD": self.command,
            "CONTENT_TYPE": self.headers.get("Content-Type", ""),
            "CONTENT_LENGTH": str(len(body)),
            "REMOTE_ADDR": self.client_address[0],
            "GIT_CONFIG_NOSYSTEM": "1",
            "HOME": str(self.upstream.root),
        }
        out = subprocess.run(["git", "http-backend"], input=body, capture_output=True, env=env).stdout
        head, _, payload = out.partition(b"\r\n\r\n")
        status, headers = 200, {}
        for line in head.decode().split("\r\n"):
            if not line:
                continue
            k, _, v = line.partition(":")
            if k.lower() == "status":
                status = int(v.strip().split()[0])
            else:
                headers[k.strip()] = v.strip()
        content_type = headers.pop("Content-Type", "application/octet-stream")
        self._send(status, payload, content_type, headers)

    def _raw_upgrade(self) -> None:
        self.send_response(101)
        self.send_header("Upgrade", "raw-echo")
        self.send_header("Connection", "Upgrade")
        self.end_headers()
        self.wfile.flush()
        self._record(0)
        entry = self.upstream.seen[-1]
        entry.method = "RAW"
        self.connection.settimeout(10)
        try:
            while data := self.connection.recv(65536):
                entry.body_len += len(data)
                self.connection.sendall(data)
        except OSError:
            pass
        self.close_connection = True

    def _websocket(self) -> None:
        wsframes.accept(self)
        prefix = (self.headers.get("Authorization", "") + " ").encode() if "tell-auth" in self.path else b""
        while frame := wsframes.read_frame(self.rfile):
            opcode, data = frame
            if opcode == wsframes.CLOSE:  # echo it and stop
                self.wfile.write(wsframes.encode_frame(wsframes.CLOSE, data))
                return
            if opcode in (wsframes.TEXT, wsframes.BINARY):
                self.wfile.write(wsframes.encode_frame(opcode, prefix + data))
                self.wfile.flush()


class _QuietErrors:
    """A peer that stops mid-request (as the proxy does when it cuts an upload) is
    expected in these tests; it is not worth a traceback on stderr."""

    def handle_error(self, request: object, client_address: object) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError, ssl.SSLError)):
            return
        super().handle_error(request, client_address)  # type: ignore[misc]


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS for a test server: its certificate, HTTP/1.1 only."""
    context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    context.load_cert_chain(cert, key)
    context.set_alpn_protocols(["http/1.1"])
    return context


class TlsServer(_QuietErrors, http.server.ThreadingHTTPServer):
    daemon_threads = True
    context: ssl.SSLContext

    def get_request(self) -> tuple[socket.socket, object]:
        sock, addr = self.socket.accept()
        sock.settimeout(10)
        try:
            tls = self.context.wrap_socket(sock, server_side=True)
        except (ssl.SSLError, OSError):
            sock.close()
            raise
        tls.settimeout(None)
        return tls, addr


class _PlainServer(_QuietErrors, http.server.ThreadingHTTPServer):
    daemon_threads = True


def start_upstream(directory: Path) -> Upstream:
    """Start the HTTP and HTTPS servers on 127.0.0.1 (ephemeral ports), in threads."""
    directory.mkdir(parents=True, exist_ok=True)
    ca, cert, key = make_test_pki(directory)
    make_wheel(directory)
    make_git_repo(directory)
    upstream = Upstream(0, 0, ca, directory)
    handler = type("Handler", (_Handler,), {"upstream": upstream})

    plain = _PlainServer(("127.0.0.1", 0), handler)
    tls = TlsServer(("127.0.0.1", 0), handler)
    tls.context = server_context(cert, key)
    upstream.http_port = plain.server_address[1]
    upstream.https_port = tls.server_address[1]
    for server in (plain, tls):
        threading.Thread(target=server.serve_forever, daemon=True, name="upstream").start()
        upstream._servers.append(server)
    return upstream
