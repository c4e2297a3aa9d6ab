"""Plumbing of bench/live.py: child processes, /proc readings, the lumberjack writer, the
`detector run` child and its metrics. The helper processes live in livehelpers.py."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import orjson
import yaml
from livehelpers import PROBE_USER

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))  # for tests.support.lumberjack, the faithful writer

from tests.support.gobuild import build_golumberjack, missing_prerequisite  # noqa: E402
from tests.support.lumberjack import Lumberjack  # noqa: E402

PROBE_RULE = "Latency Probe"
PROBE_RULES_YAML = f"""\
- rule: {PROBE_RULE}
  desc: marker events written by bench/live.py; the auditID carries a sequence number
  condition: ka.user.name = {PROBE_USER}
  output: probe %ka.auditid
  priority: INFORMATIONAL
  source: k8s_audit
"""
_PROBE_HEAD, _PROBE_TAIL = orjson.dumps({
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": "@ID@",
    "stage": "ResponseComplete", "requestURI": "/api/v1/namespaces/default/pods/probe-0", "verb": "get",
    "user": {"username": PROBE_USER, "groups": ["system:authenticated"]}, "sourceIPs": ["10.0.0.1"],
    "userAgent": "bench/live", "objectRef": {"resource": "pods", "namespace": "default", "name": "probe-0",
                                             "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 200},
    "requestReceivedTimestamp": "2025-01-01T10:00:00.000000Z", "stageTimestamp": "2025-01-01T10:00:00.000100Z",
}).split(b"@ID@")


def python() -> str:
    venv = REPO / ".venv" / "bin" / "python"
    return str(venv) if venv.exists() else sys.executable


def probe_line(seq: int) -> bytes:
    """A small audit event by the probe user whose auditID ends in `seq`."""
    return b"%s00000000-0000-4000-8000-%012d%s\n" % (_PROBE_HEAD, seq, _PROBE_TAIL)


# ------------------------------------------------------------------------------------ child processes


class Children:
    """Every process the bench starts; `stop_all()` (in a `finally`) leaves none behind."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def start(self, argv: list[str], stderr: Path | None = None, cwd: Path = REPO,
              stdout: Path | None = None) -> subprocess.Popen[bytes]:
        with open(stderr or os.devnull, "ab") as err, open(stdout or os.devnull, "ab") as out:
            proc = subprocess.Popen(argv, cwd=cwd, stdin=subprocess.DEVNULL, stdout=out, stderr=err)
        self.procs.append(proc)
        return proc

    def helper(self, *args: str) -> subprocess.Popen[bytes]:
        """`python bench/livehelpers.py ROLE ...`"""
        return self.start([python(), str(Path(__file__).resolve().parent / "livehelpers.py"), *args])

    def stop(self, proc: subprocess.Popen[bytes], timeout: float = 30.0) -> int:
        """SIGTERM, then SIGKILL after `timeout`; returns the exit code."""
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        with contextlib.suppress(ValueError):
            self.procs.remove(proc)
        return proc.returncode

    def stop_all(self) -> None:
        for proc in reversed(list(self.procs)):
            self.stop(proc, timeout=10.0)

    @contextlib.contextmanager
    def scope(self) -> Iterator[None]:
        """Stop the processes started inside the block (newest first) when it ends."""
        mark = len(self.procs)
        try:
            yield
        finally:
            for proc in reversed(self.procs[mark:]):
                self.stop(proc)


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


# ------------------------------------------------------------------------------------------- /proc

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """utime + stime of a process (all its threads) from /proc/<pid>/stat."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS  # fields 14 and 15 of proc(5)


def rss_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) in MB from /proc/<pid>/status."""
    values = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(("VmRSS:", "VmHWM:")):
            key, value = line.split(":", 1)
            values[key] = int(value.split()[0]) / 1024
    return values["VmRSS"], values["VmHWM"]


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


