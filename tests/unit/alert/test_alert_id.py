"""The alert id identifies the event, not just its auditID (issue 13).

kube-apiserver takes an event's auditID from the client's `Audit-ID` header, so a client can give
many requests one auditID. The id must still differ between distinct events (the outbox drops
an alert whose id it holds) and stay the same when the same bytes are read again.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest

from detector.alert.build import AlertBuilder
from detector.alert.model import alert_id
from detector.event import AuditEvent
from detector.parse.audit import parse_document, parse_line
from detector.rules.model import SOURCE, Match, Priority
from tests.unit.eventkit import event_dict

NAMESPACE = uuid.UUID("6d1f0a7e-3c2b-5e4f-9a8b-7c6d5e4f3a2b")  # as documented in docs/configuration.md
SAME = {"auditID": "chosen-by-the-client", "stage": "ResponseComplete"}


def _id_of(line: bytes, rule: str = "Exec") -> str:
    event = parse_line(line)
    assert isinstance(event, AuditEvent)
    return _alert_id(event, rule)


def _alert_id(event: AuditEvent, rule: str = "Exec") -> str:
    match = Match(rule, Priority.WARNING, (), SOURCE, "out", {}, event)
    return AlertBuilder("h")(match).id


@pytest.mark.parametrize("change", [
    {"verb": "get"},
    {"user": {"username": "mallory"}},
    {"objectRef": {"resource": "pods", "namespace": "default", "name": "other"}},
    {"stageTimestamp": "2024-05-01T12:00:00.123457Z"},
    {"requestReceivedTimestamp": "2024-05-01T11:59:59.000000Z"},
    {"sourceIPs": ["10.0.0.8"]},
    {"requestURI": "/api/v1/namespaces/default/pods/p/exec?command=id"},
    {"annotations": {"authorization.k8s.io/decision": "allow"}},
])
def test_events_sharing_auditid_and_stage_get_distinct_ids(change: dict[str, Any]) -> None:
    """Any difference between two events with one auditID and stage gives two ids."""
    first = orjson.dumps(event_dict(**SAME))
    second = orjson.dumps(event_dict(**SAME, **change))
    assert _id_of(first) != _id_of(second)


def test_events_differing_only_in_their_bytes_get_distinct_ids() -> None:
    """Even key order or spacing: the id is over the event's bytes as read, not chosen fields."""
    body = event_dict(**SAME)
    assert _id_of(orjson.dumps(body)) != _id_of(orjson.dumps(body) + b" ")


def test_the_same_line_read_twice_gets_the_same_id() -> None:
    """A line re-read after a crash (or a replay) makes the same id: repeats are still dropped."""
    line = orjson.dumps(event_dict(**SAME))
    assert _id_of(line) == _id_of(bytes(line))
    assert _id_of(line, "Exec") != _id_of(line, "Other rule")


def test_eventlist_items_sharing_an_auditid_get_distinct_ids_and_stable_ones() -> None:
    """Items of one EventList (the webhook's batches) differ; a retried batch gives the same ids."""
    batch = orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [
        {k: v for k, v in event_dict(**SAME, verb=verb).items() if k != "kind"} for verb in ("create", "get")]})
    first = [_alert_id(e) for e in parse_document(batch) if isinstance(e, AuditEvent)]
    again = [_alert_id(e) for e in parse_document(bytes(batch)) if isinstance(e, AuditEvent)]
    assert len(set(first)) == 2 and first == again


def test_the_id_is_the_documented_uuid5() -> None:
    """id = uuid5(namespace, rule NUL auditID NUL stage NUL event JSON): consumers can rely on it."""
    line = orjson.dumps(event_dict(**SAME))
    name = b"Exec\x00chosen-by-the-client\x00ResponseComplete\x00" + line
    expected = str(uuid.uuid5(NAMESPACE, name.decode()))
    assert alert_id("Exec", "chosen-by-the-client", "ResponseComplete", line) == expected == _id_of(line)


def test_the_same_bytes_from_two_clusters_are_two_alerts() -> None:
    """An envelope's cluster is part of the identity (EKS and AKS can carry byte-identical
    events of two clusters); without a cluster the id is the documented one above."""
    line = orjson.dumps(event_dict(**SAME))
    ids = set()
    for cluster in ("prod-eu", "prod-us"):
        event = parse_line(line)
        assert isinstance(event, AuditEvent)
        event.cluster = cluster
        ids.add(_alert_id(event))
    assert len(ids) == 2 and _id_of(line) not in ids
    name = b"Exec\x00chosen-by-the-client\x00ResponseComplete\x00" + line + b"\x00prod-eu"
    assert str(uuid.uuid5(NAMESPACE, name.decode())) in ids
