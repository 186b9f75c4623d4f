"""Clients of ``dino-run --serve`` for the tests: raw HTTP requests, a WebSocket viewer, and
``dino-run --serve 0`` in a subprocess with its URL."""
from __future__ import annotations

import base64
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time

from .conftest import ROOT


def exchange(port: int, raw: bytes, timeout: float = 10.0) -> bytes:
    """Send ``raw`` as it is; everything the server answers until it closes."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
        try:
            sock.sendall(raw)
        except (BrokenPipeError, ConnectionResetError):
            pass  # the server answered and closed before reading all of it
        data = b""
        while chunk := _recv(sock):
            data += chunk
    return data


def _recv(sock: socket.socket) -> bytes:
    try:
        return sock.recv(65536)
    except ConnectionResetError:
        return b""


def split_answer(data: bytes) -> tuple[int, dict[str, str], bytes]:
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = dict(line.split(": ", 1) for line in lines[1:])
    return int(lines[0].split()[1]), headers, body


class Viewer:
    """A WebSocket viewer of ``/ws``: reads (counting JPEGs per stream and status messages)
    in a thread until the server closes, or never reads at all (``stuck``)."""

    def __init__(self, port: int, token: str | None = None, stuck: bool = False) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=10)
        if stuck:  # a small receive buffer: the server's sends fill it at once
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        key = base64.b64encode(os.urandom(16)).decode()
        query = f"?token={token}" if token else ""
        self.sock.sendall(f"GET /ws{query} HTTP/1.1\r\nHost: x\r\nUpgrade: websocket\r\n"
                          f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                          "Sec-WebSocket-Version: 13\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = self.sock.recv(1)
            if not chunk:
                break
            head += chunk
        self.status = int(head.split()[1]) if head else 0
        self.frames: dict[int, int] = {}
        self.statuses: list[dict] = []
        self.thread = None
        if self.status == 101 and not stuck:
            self.thread = threading.Thread(target=self._read, daemon=True)
            self.thread.start()

    def _read(self) -> None:
        # Viewers are other machines in real use; here they share the run's two cores, so they
        # read at the lowest priority (a Linux thread's nice value is its own).
        os.setpriority(os.PRIO_PROCESS, threading.get_native_id(), 19)
        buffer = b""
        try:
            while chunk := self.sock.recv(65536):
                buffer += chunk
                buffer = self._messages(buffer)
        except OSError:
            pass

    def _messages(self, buffer: bytes) -> bytes:
        while len(buffer) >= 2:
            opcode, size, start = buffer[0] & 0x0F, buffer[1] & 0x7F, 2
            if size == 126:
                size, start = int.from_bytes(buffer[2:4], "big"), 4
            elif size == 127:
                size, start = int.from_bytes(buffer[2:10], "big"), 10
            if len(buffer) < start + size:
                return buffer
            payload, buffer = buffer[start:start + size], buffer[start + size:]
            if opcode == 2:
                index = int.from_bytes(payload[:2], "big")
                assert payload[2:4] == b"\xff\xd8"  # a JPEG
                self.frames[index] = self.frames.get(index, 0) + 1
            elif opcode == 1:
                self.statuses.append(json.loads(payload))
        return buffer

    def close(self) -> None:
        self.sock.close()
        if self.thread is not None:
            self.thread.join(5)


class Run:
    """``dino-run ... --serve 0`` in a subprocess; ``url`` once it serves."""

    def __init__(self, *args) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "dino_runtime.cli", *map(str, args)],
                                     cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     text=True)
        self.err: list[str] = []
        self.url = None
        deadline = time.time() + 60
        while self.url is None and time.time() < deadline:
            line = self.proc.stderr.readline()
            if not line:
                break
            self.err.append(line)
            found = re.search(r"live view on (http://\S+/)", line)
            if found:
                self.url = found.group(1)
        assert self.url is not None, "".join(self.err)
        self.port = int(self.url.rsplit(":", 1)[1].strip("/"))

    def status(self) -> dict:
        return json.loads(split_answer(exchange(self.port, b"GET /api/status HTTP/1.1\r\n\r\n",
                                                timeout=5))[2])

    def finish(self, signum: int | None = None, timeout: float = 120) -> tuple[int, str, str]:
        if signum is not None:
            self.proc.send_signal(signum)
        out, err = self.proc.communicate(timeout=timeout)
        return self.proc.returncode, out, "".join(self.err) + err
