"""Bounded YAML loading: aliases, recursion and file sizes, for rules, tests, config and policy files."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from detector.config import load_config
from detector.errors import ConfigError, RuleLoadError
from detector.policy.audit import load_policy
from detector.rules.diagnostics import Code
from detector.rules.loader import check_rules
from detector.rules.yamlload import (
    MAX_ALIAS_NODES,
    MAX_RULES_FILE_BYTES,
    YamlError,
    YamlLimitError,
    check_aliases,
    load_documents,
    load_typed,
)
from detector.ruletest.spec import load_test_file


def alias_bomb(levels: int = 9, width: int = 9) -> str:
    """Nested `&a`/`*a` lists (~600 bytes): width**levels strings once expanded."""
    lines = ["- list: a0", "  items: &a0 [" + ", ".join(["x"] * width) + "]"]
    for level in range(1, levels + 1):
        lines += [f"- list: a{level}", f"  items: &a{level} [" + ", ".join([f"*a{level - 1}"] * width) + "]"]
    return "\n".join(lines) + "\n"


def test_alias_bomb_is_refused_at_the_alias_that_crosses_the_bound(tmp_path: Path) -> None:
    """A billion-laughs rules file is an E026 error at the alias's line, found in well under a second."""
    path = tmp_path / "bomb.yaml"
    path.write_text(alias_bomb())
    started = time.monotonic()
    _, diagnostics = check_rules([path])
    assert time.monotonic() - started < 2
    [error] = [d for d in diagnostics if d.is_error]
    assert error.code is Code.TOO_LARGE
    # a3 is 9**3 = 729 nodes + 1: the 14th *a3 (line 10) takes the added nodes past 10,000.
    assert (error.location.path, error.location.line) == (str(path), 10)
    assert "alias *a3" in error.message and "10,000" in error.message


def test_recursive_alias_is_refused() -> None:
    """An alias inside the value it names (a cyclic structure) is refused, not expanded forever."""
    with pytest.raises(YamlLimitError) as caught:
        load_documents("- list: l\n  items: &a [x, *a]\n", "r.yaml")
    assert caught.value.location is not None and caught.value.location.line == 2
    assert "recursive" in caught.value.message


def test_aliases_within_the_bound_load_as_copies() -> None:
    """Sharing a value by alias still works, up to MAX_ALIAS_NODES added nodes."""
    text = "- a: &shared [x, y]\n- b: *shared\n"
    [document] = load_documents(text, "r.yaml")
    assert document == [{"a": ["x", "y"]}, {"b": ["x", "y"]}]
    assert document[0]["a"] is not document[1]["b"]
    width = MAX_ALIAS_NODES // 2
    check_aliases("a: &a [" + ", ".join(["x"] * (width - 1)) + "]\nb: *a\n", "r.yaml")
    with pytest.raises(YamlLimitError):
        check_aliases("a: &a [" + ", ".join(["x"] * width) + "]\nb: *a\nc: *a\n", "r.yaml")


def test_undefined_alias_is_invalid_yaml() -> None:
    """An alias without its anchor stays a plain YAML error with its line."""
    with pytest.raises(YamlError) as caught:
        load_documents("a: &x 1\nb: *nope\n", "r.yaml")
    assert not isinstance(caught.value, YamlLimitError)
    assert caught.value.location is not None and caught.value.location.line == 2


def test_rules_file_over_the_size_cap_is_refused_unread(tmp_path: Path) -> None:
    """A rules file past MAX_RULES_FILE_BYTES is one E026 error naming the file; nothing is parsed."""
    path = tmp_path / "big.yaml"
    path.write_bytes(b"# " + b"x" * MAX_RULES_FILE_BYTES + b"\n")
    _, diagnostics = check_rules([path])
    [error] = [d for d in diagnostics if d.is_error]
    assert error.code is Code.TOO_LARGE and error.location.path == str(path)
    assert "2 MiB" in error.message


def test_typed_loader_keeps_types_and_reads_a_bare_equals_sign() -> None:
    """Config and tests files keep YAML types; Falco's `comps: [=]` is the string '=' there too."""
    assert load_typed("a: [=, in]\nn: 3\nb: true\nf: 1.5\nz: null\n", "t.yaml") == {
        "a": ["=", "in"], "n": 3, "b": True, "f": 1.5, "z": None}


def test_config_alias_bomb_is_a_config_error_at_its_line(tmp_path: Path) -> None:
    """load_config refuses an alias bomb with file:line instead of building it."""
    path = tmp_path / "config.yaml"
    path.write_text("outputs:\n" + "".join("  " + line + "\n" for line in alias_bomb().splitlines()))
    with pytest.raises(ConfigError) as caught:
        load_config(str(path))
    assert str(caught.value).startswith(f"{path}:11:")  # the bomb's line 10, under `outputs:`


def test_tests_file_alias_bomb_is_a_load_error_at_its_line(tmp_path: Path) -> None:
    """A *.tests.yaml alias bomb is a RuleLoadError with file:line."""
    path = tmp_path / "x.tests.yaml"
    path.write_text(alias_bomb())
    with pytest.raises(RuleLoadError) as caught:
        load_test_file(path)
    assert str(caught.value).startswith(f"{path}:10:")


def test_audit_policy_alias_bomb_is_a_config_error(tmp_path: Path) -> None:
    """The audit policy reader shares the bound."""
    path = tmp_path / "policy.yaml"
    path.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n" + alias_bomb())
    with pytest.raises(ConfigError) as caught:
        load_policy(str(path))
    assert "alias *a3" in str(caught.value)
