"""Generated rule functions agree with the closure compiler on every event."""

from __future__ import annotations

from typing import Any

import orjson
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.event import AuditEvent
from detector.parse.audit import parse_line
from detector.rules.codegen import always, fuse, fuse_selecting, fuse_steps, generate
from detector.rules.compiler import Compiler
from detector.rules.condition import parse_condition
from detector.rules.model import Predicate
from detector.rules.ruleset import people_only

CONDITIONS = [
    "ka.verb = create and ka.target.resource in (pods, secrets)",
    "not ka.user.name startswith system: and ka.target.namespace != kube-system",
    "ka.user.groups intersects (system:masters) or ka.user.groups in (a, b)",
    "ka.target.subresource exists or not ka.target.name contains web",
    "ka.uri endswith /exec and (ka.verb == get or ka.verb = list)",
    "ka.req.pod.containers.image in (nginx) and not ka.req.pod.containers.privileged intersects (true)",
    "ka.response.code >= 400 and ka.user.name glob 'al*'",
    "ka.client.ip in (10.0.0.0/8) and tolower(ka.verb) = get",
    "ka.client.ip exists and not ka.client.ip in (10.0.0.0/8, ::1/128) and ka.response.code exists",
    "ka.req.pod.containers.image exists and (ka.req.pod.containers.image in (nginx)"
    " or not ka.req.pod.containers.image intersects (apache))",
    "not (ka.client.ip exists and ka.client.ip in (8.8.8.8)) and (ka.uri.param[x] exists or ka.client.ip in (::1))",
    "ka.client.ip in (::1) and ka.client.ip exists or ka.response.code = 403 and ka.response.code exists",
    "(ka.sourceip.last exists or ka.verb = get) and ka.sourceip.last startswith 10.",
    "jevt.value[/objectRef/namespace] = default and ka.stage in (ResponseComplete)",
]


def event(data: dict[str, Any]) -> AuditEvent:
    base = {"kind": "Event", "auditID": "x", "stageTimestamp": "2026-11-22T10:00:00.000000Z"}
    parsed = parse_line(orjson.dumps({**base, **data}))
    assert isinstance(parsed, AuditEvent)
    return parsed


maybe = st.none() | st.sampled_from(["create", "get", "list", "pods", "secrets", "default", "kube-system",
                                     "alice", "system:node:n1", "web-1", "ResponseComplete"])
events = st.fixed_dictionaries({}, optional={
    "verb": maybe, "stage": maybe,
    "user": st.fixed_dictionaries({}, optional={"username": maybe, "groups": st.lists(maybe.filter(bool), max_size=3)}),
    "objectRef": st.fixed_dictionaries({}, optional={"resource": maybe, "namespace": maybe, "name": maybe,
                                                     "subresource": maybe}),
    "requestURI": st.sampled_from(["/api/v1/pods", "/api/v1/namespaces/a/pods/b/exec"]),
    "responseStatus": st.fixed_dictionaries({"code": st.sampled_from([200, 403, 99])}),
    "sourceIPs": st.lists(st.sampled_from(["10.1.2.3", "8.8.8.8", "::1"]), max_size=2),
    "requestObject": st.fixed_dictionaries({"spec": st.fixed_dictionaries({"containers": st.lists(
        st.fixed_dictionaries({"image": st.sampled_from(["nginx", "apache"]),
                               "securityContext": st.fixed_dictionaries({"privileged": st.booleans()})}),
        max_size=2)})}),
})


@settings(max_examples=300, deadline=None)
@given(st.sampled_from(CONDITIONS), events)
def test_generated_function_equals_closures(condition: str, data: dict[str, Any]) -> None:
    """For any event, the generated function and the closure tree give the same answer."""
    node = parse_condition(condition)
    compiler = Compiler()
    closure, generated = compiler.compile(node), generate(node, compiler)
    ev = event(data)
    assert generated(ev) is closure(ev) or bool(generated(ev)) == bool(closure(ev))
    assert isinstance(generated(ev), bool)


