"""Small rules files that expand exponentially (macros, lists, nots) are refused quickly, at file:line."""

from __future__ import annotations

import time
from pathlib import Path

from detector.rules.diagnostics import Code
from detector.rules.loader import check_rules

RULE = "- rule: R\n  desc: d\n  condition: {}\n  output: o\n  priority: WARNING\n  source: k8s_audit\n"


def only_error(tmp_path: Path, text: str) -> tuple[Code, int | None, str]:
    """Load `text` as a rules file within two seconds; its one error's code, line and message."""
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    started = time.monotonic()
    _, diagnostics = check_rules([path])
    assert time.monotonic() - started < 2
    [error] = [d for d in diagnostics if d.is_error]
    return error.code, error.location.line, error.message


def test_macro_doubling_chain_is_refused_before_expansion(tmp_path: Path) -> None:
    """m30 = m29 or m29 ... is 2**31 nodes: refused by measuring, not by expanding."""
    macros = "- macro: m0\n  condition: ka.verb = get\n" + "".join(
        f"- macro: m{i}\n  condition: m{i - 1} or m{i - 1}\n" for i in range(1, 31))
    code, line, message = only_error(tmp_path, macros + RULE.format("m30"))
    assert (code, line) == (Code.TOO_LARGE, 65)
    assert "2,147,483,647 checks" in message


def test_lists_naming_later_lists_are_refused(tmp_path: Path) -> None:
    """Textual list substitution of l0 -> 10 x l1 -> ... stops at the condition length bound."""
    lists = "".join(f"- list: l{i}\n  items: [" + ", ".join([f"l{i + 1}"] * 10) + "]\n" for i in range(12))
    code, line, message = only_error(tmp_path, lists + "- list: l12\n  items: [x]\n" + RULE.format("ka.verb in (l0)"))
    assert (code, line) == (Code.TOO_LARGE, 29)
    assert "makes it longer than 1,048,576 characters" in message


def test_many_nots_are_nested_too_deeply(tmp_path: Path) -> None:
    """50,000 `not`s count as nesting: a syntax error, not a RecursionError traceback."""
    code, _, message = only_error(tmp_path, RULE.format("'" + "not " * 50_000 + "ka.verb = get'"))
    assert code is Code.CONDITION_SYNTAX and "nested too deeply" in message


def test_condition_with_too_many_checks_is_refused(tmp_path: Path) -> None:
    """A condition of 30,000 checks is refused while parsing."""
    code, _, message = only_error(tmp_path, RULE.format("'" + " and ".join(["ka.verb = get"] * 30_000) + "'"))
    assert code is Code.TOO_LARGE and "more than 20,000 checks" in message


def test_macro_chain_deeper_than_the_bound_is_refused(tmp_path: Path) -> None:
    """3,000 macros each using the one before nest past MAX_RULE_DEPTH: refused, no RecursionError."""
    macros = "- macro: m0\n  condition: ka.verb = get\n" + "".join(
        f"- macro: m{i}\n  condition: not m{i - 1}\n" for i in range(1, 3000))
    code, _, message = only_error(tmp_path, macros + RULE.format("m2999"))
    assert code is Code.TOO_LARGE and "3,000 deep" in message
