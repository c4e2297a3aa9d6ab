"""How bench/live.py drives and measures one run: the writing, the subjects (the detector, the
tail baseline), probe latencies, the detector's progress, and the results as values."""

from __future__ import annotations

import argparse
import itertools
import math
import shutil
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from livekit import (
    PROBE_RULE,
    PROBE_RULES_YAML,
    REPO,
    Children,
    CpuMeter,
    Detector,
    GoWriter,
    Pacer,
    RssSampler,
    TreeCpuMeter,
    TreeRssSampler,
    Writer,
    cycle_lines,
    load_average,
    make_writer,
    probe_line,
    read_times,
    wait_until,
)

BENCH_OUT = REPO / "bench" / "out"
SHIPPED_RULES = str(REPO / "rules")
PROBE_EVERY = 50  # 2% of the events are probes
PACED_RATE = 2_000  # events/s of the latency and soak runs
LAG_SLACK_SECONDS = 0.5  # lag may wobble by half a second of events and still count as flat
Outputs = Callable[[Path], list[dict[str, Any]]]  # the `outputs` config of a run, given its directory


@dataclass(frozen=True, slots=True)
class Verdict:
    """One target: what was measured, next to its baseline, and whether it passed."""

    scenario: str
    target: str
    measured: str
    baseline: str
    passed: bool
    load: str


@dataclass(slots=True)
class Context:
    args: argparse.Namespace
    source: Path  # pre-generated realistic events
    children: Children = field(default_factory=Children)
    verdicts: list[Verdict] = field(default_factory=list)

    def scenario_dir(self, name: str) -> Path:
        BENCH_OUT.mkdir(exist_ok=True)
        root = Path(tempfile.mkdtemp(prefix=f"live-{name}-", dir=BENCH_OUT))
        for sub in ("log", "alerts", "results"):
            (root / sub).mkdir()
        (root / "probe.yaml").write_text(PROBE_RULES_YAML)
        return root

    def cleanup(self, root: Path) -> None:
        if not self.args.keep:
            shutil.rmtree(root, ignore_errors=True)


# ----------------------------------------------------------------------------------- the writing


@dataclass(slots=True)
class Written:
    count: int = 0
    started: float = 0.0
    ended: float = 0.0
    cpu: float = 0.0  # the bench process (writer + mill thread) while writing
    probes: dict[int, float] = field(default_factory=dict)  # seq -> time its write returned

    @property
    def seconds(self) -> float:
        return self.ended - self.started

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


def events(source: Path, probe_every: int) -> Iterator[tuple[int, bytes, bool]]:
    """(seq, line, is_probe): the realistic stream with every `probe_every`-th event a probe."""
    lines = cycle_lines(source)
    for seq in itertools.count():
        if probe_every and seq % probe_every == 0:
            yield seq, probe_line(seq), True
        else:
            yield seq, next(lines), False


def write_paced(writer: Writer | GoWriter, stream: Iterator[tuple[int, bytes, bool]], rate: float, count: int,
                milestone: Callable[[int], None] | None = None) -> Written:
    """Write `count` events at `rate`/s (0: as fast as possible), one lumberjack write each;
    `milestone(i)` runs after 25/50/75/100% of them."""
    marks = {math.ceil(count * q / 4) for q in (1, 2, 3, 4)} if milestone else set()
    pacer = Pacer(rate)
    cpu0 = time.process_time()
    done = Written(started=time.monotonic())
    for i, (seq, line, probe) in enumerate(itertools.islice(stream, count)):
        if rate and not i % pacer.every:
            writer.flush()  # what is due is written before the pacer sleeps
            pacer.pace(i)
        writer.write(line)
        if probe:
            writer.flush()  # a probe's time is when it reaches the file's writer
            done.probes[seq] = time.monotonic()
        if i + 1 in marks and milestone:
            milestone(i + 1)
    done.ended, done.count, done.cpu = time.monotonic(), count, time.process_time() - cpu0
    return done


# ------------------------------------------------------------------------------------------ stats


def percentile(sorted_values: list[float], q: float) -> float:
    """Nearest-rank percentile of an ascending list (nan when empty)."""
    if not sorted_values:
        return math.nan
    return sorted_values[min(len(sorted_values) - 1, max(0, math.ceil(q * len(sorted_values)) - 1))]


