"""Loading rules files (format.md): items, merging, expansion, exceptions, diagnostics, outputs."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest

from detector.errors import Location, RuleLoadError
from detector.event import AuditEvent
from detector.rules.diagnostics import Code, Diagnostic
from detector.rules.loader import LoadOptions, check_rules, load_rules
from detector.rules.model import ExceptionInfo, ListInfo, Priority
from detector.rules.resolve import exception_condition, expand_lists, substitute_lists
from detector.rules.ruleset import RuleMatching, Ruleset
from tests.unit.eventkit import make_event

HEADER = "- required_engine_version: 15\n"


def y(text: str) -> str:
    """An indented triple-quoted YAML block, dedented (so blocks and rule() texts concatenate)."""
    return textwrap.dedent(text).lstrip("\n")


def write(tmp_path: Path, text: str, name: str = "rules.yaml") -> Path:
    """Write a rules file and return its path."""
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


def load(tmp_path: Path, text: str, options: LoadOptions | None = None) -> tuple[Ruleset, list[Diagnostic]]:
    """check_rules on one file holding `text`."""
    return check_rules([write(tmp_path, text)], options)


def rule(name: str, condition: str, priority: str = "WARNING", output: str = "out", extra: str = "") -> str:
    """A k8s_audit rule item as YAML text (`extra` holds further indented keys)."""
    text = (f"- rule: {name}\n  desc: {name} desc\n  condition: {condition}\n  output: {output}\n"
            f"  priority: {priority}\n  source: k8s_audit\n")
    return text + textwrap.indent(textwrap.dedent(extra).strip("\n"), "  ") + ("\n" if extra else "")


def codes(diagnostics: list[Diagnostic]) -> list[Code]:
    """The codes of `diagnostics`, in order."""
    return [d.code for d in diagnostics]


def errors(diagnostics: list[Diagnostic]) -> list[Diagnostic]:
    """Only the errors."""
    return [d for d in diagnostics if d.is_error]


def fired(ruleset: Ruleset, event: AuditEvent) -> list[str]:
    """Names of the rules that match `event`."""
    return [m.rule for m in ruleset.evaluate(event)]


def only(diagnostics: list[Diagnostic], code: Code) -> Diagnostic:
    """The single diagnostic with `code`."""
    found = [d for d in diagnostics if d.code is code]
    assert len(found) == 1, diagnostics
    return found[0]


# -- lists, macros, rules -------------------------------------------------------------------


def test_list_macro_and_rule_work_together(tmp_path: Path) -> None:
    """A rule using a macro that uses a list matches exactly the listed verbs."""
    ruleset, diagnostics = load(tmp_path, HEADER + y("""
        - list: write_verbs
          items: [create, update]
        - macro: writes
          condition: ka.verb in (write_verbs)
        """) + rule("Writes", "writes"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="create")) == ["Writes"]
    assert fired(ruleset, make_event(verb="get")) == []


def test_rule_redefinition_keeps_its_position(tmp_path: Path) -> None:
    """Redefining a rule replaces it but keeps its original evaluation position."""
    ruleset, diagnostics = load(tmp_path, rule("A", "ka.verb = get") + rule("B", "ka.verb = create")
                                + rule("A", "ka.verb = create", priority="ERROR"))
    assert errors(diagnostics) == []
    assert [r.name for r in ruleset.rules] == ["A", "B"]
    assert ruleset.rules[0].priority is Priority.ERROR
    assert fired(ruleset, make_event(verb="create")) == ["A", "B"]
    assert fired(ruleset, make_event(verb="get")) == []


def test_list_redefinition_replaces_items(tmp_path: Path) -> None:
    """A plain redefinition of a list replaces its items."""
    ruleset, _ = load(tmp_path, y("""
        - list: verbs
          items: [get]
        - list: verbs
          items: [create]
        """) + rule("R", "ka.verb in (verbs)"))
    assert fired(ruleset, make_event(verb="create")) == ["R"]
    assert fired(ruleset, make_event(verb="get")) == []


@pytest.mark.parametrize("how", ["append: true", "override:\n    items: append"])
def test_list_append(tmp_path: Path, how: str) -> None:
    """`append: true` and `override: {items: append}` both add items, even after the rule."""
    ruleset, diagnostics = load(tmp_path, y("""
        - list: verbs
          items: [get]
        """) + rule("R", "ka.verb in (verbs)") + f"""
- list: verbs
  items: [create]
  {how}
