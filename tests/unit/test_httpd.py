"""The metrics listener on real sockets: bounded threads and connections, timeouts, strict requests."""

from __future__ import annotations

import socket
import struct
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Iterator

import pytest

from detector.httpd import BoundedHTTPServer, Limits, Response
from detector.metrics import Metrics, MetricsServer
from tests.support.threadcheck import no_leaked_threads

FLOOD = 200
HEADER_TIMEOUT = 5.0  # the default of Limits.header_timeout, which the tests below rely on


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    yield from no_leaked_threads()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def server() -> Iterator[MetricsServer]:
    metrics = Metrics()
    metrics.ready = metrics.input_open = True
    running = MetricsServer(metrics, f"127.0.0.1:{free_port()}")
    yield running
    running.close()


def get(port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def exchange(port: int, request: bytes, timeout: float = 2.0) -> bytes:
    """Everything the server sends back to `request` before it closes the connection."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        received = b""
        while chunk := conn.recv(65536):
            received += chunk
        return received


def half_sent(port: int, count: int) -> list[socket.socket]:
    """`count` connections that sent a request line and a header but never the blank line ending it."""
    held = []
    for _ in range(count):
        conn = socket.create_connection(("127.0.0.1", port), timeout=2)
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: detector\r\n")
        held.append(conn)
    return held


def closed_within(conn: socket.socket, seconds: float) -> float:
    """Seconds until the server closed `conn` (reading what it sends); fails after `seconds`."""
    started = time.monotonic()
    conn.settimeout(seconds)
    try:
        while conn.recv(4096):
            pass
    except ConnectionResetError:
        pass
    except TimeoutError:
        pytest.fail(f"the connection was still open after {seconds} s")
    return time.monotonic() - started


def test_health_and_metrics_answer_within_a_second_under_a_flood(server: MetricsServer) -> None:
    """200 half-sent requests held open neither add a thread nor keep /healthz and /metrics from answering."""
    threads = threading.active_count()
    held = half_sent(server.port, FLOOD)
    try:
        for path in ("/healthz", "/readyz", "/metrics"):
            started = time.monotonic()
            status, body = get(server.port, path)
            assert status == 200, (path, body)
            assert time.monotonic() - started < 1.0, path
        assert threading.active_count() <= threads, "a thread per connection"
    finally:
        for conn in held:
            conn.close()


def test_a_full_server_closes_its_oldest_waiting_connection_for_a_new_one() -> None:
    """At the connection bound, a new client is served and the oldest unfinished request is closed."""
    limits = Limits(max_connections=4)
    server = BoundedHTTPServer("127.0.0.1", free_port(), lambda path: Response(200, b"ok\n"), limits)
    try:
        held = half_sent(server.port, limits.max_connections)
        time.sleep(0.1)  # all of them accepted
        assert exchange(server.port, b"GET / HTTP/1.0\r\n\r\n").endswith(b"\r\n\r\nok\n")
        assert closed_within(held[0], 1.0) < 1.0
        for conn in held[1:]:
            conn.setblocking(False)
            with pytest.raises(BlockingIOError):
                conn.recv(1)  # still open: only the oldest made room
        for conn in held:
            conn.close()
    finally:
        server.close()


def test_an_idle_connection_is_closed_after_the_header_timeout(server: MetricsServer) -> None:
    """A client that connects and sends nothing is disconnected after the header timeout."""
    with socket.create_connection(("127.0.0.1", server.port)) as idle:
        elapsed = closed_within(idle, HEADER_TIMEOUT + 2)
    assert HEADER_TIMEOUT - 0.5 < elapsed < HEADER_TIMEOUT + 1


def test_a_trickled_request_is_closed_at_the_header_timeout(server: MetricsServer) -> None:
    """A client sending its headers a few bytes at a time cannot keep the connection past the header timeout."""
    started = time.monotonic()
    with socket.create_connection(("127.0.0.1", server.port)) as slow:
        slow.settimeout(0.4)
        slow.sendall(b"GET /metrics HTTP/1.1\r\n")
        while time.monotonic() - started < HEADER_TIMEOUT + 2:
            try:
                slow.sendall(b"X-A: b\r\n")
                if slow.recv(4096) == b"":
                    break
            except TimeoutError:
                continue
            except (BrokenPipeError, ConnectionResetError):
                break
    assert time.monotonic() - started < HEADER_TIMEOUT + 1


def test_a_response_not_taken_in_time_is_dropped() -> None:
    """A client that requests a large body and never reads it is disconnected after the response timeout."""
    big = Response(200, b"x" * 50_000_000)
    server = BoundedHTTPServer("127.0.0.1", free_port(), lambda path: big, Limits(response_timeout=0.5))
    try:
        with socket.create_connection(("127.0.0.1", server.port)) as stalled:
            stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
            stalled.sendall(b"GET / HTTP/1.0\r\n\r\n")
            time.sleep(1.0)
            stalled.settimeout(5)
            with pytest.raises(ConnectionResetError):
                while stalled.recv(1 << 20):
                    pass  # what had arrived, then the reset
        assert exchange(server.port, b"HEAD / HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 200 OK\r\n")
    finally:
        server.close()


def test_clients_that_reset_do_not_disturb_the_server(server: MetricsServer) -> None:
    """Connections reset before or during the response are dropped quietly and the next request is served."""
    for _ in range(20):
        conn = socket.create_connection(("127.0.0.1", server.port))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: detector\r\n\r\n")
        conn.close()  # a reset, at once
    assert get(server.port, "/healthz")[0] == 200


@pytest.mark.parametrize(("request_bytes", "status_line"), [
    (b"POST /metrics HTTP/1.1\r\nContent-Length: 2\r\n\r\nhi", b"HTTP/1.0 405 Method Not Allowed\r\n"),
    (b"DELETE /healthz HTTP/1.0\r\n\r\n", b"HTTP/1.0 405 Method Not Allowed\r\n"),
    (b"GET /metrics\r\n\r\n", b"HTTP/1.0 400 Bad Request\r\n"),
    (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03\r\n\r\n", b"HTTP/1.0 400 Bad Request\r\n"),
    (b"GET /nope HTTP/1.1\r\n\r\n", b"HTTP/1.0 404 Not Found\r\n"),
    (b"GET /healthz?verbose=1 HTTP/1.1\r\nHost: x\r\n\r\n", b"HTTP/1.0 200 OK\r\n"),
    (b"GET /healthz HTTP/1.1\nHost: x\n\n", b"HTTP/1.0 200 OK\r\n"),
])
def test_requests_other_than_get_and_head_are_refused(server: MetricsServer, request_bytes: bytes,
                                                      status_line: bytes) -> None:
    """Only well-formed GET and HEAD requests are served; the rest get a 4xx and the connection is closed."""
    answer = exchange(server.port, request_bytes)
    assert answer.startswith(status_line), answer[:200]
    assert b"\r\nConnection: close\r\n" in answer
    if b"405" in status_line:
        assert b"\r\nAllow: GET, HEAD\r\n" in answer


def test_an_oversized_request_head_is_refused(server: MetricsServer) -> None:
    """Request line and headers past 8 KiB get 431, whether or not they ever end."""
    endless = b"GET /metrics HTTP/1.1\r\n" + b"X-Pad: " + b"a" * 9000
    assert exchange(server.port, endless).startswith(b"HTTP/1.0 431 Request Header Fields Too Large\r\n")
    long_path = b"GET /" + b"a" * 9000 + b" HTTP/1.1\r\n\r\n"
    assert exchange(server.port, long_path).startswith(b"HTTP/1.0 431 ")


def test_head_answers_the_headers_of_get_without_the_body(server: MetricsServer) -> None:
    """HEAD /metrics has GET's status and Content-Length, and no body."""
    answer = exchange(server.port, b"HEAD /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
    head, _, body = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.0 200 OK\r\n")
    assert int(head.split(b"Content-Length: ")[1].split(b"\r\n")[0]) > 100
    assert body == b""


def test_a_failing_route_answers_500_and_the_server_goes_on() -> None:
    """An exception in a route is a 500 for that request, not the end of the server."""
    def route(path: str) -> Response:
        if path == "/boom":
            raise RuntimeError("broken collector")
        return Response(200, b"ok\n")

    server = BoundedHTTPServer("127.0.0.1", free_port(), route)
    try:
        assert exchange(server.port, b"GET /boom HTTP/1.0\r\n\r\n").startswith(b"HTTP/1.0 500 ")
        assert exchange(server.port, b"GET / HTTP/1.0\r\n\r\n").endswith(b"ok\n")
    finally:
        server.close()


def test_close_stops_the_thread_and_the_listener() -> None:
    """After close() the port refuses connections and the server's thread has ended."""
    server = MetricsServer(Metrics(), f"127.0.0.1:{free_port()}")
    port = server.port
    held = half_sent(port, 3)
    server.close()
    assert not [t for t in threading.enumerate() if t.name == "detector-metrics"]
    with pytest.raises(ConnectionRefusedError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    for conn in held:
        conn.close()


def test_ipv6_loopback_is_served() -> None:
    """A `[::1]:port` listen address binds an IPv6 socket."""
    if not socket.has_ipv6:
        pytest.skip("no IPv6 here")
    try:
        server = MetricsServer(Metrics(), f"[::1]:{free_port()}")
    except OSError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc}")
    try:
        with socket.create_connection(("::1", server.port), timeout=2) as conn:
            conn.sendall(b"GET /healthz HTTP/1.0\r\n\r\n")
            assert conn.recv(64).startswith(b"HTTP/1.0 200 OK")
    finally:
        server.close()