def test_address_checks_are_generated_inline() -> None:
    """An address against networks, and `exists`, need no closure of their own (they run on
    every event in the shipped outside-address rule); the answers stay the closure's."""
    node = parse_condition("ka.client.ip exists and not ka.client.ip in (10.0.0.0/8, ::1)")
    compiler = Compiler()
    generated, closure = generate(node, compiler), compiler.compile(node)
    assert not any(callable(v) and getattr(v, "__name__", "") == "<lambda>"
                   for v in generated.__globals__.values())
    for ips, outside in ((["10.9.8.7"], False), (["8.8.8.8"], True), (["::1"], False), ([], False)):
        ev = event({"sourceIPs": ips})
        assert generated(ev) is outside is closure(ev), ips


def test_a_value_checked_twice_in_a_conjunction_is_extracted_once() -> None:
    """`ka.client.ip exists and not ka.client.ip in (...)`: the second check reuses the value the
    first one extracted (it ran: the `and` got that far)."""
    node = parse_condition("ka.client.ip exists and not ka.client.ip in (10.0.0.0/8)")
    compiler = Compiler()
    generated = generate(node, compiler)
    extractor = compiler.bind(parse_condition("ka.client.ip exists").lhs).get  # type: ignore[attr-defined]
    assert sum(value is extractor for value in generated.__globals__.values()) == 1
    assert (generated(event({"sourceIPs": ["8.8.8.8"]})), generated(event({"sourceIPs": ["10.1.1.1"]}))) == (
        True, False)


def test_constants_never_enter_generated_source() -> None:
    """A value that looks like code stays a string constant (no injection through rule text)."""
    node = parse_condition('ka.verb = "x) or __import__(\'os\').system(\'false\') or (1"')
    predicate = generate(node, Compiler())
    assert predicate(event({"verb": "get"})) is False
    assert predicate(event({"verb": "x) or __import__('os').system('false') or (1"})) is True


def test_rawtime_exists_is_answered_without_the_value_and_agrees_with_it() -> None:
    """Falco's `kevt` macro (`jevt.rawtime exists`) runs on every event: its cheap presence test
    must say exactly what the field itself says, on both compile paths."""
    node = parse_condition("jevt.rawtime exists and evt.rawtime exists")
    compiler = Compiler()
    closure, generated = compiler.compile(node), generate(node, compiler)
    timed = event({})
    untimed = AuditEvent(auditID="x")  # built directly: the parser rejects an event without a time
    get = compiler.bind(parse_condition("jevt.rawtime exists").lhs).get  # type: ignore[attr-defined]
    assert (get(timed) is not None, get(untimed) is not None) == (True, False)
    assert (closure(timed), generated(timed)) == (True, True)
    assert (closure(untimed), generated(untimed)) == (False, False)


def tagged(name: str) -> Any:
    """A stand-in for `CompiledRule.match`: says which rule matched which event."""
    return lambda ev: (name, ev.auditID)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=5), events, st.booleans())
def test_fused_rules_equal_the_rules_one_by_one(conditions: list[str], data: dict[str, Any], first: bool) -> None:
    """Several generated rules fused in one function (their names renamed apart) give the
    matches of running each rule in turn, in order; with `first`, only the first."""
    compiler = Compiler()
    predicates: list[Predicate] = [generate(parse_condition(c), compiler) for c in conditions]
    rules = [(predicate, tagged(f"r{n}")) for n, predicate in enumerate(predicates)]
    ev = event(data)
    expected = [match(ev) for predicate, match in rules if predicate(ev)]
    assert fuse(rules, first=first)(ev) == ((expected[:1] if first else expected) or None)


def test_predicates_that_were_not_generated_are_called() -> None:
    """A closure (no generated source) is called from the fused function; `always` is inlined."""
    calls: list[str] = []

    def closure(ev: AuditEvent) -> bool:
        calls.append(ev.verb or "")
        return ev.verb == "get"

    run = fuse([(closure, tagged("closure")), (always, tagged("always"))], first=False)
    assert run(event({"verb": "get"})) == [("closure", "x"), ("always", "x")]
    assert run(event({"verb": "list"})) == [("always", "x")]
    assert calls == ["get", "list"]


