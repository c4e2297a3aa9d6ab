"""Compiled conditions against grammar.md §3 (operator semantics, list fields, absent fields)."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.event import AuditEvent
from detector.parse.fieldspec import FieldOptions
from detector.rules.ast import And, Check, FieldRef, MacroRef, Node, Not, Or, Transform, to_text
from detector.rules.compiler import CompileError, Compiler
from detector.rules.condition import parse_condition
from detector.rules.diagnostics import Code
from tests.unit.eventkit import DROP, event_from, make_event, pod_event


def matches(condition: str, event: AuditEvent, options: FieldOptions | None = None) -> bool:
    """Compile `condition` and evaluate it on `event`."""
    return Compiler(options or FieldOptions()).compile(parse_condition(condition))(event)


def compile_error(condition: str) -> CompileError:
    """The CompileError compiling `condition` raises (fails the test when it compiles)."""
    with pytest.raises(CompileError) as caught:
        Compiler().compile(parse_condition(condition))
    return caught.value


def named(name: str) -> AuditEvent:
    """An event whose user name is `name`."""
    return make_event(user={"username": name, "groups": ["g"]})


def with_uri(uri: str) -> AuditEvent:
    """An event whose request URI is `uri`."""
    return make_event(requestURI=uri)


# -- string operators -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("ka.user.name = alice", True),
        ("ka.user.name == alice", True),
        ("ka.user.name = Alice", False),
        ("ka.user.name = alic", False),
        ("ka.user.name != bob", True),
        ("ka.user.name != alice", False),
        ("ka.user.name contains lic", True),
        ("ka.user.name contains ''", True),
        ("ka.user.name contains LIC", False),
        ("ka.user.name icontains LIC", True),
        ("ka.user.name startswith al", True),
        ("ka.user.name startswith ''", True),
        ("ka.user.name startswith li", False),
        ("ka.user.name endswith ice", True),
        ("ka.user.name endswith al", False),
        ("ka.user.name in (bob, alice)", True),
        ("ka.user.name in (bob, carol)", False),
        ("ka.user.name in ()", False),
        ("ka.user.name intersects (alice)", True),
        ("ka.user.name intersects (bob)", False),
        ("ka.user.name exists", True),
    ],
)
def test_string_operators(condition: str, expected: bool) -> None:
    """Each string operator follows its C semantics on the value `alice`."""
    assert matches(condition, named("alice")) is expected


def test_icontains_folds_ascii_only() -> None:
    """icontains is strcasestr: ASCII letters fold, `É` does not match `é`."""
    assert matches("ka.user.name icontains 'ÉCOLE'", named("école")) is False
    assert matches("ka.user.name icontains 'cOlE'", named("éCOLE")) is True


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("ka.response.code > 400", True),
        ("ka.response.code >= 400", True),
        ("ka.response.code < 100", False),
        ("ka.response.code <= 99", True),
        ("ka.response.code < 99", False),
        ("ka.response.code > 99", False),
    ],
)
def test_ordering_operators_compare_text(condition: str, expected: bool) -> None:
    """`<`/`>` on string fields are strcmp: the code "99" is greater than "400"."""
    event = make_event(responseStatus={"code": 99})
    assert matches(condition, event) is expected


def test_ordering_compares_strings_lexicographically() -> None:
    """A word compared with a number literal is a byte-wise comparison of the texts."""
    assert matches("ka.verb > 400", make_event(verb="get")) is True
    assert matches("ka.verb < 400", make_event(verb="get")) is False


@pytest.mark.parametrize(
    ("pattern", "value", "expected"),
    [
        ("/api/*/pods", "/api/v1/namespaces/default/pods", True),
        ("*", "", True),
        ("a?c", "abc", True),
        ("a?c", "ac", False),
        ("a?c", "a/c", True),
        ("[ab]x", "bx", True),
        ("[ab]x", "cx", False),
        ("[!ab]x", "cx", True),
        ("[!ab]x", "ax", False),
        ("[^ab]x", "cx", True),
        ("[a-c]x", "bx", True),
        ("[]]x", "]x", True),
        ("[[:digit:]]x", "7x", True),
        ("[[:digit:]]x", "ax", False),
        ("[z-a]", "m", False),
        ("[a&&b]", "&", True),
        ("[\\\\]]", "]", True),
        ("a\\\\*", "a*", True),
        ("a\\\\*", "ab", False),
        ("a\\ ", "a\\\\", False),
        ("[ab", "[ab", True),
        ("abc", "ABC", False),
    ],
)
def test_glob_is_fnmatch_without_flags(pattern: str, value: str, expected: bool) -> None:
    """glob is fnmatch(3) with no flags: `*` crosses '/', classes, escapes, unclosed '[' literal."""
    # In the condition both `\\` and `\ ` unescape to one backslash; in `value`, `\\` stands for one.
    event = named(value.replace("\\\\", "\\"))
    assert matches(f'ka.user.name glob "{pattern}"', event) is expected


def test_iglob_folds_case() -> None:
    """iglob is glob with FNM_CASEFOLD."""
    assert matches("ka.user.name iglob 'AL*'", named("alice")) is True
    assert matches("ka.user.name glob 'AL*'", named("alice")) is False


@pytest.mark.parametrize(
    ("pattern", "expected"),
    [("get", True), ("ge", False), ("g.t", True), ("et", False), (".*e.*", True), ("get|list", True)],
)
def test_regex_is_a_full_match(pattern: str, expected: bool) -> None:
    """regex must match the whole value (ANCHOR_BOTH)."""
    assert matches(f"ka.verb regex '{pattern}'", make_event(verb="get")) is expected


def test_invalid_regex_is_a_compile_error() -> None:
    """An invalid pattern fails at compile time with BAD_OPERAND."""
    error = compile_error("ka.verb regex '('")
    assert error.code is Code.BAD_OPERAND
    assert "regular expression" in error.message


@pytest.mark.parametrize(
    ("paths", "uri", "expected"),
    [
        ("(/var/run)", "/var/run/docker.sock", True),
        ("(/var/run)", "/var/run", True),
        ("(/var/run)", "/var/runx", False),
        ("(/var/run)", "/var", False),
        ("(/etc, /var/run/)", "/var//run/x", True),
        ("(/var/*/docker.sock)", "/var/run/docker.sock/x", True),
        ("(/var/*/docker.sock)", "/var/run/other", False),
    ],
)
def test_pmatch_is_a_path_prefix_match(paths: str, uri: str, expected: bool) -> None:
    """pmatch matches when some path's components prefix the value's; glob components glob."""
    assert matches(f"ka.uri pmatch {paths}", with_uri(uri)) is expected


def test_bcontains_is_rejected_for_strings() -> None:
    """bcontains/bstartswith are byte-buffer operators: a compile error on string fields."""
    for op in ("bcontains", "bstartswith"):
        error = compile_error(f"ka.verb {op} 6765")
        assert error.code is Code.BAD_OPERATOR
        assert f"'{op}' operator not supported for string filters" in error.message


# -- list fields ----------------------------------------------------------------------------


def grouped(*groups: str) -> AuditEvent:
    """An event whose user has `groups`."""
    return make_event(user={"username": "alice", "groups": list(groups)})


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("ka.user.groups in (a, b, c)", True),
        ("ka.user.groups in (a, b)", True),
        ("ka.user.groups in (a)", False),
        ("ka.user.groups in ()", False),
        ("ka.user.groups intersects (b, z)", True),
        ("ka.user.groups intersects (z)", False),
        ("ka.user.groups exists", True),
        ("not ka.user.groups in (a)", True),
    ],
)
def test_list_field_operators(condition: str, expected: bool) -> None:
    """On list fields `in` is a subset test and `intersects` an any-overlap test."""
    assert matches(condition, grouped("a", "b")) is expected


@pytest.mark.parametrize("op", ["=", "==", "!=", "contains", "icontains", "startswith", "endswith", "glob",
                                "iglob", "regex", "pmatch"])
def test_other_operators_on_list_fields_are_compile_errors(op: str) -> None:
    """Only in, intersects and exists are allowed on a list field."""
    rhs = "(a)" if op == "pmatch" else "a"
    error = compile_error(f"ka.user.groups {op} {rhs}")
    assert error.code is Code.BAD_OPERATOR
    assert "operator not supported list filters" in error.message


def test_ordering_operators_on_list_fields_are_compile_errors() -> None:
    """`>` is rejected on a list field like every other non-list operator."""
    assert compile_error("ka.user.groups > 1").code is Code.BAD_OPERATOR


def test_containers_privileged_intersects_true() -> None:
    """`containers.privileged intersects (true)` holds when any container is privileged."""
    spec = {"containers": [{"name": "a", "image": "a"},
                           {"name": "b", "image": "b", "securityContext": {"privileged": True}}]}
    assert matches("ka.req.pod.containers.privileged intersects (true)", pod_event(spec)) is True
    quiet = {"containers": [{"name": "a", "image": "a", "securityContext": {"privileged": False}}]}
    assert matches("ka.req.pod.containers.privileged intersects (true)", pod_event(quiet)) is False


# -- absent fields (grammar.md §3.1) --------------------------------------------------------

EVERY_CHECK = [
    "= x", "== x", "!= x", "!= kube-system", "< 1", "<= 1", "> 1", ">= 1", "contains x", "icontains x",
    "startswith ''", "endswith x", "glob *", "iglob *", "regex '.*'", "in (x)", "in ()", "intersects (x)",
    "pmatch (/)", "exists", "= oneof (x, y)", "!= allof (x, y)", "startswith anyof ('', x)",
]


@pytest.mark.parametrize("rest", EVERY_CHECK)
def test_every_check_on_an_absent_field_is_false(rest: str) -> None:
    """With no objectRef.namespace, every check on ka.target.namespace is false, `!=` included."""
    event = make_event(objectRef={"resource": "namespaces"})
    assert matches(f"ka.target.namespace {rest}", event) is False
    assert matches(f"not ka.target.namespace {rest}", event) is True


def test_absent_not_equal_examples_from_the_spec() -> None:
    """`!= kube-system` is false without a namespace; `not ... exists` is true without subresource."""
    cluster_scoped = make_event(objectRef={"resource": "clusterroles"})
    assert matches("ka.target.namespace != kube-system", cluster_scoped) is False
    assert matches("not ka.target.subresource exists", cluster_scoped) is True


def test_empty_list_is_absent() -> None:
    """An empty `groups` array is absent: `exists` false, negated `in` true."""
    event = grouped()
    assert matches("ka.user.groups exists", event) is False
    assert matches("ka.user.groups intersects (a)", event) is False
    assert matches("not ka.user.groups in (a)", event) is True


def test_no_containers_makes_negated_in_true() -> None:
    """`not containers.image.repository in (...)` is true for an event with no containers."""
    event = make_event(verb="get")
    assert matches("not ka.req.pod.containers.image.repository in (nginx)", event) is True
    assert matches("ka.req.pod.containers.image.repository in (nginx)", event) is False


def test_privileged_intersects_is_false_without_security_contexts() -> None:
    """No container with securityContext.privileged makes the list empty, so absent."""
    event = pod_event({"containers": [{"name": "a", "image": "nginx"}]})
    assert matches("ka.req.pod.containers.privileged exists", event) is False
    assert matches("ka.req.pod.containers.privileged intersects (true, false)", event) is False


def test_absent_right_hand_field_makes_the_check_false() -> None:
    """`f = val(g)` is false when g is absent, and `!=` too."""
    event = make_event(impersonatedUser=DROP)
    assert matches("ka.user.name = val(ka.impuser.name)", event) is False
    assert matches("ka.user.name != val(ka.impuser.name)", event) is False


def test_val_compares_two_fields_of_the_event() -> None:
    """`val(f)` reads the right-hand value from the same event."""
    same = make_event(user={"username": "bob"}, impersonatedUser={"username": "bob"})
    other = make_event(user={"username": "bob"}, impersonatedUser={"username": "eve"})
    assert matches("ka.user.name = val(ka.impuser.name)", same) is True
    assert matches("ka.user.name = val(ka.impuser.name)", other) is False
    assert matches("ka.user.name != val(ka.impuser.name)", other) is True


def test_list_field_on_the_right_of_in() -> None:
    """A list field after `in` feeds the set: the user name must be one of the groups."""
    assert matches("ka.user.name in val(ka.user.groups)", grouped("x", "alice")) is True
    assert matches("ka.user.name in val(ka.user.groups)", grouped("x")) is False


def test_field_on_the_right_of_regex_is_rejected() -> None:
    """regex and pmatch do not accept a field right-hand side."""
    assert compile_error("ka.verb regex val(ka.user.name)").code is Code.BAD_OPERATOR


# -- transformers ---------------------------------------------------------------------------


def test_tolower_applies_before_comparing() -> None:
    """`tolower(f) = x` compares the lowered value."""
    assert matches("tolower(ka.user.name) = alice", named("ALICE")) is True
    assert matches("toupper(ka.user.name) = ALICE", named("alice")) is True


def test_len_counts_list_elements_numerically() -> None:
    """`len(list)` is the element count and compares as a number."""
    event = grouped(*"abcdefghijk")
    assert matches("len(ka.user.groups) = 11", event) is True
    assert matches("len(ka.user.groups) > 9", event) is True


def test_unsupported_transformer_is_a_compile_error() -> None:
    """A transformer detector does not implement fails to compile."""
    assert compile_error("getopt(ka.verb) = x").code is Code.CONDITION_SYNTAX


# -- ipaddr fields --------------------------------------------------------------------------


def from_ips(*ips: str) -> AuditEvent:
    """An event with these sourceIPs (client first, last proxy last)."""
    return make_event(sourceIPs=list(ips))


@pytest.mark.parametrize(
    ("condition", "ips", "expected"),
    [
        ("ka.sourceips intersects (10.0.0.0/8)", ("10.1.2.3",), True),
        ("ka.sourceips intersects (10.0.0.0/8, 192.168.0.0/16)", ("8.8.8.8", "192.168.1.1"), True),
        ("ka.sourceips in (10.0.0.0/8, 192.168.0.0/16)", ("8.8.8.8", "192.168.1.1"), False),
        ("ka.sourceips in (10.0.0.0/8, 192.168.0.0/16)", ("10.0.0.1", "192.168.1.1"), True),
        ("ka.sourceips intersects ('fd00::/8')", ("fd12::1",), True),
        ("ka.sourceips intersects ('fd00::/8')", ("fe80::1",), False),
        ("ka.sourceips intersects (10.0.0.0/8)", ("::ffff:10.9.9.9",), True),
        ("ka.sourceips intersects (10.0.0.0/8)", ("not-an-ip",), False),
        ("ka.sourceip.first = 10.0.0.0/8", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.sourceip.last = 10.0.0.0/8", ("10.0.0.1", "172.16.0.1"), False),
        ("ka.sourceip.last in (172.16.0.0/12)", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.sourceip.last = 172.16.0.1", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.sourceip.last != 10.0.0.0/8", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.client.ip = 172.16.0.0/12", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.client.ip[1] = 10.0.0.0/8", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.client.ip[5] = 10.0.0.0/8", ("10.0.0.1", "172.16.0.1"), True),
        ("ka.client.ip in (10.0.0.0/8)", ("garbage",), False),
    ],
)
def test_ipaddr_fields_test_network_membership(condition: str, ips: tuple[str, ...], expected: bool) -> None:
    """`=`/`in`/`intersects` against CIDRs test membership (IPv4, IPv6, IPv4-mapped, bad input)."""
    assert matches(condition, from_ips(*ips)) is expected


def test_client_ip_skips_trusted_proxies() -> None:
    """With one trusted proxy, ka.client.ip is the address before the last."""
    event = from_ips("203.0.113.9", "10.0.0.2")
    assert matches("ka.client.ip = 203.0.113.9", event, FieldOptions(trusted_proxies=1)) is True
    assert matches("ka.client.ip = 203.0.113.9", event) is False


def test_invalid_network_in_a_rule_is_a_compile_error() -> None:
    """A CIDR that does not parse is rejected at load time."""
    assert compile_error("ka.sourceips intersects (10.0.0.0/33)").code is Code.BAD_OPERAND


def test_ipaddr_field_with_non_address_values_compares_strings() -> None:
    """A list of words against an ipaddr field is a plain string membership."""
    assert matches("ka.sourceip.last in (localhost)", from_ips("localhost")) is True


# -- modifiers ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("condition", "expected"),
    [
        ("ka.uri startswith oneof (/api, /apis)", True),
        ("ka.uri startswith oneof (/api, /api/v1)", False),
        ("ka.uri startswith anyof (/x, /api/v1)", True),
        ("ka.uri startswith anyof (/x, /y)", False),
        ("ka.uri startswith allof (/api, /api/v1)", True),
        ("ka.uri startswith allof (/api, /x)", False),
        ("ka.uri contains oneof (pods, pod)", False),
        ("ka.uri = oneof (/api/v1/pods, /x)", True),
        ("ka.uri glob anyof ('*/pods', '*/secrets')", True),
    ],
)
def test_modifiers_count_matching_elements(condition: str, expected: bool) -> None:
    """oneof = exactly one element matches, anyof = at least one, allof = every one."""
    assert matches(condition, with_uri("/api/v1/pods")) is expected


# -- fields and arguments -------------------------------------------------------------------


def test_unknown_field_is_a_compile_error() -> None:
    """A field not in the table fails with UNKNOWN_FIELD naming it."""
    error = compile_error("ka.nope = x")
    assert error.code is Code.UNKNOWN_FIELD
    assert "ka.nope" in error.message


@pytest.mark.parametrize(
    ("condition", "words"),
    [
        ("ka.uri.param exists", "requires an argument"),
        ("jevt.value exists", "requires an argument"),
        ("ka.verb[1] exists", "does not allow nor require an argument"),
        ("ka.req.pod.containers.image[01] exists", "non-negative integer"),
        ("ka.req.pod.containers.image[-1] exists", "non-negative integer"),
        ("ka.req.pod.containers.image[x] exists", "non-negative integer"),
        ("ka.client.ip[01] exists", "non-negative integer"),
        ("jmes.value['a[['] exists", "JMESPath"),
    ],
)
def test_field_argument_errors(condition: str, words: str) -> None:
    """Missing required args, args on no-arg fields and bad indexes are BAD_FIELD_ARG."""
    error = compile_error(condition)
    assert error.code is Code.BAD_FIELD_ARG
    assert words in error.message


def test_index_zero_is_valid() -> None:
    """`[0]` is the one index allowed to start with 0."""
    event = pod_event({"containers": [{"name": "a", "image": "nginx"}, {"name": "b", "image": "redis"}]})
    assert matches("ka.req.pod.containers.image[0] in (nginx)", event) is True
    assert matches("ka.req.pod.containers.image[1] in (nginx)", event) is False


def test_macro_reference_left_in_the_tree_is_a_compile_error() -> None:
    """An unexpanded macro reaching the compiler is UNDEFINED_MACRO."""
    with pytest.raises(CompileError) as caught:
        Compiler().compile(MacroRef("nope"))
    assert caught.value.code is Code.UNDEFINED_MACRO


def test_comparing_with_na_warns() -> None:
    """`= <NA>` compiles but leaves an NA_CHECK warning (absent fields never equal <NA>)."""
    compiler = Compiler()
    compiler.compile(parse_condition("ka.target.namespace = <NA>"))
    assert [code for code, _ in compiler.warnings] == [Code.NA_CHECK]


def test_boolean_connectives() -> None:
    """and/or/not combine checks as booleans."""
    event = make_event(verb="get")
    assert matches("ka.verb = get and ka.user.name = alice", event) is True
    assert matches("ka.verb = list or ka.user.name = alice", event) is True
    assert matches("ka.verb = list or not ka.user.name = alice", event) is False
    assert matches("ka.verb = a or ka.verb = b or ka.verb = c or ka.verb = get", event) is True
    assert matches("ka.verb exists and ka.verb exists and ka.verb exists and ka.verb = x", event) is False


# == property tests ==========================================================================
#
# A tiny reference interpreter written from grammar.md, working on the raw event dict, must
# agree with the compiled predicate on random conditions and random events.

STRING_FIELDS = ("ka.verb", "ka.user.name", "ka.target.namespace", "ka.response.code")
LIST_FIELDS = ("ka.user.groups", "ka.req.pod.containers.image")
POOL = ("get", "GET", "create", "kube-system", "default", "a/b", "a/b/c", "/a", "", "x", "X*", "system:masters",
        "nginx", "nginx:1.2", "99", "201", "400", "4000", "é")
NUMBERS = ("0", "99", "201", "2", "400", "1000")
GLOB_TOKENS = ("*", "?", "a", "b", "/", "x", "[ab]", "[!a]", "[a-c]", "\\*", "\\a", ":")
REGEXES = ("get", "g.*", "[a-z]+", "a|b", ".*/.*", "(ab)*", "", "[0-9]+")
PMATCH_PATHS = ("/a", "/a/b", "/", "a", "/a/*", "/x", "/*/b")
MODIFIED_OPS = ("=", "!=", "contains", "icontains", "startswith", "endswith", "glob")

# Tiny alphabets so that equal, prefix, suffix and substring relations happen often.
values = st.one_of(st.sampled_from(POOL), st.text(alphabet="abA/*", max_size=3))
globs = st.lists(st.sampled_from(GLOB_TOKENS), max_size=4).map("".join)


def rhs_for(op: str, consts: st.SearchStrategy[str]) -> st.SearchStrategy[str]:
    """Constants that make sense for a string operator."""
    return st.one_of(globs, consts) if op in ("glob", "iglob") else consts


SINGLE_OPS = ("=", "==", "!=", "<", "<=", ">", ">=", "contains", "icontains", "startswith", "endswith", "glob",
              "iglob", "regex", "in", "intersects", "pmatch", "exists", "modifier", "val")


@st.composite
def string_checks(draw: st.DrawFn, op: str | None = None, consts: st.SearchStrategy[str] = values,
                  field: str | None = None) -> Check:
    """A check on a single-valued field with `op` (default: any field and operator for strings)."""
    lhs = FieldRef(field or draw(st.sampled_from(STRING_FIELDS)))
    op = op or draw(st.sampled_from(SINGLE_OPS))
    if op in ("<", "<=", ">", ">="):
        return Check(lhs, op, draw(st.sampled_from(NUMBERS)))
    if op == "regex":
        return Check(lhs, op, draw(st.sampled_from(REGEXES)))
    if op in ("in", "intersects"):
        return Check(lhs, op, tuple(draw(st.lists(consts, max_size=3))))
    if op == "pmatch":
        return Check(lhs, op, tuple(draw(st.lists(st.sampled_from(PMATCH_PATHS), min_size=1, max_size=2))))
    if op == "exists":
        return Check(lhs, op)
    if op == "modifier":
        op = draw(st.sampled_from(MODIFIED_OPS))
        items = tuple(draw(st.lists(rhs_for(op, consts), max_size=3)))
        return Check(lhs, op, items, draw(st.sampled_from(("oneof", "anyof", "allof"))))
    if op == "val":
        other = FieldRef(draw(st.sampled_from(STRING_FIELDS)))
        return Check(lhs, draw(st.sampled_from(("=", "!=", "startswith"))), Transform("val", (other,)))
    return Check(lhs, op, draw(rhs_for(op, consts)))


LIST_OPS = ("in", "intersects", "exists")


@st.composite
def list_checks(draw: st.DrawFn, op: str | None = None, consts: st.SearchStrategy[str] = values,
                field: str | None = None) -> Check:
    """A check on a list field with `op` (default: any list field; in, intersects or exists)."""
    lhs = FieldRef(field or draw(st.sampled_from(LIST_FIELDS)))
    op = op or draw(st.sampled_from(LIST_OPS))
    if op == "exists":
        return Check(lhs, op)
    return Check(lhs, op, tuple(draw(st.lists(consts, max_size=3))))


def trees(leaves: st.SearchStrategy[Node]) -> st.SearchStrategy[Node]:
    """Random and/or/not trees over `leaves` (and/or always have at least two items)."""
    return st.recursive(
        leaves,
        lambda children: st.one_of(
            st.lists(children, min_size=2, max_size=3).map(lambda items: And(tuple(items))),
            st.lists(children, min_size=2, max_size=3).map(lambda items: Or(tuple(items))),
            children.map(Not),
        ),
        max_leaves=6,
    )


single_checks = st.one_of(string_checks(), list_checks())
flat_checks = st.lists(single_checks, min_size=2, max_size=4)
# Flat and/or/not over checks as often as deep trees, so that most checks matter to the verdict.
conditions = st.one_of(flat_checks.map(lambda items: And(tuple(items))),
                       flat_checks.map(lambda items: Or(tuple(items))), single_checks.map(Not), trees(single_checks))


def present(draw: st.DrawFn) -> bool:
    """Whether to include a part of the event (three times out of four)."""
    return draw(st.integers(0, 3)) > 0


@st.composite
def raw_events(draw: st.DrawFn) -> dict[str, Any]:
    """An audit event dict with each of the six fields present or not."""
    body: dict[str, Any] = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": "id-1",
                            "stage": "ResponseComplete", "stageTimestamp": "2024-05-01T12:00:00Z"}
    if present(draw):
        body["verb"] = draw(values)
    user: dict[str, Any] = {}
    if present(draw):
        user["username"] = draw(values)
    if present(draw):
        user["groups"] = draw(st.lists(values, max_size=3))
    if user or draw(st.booleans()):
        body["user"] = user
    if present(draw):
        body["objectRef"] = {"resource": "pods", "namespace": draw(values)}
    if present(draw):
        body["responseStatus"] = {"code": draw(st.one_of(st.sampled_from((99, 201, 400, 1000)),
                                                         st.integers(0, 1200)))}
    if present(draw):
        with_image = values.map(lambda image: {"name": "c", "image": image})
        container = st.one_of(with_image, with_image, st.just({"name": "c"}))
        body["requestObject"] = {"kind": "Pod", "spec": {"containers": draw(st.lists(container, max_size=3))}}
    return body


def related(value: str | tuple[str, ...] | None) -> st.SearchStrategy[str]:
    """Constants related to a field value, so that checks often hit: the elements of a list; the
    substrings of a string, and the whole string in other cases."""
    if value is None:
        return values
    if isinstance(value, tuple):
        return st.one_of(values, st.sampled_from(sorted(set(value))))
    parts = st.sampled_from(sorted({value[i:j] for i in range(len(value) + 1) for j in range(i, len(value) + 1)}))
    return st.one_of(values, parts, st.sampled_from((value, value.swapcase(), value.upper())))


# -- the reference interpreter ---------------------------------------------------------------


def ref_value(field: str, body: dict[str, Any]) -> str | tuple[str, ...] | None:
    """fields.md: the field's value in the raw event; None when absent (empty list = absent)."""
    user = body.get("user", {})
    if field == "ka.verb":
        return body.get("verb")
    if field == "ka.user.name":
        return user.get("username")
    if field == "ka.target.namespace":
        return body.get("objectRef", {}).get("namespace")
    if field == "ka.response.code":
        code = body.get("responseStatus", {}).get("code")
        return None if code is None else str(code)
    if field == "ka.user.groups":
        return tuple(user["groups"]) if user.get("groups") else None
    containers = body.get("requestObject", {}).get("spec", {}).get("containers")
    if not containers or any("image" not in c for c in containers):
        return None
    return tuple(c["image"] for c in containers)


