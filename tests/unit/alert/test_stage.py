"""Tests for detector.alert.stage: throttle + outbox + dispatcher wired as `detector run` uses them."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any

import pytest

from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.outbox import Stored
from detector.alert.settings import DeliverySettings, RouteSettings, StdoutSettings, ThrottleSettings
from detector.alert.sinks.memory import MemorySink
from detector.alert.stage import open_delivery
from detector.errors import BadInput
from tests.support.alertkit import make_match
from tests.support.receiver import wait_for


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def settings() -> DeliverySettings:
    return DeliverySettings(outputs=(StdoutSettings("mem"),), cluster_name="prod",
                            throttle=ThrottleSettings(60, ("rule", "ka.user.name")))


def test_matches_to_delivered_alerts(tmp_path: Path) -> None:
    """Matches become enriched alerts, are throttled, stored with the checkpoint and delivered."""
    sink = MemorySink("mem")
    events: list[DeliveryEvent] = []
    with open_delivery(settings(), tmp_path, events.append, hostname="h", sinks={"mem": sink},
                       poll_interval=0.05) as delivery:
        alerts = delivery.alerts_for([make_match("Exec", auditID=f"a{n}") for n in range(3)])
        stored = delivery.submit(alerts, {"checkpoint": b"3"})
        assert stored == alerts[:1]
        wait_for(lambda: len(sink.alerts) == 1)
        assert delivery.outbox.get_state("checkpoint") == b"3"
    assert sink.alerts[0].output_fields["ka.cluster.name"] == "prod" and sink.alerts[0].hostname == "h"


def test_summary_after_the_window_and_restart(tmp_path: Path) -> None:
    """A window opened before a restart is resumed and its summary is delivered after it."""
    clock = Clock()
    sink = MemorySink("mem")
    delivery = open_delivery(settings(), tmp_path, sinks={"mem": sink})
    delivery.stage.clock = clock
    delivery.submit(delivery.alerts_for([make_match("Exec", auditID=f"a{n}") for n in range(4)]))
    delivery.close()  # never started: nothing delivered, all durable
    events: list[DeliveryEvent] = []
    again = open_delivery(settings(), tmp_path, events.append, sinks={"mem": sink}, poll_interval=0.05)
    again.stage.clock = clock
    clock.now += 61
    again.start()
    again.stage.tick()
    wait_for(lambda: len(sink.alerts) == 2)
    assert again.close(5)
    _, summary = sink.alerts
    assert summary.output_fields["detector.suppressed"] == 3 and summary.rule == "Exec"
    assert [e.count for e in events if e.kind is EventKind.SUPPRESSED] == [3]


def test_a_batch_that_cannot_be_stored_is_kept_and_stored_as_it_was(tmp_path: Path) -> None:
    """When the outbox write fails, the batch (alerts, throttle windows, checkpoint) is kept
    whole: nothing else can be submitted before it, and retrying stores exactly it, without
    throttling its alerts a second time."""
    sink = MemorySink("mem")
    delivery = open_delivery(settings(), tmp_path, sinks={"mem": sink})
    store = delivery.outbox.store
    failures = [sqlite3.OperationalError("database or disk is full")]

    def flaky(alerts: Any, state: Any = None, **options: Any) -> Stored:
        if failures:
            raise failures.pop()
        return store(alerts, state, **options)

    delivery.outbox.store = flaky  # type: ignore[method-assign]
    alerts = delivery.alerts_for([make_match("Exec", auditID="a1")])
    with pytest.raises(sqlite3.OperationalError):
        delivery.submit(alerts, {"checkpoint": b"7"})
    assert delivery.outbox.get_state("checkpoint") is None
    with pytest.raises(RuntimeError, match="not stored yet"):
        delivery.submit((), {"checkpoint": b"8"})
    assert delivery.retry_unstored() == alerts  # not suppressed as a repeat within its own window
    assert delivery.outbox.get_state("checkpoint") == b"7"
    assert delivery.stage.unstored is None
    assert delivery.retry_unstored() == []
    delivery.close()


def test_matches_no_output_takes_are_not_built_or_stored(tmp_path: Path) -> None:
    """A match whose rule no route selects becomes no alert in `detector run` (it would be
    stored nowhere, yet commit its batch as if it held one), nor a report of an alert time clamped."""
    routed = DeliverySettings(outputs=(StdoutSettings("mem", RouteSettings(include_rules=("Exec",))),))
    reports: list[BadInput] = []
    with open_delivery(routed, tmp_path, sinks={"mem": MemorySink("mem")}) as delivery:
        alerts = delivery.alerts_for([make_match("Exec", auditID="a1"), make_match("Other", auditID="a2"),
                                      make_match("Other", auditID="a3", stageTimestamp="0001-01-01T00:00:00Z")],
                                     reports.append)
        assert [a.rule for a in alerts] == ["Exec"]
        assert reports == []
        alerts = delivery.alerts_for([make_match("Exec", auditID="a4", stageTimestamp="0001-01-01T00:00:00Z")],
                                     reports.append)
        assert len(alerts) == 1 and [r.reason for r in reports] == ["time_out_of_range"]