def slope_per_minute(samples: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB) samples, in MB/min."""
    if len(samples) < 2:
        return math.nan
    n = len(samples)
    mean_t = sum(t for t, _ in samples) / n
    mean_v = sum(v for _, v in samples) / n
    var = sum((t - mean_t) ** 2 for t, _ in samples)
    cov = sum((t - mean_t) * (v - mean_v) for t, v in samples)
    return 60.0 * cov / var if var else math.nan


@dataclass(slots=True)
class Latency:
    """Probe latencies of one run, in ms."""

    values: list[float]
    missing: int
    worst: list[tuple[float, float]] = field(default_factory=list)  # (s into the run, ms), slowest first
    timed: list[tuple[float, float]] = field(default_factory=list)  # (s into the run, ms) of every probe

    @classmethod
    def of(cls, written: dict[int, float], seen: dict[int, float]) -> Latency:
        start = min(written.values(), default=0.0)
        timed = [(t - start, (seen[s] - t) * 1000) for s, t in written.items() if s in seen]
        worst = sorted(timed, key=lambda item: -item[1])[:8]
        return cls(sorted(ms for _, ms in timed), len(written) - len(timed), worst, timed)

    def slowest(self) -> str:
        """When the slowest probes were written: periodic stalls show up as a pattern here."""
        return ", ".join(f"{ms:.0f} ms at {at:.1f} s" for at, ms in self.worst)

    def over(self, ms: float, top: int = 8) -> str:
        """The seconds of the run with the most probes slower than `ms`: a warm-up shows as the
        first seconds, stalls as scattered ones."""
        counts = Counter(int(at) for at, took in self.timed if took > ms)
        total = sum(counts.values())
        worst = ", ".join(f"{n} in s{second}" for second, n in counts.most_common(top))
        return f"{total} probes over {ms:g} ms" + (f": {worst}" if worst else "")

    def p(self, q: float) -> float:
        return percentile(self.values, q)

    def cells(self) -> str:
        return (f"{len(self.values) + self.missing:>7} {self.missing:>7} {self.p(0.5):>7.2f} {self.p(0.95):>7.2f} "
                f"{self.p(0.99):>7.2f} {self.values[-1] if self.values else math.nan:>8.2f}")


def fmt_rate(value: float) -> str:
    return f"{value:,.0f}"


# --------------------------------------------------------------------------------- paced runs


@dataclass(slots=True)
class PacedResult:
    label: str
    latency: Latency
    cpu: CpuMeter
    written: Written
    load: str
    rss: list[tuple[float, float]] = field(default_factory=list)
    rss_peak: float = 0.0
    notes: list[str] = field(default_factory=list)


@dataclass(frozen=True, slots=True)
class Subject:
    """What the probes go through: the detector (to its alert file) or the tail baseline."""

    label: str
    pid: int
    watched: Path  # where its probe lines appear
    detector: Detector | None = None


def start_tail(ctx: Context, root: Path) -> Subject:
    """The baseline follower of root/log/audit.log, appending probe lines to root/tail/probes.log."""
    log, out = root / "log" / "audit.log", root / "tail" / "probes.log"
    log.touch()
    out.parent.mkdir(exist_ok=True)
    proc = ctx.children.helper("tail", str(log), str(out))
    wait_until(out.exists, 30, "the tail baseline to start")
    return Subject("baseline: tail -F in Python", proc.pid, out)


def start_detector(ctx: Context, root: Path, outputs: Outputs | None = None, probes: bool = True) -> Subject:
    alerts = root / "alerts" / "alerts.jsonl"
    rules = [SHIPPED_RULES, str(root / "probe.yaml")] if probes else [SHIPPED_RULES]
    file_only = [{"name": "file", "type": "file", "path": str(alerts), "fsync": False}]
    extra = {"outbox": {"synchronous": ctx.args.outbox_sync}} if ctx.args.outbox_sync else None
    detector = Detector(root, rules, outputs(root) if outputs else file_only, ctx.args.src, extra)
    return Subject("detector run", detector.start(ctx.children), alerts, detector)


def start_observer(ctx: Context, watched: Path, results: Path) -> None:
    ctx.children.helper("observe", str(watched), str(results))
    wait_until(results.exists, 30, "the observer to start")


def paced_run(ctx: Context, kind: str, seconds: float, tail_beside: bool = False) -> list[PacedResult]:
    """Write PACED_RATE events/s for `seconds`, 1 in PROBE_EVERY a probe, timed through the
    detector or (kind "tail") the baseline. `tail_beside`: the baseline also follows the same log
    (for its RSS); its row comes first."""
    root = ctx.scenario_dir(kind)
    try:
        with ctx.children.scope():
            subject = start_detector(ctx, root) if kind == "detector" else start_tail(ctx, root)
            subjects = [start_tail(ctx, root), subject] if tail_beside else [subject]
            results = root / "results" / "seen.log"
            start_observer(ctx, subject.watched, results)
            return measure_paced(ctx, root, subjects, seconds, results)
    finally:
        ctx.cleanup(root)


def measure_paced(ctx: Context, root: Path, subjects: list[Subject], seconds: float,
                  results: Path) -> list[PacedResult]:
    sampler = RssSampler([s.pid for s in subjects])
    meters = [CpuMeter(s.pid) for s in subjects]
    writer = make_writer(ctx.args.writer, root / "log" / "audit.log")
    sampler.start()
    for meter in meters:
        meter.start()
    written = write_paced(writer, events(ctx.source, PROBE_EVERY), PACED_RATE, int(PACED_RATE * seconds))
    for meter in meters:
        meter.stop()
    load = load_average()
    writer.close()
    wait_for_probes(results, written.probes, timeout=5.0)
    sampler.stop()
    out = []
    for subject, meter in zip(subjects, meters, strict=True):
        timed = subject is subjects[-1]  # the observer watches the last subject only
        latency = Latency.of(written.probes, read_times(results)) if timed else Latency([], 0)
        result = PacedResult(subject.label, latency, meter, written, load, sampler.samples[subject.pid],
                             sampler.peak[subject.pid])
        if subject.detector is not None:
            result.notes = subject.detector.warnings()[:5]
        out.append(result)
    return out


def wait_for_probes(results: Path, probes: dict[int, float], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and len(read_times(results)) < len(probes):
        time.sleep(0.1)


# ---------------------------------------------------------------------------- runs under a writer


@dataclass(slots=True)
class Mark:
    """The detector's progress when the writer had written `written` events."""

    written: int
    at: float
    evaluated: float
    lag_bytes: float
    lost_bytes: float

    @property
    def lag(self) -> float:
        return self.written - self.evaluated


