"""The deployment's assumptions about `detector run`, checked on the real process: the
DaemonSet's config starts it, its probes answer, SIGHUP reloads and SIGTERM stops it in time."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.deploy.support import KUBE, REPO, load_yaml

STOP_BUDGET = 5.0  # seconds between SIGTERM and exit (the DaemonSet's grace period is 15 s)
FIRING_EVENTS = REPO / "tests" / "fixtures" / "events" / "exec_pod_human.json"
FIRING_RULE = "Exec Or Attach Into Pod By Human"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=2) as response:
            return int(response.status), bytes(response.read())
    except urllib.error.HTTPError as exc:
        with exc:
            return exc.code, exc.read()


def wait_for(check: Any, what: str, timeout: float = 30.0) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        try:
            result = check()
        except OSError:
            result = None
        if result:
            return result
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.1)


class Detector:
    """A `detector run` process on the DaemonSet's config.yaml, with the host paths moved into tmp."""

    def __init__(self, tmp: Path, create_log: bool = True) -> None:
        self.log = tmp / "audit" / "audit.log"
        self.log.parent.mkdir()
        if create_log:
            self.log.touch(mode=0o600)
        self.port = free_port()
        config = load_yaml(KUBE / "config" / "config.yaml")
        config.update(file=str(self.log), state_dir=str(tmp / "state"),
                      rules=[str(REPO / "rules"), str(KUBE / "rules.d")],  # /opt/detector/rules, rules.d
                      metrics={"listen": f"127.0.0.1:{self.port}"})
        path = tmp / "config.yaml"
        path.write_text(yaml.safe_dump(config), encoding="utf-8")
        self.stdout, self.stderr = tmp / "stdout", tmp / "stderr"
        with self.stdout.open("wb") as out, self.stderr.open("wb") as err:
            self.process = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(path)],
                                            stdout=out, stderr=err)

    def logs(self) -> str:
        return self.stderr.read_text(encoding="utf-8", errors="replace")

    def alerts(self) -> list[dict[str, Any]]:
        return [json.loads(line) for line in self.stdout.read_text(encoding="utf-8").splitlines() if line.strip()]

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(timeout=10)


def skip_without_run() -> None:
    help_text = subprocess.run([sys.executable, "-m", "detector", "--help"], capture_output=True, text=True,
                               timeout=60, check=False).stdout
    if "run" not in help_text.split("{", 1)[-1].split("}", 1)[0].split(","):
        pytest.skip("this detector has no run command yet")


@pytest.fixture
def detector(tmp_path: Path) -> Iterator[Detector]:
    skip_without_run()
    running = Detector(tmp_path)
    try:
        yield running
    finally:
        running.stop()


@pytest.fixture
def detector_without_log(tmp_path: Path) -> Iterator[Detector]:
    skip_without_run()
    running = Detector(tmp_path, create_log=False)
    try:
        yield running
    finally:
        running.stop()


def test_run_serves_probes_alerts_reloads_and_stops_in_time(detector: Detector) -> None:
    """Ready and healthy on the metrics port; a new event alerts on stdout; SIGHUP reloads; SIGTERM exits 0 in 5 s."""
    port = detector.port

    def ready() -> bool:
        assert detector.process.poll() is None, detector.logs()
        return get(port, "/readyz")[0] == 200

    wait_for(ready, "/readyz")
    status, body = get(port, "/healthz")
    assert status == 200 and json.loads(body)["status"] == "ok"
    status, body = get(port, "/metrics")
    assert status == 200 and b"# TYPE" in body

    with detector.log.open("ab") as log:
        log.write(FIRING_EVENTS.read_bytes())
    alerts = wait_for(detector.alerts, "an alert on stdout")
    assert FIRING_RULE in {a["rule"] for a in alerts}

    detector.process.send_signal(signal.SIGHUP)
    wait_for(lambda: "reload" in detector.logs(), "a reload log line")
    assert get(port, "/healthz")[0] == 200

    detector.process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    code = detector.process.wait(timeout=30)
    elapsed = time.monotonic() - started
    assert code == 0, detector.logs()
    assert elapsed < STOP_BUDGET, f"SIGTERM took {elapsed:.1f} s"
    for line in detector.logs().splitlines():
        json.loads(line)  # log_format json: every stderr line is one JSON object


def test_readyz_fails_until_the_audit_log_is_open(detector_without_log: Detector) -> None:
    """Not ready while the audit log does not exist (the DaemonSet then shows the pod not ready); ready once it does."""
    port = detector_without_log.port
    wait_for(lambda: get(port, "/healthz")[0] == 200, "/healthz")
    time.sleep(1.0)  # past startup: the state must hold for as long as the file is missing
    for _ in range(10):
        assert get(port, "/readyz")[0] == 503
        time.sleep(0.1)
    detector_without_log.log.touch(mode=0o600)
    wait_for(lambda: get(port, "/readyz")[0] == 200, "/readyz after the log appeared", timeout=10)
