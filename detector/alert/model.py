"""The alert: a rule match made into Falco's JSON shape, plus a stable id.

Falco consumers (falcosidekick and friends) accept `time`, `rule`, `priority`, `output`,
`source`, `tags`, `output_fields`, `hostname` (and `uuid`); we add `audit_id` and `id`, which is
stable for (rule, auditID, stage) so that a duplicate after a crash can be dropped downstream.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from detector.parse.extract import epoch_nanos
from detector.rules.model import FieldValue, Match

_ID_NAMESPACE = uuid.UUID("6d1f0a7e-3c2b-5e4f-9a8b-7c6d5e4f3a2b")


@dataclass(frozen=True, slots=True)
class Alert:
    """One alert, ready to be encoded by any sink."""

    id: str
    time: str
    rule: str
    priority: str
    priority_level: int
    message: str
    output: str
    source: str
    tags: tuple[str, ...]
    output_fields: dict[str, Any]
    hostname: str
    audit_id: str
    stage: str

    def to_dict(self) -> dict[str, Any]:
        """The Falco-compatible JSON object."""
        return {
            "id": self.id,
            "uuid": self.id,
            "time": self.time,
            "rule": self.rule,
            "priority": self.priority,
            "output": self.output,
            "message": self.message,
            "source": self.source,
            "tags": list(self.tags),
            "output_fields": self.output_fields,
            "hostname": self.hostname,
            "audit_id": self.audit_id,
        }


def alert_id(rule: str, audit_id: str, stage: str) -> str:
    """Stable identity of an alert: the same rule on the same request stage, always."""
    return str(uuid.uuid5(_ID_NAMESPACE, f"{rule}\x00{audit_id}\x00{stage}"))


def alert_from_match(match: Match, hostname: str) -> Alert:
    """Build the alert for a match (Falco's text line is `<evt.time>: <Priority> <output>`)."""
    event = match.event
    audit_id = event.auditID or ""
    stage = event.stage or ""
    nanos = epoch_nanos(event.stageTimestamp or "", event.time) if event.time is not None else 0
    iso = _iso(nanos)
    local = event.time.astimezone().strftime("%H:%M:%S") if event.time is not None else "00:00:00"
    fields: dict[str, FieldValue | int] = {"evt.time": nanos, **match.output_fields}
    return Alert(
        id=alert_id(match.rule, audit_id, stage),
        time=iso,
        rule=match.rule,
        priority=match.priority.label,
        priority_level=int(match.priority),
        message=match.output,
        output=f"{local}.{nanos % 1_000_000_000:09d}: {match.priority.label} {match.output}",
        source=match.source,
        tags=match.tags,
        output_fields=fields,
        hostname=hostname,
        audit_id=audit_id,
        stage=stage,
    )


def _iso(nanos: int) -> str:
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S") + f".{fraction:09d}Z"
