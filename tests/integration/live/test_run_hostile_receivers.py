"""The real `detector run` against receivers on 127.0.0.1 that stream endless bodies (issue 14):
every network output (webhook, slack's webhook and Web API, sns) keeps delivering or retrying,
the process answers /healthz, and the peak RSS of the whole process tree (the courier child
too, with `outbox.dispatch: process`) stays small. Reading one of those bodies whole would
take gigabytes within each attempt's `timeout`."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.integration.live.harness import Detector, event_line, pid_alive
from tests.integration.live.test_run_metrics_listener import free_port, get
from tests.support.hostile import Answer, HostileReceiver, Request, endless

ALERTS = 10
FAILED_ATTEMPTS = 5  # per failing output, each one an endless body read up to the cap
PEAK_RSS_KB = 150_000  # per process; one uncapped attempt reads far more within its 2 s timeout
TOKEN = "xoxb-hostile-test-token"
AWS_ENV = {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing", "AWS_SESSION_TOKEN": "testing",
           "AWS_DEFAULT_REGION": "eu-west-1", "SLACK_TOKEN": TOKEN}


@pytest.fixture
def secrets_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Fake AWS credentials (no shared config files from the host) and the Slack token, for the child."""
    for key, value in AWS_ENV.items():
        monkeypatch.setenv(key, value)
    monkeypatch.setenv("AWS_CONFIG_FILE", str(tmp_path / "none"))
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(tmp_path / "none"))
    monkeypatch.delenv("AWS_PROFILE", raising=False)


def endless_error(status: int) -> Answer:
    """`status`, then a body without end (an error text no one should read whole)."""
    def answer(_request: Request, conn: socket.socket, stop: threading.Event) -> None:
        conn.sendall(f"HTTP/1.1 {status} X\r\nContent-Type: text/plain\r\nConnection: close\r\n\r\n".encode())
        chunk = b"e" * 65536
        while not stop.is_set():
            conn.sendall(chunk)
    return answer


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (the courier child is started by a thread, so every task's
    children are read)."""
    tree, queue = [], [pid]
    while queue:
        current = queue.pop()
        tree.append(current)
        for task in Path(f"/proc/{current}/task").glob("*"):
            try:
                queue += [int(child) for child in (task / "children").read_text().split()]
            except FileNotFoundError:
                continue
    return tree


def peak_rss_kb(pid: int) -> int:
    """VmHWM: the highest resident set size the process has had (0 once it is gone)."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0
    return next((int(line.split()[1]) for line in status.splitlines() if line.startswith("VmHWM:")), 0)


def alert_counts(port: int) -> dict[tuple[str, str], float]:
    """detector_alerts_total by (output, result)."""
    text = get(port, "/metrics")[1].decode()
    return {(s.labels["output"], s.labels["result"]): s.value for family in text_string_to_metric_families(text)
            if family.name == "detector_alerts" for s in family.samples if s.name == "detector_alerts_total"}


def poll(condition: Callable[[], bool], check: Callable[[], None], timeout: float, what: str) -> None:
    """Until `condition` holds, running `check` (which fails at once) on every round."""
    deadline = time.monotonic() + timeout
    while True:
        check()
        if condition():
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout}s waiting for {what}")
        time.sleep(0.05)


@pytest.mark.parametrize("dispatch", ["thread", "process"])
@pytest.mark.usefixtures("secrets_env")
def test_endless_response_bodies_leave_the_process_tree_small(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                              dispatch: str) -> None:
    """Endless 200 and 503 bodies to a webhook, Slack (webhook and Web API) and SNS: the 200s
    deliver, the others fail and retry, /healthz answers, and no process of the tree peaks
    over PEAK_RSS_KB."""
    port = free_port()
    with HostileReceiver(endless) as ok, HostileReceiver(endless_error(503)) as failing, \
            HostileReceiver(endless) as slack_api, HostileReceiver(endless) as sns:
        monkeypatch.setenv("SLACK_HOOK_URL", f"{ok.url}/services/T0/B0/x")
        outputs = [
            {"name": "hook", "type": "webhook", "url": f"{ok.url}/in"},
            {"name": "hook-503", "type": "webhook", "url": f"{failing.url}/in"},
            {"name": "slack-hook", "type": "slack", "webhook_url_env": "SLACK_HOOK_URL"},
            {"name": "slack-api", "type": "slack", "token_env": "SLACK_TOKEN", "channel": "#alerts",
             "base_url": f"{slack_api.url}/api/"},
            {"name": "sns", "type": "sns", "topic_arn": "arn:aws:sns:eu-west-1:123456789012:alerts",
             "endpoint_url": sns.url},
        ]
        outbox = {"dispatch": dispatch, "retry_initial_seconds": 0.05, "retry_max_seconds": 0.1}
        detector = Detector(tmp_path, outputs=[{**output, "timeout": 2} for output in outputs], outbox=outbox,
                            metrics={"listen": f"127.0.0.1:{port}"})
        detector.start()
        assert detector.proc is not None
        proc = detector.proc
        peaks: dict[int, int] = {}

        def bounded() -> None:
            assert pid_alive(proc), detector.log_text()
            for pid in process_tree(proc.pid):
                peaks[pid] = max(peaks.get(pid, 0), peak_rss_kb(pid))
            assert max(peaks.values()) < PEAK_RSS_KB, f"peak RSS by pid (kB): {peaks}"

        def settled() -> bool:
            counts = alert_counts(port)
            return (all(counts.get((name, "sent"), 0) == ALERTS for name in ("hook", "slack-hook"))
                    and all(counts.get((name, "failed"), 0) >= FAILED_ATTEMPTS
                            for name in ("hook-503", "slack-api", "sns")))

        poll(lambda: '"event": "started"' in detector.log_text(), bounded, 60, "detector to start")
        with detector.log.open("ab") as audit:
            audit.write(b"".join(event_line(n) for n in range(ALERTS)))
        poll(settled, bounded, 30, "deliveries and failed attempts")
        assert get(port, "/healthz")[0] == 200
        bounded()
        tree = process_tree(proc.pid)
        code, _ = detector.terminate()
    log = detector.log_text()
    assert code == 0, log
    assert len(tree) == (2 if dispatch == "process" else 1), tree
    assert "delivery_worker_error" not in log, log
    assert "a response body over" in log and "Slack API: unexpected response" in log, log
