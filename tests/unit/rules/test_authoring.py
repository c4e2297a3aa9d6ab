"""Help for rule authors: suggestions, YAML hints, lists used as values, exception syntax blamed
by name, and macro names in explanations (issue 18)."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.errors import Location
from detector.rules.ast import MacroRef
from detector.rules.diagnostics import Code, did_you_mean, suggestions
from detector.rules.explain import explain
from detector.rules.loader import check_rules
from detector.rules.yamlload import YamlError, line_tree, load_documents
from tests.unit.eventkit import make_event


def rule(name: str, condition: str, extra: str = "") -> str:
    """One k8s_audit rule as YAML text."""
    return (f"- rule: {name}\n  desc: d\n  condition: {condition}\n  output: o\n  priority: INFO\n"
            f"  source: k8s_audit\n{extra}")


def diagnostics(tmp_path: Path, text: str) -> list[tuple[Code, str, Location]]:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    _, found = check_rules([path])
    return [(d.code, d.message, d.location) for d in found]


def test_suggestions_find_misspellings_and_other_case() -> None:
    """Close names and names differing only in case are suggested; far ones are not."""
    assert suggestions("Pod deleted", ["Pod Deleted", "Secret Read"]) == ["Pod Deleted"]
    assert suggestions("human_usr", ["human_user", "system_user"])[0] == "human_user"
    assert did_you_mean("xyzzy", ["human_user"]) == ""


@pytest.mark.parametrize(("text", "hint"), [
    ("- rule: a\n  output: user: %ka.user.name\n", "a plain value cannot contain ': '"),
    ("- rule: a\n\tcondition: x\n", "replace the tab by spaces"),
    ("- rule: a\n  output: \"abc\n", "a quoted value is not closed"),
])
def test_yaml_errors_carry_a_hint(text: str, hint: str) -> None:
    """PyYAML's problem is followed by the usual cause."""
    with pytest.raises(YamlError) as caught:
        load_documents(text, "r.yaml")
    assert hint in caught.value.message
    assert "\n" not in caught.value.message


def test_line_tree_gives_the_line_of_each_entry() -> None:
    """line_tree mirrors a typed document with the line where each value starts."""
    tree = line_tree("tests:\n  - name: a\n  - name: b\n")
    assert tree is not None
    assert [item.line for item in tree.keys["tests"].items] == [2, 3]


def test_two_item_list_after_equals_is_an_error_naming_the_list(tmp_path: Path) -> None:
    """The error quotes the check as written and suggests `in (list)`; no expanded text."""
    found = diagnostics(tmp_path, "- list: bots\n  items: [a@x, b@x]\n" + rule("R", "ka.user.name = bots"))
    (code, message, where), = found
    assert code is Code.CONDITION_SYNTAX
    assert message == "list 'bots' (2 items) cannot be the value of '=' in 'ka.user.name = bots'; write " \
        "'ka.user.name in (bots)'"
    assert (where.line, where.item) == (5, "R")


def test_list_without_parentheses_gets_a_hint(tmp_path: Path) -> None:
    """`in bots` (a list name without parentheses) says to write `in (bots)`."""
    found = diagnostics(tmp_path, "- list: bots\n  items: [a, b]\n" + rule("R", "ka.user.name in bots"))
    assert any("write the list in parentheses: 'in (bots)'" in message for _, message, _ in found)


def test_bad_exception_values_are_blamed_on_the_exception(tmp_path: Path) -> None:
    """An exception whose values do not parse names the exception, not the combined text."""
    extra = ("  exceptions:\n    - name: odd\n      fields: [ka.user.name]\n      comps: [in]\n"
             "      values: [[\"a)\"]]\n")
    found = diagnostics(tmp_path, rule("R", "ka.verb = get", extra))
    assert [code for code, _, _ in found] == [Code.BAD_EXCEPTION]
    assert found[0][1].startswith("exception 'odd': its fields, comps and values do not make a valid condition")


def test_append_to_unknown_list_suggests_a_name(tmp_path: Path) -> None:
    """append/override naming a missing item suggests close names."""
    text = "- list: my_bots\n  items: [a]\n- list: my_bot\n  items: [b]\n  override:\n    items: append\n"
    found = diagnostics(tmp_path, text + rule("R", "ka.user.name in (my_bots)"))
    assert any(code is Code.NO_TARGET and "did you mean 'my_bots'?" in message for code, message, _ in found)


def test_explain_names_the_macros(tmp_path: Path) -> None:
    """With the rule's written condition and macros, each macro is a named node of the tree."""
    path = tmp_path / "rules.yaml"
    path.write_text("- macro: deleting\n  condition: ka.verb = delete\n" + rule("R", "deleting and ka.verb exists"))
    ruleset, _ = check_rules([path])
    compiled = ruleset.rule("R")
    assert compiled is not None and compiled.written_condition is not None
    lines = explain(compiled.written_condition, make_event(verb="delete"), None, compiled.macros)
    assert lines[:3] == ["[true ] and", "  [true ] macro deleting",
                         "    [true ] ka.verb = delete    <- ka.verb=delete"]
    assert explain(MacroRef("nowhere"), make_event(), None, {}) == ["[?] nowhere"]
