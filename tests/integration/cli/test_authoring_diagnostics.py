"""Rule authors get diagnostics that name the thing and the place and suggest the fix (issue 18)."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import yaml

from tests.integration.cli.events import RULES, deletion, event, line

Run = Callable[..., CompletedProcess[str]]

NO_SOURCE = """\
- rule: Pod Deleted Quietly
  desc: a pod was deleted
  condition: ka.verb = delete and ka.target.resource = pods
  output: pod deleted by %ka.user.name
  priority: WARNING
"""


def rule(name: str, condition: str, extra: str = "", priority: str = "WARNING") -> str:
    """One k8s_audit rule as YAML text."""
    return (f"- rule: {name}\n  desc: d\n  condition: {condition}\n  output: by %ka.user.name\n"
            f"  priority: {priority}\n  source: k8s_audit\n{extra}")


def write(tmp_path: Path, text: str, name: str = "my.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text)
    return path


def test_validate_names_each_rule_without_source(detector: Run, tmp_path: Path) -> None:
    """validate names the rule without `source` with its file:line and says how to fix it."""
    rules = write(tmp_path, NO_SOURCE)
    result = detector("validate", str(rules))
    assert f"{rules}:1:3 (Pod Deleted Quietly): warning W103: rule 'Pod Deleted Quietly' has no 'source'" \
        in result.stdout
    assert "add 'source: k8s_audit'" in result.stdout


def test_scan_prints_the_skipped_rule(detector: Run, tmp_path: Path) -> None:
    """scan says on stderr which rule is skipped for lacking a source, instead of nothing."""
    rules = write(tmp_path, NO_SOURCE)
    log = tmp_path / "audit.log"
    log.write_bytes(line(deletion(1)))
    result = detector("scan", "--rules", str(rules), str(log))
    assert result.returncode == 0, result.stderr
    assert "(Pod Deleted Quietly): warning W103" in result.stderr


def test_test_rule_says_the_rule_exists_but_is_skipped(detector: Run, tmp_path: Path) -> None:
    """test-rule says the tested rule is defined but skipped for lacking `source: k8s_audit`."""
    rules = write(tmp_path, NO_SOURCE)
    (tmp_path / "my.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "fires", "rule": "Pod Deleted Quietly", "events": [deletion(1)], "expect": {"fires": True}}]}))
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 1
    assert "rule 'Pod Deleted Quietly' is defined" in result.stdout
    assert "no 'source'" in result.stdout
    assert "no rule named" not in result.stdout


def test_list_compared_with_equals_is_an_error_quoting_the_condition(detector: Run, tmp_path: Path) -> None:
    """A two-item list after `=` is an error naming the list and suggesting `in (...)`, not expanded text."""
    rules = write(tmp_path, "- list: bots\n  items: [ci-bot@example.com, cd-bot@example.com]\n"
                  + rule("Bots", "ka.verb = delete and ka.user.name = bots"))
    result = detector("validate", str(rules))
    assert result.returncode == 1
    assert "list 'bots' (2 items) cannot be the value of '=' in 'ka.user.name = bots'" in result.stdout
    assert "write 'ka.user.name in (bots)'" in result.stdout
    assert "ci-bot@example.com" not in result.stdout


def test_one_item_list_compared_with_equals_warns(detector: Run, tmp_path: Path) -> None:
    """A one-item list after `=` validates, but with a warning that fails --strict."""
    rules = write(tmp_path, "- list: bots\n  items: [ci-bot@example.com]\n"
                  + rule("Bots", "ka.verb = delete and ka.user.name = bots"))
    result = detector("validate", "--strict", str(rules))
    assert result.returncode == 1
    assert "warning W112: list 'bots' is the value of '='" in result.stdout


def test_exception_key_typo_warns_with_suggestion(detector: Run, tmp_path: Path) -> None:
    """`value:` for `values:` in an exception is a warning with did-you-mean; --strict fails."""
    rules = write(tmp_path, rule("Deletes", "ka.verb = delete", "  exceptions:\n    - name: ci\n"
                                 "      fields: [ka.user.name]\n      value: [[ci-bot]]\n"))
    result = detector("validate", "--strict", str(rules))
    assert result.returncode == 1
    assert "exception 'ci': unknown key 'value'" in result.stdout
    assert "did you mean 'values'?" in result.stdout


def test_list_of_a_rule_that_failed_is_not_called_unused(detector: Run, tmp_path: Path) -> None:
    """A rule that fails to load does not make the list it uses look unused (W105)."""
    rules = write(tmp_path, "- list: bots\n  items: [a, b]\n"
                  + rule("Bots", "ka.user.name in (bots)", priority="WARNIN"))
    result = detector("validate", str(rules))
    assert "W105" not in result.stdout
    assert "E006" in result.stdout


def test_suggestions_for_field_macro_and_priority(detector: Run, tmp_path: Path) -> None:
    """Unknown fields and macros get did-you-mean; invalid priorities list the valid ones."""
    rules = write(tmp_path, "- macro: human_person\n  condition: ka.user.name exists\n"
                  + rule("Field", "ka.target.resoruce = pods and human_person")
                  + rule("Macro", "ka.verb = get and human_persno")
                  + rule("Priority", "ka.verb = get and human_person", priority="WARNIN"))
    result = detector("validate", str(rules))
    assert "unknown field 'ka.target.resoruce'; did you mean 'ka.target.resource'" in result.stdout
    assert "undefined macro 'human_persno' used in filter; did you mean 'human_person'?" in result.stdout
    assert "invalid priority 'WARNIN' (use one of: Emergency, Alert, Critical, Error, Warning" in result.stdout


def test_yaml_error_is_one_line_with_a_hint(detector: Run, tmp_path: Path) -> None:
    """An unquoted `: ` in a value and a tab give one line each, with the usual cause."""
    colon = write(tmp_path, "- rule: a\n  output: user: %ka.user.name\n", "colon.yaml")
    tab = write(tmp_path, "- rule: a\n\tcondition: x\n", "tab.yaml")
    for path, hint in ((colon, "a plain value cannot contain ': '"), (tab, "replace the tab by spaces")):
        result = detector("validate", str(path))
        lines = result.stdout.splitlines()
        assert len(lines) == 1, result.stdout
        assert lines[0].startswith(f"{path}:2:") and "E001" in lines[0] and hint in lines[0]


def test_unpaired_tests_file_is_an_error(detector: Run, tmp_path: Path) -> None:
    """`x.yaml.tests.yaml` does not pair with `x.yaml`: test-rule says what it expected, exits non-zero."""
    rules = write(tmp_path, RULES, "x.yaml")
    (tmp_path / "x.yaml.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "t", "rule": "Pod Deleted", "events": [deletion(1)], "expect": {"fires": True}}]}))
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode != 0
    assert "0 passed" not in result.stderr
    assert f"expected tests in {tmp_path / 'x.tests.yaml'}" in result.stderr
    assert "x.yaml.tests.yaml is not paired with the rules" in result.stderr


def test_empty_tests_file_is_an_error(detector: Run, tmp_path: Path) -> None:
    """A tests file with no tests is an error, not `0 passed, 0 failed`."""
    rules = write(tmp_path, RULES, "x.yaml")
    (tmp_path / "x.tests.yaml").write_text("tests: []\n")
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode != 0
    assert "no tests found" in result.stderr


def test_explain_names_macros(detector: Run, tmp_path: Path) -> None:
    """--explain shows each macro by name above its clauses."""
    rules = write(tmp_path, RULES)
    events = tmp_path / "e.json"
    events.write_bytes(line(deletion(1)))
    result = detector("test-rule", "--rules", str(rules), "--explain", "Pod Deleted", "--event", str(events))
    assert result.returncode == 0, result.stderr
    assert "[true ] macro completed" in result.stdout
    assert "  [true ] ka.stage = ResponseComplete" in result.stdout


def test_explain_suggests_rule_name_in_other_case(detector: Run, tmp_path: Path) -> None:
    """A rule name in another case gets did-you-mean."""
    rules = write(tmp_path, RULES)
    events = tmp_path / "e.json"
    events.write_bytes(line(deletion(1)))
    result = detector("test-rule", "--rules", str(rules), "--explain", "pod deleted", "--event", str(events))
    assert result.returncode == 2
    assert "did you mean 'Pod Deleted'?" in result.stderr


def test_event_without_explain_is_an_error(detector: Run, tmp_path: Path) -> None:
    """--event without --explain is refused, not ignored."""
    rules = write(tmp_path, RULES)
    result = detector("test-rule", "--rules", str(rules), "--event", str(tmp_path / "e.json"))
    assert result.returncode == 2
    assert "--event only feeds --explain" in result.stderr


def test_test_rule_prints_its_warnings(detector: Run, tmp_path: Path) -> None:
    """The warnings of the loaded rules are printed, not only counted."""
    rules = write(tmp_path, RULES + "  unknown_key: 1\n")
    (tmp_path / "my.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "t", "rule": "Pod Deleted", "events": [deletion(1)], "expect": {"fires": True}}]}))
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "warning W101: unknown key 'unknown_key'" in result.stderr


def test_tests_entry_without_expect_has_a_line(detector: Run, tmp_path: Path) -> None:
    """A test without `expect` is an error with the file and line of that test."""
    rules = write(tmp_path, RULES)
    (tmp_path / "my.tests.yaml").write_text("tests:\n  - name: first\n    rule: Pod Deleted\n"
                                            "    events: [deletion.json]\n")
    result = detector("test-rule", "--rules", str(rules))
    assert result.returncode == 2
    assert f"{tmp_path / 'my.tests.yaml'}:2 (first): test needs 'expect'" in result.stderr


def test_replay_shows_bad_line_reasons(detector: Run, tmp_path: Path) -> None:
    """--replay prints each bad line's reason and the counts per reason."""
    rules = write(tmp_path, RULES)
    log = tmp_path / "audit.log"
    log.write_bytes(line(event(1)) + b"{not json\n")
    result = detector("test-rule", "--rules", str(rules), "--replay", str(log))
    assert result.returncode == 0, result.stderr
    assert f"{log}:2" in result.stderr
    assert "bad lines: 1 (" in result.stdout


