"""A real HTTP server on 127.0.0.1 standing in for Slack, a webhook receiver or falcosidekick.

Scriptable: each request takes the next planned `Reply` (status, headers, body, or a hang until
released), else the default reply. It can verify an HMAC-SHA256 signature header and answer 401
when it does not match. Every request is recorded with its body.
"""

from __future__ import annotations

import collections
import hashlib
import hmac
import random
import socket
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class Reply:
    """What the receiver answers to one request."""

    status: int = 200
    body: bytes = b"ok"
    headers: dict[str, str] = field(default_factory=dict)
    hang: bool = False  # wait until released (the client times out first)


@dataclass(frozen=True)
class Received:
    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    status: int  # what we answered (0: hung up without answering)
    at: float


def free_port() -> int:
    """A port nobody listens on (connection refused) that can be bound later.

    Chosen below the ephemeral range: retries against an ephemeral port nobody listens on can
    end in a TCP self-connect (the client's own source port), which then holds the port.
    """
    low, _ = (int(x) for x in Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split())
    for _ in range(100):
        port = random.randrange(max(1024, low - 12000), low)
        with socket.socket() as sock:
            try:
                sock.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise RuntimeError("no free port below the ephemeral range")


class Receiver:
    """Start with `start()` (or use as a context manager); `stop()` releases hangs and joins."""

    def __init__(self, port: int = 0, default: Reply = Reply(), hmac_secret: str | None = None,
                 hmac_header: str = "X-Detector-Signature", tls: ssl.SSLContext | None = None) -> None:
        self.port = port
        self.tls = tls
        self.default = default
        self.hmac_secret = hmac_secret
        self.hmac_header = hmac_header
        self.plan: collections.deque[Reply] = collections.deque()
        self.received: list[Received] = []
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None
        self.thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://127.0.0.1:{self.port}"

    def start(self) -> Receiver:
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.0"

            def log_message(self, format: str, *args: Any) -> None:
                return None

            def do_POST(self) -> None:
                receiver.handle(self)

            do_PUT = do_PATCH = do_POST  # noqa: N815

        self.release.clear()
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = False  # server_close() joins the handler threads
        self.port = self.server.server_address[1]
        if self.tls is not None:
            self.server.socket = self.tls.wrap_socket(self.server.socket, server_side=True)
        self.thread = threading.Thread(target=self.server.serve_forever, args=(0.02,), name="test-receiver",
                                       daemon=True)
        self.thread.start()
        return self

    def stop(self) -> None:
        self.release.set()
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.thread is not None:
            self.thread.join(5)
            self.thread = None

    def __enter__(self) -> Receiver:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def handle(self, request: BaseHTTPRequestHandler) -> None:
        length = int(request.headers.get("Content-Length") or 0)
        body = request.rfile.read(length)
        with self.lock:
            reply = self.plan.popleft() if self.plan else self.default
        if self.hmac_secret is not None and not self._signed(request, body):
            reply = Reply(401, b"bad signature")
        if reply.hang:
            self._record(request, body, 0)
            self.release.wait(30)
            return
        self._record(request, body, reply.status)
        request.send_response(reply.status)
        for key, value in reply.headers.items():
            request.send_header(key, value)
        request.send_header("Content-Length", str(len(reply.body)))
        request.end_headers()
        request.wfile.write(reply.body)

    def _signed(self, request: BaseHTTPRequestHandler, body: bytes) -> bool:
        assert self.hmac_secret is not None
        expected = "sha256=" + hmac.new(self.hmac_secret.encode(), body, hashlib.sha256).hexdigest()
        return hmac.compare_digest(expected, request.headers.get(self.hmac_header) or "")

    def _record(self, request: BaseHTTPRequestHandler, body: bytes, status: int) -> None:
        with self.lock:
            self.received.append(Received(request.command, request.path, dict(request.headers.items()), body,
                                          status, time.monotonic()))

    def accepted(self) -> list[Received]:
        """Requests answered with 2xx, in arrival order."""
        with self.lock:
            return [r for r in self.received if 200 <= r.status < 300]


def wait_for(predicate: Callable[[], object], timeout: float = 10.0, interval: float = 0.01) -> None:
    """Poll until `predicate()` is truthy; fail the test at the deadline."""
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(interval)