def ascii_lower(text: str) -> str:
    """C tolower on each character."""
    return "".join(chr(ord(c) + 32) if "A" <= c <= "Z" else c for c in text)


def ref_glob(pattern: str, text: str) -> bool:
    """fnmatch(3), flags 0, for the patterns GLOB_TOKENS can build (backtracking matcher)."""
    if not pattern:
        return not text
    head = pattern[0]
    if head == "*":
        return any(ref_glob(pattern[1:], text[k:]) for k in range(len(text) + 1))
    if not text:
        return False
    if head == "?":
        return ref_glob(pattern[1:], text[1:])
    if head == "\\":
        return text[0] == pattern[1] and ref_glob(pattern[2:], text[1:])
    if head == "[":
        end = pattern.index("]", 2)
        body = pattern[1:end]
        negate = body.startswith("!")
        body = body.removeprefix("!")
        hit = body[0] <= text[0] <= body[2] if "-" in body else text[0] in body
        return hit != negate and ref_glob(pattern[end + 1 :], text[1:])
    return head == text[0] and ref_glob(pattern[1:], text[1:])


def ref_pmatch(path: str, value: str) -> bool:
    """grammar.md pmatch: the path's non-empty components prefix the value's."""
    want = [c for c in path.split("/") if c]
    have = [c for c in value.split("/") if c]
    return len(want) <= len(have) and all(
        ref_glob(w, h) if "*" in w else w == h for w, h in zip(want, have, strict=False))


