"""`detector validate` on hostile rules files: bounded time and memory, one line naming file:line."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

from tests.unit.rules.test_yamlload import alias_bomb

Run = Callable[..., CompletedProcess[str]]


def error_lines(result: CompletedProcess[str]) -> list[str]:
    return [line for line in (result.stdout + result.stderr).splitlines() if ": error " in line]


def test_validate_refuses_an_alias_bomb_quickly(detector: Run, tmp_path: Path) -> None:
    """A 600-byte alias bomb is one E026 line at the alias's file:line, exit 1, within seconds."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    assert len(path.read_bytes()) < 700
    result = detector("validate", str(path), timeout=20)
    assert result.returncode == 1
    assert error_lines(result) == [
        f"{path}:10:15: error E026: alias *a3 expands the file past 10,000 nodes added by aliases; not loaded"]


def test_validate_refuses_a_backreference_naming_the_rule(detector: Run, tmp_path: Path) -> None:
    """A regex RE2 cannot run in linear time (a backreference) is an E016 line at file:line (rule)."""
    path = tmp_path / "rules.yaml"
    path.write_text("- rule: Repeated Word\n  desc: d\n  condition: ka.user.name regex '(a+)\\\\1'\n"
                    "  output: o\n  priority: WARNING\n  source: k8s_audit\n")
    result = detector("validate", str(path), timeout=20)
    assert result.returncode == 1
    [line] = error_lines(result)
    assert line.startswith(f"{path}:3:3 (Repeated Word): error E016: invalid regular expression '(a+)\\\\1': "
                           "invalid escape sequence: \\1 (regex is RE2")