""")
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="create")) == ["R"]
    assert fired(ruleset, make_event(verb="get")) == ["R"]
    assert (Code.DEPRECATED in codes(diagnostics)) is how.startswith("append")


def test_list_override_replace_redefines(tmp_path: Path) -> None:
    """`override: {items: replace}` is a plain redefinition."""
    ruleset, diagnostics = load(tmp_path, y("""
        - list: verbs
          items: [get]
        - list: verbs
          items: [create]
          override:
            items: replace
        """) + rule("R", "ka.verb in (verbs)"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get")) == []


def test_list_append_without_definition_is_an_error(tmp_path: Path) -> None:
    """Appending to an unknown list is NO_TARGET."""
    _, diagnostics = load(tmp_path, y("""
        - list: nothing
          items: [a]
          append: true
        """))
    assert Code.NO_TARGET in codes(errors(diagnostics))


def test_list_append_and_override_together_is_an_error(tmp_path: Path) -> None:
    """`override` with `append: true` is BAD_OVERRIDE."""
    _, diagnostics = load(tmp_path, y("""
        - list: l
          items: [a]
        - list: l
          items: [b]
          append: true
          override:
            items: append
        """))
    assert only(diagnostics, Code.BAD_OVERRIDE).location.line == 6  # the `override` key


def test_macro_append_concatenates_text(tmp_path: Path) -> None:
    """Macro append is text concatenation: `a or b` + `and c` means `a or (b and c)`."""
    ruleset, diagnostics = load(tmp_path, y("""
        - macro: m
          condition: ka.verb = get or ka.verb = list
        - macro: m
          condition: and ka.user.name = alice
          append: true
        """) + rule("R", "m"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get", user={"username": "bob"})) == ["R"]
    assert fired(ruleset, make_event(verb="list", user={"username": "bob"})) == []
    assert fired(ruleset, make_event(verb="list", user={"username": "alice"})) == ["R"]


def test_macro_override_replace(tmp_path: Path) -> None:
    """`override: {condition: replace}` swaps the macro's condition."""
    ruleset, diagnostics = load(tmp_path, y("""
        - macro: m
          condition: ka.verb = get
        - macro: m
          condition: ka.verb = delete
          override:
            condition: replace
        """) + rule("R", "m"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="delete")) == ["R"]
    assert fired(ruleset, make_event(verb="get")) == []


def test_macro_override_append(tmp_path: Path) -> None:
    """`override: {condition: append}` concatenates like `append: true`."""
    ruleset, _ = load(tmp_path, y("""
        - macro: m
          condition: ka.verb = get
        - macro: m
          condition: or ka.verb = delete
          override:
            condition: append
        """) + rule("R", "m"))
    assert fired(ruleset, make_event(verb="delete")) == ["R"]


# -- rule override / append / enabled -------------------------------------------------------


def loaded_rule(tmp_path: Path, update: str) -> tuple[Ruleset, list[Diagnostic]]:
    """Rule R (verb get, tags [a], one exception) followed by the `update` item."""
    base = rule("R", "ka.verb = get", output="verb=%ka.verb", extra="""
        tags: [a]
        exceptions:
          - name: users
            fields: [ka.user.name]
            values: [[bob]]
        """)
    return load(tmp_path, base + textwrap.dedent(update))


def test_override_append_condition(tmp_path: Path) -> None:
    """Appending `and ...` to a rule condition narrows it."""
    ruleset, diagnostics = loaded_rule(tmp_path, y("""
        - rule: R
          condition: and ka.target.namespace = prod
          override:
            condition: append
        """))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get", objectRef={"resource": "pods", "namespace": "prod"})) == ["R"]
    assert fired(ruleset, make_event(verb="get")) == []


def test_override_append_output_desc_tags(tmp_path: Path) -> None:
    """Output and desc get a space and the new text; tags are a set union."""
    ruleset, diagnostics = loaded_rule(tmp_path, y("""
        - rule: R
          output: user=%ka.user.name
          desc: more
          tags: [b, a]
          override:
            output: append
            desc: append
            tags: append
        """))
    assert errors(diagnostics) == []
    compiled = ruleset.rules[0]
    assert compiled.desc == "R desc more"
    assert compiled.tags == ("a", "b")
    assert ruleset.evaluate(make_event(verb="get"))[0].output == "verb=get user=alice"


def test_override_append_exceptions_adds_values_and_new_exceptions(tmp_path: Path) -> None:
    """Appending exceptions adds values to an existing one and adds new ones."""
    ruleset, diagnostics = loaded_rule(tmp_path, y("""
        - rule: R
          exceptions:
            - name: users
              values: [[carol]]
            - name: namespaces
              fields: ka.target.namespace
              values: [kube-system]
          override:
            exceptions: append
        """))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get", user={"username": "carol"})) == []
    assert fired(ruleset, make_event(verb="get", user={"username": "bob"})) == []
    assert fired(ruleset, make_event(verb="get", objectRef={"namespace": "kube-system"})) == []
    assert fired(ruleset, make_event(verb="get")) == ["R"]


def test_appending_fields_to_an_existing_exception_is_an_error(tmp_path: Path) -> None:
    """Only values may be appended to an existing exception."""
    _, diagnostics = loaded_rule(tmp_path, y("""
        - rule: R
          exceptions:
            - name: users
              fields: [ka.user.name]
              values: [[carol]]
          override:
            exceptions: append
        """))
    assert Code.BAD_EXCEPTION in codes(errors(diagnostics))


@pytest.mark.parametrize(
    ("key", "value"),
    [("condition", "ka.verb = delete"), ("output", "new=%ka.verb"), ("desc", "new desc"), ("tags", "[z]"),
     ("priority", "CRITICAL"), ("enabled", "false"), ("exceptions", "[]")],
)
def test_override_replace(tmp_path: Path, key: str, value: str) -> None:
    """Every replaceable key can be replaced by an override item."""
    ruleset, diagnostics = loaded_rule(tmp_path, y(f"""
        - rule: R
          {key}: {value}
          override:
            {key}: replace
        """))
    assert errors(diagnostics) == []
    compiled = ruleset.rules[0]
    delete, bob = make_event(verb="delete"), make_event(verb="get", user={"username": "bob"})
    expected = {
        "condition": lambda: fired(ruleset, delete) == ["R"],
        "output": lambda: ruleset.evaluate(make_event(verb="get"))[0].output == "new=get",
        "desc": lambda: compiled.desc == "new desc",
        "tags": lambda: compiled.tags == ("z",),
        "priority": lambda: compiled.priority is Priority.CRITICAL,
        "enabled": lambda: compiled.enabled is False and fired(ruleset, make_event(verb="get")) == [],
        "exceptions": lambda: fired(ruleset, bob) == ["R"],
    }[key]
    assert expected()


