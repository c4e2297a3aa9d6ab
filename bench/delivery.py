#!/usr/bin/env python3
"""Benchmark of the alert delivery stage: outbox writes, webhook throughput, latency.

    .venv/bin/python bench/delivery.py [--alerts N] [--rate R] [--state DIR]

1. enqueue: alerts/s into the SQLite outbox (one transaction per batch), synchronous FULL vs
   NORMAL, batches of 1 and 100 -- the cost evaluation pays per alert.
2. throughput: alerts/s delivered end to end (submit -> outbox -> dispatcher -> HTTP POST) to a
   local keep-alive HTTP receiver on 127.0.0.1, all submitted at once.
3. latency: match -> delivered (submit() called -> the receiver has read the request), p50/p99,
   with alerts paced at --rate per second to a healthy receiver.

The receiver runs in its own process (sharing no GIL with the detector side); times are
CLOCK_MONOTONIC, which is one clock for every process of the machine.

The state directory defaults to a temporary directory under bench/out (on the same disk as the
repo); fsync cost depends on that disk.
"""

from __future__ import annotations

import argparse
import multiprocessing
import statistics
import tempfile
import time
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from multiprocessing.sharedctypes import Synchronized
from pathlib import Path
from typing import Any

import orjson

from detector.alert.build import AlertBuilder
from detector.alert.model import Alert
from detector.alert.outbox import Outbox
from detector.alert.route import Router
from detector.alert.settings import DeliverySettings, OutboxSettings, RouteSettings, parse_outputs
from detector.alert.stage import open_delivery
from detector.event import AuditEvent
from detector.parse.audit import parse_line
from detector.rules.model import SOURCE, Match, Priority

BENCH_OUT = Path(__file__).resolve().parent / "out"


def make_alerts(count: int, tag: str) -> list[Alert]:
    """Realistic alerts through the real builder (parse -> match -> enrich + redact)."""
    builder = AlertBuilder("bench-host", "bench-cluster")
    alerts = []
    for n in range(count):
        line = orjson.dumps({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": f"{tag}-{n}",
            "stage": "ResponseComplete", "verb": "create", "requestURI": "/api/v1/namespaces/web/pods/api-0/exec",
            "user": {"username": "alice"}, "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.29.0",
            "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "web", "name": "api-0"},
            "stageTimestamp": "2024-05-01T12:00:00.123456Z"})
        event = parse_line(line)
        assert isinstance(event, AuditEvent)
        fields: dict[str, Any] = {"ka.user.name": "alice", "ka.target.name": "api-0"}
        match = Match("Attach/Exec Pod", Priority.NOTICE, ("k8s",), SOURCE,
                      "Attach/Exec to pod (user=alice pod=api-0 ns=web)", fields, event)
        alerts.append(builder(match))
    return alerts


def serve(port: Synchronized[int], count: Synchronized[int], log_path: str) -> None:
    """The receiver process: a keep-alive HTTP server appending `id monotonic-time` lines."""
    log = open(log_path, "a", buffering=1)  # noqa: SIM115 - lives as long as the process

    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"
        disable_nagle_algorithm = True  # headers and body are two writes: no 40 ms delayed-ACK stall

        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length") or 0))
            log.write(f"{self.headers['X-Detector-Alert-Id']} {time.monotonic()}\n")
            with count.get_lock():
                count.value += 1
            self.send_response(200)
            self.send_header("Content-Length", "2")
            self.end_headers()
            self.wfile.write(b"ok")

        def log_message(self, format: str, *args: Any) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    port.value = server.server_address[1]
    server.serve_forever()


