"""The alert: a rule match made into Falco's JSON shape, plus a stable id.

Falco consumers (falcosidekick and friends) accept `time`, `rule`, `priority`, `output`,
`source`, `tags`, `output_fields`, `hostname` (and `uuid`); we add `audit_id` and `id`, which is
the same for the same rule and event bytes (see alert_id), so that a repeat after a crash can be
dropped downstream, and differs between distinct events whatever auditIDs clients choose.
"""

from __future__ import annotations

import functools
import hashlib
import time
import uuid
from typing import Any

import msgspec

from detector.event import AuditEvent
from detector.parse.extract import NANOS_MAX, NANOS_MIN, epoch_nanos
from detector.rules.model import FieldValue, Match

_ID_NAMESPACE = uuid.UUID("6d1f0a7e-3c2b-5e4f-9a8b-7c6d5e4f3a2b")


class Alert(msgspec.Struct, frozen=True, gc=False):
    """One alert, ready to be encoded by any sink.

    A frozen msgspec Struct rather than a frozen dataclass: one is built per match, and the
    dataclass's field-by-field `object.__setattr__` made construction the costliest step of
    turning a match into an alert."""

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


def alert_id(rule: str, audit_id: str, stage: str, event_json: bytes) -> str:
    """Identity of an alert: a UUIDv5 (namespace _ID_NAMESPACE) of the name
    `rule NUL auditID NUL stage NUL event-json`, where event-json is the event's JSON as read
    (its line; for an item of an EventList or a JSON document, that item re-encoded).

    Re-reading the same line (after a crash, a replay, a retried webhook batch) gives the same
    id, so repeats can be dropped by id; two distinct events never share one, even when a
    client sends the same `Audit-ID` header for many requests (kube-apiserver then writes that
    auditID on each: with (rule, auditID, stage) alone, the outbox dropped every later alert as
    a repeat of the first). Equal to `str(uuid.uuid5(_ID_NAMESPACE, name))` where name is
    UTF-8 text, computed without building UUID objects (this runs once per alert).
    """
    digest = hashlib.sha1(_ID_PREFIX + f"{rule}\x00{audit_id}\x00{stage}\x00".encode())
    digest.update(event_json)
    raw = bytearray(digest.digest()[:16])
    raw[6] = (raw[6] & 0x0F) | 0x50
    raw[8] = (raw[8] & 0x3F) | 0x80
    text = raw.hex()
    return f"{text[:8]}-{text[8:12]}-{text[12:16]}-{text[16:20]}-{text[20:]}"


_ID_PREFIX = _ID_NAMESPACE.bytes


def event_nanos(event: AuditEvent) -> int:
    """The event's stage time in nanoseconds since the epoch, unclamped (0 if it has none)."""
    return epoch_nanos(event.stageTimestamp or "", event.time) if event.time is not None else 0


def time_in_range(event: AuditEvent) -> bool:
    """Whether an alert's `evt.time` (parse.extract.NANOS_MIN..NANOS_MAX) holds the event's
    stage time; alert_from_match clamps one that does not to the nearest bound."""
    return NANOS_MIN <= event_nanos(event) <= NANOS_MAX


def alert_from_match(match: Match, hostname: str, nanos: int | None = None) -> Alert:
    """Build the alert for a match (Falco's text line is `<evt.time>: <Priority> <output>`).
    A stage time outside `evt.time`'s range is clamped to it (see time_in_range). `nanos` is
    `event_nanos(match.event)`, when the caller has computed it already."""
    event = match.event
    audit_id = event.auditID or ""
    stage = event.stage or ""
    nanos = min(max(event_nanos(event) if nanos is None else nanos, NANOS_MIN), NANOS_MAX)
    seconds, fraction = divmod(nanos, 1_000_000_000)
    fields: dict[str, FieldValue | int] = {"evt.time": nanos, **match.output_fields}
    label = match.priority.label
    return Alert(
        id=alert_id(match.rule, audit_id, stage, _identity_bytes(event)),
        time=f"{_utc_seconds(seconds)}.{fraction:09d}Z",
        rule=match.rule,
        priority=label,
        priority_level=int(match.priority),
        message=match.output,
        output=f"{_local_seconds(seconds)}.{fraction:09d}: {label} {match.output}",
        source=match.source,
        tags=match.tags,
        output_fields=fields,
        hostname=hostname,
        audit_id=audit_id,
        stage=stage,
    )


def _identity_bytes(event: AuditEvent) -> bytes:
    """The event's own JSON, plus its cluster when an envelope named one: the same bytes from
    two clusters are two events."""
    if event.cluster is None:
        return event.line()
    return event.line() + b"\x00" + event.cluster.encode()


# Alerts come in time order, so the last few seconds are all a cache needs. A bigger one keeps
# filling for as many seconds of alerts (1,024: 17 minutes of a live run), and its entries,
# each born a second apart, pin allocator pools all that time: RSS crept up with it.
_RECENT_SECONDS = 64


@functools.lru_cache(maxsize=_RECENT_SECONDS)
def _utc_seconds(seconds: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds))


@functools.lru_cache(maxsize=_RECENT_SECONDS)
def _local_seconds(seconds: int) -> str:
    """Falco prints evt.time in the local time zone."""
    return time.strftime("%H:%M:%S", time.localtime(seconds))


def utc_time(nanos: int) -> str:
    """An alert's `time` for `nanos` since the epoch: UTC, nine fractional digits, as
    alert_from_match writes it (so `time` and `evt.time` agree to the nanosecond)."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return f"{_utc_seconds(seconds)}.{fraction:09d}Z"


def local_time(nanos: int) -> str:
    """The time prefix of an alert's `output` for `nanos`: local `HH:MM:SS.nnnnnnnnn`, as Falco's."""
    seconds, fraction = divmod(nanos, 1_000_000_000)
    return f"{_local_seconds(seconds)}.{fraction:09d}"
