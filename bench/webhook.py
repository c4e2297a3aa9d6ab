#!/usr/bin/env python3
"""Benchmark of `detector run` with the webhook input (the real subprocess, pinned to one core),
beside the same stream read from a file by `detector run` with the file input, in the same run.

    .venv/bin/python bench/webhook.py [--events N] [--seconds S] [--rate R] [--check]

throughput  N events (default 100,000) POSTed over HTTPS (server certificate + bearer token,
            keep-alive, 4 connections) as EventLists of 400 (the API server's default batch), as
            fast as they are accepted: requests/s and events/s accepted (2xx = fsynced in the
            spool) and events/s evaluated (until detector_events_total reaches N). Beside it: the
            same events as audit.log lines, evaluated by `detector run` following the file.
latency     R events/s (default 2,000: 5 batches of 400 a second) for S seconds (default 30) over
            one keep-alive connection after a warm-up request (connect + TLS handshake, printed apart):
            p50/p99/max request latency (send -> 2xx).
rss         peak VmHWM of the detector process (each run), against 80 MB.

Targets (issue 15): >= 20,000 events/s sustained on one core, p99 <= 50 ms at 2,000 events/s,
RSS <= 80 MB. The client runs on another core when there is one.
"""

from __future__ import annotations

import argparse
import http.client
import os
import shutil
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import yaml  # noqa: E402

from tests.support.webhookkit import audit_item, event_list, free_port, make_pki  # noqa: E402

TOKEN = "bench-token"
BATCH = 400
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")


def items(n: int) -> list[dict[str, Any]]:
    return [audit_item(i, VERBS[i % len(VERBS)]) for i in range(n)]


def pin(core: int) -> Any:
    return (lambda: os.sched_setaffinity(0, {core})) if hasattr(os, "sched_setaffinity") else None


class Run:
    """One `detector run` in `root` with the webhook or file input, metrics on a free port."""

    def __init__(self, root: Path, pki: Any, webhook: bool, log: Path | None = None) -> None:
        root.mkdir(parents=True)
        self.root, self.metrics_port, self.port = root, free_port(), free_port()
        config: dict[str, Any] = {
            "state_dir": str(root / "state"), "start_at": "beginning", "log_format": "json",
            "outputs": [{"name": "file", "type": "file", "path": str(root / "alerts.jsonl"), "fsync": False}],
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
        }
        if webhook:
            (root / "token").write_text(TOKEN)
            config["input"] = {"type": "webhook", "listen": f"127.0.0.1:{self.port}",
                               "tls_cert_file": str(pki.server_cert), "tls_key_file": str(pki.server_key),
                               "token_file": str(root / "token")}
        else:
            config["file"] = str(log)
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else [0]
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(root / "config.yaml")],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=(root / "stderr").open("wb"),
                                     preexec_fn=pin(cores[0]))  # noqa: PLW1509 - before the client's threads
        if hasattr(os, "sched_setaffinity") and len(cores) > 1:
            os.sched_setaffinity(0, set(cores[1:]))  # the client elsewhere
        self.wait(lambda: b'"event": "started"' in (root / "stderr").read_bytes(), 60)

    def events(self) -> int:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
            for line in r.read().decode().splitlines():
                if line.startswith("detector_events_total "):
                    return int(float(line.split()[1]))
        return 0

    def hwm_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    @staticmethod
    def wait(cond: Any, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not cond():
            if time.monotonic() > deadline:
                raise SystemExit("timed out")
            time.sleep(0.02)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=30)


def connection(port: int, ca: Path) -> http.client.HTTPSConnection:
    context = ssl.create_default_context(cafile=str(ca))
    return http.client.HTTPSConnection("127.0.0.1", port, timeout=30, context=context)


def post(conn: http.client.HTTPSConnection, body: bytes) -> None:
    conn.request("POST", "/audit/bench", body=body, headers={"Authorization": f"Bearer {TOKEN}",
                                                             "Content-Type": "application/json"})
    response = conn.getresponse()
    response.read()
    if response.status != 200:
        raise SystemExit(f"answer {response.status}")


