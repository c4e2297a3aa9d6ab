"""Patterns from rule authors run on values from attackers: regex and glob stay linear in the value."""

from __future__ import annotations

import time

import pytest
from hypothesis import given
from hypothesis import strategies as st

from detector.rules import operators
from detector.rules.diagnostics import Code
from tests.unit.rules.test_compiler import GLOB_TOKENS, compile_error, matches, named, ref_glob

LONG = 100_000


def quickly(condition: str, value: str) -> bool:
    """Evaluate `condition` on an event whose user name is `value`, failing past half a second."""
    event = named(value)
    started = time.monotonic()
    result = matches(condition, event)
    assert time.monotonic() - started < 0.5, f"{condition} took {time.monotonic() - started:.1f} s"
    return result


def test_nested_quantifier_regex_is_linear() -> None:
    """`(a+)+$` on 100,000 a's and a b answers at once (a backtracking engine needs ~3 s for 24 a's)."""
    assert quickly("ka.user.name regex '(a+)+$'", "a" * 24 + "b") is False
    assert quickly("ka.user.name regex '(a+)+$'", "a" * LONG + "b") is False
    assert quickly("ka.user.name regex '(a+)+$'", "a" * LONG) is True
    assert quickly("ka.user.name regex '(a|aa)*c'", "a" * LONG) is False


def test_many_star_glob_is_linear() -> None:
    """`*a*a*a*a*a*b` on 100,000 a's answers at once (a backtracking `.*a.*a...` needs ~3 s for 80 a's)."""
    assert quickly("ka.user.name glob '*a*a*a*a*a*b'", "a" * 80) is False
    assert quickly("ka.user.name glob '*a*a*a*a*a*b'", "a" * LONG) is False
    assert quickly("ka.user.name glob '*a*a*a*a*a*b'", "a" * LONG + "b") is True
    assert quickly("ka.user.name iglob '*A?A*[a]*B'", "a" * LONG + "b") is True
    assert quickly("ka.uri pmatch (/*a*a*a*b)", "a" * LONG) is False


@pytest.mark.parametrize("pattern", [r"(a)\\1", "(?=a)a", "(?!a)b", r"(?<=a)b", r"\\d+", r"\\w", "(?i)get",
                                     "a{1001}"])
def test_regex_outside_falco_re2_posix_syntax_is_refused(pattern: str) -> None:
    """Backreferences, lookarounds, Perl classes and flags are errors at load, as in Falco (RE2::POSIX)."""
    error = compile_error(f"ka.verb regex '{pattern}'")
    assert error.code is Code.BAD_OPERAND
    assert "invalid regular expression" in error.message and "RE2" in error.message


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [("[[:digit:]]+", "2024", True), ("[[:alpha:]]+", "get", True), ("g(e|x)t", "get", True),
     ("^get$", "get", True), ("é.", "éü", True), ("[0-9]{1,3}", "1000", False), ("a.b", "a\nb", False)],
)
def test_regex_keeps_re2_posix_semantics(pattern: str, value: str, expected: bool) -> None:
    """POSIX classes, alternation, anchors, UTF-8 and bounded repeats work; `.` does not match a newline."""
    assert operators.regex_test(pattern)(value) is expected


@given(st.lists(st.sampled_from(GLOB_TOKENS), max_size=8).map("".join), st.text(alphabet="ab/x*:", max_size=10))
def test_glob_matches_the_reference_fnmatch(pattern: str, value: str) -> None:
    """The piecewise glob agrees with a backtracking fnmatch(3) on patterns with many stars."""
    assert operators.glob_test(pattern, fold_case=False)(value) is ref_glob(pattern, value)
