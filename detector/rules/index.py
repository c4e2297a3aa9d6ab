"""Bucket rules by cheap keys so an event only runs the rules that could match it.

From each expanded condition we derive, per key (stage, verb, resource, subresource), the
set of values the key must take for the condition to possibly hold. The analysis is
conservative: anything it does not understand leaves the key unconstrained.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from detector.event import AuditEvent
from detector.parse.fields import index_key
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or
from detector.rules.model import CompiledRule

KEYS = ("stage", "verb", "resource", "subresource")
Constraints = dict[str, frozenset[str | None]]


def constraints(node: Node, key_of: Callable[[str, str | None], str | None] = index_key) -> Constraints:
    """Per key, the only values for which `node` can be true (keys absent: any value).

    `key_of` names the key a field stands for (default: the rule index's keys)."""
    match node:
        case Check(FieldRef(name, arg), op, rhs):
            key = key_of(name, arg)
            if key is None:
                return {}
            if op in ("=", "==") and isinstance(rhs, str):
                return {key: frozenset((rhs,))}
            if op in ("in", "intersects") and isinstance(rhs, tuple):
                return {key: frozenset(rhs)}
            return {}
        case Not(Check(FieldRef(name, arg), "exists")):
            key = key_of(name, arg)
            return {} if key is None else {key: frozenset((None,))}
        case And(items):
            merged: Constraints = {}
            for item in items:
                for key, values in constraints(item, key_of).items():
                    merged[key] = merged[key] & values if key in merged else values
            return merged
        case Or(items):
            parts = [constraints(item, key_of) for item in items]
            common = set(parts[0]).intersection(*parts[1:])
            return {key: frozenset().union(*(p[key] for p in parts)) for key in common}
        case _:
            return {}


def _implied(node: Node) -> bool:
    """True when the index alone decides `node` (so the rule need not test it again)."""
    match node:
        case Check(FieldRef(name, arg), op, rhs):
            return index_key(name, arg) is not None and (
                (op in ("=", "==") and isinstance(rhs, str)) or (op in ("in", "intersects") and isinstance(rhs, tuple)))
        case Not(Check(FieldRef(name, arg), "exists")):
            return index_key(name, arg) is not None
        case _:
            return False


def without_implied(node: Node) -> Node | None:
    """`node` minus the top-level checks the index already guarantees; None if nothing is left.

    Sound because a rule is a candidate only when every key value is in the intersection of
    the sets its top-level checks allow, which makes each of those checks true.
    """
    if _implied(node):
        return None
    if isinstance(node, And):
        rest = tuple(item for item in node.items if not _implied(item))
        if not rest:
            return None
        return rest[0] if len(rest) == 1 else And(rest)
    return node


def event_key(event: AuditEvent) -> tuple[str | None, str | None, str | None, str | None]:
    """The index key of an event, in KEYS order."""
    ref = event.objectRef
    return (event.stage, event.verb, ref.resource, ref.subresource)


class RuleIndex:
    """Candidates per event key (Ruleset remembers them per key, as one fused evaluator)."""

    def __init__(self, rules: Sequence[CompiledRule]) -> None:
        self._rules = [(rule, [(KEYS.index(k), v) for k, v in rule.constraints.items() if k in KEYS])
                       for rule in rules]

    def candidates(self, key: tuple[str | None, ...]) -> tuple[CompiledRule, ...]:
        return tuple(rule for rule, checks in self._rules
                     if all(key[position] in allowed for position, allowed in checks))


def describe(rule_constraints: Mapping[str, frozenset[str | None]]) -> str:
    """Human-readable constraints, for `validate --verbose` style output."""
    if not rule_constraints:
        return "every event"
    return ", ".join(f"{k} in {sorted(str(v) for v in vs)}" for k, vs in sorted(rule_constraints.items()))