def ref_compare(op: str, value: str, const: str) -> bool:
    """grammar.md §3 table, on bytes (strcmp/strstr/strcasestr/fnmatch/RE2 full match)."""
    a, b = value.encode(), const.encode()
    results = {
        "=": a == b, "==": a == b, "!=": a != b, "<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b,
        "contains": b in a, "startswith": a.startswith(b), "endswith": a.endswith(b),
    }
    if op in results:
        return results[op]
    if op == "icontains":
        return ascii_lower(const) in ascii_lower(value)
    if op == "glob":
        return ref_glob(const, value)
    if op == "iglob":
        return ref_glob(ascii_lower(const), ascii_lower(value))
    assert op == "regex"
    return re.fullmatch(const, value) is not None


def ref_check(check: Check, body: dict[str, Any]) -> bool:
    """One check: absent => false; list fields: in = subset, intersects = overlap."""
    assert isinstance(check.lhs, FieldRef)
    value = ref_value(check.lhs.name, body)
    if value is None:
        return False
    if check.op == "exists":
        return True
    rhs = check.rhs
    if isinstance(rhs, Transform):
        other = ref_value(rhs.args[0].name, body)  # type: ignore[union-attr]
        return other is not None and isinstance(other, str) and ref_compare(check.op, value, other)  # type: ignore[arg-type]
    assert isinstance(rhs, tuple | str)
    if isinstance(value, tuple):
        wanted = set(rhs)
        return all(v in wanted for v in value) if check.op == "in" else any(v in wanted for v in value)
    if check.modifier is not None:
        hits = sum(ref_compare(check.op, value, item) for item in rhs)
        return {"oneof": hits == 1, "anyof": hits >= 1, "allof": hits == len(rhs)}[check.modifier]
    if check.op in ("in", "intersects"):
        return value in rhs
    if check.op == "pmatch":
        return any(ref_pmatch(path, value) for path in rhs)
    assert isinstance(rhs, str)
    return ref_compare(check.op, value, rhs)


