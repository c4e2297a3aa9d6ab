"""Ruleset.evaluate: candidates per event key, fused once per candidate set, within bounds."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from detector.event import TooDeep
from detector.rules import ruleset as ruleset_module
from detector.rules.loader import LoadOptions, check_rules
from detector.rules.ruleset import RuleMatching, Ruleset
from tests.support.deepjson import nested_object, with_request_object
from tests.unit.eventkit import make_event

RULES = """\
- rule: Any create
  desc: d
  condition: ka.verb = create
  output: create by %ka.user.name
  priority: WARNING
  source: k8s_audit
- rule: Pod create by alice
  desc: d
  condition: ka.verb = create and ka.target.resource = pods and ka.user.name = alice
  output: pod by %ka.user.name
  priority: WARNING
  source: k8s_audit
- rule: Anything by alice
  desc: d
  condition: ka.user.name = alice
  output: alice did %ka.verb
  priority: NOTICE
  source: k8s_audit
"""


def load(tmp_path: Path, matching: RuleMatching = RuleMatching.ALL) -> Ruleset:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES, encoding="utf-8")
    ruleset, diagnostics = check_rules([path], LoadOptions(matching=matching))
    assert [d for d in diagnostics if d.is_error] == []
    return ruleset


def fired(ruleset: Ruleset, **event: object) -> list[str]:
    return [m.rule for m in ruleset.evaluate(make_event(**event))]


@pytest.mark.parametrize("fused_limit", [128, 0])  # 0: every candidate set runs rule by rule
def test_matches_in_rule_order_for_every_key(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                             fused_limit: int) -> None:
    monkeypatch.setattr(ruleset_module, "_FUSED_LIMIT", fused_limit)
    ruleset = load(tmp_path)
    for _ in range(2):  # first sight of each key, then its remembered evaluator
        assert fired(ruleset) == ["Any create", "Pod create by alice", "Anything by alice"]
        assert fired(ruleset, user={"username": "bob"}) == ["Any create"]
        assert fired(ruleset, verb="get") == ["Anything by alice"]
        assert fired(ruleset, verb="get", user={"username": "bob"}) == []
        assert fired(ruleset, objectRef={"resource": "secrets"}) == ["Any create", "Anything by alice"]


@pytest.mark.parametrize("fused_limit", [128, 0])
def test_first_matching_stops_at_the_first_rule(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                fused_limit: int) -> None:
    monkeypatch.setattr(ruleset_module, "_FUSED_LIMIT", fused_limit)
    ruleset = load(tmp_path, RuleMatching.FIRST)
    assert fired(ruleset) == ["Any create"]
    assert fired(ruleset, verb="get") == ["Anything by alice"]


def test_remembered_keys_and_fused_sets_are_bounded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Resource names are free text in events: remembered keys are capped, and so are the
    compiled candidate sets (beyond the cap a set runs rule by rule, with the same answers)."""
    monkeypatch.setattr(ruleset_module, "_KEYS_LIMIT", 10)
    monkeypatch.setattr(ruleset_module, "_FUSED_LIMIT", 1)
    ruleset = load(tmp_path)
    for n in range(50):
        assert fired(ruleset, verb="get", objectRef={"resource": f"crd{n}"}) == ["Anything by alice"]
        assert fired(ruleset, objectRef={"resource": f"crd{n}"}) == ["Any create", "Anything by alice"]
    assert len(ruleset._known) <= 10
    assert len(ruleset._fused) <= 1


FAILING_RULES = """\
- rule: Any create
  desc: d
  condition: ka.verb = create
  output: create by %ka.user.name
  priority: WARNING
  source: k8s_audit
- rule: Shows the body
  desc: its output reads the whole body
  condition: ka.verb = create
  output: body %jevt.value[/requestObject]
  priority: WARNING
  source: k8s_audit
- rule: Also by alice
  desc: d
  condition: ka.user.name = alice
  output: alice did %ka.verb
  priority: NOTICE
  source: k8s_audit
"""


@pytest.mark.parametrize("matching", list(RuleMatching))
def test_evaluate_each_keeps_the_rules_that_work_when_one_fails(tmp_path: Path, matching: RuleMatching) -> None:
    """A body nested deeper than detector decodes makes one rule's output fail: evaluate raises,
    evaluate_each reports that rule by name and still returns the others' matches, in order.
    (With `first`, the first rule matches before the failing one is reached.)"""
    path = tmp_path / "rules.yaml"
    path.write_text(FAILING_RULES, encoding="utf-8")
    ruleset, _ = check_rules([path], LoadOptions(matching=matching))
    event = make_event()
    event.raw = with_request_object(event.line(), nested_object(10_000))
    failures: list[tuple[str, str]] = []
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)  # as the rules loader leaves it in a real process
    try:
        if matching is RuleMatching.ALL:
            with pytest.raises(TooDeep):
                ruleset.evaluate(event)
        matches = ruleset.evaluate_each(event, lambda rule, exc: failures.append((rule, type(exc).__name__)))
    finally:
        sys.setrecursionlimit(limit)
    if matching is RuleMatching.FIRST:
        assert ([m.rule for m in matches], failures) == (["Any create"], [])
    else:
        assert [m.rule for m in matches] == ["Any create", "Also by alice"]
        assert failures == [("Shows the body", "TooDeep")]
