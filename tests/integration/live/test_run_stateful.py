"""`detector run` with stateful rules: windows survive a restart (SIGKILL or SIGTERM) in the
middle, a fired window never fires again after one, and absence fires on a log that stops."""

from __future__ import annotations

import signal
import sqlite3
import time
from pathlib import Path

import orjson
import pytest

from detector.alert.outbox import DB_NAME
from tests.integration.live.harness import Detector, wait_for

BURST_RULE = """\
- rule: Forbidden Burst
  desc: five 403s by one user within ten minutes
  condition: ka.response.code = 403
  output: "%agg.count forbidden requests by %agg.key (%agg.first to %agg.last)"
  priority: WARNING
  source: k8s_audit
  correlation: {type: count, group_by: [ka.user.name], window: 10m, threshold: 5, lateness: 1m}
"""

SILENCE_RULE = """\
- rule: Audit Log Silence
  desc: no event for two seconds
  condition: ka.auditid exists
  output: "audit log silent since %agg.last (cluster %agg.key)"
  priority: ERROR
  source: k8s_audit
  correlation: {type: absence, group_by: [ka.cluster.name], window: 2s, lateness: 0s}
"""


def forbidden(n: int, user: str = "mallory") -> bytes:
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata", "auditID": f"f-{user}-{n}",
        "stage": "ResponseComplete", "verb": "get", "requestURI": f"/api/v1/namespaces/ns{n}/secrets",
        "user": {"username": user}, "sourceIPs": ["203.0.113.9"],
        "objectRef": {"resource": "secrets", "namespace": f"ns{n}", "apiVersion": "v1"},
        "responseStatus": {"code": 403}, "stageTimestamp": f"2026-11-22T10:{n:02d}:00.000000Z",
    }) + b"\n"


def _state_rows(detector: Detector) -> int:
    database = detector.root / "state" / DB_NAME
    if not database.exists():
        return 0
    with sqlite3.connect(database) as db:
        return int(db.execute("SELECT count(*) FROM state WHERE key LIKE 'rules.state.%'").fetchone()[0])


def _alerts(detector: Detector) -> list[dict[str, object]]:
    if not detector.alerts.exists():
        return []
    return [orjson.loads(line) for line in detector.alerts.read_bytes().splitlines() if line.strip()]


def _stop(detector: Detector, how: signal.Signals) -> None:
    if how is signal.SIGKILL:
        detector.kill()
    else:
        assert detector.terminate()[0] == 0


@pytest.mark.parametrize("how", [signal.SIGKILL, signal.SIGTERM], ids=["sigkill", "sigterm"])
def test_a_window_open_at_a_restart_is_neither_forgotten_nor_fired_twice(tmp_path: Path, how: signal.Signals) -> None:
    """Three 403s, a stop, two more: one alert counting five. Five more fire a second window;
    after another stop, one more event fires nothing (the window was consumed with its alert)."""
    detector = Detector(tmp_path, BURST_RULE)
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(b"".join(forbidden(n) for n in range(3)))
    wait_for(lambda: _state_rows(detector) > 0, 30, "the window state to be committed with the checkpoint")
    _stop(detector, how)
    assert _alerts(detector) == []

    detector.start()
    detector.wait_started()
    wait_for(lambda: "stateful_state_loaded" in detector.log_text(), 30, "the state to load")
    time.sleep(1.0)  # state ahead of the checkpoint would count the three events twice, and fire now
    assert _alerts(detector) == []
    with detector.log.open("ab") as log:
        log.write(b"".join(forbidden(n) for n in range(3, 5)))
    wait_for(lambda: len(_alerts(detector)) >= 1, 30, "the alert of the window across the restart")
    first = _alerts(detector)[0]
    assert first["output_fields"]["agg.count"] == "5"  # type: ignore[index]
    assert "5 forbidden requests by mallory (2026-11-22T10:00:00.000000Z to 2026-11-22T10:04:00" in str(
        first["output"])

    with detector.log.open("ab") as log:
        log.write(b"".join(forbidden(n) for n in range(11, 16)))
    wait_for(lambda: len(_alerts(detector)) >= 2, 30, "the second window's alert")
    _stop(detector, how)

    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(forbidden(16) + forbidden(0, user="trudy"))
    wait_for(lambda: detector.log_text().count("stateful_state_loaded") >= 2, 30, "the state to load")
    time.sleep(1.0)
    assert detector.terminate()[0] == 0
    # Delivery is at least once (a SIGKILL may repeat a delivered alert, with its id); a window
    # whose consumption was lost would fire again on event 16, with a new id.
    alerts = _alerts(detector)
    assert len({a["id"] for a in alerts}) == 2, [a["output"] for a in alerts]


def test_absence_fires_when_the_log_stops(tmp_path: Path) -> None:
    """One event, then nothing: the silence alert comes from the wall clock, once."""
    detector = Detector(tmp_path, SILENCE_RULE)
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(forbidden(1))
    wait_for(lambda: len(_alerts(detector)) >= 1, 30, "the silence alert")
    wait_for(lambda: _state_rows(detector) > 0, 10, "the state to be stored")
    assert detector.terminate()[0] == 0
    alerts = _alerts(detector)
    assert len(alerts) == 1
    assert "audit log silent since" in str(alerts[0]["output"])
    assert alerts[0]["rule"] == "Audit Log Silence"


def test_a_reload_keeps_an_unchanged_rules_window_and_drops_a_changed_ones(tmp_path: Path) -> None:
    """Three 403s, the rules file rewritten with another rule added: the window is kept (two
    more alert, counting five). Rewritten with another threshold: that rule starts afresh and
    its stored state is deleted."""
    detector = Detector(tmp_path, BURST_RULE)
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(b"".join(forbidden(n) for n in range(3)))
    wait_for(lambda: _state_rows(detector) > 0, 30, "the window state to be committed")
    detector.rules.write_text(BURST_RULE + SILENCE_RULE.replace("window: 2s", "window: 1h"))
    wait_for(lambda: "stateful_state_reloaded" in detector.log_text(), 30, "the reload")
    assert '"kept_rules": 1' in detector.log_text()
    with detector.log.open("ab") as log:
        log.write(b"".join(forbidden(n) for n in range(3, 5)))
    wait_for(lambda: len(_alerts(detector)) >= 1, 30, "the alert of the window kept across the reload")
    assert _alerts(detector)[0]["output_fields"]["agg.count"] == "5"  # type: ignore[index]
    before = _state_keys(detector)
    detector.rules.write_text(BURST_RULE.replace("threshold: 5", "threshold: 6"))
    wait_for(lambda: detector.log_text().count("stateful_state_reloaded") >= 2, 30, "the second reload")
    with detector.log.open("ab") as log:
        log.write(forbidden(30))
    wait_for(lambda: not (before & _state_keys(detector)), 30, "the changed rules' old state to be deleted")
    assert detector.terminate()[0] == 0


def _state_keys(detector: Detector) -> set[str]:
    with sqlite3.connect(detector.root / "state" / DB_NAME) as db:
        return {row[0] for row in db.execute("SELECT key FROM state WHERE key LIKE 'rules.state.%'")}