def ref_eval(node: Node, body: dict[str, Any]) -> bool:
    """Boolean structure of the reference interpreter."""
    match node:
        case And(items):
            return all(ref_eval(item, body) for item in items)
        case Or(items):
            return any(ref_eval(item, body) for item in items)
        case Not(item):
            return not ref_eval(item, body)
        case Check():
            return ref_check(node, body)
    raise AssertionError(node)


@pytest.mark.parametrize("op", [*SINGLE_OPS, *(f"list {op}" for op in LIST_OPS)])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_compiled_check_agrees_with_reference(op: str, data: st.DataObject) -> None:
    """Per operator, on random checks and events, the compiled check equals the reference interpreter."""
    body = data.draw(raw_events(), label="event")
    event = event_from(body)
    is_list = op.startswith("list ")
    for field in LIST_FIELDS if is_list else STRING_FIELDS:
        consts = related(ref_value(field, body))
        checks = list_checks(op[5:], consts, field) if is_list else string_checks(op, consts, field)
        for node in data.draw(st.lists(checks, min_size=1, max_size=4), label=field):
            assert Compiler().compile(node)(event) is ref_check(node, body), node


@settings(max_examples=200, deadline=None)
@given(conditions, raw_events())
def test_compiled_predicate_agrees_with_reference(node: Node, body: dict[str, Any]) -> None:
    """For random conditions and events, the compiled predicate equals the reference interpreter."""
    predicate = Compiler().compile(node)
    assert predicate(event_from(body)) is ref_eval(node, body)


