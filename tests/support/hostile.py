"""A hostile HTTP receiver on 127.0.0.1, written on raw sockets: it streams endless bodies,
trickles, echoes what it was sent into error bodies, or drops kept-alive connections."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType

Answer = Callable[["Request", socket.socket, threading.Event], None]


class Request:
    """What the receiver read: the request line's path, the headers and the body."""

    def __init__(self, path: str, headers: dict[str, str], body: bytes, nth_on_connection: int) -> None:
        self.path = path
        self.headers = headers
        self.body = body
        self.nth_on_connection = nth_on_connection


class HostileReceiver:
    """Accepts connections and answers every request with `answer(request, conn, stop)`."""

    def __init__(self, answer: Answer) -> None:
        self.answer = answer
        self.requests: list[Request] = []
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.port = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}"
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        self._listener.settimeout(0.05)

    def __enter__(self) -> HostileReceiver:
        thread = threading.Thread(target=self._accept, daemon=True)
        thread.start()
        self._threads.append(thread)
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 tb: TracebackType | None) -> None:
        self._stop.set()
        for conn in self._conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)
        for thread in self._threads:
            thread.join(5)
        self._listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                conn, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            self._conns.append(conn)
            thread = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _serve(self, conn: socket.socket) -> None:
        conn.settimeout(10)
        buffer = b""
        nth = 0
        with conn, contextlib.suppress(OSError):
            while not self._stop.is_set():
                while b"\r\n\r\n" not in buffer:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                head, _, buffer = buffer.partition(b"\r\n\r\n")
                lines = head.decode("latin-1").split("\r\n")
                headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
                length = int(headers.get("content-length", "0"))
                while len(buffer) < length:
                    chunk = conn.recv(65536)
                    if not chunk:
                        return
                    buffer += chunk
                body, buffer = buffer[:length], buffer[length:]
                nth += 1
                request = Request(lines[0].split(" ")[1], headers, body, nth)
                self.requests.append(request)
                self.answer(request, conn, self._stop)


def reply(status: int, body: bytes, *, close: bool = False) -> bytes:
    """A whole HTTP/1.1 response."""
    return (f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nContent-Length: {len(body)}\r\n"
            f"Connection: {'close' if close else 'keep-alive'}\r\n\r\n").encode() + body


def endless(_request: Request, conn: socket.socket, stop: threading.Event) -> None:
    """200, then a body without end (no length: it ends when the connection does)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n")
    chunk = b"x" * 65536
    while not stop.is_set():
        conn.sendall(chunk)


def trickle_body(_request: Request, conn: socket.socket, stop: threading.Event) -> None:
    """200 with a 1,000-byte body sent a byte every 0.2 s: each read is quick, the whole is not."""
    conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 1000\r\n\r\n")
    for _ in range(1000):
        if stop.wait(0.2):
            return
        conn.sendall(b"x")


def trickle_headers(_request: Request, conn: socket.socket, stop: threading.Event) -> None:
    """The status line and headers, a byte every 0.2 s."""
    for byte in b"HTTP/1.1 200 OK\r\nX-Slow: " + b"y" * 500:
        if stop.wait(0.2):
            return
        conn.sendall(bytes([byte]))


def drop_kept_alive(request: Request, conn: socket.socket, _stop: threading.Event) -> None:
    """The first request of a connection gets 200 and keep-alive; a second one on it is read and
    the connection closed without a response (the server's idle timeout raced the request)."""
    if request.nth_on_connection > 1:
        conn.shutdown(socket.SHUT_RDWR)
        raise OSError("dropped")
    conn.sendall(reply(200, b"ok"))


def wait_until(condition: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.02)