def run_delay(pid: int) -> float:
    """Seconds the main thread of `pid` spent runnable but waiting for a CPU (schedstat field 2)."""
    return int(Path(f"/proc/{pid}/task/{pid}/schedstat").read_text().split()[1]) / 1e9


class CpuMeter:
    """CPU of a process between `start()` and `stop()`, as % of one core, and how long its main
    thread waited for a CPU while runnable (high: the machine, not the process, was the limit)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.cpu0 = self.t0 = self.delay0 = self.cpu = self.wall = self.delay = 0.0

    def start(self) -> None:
        self.cpu0, self.delay0, self.t0 = cpu_seconds(self.pid), run_delay(self.pid), time.monotonic()

    def stop(self) -> None:
        self.cpu, self.wall = cpu_seconds(self.pid) - self.cpu0, time.monotonic() - self.t0
        self.delay = run_delay(self.pid) - self.delay0

    @property
    def percent(self) -> float:
        return 100.0 * self.cpu / self.wall if self.wall > 0 else 0.0

    @property
    def runq_percent(self) -> float:
        return 100.0 * self.delay / self.wall if self.wall > 0 else 0.0


def process_tree(pid: int) -> list[int]:
    """`pid` and its live descendants (the detector and its delivery child, if any)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                ppid = int(Path(f"/proc/{entry}/stat").read_text().rsplit(")", 1)[1].split()[1])
                children.setdefault(ppid, []).append(int(entry))
    tree, todo = [], [pid]
    while todo:
        tree.append(current := todo.pop())
        todo.extend(children.get(current, ()))
    return tree


def tree_cpu_seconds(pid: int) -> float:
    """utime + stime of `pid`, of its live descendants, and of its children that it has reaped
    (cutime + cstime: a delivery child restarted during the run still counts)."""
    total = 0.0
    for member in process_tree(pid):
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{member}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
            if member == pid:
                total += int(fields[13]) + int(fields[14])
    return total / CLOCK_TICKS


class TreeCpuMeter(CpuMeter):
    """`CpuMeter` of a whole process tree: the detector and its delivery child together."""

    def start(self) -> None:
        self.cpu0, self.delay0, self.t0 = tree_cpu_seconds(self.pid), run_delay(self.pid), time.monotonic()

    def stop(self) -> None:
        self.cpu, self.wall = tree_cpu_seconds(self.pid) - self.cpu0, time.monotonic() - self.t0
        self.delay = run_delay(self.pid) - self.delay0


class TreeRssSampler(threading.Thread):
    """VmRSS of a process tree every `interval` seconds, summed; `peak` is the largest sum, or
    the root's own VmHWM if larger (a peak between two samples)."""

    def __init__(self, pid: int, interval: float = 1.0) -> None:
        super().__init__(name="tree-rss-sampler", daemon=True)
        self.pid, self.interval = pid, interval
        self.peak = 0.0
        self.members = 1
        self.done = threading.Event()

    def run(self) -> None:
        while not self.done.is_set():
            total = 0.0
            members = process_tree(self.pid)
            for member in members:
                with contextlib.suppress(OSError, KeyError):
                    rss, hwm = rss_mb(member)
                    total += rss
                    if member == self.pid:
                        self.peak = max(self.peak, hwm)
            self.peak = max(self.peak, total)
            self.members = max(self.members, len(members))
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()