def test_shipped_macro_without_shipped_rules_says_where_it_lives(detector: Run, tmp_path: Path) -> None:
    """A shipped macro used without the shipped rules: the error names its file and the flag."""
    rules = write(tmp_path, rule("Human Deletes", "ka.verb = delete and human_user"))
    result = detector("validate", str(rules))
    assert result.returncode == 1
    assert "'human_user' is defined in the shipped rules (" in result.stdout
    assert "00-macros.yaml:" in result.stdout
    assert "--with-shipped-rules" in result.stdout


def test_with_shipped_rules_loads_them_first(detector: Run, tmp_path: Path) -> None:
    """--with-shipped-rules makes the shipped macros available to validate, scan and test-rule."""
    rules = write(tmp_path, rule("Human Deletes", "ka.verb = delete and human_user"))
    (tmp_path / "my.tests.yaml").write_text(yaml.safe_dump({"tests": [
        {"name": "t", "rule": "Human Deletes", "events": [deletion(1)], "expect": {"fires": True}}]}))
    assert detector("validate", "--with-shipped-rules", str(rules)).returncode == 0
    result = detector("test-rule", "--with-shipped-rules", "--rules", str(rules))
    assert result.returncode == 0, result.stdout + result.stderr
    assert "1 passed, 0 failed" in result.stderr
    log = tmp_path / "audit.log"
    log.write_bytes(line(deletion(1)))
    scanned = detector("scan", "--with-shipped-rules", "--rules", str(rules), str(log))
    assert scanned.returncode == 0, scanned.stderr
    assert '"rule":"Human Deletes"' in scanned.stdout


def test_run_logs_each_skipped_rule(detector: Run, tmp_path: Path) -> None:
    """`detector run` logs one `rules_skipped` line naming a rule without source."""
    rules = write(tmp_path, NO_SOURCE)
    result = detector("run", "--file", "-", "--rules", str(rules), "--state-dir", str(tmp_path / "state"),
                      stdin=b"")
    assert result.returncode == 0, result.stderr
    assert '"event": "rules_skipped"' in result.stderr
    assert '"rule": "Pod Deleted Quietly"' in result.stderr