def throughput(work: Path, pki: Any, n: int) -> dict[str, float]:
    every = items(n)
    bodies = [event_list(every[i:i + BATCH]) for i in range(0, n, BATCH)]
    run = Run(work / "webhook", pki, webhook=True)
    queue = list(enumerate(bodies))
    lock = threading.Lock()

    def client() -> None:
        conn = connection(run.port, pki.ca)
        while True:
            with lock:
                if not queue:
                    return
                _i, body = queue.pop()
            post(conn, body)

    started = time.perf_counter()
    threads = [threading.Thread(target=client) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    accepted = time.perf_counter() - started
    run.wait(lambda: run.events() >= n, 600)
    evaluated = time.perf_counter() - started
    result = {"requests_s": len(bodies) / accepted, "accepted_s": n / accepted, "evaluated_s": n / evaluated,
              "rss_mb": run.hwm_mb()}
    run.stop()
    log = work / "file-log" / "audit.log"
    log.parent.mkdir(parents=True)
    log.write_bytes(b"".join(orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1", **item}) + b"\n"
                             for item in items(n)))
    started = time.perf_counter()
    file_run = Run(work / "file", pki, webhook=False, log=log)
    file_run.wait(lambda: file_run.events() >= n, 600)
    result["file_evaluated_s"] = n / (time.perf_counter() - started)
    result["file_rss_mb"] = file_run.hwm_mb()
    file_run.stop()
    return result


def latency(work: Path, pki: Any, rate: float, seconds: float) -> dict[str, float]:
    run = Run(work / "latency", pki, webhook=True)
    per_request = BATCH / rate
    total = int(rate * seconds)
    bodies = [event_list([audit_item(b * BATCH + i) for i in range(BATCH)]) for b in range(total // BATCH)]
    conn = connection(run.port, pki.ca)
    t0 = time.perf_counter()
    post(conn, event_list([audit_item(10**8)]))  # warm-up: connect and TLS handshake, as the API server once
    first = time.perf_counter() - t0
    times = []
    started = time.perf_counter()
    for k, body in enumerate(bodies):
        due = started + k * per_request
        time.sleep(max(0.0, due - time.perf_counter()))
        t0 = time.perf_counter()
        post(conn, body)
        times.append(time.perf_counter() - t0)
    run.wait(lambda: run.events() >= len(bodies) * BATCH + 1, 120)
    times.sort()
    p99 = times[min(len(times) - 1, int(len(times) * 0.99))]
    result = {"p50_ms": times[len(times) // 2] * 1000, "p99_ms": p99 * 1000,
              "max_ms": times[-1] * 1000, "rss_mb": run.hwm_mb(), "requests": len(times), "first_ms": first * 1000}
    run.stop()
    return result


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=100_000)
    parser.add_argument("--seconds", type=float, default=30.0)
    parser.add_argument("--rate", type=float, default=2_000.0)
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    work = Path(tempfile.mkdtemp(prefix="detector-bench-webhook-"))
    try:
        pki = make_pki(work / "pki")
        t = throughput(work, pki, args.events)
        print(f"throughput ({args.events:,} events, batches of {BATCH}, HTTPS + token, detector on one core)")
        print(f"  webhook: {t['requests_s']:8.1f} requests/s  {t['accepted_s']:9,.0f} events/s accepted  "
              f"{t['evaluated_s']:9,.0f} events/s evaluated  peak RSS {t['rss_mb']:.1f} MB")
        print(f"  file   : {'':8}              {'':9}                   {t['file_evaluated_s']:9,.0f} events/s "
              f"evaluated  peak RSS {t['file_rss_mb']:.1f} MB")
        lat = latency(work, pki, args.rate, args.seconds)
        print(f"latency ({args.rate:,.0f} events/s for {args.seconds:.0f} s, "
              f"{lat['requests']:.0f} requests of {BATCH})")
        print(f"  p50 {lat['p50_ms']:.1f} ms  p99 {lat['p99_ms']:.1f} ms  max {lat['max_ms']:.1f} ms  "
              f"peak RSS {lat['rss_mb']:.1f} MB  (first request, with connect and TLS handshake, before "
              f"timing: {lat['first_ms']:.1f} ms)")
        misses = [what for what, ok in (("throughput >= 20,000 events/s", t["evaluated_s"] >= 20_000),
                                        ("p99 <= 50 ms", lat["p99_ms"] <= 50),
                                        ("RSS <= 80 MB", max(t["rss_mb"], lat["rss_mb"]) <= 80)) if not ok]
        print("targets: " + ("all met" if not misses else "MISSED: " + ", ".join(misses)))
        return 1 if args.check and misses else 0
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
