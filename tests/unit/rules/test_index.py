"""Rule index constraints: sound (never exclude an event a rule matches) and useful."""

from __future__ import annotations

from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from detector.rules.ast import And, Check, FieldRef, Node, Not, Or
from detector.rules.compiler import Compiler
from detector.rules.condition import parse_condition
from detector.rules.index import KEYS, constraints, event_key
from tests.unit.eventkit import DROP, event_dict, event_from, make_event

KEY_FIELDS = (FieldRef("ka.verb"), FieldRef("ka.stage"), FieldRef("ka.target.resource"),
              FieldRef("ka.target.subresource"), FieldRef("jevt.value", "/verb"), FieldRef("jevt.value", "/stage"),
              FieldRef("jevt.value", "/objectRef/resource"), FieldRef("ka.user.name"))
WORDS = ("get", "create", "pods", "exec", "ResponseComplete", "")
words = st.sampled_from(WORDS)


def test_equality_constrains_its_key() -> None:
    """`ka.verb = get` constrains verb to {get}; `in` to its list."""
    assert constraints(parse_condition("ka.verb = get")) == {"verb": frozenset({"get"})}
    assert constraints(parse_condition("jevt.value[/stage] in (A, B)")) == {"stage": frozenset({"A", "B"})}


def test_and_intersects_or_unites() -> None:
    """and narrows a key's values; or keeps only keys every branch constrains, united."""
    both = parse_condition("ka.verb in (get, list) and ka.verb = get and ka.target.resource = pods")
    assert constraints(both) == {"verb": frozenset({"get"}), "resource": frozenset({"pods"})}
    either = parse_condition("(ka.verb = get and ka.stage = A) or ka.verb = list")
    assert constraints(either) == {"verb": frozenset({"get", "list"})}


def test_negations_and_other_fields_do_not_constrain() -> None:
    """`not ka.verb = get`, `!=` and non-key fields leave every key free."""
    assert constraints(parse_condition("not ka.verb = get")) == {}
    assert constraints(parse_condition("ka.verb != get")) == {}
    assert constraints(parse_condition("ka.user.name = get")) == {}


def test_missing_subresource_constrains_to_none() -> None:
    """`not ka.target.subresource exists` means the subresource key must be absent."""
    assert constraints(parse_condition("not ka.target.subresource exists")) == {"subresource": frozenset({None})}


def test_event_key_reads_the_hot_fields() -> None:
    """The event key is (stage, verb, resource, subresource)."""
    event = make_event(verb="get", objectRef={"resource": "pods", "subresource": "log"})
    assert event_key(event) == ("ResponseComplete", "get", "pods", "log")


@st.composite
def key_checks(draw: st.DrawFn) -> Check:
    """A check on an index key field (or on a field that is not one)."""
    lhs = draw(st.sampled_from(KEY_FIELDS))
    op = draw(st.sampled_from(("=", "==", "!=", "in", "intersects", "exists", "startswith")))
    if op == "exists":
        return Check(lhs, op)
    if op in ("in", "intersects"):
        return Check(lhs, op, tuple(draw(st.lists(words, max_size=3))))
    return Check(lhs, op, draw(words))


def shapes(leaves: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    """Single checks, flat and/or/not of checks, and deeper random trees, in equal parts."""
    deep = st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
            st.lists(children, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
            children.map(Not),
        ),
        max_leaves=6,
    )
    flat = st.lists(leaves, min_size=2, max_size=3)
    return st.one_of(leaves, flat.map(lambda items: And(tuple(items))), flat.map(lambda items: Or(tuple(items))),
                     leaves.map(Not), deep)


conditions = shapes(key_checks())


@st.composite
def key_events(draw: st.DrawFn) -> dict[str, Any]:
    """Events whose four key fields are each absent or a small word."""
    maybe = st.one_of(st.just(DROP), words)
    ref = {k: v for k, v in (("resource", draw(maybe)), ("subresource", draw(maybe))) if v is not DROP}
    return event_dict(verb=draw(maybe), stage=draw(maybe), objectRef=ref, user={"username": draw(words)})


@settings(max_examples=400, deadline=None)
@given(conditions, key_events())
def test_constraints_never_exclude_a_matching_event(node: Node, body: dict[str, Any]) -> None:
    """Whenever a condition holds for an event, the event's key satisfies its constraints."""
    event = event_from(body)
    if not Compiler().compile(node)(event):
        return
    key = dict(zip(KEYS, event_key(event), strict=True))
    for name, allowed in constraints(node).items():
        assert key[name] in allowed, (name, key[name], allowed)
