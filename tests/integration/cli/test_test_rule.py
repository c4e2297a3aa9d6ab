"""`detector test-rule`: the rule author's loop, run as a subprocess."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import yaml

from tests.integration.cli.events import RULES, deletion, event, line

Run = Callable[..., CompletedProcess[str]]


def write_suite(tmp_path: Path, tests: list[dict[str, object]]) -> Path:
    rules = tmp_path / "pods.yaml"
    rules.write_text(RULES)
    (tmp_path / "pods.tests.yaml").write_text(yaml.safe_dump({"tests": tests}))
    return rules


def test_passing_tests_print_pass_with_rendered_alert(detector: Run, tmp_path: Path) -> None:
    """Tests beside the rules file run; PASS lines show the rendered alert; exit 0."""
    fixture = tmp_path / "deletion.json"
    fixture.write_bytes(line(deletion(1)))
    rules = write_suite(tmp_path, [
        {"name": "delete fires", "rule": "Pod Deleted", "events": ["deletion.json"],
         "expect": {"fires": True, "count": 1, "output_contains": ["deleted by alice@example.com"]}},
        {"name": "get does not", "rule": "Pod Deleted", "events": [event(2)], "expect": {"fires": False}},
    ])
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  Pod Deleted :: delete fires" in result.stdout
    assert "alert: pod default/web-1 deleted by alice@example.com from 10.0.0.7" in result.stdout
    assert "PASS  Pod Deleted :: get does not" in result.stdout
    assert "2 passed, 0 failed" in result.stderr


def test_failing_test_exits_1_and_says_why(detector: Run, tmp_path: Path) -> None:
    """A wrong expectation prints FAIL with the reason and the test's location; exit 1."""
    rules = write_suite(tmp_path, [
        {"name": "wrong", "rule": "Pod Deleted", "events": [event(1)], "expect": {"fires": True}},
        {"name": "miscounted", "rule": "Pod Deleted", "events": [deletion(2), deletion(3)],
         "expect": {"fires": True, "count": 1}},
    ])
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 1
    assert "FAIL  Pod Deleted :: wrong" in result.stdout
    assert "expected the rule to fire, it did not" in result.stdout
    assert "expected 1 alert(s), got 2" in result.stdout
    assert "pods.tests.yaml" in result.stdout


def test_require_cases_needs_positive_and_negative(detector: Run, tmp_path: Path) -> None:
    """--require-cases fails a rule that only has a positive test."""
    rules = write_suite(tmp_path, [
        {"name": "fires", "rule": "Pod Deleted", "events": [deletion(1)], "expect": {"fires": True}},
    ])
    assert detector("test-rule", "--rules", str(rules)).returncode == 0
    result = detector("test-rule", "--require-cases", "--rules", str(rules))
    assert result.returncode == 1
    assert "Pod Deleted :: has no negative (fires: false) test" in result.stdout


def test_tests_inside_the_rule(detector: Run, tmp_path: Path) -> None:
    """A `tests:` key on a rule is run too, with the rule implied."""
    rules = tmp_path / "inline.yaml"
    inline = yaml.safe_dump([{"tests": [{"name": "inline fires", "events": [deletion(1)],
                                         "expect": {"fires": True}}]}])
    rules.write_text(RULES + inline.replace("- tests:", "  tests:", 1))
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "PASS  Pod Deleted :: inline fires" in result.stdout


def test_explain_shows_each_clause_value(detector: Run, tmp_path: Path) -> None:
    """--explain prints the expanded condition with the truth value and field value of each clause."""
    rules = tmp_path / "pods.yaml"
    rules.write_text(RULES)
    events = tmp_path / "events.json"
    events.write_bytes(line(event(1)) + line(deletion(2)))
    result = detector("test-rule", "--rules", str(rules), "--explain", "Pod Deleted", "--event", str(events))
    assert result.returncode == 0, result.stderr
    first, second = result.stdout.split("(event 2)")
    assert "no match" in first
    assert "[false] ka.verb in (delete, deletecollection)    <- ka.verb=get" in first
    assert "[true ] ka.stage = ResponseComplete" in first
    assert "MATCH" in second and "output: pod default/web-1 deleted" in second


def test_replay_counts_alerts_per_rule(detector: Run, tmp_path: Path) -> None:
    """--replay runs a log and prints counts per rule."""
    rules = tmp_path / "pods.yaml"
    rules.write_text(RULES)
    log = tmp_path / "audit.log"
    log.write_bytes(b"".join(line(deletion(n)) for n in range(5)) + line(event(9)) + b"garbage\n")
    result = detector("test-rule", "--rules", str(rules), "--replay", str(log))
    assert result.returncode == 0
    assert "events: 6  bad lines: 1 (invalid_json=1)  alerts: 5" in result.stdout
    assert f"{log}:7: invalid_json" in result.stderr
    assert "       5  Pod Deleted" in result.stdout


def test_unknown_rule_and_bad_fixture_are_clear_errors(detector: Run, tmp_path: Path) -> None:
    """A test naming a missing rule or a missing fixture fails with a message, not a traceback."""
    rules = write_suite(tmp_path, [
        {"name": "ghost", "rule": "No Such Rule", "events": [deletion(1)], "expect": {"fires": True}},
        {"name": "lost", "rule": "Pod Deleted", "events": ["missing.json"], "expect": {"fires": True}},
    ])
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 1
    assert "no rule named 'No Such Rule'" in result.stdout
    assert "cannot load events" in result.stdout and "missing.json" in result.stdout
    assert "Traceback" not in result.stderr

