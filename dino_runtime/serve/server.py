"""``dino-run --serve``: a live page of every stream, ``/api/status`` (JSON) and ``/metrics``
(Prometheus), over HTTP with the frames on one WebSocket per viewer.

Why a WebSocket and not MJPEG: a browser opens at most six HTTP/1.1 connections to one host,
and MJPEG takes one per stream, so the seventh and eighth cameras of an eight-camera box would
stay blank; one WebSocket carries every stream's JPEGs and the figures, and lets the server
choose per viewer which frame to send next (the newest, never a queue of old ones).

Limits: one thread per connection, at most ``max_viewers`` WebSocket viewers (503 past that)
and a few more plain requests at once; each request head at most 8 KiB, read within a few
seconds; each viewer at most ``kbps`` (frames over the budget are skipped); a viewer whose
socket stays full for :data:`SEND_TIMEOUT_S` is dropped. Routes are fixed (``/``, ``/ws``,
``/api/status``, ``/metrics``): nothing is read from disk, so no URL reaches a file.
"""
from __future__ import annotations

import hmac
import json
import re
import socket
import threading
import time
from dataclasses import dataclass
from typing import Any, Callable

from dino_core.errors import OptionError, UserError

from .http import HttpError, Request, read_request, response
from .hub import FrameHub
from .metrics import CONTENT_TYPE as METRICS_TYPE
from .metrics import prometheus_text
from .page import CONTENT_SECURITY_POLICY, PAGE
from .websocket import BINARY, CLOSE, TEXT, accept, frame, handshake_headers, viewer_left

HEAD_TIMEOUT_S = 5.0          # to send a request head
SEND_TIMEOUT_S = 5.0          # a viewer whose socket takes no data this long is dropped
STATUS_INTERVAL_S = 1.0       # figures sent to each viewer this often
EXTRA_CONNECTIONS = 8         # plain requests (page, status, metrics) at once besides viewers
ROUTES = ("/", "/ws", "/api/status", "/metrics")
DEFAULT_HOST = "127.0.0.1"


@dataclass(frozen=True)
class ServeOptions:
    """``--serve [HOST:]PORT`` and its limits."""

    host: str = DEFAULT_HOST
    port: int = 8080
    token: str | None = None
    max_viewers: int = 10
    kbps: int = 8000          # per viewer, kilobits per second

    @classmethod
    def parse(cls, text: str, **limits: Any) -> "ServeOptions":
        """``PORT``, ``HOST:PORT`` or ``[IPv6]:PORT``; :class:`OptionError` otherwise."""
        match = re.fullmatch(r"(?:(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9.-]+):)?(\d{1,5})", text.strip())
        if match is None or int(match.group(2)) > 65535:
            raise OptionError(f"--serve {text}: expected PORT or HOST:PORT (e.g. 8080, "
                              "0.0.0.0:8080, [::1]:8080), port 0..65535")
        host = (match.group(1) or DEFAULT_HOST).strip("[]")
        return cls(host, int(match.group(2)), **limits)


class ViewerCounts:
    """What the viewers got, for the status and ``/metrics``."""

    def __init__(self) -> None:
        self.connected = 0
        self.refused = 0
        self.frames_sent = 0
        self.frames_dropped = 0
        self.lock = threading.Lock()

    def as_dict(self, cap: int) -> dict[str, int]:
        return {"connected": self.connected, "max": cap, "refused": self.refused,
                "frames_sent": self.frames_sent, "frames_dropped": self.frames_dropped}


