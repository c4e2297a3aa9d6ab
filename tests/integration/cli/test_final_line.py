"""A finished input's last line without a newline is read when it is whole (issue 13): `scan`
(file, gzip, stdin), a `test-rule` fixture and `test-rule --replay`; a torn one is reported."""

from __future__ import annotations

import gzip
import json
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import yaml

from tests.integration.cli.events import RULES, deletion, line

Run = Callable[..., CompletedProcess[str]]


def _dumped(path: Path, *events: dict[str, object]) -> Path:
    """Events as JSON lines with no newline after the last, as `json.dump` writes one event."""
    with path.open("w") as f:
        f.write("".join(json.dumps(e) + "\n" for e in events[:-1]))
        json.dump(events[-1], f)
    return path


def test_scan_reads_a_final_line_without_newline(detector: Run, tmp_path: Path) -> None:
    """`scan e.json` of a json.dump'ed event alerts (it reported unterminated_line), also gzipped
    and on stdin; after other lines too."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    one = _dumped(tmp_path / "e.json", deletion(1))
    two = _dumped(tmp_path / "two.json", deletion(2), deletion(3))
    gz = tmp_path / "e.json.gz"
    gz.write_bytes(gzip.compress(one.read_bytes()))
    result = detector("scan", "--rules", str(rules), str(one), str(two), str(gz))
    assert result.returncode == 0, result.stderr
    assert [orjson.loads(x)["audit_id"][-1] for x in result.stdout.splitlines()] == ["1", "2", "3", "1"]
    assert "bad_lines=0" in result.stderr
    piped = detector("scan", "--rules", str(rules), "-", stdin=one.read_bytes())
    assert [orjson.loads(x)["audit_id"] for x in piped.stdout.splitlines()] == [deletion(1)["auditID"]]


def test_a_torn_final_line_is_still_reported(detector: Run, tmp_path: Path) -> None:
    """A last line that is not whole JSON is reported at its file:line, not read."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    log = tmp_path / "audit.log"
    log.write_bytes(line(deletion(1)) + line(deletion(2))[:60])
    result = detector("scan", "--rules", str(rules), str(log))
    assert result.returncode == 0
    assert f"{log}:2: unterminated_line: final line has no newline" in result.stderr
    assert len(result.stdout.splitlines()) == 1


def test_test_rule_fixture_and_replay_read_a_final_line_without_newline(detector: Run, tmp_path: Path) -> None:
    """A fixture written by json.dump loads (it failed the test); --replay counts its event."""
    rules = tmp_path / "pods.yaml"
    rules.write_text(RULES)
    fixture = _dumped(tmp_path / "deletion.json", deletion(1))
    (tmp_path / "pods.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "dumped fixture", "rule": "Pod Deleted", "events": [fixture.name],
         "expect": {"fires": True, "count": 1}}]}))
    tested = detector("test-rule", "--rules", str(rules))
    assert tested.returncode == 0, tested.stdout + tested.stderr
    replayed = detector("test-rule", "--rules", str(rules), "--replay", str(fixture))
    assert "events: 1  bad lines: 0  alerts: 1" in replayed.stdout
