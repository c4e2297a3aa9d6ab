"""Timestamps the API server never writes end no command (issue 13): `scan`, `test-rule` with a
fixture and `test-rule --replay` evaluate the line or report it at file:line, and go on."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import yaml

from tests.integration.cli.events import RULES, deletion, event, line

Run = Callable[..., CompletedProcess[str]]

# Every time field in the output: each must render whatever the event's time.
TIMED_RULES = RULES.replace(
    "output: pod %ka.target.namespace/%ka.target.name deleted by %ka.user.name from %ka.client.ip",
    "output: pod %ka.target.name deleted at %evt.time.iso8601 (%evt.time, %evt.datetime, %jevt.rawtime)")
ODD = ["0001-01-01T00:00:00Z", "0001-01-01T00:00:00+23:59", "9999-12-31T23:59:59.999999999-23:59",
       "2026-11-22t10:00:00z"]


def _odd_log(tmp_path: Path) -> Path:
    """Line n (1-based) has ODD[n - 1]; the last line is an ordinary deletion."""
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(line(event(n, verb="delete", stageTimestamp=stamp)) for n, stamp in enumerate(ODD, 1))
                    + line(deletion(99)))
    return log


def test_scan_alerts_every_line_and_reports_clamped_times(detector: Run, tmp_path: Path) -> None:
    """Year 0001 (the issue's TypeError) and 9999 alert with the nearest time evt.time holds."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(TIMED_RULES)
    result = detector("scan", "--rules", str(rules), str(_odd_log(tmp_path)))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    alerts = [orjson.loads(x) for x in result.stdout.splitlines()]
    assert [a["audit_id"][-2:] for a in alerts] == ["01", "02", "03", "04", "99"]
    assert alerts[0]["time"] == "1677-09-21T00:12:43.145224192Z"
    assert "at 1677-09-21T00:12:43.145224192Z" in alerts[1]["output"]
    assert alerts[2]["time"] == "2262-04-11T23:47:16.854775807Z"
    assert alerts[3]["time"] == "2026-11-22T10:00:00.000000000Z"  # lowercase t and z are RFC 3339
    for n in (1, 2, 3):
        assert f"audit.log:{n}: time_out_of_range: stageTimestamp '{ODD[n - 1]}'" in result.stderr
    assert "rule 'Pod Deleted'" in result.stderr


def test_test_rule_fixture_and_replay_with_odd_times(detector: Run, tmp_path: Path) -> None:
    """A fixture with such times loads and fires; --replay counts every line."""
    rules = tmp_path / "pods.yaml"
    rules.write_text(TIMED_RULES)
    log = _odd_log(tmp_path)
    (tmp_path / "pods.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "odd times fire", "rule": "Pod Deleted", "events": [log.name],
         "expect": {"fires": True, "count": len(ODD) + 1}}]}))
    tested = detector("test-rule", "--rules", str(rules))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    assert "at 1677-09-21T00:12:43.145224192Z" in tested.stdout
    replayed = detector("test-rule", "--rules", str(rules), "--replay", str(log))
    assert replayed.returncode == 0, replayed.stdout + replayed.stderr
    assert f"events: {len(ODD) + 1}" in replayed.stdout
    assert f"{len(ODD) + 1}  Pod Deleted" in replayed.stdout