class LiveServer:
    """Listens from construction (so that a port in use fails before any work); serves
    ``status()`` and the frames published to ``hub`` from :meth:`start` to :meth:`close`."""

    def __init__(self, options: ServeOptions, hub: FrameHub) -> None:
        self.options = options
        self.status: Callable[[], dict[str, Any]] = dict
        self.hub = hub
        self.viewers = ViewerCounts()
        self._slots = threading.BoundedSemaphore(options.max_viewers + EXTRA_CONNECTIONS)
        self._closed = threading.Event()
        self._threads: set[threading.Thread] = set()
        self._conns: set[socket.socket] = set()
        try:
            self._sock = socket.create_server(
                (options.host, options.port),
                family=socket.AF_INET6 if ":" in options.host else socket.AF_INET)
        except OSError as e:
            raise UserError(f"--serve {options.host}:{options.port}: cannot listen "
                            f"({e.strerror or e})") from None
        self.port = self._sock.getsockname()[1]
        self._accept_thread = threading.Thread(target=self._accept_loop,
                                               name="dino-run-serve", daemon=True)

    @property
    def url(self) -> str:
        host = f"[{self.options.host}]" if ":" in self.options.host else self.options.host
        return f"http://{host}:{self.port}/"

    def start(self, status: Callable[[], dict[str, Any]]) -> "LiveServer":
        self.status = status
        self.hub.start()
        self._accept_thread.start()
        return self

    def close(self) -> None:
        """Stop listening and end every connection (viewers see the socket close)."""
        self._closed.set()
        self.hub.close()
        try:
            self._sock.shutdown(socket.SHUT_RDWR)
        except OSError:
            pass
        self._sock.close()
        if self._accept_thread.is_alive():
            self._accept_thread.join(2.0)
        for conn in list(self._conns):  # a viewer blocked in a send returns at once
            try:
                conn.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass
        for thread in list(self._threads):
            thread.join(SEND_TIMEOUT_S + 1)

    def full_status(self) -> dict[str, Any]:
        status = self.status()
        status["viewers"] = self.viewers.as_dict(self.options.max_viewers)
        return status

    # -- connections ------------------------------------------------------------------------
    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, _ = self._sock.accept()
            except OSError:
                return
            if not self._slots.acquire(blocking=False):
                _answer(conn, response(503, headers={"Retry-After": "5"}))
                continue
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True,
                                      name="dino-run-serve-conn")
            self._threads.add(thread)
            thread.start()

    def _serve(self, conn: socket.socket) -> None:
        self._conns.add(conn)
        try:
            conn.settimeout(HEAD_TIMEOUT_S)
            try:
                request = read_request(conn)
                self._route(conn, request)
            except HttpError as e:
                _answer(conn, response(e.status, headers=e.headers))
        except OSError:
            pass  # the client went away
        finally:
            self._conns.discard(conn)
            conn.close()
            self._slots.release()
            self._threads.discard(threading.current_thread())

    def _route(self, conn: socket.socket, request: Request) -> None:
        if request.method not in ("GET", "HEAD"):
            raise HttpError(405, {"Allow": "GET, HEAD"})
        self._check_token(request)
        if request.path not in ROUTES:
            raise HttpError(404)
        head_only = request.method == "HEAD"
        if request.path == "/ws":
            self._viewer(conn, request)
        elif request.path == "/":
            conn.sendall(response(200, PAGE, "text/html; charset=utf-8",
                                  {"Content-Security-Policy": CONTENT_SECURITY_POLICY},
                                  head_only))
        elif request.path == "/api/status":
            body = json.dumps(self.full_status()).encode()
            conn.sendall(response(200, body, "application/json", head_only=head_only))
        else:
            body = prometheus_text(self.full_status()).encode()
            conn.sendall(response(200, body, METRICS_TYPE, head_only=head_only))

    def _check_token(self, request: Request) -> None:
        expected = self.options.token
        if expected is None:
            return
        given = request.query.get("token", [""])[0]
        auth = request.header("authorization")
        if auth.lower().startswith("bearer "):
            given = auth[7:].strip()
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise HttpError(401, {"WWW-Authenticate": 'Bearer realm="dino-run"'})

    # -- one viewer -------------------------------------------------------------------------
    def _viewer(self, conn: socket.socket, request: Request) -> None:
        headers = handshake_headers(request)
        counts = self.viewers
        with counts.lock:
            if counts.connected >= self.options.max_viewers:
                counts.refused += 1
                raise HttpError(503, {"Retry-After": "5"})
            counts.connected += 1
            self.hub.viewers = counts.connected
        try:
            conn.sendall(accept(headers))
            conn.settimeout(SEND_TIMEOUT_S)
            self._feed(conn)
        finally:
            with counts.lock:
                counts.connected -= 1
                self.hub.viewers = counts.connected

    def _feed(self, conn: socket.socket) -> None:
        """Send the figures every second and each stream's newest JPEG within the viewer's
        bandwidth budget, until the run or the viewer ends."""
        budget = Budget(self.options.kbps * 1000 / 8)
        seen = [0] * self.hub.count
        next_status = 0.0
        while not self._closed.is_set():
            now = time.perf_counter()
            if now >= next_status:
                conn.sendall(frame(TEXT,
                                             json.dumps(self.full_status()).encode()))
                next_status = now + STATUS_INTERVAL_S
            if viewer_left(conn):
                return
            self._send_frames(conn, seen, budget)
            self.hub.wait_newer(seen, min(STATUS_INTERVAL_S, max(0.0, next_status - now)))
        try:
            conn.sendall(frame(CLOSE, b"\x03\xe9"))  # 1001: going away
        except OSError:
            pass

    def _send_frames(self, conn: socket.socket, seen: list[int], budget: "Budget") -> None:
        versions, jpegs = list(self.hub.versions), list(self.hub.jpegs)
        for i, (version, jpeg) in enumerate(zip(versions, jpegs)):
            if version == seen[i] or jpeg is None:
                continue
            skipped = version - seen[i] - 1   # JPEGs made while this viewer was busy
            seen[i] = version
            if not budget.take(len(jpeg)):
                skipped += 1
            else:
                conn.sendall(frame(BINARY, i.to_bytes(2, "big") + jpeg))
                with self.viewers.lock:
                    self.viewers.frames_sent += 1
            if skipped > 0:
                with self.viewers.lock:
                    self.viewers.frames_dropped += skipped


class Budget:
    """A token bucket of ``rate`` bytes/s holding at most one second's worth: a frame is sent
    while the bucket is not empty (it may go below zero by one frame), so a viewer gets
    ``rate`` on average and its large frames are not starved."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.tokens = rate
        self.last = time.perf_counter()

    def take(self, size: int) -> bool:
        now = time.perf_counter()
        self.tokens = min(self.rate, self.tokens + (now - self.last) * self.rate)
        self.last = now
        if self.tokens <= 0:
            return False
        self.tokens -= size
        return True


def _answer(conn: socket.socket, data: bytes) -> None:
    try:
        conn.settimeout(1.0)
        conn.sendall(data)
    except OSError:
        pass
    finally:
        conn.close()
