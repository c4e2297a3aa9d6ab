"""Tests for detector.alert.dispatch: per-output workers, order, retries, isolation, stop."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from detector.alert.dispatch import Dispatcher, RetryPolicy
from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.model import Alert
from detector.alert.outbox import Outbox
from detector.alert.route import Router
from detector.alert.secret import Secret
from detector.alert.settings import OutboxSettings, RouteSettings
from detector.alert.sink import DeliveryError
from detector.alert.sinks.memory import MemorySink
from tests.support.alertkit import make_alerts
from tests.support.receiver import wait_for

FAST = RetryPolicy(initial=0.01, maximum=0.05)


class BlockingSink(MemorySink):
    """A sink whose sends hang until `release` is set (a receiver that never answers)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.release = threading.Event()
        self.entered = threading.Event()

    def send(self, alert: Alert) -> None:
        self.entered.set()
        self.release.wait(10)
        super().send(alert)


class LeakySink(MemorySink):
    """A sink that fails with its secret in the message, then raises a bug, then works."""

    def __init__(self) -> None:
        super().__init__("leaky")
        self.secret = Secret("tok-123456", "env T")
        self.failures = 2

    @property
    def secrets(self) -> Sequence[Secret]:
        return [self.secret]

    def send(self, alert: Alert) -> None:
        self.failures -= 1
        if self.failures == 1:
            raise DeliveryError("rejected token tok-123456", retryable=True)
        if self.failures == 0:
            raise KeyError("tok-123456")
        super().send(alert)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[Outbox]:
    router = Router({"a": RouteSettings(), "b": RouteSettings()})
    box = Outbox(tmp_path / "detector.db", OutboxSettings(), router, lambda _e: None)
    yield box
    box.close()


def dispatcher(outbox: Outbox, *sinks: MemorySink, events: list[DeliveryEvent] | None = None,
               defer_marks: bool = False) -> Dispatcher:
    on_event = events.append if events is not None else (lambda _e: None)
    return Dispatcher(outbox, {s.name: s for s in sinks}, on_event, FAST, poll_interval=0.05,
                      defer_marks=defer_marks)


def test_every_alert_once_in_order_per_output(outbox: Outbox) -> None:
    """Both outputs receive every alert exactly once, in enqueue order."""
    a, b = MemorySink("a"), MemorySink("b")
    d = dispatcher(outbox, a, b)
    d.start()
    alerts = make_alerts(50)
    for chunk in (alerts[:20], alerts[20:]):
        outbox.enqueue(chunk)
        d.notify()
    wait_for(lambda: len(a.alerts) == 50 and len(b.alerts) == 50)
    assert d.stop(5)
    assert a.ids() == b.ids() == [x.id for x in alerts]


def test_retryable_failures_hold_the_order_then_recover(outbox: Outbox) -> None:
    """While the head alert fails, nothing behind it is sent; afterwards all go, in order."""
    a, b = MemorySink("a"), MemorySink("b")
    a.fail_with = DeliveryError("HTTP 503", retryable=True)
    events: list[DeliveryEvent] = []
    d = dispatcher(outbox, a, b, events=events)
    d.start()
    alerts = make_alerts(5)
    outbox.enqueue(alerts)
    d.notify()
    wait_for(lambda: a.attempts >= 3 and len(b.alerts) == 5)
    assert a.alerts == []
    a.fail_with = None
    wait_for(lambda: len(a.alerts) == 5)
    assert d.stop(5)
    assert a.ids() == [x.id for x in alerts]
    retries = [e for e in events if e.kind is EventKind.RETRY]
    assert retries and all(e.alert_id == alerts[0].id and e.error == "HTTP 503" for e in retries)
    assert [e.attempts for e in retries[:3]] == [1, 2, 3]


def test_permanent_failures_are_dead_lettered_and_skipped(outbox: Outbox) -> None:
    """A permanent failure dead-letters that alert with its error; the next ones go on."""
    a, b = MemorySink("a"), MemorySink("b")
    events: list[DeliveryEvent] = []
    d = dispatcher(outbox, a, b, events=events)
    a.fail_with = DeliveryError("HTTP 400: bad payload", retryable=False)
    alerts = make_alerts(3)
    outbox.enqueue(alerts[:1])
    d.start()
    d.notify()
    wait_for(lambda: any(e.kind is EventKind.DEAD for e in events))
    a.fail_with = None
    outbox.enqueue(alerts[1:])
    d.notify()
    wait_for(lambda: len(a.alerts) == 2)
    assert d.stop(5)
    assert a.ids() == [x.id for x in alerts[1:]]
    (dead,) = outbox.rows(output="a", status="dead")
    assert dead.alert_id == alerts[0].id and dead.last_error == "HTTP 400: bad payload"


def test_a_hanging_output_does_not_delay_another(outbox: Outbox) -> None:
    """While `a` hangs in a send, `b` delivers everything."""
    a, b = BlockingSink("a"), MemorySink("b")
    d = dispatcher(outbox, a, b)
    d.start()
    outbox.enqueue(make_alerts(20))
    d.notify()
    assert a.entered.wait(5)
    wait_for(lambda: len(b.alerts) == 20)
    assert a.alerts == []
    a.release.set()
    wait_for(lambda: len(a.alerts) == 20)
    assert d.stop(5)