@dataclass(slots=True)
class LiveResult:
    label: str
    written: Written
    marks: list[Mark]
    cpu: CpuMeter
    load: str
    drained: float = 0.0  # seconds after the last write until every event was evaluated (nan: never)
    evaluated: float = 0.0
    latency: Latency | None = None
    notes: list[str] = field(default_factory=list)

    @property
    def sustained(self) -> float:
        """events/s evaluated between the 25% and the 100% marks."""
        first, last = self.marks[0], self.marks[-1]
        return (last.evaluated - first.evaluated) / (last.at - first.at) if last.at > first.at else math.nan

    @property
    def lag_grew(self) -> bool:
        slack = self.written.rate * LAG_SLACK_SECONDS
        return any(m.lag > self.marks[0].lag + slack for m in self.marks[1:]) or self.marks[-1].lost_bytes > 0


def progress(detector: Detector, written: int) -> Mark:
    metrics = detector.metrics()
    return Mark(written, time.monotonic(), metrics.get("detector_events_total", 0.0),
                metrics.get("detector_lag_bytes", 0.0), metrics.get("detector_lost_bytes_total", 0.0))


def drain(detector: Detector, total: int, stall: float = 15.0) -> tuple[float, float]:
    """Wait until `total` events are evaluated; (seconds it took or nan, events evaluated)."""
    start = last_change = time.monotonic()
    seen = -1.0
    while True:
        evaluated = detector.metrics().get("detector_events_total", 0.0)
        now = time.monotonic()
        if evaluated >= total:
            return now - start, evaluated
        if evaluated != seen:
            seen, last_change = evaluated, now
        elif now - last_change > stall:
            return math.nan, evaluated
        time.sleep(0.05)


@dataclass(frozen=True, slots=True)
class LivePlan:
    """One `detector run` under a writer: its row label, the write rate, probes and outputs."""

    label: str
    rate: float  # events/s; 0: as fast as possible
    probe_every: int = 0  # 0: no probes and no probe rule
    outputs: Outputs | None = None  # None: one `file` output (fsync: false)
    arrivals: Path | None = None  # the webhook receiver's log of probe arrivals
    compress: bool = True  # lumberjack's Compress (gzip of each backup, by the writer)


def live_run(ctx: Context, plan: LivePlan) -> LiveResult:
    """`detector run` while --events events are written; its progress at 25/50/75/100%."""
    root = ctx.scenario_dir("live")
    try:
        with ctx.children.scope():
            subject = start_detector(ctx, root, plan.outputs, probes=plan.probe_every > 0)
            return measure_live(ctx, root, plan, subject)
    finally:
        ctx.cleanup(root)


def measure_live(ctx: Context, root: Path, plan: LivePlan, subject: Subject) -> LiveResult:
    detector = subject.detector
    assert detector is not None
    marks: list[Mark] = []
    cpu = CpuMeter(subject.pid)
    writer = make_writer(ctx.args.writer, root / "log" / "audit.log", compress=plan.compress)
    cpu.start()
    written = write_paced(writer, events(ctx.source, plan.probe_every), plan.rate, ctx.args.events,
                          lambda n: marks.append(progress(detector, n)))
    cpu.stop()
    load = load_average()
    writer.close()
    result = LiveResult(plan.label, written, marks, cpu, load)
    result.drained, result.evaluated = drain(detector, ctx.args.events)
    if plan.arrivals is not None:
        wait_for_probes(plan.arrivals, written.probes, timeout=30.0)
        result.latency = Latency.of(written.probes, read_times(plan.arrivals))
    result.notes = detector.warnings()[:5]
    return result


