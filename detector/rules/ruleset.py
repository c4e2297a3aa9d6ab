"""A compiled ruleset: the rules in evaluation order, indexed, and the evaluate call."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import Any

from detector.event import AuditEvent
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or
from detector.rules.codegen import EXPRESSION, Evaluator, fuse, fuse_selecting
from detector.rules.correlation import Kind
from detector.rules.diagnostics import Diagnostic
from detector.rules.index import RuleIndex
from detector.rules.model import CompiledRule, Match, Predicate, Priority
from detector.rules.stateful import StatefulRule, StatefulState

_NO_MATCHES: tuple[Match, ...] = ()
# Event keys remembered with their evaluator, and candidate sets fused into one (each takes a
# compile, ~1 ms, and ~30-45 KB of code): both are bounded, as keys come from the events
# (resource names are free text). The shipped and Falco's rules make 12-17 sets of 100,000
# generated events.
_KEYS_LIMIT = 4096
_FUSED_LIMIT = 128


def _nothing(_event: AuditEvent) -> None:
    return None


class RuleMatching(enum.Enum):
    """`all`: every matching rule alerts. `first`: only the first, in rule order (Falco)."""

    ALL = "all"
    FIRST = "first"


class Ruleset:
    """Evaluates events against the enabled rules at or above a minimum priority."""

    def __init__(self, rules: Sequence[CompiledRule], diagnostics: Sequence[Diagnostic] = (),
                 matching: RuleMatching = RuleMatching.ALL, min_priority: Priority = Priority.DEBUG,
                 stateful: Sequence[StatefulRule] = ()) -> None:
        self.rules = tuple(rules)
        self.diagnostics = tuple(diagnostics)
        self.matching = matching
        self.active = tuple(r for r in self.rules if r.enabled and r.priority <= min_priority)
        # Stateful rules (a `correlation:` block) are indexed apart: their matches feed windows.
        by_rule = {id(s.rule): s for s in stateful}
        self.stateful_rules = {s.name: s for s in stateful}  # active or not (test-rule runs any)
        self.stateful = StatefulState(by_rule[id(r)] for r in self.active if id(r) in by_rule)
        self._feeders = {id(s.rule): s for s in self.stateful.rules.values()}
        stateless = tuple(r for r in self.active if id(r) not in by_rule)
        self._index = RuleIndex(stateless)
        self._first = matching is RuleMatching.FIRST
        self._known: dict[tuple[str | None, ...], Evaluator] = {}  # event key -> its evaluator
        self._fused: dict[tuple[int, ...], Evaluator] = {}  # candidate rules (by id) -> their evaluator
        selecting = tuple(s.rule for s in self.stateful.rules.values())
        self._selecting = RuleIndex(selecting)
        self._people_only = {id(r) for r in selecting if people_only(r.condition)}
        self.evaluate = self._evaluate_function() if not self.stateful else self._evaluate_stateful()

    def _evaluate_stateful(self) -> Callable[[AuditEvent], Sequence[Match]]:
        """`evaluate` with stateful rules. The fused evaluator of a key tests the base
        conditions of its stateful candidates first (without side effects: it lists the `feed`
        of the selected rules), then the stateless rules; the selected rules are fed after it
        returned (a condition that raises leaves no window fed, and evaluate_each runs them
        again)."""
        known, evaluator = self._known, self._evaluator

        def evaluate(event: AuditEvent) -> Sequence[Match]:
            ref = event.objectRef
            key = (event.stage, event.verb, ref.resource, ref.subresource)
            run = known.get(key)
            if run is None:
                run = evaluator(key)
            found = run(event)
            if not found:
                return _NO_MATCHES
            if type(found[0]) is Match:  # selected stateful rules come first: none here
                return found
            matches: list[Match] = []
            for item in found:
                if type(item) is Match:
                    matches.append(item)
                else:
                    fired = item(event)  # type: ignore[operator]  # a selected rule's feed
                    if fired:
                        matches += fired
            return matches

        return evaluate

    def _evaluate_function(self) -> Callable[[AuditEvent], Sequence[Match]]:
        """`evaluate(event)`: the matches of one event, in rule order. A closure over the key
        table rather than a method: it runs for every event, and each attribute lookup counts."""
        known, evaluator = self._known, self._evaluator

        def evaluate(event: AuditEvent) -> Sequence[Match]:
            ref = event.objectRef
            key = (event.stage, event.verb, ref.resource, ref.subresource)
            run = known.get(key)
            if run is None:
                run = evaluator(key)
            return run(event) or _NO_MATCHES

        return evaluate

    def _evaluator(self, key: tuple[str | None, ...]) -> Evaluator:
        """The function that runs the candidates of `key` (fused on first sight of their set)."""
        candidates = self._index.candidates(key)
        selecting = self._selecting.candidates(key) if self.stateful else ()
        identity = tuple(map(id, selecting + candidates))
        run = self._fused.get(identity)
        if run is None:
            if not candidates and not selecting:
                run = _nothing
            elif len(self._fused) >= _FUSED_LIMIT:
                run = self._looped(candidates, selecting)
            elif selecting:
                run = self._fused[identity] = fuse_selecting(
                    [(_gated(self._feeders[id(r)], r.fast_predicate or r.predicate), self._feeders[id(r)].feed,
                      id(r) in self._people_only) for r in selecting],
                    [(rule.fast_predicate or rule.predicate, rule.match) for rule in candidates], first=self._first)
            else:
                run = self._fused[identity] = fuse(
                    [(rule.fast_predicate or rule.predicate, rule.match) for rule in candidates], first=self._first)
        if len(self._known) >= _KEYS_LIMIT:
            self._known.clear()
        self._known[key] = run
        return run

    def _looped(self, candidates: tuple[CompiledRule, ...], selecting: tuple[CompiledRule, ...] = ()) -> Evaluator:
        """The candidates run one by one (beyond _FUSED_LIMIT sets); selected stateful rules first."""
        first, feeders = self._first, self._feeders

        def run(event: AuditEvent) -> list[Match] | None:
            matches: list[Any] | None = None
            for rule in selecting:
                if (rule.fast_predicate or rule.predicate)(event):
                    matches = [*(matches or ()), feeders[id(rule)].feed]
            for rule in candidates:
                if (rule.fast_predicate or rule.predicate)(event):
                    matches = [*(matches or ()), rule.match(event)]
                    if first:
                        break
            return matches

        return run

    def evaluate_each(self, event: AuditEvent, on_error: Callable[[str, Exception], None]) -> list[Match]:
        """`evaluate`, rule by rule, for an event on which it raised: a rule that fails goes to
        `on_error` (its name and the exception) and the other rules still match. (The fused
        evaluation is all or nothing: one rule reading a body it cannot decode would otherwise
        silence every rule on that event.)"""
        ref = event.objectRef
        key = (event.stage, event.verb, ref.resource, ref.subresource)
        matches: list[Match] = []
        for rule in self._index.candidates(key):
            try:
                if (rule.fast_predicate or rule.predicate)(event):
                    matches.append(rule.match(event))
            except Exception as exc:  # any rule failure is reported, never fatal
                on_error(rule.name, exc)
                continue
            if matches and self._first:
                break
        for rule in self._selecting.candidates(key):
            try:
                selected = (rule.fast_predicate or rule.predicate)(event)
            except Exception as exc:  # any rule failure is reported, never fatal
                on_error(rule.name, exc)
                continue
            if selected:
                matches += self._feeders[id(rule)].feed(event) or ()
        return matches

    def candidates(self, key: tuple[str | None, ...]) -> tuple[CompiledRule, ...]:
        """The active rules the index would run for an event key (stateful ones included)."""
        if not self.stateful:
            return self._index.candidates(key)
        return self._index.candidates(key) + self._selecting.candidates(key)

    def rule(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.name == name), None)


def people_only(node: Node) -> bool:
    """Whether a condition can only hold for users not named system:* (it requires
    `not ka.user.name startswith "system:"`, as the human_user macro does)."""
    match node:
        case And(items):
            return any(people_only(i) for i in items)
        case Or(items):
            return all(people_only(i) for i in items)
        case Not(Check(FieldRef("ka.user.name", None), "startswith", "system:", None)):
            return True
        case _:
            return False


def _gated(rule: StatefulRule, predicate: Predicate) -> Predicate:
    """An absence rule's predicate, false while the current window is settled (every key heard
    enough: StatefulRule.skip_until) and for an event without a time; inlined by fuse() like
    any generated predicate."""
    if rule.spec.kind is not Kind.ABSENCE:
        return predicate

    def gated(event: AuditEvent) -> bool:
        stamp = event.time
        return stamp is not None and stamp >= rule.skip_until and predicate(event)

    source = getattr(predicate, EXPRESSION, None)
    if source is not None:
        text, names = source
        setattr(gated, EXPRESSION, (f"(_gate0.skip_until <= (ev.time or _untimed0) and {text})",
                                    {**names, "_gate0": rule, "_untimed0": _UNTIMED}))
    return gated


class _Untimed:
    """What `_gated` compares an event without a time as: no skip_until is before it (such an
    event is not fed; one test on most events instead of a test for None and a comparison)."""

    def __ge__(self, other: object) -> bool:
        return False


_UNTIMED = _Untimed()


