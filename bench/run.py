#!/usr/bin/env python3
"""Throughput / memory benchmark of `detector scan` against parse-only baselines.

Each row runs in its own subprocess pinned to one CPU; elapsed is the child's wall time (interpreter
start-up and rule loading included), peak RSS is the child's ru_maxrss read with os.wait4.

    .venv/bin/python bench/run.py [--events N] [--file PATH] [--rows a,b,c,d,e] [--repeat K] [--check]

Rows: a read lines | b read + orjson.loads (the floor) | c read + msgspec hot-field decode |
d detector scan (shipped rules) | e detector scan (Falco upstream k8s_audit rules).
See bench/README.md for the targets.
"""

from __future__ import annotations

import argparse
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BENCH = REPO / "bench"
FALCO_RULES = (
    "../shared/falco/data/falcosecurity-plugins@0b3cbd8d84eba83877159cf3c9fdae1820084c26"
    "/plugins/k8saudit/rules/k8s_audit_rules.yaml"
)
TARGET_EVENTS_PER_S = 100_000
TARGET_FLOOR_RATIO = 0.8
TARGET_RSS_MB = 60.0
FLOOR_ROW = "b"


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


@dataclass(frozen=True, slots=True)
class Row:
    key: str
    label: str
    argv: Callable[[Path], list[str]]
    scan: bool = False  # a detector row: stdout goes to /dev/null and the targets apply
    skip_reason: Callable[[], str | None] = lambda: None


def baseline(mode: str) -> Callable[[Path], list[str]]:
    return lambda file: [python(), str(BENCH / "baselines.py"), mode, str(file)]


def scan(rules: str) -> Callable[[Path], list[str]]:
    return lambda file: [python(), "-m", "detector", "scan", "--format", "json", "--rules", rules, str(file)]


def falco_rules_missing() -> str | None:
    if (REPO / FALCO_RULES).exists():
        return None
    return f"skipped: {FALCO_RULES} not found (needs ../shared next to the repository)"


ROWS: dict[str, Row] = {
    row.key: row
    for row in (
        Row("a", "read lines", baseline("lines")),
        Row("b", "read + orjson.loads", baseline("orjson")),
        Row("c", "read + msgspec partial decode", baseline("msgspec")),
        Row("d", "detector scan (shipped rules)", scan("rules/"), scan=True),
        Row(
            "e",
            "detector scan (Falco upstream rules)",
            scan(FALCO_RULES),
            scan=True,
            skip_reason=falco_rules_missing,
        ),
    )
}


@dataclass(slots=True)
class Result:
    row: Row
    events: int
    elapsed: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    error: str | None = None  # the row ran but failed
    skipped: str | None = None
    summary: str = ""  # last stderr line of a successful scan

    @property
    def ok(self) -> bool:
        return self.error is None and self.skipped is None

    @property
    def rate(self) -> float:
        return self.events / self.elapsed if self.elapsed > 0 else 0.0

    @property
    def cpu_rate(self) -> float:
        """events per CPU second: less sensitive than `rate` to other load on the pinned CPU."""
        return self.events / self.cpu if self.cpu > 0 else 0.0


# ------------------------------------------------------------------------------------------ running


def pin_to_one_core() -> None:
    """preexec_fn: run the benchmarked child on a single CPU (the lowest one we may use)."""
    os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})


@dataclass(slots=True)
class ChildRun:
    returncode: int
    elapsed: float
    usage: resource.struct_rusage
    stdout: str
    stderr: str


def run_child(argv: list[str], capture_stdout: bool) -> ChildRun:
    """Run argv from the repository root; return its exit code, wall time and own rusage."""
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        start = time.perf_counter()
        proc = subprocess.Popen(
            argv,
            cwd=REPO,
            stdin=subprocess.DEVNULL,
            stdout=out if capture_stdout else subprocess.DEVNULL,
            stderr=err,
            preexec_fn=pin_to_one_core,  # noqa: PLW1509 (the parent is single-threaded)
        )
        _, status, usage = os.wait4(proc.pid, 0)
        elapsed = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        err.seek(0)
        return ChildRun(
            proc.returncode,
            elapsed,
            usage,
            out.read().decode(errors="replace"),
            err.read().decode(errors="replace"),
        )