def test_override_can_mix_append_and_replace(tmp_path: Path) -> None:
    """One override item may append some keys and replace others."""
    ruleset, diagnostics = loaded_rule(tmp_path, y("""
        - rule: R
          condition: or ka.verb = list
          priority: ERROR
          override:
            condition: append
            priority: replace
        """))
    assert errors(diagnostics) == []
    assert ruleset.rules[0].priority is Priority.ERROR
    assert fired(ruleset, make_event(verb="list")) == ["R"]


@pytest.mark.parametrize(
    ("update", "words"),
    [
        ("- rule: R\n  override:\n    condition: append\n", "condition"),
        ("- rule: R\n  priority: ERROR\n  override:\n    priority: append\n", "cannot be appended"),
        ("- rule: R\n  condition: and x\n  override:\n    condition: merge\n", "invalid override operation"),
        ("- rule: R\n  condition: and ka.verb = get\n  priority: ERROR\n  override:\n    condition: append\n",
         "unexpected key 'priority'"),
        ("- rule: R\n  condition: and ka.verb = get\n  append: true\n  override:\n    condition: append\n",
         "cannot be used together"),
    ],
)
def test_invalid_override_items(tmp_path: Path, update: str, words: str) -> None:
    """Bad override items are BAD_OVERRIDE errors at the item's override key."""
    _, diagnostics = loaded_rule(tmp_path, update)
    error = only(diagnostics, Code.BAD_OVERRIDE)
    assert words in error.message
    assert error.location.path.endswith("rules.yaml")
    assert error.location.line is not None and error.location.line > 12


def test_override_of_unknown_rule_is_an_error(tmp_path: Path) -> None:
    """An override naming no existing rule is NO_TARGET."""
    _, diagnostics = load(tmp_path, y("""
        - rule: Ghost
          enabled: false
          override:
            enabled: replace
        """))
    assert "no rule by that name" in only(diagnostics, Code.NO_TARGET).message


def test_enabled_only_item_disables_a_rule(tmp_path: Path) -> None:
    """An item with only `enabled` toggles an existing rule (deprecated)."""
    ruleset, diagnostics = loaded_rule(tmp_path, "- rule: R\n  enabled: false\n")
    assert errors(diagnostics) == []
    assert Code.DEPRECATED in codes(diagnostics)
    assert ruleset.rules[0].enabled is False
    assert fired(ruleset, make_event(verb="get")) == []


def test_enabled_only_item_for_unknown_rule_is_an_error(tmp_path: Path) -> None:
    """`enabled` on a rule that does not exist is NO_TARGET."""
    _, diagnostics = load(tmp_path, "- rule: Ghost\n  enabled: false\n")
    assert Code.NO_TARGET in codes(errors(diagnostics))


def test_legacy_rule_append_condition_and_exceptions(tmp_path: Path) -> None:
    """`append: true` on a rule appends its condition and merges exceptions."""
    ruleset, diagnostics = loaded_rule(tmp_path, y("""
        - rule: R
          condition: or ka.verb = list
          exceptions:
            - name: users
              values: [[carol]]
          append: true
        """))
    assert errors(diagnostics) == []
    assert Code.DEPRECATED in codes(diagnostics)
    assert fired(ruleset, make_event(verb="list")) == ["R"]
    assert fired(ruleset, make_event(verb="list", user={"username": "carol"})) == []


def test_legacy_rule_append_needs_condition_or_exceptions(tmp_path: Path) -> None:
    """An appended rule with neither condition nor exceptions is an error."""
    _, diagnostics = loaded_rule(tmp_path, "- rule: R\n  output: x\n  append: true\n")
    assert "exceptions or condition" in only(diagnostics, Code.BAD_OVERRIDE).message


def test_redefinition_with_another_source_is_an_error(tmp_path: Path) -> None:
    """A rule redefined with a different explicit source is SOURCE_CHANGED."""
    text = rule("R", "ka.verb = get") + rule("R", "ka.verb = get").replace("k8s_audit", "syscall")
    _, diagnostics = load(tmp_path, text)
    assert Code.SOURCE_CHANGED in codes(diagnostics)


# -- errors with codes and locations --------------------------------------------------------


def test_missing_priority_is_reported_at_the_item(tmp_path: Path) -> None:
    """A rule without priority is MISSING_KEY at the line of its item."""
    _, diagnostics = load(tmp_path, HEADER + y("""
        - rule: No priority
          desc: d
          condition: ka.verb = get
          output: o
          source: k8s_audit
        """))
    error = only(diagnostics, Code.MISSING_KEY)
    assert "priority" in error.message
    assert (error.location.line, error.location.item) == (2, "No priority")
    assert str(error).startswith(f"{tmp_path / 'rules.yaml'}:2:")


@pytest.mark.parametrize("key", ["condition", "output", "desc"])
def test_empty_required_key_is_reported_at_the_key(tmp_path: Path, key: str) -> None:
    """An empty condition/output/desc is MISSING_KEY at the key's own line."""
    text = rule("R", "ka.verb = get").replace(f"  {key}: ", f"  {key}: ''\n  x_{key}: ")
    _, diagnostics = load(tmp_path, text)
    error = only(diagnostics, Code.MISSING_KEY)
    line = next(n for n, t in enumerate(text.splitlines(), start=1) if t.startswith(f"  {key}:"))
    assert error.location.line == line


