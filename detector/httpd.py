"""A small HTTP/1.0 responder for GET and HEAD, bounded whatever its clients do.

It serves `detector run`'s /metrics, /healthz and /readyz, which anyone who can reach the port
may call. The standard library's ThreadingHTTPServer starts a thread per connection and waits
for a request line forever, so a hundred half-sent requests held a hundred threads, and every
client that hung up wrote a traceback. Here one thread and a selector serve every connection:

* at most `max_connections` at once; when a new one arrives at that bound, the oldest one that
  has not finished sending its request is closed (a scrape or probe sends its request at once,
  so a flood of idle connections evicts itself, never the newest client);
* the request line and headers must arrive within `header_timeout` seconds of connecting and
  fit in `max_head_bytes`; the response must be taken within `response_timeout` seconds;
* one request per connection (`Connection: close`), GET and HEAD only, no request body read;
* a client that disconnects is a debug line, never a traceback.
"""

from __future__ import annotations

import contextlib
import selectors
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from http import HTTPStatus

import structlog

log = structlog.get_logger("detector.metrics")

READ_CHUNK = 4096
_ABORT = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() resets the connection


@dataclass(frozen=True, slots=True)
class Response:
    """What a route answers: a status, a body and its content type."""

    status: int
    body: bytes
    content_type: str = "text/plain; charset=utf-8"


Route = Callable[[str], Response]  # the request's path (no query string) -> the response


@dataclass(frozen=True, slots=True)
class Limits:
    """The bounds of one server; the defaults suit Prometheus scrapes and kubelet probes."""

    max_connections: int = 64
    header_timeout: float = 5.0  # from connect to the end of the request head: idle and slow clients
    response_timeout: float = 10.0  # from the end of the request head to the last byte taken
    max_head_bytes: int = 8192  # request line and headers together


DEFAULT_LIMITS = Limits()


class _Connection:
    """One client: the request head read so far, then the response left to send."""

    __slots__ = ("deadline", "head", "out", "peer", "sock")

    def __init__(self, sock: socket.socket, peer: str, deadline: float) -> None:
        self.sock = sock
        self.peer = peer
        self.head = bytearray()
        self.out: memoryview | None = None  # None while the request head is still arriving
        self.deadline = deadline


