"""`detector validate` and `detector fields` as a rule author uses them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from tests.integration.cli.events import RULES

Run = Callable[..., CompletedProcess[str]]

BROKEN = """\
- macro: completed
  condition: ka.stage = ResponseComplete
- rule: Bad Syntax
  desc: d
  condition: completed and (ka.verb = get
  output: o
  priority: WARNING
  source: k8s_audit
- rule: Unknown Field
  desc: d
  condition: ka.nope = 1
  output: o
  priority: WARNING
  source: k8s_audit
- rule: No Priority
  desc: d
  condition: completed
  output: o
  source: k8s_audit
- rule: List Op
  desc: d
  condition: ka.user.groups contains admins
  output: o
  priority: loud
  source: k8s_audit
- rule: Bad Output
  desc: d
  condition: completed
  output: user=%ka.nosuchfield
  priority: NOTICE
  source: k8s_audit
- rule: Undefined Macro
  desc: d
  condition: not_defined_anywhere and completed
  output: o
  priority: NOTICE
  source: k8s_audit
"""


def test_validate_reports_every_error_with_location_and_code(detector: Run, tmp_path: Path) -> None:
    """One run lists all errors, each with file:line:column, the item's name and a stable code."""
    path = tmp_path / "broken.yaml"
    path.write_text(BROKEN)
    result = detector("validate", str(path))
    assert result.returncode == 1
    out = result.stdout
    assert f"{path}:5:3 (Bad Syntax): error E010" in out
    assert f"{path}:11:3 (Unknown Field): error E013" in out
    assert f"{path}:15:3 (No Priority): error E004" in out
    assert f"{path}:24:3 (List Op): error E006" in out
    assert f"{path}:29:3 (Bad Output): error E017" in out
    assert f"{path}:34:3 (Undefined Macro): error E011" in out
    assert "Traceback" not in result.stderr


def test_validate_list_field_operator_is_rejected(detector: Run, tmp_path: Path) -> None:
    """`contains` on a list field is refused as modern Falco does."""
    path = tmp_path / "listop.yaml"
    path.write_text("- rule: List Op\n  desc: d\n  condition: ka.user.groups contains admins\n  output: o\n"
                    "  priority: NOTICE\n  source: k8s_audit\n")
    result = detector("validate", str(path))
    assert result.returncode == 1
    assert "operator not supported list filters" in result.stdout


def test_validate_ok_and_strict_warnings(detector: Run, tmp_path: Path) -> None:
    """Clean rules pass; with --strict a warning (unknown key) fails."""
    good = tmp_path / "good.yaml"
    good.write_text(RULES)
    assert detector("validate", str(good)).returncode == 0
    warned = tmp_path / "warned.yaml"
    warned.write_text(RULES.replace("  tags: [k8s, test]", "  tags: [k8s, test]\n  colour: red"))
    loose = detector("validate", str(warned))
    strict = detector("validate", "--strict", str(warned))
    assert loose.returncode == 0 and "W101" in loose.stdout
    assert strict.returncode == 1


def test_validate_invalid_yaml_names_line(detector: Run, tmp_path: Path) -> None:
    """A YAML syntax error is reported with its line, not a traceback."""
    path = tmp_path / "yaml.yaml"
    path.write_text("- rule: x\n  desc: [unclosed\n")
    result = detector("validate", str(path))
    assert result.returncode == 1
    assert f"{path}:3" in result.stdout or f"{path}:2" in result.stdout
    assert "E001" in result.stdout


def test_shipped_rules_validate_cleanly(detector: Run) -> None:
    """The rules we ship load without errors or warnings."""
    result = detector("validate", "--strict", "rules")
    assert result.returncode == 0, result.stdout + result.stderr


def test_fields_lists_every_field_with_type(detector: Run) -> None:
    """`detector fields` prints ka.*, jevt.*, json.* and our extensions with types."""
    result = detector("fields")
    assert result.returncode == 0
    names = {line.split()[0] for line in result.stdout.splitlines()}
    for name in ("ka.verb", "ka.user.groups", "ka.req.pod.containers.privileged", "jevt.value", "json.value",
                 "jmes.value", "ka.client.ip", "ka.sourceip.last"):
        assert name in names
    assert "ipaddr" in next(x for x in result.stdout.splitlines() if x.startswith("ka.client.ip"))
    assert "list" in next(x for x in result.stdout.splitlines() if x.startswith("ka.user.groups"))


def test_usage_errors_exit_2(detector: Run) -> None:
    """Unknown commands and bad options exit 2 with a usage message."""
    result = detector("scan", "--rule-matching", "sometimes", "x.log")
    assert result.returncode == 2
    assert "usage" in result.stderr
    assert detector("frobnicate").returncode == 2
