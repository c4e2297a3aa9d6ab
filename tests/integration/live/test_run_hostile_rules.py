"""detector run against hostile rules: a reload of an alias bomb, and a catastrophic-backtracking regex."""

from __future__ import annotations

import time
from pathlib import Path

import orjson

from tests.integration.live.harness import CATCH_ALL, Detector, event_line, pid_alive, wait_for
from tests.unit.rules.test_yamlload import alias_bomb

BACKTRACKING = """\
- rule: Repeated A
  desc: a pattern that backtracks exponentially on a's followed by a b
  condition: ka.user.name regex '(a+)+$'
  output: repeated %ka.user.name
  priority: WARNING
  source: k8s_audit
"""


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_alias_bomb_written_over_the_rules_keeps_the_old_rules_running(tmp_path: Path) -> None:
    """The hot reload of a 600-byte alias bomb fails at once (logged with file:line); the old rules alert on."""
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    assert detector.proc is not None
    append(detector.log, event_line(1))
    wait_for(lambda: detector.delivered() >= 1, 30, "the first alert")
    detector.rules.write_text(alias_bomb() + CATCH_ALL)
    wait_for(lambda: "rules_reload_failed" in detector.log_text(), 10, "the failed reload to be logged")
    written = time.monotonic()
    append(detector.log, b"".join(event_line(n) for n in range(2, 102)))
    wait_for(lambda: detector.delivered() >= 101, 10, "alerts from the old rules after the failed reload")
    assert time.monotonic() - written < 5
    assert pid_alive(detector.proc)
    assert detector.terminate()[0] == 0
    log = detector.log_text()
    assert f"{detector.rules}:10:15: error E026: alias *a3 expands the file past 10,000 nodes" in log
    assert "MemoryError" not in log and "Traceback" not in log


def test_backtracking_regex_does_not_stall_the_pipeline(tmp_path: Path) -> None:
    """`(a+)+$` on a 50,000-character user name costs nothing noticeable; later events alert at once."""
    detector = Detector(tmp_path, CATCH_ALL + BACKTRACKING)
    detector.start()
    detector.wait_started()
    hostile = orjson.loads(event_line(1))
    hostile["user"]["username"] = "a" * 50_000 + "b"
    written = time.monotonic()
    append(detector.log, orjson.dumps(hostile) + b"\n" + b"".join(event_line(n) for n in range(2, 12)))
    wait_for(lambda: detector.delivered() >= 11, 10, "alerts for the hostile event and the ones after it")
    assert time.monotonic() - written < 5
    assert detector.terminate()[0] == 0
    assert "Repeated A" not in detector.alerts.read_text()
