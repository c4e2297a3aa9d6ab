"""Ruleset.evaluate: candidates per event key, fused once per candidate set, within bounds."""

from __future__ import annotations

from pathlib import Path

import pytest

from detector.rules import ruleset as ruleset_module
from detector.rules.loader import LoadOptions, check_rules
from detector.rules.ruleset import RuleMatching, Ruleset
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
