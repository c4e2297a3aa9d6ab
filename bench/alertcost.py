#!/usr/bin/env python3
"""CPU per alert of the delivery side of `detector run`, without the engine and without a writer.

    .venv/bin/python bench/alertcost.py [--rates 20,200,2000] [--seconds 10] [--sync batched|full|normal]
                                        [--dispatch thread|process] [--src DIR]

A thread stands in for the engine: every 15 ms (the wake-up interval of a 2,000 events/s log)
it submits the alerts due by then, with a checkpoint, through the real `Delivery` (throttle,
outbox, dispatcher) as `detector run` does, and at least once a second a checkpoint alone. The
alerts go to a `stdout` output whose standard output is /dev/null; delivery events go through
the same metrics and log calls as in `detector run` (log level info). What is measured is the
CPU of this process and its delivery child, if any, as % of a core, and per alert: storing
(SQLite, `outbox.synchronous`), waking the dispatcher, reading, sending, marking, the events.
Building alerts and evaluation are not included (see `live.py --only alerts` for the whole).
Much less sensitive to the rest of the machine than the live runs: a row varies by ~0.3 points.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
TICK = 0.015
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
PROBE_FIELDS: dict[str, Any] = {
    "time": "2025-01-01T10:00:00.000100000Z", "rule": "Latency Probe", "priority": "Informational",
    "priority_level": 6, "message": "probe 00000000-0000-4000-8000-000000000001",
    "output": "10:00:00.000100000: Informational probe 00000000-0000-4000-8000-000000000001",
    "source": "k8s_audit", "tags": (), "hostname": "node-1", "audit_id": "00000000-0000-4000-8000-000000000001",
    "stage": "ResponseComplete"}
OUTPUT_FIELDS: dict[str, Any] = {
    "evt.time": 1735725600000100000, "ka.auditid": "00000000-0000-4000-8000-000000000001",
    "ka.user.name": "latency-probe", "ka.verb": "get", "ka.target.resource": "pods",
    "ka.target.namespace": "default", "ka.target.name": "probe-0", "ka.sourceips": ["10.0.0.1"],
    "ka.useragent": "bench/live"}


def tree_cpu(pid: int) -> float:
    """utime + stime of `pid` and its direct children (the courier), in seconds."""
    total = 0
    members = [pid]
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                fields = Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if int(fields[1]) == pid:
                members.append(int(entry))
    for member in members:
        try:
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        total += int(fields[11]) + int(fields[12])
    return total / CLOCK_TICKS


def run(rate: float, seconds: float, sync: str, dispatch: str) -> tuple[float, int]:
    """(CPU % of a core, alerts) for `seconds` of alerts at `rate`/s."""
    from detector.alert.events import DeliveryEvent, EventKind, log_event  # noqa: PLC0415
    from detector.alert.model import Alert  # noqa: PLC0415
    from detector.alert.settings import DeliverySettings, OutboxSettings, RouteSettings, StdoutSettings  # noqa: PLC0415
    from detector.alert.stage import open_delivery  # noqa: PLC0415
    from detector.metrics import Metrics  # noqa: PLC0415

    metrics = Metrics()
    results = {EventKind.DELIVERED: "sent", EventKind.RETRY: "retried", EventKind.DEAD: "dead_lettered",
               EventKind.DROPPED: "dropped", EventKind.SUPPRESSED: "suppressed", EventKind.WORKER_ERROR: "failed"}

    def on_event(event: DeliveryEvent) -> None:  # as LiveRunner._on_delivery_event
        metrics.alerts.labels(event.output or "-", results[event.kind]).inc(max(event.count, 1))
        log_event(event)

    state = Path(tempfile.mkdtemp(prefix="alertcost-", dir=REPO / "bench" / "out"))
    settings = DeliverySettings(outputs=(StdoutSettings("stdout", RouteSettings()),),
                                outbox=OutboxSettings(synchronous=sync, dispatch=dispatch))
    delivery = open_delivery(settings, state, on_event, hostname="node-1")
    delivery.start()
    try:
        time.sleep(1.0)
        made = 0
        cpu0, start = tree_cpu(os.getpid()), time.monotonic()
        last_checkpoint = -1.0
        while (now := time.monotonic() - start) < seconds:
            due = int(now * rate) - made
            alerts = [Alert(id=f"{made + i:08d}-0000-5000-8000-000000000000", output_fields=dict(OUTPUT_FIELDS),
                            **PROBE_FIELDS) for i in range(due)]
            made += due
            if alerts or now - last_checkpoint >= 1.0:
                delivery.submit(alerts, {"source.checkpoint": b"x" * 64})
                last_checkpoint = now
            sync_due = getattr(delivery.outbox, "sync_due", lambda: None)()  # as the run loop (not in older trees)
            if sync_due is not None and sync_due <= 0:
                delivery.outbox.sync()
            time.sleep(TICK)
        time.sleep(0.5)  # the last sends and marks
        cpu = tree_cpu(os.getpid()) - cpu0
        wall = time.monotonic() - start
    finally:
        delivery.close(10.0)
        shutil.rmtree(state, ignore_errors=True)
    return 100.0 * cpu / wall, made


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rates", default="0,20,200,2000", help="alerts/s, one run each (default 0,20,200,2000)")
    parser.add_argument("--seconds", type=float, default=10.0)
    parser.add_argument("--sync", choices=("batched", "full", "normal"), default="batched", help="outbox.synchronous")
    parser.add_argument("--dispatch", choices=("thread", "process"), default="thread", help="outbox.dispatch")
    parser.add_argument("--src", type=Path, default=REPO, help="the detector tree to import (default: this one)")
    args = parser.parse_args(argv)
    sys.path.insert(0, str(args.src.resolve()))
    (REPO / "bench" / "out").mkdir(exist_ok=True)
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, 1)  # the stdout output (and a courier child's) writes here
    from detector.logs import configure_logging  # noqa: PLC0415

    configure_logging("json", "info")
    print(f"detector: {args.src}; outbox.synchronous {args.sync}; dispatch {args.dispatch}; {TICK * 1000:g} ms "
          f"batches; {args.seconds:g} s per rate", file=sys.stderr)
    idle = None
    for rate in (float(r) for r in args.rates.split(",")):
        percent, made = run(rate, args.seconds, args.sync, args.dispatch)
        if rate == 0:
            idle = percent
        extra = percent - (idle or 0.0)
        per_alert = f"{1e6 * extra / 100 / rate:6.0f} us/alert" if rate else "(checkpoints only)"
        print(f"{rate:>8,.0f} alerts/s: {percent:5.1f}% of a core  {per_alert}  ({made:,} alerts)", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
