"""The event's lazy parts: its line, its request object and its whole body."""

from __future__ import annotations

from typing import Any

import msgspec
import orjson
import pytest

from detector.event import AuditEvent
from detector.parse.audit import event_from_dict, parse_line
from detector.parse.extract import MISSING, request_value
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