@settings(max_examples=80, deadline=None)
@given(conditions, raw_events())
def test_compiling_the_printed_condition_gives_the_same_answer(node: Node, body: dict[str, Any]) -> None:
    """Printing a condition, parsing and compiling it again does not change its verdict."""
    again = Compiler().compile(parse_condition(to_text(node)))
    assert again(event_from(body)) is ref_eval(node, body)


# -- round trip ------------------------------------------------------------------------------

any_text = st.text(st.characters(codec="utf-8"), max_size=6)
field_refs = st.one_of(
    st.sampled_from(("ka.verb", "ka.user.groups", "a.b", "x1.y_2.z")).map(FieldRef),
    st.builds(FieldRef, st.sampled_from(("jevt.value", "jmes.value", "ka.uri.param")), any_text),
)
field_exprs = st.one_of(
    field_refs,
    st.builds(lambda f, inner: Transform(f, (inner,)), st.sampled_from(("tolower", "toupper", "len", "b64")),
              field_refs),
)
numbers = st.from_regex(r"0[xX][0-9a-fA-F]{1,3}|[+\-]?[0-9]{1,3}(\.[0-9]{0,2})?([eE][+\-][0-9])?", fullmatch=True)
val_rhs = field_refs.map(lambda f: Transform("val", (f,)))
text_tuples = st.lists(any_text, max_size=3).map(tuple)


