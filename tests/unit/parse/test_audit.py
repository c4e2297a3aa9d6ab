"""parse_line / parse_document against fields.md §4: what the k8saudit plugin accepts as events."""

from __future__ import annotations

import gc
from datetime import UTC, datetime
from typing import Any

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from detector.errors import BadInput
from detector.event import AuditEvent
from detector.parse.audit import MAX_BLOCK_LINES, NOT_AN_EVENT, parse_block, parse_document, parse_line
from detector.parse.fields import FIELDS
from detector.parse.fieldspec import ArgKind, FieldOptions
from tests.support.deepjson import nested_object
from tests.unit.eventkit import DROP, SHARED_DIR, TRACES_DIR, event_dict

AUDIT2RBAC_LOG = SHARED_DIR / "k8s" / "data" / "audit2rbac" / "demo.log"
needs_audit2rbac = pytest.mark.skipif(
    not AUDIT2RBAC_LOG.is_file(), reason=f"{AUDIT2RBAC_LOG} not found (../shared is absent)")
needs_traces = pytest.mark.skipif(
    not TRACES_DIR.is_dir(), reason=f"Falco k8s_audit trace files not found at {TRACES_DIR} (../shared is absent)")


def line(**overrides: Any) -> bytes:
    """One JSON line holding the base event with `overrides`."""
    return orjson.dumps(event_dict(**overrides))


def bad(data: bytes) -> BadInput:
    """The BadInput parse_line raises for `data` (fails the test when it parses)."""
    with pytest.raises(BadInput) as caught:
        parse_line(data)
    return caught.value


def test_v1_event_line() -> None:
    """A v1 Event line becomes one AuditEvent with typed hot fields and its stage time."""
    event = parse_line(line(verb="get", objectRef={"resource": "pods", "namespace": "ns", "name": "p"}))
    assert isinstance(event, AuditEvent)
    assert (event.kind, event.apiVersion, event.verb) == ("Event", "audit.k8s.io/v1", "get")
    assert (event.objectRef.resource, event.objectRef.namespace, event.objectRef.name) == ("pods", "ns", "p")
    assert event.user.username == "alice"
    assert event.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)


def test_v1beta1_event_line() -> None:
    """apiVersion is not checked: a v1beta1 event parses the same way."""
    event = parse_line(line(apiVersion="audit.k8s.io/v1beta1", timestamp="2018-10-25T14:09:12Z"))
    assert isinstance(event, AuditEvent)
    assert event.apiVersion == "audit.k8s.io/v1beta1"


@needs_traces
def test_every_falco_trace_line_parses_except_fal_01_003() -> None:
    """All 46 real trace files parse into events; fal_01_003.json is the rejected `{"kind": 0}`."""
    parsed = 0
    for path in sorted(TRACES_DIR.glob("*.json")):
        for raw in filter(bytes.strip, path.read_bytes().splitlines()):
            if path.name == "fal_01_003.json":
                assert bad(raw).reason == "not_audit_event"
                continue
            assert isinstance(parse_line(raw), AuditEvent), path.name
            parsed += 1
    assert parsed >= 46


def test_the_body_is_parsed_lazily_and_complete() -> None:
    """body() returns the whole original event, including keys the hot path ignores."""
    data = event_dict(requestObject={"spec": {"a": [1, 2]}}, custom={"x": True})
    event = parse_line(orjson.dumps(data))
    assert isinstance(event, AuditEvent)
    assert event.body() == data