def test_invalid_priority(tmp_path: Path) -> None:
    """An unknown priority word is INVALID_PRIORITY at the priority line."""
    _, diagnostics = load(tmp_path, rule("R", "ka.verb = get", priority="LOUD"))
    assert only(diagnostics, Code.INVALID_PRIORITY).location.line == 5


@pytest.mark.parametrize(("word", "priority"), [("info", Priority.INFORMATIONAL), ("Critical", Priority.CRITICAL),
                                                ("debug", Priority.DEBUG), ("EMERGENCY", Priority.EMERGENCY)])
def test_priorities_are_case_insensitive(tmp_path: Path, word: str, priority: Priority) -> None:
    """Priorities are matched case-insensitively; `info` means informational."""
    ruleset, diagnostics = load(tmp_path, rule("R", "ka.verb = get", priority=word))
    assert errors(diagnostics) == []
    assert ruleset.rules[0].priority is priority


def test_syntax_error_names_the_rule_and_column(tmp_path: Path) -> None:
    """A condition that does not parse is CONDITION_SYNTAX at the condition line, with its column."""
    _, diagnostics = load(tmp_path, rule("R", "ka.verb = get and ("))
    error = only(diagnostics, Code.CONDITION_SYNTAX)
    assert (error.location.line, error.location.item) == (3, "R")
    assert "column" in error.message


def test_unknown_field_in_condition(tmp_path: Path) -> None:
    """An unknown field is UNKNOWN_FIELD."""
    _, diagnostics = load(tmp_path, rule("R", "ka.nope = get"))
    assert "ka.nope" in only(diagnostics, Code.UNKNOWN_FIELD).message


def test_load_rules_raises_with_every_error(tmp_path: Path) -> None:
    """load_rules raises RuleLoadError carrying all error diagnostics."""
    path = write(tmp_path, rule("A", "ka.nope = 1") + rule("B", "ka.verb = get", priority="LOUD"))
    with pytest.raises(RuleLoadError) as caught:
        load_rules([path])
    assert "and 1 more errors" in caught.value.message
    assert {d.code for d in caught.value.diagnostics} == {Code.UNKNOWN_FIELD, Code.INVALID_PRIORITY}  # type: ignore[attr-defined]


def test_load_rules_returns_a_ruleset_when_clean(tmp_path: Path) -> None:
    """load_rules returns the compiled ruleset when there is no error."""
    ruleset = load_rules([write(tmp_path, rule("A", "ka.verb = get"))])
    assert [r.name for r in ruleset.rules] == ["A"]


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    """Broken YAML is YAML_INVALID with a line number."""
    _, diagnostics = load(tmp_path, "- rule: R\n  desc: [unclosed\n")
    assert only(diagnostics, Code.YAML_INVALID).location.line is not None


def test_document_must_be_a_sequence(tmp_path: Path) -> None:
    """A mapping at the top is NOT_A_SEQUENCE; a scalar item is ITEM_NOT_MAPPING; null items are skipped."""
    _, diagnostics = load(tmp_path, "rule: R\n---\n- just a string\n-\n")
    assert codes(diagnostics)[:2] == [Code.NOT_A_SEQUENCE, Code.ITEM_NOT_MAPPING]


def test_unknown_keys_and_items_are_warnings(tmp_path: Path) -> None:
    """Unknown item kinds and unknown keys only warn."""
    ruleset, diagnostics = load(tmp_path, "- something: else\n" + rule("R", "ka.verb = get", extra="colour: red"))
    assert errors(diagnostics) == []
    assert {Code.UNKNOWN_ITEM, Code.UNKNOWN_KEY} <= set(codes(diagnostics))
    assert [r.name for r in ruleset.rules] == ["R"]


def test_no_files_is_an_error(tmp_path: Path) -> None:
    """An empty directory gives NO_RULES_FILES."""
    _, diagnostics = check_rules([tmp_path])
    assert codes(diagnostics) == [Code.NO_RULES_FILES]


def test_files_of_a_directory_load_in_name_order(tmp_path: Path) -> None:
    """A directory contributes its YAML files sorted by name, skipping *.tests.yaml."""
    write(tmp_path, rule("Second", "ka.verb = get"), "20-b.yaml")
    write(tmp_path, rule("First", "ka.verb = get"), "10-a.yml")
    write(tmp_path, "not: [valid", "10-a.tests.yaml")
    ruleset, diagnostics = check_rules([tmp_path])
    assert errors(diagnostics) == []
    assert [r.name for r in ruleset.rules] == ["First", "Second"]


def test_later_file_can_append_to_earlier_file(tmp_path: Path) -> None:
    """Several files behave like one: a list appended in a later file is seen by the rule."""
    first = write(tmp_path, "- list: l\n  items: [get]\n" + rule("R", "ka.verb in (l)"), "a.yaml")
    second = write(tmp_path, "- list: l\n  items: [list]\n  override:\n    items: append\n", "b.yaml")
    ruleset, diagnostics = check_rules([first, second])
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="list")) == ["R"]


# -- list expansion -------------------------------------------------------------------------