# Base conditions of stateful rules: several begin alike (the fused function tests that once),
# some are about people (tested under one system:* check), one is not generated.
SELECTING = [
    "ka.response.code = 403 and ka.verb = get",
    "ka.response.code = 403 and ka.verb = get and ka.target.resource in (pods, secrets)",
    "ka.response.code = 403 and ka.client.ip exists and not ka.client.ip in (10.0.0.0/8)",
    "ka.response.code = 403",
    "ka.response.code = 99 and ka.verb = get",  # the same test as the first ones, of another code
    'not ka.user.name startswith "system:" and ka.user.name exists and ka.verb = get',
    'not ka.user.name startswith "system:" and ka.user.name exists and ka.target.namespace = default',
    'ka.user.name exists and not ka.user.name startswith "system:" and ka.response.code = 403',
    "ka.user.name in (alice) or ka.verb = list",
    "ka.response.code != 200 and ka.user.groups intersects (system:masters)",
]


# Events aimed at those conditions: user names on both sides of "system:" (and at its edges),
# codes each first test takes or refuses.
selected_events = st.fixed_dictionaries({
    "verb": st.sampled_from(["get", "list", None]),
    "user": st.fixed_dictionaries({}, optional={
        "username": st.sampled_from(["alice", "system:node:n1", "system:", "system", "system;", "systemd", "eks:x"]),
        "groups": st.lists(st.sampled_from(["system:masters", "dev"]), max_size=2)}),
    "objectRef": st.fixed_dictionaries({}, optional={"resource": st.sampled_from(["pods", "secrets"]),
                                                     "namespace": st.sampled_from(["default", "web"])}),
    "responseStatus": st.fixed_dictionaries({"code": st.sampled_from([200, 403, 99])}),
    "sourceIPs": st.lists(st.sampled_from(["10.1.2.3", "8.8.8.8"]), max_size=1),
})


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(SELECTING), min_size=1, max_size=6), st.lists(st.sampled_from(CONDITIONS), max_size=3),
       selected_events, st.booleans())
def test_fused_selecting_rules_equal_the_rules_one_by_one(selecting: list[str], stateless: list[str],
                                                          data: dict[str, Any], first: bool) -> None:
    """Stateful base conditions fused (first tests shared, rules about people under one test of
    the user, every rule reading the user name from one local) select exactly the rules their
    conditions select, in order, before the stateless matches."""
    compiler = Compiler()
    nodes = [parse_condition(c) for c in selecting]
    predicates: list[Predicate] = [generate(node, compiler) for node in nodes]
    rules = [(generate(parse_condition(c), compiler), tagged(f"r{n}")) for n, c in enumerate(stateless)]
    ev = event(data)
    chosen = [f"q{n}" for n, predicate in enumerate(predicates) if predicate(ev) and not people_only(nodes[n])]
    chosen += [f"q{n}" for n, predicate in enumerate(predicates) if predicate(ev) and people_only(nodes[n])]
    matches = [match(ev) for predicate, match in rules if predicate(ev)]
    run = fuse_selecting([(predicates[n], f"q{n}", people_only(node)) for n, node in enumerate(nodes)], rules,
                         first=first)
    assert run(ev) == ([*chosen, *(matches[:1] if first else matches)] or None)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(CONDITIONS), min_size=1, max_size=4), events)
def test_fused_steps_give_the_mask_of_the_steps_an_event_is(conditions: list[str], data: dict[str, Any]) -> None:
    """A sequence's steps in one function: bit n set exactly when step n's condition holds."""
    compiler = Compiler()
    predicates = [generate(parse_condition(c), compiler) for c in conditions]
    ev = event(data)
    assert fuse_steps(predicates)(ev) == sum(1 << n for n, predicate in enumerate(predicates) if predicate(ev))


def test_base_conditions_that_begin_alike_test_their_first_part_once() -> None:
    """Rules that begin with `ka.response.code = 403` (the two forbidden-burst rules): the
    fused function tests the code once, then each rule's rest; most events stop there."""
    compiler = Compiler()
    predicates = [generate(parse_condition(c), compiler) for c in SELECTING[:3]]
    run = fuse_selecting([(p, n, False) for n, p in enumerate(predicates)], [], first=False)
    tested = [name for name in run.__code__.co_names
              if isinstance(value := run.__globals__.get(name), frozenset) and 403 in value]
    assert len(tested) == 1
    assert run(event({"verb": "get", "responseStatus": {"code": 403}, "sourceIPs": ["8.8.8.8"]})) == [0, 2]
    assert run(event({"verb": "get", "responseStatus": {"code": 200}, "sourceIPs": ["8.8.8.8"]})) is None