def test_event_list_line_yields_its_events_in_order() -> None:
    """An EventList on one line yields a list of its items."""
    items = [event_dict(auditID="one", verb="get"), event_dict(auditID="two", verb="list")]
    events = parse_line(orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": items}))
    assert isinstance(events, list)
    assert [(e.auditID, e.verb) for e in events] == [("one", "get"), ("two", "list")]


def test_array_line_yields_events_recursively() -> None:
    """A JSON array of events and EventLists yields every event, flattened."""
    payload = [event_dict(auditID="a"), {"kind": "EventList", "items": [event_dict(auditID="b")]},
               [event_dict(auditID="c")]]
    events = parse_line(orjson.dumps(payload))
    assert isinstance(events, list)
    assert [e.auditID for e in events] == ["a", "b", "c"]


def test_empty_event_list_yields_nothing() -> None:
    """An EventList without items is an empty list, not an error."""
    assert parse_line(b'{"kind":"EventList","items":[]}') == []


def test_kind_zero_is_not_an_audit_event() -> None:
    """`{"kind": 0}` (FAL-01-003) is rejected with Falco's message."""
    error = bad(b'{"kind": 0}')
    assert error.reason == "not_audit_event"
    assert "data not recognized as a k8s audit event" in error.message


@pytest.mark.parametrize("kind", [b'"Pod"', b"null", b'"event"', b'["Event"]'])
def test_other_kinds_are_not_audit_events(kind: bytes) -> None:
    """Only the exact string `Event` (or `EventList`) is accepted as kind."""
    error = bad(b'{"kind": ' + kind + b', "auditID": "a", "stageTimestamp": "2024-05-01T12:00:00Z"}')
    assert error.reason == "not_audit_event"
    assert NOT_AN_EVENT in error.message


@pytest.mark.parametrize("data", [b"{", b'{"kind": "Event",}', b"{'kind': 'Event'}", b'{"a":1} trailing'])
def test_invalid_json(data: bytes) -> None:
    """Text that is not JSON is BadInput `invalid_json`."""
    assert bad(data).reason == "invalid_json"


@pytest.mark.parametrize("data", [b"42", b'"Event"', b"null", b"true"])
def test_non_object_json(data: bytes) -> None:
    """A JSON scalar is not an event."""
    error = bad(data)
    assert error.reason in ("not_object", "not_audit_event")
    assert NOT_AN_EVENT in error.message


def test_array_of_non_events_is_rejected() -> None:
    """An array holding a non-event reports it."""
    assert bad(b"[1]").reason == "not_audit_event"


def test_binary_garbage() -> None:
    """Bytes that are not UTF-8 JSON are BadInput."""
    assert bad(b"\xff\xfe\x00garbage\x80").reason == "invalid_json"


def test_blank_line() -> None:
    """A blank line is BadInput `blank_line`."""
    assert bad(b"  \t ").reason == "blank_line"


def test_missing_stage_timestamp() -> None:
    """An event needs stageTimestamp (it becomes the event time)."""
    assert bad(line(stageTimestamp=DROP)).reason == "missing_timestamp"


@pytest.mark.parametrize("verb", ["get", 5])  # 5: the lenient path keeps the fallbacks too
def test_event_without_stage_timestamp_falls_back_to_its_v1beta1_times(verb: object) -> None:
    """Before k8s 1.9 (and in v1 lines relabelled from v1beta1) there is no stageTimestamp: the
    stage time is metadata.creationTimestamp, else timestamp; stageTimestamp then holds it."""
    both = parse_line(line(stageTimestamp=DROP, verb=verb, metadata={"creationTimestamp": "2017-09-11T19:55:06Z"},
                           timestamp="2017-09-11T19:55:05Z"))
    assert isinstance(both, AuditEvent)
    assert both.time == datetime(2017, 9, 11, 19, 55, 6, tzinfo=UTC)
    assert both.stageTimestamp == "2017-09-11T19:55:06Z"
    only = parse_line(line(stageTimestamp=DROP, verb=verb, metadata={"creationTimestamp": None},
                           timestamp="2017-09-11T19:55:05Z"))
    assert isinstance(only, AuditEvent)
    assert only.time == datetime(2017, 9, 11, 19, 55, 5, tzinfo=UTC)
    newer = parse_line(line(verb=verb, timestamp="2017-09-11T19:55:05Z"))
    assert isinstance(newer, AuditEvent)
    assert newer.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)  # stageTimestamp wins
    assert bad(line(stageTimestamp=DROP, verb=verb, timestamp="soon")).reason == "bad_timestamp"


@needs_audit2rbac
def test_the_audit2rbac_demo_log_parses_whole() -> None:
    """A real log of v1-labelled lines with only v1beta1 times: all 37 events, none rejected."""
    events = [parse_line(raw) for raw in AUDIT2RBAC_LOG.read_bytes().splitlines()]
    assert len(events) == 37
    assert all(isinstance(e, AuditEvent) and e.time is not None and e.time.year == 2017 for e in events)


@pytest.mark.parametrize("timestamp", ["yesterday", "2024-05-01T12:00:00", "2024-13-01T12:00:00Z",
                                       "2024-05-01 12:00:00Z", "", "2024-05-01"])
def test_unparsable_stage_timestamp(timestamp: str) -> None:
    """A stageTimestamp that is not RFC 3339 with a zone is BadInput `bad_timestamp`."""
    assert bad(line(stageTimestamp=timestamp)).reason == "bad_timestamp"


def test_non_string_stage_timestamp_is_bad() -> None:
    """A number as stageTimestamp is not a timestamp."""
    assert bad(line(stageTimestamp=5)).reason == "bad_timestamp"


def test_number_where_a_string_belongs_is_its_json_text() -> None:
    """`"verb": 5` takes the lenient path and ka.verb is the text `5` (Falco's JSON-to-text rule)."""
    event = parse_line(line(verb=5, user={"username": 7, "groups": ["g", 1]}, annotations={"k": {"n": 1}}))
    assert isinstance(event, AuditEvent)
    assert FIELDS["ka.verb"].build(None, FieldOptions())(event) == "5"
    assert FIELDS["ka.user.name"].build(None, FieldOptions())(event) == "7"
    assert FIELDS["ka.user.groups"].build(None, FieldOptions())(event) == ("g", "1")
    assert FIELDS["jevt.value"].build("/annotations/k", FieldOptions())(event) == '{"n":1}'