def first_error_line(stderr: str, returncode: int) -> str:
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    if not lines:
        return f"exit code {returncode}, no stderr"
    # A traceback's first line says nothing; its last line names the exception.
    return lines[-1] if lines[0].startswith("Traceback") else lines[0]


def run_row(row: Row, file: Path, events: int) -> Result:
    result = Result(row, events)
    result.skipped = row.skip_reason()
    if result.skipped:
        return result
    child = run_child(row.argv(file), capture_stdout=not row.scan)
    result.elapsed = child.elapsed
    result.cpu = child.usage.ru_utime + child.usage.ru_stime
    result.rss_mb = child.usage.ru_maxrss / 1024
    if child.returncode != 0:
        result.error = first_error_line(child.stderr, child.returncode)
    elif not row.scan and child.stdout.strip() != str(events):
        result.error = f"counted {child.stdout.strip() or '?'} events, expected {events}"
    elif row.scan:
        tail = [line for line in child.stderr.splitlines() if line.strip()]
        result.summary = tail[-1].strip() if tail else ""
    return result


def best_of(row: Row, file: Path, events: int, repeat: int) -> Result:
    """Fastest of `repeat` runs (peak RSS is the max over the runs); stop at the first failure."""
    best: Result | None = None
    peak = 0.0
    for _ in range(repeat):
        result = run_row(row, file, events)
        peak = max(peak, result.rss_mb)
        if not result.ok:
            return result
        if best is None or result.elapsed < best.elapsed:
            best = result
    assert best is not None
    best.rss_mb = peak
    return best


# ----------------------------------------------------------------------------------------- the file


def default_file(events: int) -> Path:
    return BENCH / "out" / f"audit-{events}.log"


def ensure_file(file: Path, events: int) -> None:
    if file.exists():
        return
    print(f"generating {events:,} events into {file} ...", flush=True)
    start = time.perf_counter()
    cmd = [python(), str(BENCH / "generate.py"), "--events", str(events), "--out", str(file), "--seed", "1"]
    subprocess.run(cmd, check=True, cwd=REPO)
    print(f"generated in {time.perf_counter() - start:.1f} s", flush=True)


def compile_package() -> None:
    """Write the package's bytecode before timing: `pip install` does so, but an editable
    install under PYTHONDONTWRITEBYTECODE=1 (set on this machine) recompiles ~75 modules on
    every start, 50 ms that no installed user pays."""
    subprocess.run([python(), "-m", "compileall", "-q", str(REPO / "detector")], check=True, cwd=REPO)


def count_events(file: Path) -> tuple[int, int]:
    """(lines, bytes); reading the file once also warms the page cache for every row."""
    lines = size = 0
    with file.open("rb") as fh:
        while chunk := fh.read(1 << 20):
            lines += chunk.count(b"\n")
            size += len(chunk)
    return lines, size


# ---------------------------------------------------------------------------------------- reporting


def print_table(results: list[Result]) -> None:
    cols = f"{'events/s':>12} {'elapsed s':>10} {'CPU s':>8} {'events/CPU-s':>13} {'peak RSS MB':>12}"
    header = f"{'row':<42} {cols}  status"
    print(header)
    print("-" * len(header))
    for r in results:
        name = f"{r.row.key}  {r.row.label}"
        if r.skipped:
            print(f"{name:<42} {'-':>12} {'-':>10} {'-':>8} {'-':>13} {'-':>12}  SKIPPED ({r.skipped})")
            continue
        status = "ok" if r.ok else f"FAILED: {r.error}"
        rate, cpu_rate = (f"{r.rate:,.0f}", f"{r.cpu_rate:,.0f}") if r.ok else ("-", "-")
        nums = f"{rate:>12} {r.elapsed:>10.2f} {r.cpu:>8.2f} {cpu_rate:>13} {r.rss_mb:>12.1f}"
        print(f"{name:<42} {nums}  {status}")
    for r in results:
        if r.ok and r.summary:
            print(f"   {r.row.key} stderr: {r.summary}")