def test_stop_lets_the_in_flight_send_finish(outbox: Outbox) -> None:
    """stop() waits for a send in progress; that alert is marked delivered, no thread remains."""
    a, b = BlockingSink("a"), MemorySink("b")
    d = dispatcher(outbox, a, b)
    d.start()
    outbox.enqueue(make_alerts(3))
    d.notify()
    assert a.entered.wait(5)
    threading.Timer(0.2, a.release.set).start()
    started = time.monotonic()
    assert d.stop(5)
    assert time.monotonic() - started >= 0.15
    assert len(a.alerts) >= 1 and outbox.rows(output="a", status="delivered")


def test_errors_are_scrubbed_and_sink_bugs_do_not_kill_the_worker(outbox: Outbox) -> None:
    """A secret in an error is masked; an unexpected exception is reported and retried."""
    leaky, b = LeakySink(), MemorySink("b")
    events: list[DeliveryEvent] = []
    d = Dispatcher(outbox, {"a": leaky, "b": b}, events.append, FAST, poll_interval=0.05)
    d.start()
    outbox.enqueue(make_alerts(1))
    d.notify()
    wait_for(lambda: len(leaky.alerts) == 1)
    assert d.stop(5)
    errors = [e.error or "" for e in events if e.output == "a" and e.kind is not EventKind.DELIVERED]
    assert errors == ["rejected token ****", "KeyError: '****'"]
    assert [e.kind for e in events if e.output == "a"] == [EventKind.RETRY, EventKind.WORKER_ERROR,
                                                           EventKind.DELIVERED]


def test_a_failing_event_callback_is_survived(outbox: Outbox) -> None:
    """The caller's callback raising does not stop delivery."""
    a, b = MemorySink("a"), MemorySink("b")

    def explode(_event: DeliveryEvent) -> None:
        raise RuntimeError("callback bug")

    d = Dispatcher(outbox, {"a": a, "b": b}, explode, FAST, poll_interval=0.05)
    d.start()
    outbox.enqueue(make_alerts(3))
    d.notify()
    wait_for(lambda: len(a.alerts) == 3 and len(b.alerts) == 3)
    assert d.stop(5)


def test_retry_policy() -> None:
    """Exponential with equal jitter, capped; Retry-After replaces it, capped too."""
    policy = RetryPolicy(initial=1, maximum=60, max_retry_after=120)
    rng = random.Random(7)
    for attempt, ceiling in [(1, 1), (2, 2), (3, 4), (7, 60), (500, 60)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert ceiling / 2 <= min(delays) and max(delays) <= ceiling
        assert max(delays) - min(delays) > ceiling / 4  # jittered
    assert policy.delay(3, retry_after=7.5) == 7.5
    assert policy.delay(3, retry_after=10_000) == 120


def test_stop_without_start_and_double_start(outbox: Outbox) -> None:
    """stop() before start() is harmless; start() twice is a programming error."""
    d = dispatcher(outbox, MemorySink("a"))
    assert d.stop(1)
    d2 = dispatcher(outbox, MemorySink("a"))
    d2.start()
    with pytest.raises(RuntimeError):
        d2.start()
    assert d2.stop(5)


def test_rows_of_an_output_no_longer_configured_are_reported(tmp_path: Path) -> None:
    """At start, held rows for an output without a sink are reported, not silently kept."""
    box = Outbox(tmp_path / "detector.db", OutboxSettings(), Router({"gone": RouteSettings()}), lambda _e: None)
    box.enqueue(make_alerts(2))
    events: list[DeliveryEvent] = []
    d = dispatcher(box, MemorySink("a"), events=events)
    d.start()
    assert d.stop(5)
    box.close()
    (event,) = events
    assert event.kind is EventKind.WORKER_ERROR and event.output == "gone" and event.count == 2
    assert "2 pending alerts for output 'gone', which is not configured" in (event.error or "")


def test_sending_goes_on_while_another_process_writes_and_nothing_is_sent_twice(outbox: Outbox) -> None:
    """With the engine holding the outbox's write lock, a worker neither waits for it nor
    re-sends what it could not mark yet; once the lock is free every row is marked delivered."""
    import sqlite3  # noqa: PLC0415

    a = MemorySink("a")
    events: list[DeliveryEvent] = []
    d = dispatcher(outbox, a, events=events, defer_marks=True)  # as in the courier process
    alerts = make_alerts(40)
    outbox.enqueue(alerts)
    engine = sqlite3.connect(outbox.path, isolation_level=None)
    try:
        engine.execute("BEGIN IMMEDIATE")  # another connection's write transaction in progress
        started = time.monotonic()
        assert outbox.mark_delivered_many([1], wait=False) is False
        assert time.monotonic() - started < 1.0  # at once, not after the busy timeout
        d.start()
        wait_for(lambda: len(a.alerts) >= 32)  # sent while the lock is held, up to MAX_UNMARKED
        assert not [e for e in events if e.kind is EventKind.DELIVERED]
        engine.execute("ROLLBACK")
        wait_for(lambda: sum(e.kind is EventKind.DELIVERED for e in events) == 40)
    finally:
        engine.close()
        assert d.stop(5)
    assert a.ids() == [x.id for x in alerts]  # once each, in order
    assert outbox.counts()[("a", "delivered")] == 40
    assert ("a", "pending") not in outbox.counts()
