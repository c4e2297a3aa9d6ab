"""Builders of alerts for the alert-stage tests, through the real path (event -> match -> alert)."""

from __future__ import annotations

from typing import Any

from detector.alert.build import AlertBuilder
from detector.alert.model import Alert
from detector.rules.model import SOURCE, FieldValue, Match, Priority
from tests.unit.eventkit import make_event


def make_match(rule: str = "Test rule", priority: Priority = Priority.WARNING, *, tags: tuple[str, ...] = (),
               output: str | None = None, fields: dict[str, FieldValue] | None = None,
               **event: Any) -> Match:
    """A match of `rule` on the base event (with `event` overrides of its top-level keys)."""
    fields = dict(fields or {})
    text = output if output is not None else f"{rule} fired " + " ".join(f"{k}={v}" for k, v in fields.items())
    return Match(rule, priority, tags, SOURCE, text, fields, make_event(**event))


def make_alert(n: int = 0, rule: str = "Test rule", priority: Priority = Priority.WARNING, *,
               tags: tuple[str, ...] = (), fields: dict[str, FieldValue] | None = None,
               cluster: str | None = None, **event: Any) -> Alert:
    """Alert number `n` (its own auditID, so its own id), built like the engine builds it."""
    event.setdefault("auditID", f"00000000-0000-4000-8000-{n:012d}")
    match = make_match(rule, priority, tags=tags, fields=fields, **event)
    return AlertBuilder("test-host", cluster)(match)


def make_alerts(count: int, start: int = 0, **kwargs: Any) -> list[Alert]:
    return [make_alert(n, **kwargs) for n in range(start, start + count)]
