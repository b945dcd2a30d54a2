"""WebSocket frames (RFC 6455) for the tests' servers: read a client's, write a server's."""

from __future__ import annotations

import base64
import hashlib
import http.server
import struct
from typing import BinaryIO

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"
TEXT, BINARY, CLOSE, PING, PONG = 0x1, 0x2, 0x8, 0x9, 0xA


def accept_key(key: str) -> str:
    """The Sec-WebSocket-Accept answering a client's Sec-WebSocket-Key."""
    return base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()


def accept(handler: http.server.BaseHTTPRequestHandler) -> None:
    """Answer a WebSocket upgrade request with 101; frames follow on the connection."""
    handler.send_response(101)
    handler.send_header("Upgrade", "websocket")
    handler.send_header("Connection", "Upgrade")
    handler.send_header("Sec-WebSocket-Accept", accept_key(handler.headers["Sec-WebSocket-Key"]))
    handler.end_headers()
    handler.wfile.flush()


def read_frame(stream: BinaryIO) -> tuple[int, bytes] | None:
    """(opcode, unmasked payload) of the next frame, or None at the end of the stream."""
    head = stream.read(2)
    if len(head) < 2:
        return None
    opcode, length = head[0] & 0x0F, head[1] & 0x7F
    if length == 126:
        length = struct.unpack("!H", stream.read(2))[0]
    elif length == 127:
        length = struct.unpack("!Q", stream.read(8))[0]
    mask = stream.read(4) if head[1] & 0x80 else b"\0\0\0\0"
    data = stream.read(length)
    if len(data) < length:
        return None
    return opcode, bytes(b ^ mask[i % 4] for i, b in enumerate(data))


def encode_frame(opcode: int, data: bytes) -> bytes:
    """A final, unmasked frame, as a server sends it."""
    frame = bytes([0x80 | opcode])
    if len(data) < 126:
        frame += bytes([len(data)])
    elif len(data) < 65536:
        frame += bytes([126]) + struct.pack("!H", len(data))
    else:
        frame += bytes([127]) + struct.pack("!Q", len(data))
    return frame + data
