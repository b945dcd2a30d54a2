"""A jailed client that abuses the proxy, for its own checks. It talks only to the proxy
named in HTTPS_PROXY / HTTP_PROXY (127.0.0.1).

Usage:
    tunnel.py raw HOST:PORT            CONNECT, then send bytes that are not HTTP
    tunnel.py tlsraw HOST:PORT         CONNECT, TLS, then bytes that are not HTTP inside it
    tunnel.py silent HOST:PORT         CONNECT, then say nothing for a second
    tunnel.py sni HOST:PORT SNI        CONNECT, TLS with another SNI, GET with Host HOST:PORT
    tunnel.py nested HOST:PORT INNER   CONNECT, TLS, then CONNECT INNER inside the tunnel
    tunnel.py upgrade URL              GET URL with `Upgrade: raw-echo` (plain proxy);
                                       after a 101, send raw bytes and read what comes back
Prints one JSON line: {"connect": int|null, "reply": str} (reply: everything that came
back after the CONNECT answer, or after the 101 head for `upgrade`).
"""

from __future__ import annotations

import json
import os
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit

NOT_HTTP = b"SSH-2.0-OpenSSH_9.2\r\n\x00\x00\x01\x0c\x0a\x14 binary, not HTTP \xff\xfe\r\n\r\n"


def read_all(sock: socket.socket) -> bytes:
    out = b""
    try:
        while chunk := sock.recv(65536):
            out += chunk
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    return out


def read_head(sock: socket.socket) -> tuple[int, bytes]:
    head = b""
    while b"\r\n\r\n" not in head:
        byte = sock.recv(1)
        if not byte:
            raise ConnectionError(f"closed before a response head: {head!r}")
        head += byte
    return int(head.split()[1]), head


def proxy(env: str) -> socket.socket:
    url = urlsplit(os.environ[env])
    return socket.create_connection((url.hostname, url.port), timeout=5)


def upgrade(url: str) -> dict[str, object]:
    parts = urlsplit(url)
    sock = proxy("HTTP_PROXY")
    sock.sendall(
        f"GET {url} HTTP/1.1\r\nHost: {parts.netloc}\r\nConnection: Upgrade\r\n"
        "Upgrade: raw-echo\r\n\r\n".encode()
    )
    status, head = read_head(sock)
    if status == 101:
        time.sleep(0.2)  # let the proxy decide what to do with the upgraded connection
        try:
            sock.sendall(NOT_HTTP)
        except OSError:
            pass
    return {"connect": None, "status": status, "reply": read_all(sock).decode("latin-1")}


def main() -> None:
    mode, target = sys.argv[1], sys.argv[2]
    if mode == "upgrade":
        print(json.dumps(upgrade(target)), flush=True)
        return
    sock = proxy("HTTPS_PROXY")
    sock.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    connect_status, _ = read_head(sock)
    context = ssl.create_default_context()  # trusts the jail's CA through SSL_CERT_FILE
    if mode == "raw":
        sock.sendall(NOT_HTTP)
        reply = read_all(sock)
    elif mode == "silent":
        sock.settimeout(1)
        reply = read_all(sock)
    elif mode == "tlsraw":
        tls = context.wrap_socket(sock, server_hostname=target.rsplit(":", 1)[0])
        tls.sendall(NOT_HTTP)
        reply = read_all(tls)
    elif mode == "sni":
        tls = context.wrap_socket(sock, server_hostname=sys.argv[3])
        tls.sendall(f"GET /echo HTTP/1.1\r\nHost: {target}\r\nConnection: close\r\n\r\n".encode())
        reply = read_all(tls)
    elif mode == "nested":
        tls = context.wrap_socket(sock, server_hostname=target.rsplit(":", 1)[0])
        inner = sys.argv[3]
        tls.sendall(f"CONNECT {inner} HTTP/1.1\r\nHost: {inner}\r\n\r\n".encode())
        reply = read_all(tls)
    else:
        raise SystemExit(f"unknown mode {mode}")
    print(json.dumps({"connect": connect_status, "reply": reply.decode("latin-1")}), flush=True)


if __name__ == "__main__":
    main()
