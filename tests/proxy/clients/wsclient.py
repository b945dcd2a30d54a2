"""A jailed WebSocket client with no library: upgrade through the proxy, echo one message.

Usage: wsclient.py ws://host:port/path|wss://host:port/path MESSAGE
ws:// goes to HTTP_PROXY as an absolute-form request; wss:// opens a CONNECT tunnel
through HTTPS_PROXY and does TLS inside it (CA from SSL_CERT_FILE).
Prints one JSON line: {"status": int, "echo": str|null, "reason": str|null}.
With WS_AUTHORIZATION set, the upgrade request carries it as its Authorization header.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import ssl
import struct
import sys
from urllib.parse import urlsplit


def proxy_socket(env_name: str) -> socket.socket:
    host, port = urlsplit(os.environ[env_name]).hostname, urlsplit(os.environ[env_name]).port
    return socket.create_connection((host, port), timeout=10)


def read_head(sock: socket.socket) -> tuple[int, dict[str, str], bytes]:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            raise ConnectionError(f"closed before a response head: {data!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), headers, rest


def recv_exact(sock: socket.socket, n: int, buf: bytes) -> tuple[bytes, bytes]:
    while len(buf) < n:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed in the middle of a frame")
        buf += chunk
    return buf[:n], buf[n:]


def main() -> None:
    url, message = urlsplit(sys.argv[1]), sys.argv[2]
    authority = f"{url.hostname}:{url.port}"
    if url.scheme == "wss":
        sock = proxy_socket("HTTPS_PROXY")
        sock.sendall(f"CONNECT {authority} HTTP/1.1\r\nHost: {authority}\r\n\r\n".encode())
        status, _, _ = read_head(sock)
        if status != 200:
            print(json.dumps({"status": status, "echo": None, "reason": "CONNECT refused"}))
            return
        sock = ssl.create_default_context().wrap_socket(sock, server_hostname=url.hostname)
        target = url.path + (f"?{url.query}" if url.query else "")
    else:
        sock = proxy_socket("HTTP_PROXY")
        target = f"http://{authority}{url.path}" + (f"?{url.query}" if url.query else "")
    auth = os.environ.get("WS_AUTHORIZATION")
    key = base64.b64encode(os.urandom(16)).decode()
    sock.sendall(
        (
            f"GET {target} HTTP/1.1\r\nHost: {authority}\r\nUpgrade: websocket\r\n"
            f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
            + (f"Authorization: {auth}\r\n" if auth else "") + "\r\n"
        ).encode()
    )
    status, headers, rest = read_head(sock)
    if status != 101:
        print(json.dumps({"status": status, "echo": None, "reason": headers.get("x-httpjail-reason")}))
        return
    payload = message.encode()
    mask = os.urandom(4)
    masked = bytes(b ^ mask[i % 4] for i, b in enumerate(payload))
    sock.sendall(bytes([0x81, 0x80 | len(payload)]) + mask + masked)
    head, rest = recv_exact(sock, 2, rest)
    length = head[1] & 0x7F
    if length == 126:
        raw, rest = recv_exact(sock, 2, rest)
        length = struct.unpack("!H", raw)[0]
    data, rest = recv_exact(sock, length, rest)
    sock.sendall(bytes([0x88, 0x80]) + os.urandom(4))
    print(json.dumps({"status": status, "echo": data.decode(), "reason": None}))


if __name__ == "__main__":
    main()
