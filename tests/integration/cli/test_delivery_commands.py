"""`detector send-test-alert` and `detector outbox` from the command line."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import yaml

from detector.alert.admin import sample_alert
from detector.alert.outbox import Outbox
from detector.alert.route import Router
from detector.alert.settings import RouteSettings
from tests.support.receiver import Receiver, free_port

Run = Callable[..., CompletedProcess[str]]


def write_config(tmp_path: Path, outputs: list[dict[str, object]]) -> Path:
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({"state_dir": str(tmp_path / "state"), "outputs": outputs,
                                      "cluster_name": "test-cluster"}))
    return config


def test_send_test_alert_reports_each_output(detector: Run, tmp_path: Path) -> None:
    """A healthy webhook and a file output report OK; an unreachable webhook reports the exact failure; exit 1."""
    down = f"http://127.0.0.1:{free_port()}/hook"
    with Receiver() as receiver:
        config = write_config(tmp_path, [
            {"name": "hook", "type": "webhook", "url": receiver.url + "/hook"},
            {"name": "archive", "type": "file", "path": str(tmp_path / "alerts.jsonl")},
            {"name": "gone", "type": "webhook", "url": down, "timeout": 2},
        ])
        result = detector("send-test-alert", "--config", str(config))
        only = detector("send-test-alert", "--config", str(config), "--output", "hook")
        assert len(receiver.accepted()) == 2
        body = orjson.loads(receiver.accepted()[0].body)
    assert result.returncode == 1
    assert "hook: OK" in result.stdout and "archive: OK" in result.stdout
    assert "gone: FAILED" in result.stdout and "refused" in result.stdout
    assert only.returncode == 0 and "gone" not in only.stdout
    assert body["source"] == "k8s_audit" and body["output_fields"]["ka.cluster.name"] == "test-cluster"
    unknown = detector("send-test-alert", "--config", str(config), "--output", "nope")
    assert unknown.returncode == 2 and "no output named 'nope'" in unknown.stderr


def test_send_test_alert_never_prints_the_secret_url(detector: Run, tmp_path: Path) -> None:
    """A webhook URL from the environment does not appear in the report, even when the send fails."""
    secret_url = f"http://127.0.0.1:{free_port()}/T000/B000/very-secret-token"
    config = write_config(tmp_path, [{"name": "chat", "type": "slack", "webhook_url_env": "DETECTOR_TEST_SLACK",
                                      "timeout": 2}])
    env = {**os.environ, "DETECTOR_TEST_SLACK": secret_url}
    result = detector("send-test-alert", "--config", str(config), env=env)
    assert result.returncode == 1
    assert "very-secret-token" not in result.stdout + result.stderr


def test_outbox_list_retry_purge(detector: Run, tmp_path: Path) -> None:
    """Dead letters are listed, retried back to pending, and purged."""
    config = write_config(tmp_path, [{"name": "hook", "type": "webhook", "url": "http://127.0.0.1:9/x"}])
    box = Outbox.in_state_dir(tmp_path / "state", router=Router({"hook": RouteSettings()}))
    box.enqueue([sample_alert(), sample_alert()])
    [first, second] = box.pending("hook")
    box.dead_letter(first.seq, "HTTP 404: no such hook (permanent)")
    box.close()
    listed = detector("outbox", "list", "--config", str(config), "--status", "dead")
    assert listed.returncode == 0, listed.stderr
    assert "HTTP 404: no such hook" in listed.stdout and "dead" in listed.stdout
    retried = detector("outbox", "retry", "--config", str(config))
    assert retried.returncode == 0 and "1 row(s)" in retried.stdout
    purged = detector("outbox", "purge", "--config", str(config), "--status", "pending", "--seq", str(second.seq))
    assert purged.returncode == 0 and "1 row(s) purged" in purged.stdout
    remaining = detector("outbox", "list", "--config", str(config), "--status", "pending")
    assert str(first.seq) in remaining.stdout and "hook" in remaining.stdout