class BoundedHTTPServer:
    """Serves `route` on `host:port` from one daemon thread until `close()`."""

    def __init__(self, host: str, port: int, route: Route, limits: Limits = DEFAULT_LIMITS,
                 name: str = "detector-http") -> None:
        family, _, _, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM,
                                                      flags=socket.AI_PASSIVE)[0]
        self._listener = socket.create_server(address[:2], family=family, backlog=128)
        self._listener.setblocking(False)
        self._route = route
        self._limits = limits
        self._connections: dict[socket.socket, _Connection] = {}  # in accept order: the first is the oldest
        self._selector = selectors.DefaultSelector()
        self._selector.register(self._listener, selectors.EVENT_READ, None)
        self._wake_r, self._wake_w = socket.socketpair()
        self._wake_r.setblocking(False)
        self._selector.register(self._wake_r, selectors.EVENT_READ, None)
        self._accept_paused_until = 0.0
        self._closing = False
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def close(self) -> None:
        """Stop serving; open connections are closed without an answer."""
        self._closing = True
        with contextlib.suppress(OSError):  # the loop has stopped already
            self._wake_w.send(b"x")
        self._thread.join(timeout=5)
        self._wake_w.close()

    # -- the loop ---------------------------------------------------------------------------
    def _serve(self) -> None:
        try:
            while not self._closing:
                for key, events in self._selector.select(self._wait()):
                    if key.fileobj is self._listener:
                        self._accept()
                    elif key.fileobj is not self._wake_r:
                        self._step(key.data, events)
                self._expire(time.monotonic())
        finally:
            for conn in list(self._connections.values()):
                self._drop(conn)
            self._selector.close()
            self._listener.close()
            self._wake_r.close()

    def _wait(self) -> float | None:
        """Seconds until the next deadline (None: nothing to wait for but clients)."""
        now = time.monotonic()
        deadlines = [c.deadline for c in self._connections.values()]
        if self._accept_paused_until:
            deadlines.append(self._accept_paused_until)
        return max(0.0, min(deadlines) - now) if deadlines else None

    def _expire(self, now: float) -> None:
        for conn in [c for c in self._connections.values() if c.deadline <= now]:
            log.debug("http_timeout", peer=conn.peer, reading=conn.out is None)
            self._drop(conn, reset=True)
        if self._accept_paused_until and now >= self._accept_paused_until:
            self._accept_paused_until = 0.0
            self._selector.register(self._listener, selectors.EVENT_READ, None)

    def _accept(self) -> None:
        for _ in range(self._limits.max_connections):  # then let the others have a turn
            try:
                sock, address = self._listener.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as exc:  # out of file descriptors or memory: stop accepting for a moment
                log.debug("http_accept_failed", error=str(exc))
                self._selector.unregister(self._listener)
                self._accept_paused_until = time.monotonic() + 0.1
                return
            if len(self._connections) >= self._limits.max_connections:
                self._evict()
            sock.setblocking(False)
            conn = _Connection(sock, _peer(address), time.monotonic() + self._limits.header_timeout)
            self._connections[sock] = conn
            self._selector.register(sock, selectors.EVENT_READ, conn)
            self._read(conn)  # a client usually sends its request with the handshake

    def _evict(self) -> None:
        """Make room: close the oldest connection still sending its request (else the oldest one)."""
        waiting = (c for c in self._connections.values() if c.out is None)
        victim = next(waiting, None) or next(iter(self._connections.values()))
        log.debug("http_connection_evicted", peer=victim.peer)
        self._drop(victim, reset=True)

    def _step(self, conn: _Connection, events: int) -> None:
        if conn.sock not in self._connections:
            return  # closed earlier in this round
        if conn.out is None and events & selectors.EVENT_READ:
            self._read(conn)
        elif conn.out is not None and events & selectors.EVENT_WRITE:
            self._write(conn)

    # -- one connection ---------------------------------------------------------------------
    def _read(self, conn: _Connection) -> None:
        try:
            data = conn.sock.recv(READ_CHUNK)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._gone(conn, exc)
            return
        if not data:
            self._gone(conn, None)
            return
        conn.head += data
        end = conn.head.find(b"\r\n\r\n")
        if end < 0:
            end = conn.head.find(b"\n\n")
        if 0 <= end < self._limits.max_head_bytes:
            self._respond(conn, self._answer(bytes(conn.head[:end])))
        elif len(conn.head) >= self._limits.max_head_bytes:
            self._respond(conn, _error(HTTPStatus.REQUEST_HEADER_FIELDS_TOO_LARGE))

    def _answer(self, head: bytes) -> bytes:
        """The response bytes to a request head."""
        parts = head.split(b"\n", 1)[0].strip().split(b" ")
        if len(parts) != 3 or not parts[2].startswith(b"HTTP/") or not parts[1].startswith(b"/"):
            return _error(HTTPStatus.BAD_REQUEST)
        method, target = parts[0], parts[1]
        if method not in (b"GET", b"HEAD"):
            return _error(HTTPStatus.METHOD_NOT_ALLOWED, b"Allow: GET, HEAD\r\n")
        path = target.split(b"?", 1)[0].decode("ascii", "replace")
        try:
            response = self._route(path)
        except Exception as exc:  # a bug in a route answers 500 and leaves the server running
            log.error("http_route_failed", path=path, error=f"{type(exc).__name__}: {exc}")
            return _error(HTTPStatus.INTERNAL_SERVER_ERROR)
        return _encode(response, with_body=method == b"GET")

    def _respond(self, conn: _Connection, response: bytes) -> None:
        conn.out = memoryview(response)
        conn.deadline = time.monotonic() + self._limits.response_timeout
        self._selector.modify(conn.sock, selectors.EVENT_WRITE, conn)
        self._write(conn)

    def _write(self, conn: _Connection) -> None:
        assert conn.out is not None
        try:
            sent = conn.sock.send(conn.out)
        except (BlockingIOError, InterruptedError):
            return
        except OSError as exc:
            self._gone(conn, exc)
            return
        conn.out = conn.out[sent:]
        if not conn.out:
            _discard_unread(conn.sock)  # unread request bytes would turn the close into a reset
            self._drop(conn)

    def _gone(self, conn: _Connection, exc: OSError | None) -> None:
        """The client hung up or reset: expected, so a debug line and no traceback."""
        log.debug("http_client_gone", peer=conn.peer, error=type(exc).__name__ if exc else "eof")
        self._drop(conn)

    def _drop(self, conn: _Connection, reset: bool = False) -> None:
        """Forget and close `conn`; `reset` also discards what the kernel still holds for it."""
        del self._connections[conn.sock]
        self._selector.unregister(conn.sock)
        if reset:  # a timed-out or evicted client: no orphaned buffers left trickling out after us
            with contextlib.suppress(OSError):
                conn.sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, _ABORT)
        conn.sock.close()


def _encode(response: Response, with_body: bool) -> bytes:
    status = HTTPStatus(response.status)
    head = (f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: {response.content_type}\r\n"
            f"Content-Length: {len(response.body)}\r\nConnection: close\r\n\r\n").encode("ascii")
    return head + response.body if with_body else head


def _error(status: HTTPStatus, extra_headers: bytes = b"") -> bytes:
    body = f"{status.phrase}\n".encode("ascii")
    return (f"HTTP/1.0 {status.value} {status.phrase}\r\nContent-Type: text/plain; charset=utf-8\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n").encode("ascii") + extra_headers + b"\r\n" + body


def _discard_unread(sock: socket.socket) -> None:
    """Read what has arrived (a bounded amount), so that closing does not reset the response."""
    try:
        sock.shutdown(socket.SHUT_WR)
        for _ in range(16):
            if not sock.recv(READ_CHUNK):
                return
    except OSError:
        pass  # nothing left to read (BlockingIOError) or the client is gone


def _peer(address: object) -> str:
    if isinstance(address, tuple) and len(address) >= 2:
        return f"{address[0]}:{address[1]}"
    return str(address)
