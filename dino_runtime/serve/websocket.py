"""The server side of RFC 6455 that the live page needs: the opening handshake, and unmasked
frames from the server (binary JPEG frames, text status messages, close). The page sends
nothing but a close, so incoming data is only looked at to see that the viewer left."""
from __future__ import annotations

import base64
import hashlib
import select
import socket
import struct

from .http import HttpError, Request

GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11"   # RFC 6455, section 1.3
TEXT, BINARY, CLOSE = 0x1, 0x2, 0x8


def handshake_headers(request: Request) -> dict[str, str]:
    """The 101 answer's headers for a valid upgrade request; :class:`HttpError` otherwise
    (400 not an upgrade, 426 another protocol version)."""
    if request.header("upgrade").lower() != "websocket" or "upgrade" not in [
            t.strip().lower() for t in request.header("connection").split(",")]:
        raise HttpError(400)
    if request.header("sec-websocket-version") != "13":
        raise HttpError(426, {"Sec-WebSocket-Version": "13"})
    key = request.header("sec-websocket-key")
    try:
        if len(base64.b64decode(key, validate=True)) != 16:
            raise ValueError(key)
    except ValueError:
        raise HttpError(400) from None
    accept = base64.b64encode(hashlib.sha1((key + GUID).encode()).digest()).decode()
    return {"Upgrade": "websocket", "Connection": "Upgrade", "Sec-WebSocket-Accept": accept}


def accept(headers: dict[str, str]) -> bytes:
    """The 101 answer that opens the WebSocket."""
    lines = ["HTTP/1.1 101 Switching Protocols", *(f"{k}: {v}" for k, v in headers.items())]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1")


def frame(opcode: int, payload: bytes) -> bytes:
    """One final, unmasked frame (servers never mask)."""
    n = len(payload)
    if n < 126:
        header = struct.pack("!BB", 0x80 | opcode, n)
    elif n < 1 << 16:
        header = struct.pack("!BBH", 0x80 | opcode, 126, n)
    else:
        header = struct.pack("!BBQ", 0x80 | opcode, 127, n)
    return header + payload


def viewer_left(sock: socket.socket) -> bool:
    """True when the viewer closed the connection or sent a close frame (never blocks)."""
    readable, _, _ = select.select([sock], [], [], 0)
    if not readable:
        return False
    try:
        data = sock.recv(4096)
    except (BlockingIOError, socket.timeout):
        return False
    except OSError:
        return True
    return not data or (data[0] & 0x0F) == CLOSE
