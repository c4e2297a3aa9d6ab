"""A compiled ruleset: the rules in evaluation order, indexed, and the evaluate call."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from typing import cast

from detector.event import AuditEvent
from detector.rules.codegen import Evaluator, fuse
from detector.rules.diagnostics import Diagnostic
from detector.rules.index import RuleIndex
from detector.rules.model import CompiledRule, Match, Priority
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
        self._selector = _Selector(tuple(s.rule for s in self.stateful.rules.values()),
                                   lambda rule: self._feeders[id(rule)])
        self.evaluate = self._evaluate_function() if not self.stateful else self._evaluate_stateful()

    def _evaluate_stateful(self) -> Callable[[AuditEvent], Sequence[Match]]:
        """`evaluate` with stateful rules: the stateless matches, then the base conditions of
        the stateful rules select (without side effects: a condition that raises leaves no
        window fed, and evaluate_each runs them again), then the selected rules are fed."""
        known, evaluator, select = self._known, self._evaluator, self._selector.select

        def evaluate(event: AuditEvent) -> Sequence[Match]:
            ref = event.objectRef
            key = (event.stage, event.verb, ref.resource, ref.subresource)
            run = known.get(key)
            if run is None:
                run = evaluator(key)
            found = run(event)
            chosen = select(key, event)
            if chosen is not None:
                for rule in chosen:
                    fired = rule.feed(event)
                    if fired:
                        found = [*(found or ()), *fired]
            return found or _NO_MATCHES

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
        identity = tuple(map(id, candidates))
        run = self._fused.get(identity)
        if run is None:
            if not candidates:
                run = _nothing
            elif len(self._fused) < _FUSED_LIMIT:
                run = self._fused[identity] = fuse(
                    [(rule.fast_predicate or rule.predicate, rule.match) for rule in candidates], first=self._first)
            else:
                run = self._looped(candidates)
        if len(self._known) >= _KEYS_LIMIT:
            self._known.clear()
        self._known[key] = run
        return run

    def _looped(self, candidates: tuple[CompiledRule, ...]) -> Evaluator:
        """The candidates run one by one (beyond _FUSED_LIMIT sets)."""
        first = self._first

        def run(event: AuditEvent) -> list[Match] | None:
            matches: list[Match] | None = None
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
        for rule in self._selector.index.candidates(key):
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
        return self._index.candidates(key) + self._selector.index.candidates(key)

    def rule(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.name == name), None)


Selection = Callable[[AuditEvent], "list[StatefulRule] | None"]


class _Selector:
    """The base conditions of stateful rules, indexed and fused like the stateless rules':
    `select(key, event)` gives the stateful rules whose base condition holds, or None."""

    def __init__(self, rules: tuple[CompiledRule, ...], feeder: Callable[[CompiledRule], StatefulRule]) -> None:
        self.index = RuleIndex(rules)
        self._feeder = feeder
        self._known: dict[tuple[str | None, ...], Selection] = {}
        self._fused: dict[tuple[int, ...], Selection] = {}

    def select(self, key: tuple[str | None, ...], event: AuditEvent) -> list[StatefulRule] | None:
        run = self._known.get(key)
        if run is None:
            run = self._selection(key)
        return run(event)

    def _selection(self, key: tuple[str | None, ...]) -> Selection:
        candidates = self.index.candidates(key)
        identity = tuple(map(id, candidates))
        run = self._fused.get(identity)
        if run is None:
            pairs = [(rule.fast_predicate or rule.predicate, _constant(self._feeder(rule))) for rule in candidates]
            # fuse() returns what each pair's second item gives: here the selected rules.
            run = cast(Selection, fuse(pairs, first=False) if candidates else _nothing)  # type: ignore[arg-type]
            if len(self._fused) < _FUSED_LIMIT:
                self._fused[identity] = run
        if len(self._known) >= _KEYS_LIMIT:
            self._known.clear()
        self._known[key] = run
        return run


def _constant(rule: StatefulRule) -> Callable[[AuditEvent], StatefulRule]:
    def selected(_event: AuditEvent) -> StatefulRule:
        return rule

    return selected
