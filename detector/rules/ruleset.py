"""A compiled ruleset: the rules in evaluation order, indexed, and the evaluate call."""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence

from detector.event import AuditEvent
from detector.rules.codegen import Evaluator, fuse
from detector.rules.diagnostics import Diagnostic
from detector.rules.index import RuleIndex
from detector.rules.model import CompiledRule, Match, Priority

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
                 matching: RuleMatching = RuleMatching.ALL, min_priority: Priority = Priority.DEBUG) -> None:
        self.rules = tuple(rules)
        self.diagnostics = tuple(diagnostics)
        self.matching = matching
        self.active = tuple(r for r in self.rules if r.enabled and r.priority <= min_priority)
        self._index = RuleIndex(self.active)
        self._first = matching is RuleMatching.FIRST
        self._known: dict[tuple[str | None, ...], Evaluator] = {}  # event key -> its evaluator
        self._fused: dict[tuple[int, ...], Evaluator] = {}  # candidate rules (by id) -> their evaluator
        self.evaluate = self._evaluate_function()

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
        matches: list[Match] = []
        for rule in self._index.candidates((event.stage, event.verb, ref.resource, ref.subresource)):
            try:
                if (rule.fast_predicate or rule.predicate)(event):
                    matches.append(rule.match(event))
            except Exception as exc:  # any rule failure is reported, never fatal
                on_error(rule.name, exc)
                continue
            if matches and self._first:
                break
        return matches

    def candidates(self, key: tuple[str | None, ...]) -> tuple[CompiledRule, ...]:
        """The active rules the index would run for an event key."""
        return self._index.candidates(key)

    def rule(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.name == name), None)