def floor_of(results: list[Result]) -> Result | None:
    return next((r for r in results if r.row.key == FLOOR_ROW and r.ok), None)


def print_ratios(results: list[Result]) -> None:
    floor = floor_of(results)
    scans = [r for r in results if r.row.scan and r.ok]
    if not scans:
        return
    if floor is None:
        print(f"\nratios: row {FLOOR_ROW} (the floor) did not run; add it to --rows")
        return
    print(f"\nthroughput relative to the floor ({FLOOR_ROW}, {floor.rate:,.0f} events/s):")
    for r in scans:
        print(f"  {r.row.key}  {r.row.label:<40} {r.rate / floor.rate:6.2f}x")


def check_row(r: Result, floor: Result | None) -> list[str]:
    """Unmet targets of one scan row (empty = pass)."""
    if r.error is not None:
        return [f"did not run ({r.error})"]
    failures = []
    if r.rate < TARGET_EVENTS_PER_S:
        failures.append(f"{r.rate:,.0f} events/s < {TARGET_EVENTS_PER_S:,}")
    if floor is None:
        failures.append(f"no floor (row {FLOOR_ROW}) to compare with")
    elif r.rate < TARGET_FLOOR_RATIO * floor.rate:
        failures.append(f"{r.rate / floor.rate:.2f}x floor < {TARGET_FLOOR_RATIO}x")
    if r.rss_mb > TARGET_RSS_MB:
        failures.append(f"peak RSS {r.rss_mb:.1f} MB > {TARGET_RSS_MB:.0f} MB")
    return failures


def print_verdict(results: list[Result]) -> bool | None:
    """Print PASS/FAIL per scan row and overall; None when no scan row was checked."""
    scans = [r for r in results if r.row.scan and r.skipped is None]
    if not scans:
        print("\nRESULT: n/a (no detector scan row ran)")
        return None
    floor = floor_of(results)
    print(
        f"\ntargets per scan row: >= {TARGET_EVENTS_PER_S:,} events/s, >= {TARGET_FLOOR_RATIO}x the floor, "
        f"peak RSS <= {TARGET_RSS_MB:.0f} MB"
    )
    passed = True
    for r in scans:
        failures = check_row(r, floor)
        passed = passed and not failures
        print(f"  {r.row.key}  {'PASS' if not failures else 'FAIL: ' + '; '.join(failures)}")
    print(f"RESULT: {'PASS' if passed else 'FAIL'}")
    return passed


# ---------------------------------------------------------------------------------------------- cli


def parse_rows(text: str) -> list[Row]:
    keys = [k.strip() for k in text.split(",") if k.strip()]
    unknown = [k for k in keys if k not in ROWS]
    if unknown or not keys:
        raise argparse.ArgumentTypeError(f"unknown rows {unknown}; choose from {','.join(ROWS)}")
    return [ROWS[k] for k in keys]


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument(
        "--events", type=int, default=1_000_000, help="events to generate (default 1,000,000)"
    )
    parser.add_argument(
        "--file", type=Path, help="audit log to use (generated if missing; default bench/out/audit-<N>.log)"
    )
    parser.add_argument(
        "--rows", type=parse_rows, default=list(ROWS.values()), help="e.g. a,b,c (default all)"
    )
    parser.add_argument("--repeat", type=int, default=1, help="runs per row, fastest kept (default 1)")
    parser.add_argument("--check", action="store_true", help="exit 1 unless every target is met")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    file: Path = (args.file or default_file(args.events)).resolve()
    ensure_file(file, args.events)
    compile_package()
    events, size = count_events(file)
    parent_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(
        f"file: {file} ({events:,} events, {size / 1e6:,.1f} MB, mean {size / max(events, 1):,.0f} B/event)"
    )
    print(
        f"cpu: {os.cpu_count()} online, children pinned to cpu {min(os.sched_getaffinity(0))}; "
        f"python: {python()}; parent RSS {parent_mb:.1f} MB\n"
    )
    results = [best_of(row, file, events, max(1, args.repeat)) for row in args.rows]
    print_table(results)
    print_ratios(results)
    passed = print_verdict(results)
    return 1 if args.check and not passed else 0


if __name__ == "__main__":
    sys.exit(main())
