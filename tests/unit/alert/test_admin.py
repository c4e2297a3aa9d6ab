"""Tests for detector.alert.admin: send-test-alert and the outbox commands."""

from __future__ import annotations

import re
from datetime import UTC, datetime
from pathlib import Path

import orjson
import pytest

from detector.alert.admin import (
    TEST_RULE,
    format_counts,
    format_rows,
    open_outbox,
    outbox_list,
    outbox_purge,
    outbox_retry,
    sample_alert,
    send_test_alert,
)
from detector.alert.outbox import Outbox
from detector.alert.route import Router
from detector.alert.secret import Secret
from detector.alert.settings import FileSettings, RouteSettings, WebhookSettings
from detector.errors import ConfigError
from detector.rules.model import Priority
from tests.support.alertkit import make_alerts


def test_send_test_alert_reports_per_output(tmp_path: Path) -> None:
    """Each output gets the sample (routes do not apply); failures are exact and secret-free."""
    good = FileSettings("file", str(tmp_path / "alerts.jsonl"), RouteSettings(min_priority=Priority.EMERGENCY))
    missing_dir = FileSettings("elsewhere", str(tmp_path / "nope" / "a.jsonl"))
    refused = WebhookSettings("hook", Secret("http://127.0.0.1:9/hook-secret-path", "env H"), timeout=1)
    results = send_test_alert([good, missing_dir, refused])
    assert [(r.name, r.ok) for r in results] == [("file", True), ("elsewhere", False), ("hook", False)]
    assert results[0].detail.startswith("delivered (alert id ")
    assert "does not exist" in results[1].detail
    assert results[2].detail == "connection refused (retryable)"
    line = orjson.loads((tmp_path / "alerts.jsonl").read_text())
    assert line["rule"] == TEST_RULE and line["output_fields"]["ka.user.name"] == "test-user"


def test_send_test_alert_only_one(tmp_path: Path) -> None:
    """--output NAME picks one output; an unknown name is an error listing the outputs."""
    outputs = [FileSettings("a", str(tmp_path / "a")), FileSettings("b", str(tmp_path / "b"))]
    assert [r.name for r in send_test_alert(outputs, only="b")] == ["b"]
    with pytest.raises(ConfigError, match=r"no output named 'c' \(outputs: a, b\)"):
        send_test_alert(outputs, only="c")


def test_sample_alerts_have_fresh_ids() -> None:
    """Two test alerts never share an id (FIFO de-duplication would swallow the second)."""
    assert sample_alert().id != sample_alert().id
    assert sample_alert(cluster_name="prod").output_fields["ka.cluster.name"] == "prod"



def test_sample_alert_times_agree_to_the_nanosecond() -> None:
    """The test alert's `time`, `evt.time` and `output` prefix are one instant, nine digits each."""
    for _ in range(50):
        alert = sample_alert()
        nanos = alert.output_fields["evt.time"]
        whole = datetime.strptime(alert.time[:19], "%Y-%m-%dT%H:%M:%S").replace(tzinfo=UTC)
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{9}Z", alert.time)
        assert int(whole.timestamp()) * 1_000_000_000 + int(alert.time[20:29]) == nanos
        assert alert.output.split(": ", 1)[0].endswith(f".{nanos % 1_000_000_000:09d}")

def test_outbox_commands(tmp_path: Path) -> None:
    """list/retry/purge on an existing outbox; a missing one is a clear error."""
    with pytest.raises(ConfigError, match="no outbox at"):
        open_outbox(tmp_path)
    writer = Outbox.in_state_dir(tmp_path, router=Router({"siem": RouteSettings()}))
    writer.enqueue(make_alerts(3))
    first, second, _ = writer.pending("siem")
    writer.dead_letter(first.seq, "HTTP 404: no such hook")
    writer.close()
    box = open_outbox(tmp_path)
    rows = outbox_list(box, status="dead")
    assert [r.seq for r in rows] == [first.seq]
    table = format_rows(outbox_list(box))
    assert "HTTP 404: no such hook" in table and table.splitlines()[0].split()[:3] == ["SEQ", "OUTPUT", "STATUS"]
    assert "siem: dead=1" in format_counts(box) and "siem: pending=2" in format_counts(box)
    assert outbox_retry(box) == 1 and outbox_list(box, status="dead") == []
    assert outbox_purge(box, seqs=[second.seq]) == 1
    assert [r.status for r in outbox_list(box)] == ["pending", "dropped", "pending"]
    box.close()
