#!/usr/bin/env python3
"""Cost of stateful rules (rules/stateful-rules.yaml): scan throughput beside the stateless
rules in the same run, and the memory of window state with 100,000 keys.

    .venv/bin/python bench/stateful.py [--events N] [--file PATH] [--repeat K] [--keys N]
                                       [--only scan|memory] [--check]

Scan: `detector scan` over the bench stream (bench/generate.py; generated if missing) with
the shipped stateless rules (rules/ without stateful-rules.yaml), then with every shipped rule,
interleaved K times, each in its own process pinned to one CPU. Throughput is events per second
of the child's CPU time (user + system, from os.wait4: start-up and rule loading included, as
bench/run.py counts them); the ratio is of the medians. Target: >= 0.9.

Memory: the state of one rule of each window type (count, distinct, new_term, sequence,
absence; the shipped rules' windows, keyed by user) after a flood of N distinct keys, one event
each (N users each making one forbidden request from their own address), as scan builds it:
each event a JSON line as the API server writes it, parsed and evaluated by the loaded ruleset
inside the measurement, so what is counted is what the rule keeps (keys, records, the auditIDs,
values and last events its alerts show, its tables and caches), measured with tracemalloc.
Each rule's max_keys is raised to hold every key. Absence tracks a key first seen while some
tracked key is still unheard in the window, so a key heard the window before comes first.
Target: <= 20 MB at 100,000 keys, every window type.
"""

from __future__ import annotations

import argparse
import gc
import os
import statistics
import subprocess
import sys
import tempfile
import tracemalloc
from datetime import UTC, datetime
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from detector.parse.audit import parse_line  # noqa: E402
from detector.rules.loader import load_rules  # noqa: E402

TARGET_RATIO = 0.9
TARGET_MB = 20.0
STATELESS = ["00-macros.yaml", "10-workloads.yaml", "20-access.yaml", "30-rbac.yaml", "40-cluster-config.yaml"]
FLOOD_START = 1_800_000_000.0  # the flood's first event time; its events come 0.5 ms apart
# One rule per window type, each the window of a shipped rule (rules/stateful-rules.yaml) keyed
# by user; MAX_KEYS is replaced by the bench's key count.
MEMORY_RULES = {
    "count": ("Forbidden Burst By User", "ka.response.code = 403",
              "{type: count, group_by: [ka.user.name], window: 5m, threshold: 100, lateness: 1m}"),
    "distinct": ("Secrets Read By Name Many", "ka.verb = get",
                 "{type: distinct, group_by: [ka.user.name], field: ka.target.name, window: 10m, threshold: 10,"
                 " lateness: 1m}"),
    "new_term": ("New Source IP For User", "ka.verb = get",
                 "{type: new_term, group_by: [ka.user.name], fields: [ka.client.ip], history: 30d, learning: 7d,"
                 " lateness: 5m, max_values: 200}"),
    "sequence": ("Read Then Delete", "ka.verb in (get, delete)",
                 "{type: sequence, group_by: [ka.user.name], span: 30m, lateness: 1m,"
                 " steps: [{name: read, condition: ka.verb = get}, {name: delete, condition: ka.verb = delete}]}"),
    "absence": ("User Silence", "ka.auditid exists",
                "{type: absence, group_by: [ka.user.name], window: 5m, threshold: 1, lateness: 1m}"),
}
RULE = """\
- rule: {name}
  desc: bench
  condition: {condition}
  output: "%agg.count %agg.key (%agg.audit_ids %agg.values) last %ka.verb %ka.target.name by %ka.user.name"
  priority: WARNING
  source: k8s_audit
  correlation: {block}
"""


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


def flood_line(n: int, t: float, user: str | None = None) -> bytes:
    """User n's one forbidden request (a JSON line as kube-apiserver writes it)."""
    stamp = datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")
    namespace, name = f"team-{n % 40}", f"db-credentials-{n % 1000}"
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
        "auditID": f"{n:08x}-7d3c-4b8e-9a1f-5e2d6c4b3a21", "stage": "ResponseComplete",
        "requestURI": f"/api/v1/namespaces/{namespace}/secrets/{name}", "verb": "get",
        "user": {"username": user or f"user-{n:06d}@example.com", "groups": ["system:authenticated"]},
        "sourceIPs": [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"],
        "userAgent": "kubectl/v1.29.4 (linux/amd64) kubernetes/55019c8",
        "objectRef": {"resource": "secrets", "namespace": namespace, "name": name, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "status": "Failure", "reason": "Forbidden", "code": 403},
        "requestReceivedTimestamp": stamp, "stageTimestamp": stamp,
        "annotations": {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}})


def state_mb(kind: str, lines: list[bytes], keys: int) -> tuple[float, int]:
    """MB the rule of `kind` holds after the flood, and the keys it holds."""
    name, condition, block = MEMORY_RULES[kind]
    block = block[:-1] + f", max_keys: {min(2 * keys, 1_000_000)}}}"  # every key held: none evicted
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "rule.yaml"
        path.write_text(RULE.format(name=name, condition=condition, block=block))
        ruleset = load_rules([path])
    # A key heard the window before (absence then tracks every key of the flood), and the
    # evaluator's caches warmed, outside the measurement.
    ruleset.evaluate(parse_line(flood_line(keys, FLOOD_START - 300.0, user="heard-before@example.com")))
    evaluate = ruleset.evaluate
    gc.collect()
    tracemalloc.start()
    before = tracemalloc.get_traced_memory()[0]
    for line in lines:
        evaluate(parse_line(line))  # the event goes; what the rule keeps of it stays
    gc.collect()
    size = (tracemalloc.get_traced_memory()[0] - before) / 1e6
    tracemalloc.stop()
    return size, ruleset.stateful_rules[name].window.keys()


def memory_rows(keys: int) -> float:
    """MB of state per window type with `keys` distinct keys of one event each."""
    lines = [flood_line(n, FLOOD_START + n * 0.0005) for n in range(keys)]
    print(f"state of one rule per window type after {keys:,} distinct keys (one event each), tracemalloc:")
    worst = 0.0  # MB at 100,000 keys (the target's count), as measured or scaled to it
    for kind in MEMORY_RULES:
        size, held = state_mb(kind, lines, keys)
        at_target = size * 100_000 / keys
        worst = max(worst, at_target)
        verdict = "ok" if at_target <= TARGET_MB else "OVER"
        print(f"  {kind:<9} {size:6.1f} MB  (target <= {TARGET_MB:g} MB at 100,000 keys: {verdict})  "
              f"{held:,} keys held, {size * 1e6 / max(held, 1):.0f} bytes/key")
    scaled = "" if keys == 100_000 else " scaled to 100,000 keys"
    print(f"  largest{scaled}: {worst:.1f} MB  (target <= {TARGET_MB:g} MB)")
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
