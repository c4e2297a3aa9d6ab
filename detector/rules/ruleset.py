"""A compiled ruleset: the rules in evaluation order, indexed, and the evaluate call."""

from __future__ import annotations

import enum
from collections.abc import Sequence

from detector.event import AuditEvent
from detector.rules.diagnostics import Diagnostic
from detector.rules.index import RuleIndex
from detector.rules.model import CompiledRule, Match, Priority

_NO_MATCHES: tuple[Match, ...] = ()


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
        self._known = self._index.known

    def evaluate(self, event: AuditEvent) -> Sequence[Match]:
        """The matches of one event, in rule order."""
        ref = event.objectRef
        key = (event.stage, event.verb, ref.resource, ref.subresource)
        candidates = self._known.get(key)
        if candidates is None:
            candidates = self._index.candidates(key)
        if not candidates:
            return _NO_MATCHES
        matches: list[Match] | None = None
        for rule in candidates:
            if rule.fast_predicate(event):  # type: ignore[misc]
                if matches is None:
                    matches = []
                matches.append(rule.match(event))
                if self._first:
                    break
        return matches or _NO_MATCHES

    def candidates(self, key: tuple[str | None, ...]) -> tuple[CompiledRule, ...]:
        """The active rules the index would run for an event key."""
        return self._index.candidates(key)

    def rule(self, name: str) -> CompiledRule | None:
        return next((r for r in self.rules if r.name == name), None)
