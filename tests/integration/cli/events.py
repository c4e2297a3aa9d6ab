"""Small real-shaped audit events for CLI tests."""

from __future__ import annotations

import copy
from typing import Any

import orjson

BASE: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Metadata",
    "auditID": "5b0b9e4c-1b1a-4d8c-9a55-0d1f3e0e1a01", "stage": "ResponseComplete",
    "requestURI": "/api/v1/namespaces/default/pods/web-1", "verb": "get",
    "user": {"username": "alice@example.com", "groups": ["system:authenticated"]},
    "sourceIPs": ["10.0.0.7"], "userAgent": "kubectl/v1.31.0",
    "objectRef": {"resource": "pods", "namespace": "default", "name": "web-1", "apiVersion": "v1"},
    "responseStatus": {"metadata": {}, "code": 200},
    "requestReceivedTimestamp": "2026-11-22T10:00:00.100000Z", "stageTimestamp": "2026-11-22T10:00:00.120000Z",
    "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
}

RULES = """\
- list: watched_verbs
  items: [delete, deletecollection]
- macro: completed
  condition: ka.stage = ResponseComplete
- rule: Pod Deleted
  desc: a pod was deleted
  condition: completed and ka.verb in (watched_verbs) and ka.target.resource = pods
  output: pod %ka.target.namespace/%ka.target.name deleted by %ka.user.name from %ka.client.ip
  priority: WARNING
  source: k8s_audit
  tags: [k8s, test]
"""


def event(n: int = 1, **changes: Any) -> dict[str, Any]:
    """A copy of BASE with a distinct auditID and top-level keys replaced."""
    data = copy.deepcopy(BASE)
    data["auditID"] = f"5b0b9e4c-1b1a-4d8c-9a55-{n:012d}"
    data.update(changes)
    return data


def deletion(n: int = 1) -> dict[str, Any]:
    return event(n, verb="delete")


def line(data: dict[str, Any]) -> bytes:
    return orjson.dumps(data) + b"\n"