@st.composite
def any_checks(draw: st.DrawFn) -> Check:
    """Checks the parser can produce, with arbitrary (unicode, quote-laden) values."""
    lhs = draw(field_exprs)
    kind = draw(st.sampled_from(("exists", "num", "str", "list", "modifier")))
    if kind == "exists":
        return Check(lhs, "exists")
    if kind == "num":
        return Check(lhs, draw(st.sampled_from(("<", "<=", ">", ">="))), draw(st.one_of(numbers, val_rhs)))
    if kind == "str":
        op = draw(st.sampled_from(("=", "==", "!=", "contains", "icontains", "bcontains", "startswith",
                                   "bstartswith", "endswith", "glob", "iglob", "regex")))
        return Check(lhs, op, draw(st.one_of(any_text, val_rhs, field_exprs.filter(
            lambda e: isinstance(e, Transform)))))
    if kind == "list":
        return Check(lhs, draw(st.sampled_from(("in", "intersects", "pmatch"))), draw(st.one_of(text_tuples, val_rhs)))
    op = draw(st.sampled_from(("=", "!=", "contains", "startswith", "glob")))
    return Check(lhs, op, draw(text_tuples), draw(st.sampled_from(("oneof", "anyof", "allof"))))


macro_refs = st.from_regex(r"[a-zA-Z][a-zA-Z0-9_]{0,5}", fullmatch=True).filter(
    lambda name: name not in ("and", "or", "not")).map(MacroRef)


@settings(max_examples=200, deadline=None)
@given(trees(st.one_of(any_checks(), macro_refs)))
def test_to_text_round_trips(node: Node) -> None:
    """parse_condition(to_text(ast)) == ast for every tree the parser can produce."""
    assert parse_condition(to_text(node)) == node