class RssSampler(threading.Thread):
    """VmRSS of some processes every `interval` seconds, as (elapsed s, MB) per pid."""

    def __init__(self, pids: list[int], interval: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pids, self.interval = pids, interval
        self.samples: dict[int, list[tuple[float, float]]] = {pid: [] for pid in pids}
        self.peak: dict[int, float] = dict.fromkeys(pids, 0.0)
        self.done = threading.Event()

    def run(self) -> None:
        start = time.monotonic()
        while not self.done.is_set():
            for pid in self.pids:
                with contextlib.suppress(OSError, KeyError):
                    rss, hwm = rss_mb(pid)
                    self.samples[pid].append((time.monotonic() - start, rss))
                    self.peak[pid] = max(self.peak[pid], hwm)
            self.done.wait(self.interval)

    def stop(self) -> None:
        self.done.set()
        self.join()


# ------------------------------------------------------------------------------------- the writer


class UniqueClock:
    """Real UTC time, but strictly 1 ms apart at least: at 50 rotations/s two backups would
    otherwise get the same millisecond stamp (lumberjack would rename over the older one)."""

    def __init__(self) -> None:
        self.last = datetime(1970, 1, 1, tzinfo=UTC)

    def __call__(self) -> datetime:
        self.last = max(datetime.now(UTC), self.last + timedelta(milliseconds=1))
        return self.last


class Writer:
    """kube-apiserver's audit writer: lumberjack, one write per event, and the mill (prune +
    gzip) on its own thread after each rotation, as lumberjack runs it on a goroutine."""

    def flush(self) -> None:
        """Every write is already in the file."""

    def __init__(self, path: Path, max_size_mb: int = 1, max_backups: int = 10, compress: bool = True) -> None:
        self.lj = Lumberjack(path, max_size=max_size_mb, max_backups=max_backups, compress=compress,
                             clock=UniqueClock(), mill="manual")
        self._seen = 0
        self._kick = threading.Event()
        self._closed = False
        self._mill = threading.Thread(target=self._run_mill, name="lumberjack-mill", daemon=True)
        self._mill.start()

    def write(self, line: bytes) -> None:
        self.lj.write(line)
        if self.lj.rotations != self._seen:
            self._seen = self.lj.rotations
            self._kick.set()

    def close(self) -> None:
        self.lj.close()
        self._closed = True
        self._kick.set()
        self._mill.join()

    def _run_mill(self) -> None:
        while True:
            self._kick.wait()
            self._kick.clear()
            if self._closed:
                return
            with contextlib.suppress(OSError):  # a backup pruned under us: the next run sees the rest
                self.lj.run_mill()


class GoWriter:
    """The real lumberjack.v2 (tests/support/golumberjack: one Write per line, like kube-apiserver)
    fed through a pipe, so the bench process's own pacing and event handling stay out of the
    writer's way. Lines are piped in batches; `flush()` sends what is buffered at once."""

    BATCH = 64 * 1024

    def __init__(self, path: Path, max_size_mb: int = 1, max_backups: int = 10, compress: bool = True) -> None:
        binary = go_writer_binary()
        argv = [str(binary), "-path", str(path), "-maxsize", str(max_size_mb), "-maxbackups", str(max_backups)]
        self.proc = subprocess.Popen([*argv, *(["-compress"] if compress else [])], stdin=subprocess.PIPE)
        self._buffer: list[bytes] = []
        self._size = 0

    def write(self, line: bytes) -> None:
        self._buffer.append(line)
        self._size += len(line)
        if self._size >= self.BATCH:
            self.flush()

    def flush(self) -> None:
        if self._buffer and self.proc.stdin is not None:
            self.proc.stdin.write(b"".join(self._buffer))
            self.proc.stdin.flush()
        self._buffer.clear()
        self._size = 0

    def close(self) -> None:
        self.flush()
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        self.proc.wait(60)


_GO_BINARY: list[Path] = []


def go_writer_binary() -> Path:
    """tests/support/golumberjack, built once per run into bench/out."""
    if not _GO_BINARY:
        out = REPO / "bench" / "out" / "go"
        out.mkdir(parents=True, exist_ok=True)
        _GO_BINARY.append(build_golumberjack(out))
    return _GO_BINARY[0]


def make_writer(kind: str, path: Path, *, compress: bool = True) -> Writer | GoWriter:
    """`go` (the real lumberjack), `python` (tests/support/lumberjack.py), or `auto`: go when it can be built."""
    if kind == "go" or (kind == "auto" and missing_prerequisite() is None):
        return GoWriter(path, compress=compress)
    return Writer(path, compress=compress)


def writer_kind(kind: str) -> str:
    """What `make_writer(kind, ...)` will use, for the report header."""
    if kind == "auto":
        return "go" if missing_prerequisite() is None else f"python ({missing_prerequisite()})"
    return kind


def cycle_lines(path: Path) -> Iterator[bytes]:
    """The lines of a pre-generated log, over and over (reading a cached file costs ~0.3 us a line)."""
    while True:
        with path.open("rb", buffering=1 << 20) as fh:
            yield from fh


class Pacer:
    """Holds a loop to `rate` iterations/s, checking the clock every ~1 ms worth of iterations."""

    def __init__(self, rate: float) -> None:
        self.rate = rate
        self.every = max(1, int(rate // 1000)) if rate > 0 else 1 << 30
        self.start = time.monotonic()

    def pace(self, i: int) -> None:
        if i % self.every:
            return
        ahead = self.start + i / self.rate - time.monotonic()
        if ahead > 0:
            time.sleep(ahead)


# ------------------------------------------------------------------------------------- the detector


class Detector:
    """A `python -m detector run --config` child with its config, log dir and state in `root`."""

    def __init__(self, root: Path, rules: list[str], outputs: list[dict[str, Any]], src: Path = REPO,
                 extra: dict[str, Any] | None = None) -> None:
        self.root = root
        self.src = src  # `python -m detector` runs from here: the repository, or another tree to compare
        self.log = root / "log" / "audit.log"
        self.log.parent.mkdir(parents=True, exist_ok=True)
        self.log.touch()
        self.stderr = root / "detector.stderr"
        self.port = free_port()
        config = {"file": str(self.log), "state_dir": str(root / "state"), "start_at": "beginning",
                  "rules": rules, "outputs": outputs, "log_format": "json",
                  "log_level": os.environ.get("BENCH_LOG_LEVEL", "info"),  # debug: per-alert delivery latency
                  "metrics": {"listen": f"127.0.0.1:{self.port}"}, **(extra or {})}
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(config))
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, children: Children, timeout: float = 60.0, stdout: Path | None = None) -> int:
        """Start it (its standard output to `stdout`, else nowhere) and wait for "started"."""
        self.proc = children.start([python(), "-m", "detector", "run", "--config", str(self.config)],
                                   stderr=self.stderr, cwd=self.src, stdout=stdout)
        wait_until(self._started, timeout, "detector run to start")
        return self.proc.pid

    def _started(self) -> bool:
        assert self.proc is not None
        if self.proc.poll() is not None:
            raise RuntimeError(f"detector run exited with {self.proc.returncode}: {self.last_error()}")
        return '"event": "started"' in self.stderr.read_text(errors="replace")

    def metrics(self) -> dict[str, float]:
        """The unlabelled samples of /metrics, plus labelled ones under their full text."""
        with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/metrics", timeout=10) as response:
            text = response.read().decode()
        values: dict[str, float] = {}
        for line in text.splitlines():
            if line and not line.startswith("#"):
                name, _, value = line.rpartition(" ")
                values[name] = float(value)
        return values

    def warnings(self) -> list[str]:
        """Log lines at warning level or above (data_lost, torn lines, delivery failures...)."""
        lines = self.stderr.read_text(errors="replace").splitlines() if self.stderr.exists() else []
        return [line for line in lines if '"level": "warning"' in line or '"level": "error"' in line]

    def last_error(self) -> str:
        lines = [line for line in self.stderr.read_text(errors="replace").splitlines() if line.strip()]
        return lines[-1][:300] if lines else "no stderr"



def read_times(path: Path) -> dict[int, float]:
    """`seq time` lines written by observe/receive (the first time per seq wins)."""
    times: dict[int, float] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            seq, _, at = line.partition(" ")
            if at:
                times.setdefault(int(seq), float(at))
    return times
