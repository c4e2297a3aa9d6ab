"""`detector test-rule` and `detector validate` with stateful rules, as a user runs them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import orjson

REPO = Path(__file__).resolve().parents[3]


def detector(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True, cwd=REPO,
                          check=False, timeout=120)


def test_the_shipped_stateful_rules_pass_their_tests_with_every_case() -> None:
    """Each shipped stateful rule has firing and near-miss tests, and they pass."""
    result = detector("test-rule", "--rules", "rules/", "--tests", "rules/stateful-rules.tests.yaml")
    assert result.returncode == 0, result.stdout + result.stderr
    assert "FAIL" not in result.stdout
    for rule in ("Forbidden Burst By User", "Audit Log Silence", "New Source IP For Human User"):
        assert f"PASS  {rule} ::" in result.stdout


def test_explain_shows_the_window_state_of_the_key_after_each_event(tmp_path: Path) -> None:
    """--explain on a stateful rule feeds the events in order and prints the key's window and the alert."""
    events = tmp_path / "events.jsonl"
    lines = []
    for n in range(3):
        lines.append(orjson.dumps({
            "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": f"e{n}", "stage": "ResponseComplete",
            "verb": "get", "user": {"username": "alice"}, "sourceIPs": ["203.0.113.9"],
            "objectRef": {"resource": "secrets", "namespace": f"ns{n}"}, "responseStatus": {"code": 200},
            "stageTimestamp": f"2026-11-22T10:0{n}:00.000000Z"}))
    events.write_bytes(b"\n".join(lines) + b"\n")
    rules = tmp_path / "rules.yaml"
    rules.write_text("""\
- rule: Spread
  desc: secrets in three namespaces
  condition: ka.target.resource = secrets
  output: "%ka.user.name read secrets in %agg.distinct namespaces %agg.values"
  priority: WARNING
  source: k8s_audit
  correlation: {type: distinct, group_by: [ka.user.name], field: ka.target.namespace, window: 10m, threshold: 3}
""")
    result = detector("test-rule", "--rules", str(rules), "--explain", "Spread", "--event", str(events))
    assert result.returncode == 0, result.stderr
    assert "window: key 'alice': 2 event(s) held" in result.stdout
    assert "value='ns1'" in result.stdout
    assert "ALERT: alice read secrets in 3 namespaces (ns0,ns1,ns2)" in result.stdout


def test_validate_reports_a_bad_block_at_its_line(tmp_path: Path) -> None:
    """A correlation block with a bad duration is E027 at the rule file's line, exit 1."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("""\
- rule: Spread
  desc: x
  condition: ka.target.resource = secrets
  output: x
  priority: WARNING
  source: k8s_audit
  correlation:
    type: count
    window: a while
    threshold: 3
""")
    result = detector("validate", str(rules))
    assert result.returncode == 1
    assert f"{rules}:9:" in result.stdout + result.stderr
    assert "E027" in result.stdout + result.stderr