@dataclass(slots=True)
class Simple:
    """A baseline row: events over wall time, and CPU time."""

    label: str
    events: int
    seconds: float
    cpu: float
    load: str

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


# ------------------------------------------------------------------------- alert rates (storm)


@dataclass(frozen=True, slots=True)
class AlertPlan:
    """One `detector run` at PACED_RATE events/s of which `alerts_per_s` are probes that alert."""

    label: str
    alerts_per_s: float
    probe_every: int  # 1 in `probe_every` events is a probe
    rule: bool = True  # False: the probe rule is not loaded (same stream, no alerts)
    output: str = "stdout"  # stdout (the detector's standard output goes to the watched file) | file


@dataclass(slots=True)
class AlertResult:
    label: str
    plan: AlertPlan
    latency: Latency
    cpu: TreeCpuMeter
    written: Written
    load: str
    rss_peak: float = 0.0
    processes: int = 1  # the detector, plus its delivery child if it has one
    lag_mid: float = 0.0  # events written - evaluated when half the events were written
    lag_end: float = 0.0  # ... when all were written
    behind_end: int = 0  # probe alerts written - seen when all were written
    drained: float = 0.0  # s from the last write until the last probe was seen (nan: some never)
    notes: list[str] = field(default_factory=list)


def alert_outputs(plan: AlertPlan, alerts: Path) -> list[dict[str, Any]]:
    """One output, for the probe alerts only: the shipped rules' alerts are built and routed nowhere,
    so the alert rate is exactly the probe rate."""
    if plan.output == "file":
        return [{"name": "file", "type": "file", "path": str(alerts), "fsync": False, "include_rules": [PROBE_RULE]}]
    return [{"name": "stdout", "type": "stdout", "include_rules": [PROBE_RULE]}]


def alert_run(ctx: Context, plan: AlertPlan, seconds: float) -> AlertResult:
    root = ctx.scenario_dir("alerts")
    try:
        with ctx.children.scope():
            alerts = root / "alerts" / "alerts.jsonl"
            shipped = str(ctx.args.src.resolve() / "rules")  # the rules of the tree under test (--src)
            rules = [shipped, str(root / "probe.yaml")] if plan.rule else [shipped]
            outbox: dict[str, Any] = {}
            if ctx.args.outbox_sync:
                outbox["synchronous"] = ctx.args.outbox_sync
            if ctx.args.dispatch:
                outbox["dispatch"] = ctx.args.dispatch
            detector = Detector(root, rules, alert_outputs(plan, alerts), ctx.args.src,
                                {"outbox": outbox} if outbox else None)
            detector.start(ctx.children, stdout=alerts if plan.output == "stdout" else None)
            results = root / "results" / "seen.log"
            start_observer(ctx, alerts, results)
            return measure_alerts(ctx, root, plan, detector, seconds=seconds, results=results)
    finally:
        ctx.cleanup(root)


def measure_alerts(ctx: Context, root: Path, plan: AlertPlan, detector: Detector, *, seconds: float,
                   results: Path) -> AlertResult:
    assert detector.proc is not None
    pid = detector.proc.pid
    count = int(PACED_RATE * seconds)
    sampler, cpu = TreeRssSampler(pid), TreeCpuMeter(pid)
    writer = make_writer(ctx.args.writer, root / "log" / "audit.log")
    marks: dict[int, tuple[float, int]] = {}  # written -> (events behind, probes behind)
    stream = events(ctx.source, plan.probe_every)

    def milestone(n: int) -> None:
        writer.flush()
        evaluated = detector.metrics().get("detector_events_total", 0.0)
        marks[n] = (n - evaluated, math.ceil(n / plan.probe_every) - len(read_times(results)))

    sampler.start()
    cpu.start()
    written = write_paced(writer, stream, PACED_RATE, count, milestone)
    cpu.stop()
    load = load_average()
    writer.close()
    probes = written.probes
    wait_for_probes(results, probes if plan.rule else {}, timeout=10.0)
    ordered = sorted(marks)  # 25, 50, 75, 100%
    sampler.stop()
    seen = read_times(results)
    latency = Latency.of(probes, seen) if plan.rule else Latency([], 0)
    (lag_mid, _), (lag_end, behind_end) = marks[ordered[1]], marks[ordered[-1]]
    last_seen = max(seen.values(), default=math.nan)
    drained = last_seen - written.ended if plan.rule and not latency.missing else math.nan
    return AlertResult(plan.label, plan, latency, cpu, written, load, sampler.peak, sampler.members, lag_mid,
                       lag_end, behind_end if plan.rule else 0, max(drained, 0.0),
                       detector.warnings()[:5])
