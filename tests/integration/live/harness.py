"""Run the real `detector run` process against a log written by a lumberjack writer."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import orjson
import yaml

REPO = Path(__file__).resolve().parents[3]
STARTED: list[subprocess.Popen[bytes]] = []  # killed after each test by conftest.py, even on failure

CATCH_ALL = """\
- rule: Every Event
  desc: makes every evaluated event visible as one alert
  condition: ka.auditid exists
  output: seen %ka.auditid
  priority: INFORMATIONAL
  source: k8s_audit
"""


def event_line(n: int, stage: str = "ResponseComplete") -> bytes:
    """A small real-shaped audit event with a unique auditID."""
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"id-{n:09d}",
        "stage": stage, "requestURI": f"/api/v1/namespaces/default/pods/p{n % 97}", "verb": "get",
        "user": {"username": "system:node:n1", "groups": ["system:nodes"]}, "sourceIPs": ["10.0.0.1"],
        "objectRef": {"resource": "pods", "namespace": "default", "name": f"p{n % 97}", "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 200},
        "requestReceivedTimestamp": "2026-11-22T10:00:00.000000Z", "stageTimestamp": "2026-11-22T10:00:00.000100Z",
    }) + b"\n"


class Detector:
    """A `detector run` child process with its config, state and alert file in `root`."""

    def __init__(self, root: Path, rules: str | list[str] = CATCH_ALL, **config: Any) -> None:
        """`rules` is the text of a rules file to write, or a list of existing rules files."""
        self.root = root
        (root / "log").mkdir(exist_ok=True)
        self.log = root / "log" / "audit.log"
        self.alerts = root / "alerts.jsonl"
        self.stderr = root / "detector.stderr"
        rules_file = root / "rules.yaml"
        rules_file.write_text(rules if isinstance(rules, str) else "")
        self.rules = rules_file
        rule_paths = [str(rules_file)] if isinstance(rules, str) else rules
        settings: dict[str, Any] = {
            "file": str(self.log), "state_dir": str(root / "state"), "start_at": "beginning",
            "rules": rule_paths, "poll_interval": 0.1, "checkpoint_interval": 0.2, "log_format": "json",
            "outputs": [{"name": "file", "type": "file", "path": str(self.alerts), "fsync": False}],
        }
        settings.update(config)
        self.config = root / "config.yaml"
        self.config.write_text(yaml.safe_dump(settings))
        self.proc: subprocess.Popen[bytes] | None = None
        self._seen_bytes = self._seen_lines = self._starts = 0

    def start(self, *extra: str) -> None:
        with self.stderr.open("ab") as err:
            self.proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(self.config),
                                          *extra], stdout=subprocess.DEVNULL, stderr=err, cwd=REPO)
        STARTED.append(self.proc)

    def wait_started(self, timeout: float = 60) -> None:
        """Until this run has logged `started` (its follower is positioned)."""
        before = self._starts
        wait_for(lambda: self.log_text().count('"event": "started"') > before, timeout, "detector to start")
        self._starts += 1

    def kill(self) -> None:
        assert self.proc is not None
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def terminate(self, timeout: float = 10) -> tuple[int, float]:
        """SIGTERM; returns (exit code, seconds it took)."""
        assert self.proc is not None
        started = time.monotonic()
        self.proc.send_signal(signal.SIGTERM)
        code = self.proc.wait(timeout=timeout)
        return code, time.monotonic() - started

    def delivered(self) -> int:
        """Alert lines written so far (read incrementally: the file grows large)."""
        if not self.alerts.exists():
            return 0
        with self.alerts.open("rb") as f:
            f.seek(self._seen_bytes)
            chunk = f.read()
        complete = chunk.rfind(b"\n") + 1
        self._seen_bytes += complete
        self._seen_lines += chunk.count(b"\n", 0, complete)
        return self._seen_lines

    def alert_ids(self) -> list[str]:
        if not self.alerts.exists():
            return []
        ids = []
        for line in self.alerts.read_bytes().splitlines():
            if line.strip():
                ids.append(str(orjson.loads(line)["audit_id"]))
        return ids

    def log_text(self) -> str:
        return self.stderr.read_text(errors="replace") if self.stderr.exists() else ""


def wait_for(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.05) -> None:
    """Poll `condition` until true; fail with `what` after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if condition():
            return
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")


def pid_alive(proc: subprocess.Popen[bytes]) -> bool:
    return proc.poll() is None and os.path.exists(f"/proc/{proc.pid}")