def test_list_in_list_expands_one_level(tmp_path: Path) -> None:
    """An item naming an earlier list is replaced by that list's items."""
    ruleset, diagnostics = load(tmp_path, y("""
        - list: inner
          items: [get]
        - list: outer
          items: [inner, create]
        """) + rule("R", "ka.verb in (outer)"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get")) == ["R"]
    assert fired(ruleset, make_event(verb="create")) == ["R"]
    assert fired(ruleset, make_event(verb="inner")) == []


def test_expand_lists_only_uses_earlier_lists_and_raw_items() -> None:
    """A list named before it is defined stays literal; expansion uses raw items (one level)."""
    where = Location("rules.yaml")
    lists = {
        "a": ListInfo("a", ["later", "x"], index=1, visibility=1, location=where),
        "later": ListInfo("later", ["y"], index=2, visibility=2, location=where),
        "b": ListInfo("b", ["a", "z"], index=3, visibility=3, location=where),
    }
    assert expand_lists(lists) == {"a": ["later", "x"], "later": ["y"], "b": ["later", "x", "z"]}


def test_substituting_an_empty_list_removes_a_comma() -> None:
    """An empty list disappears with one adjacent comma, left first."""
    lists = {"known": ["coredns", "kube-dns"], "extra": []}
    text = substitute_lists("ka.user.name in (known, extra)", lists)
    assert text.replace(" ", "") == "ka.user.namein(coredns,kube-dns)"
    text = substitute_lists("ka.user.name in (extra, known)", lists)
    assert text.replace(" ", "") == "ka.user.namein(coredns,kube-dns)"


def test_empty_list_in_a_rule_loads_and_never_matches(tmp_path: Path) -> None:
    """`in (a_list, empty_list)` and `in (empty_list)` both compile."""
    ruleset, diagnostics = load(tmp_path, y("""
        - list: verbs
          items: [get]
        - list: none
          items: []
        """) + rule("A", "ka.verb in (verbs, none)") + rule("B", "ka.verb in (none)"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get")) == ["A"]


def test_list_items_with_spaces_are_quoted() -> None:
    """Items containing a space are double-quoted when substituted; other items are not."""
    text = substitute_lists("ka.user.name in (people)", {"people": ["bob smith", "alice"]})
    assert '"bob smith", alice' in text


def test_substitution_respects_delimiters() -> None:
    """A list name inside a longer word or a field argument is left alone."""
    lists = {"verbs": ["get"]}
    assert substitute_lists("ka.verb in (myverbs)", lists) == "ka.verb in (myverbs)"
    assert substitute_lists("jevt.value[/verbs] exists", lists) == "jevt.value[/verbs] exists"


def test_yaml_scalars_in_items_stay_strings(tmp_path: Path) -> None:
    """`items: [yes, 0755, true]` are the strings yes, 0755 and true."""
    ruleset, diagnostics = load(tmp_path, y("""
        - list: odd
          items: [yes, 0755, true, 1.0]
        """) + rule("R", "ka.user.name in (odd)"))
    assert errors(diagnostics) == []
    for name in ("yes", "0755", "true", "1.0"):
        assert fired(ruleset, make_event(user={"username": name})) == ["R"]
    assert fired(ruleset, make_event(user={"username": "493"})) == []


def test_undefined_list_name_is_a_literal_string(tmp_path: Path) -> None:
    """A list name that is not defined is compared as the literal string."""
    ruleset, diagnostics = load(tmp_path, rule("R", "ka.verb in (not_a_list)"))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="not_a_list")) == ["R"]


# -- macros ---------------------------------------------------------------------------------


def test_undefined_macro(tmp_path: Path) -> None:
    """A bare identifier that names no macro is UNDEFINED_MACRO."""
    _, diagnostics = load(tmp_path, rule("R", "ka.verb = get and ghost"))
    assert "ghost" in only(diagnostics, Code.UNDEFINED_MACRO).message


def test_macro_loop(tmp_path: Path) -> None:
    """A redefinition can close a cycle (a -> b -> a) between visible macros: MACRO_LOOP."""
    _, diagnostics = load(tmp_path, y("""
        - macro: a
          condition: ka.verb = get
        - macro: b
          condition: a
        - macro: a
          condition: b
        """) + rule("R", "a"))
    error = only(diagnostics, Code.MACRO_LOOP)
    assert "reference loop in macro" in error.message
    assert error.location.item == "R"


def test_macros_referring_to_each_other_are_undefined(tmp_path: Path) -> None:
    """Without redefinition, a macro cannot see a later one, so a two-macro cycle is undefined."""
    _, diagnostics = load(tmp_path, y("""
        - macro: a
          condition: b
        - macro: b
          condition: a
        """) + rule("R", "a"))
    assert Code.UNDEFINED_MACRO in codes(errors(diagnostics))
    assert Code.MACRO_LOOP not in codes(diagnostics)


def test_self_referencing_macro_is_a_loop(tmp_path: Path) -> None:
    """A macro using itself is MACRO_LOOP or an undefined (not yet visible) reference."""
    _, diagnostics = load(tmp_path, "- macro: a\n  condition: a or ka.verb = get\n" + rule("R", "a"))
    assert set(codes(errors(diagnostics))) & {Code.MACRO_LOOP, Code.UNDEFINED_MACRO}


def test_macro_may_only_use_earlier_macros(tmp_path: Path) -> None:
    """A macro referencing one defined later is undefined (rules may use any macro)."""
    _, diagnostics = load(tmp_path, y("""
        - macro: first
          condition: second
        - macro: second
          condition: ka.verb = get
        """) + rule("R", "second"))
    assert "second" in only(diagnostics, Code.UNDEFINED_MACRO).message


def test_rule_sees_final_macro_even_if_appended_later(tmp_path: Path) -> None:
    """Compilation happens after collection, so a rule uses the final macro text."""
    ruleset, _ = load(tmp_path, "- macro: m\n  condition: ka.verb = get\n" + rule("R", "m")
                      + "- macro: m\n  condition: or ka.verb = list\n  append: true\n")
    assert fired(ruleset, make_event(verb="list")) == ["R"]


def test_unused_macro_and_list_warn(tmp_path: Path) -> None:
    """A macro or list used nowhere gives an UNUSED warning."""
    _, diagnostics = load(tmp_path, y("""
        - macro: spare
          condition: ka.verb = get
        - list: spare_list
          items: [x]
        """) + rule("R", "ka.verb = get"))
    messages = [d.message for d in diagnostics if d.code is Code.UNUSED]
    assert any("spare'" in m for m in messages)
    assert any("spare_list" in m for m in messages)
    assert errors(diagnostics) == []


def test_broken_unused_macro_still_fails(tmp_path: Path) -> None:
    """Every macro must parse, even one no rule uses."""
    _, diagnostics = load(tmp_path, "- macro: broken\n  condition: ka.verb = (\n" + rule("R", "ka.verb = get"))
    assert Code.CONDITION_SYNTAX in codes(errors(diagnostics))


# -- sources --------------------------------------------------------------------------------


def test_unknown_source_is_skipped_with_a_warning(tmp_path: Path) -> None:
    """Rules of another source are not compiled; one OTHER_SOURCE warning names the source."""
    text = rule("R", "proc.name = bash").replace("k8s_audit", "syscall")
    ruleset, diagnostics = load(tmp_path, text)
    assert ruleset.rules == ()
    assert errors(diagnostics) == []
    assert "syscall" in only(diagnostics, Code.OTHER_SOURCE).message


def test_rule_without_source_is_skipped_as_syscall(tmp_path: Path) -> None:
    """A rule with no source defaults to syscall and is skipped with a warning saying so."""
    text = rule("R", "ka.verb = get").replace("  source: k8s_audit\n", "")
    ruleset, diagnostics = load(tmp_path, text)
    assert ruleset.rules == ()
    assert "syscall" in only(diagnostics, Code.OTHER_SOURCE).message


# -- exceptions (format.md §3) --------------------------------------------------------------


def exception(fields: object, comps: object, values: list[object]) -> ExceptionInfo:
    """An ExceptionInfo as the collector would hold it."""
    return ExceptionInfo("e", fields, comps, values, None)  # type: ignore[arg-type]


def test_exception_text_tuple_form_matches_falco() -> None:
    """The tuple form generates Falco's exact text (exceptions_condition unit test)."""
    text = "(proc.cmdline contains curl or proc.cmdline contains wget)" + exception_condition(
        [exception(["proc.cmdline"], ["contains"], [["curl 127.0.0.1"]])])
    assert text == ('(proc.cmdline contains curl or proc.cmdline contains wget) and not '
                    '(( proc.cmdline contains "curl 127.0.0.1"))')


def test_exception_text_scalar_form_matches_falco() -> None:
    """The scalar form becomes `(F in (v1, "v 2"))`."""
    text = exception_condition([exception("ka.user.name", "in", ["alice", "bob smith"])])
    assert text == ' and not (ka.user.name in (alice, "bob smith"))'


def test_exception_text_with_list_values_and_list_names() -> None:
    """A YAML list value becomes `(a, b)`; a scalar under `in` is wrapped in parentheses."""
    text = exception_condition([exception(["ka.user.name", "ka.target.namespace"], ["=", "in"],
                                          [["alice", ["ns1", "ns 2"]], ["bob", "my_list"]])])
    assert text == (' and not (( ka.user.name = alice and  ka.target.namespace in (ns1, "ns 2")) or '
                    '( ka.user.name = bob and  ka.target.namespace in (my_list)))')


def test_exception_without_values_adds_nothing() -> None:
    """No values, no clause."""
    assert exception_condition([exception(["ka.user.name"], ["="], [])]) == ""
    assert exception_condition([exception("ka.user.name", "in", [])]) == ""


def test_exceptions_filter_matching_events(tmp_path: Path) -> None:
    """Tuple and scalar exceptions suppress exactly the events they describe."""
    ruleset, diagnostics = load(tmp_path, y("""
        - list: quiet_namespaces
          items: [kube-system, "kube public"]
        """) + rule("R", "ka.verb = create", extra="""
        exceptions:
          - name: user_in_ns
            fields: [ka.user.name, ka.target.namespace]
            comps: [=, in]
            values:
              - [alice, [dev, test]]
              - [bob, quiet_namespaces]
          - name: by_name
            fields: ka.user.name
            values: [carol, "dave smith"]
          - name: prefix
            fields: [ka.uri]
            comps: [startswith]
            values: [[/healthz]]
        """))
    assert errors(diagnostics) == []

    def event(user: str, namespace: str, uri: str = "/api/v1/pods") -> AuditEvent:
        """A create by `user` in `namespace` on `uri`."""
        return make_event(verb="create", user={"username": user}, requestURI=uri,
                          objectRef={"resource": "pods", "namespace": namespace})

    assert fired(ruleset, event("alice", "dev")) == []
    assert fired(ruleset, event("alice", "prod")) == ["R"]
    assert fired(ruleset, event("bob", "kube public")) == []
    assert fired(ruleset, event("bob", "dev")) == ["R"]
    assert fired(ruleset, event("carol", "prod")) == []
    assert fired(ruleset, event("dave smith", "prod")) == []
    assert fired(ruleset, event("dave", "prod")) == ["R"]
    assert fired(ruleset, event("eve", "prod", uri="/healthz/ready")) == []


def test_exception_fields_may_be_transformers_and_comps_may_have_modifiers(tmp_path: Path) -> None:
    """`tolower(f)` works as an exception field and `startswith anyof` as a comp."""
    ruleset, diagnostics = load(tmp_path, rule("R", "ka.verb = get", extra="""
        exceptions:
          - name: lower
            fields: [tolower(ka.user.name)]
            values: [[bob]]
          - name: probes
            fields: [ka.uri]
            comps: [startswith anyof]
            values: [[[/healthz, /readyz]]]
        """))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get", user={"username": "BOB"})) == []
    assert fired(ruleset, make_event(verb="get", requestURI="/readyz?verbose")) == []
    assert fired(ruleset, make_event(verb="get", requestURI="/api")) == ["R"]


def test_exception_value_that_looks_like_a_field_is_a_string(tmp_path: Path) -> None:
    """A value spelled like a field (`ka.user.name`) is compared as that literal text."""
    ruleset, _ = load(tmp_path, rule("R", "ka.verb = get", extra="""
        exceptions:
          - name: e
            fields: [ka.target.namespace]
            values: [[ka.user.name]]
        """))
    assert fired(ruleset, make_event(verb="get", objectRef={"namespace": "ka.user.name"})) == []
    assert fired(ruleset, make_event(verb="get", objectRef={"namespace": "alice"},
                                     user={"username": "alice"})) == ["R"]


def test_scalar_exception_with_nested_values_is_an_error(tmp_path: Path) -> None:
    """With a single field, values must be scalars."""
    _, diagnostics = load(tmp_path, rule("R", "ka.verb = get", extra="""
        exceptions:
          - name: e
            fields: ka.user.name
            values: [[a]]
        """))
    assert "list of strings" in only(diagnostics, Code.BAD_EXCEPTION).message


def test_bare_equals_in_comps_loads(tmp_path: Path) -> None:
    """`comps: [=, in]` loads although `=` is PyYAML's special value tag."""
    ruleset, diagnostics = load(tmp_path, rule("R", "ka.verb = get", extra="""
        exceptions:
          - name: e
            fields: [ka.user.name, ka.target.namespace]
            comps: [=, in]
            values: [[bob, [default]]]
        """))
    assert errors(diagnostics) == []
    assert fired(ruleset, make_event(verb="get", user={"username": "bob"})) == []
    assert fired(ruleset, make_event(verb="get")) == ["R"]


@pytest.mark.parametrize(
    ("exceptions", "words"),
    [
        ("- name: e\n  fields: [ka.user.name, ka.verb]\n  comps: [=]\n  values: [[a, b]]", "equal length"),
        ("- name: e\n  fields: [ka.user.name]\n  comps: [like]\n  values: [[a]]", "not a supported"),
        ("- name: e\n  fields: ka.user.name\n  comps: '='\n  values: [a]", "comps must be one of"),
        ("- name: e\n  fields: ka.user.name\n  comps: [in]\n  values: [a]", "must both be strings"),
        ("- fields: [ka.user.name]\n  values: [[a]]", "name"),
        ("- name: e\n  values: [[a]]", "fields"),
        ("{name: e}", "sequence"),
    ],
)
def test_invalid_exceptions(tmp_path: Path, exceptions: str, words: str) -> None:
    """Malformed exceptions are BAD_EXCEPTION errors."""
    text = rule("R", "ka.verb = get") + "  exceptions:\n" + textwrap.indent(exceptions, "    ") + "\n"
    _, diagnostics = load(tmp_path, text)
    assert words in only(diagnostics, Code.BAD_EXCEPTION).message


def test_exception_tuple_of_wrong_length_is_an_error(tmp_path: Path) -> None:
    """A value tuple whose length differs from fields fails when the condition is built."""
    text = rule("R", "ka.verb = get", extra="""
        exceptions:
          - name: e
            fields: [ka.user.name, ka.verb]
            values: [[only_one]]
        """)
    _, diagnostics = load(tmp_path, text)
    assert "equal length" in only(diagnostics, Code.BAD_EXCEPTION).message


def test_duplicate_exception_names_warn(tmp_path: Path) -> None:
    """Two exceptions with one name give a DUPLICATE_EXCEPTION warning."""
    text = rule("R", "ka.verb = get", extra="""
        exceptions:
          - {name: e, fields: [ka.user.name], values: [[a]]}
          - {name: e, fields: [ka.user.name], values: [[b]]}
        """)
    _, diagnostics = load(tmp_path, text)
    assert Code.DUPLICATE_EXCEPTION in codes(diagnostics)
    assert errors(diagnostics) == []


# -- engine version, matching mode, priority threshold --------------------------------------


@pytest.mark.parametrize(("value", "ok"), [("15", True), ("0.62.0", True), ("'0.10.0'", True),
                                          ("0.63.0", False), ("1.0.0", False), ("abc", False)])
def test_required_engine_version(tmp_path: Path, value: str, ok: bool) -> None:
    """An integer N means 0.N.0; the engine (0.62.0) must be the same major and not older."""
    _, diagnostics = load(tmp_path, f"- required_engine_version: {value}\n")
    assert (Code.ENGINE_VERSION not in codes(diagnostics)) is ok


def test_first_versus_all_matching(tmp_path: Path) -> None:
    """`first` stops at the earliest matching rule; `all` reports every match in rule order."""
    text = rule("Wide", "ka.verb exists") + rule("Narrow", "ka.verb = get")
    first, _ = load(tmp_path, text, LoadOptions(matching=RuleMatching.FIRST))
    every, _ = load(tmp_path, text, LoadOptions(matching=RuleMatching.ALL))
    assert fired(first, make_event(verb="get")) == ["Wide"]
    assert fired(every, make_event(verb="get")) == ["Wide", "Narrow"]


def test_first_matching_skips_disabled_rules(tmp_path: Path) -> None:
    """A disabled first rule does not hide a later match."""
    text = rule("Off", "ka.verb = get", extra="enabled: false") + rule("On", "ka.verb = get")
    ruleset, _ = load(tmp_path, text, LoadOptions(matching=RuleMatching.FIRST))
    assert fired(ruleset, make_event(verb="get")) == ["On"]


def test_min_priority_filters_less_severe_rules(tmp_path: Path) -> None:
    """With a WARNING threshold, NOTICE rules never run; WARNING and more severe do."""
    text = (rule("Notice", "ka.verb = get", priority="NOTICE") + rule("Warn", "ka.verb = get")
            + rule("Crit", "ka.verb = get", priority="CRITICAL"))
    ruleset, _ = load(tmp_path, text, LoadOptions(min_priority=Priority.WARNING))
    assert fired(ruleset, make_event(verb="get")) == ["Warn", "Crit"]
    assert [r.name for r in ruleset.rules] == ["Notice", "Warn", "Crit"]


def test_skip_if_unknown_filter(tmp_path: Path) -> None:
    """With skip-if-unknown-filter an unknown field skips the rule with a warning, not an error."""
    skipping = rule("Skip", "ka.future.field = x", extra="skip-if-unknown-filter: true")
    strict = rule("Strict", "ka.future.field = x")
    ruleset, diagnostics = load(tmp_path, skipping + rule("Other", "ka.verb = get"))
    assert errors(diagnostics) == []
    assert [r.name for r in ruleset.rules] == ["Other"]
    assert any("skip-if-unknown-filter" in d.message for d in diagnostics)
    _, diagnostics = load(tmp_path, strict)
    assert Code.UNKNOWN_FIELD in codes(errors(diagnostics))


def test_skip_if_unknown_filter_does_not_hide_syntax_errors(tmp_path: Path) -> None:
    """skip-if-unknown-filter only forgives unknown fields, not broken conditions."""
    _, diagnostics = load(tmp_path, rule("Skip", "ka.verb = (", extra="skip-if-unknown-filter: true"))
    assert Code.CONDITION_SYNTAX in codes(errors(diagnostics))


# -- output templates -----------------------------------------------------------------------


def render(tmp_path: Path, output: str, event: AuditEvent) -> str:
    """The rendered output of a one-rule ruleset that always matches."""
    ruleset, diagnostics = load(tmp_path, rule("R", "ka.verb exists", output=f"'{output}'"))
    assert errors(diagnostics) == []
    return ruleset.evaluate(event)[0].output


def test_output_prints_fields_and_args(tmp_path: Path) -> None:
    """`%field` and `%field[arg]` print their values inside literal text."""
    event = make_event(verb="get", requestURI="/api/v1/x?command=ls&container=c")
    text = render(tmp_path, "(user=%ka.user.name verb=%jevt.value[/verb] cmd=%ka.uri.param[command])", event)
    assert text == "(user=alice verb=get cmd=ls)"


def test_output_missing_value_prints_na(tmp_path: Path) -> None:
    """An absent field prints `<NA>`."""
    assert render(tmp_path, "ns=%ka.target.namespace", make_event(objectRef={"resource": "nodes"})) == "ns=<NA>"


def test_output_list_value_prints_parenthesised(tmp_path: Path) -> None:
    """A list field prints as `(a,b)` with no spaces."""
    event = make_event(user={"username": "alice", "groups": ["a", "b"]})
    assert render(tmp_path, "groups=%ka.user.groups", event) == "groups=(a,b)"


def test_output_takes_the_longest_known_field_prefix(tmp_path: Path) -> None:
    """`%ka.verbX` prints ka.verb's value followed by X; `/%field` chains work."""
    event = make_event(verb="get")
    assert render(tmp_path, "%ka.verbX %ka.target.name/%ka.target.resource", event) == "getX <NA>/pods"


def test_output_is_trimmed(tmp_path: Path) -> None:
    """Surrounding whitespace of the output is removed."""
    assert render(tmp_path, "  v=%ka.verb  ", make_event(verb="get")) == "v=get"


def test_output_fields_map_expressions_to_values(tmp_path: Path) -> None:
    """The match carries each token's value: text, list or None."""
    ruleset, _ = load(tmp_path, rule("R", "ka.verb exists", output="'%ka.verb %ka.user.groups %ka.target.name'"))
    match = ruleset.evaluate(make_event(verb="get"))[0]
    assert match.output_fields == {"ka.verb": "get", "ka.user.groups": ["system:authenticated"],
                                   "ka.target.name": None}


@pytest.mark.parametrize("output", ["'x=%nope'", "'x=%'", "'x=%ka.uri.param'", "'x=%ka.verb[1]'"])
def test_bad_output_tokens_are_errors(tmp_path: Path, output: str) -> None:
    """Unknown tokens, a lone `%` and bad field args fail to load as output errors."""
    _, diagnostics = load(tmp_path, rule("R", "ka.verb exists", output=output))
    assert errors(diagnostics) != []
    assert errors(diagnostics)[0].code in (Code.BAD_OUTPUT, Code.BAD_FIELD_ARG)
    assert errors(diagnostics)[0].location.line == 4


def test_unknown_output_field_is_bad_output(tmp_path: Path) -> None:
    """A `%` token naming no field is BAD_OUTPUT."""
    _, diagnostics = load(tmp_path, rule("R", "ka.verb exists", output="'x=%nope'"))
    assert only(diagnostics, Code.BAD_OUTPUT).location.item == "R"
