"""The event's lazy parts: its line, its request object and its whole body."""

from __future__ import annotations

import sys
from typing import Any

import msgspec
import orjson
import pytest

from detector.event import AuditEvent, TooDeep, decode_bounded
from detector.parse.audit import event_from_dict, parse_line
from detector.parse.extract import MISSING, request_value
from tests.support.deepjson import nested_object, with_request_object
from tests.unit.eventkit import event_dict


def parsed(**overrides: Any) -> AuditEvent:
    event = parse_line(orjson.dumps(event_dict(**overrides)))
    assert isinstance(event, AuditEvent)
    return event


@pytest.mark.parametrize("request_object", [{"kind": "Role", "rules": [{"verbs": ["*"]}]}, None, 7, "text"])
def test_request_object_alone_is_what_the_whole_body_holds(request_object: Any) -> None:
    """requestObject decoded on its own equals the one in the whole body, whatever its JSON type,
    and the response object is not decoded for it."""
    event = parsed(requestObject=request_object, responseObject={"kind": "Role", "big": "x" * 1000})
    alone = event.request_object()
    assert event.parsed_body is None
    assert alone == event.body()["requestObject"] == request_object


def test_request_object_of_an_event_without_one_is_unset_and_request_fields_are_missing() -> None:
    event = parsed()
    assert event.request_object() is msgspec.UNSET
    assert request_value(event, "spec") is MISSING
    with_null = parsed(requestObject=None)
    assert request_value(with_null) is None
    assert request_value(with_null, "spec") is MISSING


def test_request_object_of_an_event_built_from_a_dict_comes_from_its_body() -> None:
    body = event_dict(requestObject={"spec": {"hostNetwork": True}})
    event = event_from_dict(body)
    assert request_value(event, "spec", "hostNetwork") is True
    assert event.request_part is None  # nothing decoded again


def with_request(raw_request: bytes) -> AuditEvent:
    event = parsed()
    event.raw = with_request_object(event.line(), raw_request)
    return event


def test_body_beyond_what_orjson_reads_is_still_decoded() -> None:
    """orjson stops at 1,024 levels of nesting, which is still valid JSON."""
    deep = with_request(nested_object(1_500))
    assert deep.body()["requestObject"]["a"]["a"]["a"] is not None
    assert request_value(deep, "a", "a") is not MISSING


def test_json_deeper_than_detector_decodes_is_a_clear_error_whatever_the_recursion_limit() -> None:
    """Under the rules loader's high recursion limit, msgspec would build objects until the C
    stack overflowed; decoding is bounded, and the limit is restored afterwards."""
    event = with_request(nested_object(10_000))
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(20_000)
    try:
        with pytest.raises(TooDeep, match="deeper than 4,000 levels"):
            event.body()
        with pytest.raises(TooDeep):
            event.request_object()
        assert sys.getrecursionlimit() == 20_000
    finally:
        sys.setrecursionlimit(limit)
    assert decode_bounded(msgspec.json.decode, nested_object(3_000)) is not None