@pytest.mark.parametrize("verb", ["get", 5])  # the typed path keeps the groups' JSON; the lenient one rebuilds it
@pytest.mark.parametrize(("groups", "expected"), [
    (["g", 2, None], ("g", "2", "null")), ([], None), (None, None), ("one", None), (DROP, None)])
def test_groups_read_as_text_on_both_paths(verb: object, groups: object, expected: object) -> None:
    """A user's groups stay JSON until read; then, as in Falco, every item is its text, and an
    empty list, null, a non-list or no groups at all are absent."""
    user = {"username": "u", "groups": groups} if groups is not DROP else {"username": "u"}
    event = parse_line(line(verb=verb, user=user, impersonatedUser=user))
    assert isinstance(event, AuditEvent)
    assert FIELDS["ka.user.groups"].build(None, FieldOptions())(event) == expected
    assert FIELDS["ka.impuser.groups"].build(None, FieldOptions())(event) == expected


@pytest.mark.parametrize("verb", ["get", 5])  # the typed path keeps the annotations' JSON; the lenient one a map
def test_annotations_read_as_text_on_both_paths(verb: object) -> None:
    """Annotations are decoded when a field reads one; any JSON value is its text, as in Falco."""
    event = parse_line(line(verb=verb, annotations={"authorization.k8s.io/decision": "allow", "n": 7, "z": None}))
    assert isinstance(event, AuditEvent)
    get = FIELDS["jevt.value"].build
    assert FIELDS["ka.auth.decision"].build(None, FieldOptions())(event) == "allow"
    assert (get("/annotations/n", FieldOptions())(event), get("/annotations/z", FieldOptions())(event)) == (
        "7", "null")
    assert get("/annotations/missing", FieldOptions())(event) is None
    for odd in ("text", [1], None):
        assert FIELDS["ka.auth.decision"].build(None, FieldOptions())(parse_line(line(annotations=odd))) is None


def test_wrongly_typed_containers_are_ignored() -> None:
    """A `user` or `objectRef` that is not an object parses, with those fields absent."""
    event = parse_line(line(user="bob", objectRef=["pods"], sourceIPs="1.2.3.4"))
    assert isinstance(event, AuditEvent)
    assert event.user.username is None
    assert event.objectRef.resource is None
    assert FIELDS["ka.sourceips"].build(None, FieldOptions())(event) is None


def test_parse_document_reports_each_item() -> None:
    """parse_document keeps going past a bad item and returns it as a BadInput in place."""
    body = {"kind": "EventList", "items": [event_dict(auditID="a"), event_dict(stageTimestamp=DROP),
                                           event_dict(auditID="c")]}
    results = parse_document(orjson.dumps(body))
    assert [type(r).__name__ for r in results] == ["AuditEvent", "BadInput", "AuditEvent"]
    assert isinstance(results[1], BadInput) and results[1].reason == "missing_timestamp"


def test_parse_document_rejects_invalid_json() -> None:
    """A document that is not JSON raises BadInput."""
    with pytest.raises(BadInput) as caught:
        parse_document(b"not json")
    assert caught.value.reason == "invalid_json"


def test_event_list_line_keeps_good_events_past_a_bad_one() -> None:
    """One event without stageTimestamp in an EventList line does not lose the others; it is reported."""
    items = [event_dict(auditID="a"), event_dict(stageTimestamp=DROP), event_dict(auditID="c")]
    reported: list[BadInput] = []
    events = parse_line(orjson.dumps({"kind": "EventList", "items": items}), reported.append)
    assert isinstance(events, list)
    assert [e.auditID for e in events] == ["a", "c"]
    assert [r.reason for r in reported] == ["missing_timestamp"]


# -- robustness properties --------------------------------------------------------------------

json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**63), 2**63 - 1) | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=8),
    lambda children: st.lists(children, max_size=3) | st.dictionaries(st.text(max_size=6), children, max_size=3),
    max_leaves=8,
)
TOP_KEYS = ("kind", "auditID", "stage", "verb", "user", "impersonatedUser", "sourceIPs", "objectRef",
            "responseStatus", "annotations", "requestURI", "stageTimestamp", "level", "userAgent",
            "requestObject", "responseObject")
SPEC_KEYS = ("containers", "initContainers", "ephemeralContainers", "volumes", "ports", "securityContext",
             "hostNetwork")


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_random_bytes_only_ever_raise_bad_input(data: bytes) -> None:
    """Whatever the bytes, parse_line returns events or raises BadInput, nothing else."""
    try:
        result = parse_line(data)
    except BadInput as error:
        assert error.reason
        return
    events = result if isinstance(result, list) else [result]
    assert all(isinstance(e, AuditEvent) for e in events)