class Receiver:
    """The receiver in its own process (no GIL shared with the detector side)."""

    def __init__(self, state: Path) -> None:
        self.port: Synchronized[int] = multiprocessing.Value("i", 0)
        self.count: Synchronized[int] = multiprocessing.Value("i", 0)
        self.log = state / "arrivals.log"
        self.process = multiprocessing.Process(target=serve, args=(self.port, self.count, str(self.log)), daemon=True)
        self.process.start()
        while not self.port.value:
            time.sleep(0.01)
        self.url = f"http://127.0.0.1:{self.port.value}/falco"

    def arrivals(self) -> dict[str, float]:
        return {k: float(v) for k, v in (line.split() for line in self.log.read_text().splitlines())}

    def stop(self) -> None:
        self.process.terminate()
        self.process.join()


def bench_enqueue(state: Path, count: int) -> None:
    router = Router({"a": RouteSettings(), "b": RouteSettings()})
    alerts = make_alerts(count, "enqueue")
    for sync in ("full", "normal"):
        for batch in (1, 100):
            path = Path(tempfile.mkdtemp(dir=state)) / "detector.db"
            box = Outbox(path, OutboxSettings(synchronous=sync), router, lambda _e: None)
            started = time.perf_counter()
            for i in range(0, count, batch):
                box.enqueue(alerts[i:i + batch], {"checkpoint": str(i).encode()})
            elapsed = time.perf_counter() - started
            box.close()
            print(f"enqueue  synchronous={sync:<6} batch={batch:<3}  {count / elapsed:>9,.0f} alerts/s "
                  f"({elapsed / count * 1e6:,.0f} us/alert, 2 outputs)")


def run_delivery(state: Path, receiver: Receiver, alerts: list[Alert], pace: Callable[[int], None]) -> list[float]:
    """Submit `alerts` (pace(i) before each); returns per-alert latencies in seconds."""
    outputs = parse_outputs([{"name": "hook", "type": "webhook", "url": receiver.url}])
    settings = DeliverySettings(outputs=tuple(outputs))
    submitted: dict[str, float] = {}
    expected = receiver.count.value + len(alerts)
    with open_delivery(settings, Path(tempfile.mkdtemp(dir=state)), lambda _e: None, poll_interval=0.5) as d:
        for i, alert in enumerate(alerts):
            pace(i)
            submitted[alert.id] = time.monotonic()
            d.submit([alert])
        deadline = time.monotonic() + 120
        while receiver.count.value < expected and time.monotonic() < deadline:
            time.sleep(0.002)
    arrived = receiver.arrivals()
    return [arrived[a.id] - submitted[a.id] for a in alerts]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--alerts", type=int, default=2000)
    parser.add_argument("--rate", type=float, default=200.0, help="alerts/s for the latency run")
    parser.add_argument("--state", type=Path, default=None)
    args = parser.parse_args()
    BENCH_OUT.mkdir(exist_ok=True)
    state = args.state or Path(tempfile.mkdtemp(prefix="delivery-", dir=BENCH_OUT))
    bench_enqueue(state, args.alerts)
    receiver = Receiver(state)
    try:
        alerts = make_alerts(args.alerts, "throughput")
        started = time.perf_counter()
        run_delivery(state, receiver, alerts, lambda _i: None)
        elapsed = time.perf_counter() - started
        print(f"delivery throughput (webhook, 1 output, keep-alive): {len(alerts) / elapsed:,.0f} alerts/s")
        paced = make_alerts(min(args.alerts, 1000), "latency")
        start = time.perf_counter()

        def pace(i: int) -> None:
            delay = start + i / args.rate - time.perf_counter()
            if delay > 0:
                time.sleep(delay)

        latencies = sorted(run_delivery(state, receiver, paced, pace))
        p50 = statistics.median(latencies) * 1000
        p99 = latencies[int(len(latencies) * 0.99) - 1] * 1000
        print(f"match->delivered latency at {args.rate:g} alerts/s ({len(paced)} alerts): "
              f"p50 {p50:.2f} ms, p99 {p99:.2f} ms, max {latencies[-1] * 1000:.2f} ms")
    finally:
        receiver.stop()


if __name__ == "__main__":
    main()
