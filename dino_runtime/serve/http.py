"""The little HTTP/1.1 the live server speaks: one request per connection, GET and HEAD only,
bounded in size and time, answered with a status line, a few headers and a short body.

Written here rather than on ``http.server`` so that every limit and every byte sent is ours:
the request head is read with a size cap (414 for a long request line, 431 for long headers,
before anything is parsed), there is no file serving and no error page that echoes the request.
"""
from __future__ import annotations

import socket
from dataclasses import dataclass, field
from urllib.parse import parse_qs

MAX_REQUEST_LINE = 2048      # bytes; a longer one is 414
MAX_HEAD = 8192              # request line + headers; more is 431
MAX_HEADERS = 48             # header lines; more is 431
REASONS = {200: "OK", 400: "Bad Request", 401: "Unauthorized",
           404: "Not Found", 405: "Method Not Allowed", 408: "Request Timeout",
           414: "URI Too Long", 426: "Upgrade Required", 431: "Request Header Fields Too Large",
           503: "Service Unavailable", 505: "HTTP Version Not Supported"}
# Sent with every answer: nothing is cached (the token may be in the URL), no referrer leaves
# the page, the browser does not guess types, and no other site may frame the page.
COMMON_HEADERS = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff",
                  "Referrer-Policy": "no-referrer", "X-Frame-Options": "DENY"}


class HttpError(Exception):
    """A request answered with ``status`` and its reason, and nothing else."""

    def __init__(self, status: int, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {REASONS[status]}")
        self.status = status
        self.headers = headers or {}


@dataclass
class Request:
    method: str
    path: str                       # the target before '?', exactly as sent
    query: dict[str, list[str]]
    headers: dict[str, str] = field(default_factory=dict)  # names lower-cased

    def header(self, name: str) -> str:
        return self.headers.get(name.lower(), "")


def read_request(sock: socket.socket) -> Request:
    """Read and parse one request head; :class:`HttpError` for anything malformed or too big.
    The socket's timeout bounds how long a slow client can hold it (408)."""
    head = _read_head(sock)
    line, _, rest = head.partition(b"\r\n")
    parts = line.split(b" ")
    if len(parts) != 3:
        raise HttpError(400)
    method, target, version = (p.decode("latin-1") for p in parts)
    if version not in ("HTTP/1.1", "HTTP/1.0"):
        raise HttpError(505 if version.startswith("HTTP/") else 400)
    if not target.startswith("/"):
        raise HttpError(400)
    path, _, query = target.partition("?")
    return Request(method, path, parse_qs(query, max_num_fields=8), _parse_headers(rest))


def _read_head(sock: socket.socket) -> bytes:
    data = b""
    while b"\r\n\r\n" not in data:
        if b"\r\n" not in data and len(data) > MAX_REQUEST_LINE:
            raise HttpError(414)
        if len(data) > MAX_HEAD:
            raise HttpError(431 if b"\r\n" in data else 414)
        try:
            chunk = sock.recv(4096)
        except socket.timeout:
            raise HttpError(408) from None
        if not chunk:
            raise ConnectionError("the client closed the connection")
        data += chunk
    head = data.split(b"\r\n\r\n", 1)[0]
    if len(head.split(b"\r\n", 1)[0]) > MAX_REQUEST_LINE:
        raise HttpError(414)
    if len(head) > MAX_HEAD:
        raise HttpError(431)
    return head


def _parse_headers(block: bytes) -> dict[str, str]:
    lines = [line for line in block.split(b"\r\n") if line]
    if len(lines) > MAX_HEADERS:
        raise HttpError(431)
    headers = {}
    for line in lines:
        name, sep, value = line.decode("latin-1").partition(":")
        if not sep or not name or name != name.strip() or any(c in name for c in " \t"):
            raise HttpError(400)
        headers[name.lower()] = value.strip()
    return headers


def response(status: int, body: bytes = b"", content_type: str = "text/plain; charset=utf-8",
             headers: dict[str, str] | None = None, head_only: bool = False) -> bytes:
    """A whole answer: status line, headers (``Connection: close``), body."""
    if not body and status >= 400:
        body = f"{status} {REASONS[status]}\n".encode()
    lines = [f"HTTP/1.1 {status} {REASONS[status]}"]
    fields = {**COMMON_HEADERS, "Content-Type": content_type,
              "Content-Length": str(len(body)), "Connection": "close", **(headers or {})}
    lines += [f"{k}: {v}" for k, v in fields.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + (b"" if head_only else body)