@settings(max_examples=300, deadline=None)
@given(st.lists(st.tuples(st.sampled_from(TOP_KEYS), json_values), max_size=4),
       st.lists(st.tuples(st.sampled_from(SPEC_KEYS), json_values), max_size=3))
def test_odd_json_values_parse_or_fail_cleanly_and_fields_never_raise(
        top: list[tuple[str, Any]], spec: list[tuple[str, Any]]) -> None:
    """Random JSON in any hot or pod-spec position: parse_line raises only BadInput, and every
    field then extracts None, text or a tuple of text without raising."""
    body = event_dict(requestObject={"kind": "Pod", "spec": dict(spec)})
    body.update(dict(top))
    try:
        result = parse_line(orjson.dumps(body))
    except BadInput:
        return
    for event in result if isinstance(result, list) else [result]:
        for name, field in FIELDS.items():
            arg = {ArgKind.KEY: "verb" if name.startswith("jmes.") else "/verb", ArgKind.INDEX: "0",
                   ArgKind.NONE: None}[field.arg]
            for argument in {arg, None if field.arg is ArgKind.INDEX else arg}:
                got = field.build(argument, FieldOptions())(event)
                assert got is None or isinstance(got, str) or (
                    isinstance(got, tuple) and got and all(isinstance(v, str) for v in got)), name


class _Lines:
    """A minimal line block (what source.replay.Block gives parse_block)."""

    def __init__(self, lines: list[bytes]) -> None:
        self.data = b"".join(x + b"\n" for x in lines)
        self.ends = [i for i, byte in enumerate(self.data) if byte == 0x0A]

    def view(self) -> memoryview:
        return memoryview(self.data)

    def line(self, index: int) -> bytes:
        return self.data.split(b"\n")[index]


def test_parse_block_decodes_every_line_and_leaves_unusual_ones_to_parse_line() -> None:
    """Usual events come back with their stage time and their own line; an EventList line, a
    missing auditID and a zone-less time come back as None, for parse_line to handle."""
    lines = [line(auditID="a-1"), line(kind="EventList"), line(auditID=DROP),
             line(stageTimestamp="2024-05-01T12:00:00"), line(auditID="a-5", verb="get")]
    events = parse_block(_Lines(lines))
    assert events is not None
    assert [e is None for e in events] == [False, True, True, True, False]
    first, last = events[0], events[4]
    assert first is not None and last is not None
    assert (first.auditID, last.verb) == ("a-1", "get")
    assert first.time == datetime(2024, 5, 1, 12, 0, 0, 123456, tzinfo=UTC)
    assert (first.line(), last.line()) == (lines[0], lines[4])
    assert last.body()["verb"] == "get"


@pytest.mark.parametrize("extra", [b"{not json}", b'{"kind":"Event","verb":5}', b"[1]"])
def test_parse_block_gives_up_on_a_block_that_does_not_decode(extra: bytes) -> None:
    """Invalid JSON or a value of the wrong type anywhere: None, the caller goes line by line."""
    assert parse_block(_Lines([line(), extra, line()])) is None


def test_parse_block_gives_up_when_values_and_lines_do_not_pair_up() -> None:
    """Two objects on one line (or a blank line) make the count differ: None."""
    two = line() + b" " + line()
    assert parse_block(_Lines([line(), two])) is None
    assert parse_block(_Lines([line(), b"", line()])) is None


@pytest.mark.parametrize("data", [b"{}", b"[1]", b'{"kind":"EventList","items":[{"kind":"Pod"}]}', b"{x", b"7",
                                  line(stageTimestamp="bad"), line(verb=5, auditID=DROP),
                                  nested_object(100_000)])
def test_a_bad_line_leaves_no_reference_cycle(data: bytes) -> None:
    """Reporting a bad line frees everything at once: an exception tied to a frame in a cycle
    would keep the caller's frames (and the block of lines they hold) until a full collection.
    (The last line, nested 100,000 deep, is invalid_json, not a RecursionError.)"""
    gc.collect()
    gc.disable()
    try:
        with pytest.raises(BadInput):
            parse_line(data)
        assert gc.collect() == 0
    finally:
        gc.enable()


def test_parse_block_leaves_a_block_of_very_many_lines_to_parse_line() -> None:
    """All of a block's events are alive at once: past MAX_BLOCK_LINES (tiny lines) it declines."""
    assert parse_block(_Lines([line()] * MAX_BLOCK_LINES)) is not None
    assert parse_block(_Lines([line()] * (MAX_BLOCK_LINES + 1))) is None
