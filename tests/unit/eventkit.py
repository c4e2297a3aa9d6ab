"""Builders of small, real-shaped audit events for unit tests (no mocks: real parse_line)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson

from detector.event import AuditEvent
from detector.parse.audit import parse_line

DROP: Any = object()
"""Pass as an override value to remove that key from the base event."""

BASE: dict[str, Any] = {
    "kind": "Event",
    "apiVersion": "audit.k8s.io/v1",
    "level": "RequestResponse",
    "auditID": "0b7a2c1e-0000-4000-8000-000000000001",
    "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/default/pods",
    "verb": "create",
    "user": {"username": "alice", "groups": ["system:authenticated"]},
    "sourceIPs": ["10.0.0.7"],
    "userAgent": "kubectl/v1.29.0",
    "objectRef": {"resource": "pods", "namespace": "default", "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 201},
    "requestReceivedTimestamp": "2024-05-01T12:00:00.000000Z",
    "stageTimestamp": "2024-05-01T12:00:00.123456Z",
}

SHARED_DIR = Path(__file__).resolve().parents[2] / ".." / "shared"
TRACES_DIR = (SHARED_DIR / "falco" / "data" / "falcosecurity-falco@2583ea9bfdb2d6acdfbeedb094ea26f4866bb02e"
              / "test" / "trace_files" / "k8s_audit")


def event_dict(**overrides: Any) -> dict[str, Any]:
    """The base event with top-level keys replaced (or removed with DROP)."""
    body = {**BASE, **overrides}
    return {key: value for key, value in body.items() if value is not DROP}


def event_from(body: dict[str, Any]) -> AuditEvent:
    """Parse one event dict through the real line parser."""
    parsed = parse_line(orjson.dumps(body))
    assert isinstance(parsed, AuditEvent)
    return parsed


def make_event(**overrides: Any) -> AuditEvent:
    """A parsed event: the base event with `overrides` applied to its top-level keys."""
    return event_from(event_dict(**overrides))


def pod_event(spec: dict[str, Any], **overrides: Any) -> AuditEvent:
    """A pod create whose requestObject carries `spec`."""
    return make_event(requestObject={"kind": "Pod", "apiVersion": "v1", "spec": spec}, **overrides)


def trace_event(name: str, position: int = 0) -> AuditEvent:
    """The event on line `position` of a Falco k8s_audit trace file (callers skip when absent)."""
    lines = (TRACES_DIR / name).read_bytes().splitlines()
    parsed = parse_line(lines[position])
    assert isinstance(parsed, AuditEvent)
    return parsed
