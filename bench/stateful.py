#!/usr/bin/env python3
"""Cost of stateful rules (rules/stateful-rules.yaml): scan throughput beside the stateless
rules in the same run, and the memory of window state with 100,000 keys.

    .venv/bin/python bench/stateful.py [--events N] [--file PATH] [--repeat K] [--keys N] [--check]

Scan: `detector scan` over the bench stream (bench/generate.py; generated if missing) with
the shipped stateless rules (rules/ without stateful-rules.yaml), then with every shipped rule,
interleaved K times, each in its own process pinned to one CPU. Throughput is events per second
of the child's CPU time (user + system, from os.wait4: start-up and rule loading included, as
bench/run.py counts them); the ratio is of the medians. Target: >= 0.9.

Memory: the window state of one rule of each kind fed N distinct keys (one event each, as a
flood of new users or addresses would), measured with tracemalloc (what the state allocates,
not the interpreter). Target: <= 20 MB at 100,000 keys.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tracemalloc
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.rules.windows import EventWindows, NewTerms, Silences, bucket_of, pack  # noqa: E402

TARGET_RATIO = 0.9
TARGET_MB = 20.0
STATELESS = ["00-macros.yaml", "10-workloads.yaml", "20-access.yaml", "30-rbac.yaml", "40-cluster-config.yaml"]


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def ensure_stream(path: Path, events: int) -> None:
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        subprocess.run([python(), str(REPO / "bench" / "generate.py"), "--events", str(events), "--out", str(path)],
                       check=True)


def scan_cpu(rules: list[str], stream: Path) -> float:
    """CPU seconds of one `detector scan` child pinned to one CPU."""
    args = [python(), "-m", "detector", "scan", "--format", "json"]
    for rule in rules:
        args += ["--rules", rule]
    cpu = sorted(os.sched_getaffinity(0))[-1]
    with open(os.devnull, "wb") as sink:
        child = subprocess.Popen(["taskset", "-c", str(cpu), *args, str(stream)], stdout=sink,
                                 stderr=subprocess.PIPE, cwd=REPO)
        assert child.stderr is not None
        summary = child.stderr.read().decode()
        _pid, status, usage = os.wait4(child.pid, 0)
    if status != 0:
        raise SystemExit(f"scan failed: {summary}")
    return float(usage.ru_utime + usage.ru_stime)


def scan_rows(stream: Path, events: int, repeat: int) -> float:
    stateless = [str(REPO / "rules" / name) for name in STATELESS]
    every = [str(REPO / "rules")]
    runs: dict[str, list[float]] = {"stateless": [], "stateful": []}
    for _ in range(repeat):
        runs["stateless"].append(scan_cpu(stateless, stream))
        runs["stateful"].append(scan_cpu(every, stream))
    print(f"scan of {events:,} events ({stream.name}), {repeat} interleaved runs each, CPU seconds:")
    for name, seconds in runs.items():
        print(f"  {name:<10} median {statistics.median(seconds):6.2f} s  ({events / statistics.median(seconds):>9,.0f} "
              f"events/s)   runs {', '.join(f'{s:.2f}' for s in seconds)}")
    ratio = statistics.median(runs["stateless"]) / statistics.median(runs["stateful"])
    print(f"  throughput with stateful rules / without: {ratio:.3f}  (target >= {TARGET_RATIO})")
    return ratio


def memory_rows(keys: int) -> float:
    """MB of window state per kind with `keys` distinct keys of one event each."""
    print(f"window state with {keys:,} distinct keys (one event each), tracemalloc:")
    worst = 0.0
    kinds = {
        "count (403 burst by user)": lambda: EventWindows("count", 300.0, 100, 60.0, keys, 1000),
        "distinct (exec into many pods)": lambda: EventWindows("distinct", 120.0, 20, 60.0, keys, 1000),
        "new_term (new source IP)": lambda: NewTerms(30 * 86400.0, 7 * 86400.0, 300.0, keys, 200),
        "absence (silence per key)": lambda: Silences(300.0, 1, 60.0, keys),
    }
    for label, make in kinds.items():
        tracemalloc.start()
        before = tracemalloc.get_traced_memory()[0]
        window = make()
        for n in range(keys):
            # Made here, as each event's strings are: a key held is counted with its string.
            key, audit_id = f"user-{n:06d}@example.com", f"{n:08x}-7d3c-4b8e-9a1f-5e2d6c4b3a21"
            t = 1_800_000_000.0 + n * 0.001
            if isinstance(window, EventWindows):
                value = f"pod-{n % 50}" if window.kind == "distinct" else ""
                window.feed(key, bucket_of(key), t, pack(t, audit_id, value))
            elif isinstance(window, NewTerms):
                window.feed(key, bucket_of(key), t, f"203.0.113.{n % 250}", audit_id)
            else:
                window.feed(key, bucket_of(key), t, b"")
        size = (tracemalloc.get_traced_memory()[0] - before) / 1e6
        tracemalloc.stop()
        held = window.keys()
        worst = max(worst, size)
        print(f"  {label:<32} {size:6.1f} MB  ({held:,} keys held, {size * 1e6 / max(held, 1):.0f} bytes/key)")
        del window
    print(f"  largest: {worst:.1f} MB  (target <= {TARGET_MB:g} MB)")
    return worst


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--file", type=Path)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--keys", type=int, default=100_000)
    parser.add_argument("--only", choices=("scan", "memory"))
    parser.add_argument("--check", action="store_true", help="exit 1 unless both targets are met")
    args = parser.parse_args()
    ok = True
    if args.only in (None, "memory"):
        ok = memory_rows(args.keys) <= TARGET_MB and ok
    if args.only in (None, "scan"):
        stream = args.file or REPO / "bench" / "out" / f"audit-{args.events}.log"
        ensure_stream(stream, args.events)
        ok = scan_rows(stream, args.events, args.repeat) >= TARGET_RATIO and ok
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
