"""What the delivery stage reports: one event type for the outbox, dispatcher and throttle.

The composition root passes an `OnEvent` callback (log lines, metrics); `log_event` is the
default, and is loud (error level) for everything that loses or dead-letters alerts.
"""

from __future__ import annotations

import enum
import logging
from collections.abc import Callable
from dataclasses import dataclass

import structlog


class EventKind(enum.StrEnum):
    DELIVERED = "delivered"
    RETRY = "retry"  # a retryable failure; the next attempt is scheduled
    DEAD = "dead"  # a permanent failure; the alert is in the dead-letter table
    DROPPED = "dropped"  # alerts lost to the outbox bounds (count > 1 possible)
    SUPPRESSED = "suppressed"  # a throttle window closed with repeats suppressed
    WORKER_ERROR = "worker_error"  # a bug in a sink or the dispatcher; retried


@dataclass(frozen=True, slots=True)
class DeliveryEvent:
    kind: EventKind
    output: str = ""
    alert_id: str | None = None
    rule: str | None = None
    attempts: int = 0
    count: int = 1
    error: str | None = None
    retry_in: float | None = None  # seconds until the next attempt (RETRY)
    latency: float | None = None  # seconds from enqueue to delivery (DELIVERED)
    reason: str | None = None  # why alerts were dropped (DROPPED)


OnEvent = Callable[[DeliveryEvent], None]

_log = structlog.get_logger("detector.alert")


def log_event(event: DeliveryEvent) -> None:
    """Log one event with structlog: debug for deliveries, warning for retries, error for losses."""
    if event.kind is EventKind.DELIVERED and not _log.is_enabled_for(logging.DEBUG):
        return  # once per delivered alert: skip building the fields nobody logs
    fields = {k: v for k, v in (("output", event.output), ("alert_id", event.alert_id), ("rule", event.rule),
                                ("attempts", event.attempts or None), ("error", event.error),
                                ("retry_in", event.retry_in), ("latency", event.latency),
                                ("reason", event.reason)) if v not in (None, "")}
    match event.kind:
        case EventKind.DELIVERED:
            _log.debug("alert_delivered", **fields)
        case EventKind.RETRY:
            _log.warning("alert_retry_scheduled", **fields)
        case EventKind.DEAD:
            _log.error("alert_dead_lettered", **fields)
        case EventKind.DROPPED:
            _log.error("ALERTS_DROPPED", count=event.count, **fields)
        case EventKind.SUPPRESSED:
            _log.info("alerts_suppressed", count=event.count, **fields)
        case EventKind.WORKER_ERROR:
            _log.error("delivery_worker_error", **fields)
        case _:
            raise AssertionError(f"unhandled event kind {event.kind}")
