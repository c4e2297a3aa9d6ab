"""`detector run`'s metrics listener under hostile clients: bounded threads, quiet disconnects."""

from __future__ import annotations

import os
import socket
import struct
import time
import urllib.request
from pathlib import Path

from tests.integration.live.harness import Detector, event_line, wait_for

FLOOD = 200
RESET = struct.pack("ii", 1, 0)  # SO_LINGER on, 0 s: close() sends a reset


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(port: int, path: str, timeout: float = 1.0) -> tuple[int, bytes]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=timeout) as response:
        return int(response.status), bytes(response.read())


def threads_of(pid: int) -> int:
    return len(os.listdir(f"/proc/{pid}/task"))


def many_rules(count: int) -> str:
    """`count` rules that all match every event, with long names: /metrics grows past socket buffers."""
    return "".join(f"""\
- rule: Every Event {n:04d} {"x" * 450}
  desc: one series of detector_rule_matches_total
  condition: ka.auditid exists
  output: seen %ka.auditid
  priority: INFORMATIONAL
  source: k8s_audit
""" for n in range(count))


def started(tmp_path: Path, rules: str | None = None) -> tuple[Detector, int]:
    port = free_port()
    detector = Detector(tmp_path, **({"rules": rules} if rules else {}), metrics={"listen": f"127.0.0.1:{port}"})
    detector.start()
    detector.wait_started()
    wait_for(lambda: b'"ok"' in get(port, "/healthz")[1], 10, "/healthz")
    return detector, port


def test_a_flood_of_half_sent_requests_holds_no_thread(tmp_path: Path) -> None:
    """200 half-sent requests held open: the process gains no thread and /healthz, /metrics answer within 1 s."""
    detector, port = started(tmp_path)
    assert detector.proc is not None
    before = threads_of(detector.proc.pid)
    held = []
    try:
        for _ in range(FLOOD):
            conn = socket.create_connection(("127.0.0.1", port), timeout=2)
            conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: detector\r\n")
            held.append(conn)
        for path in ("/healthz", "/metrics"):
            began = time.monotonic()
            assert get(port, path)[0] == 200, path
            assert time.monotonic() - began < 1.0, path
        assert threads_of(detector.proc.pid) <= before + 1, "threads grew with the connections"
    finally:
        for conn in held:
            conn.close()
    assert detector.terminate()[0] == 0


def test_clients_that_hang_up_leave_no_traceback(tmp_path: Path) -> None:
    """Clients resetting before and in the middle of a response write no traceback, not even a log line."""
    detector, port = started(tmp_path, many_rules(400))
    with detector.log.open("ab") as log:
        log.write(event_line(1))
    wait_for(lambda: b'rule="Every Event 0399' in get(port, "/metrics", 5)[1], 30, "400 series")
    assert len(get(port, "/metrics", 5)[1]) > 200_000
    for _ in range(20):  # reset as soon as the request is out
        conn = socket.create_connection(("127.0.0.1", port))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: detector\r\n\r\n")
        conn.close()
    for _ in range(5):  # reset after the first bytes of a response too large for the socket buffers
        conn = socket.socket()
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
        conn.connect(("127.0.0.1", port))
        conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, RESET)
        conn.sendall(b"GET /metrics HTTP/1.1\r\nHost: detector\r\n\r\n")
        assert conn.recv(16).startswith(b"HTTP/1.")
        time.sleep(0.2)  # the server is in the middle of sending
        conn.close()
    time.sleep(0.5)
    assert get(port, "/healthz")[0] == 200
    assert detector.terminate()[0] == 0
    text = detector.log_text()
    for word in ("Traceback", "BrokenPipeError", "ConnectionResetError", "Exception occurred during processing"):
        assert word not in text, text[-3000:]
