"""Tests for the dispatcher's hand-off: rows the engine just stored (Outbox.store) go to a
worker's inbox, and a worker that has read every older row sends them without a query. The
guarantees are those of the query path: every alert once per output, in seq order, failures
holding the order, and rows the inbox never saw (another process, an operator, a full inbox)
found by a query."""

from __future__ import annotations

import random
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from pathlib import Path

import pytest

from detector.alert import dispatch
from detector.alert.dispatch import Dispatcher, RetryPolicy
from detector.alert.model import Alert
from detector.alert.outbox import Outbox, PendingRow
from detector.alert.route import Router
from detector.alert.settings import OutboxSettings, RouteSettings
from detector.alert.sink import DeliveryError
from detector.alert.sinks.memory import MemorySink
from tests.support.alertkit import make_alerts
from tests.support.receiver import wait_for

FAST = RetryPolicy(initial=0.01, maximum=0.05)


class CountingOutbox(Outbox):
    """An outbox that counts the worker's queries."""

    queries = 0

    def pending(self, output: str, limit: int = 100, skip: tuple[int, int] | None = None) -> list[PendingRow]:
        self.queries += 1
        return super().pending(output, limit, skip)


class GateSink(MemorySink):
    """A sink that holds every send while `gate` is clear (a receiver that is slow for a while)."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.gate = threading.Event()
        self.gate.set()

    def send(self, alert: Alert) -> None:
        self.gate.wait(10)
        super().send(alert)


@pytest.fixture
def outbox(tmp_path: Path) -> Iterator[CountingOutbox]:
    box = CountingOutbox(tmp_path / "detector.db", OutboxSettings(), Router({"a": RouteSettings()}),
                         lambda _e: None)
    yield box
    box.close()


def start(outbox: Outbox, sink: MemorySink, poll_interval: float = 30.0) -> Dispatcher:
    """A started dispatcher whose periodic query is far away unless asked for."""
    d = Dispatcher(outbox, {sink.name: sink}, lambda _e: None, FAST, poll_interval=poll_interval)
    d.start()
    return d


def hand_over(outbox: Outbox, d: Dispatcher, alerts: Sequence[Alert]) -> None:
    d.notify(outbox.store(alerts).rows)


def test_store_lists_the_rows_it_added_as_a_query_reads_them(outbox: CountingOutbox) -> None:
    """The rows of Outbox.store are exactly what `pending` reads back: seq, output, alert."""
    router = Router({"a": RouteSettings(), "b": RouteSettings()})
    box = Outbox(outbox.path.with_name("two.db"), OutboxSettings(), router, lambda _e: None)
    try:
        box.enqueue(make_alerts(2, start=1000))
        stored = box.store(make_alerts(3))
        assert stored.added == 6 and stored.rows is not None
        read = box.pending("a") + box.pending("b")
        key = lambda row: (row.seq, row.output, row.alert, row.attempts)  # noqa: E731
        assert sorted(map(key, stored.rows)) == sorted(map(key, [r for r in read if r.seq > 4]))
        assert box.store(make_alerts(3)).rows is None  # all three are repeats: not listed
    finally:
        box.close()


def test_handed_rows_are_sent_in_order_without_a_query(outbox: CountingOutbox) -> None:
    """Once synced, a worker sends handed-over rows without reading the outbox."""
    sink = MemorySink("a")
    d = start(outbox, sink)
    try:
        alerts = make_alerts(200)
        hand_over(outbox, d, alerts[:1])
        wait_for(lambda: len(sink.alerts) == 1)
        queries = outbox.queries
        for i in range(1, 200, 7):
            hand_over(outbox, d, alerts[i:i + 7])
        wait_for(lambda: len(sink.alerts) == 200)
    finally:
        assert d.stop(5)
    assert sink.ids() == [a.id for a in alerts]
    assert outbox.queries == queries  # none after the first round
    assert outbox.counts() == {("a", "delivered"): 200}


def test_a_failure_mid_inbox_holds_the_order_and_sends_each_once(outbox: CountingOutbox) -> None:
    """A retryable failure on a handed row: the rows behind it wait, rows handed over meanwhile
    are sent after it, each alert exactly once."""
    sink = MemorySink("a")
    d = start(outbox, sink)
    try:
        alerts = make_alerts(61)
        hand_over(outbox, d, alerts[:10])
        wait_for(lambda: len(sink.alerts) == 10)
        sink.fail_with = DeliveryError("HTTP 503", retryable=True)
        hand_over(outbox, d, alerts[10:20])
        wait_for(lambda: sink.attempts >= 13)
        for i in range(20, 60, 5):
            hand_over(outbox, d, alerts[i:i + 5])
        sink.fail_with = None
        wait_for(lambda: len(sink.alerts) >= 60)
        hand_over(outbox, d, alerts[60:])  # sent after anything still queued: a repeat would show
        wait_for(lambda: len(sink.alerts) >= 61)
    finally:
        assert d.stop(5)
    assert sink.ids() == [a.id for a in alerts]
    assert outbox.counts() == {("a", "delivered"): 61}


def test_a_full_inbox_is_read_back_from_the_outbox(outbox: CountingOutbox, monkeypatch: pytest.MonkeyPatch) -> None:
    """While the output is slow, the inbox stays bounded; what it let go is read back, in order, once."""
    monkeypatch.setattr(dispatch, "INBOX_MAX", 20)
    sink = GateSink("a")
    d = start(outbox, sink)
    worker = d._workers[0]
    try:
        alerts = make_alerts(150)
        hand_over(outbox, d, alerts[:1])
        wait_for(lambda: len(sink.alerts) == 1)
        sink.gate.clear()
        hand_over(outbox, d, alerts[1:2])
        for i in range(2, 150, 3):
            hand_over(outbox, d, alerts[i:i + 3])
            assert len(worker.inbox) <= 20
        sink.gate.set()
        wait_for(lambda: len(sink.alerts) == 150)
    finally:
        assert d.stop(5)
    assert sink.ids() == [a.id for a in alerts]


def test_rows_the_inbox_never_saw_are_found(outbox: CountingOutbox) -> None:
    """Rows stored without a listing (notify without rows: repeats among them, a bounded
    outbox that dropped some) are sent in order, once; a dead row an operator retries, and
    even a row nobody announced, are found by the periodic query and sent once."""
    sink = MemorySink("a")
    d = start(outbox, sink, poll_interval=0.2)
    try:
        alerts = make_alerts(40)
        hand_over(outbox, d, alerts[:5])
        wait_for(lambda: len(sink.alerts) == 5)
        outbox.enqueue(alerts[5:10])
        d.notify(None)
        hand_over(outbox, d, alerts[10:20])
        wait_for(lambda: len(sink.alerts) == 20)
        assert sink.ids() == [a.id for a in alerts[:20]]
        sink.fail_with = DeliveryError("HTTP 400", retryable=False)
        hand_over(outbox, d, alerts[20:21])
        wait_for(lambda: outbox.rows(status="dead") != [])
        sink.fail_with = None
        hand_over(outbox, d, alerts[21:30])
        wait_for(lambda: len(sink.alerts) == 29)
        assert outbox.retry("a") == 1  # as `detector outbox retry` would
        wait_for(lambda: len(sink.alerts) == 30)  # within the periodic query (0.2 s)
        assert sink.ids()[29] == alerts[20].id
        outbox.enqueue(alerts[30:35])  # no dispatcher is told (none of detector's writers does this)
        hand_over(outbox, d, alerts[35:40])
        wait_for(lambda: len(sink.alerts) == 40)
    finally:
        assert d.stop(5)
    assert sorted(sink.ids()) == sorted(a.id for a in alerts)  # each once


@pytest.mark.parametrize("seed", range(4))
def test_random_mix_of_hand_overs_repeats_and_failures(outbox: CountingOutbox, seed: int) -> None:
    """Whatever mix of handed batches, unlisted batches, repeats and failing spells: every
    alert once, in the order it was first stored."""
    rng = random.Random(seed)
    sink = MemorySink("a")
    d = start(outbox, sink, poll_interval=0.05)
    alerts = make_alerts(400)
    stored: list[Alert] = []
    try:
        i = 0
        while i < len(alerts):
            n = rng.randint(1, 12)
            batch = alerts[i:i + n]
            i += n
            if stored and rng.random() < 0.15:
                batch = [*rng.sample(stored, min(2, len(stored))), *batch]  # repeats are ignored
            if rng.random() < 0.25:
                outbox.enqueue(batch)
                d.notify(None)
            else:
                hand_over(outbox, d, batch)
            stored += [a for a in batch if a not in stored]
            if rng.random() < 0.05:
                sink.fail_with = DeliveryError("HTTP 503", retryable=True)
            elif sink.fail_with is not None and rng.random() < 0.5:
                sink.fail_with = None
        sink.fail_with = None
        d.notify(None)
        wait_for(lambda: len(sink.alerts) >= len(stored), timeout=20)
    finally:
        assert d.stop(5)
    assert sink.ids() == [a.id for a in stored]


class PoisonSink(MemorySink):
    """Fails (503, retryable) the alerts whose ids are in `poison`."""

    def __init__(self, name: str) -> None:
        super().__init__(name)
        self.poison: set[str] = set()

    def send(self, alert: Alert) -> None:
        if alert.id in self.poison:
            with self._lock:
                self.attempts += 1
            raise DeliveryError("HTTP 503", retryable=True)
        super().send(alert)


def test_rows_purged_while_the_worker_was_not_synced_are_not_sent(outbox: CountingOutbox) -> None:
    """Rows handed over while the output failed, then purged by an operator (another process):
    the query after recovery sees none pending, and the inbox lets them go."""
    sink = PoisonSink("a")
    d = start(outbox, sink)
    try:
        alerts = make_alerts(31)
        hand_over(outbox, d, alerts[:1])
        wait_for(lambda: len(sink.alerts) == 1)
        sink.poison = {alerts[1].id}
        hand_over(outbox, d, alerts[1:2])
        wait_for(lambda: sink.attempts >= 3)
        hand_over(outbox, d, alerts[2:30])  # into the inbox of a worker that is not synced
        cli = Outbox(outbox.path, OutboxSettings(), on_event=lambda _e: None)  # `detector outbox purge`
        assert cli.purge("a") == 29
        cli.close()
        sink.poison = set()
        wait_for(lambda: d._workers[0].synced)  # its query found nothing pending: it trusts the inbox again
        hand_over(outbox, d, alerts[30:])
        wait_for(lambda: alerts[30].id in sink.ids())
    finally:
        assert d.stop(5)
    assert sink.ids() == [alerts[0].id, alerts[30].id]


def test_rows_sent_in_a_round_that_ended_on_a_failure_are_not_sent_again(outbox: CountingOutbox) -> None:
    sink = PoisonSink("a")
    d = start(outbox, sink)
    try:
        alerts = make_alerts(13)
        hand_over(outbox, d, alerts[:1])
        wait_for(lambda: len(sink.alerts) == 1)
        sink.poison = {alerts[1].id}
        hand_over(outbox, d, alerts[1:2])
        wait_for(lambda: sink.attempts >= 2)  # the worker reads by query now
        sink.poison = {alerts[11].id}
        hand_over(outbox, d, alerts[2:12])  # in the inbox, and read by the query too
        wait_for(lambda: len(sink.alerts) == 11)  # 1..10 sent, 11 in backoff
        cli = Outbox(outbox.path, OutboxSettings(), on_event=lambda _e: None)
        assert cli.purge("a", seqs=[r.seq for r in cli.rows(status="pending")]) == 1
        cli.close()
        wait_for(lambda: d._workers[0].synced)
        hand_over(outbox, d, alerts[12:])
        wait_for(lambda: alerts[12].id in sink.ids())
    finally:
        assert d.stop(5)
    assert sink.ids() == [a.id for a in alerts[:11]] + [alerts[12].id]


def test_a_query_shortened_by_an_undecodable_row_is_not_taken_for_complete(tmp_path: Path) -> None:
    """A damaged body is dead-lettered by the query, so it returns fewer rows than its limit
    though more are pending: the worker reads on before it trusts its inbox."""
    box = Outbox(tmp_path / "detector.db", OutboxSettings(), Router({"a": RouteSettings()}), lambda _e: None)
    alerts = make_alerts(13)
    box.enqueue(alerts[:12])
    raw = sqlite3.connect(tmp_path / "detector.db")
    raw.execute("UPDATE delivery SET body = x'00' WHERE seq = 2")
    raw.commit()
    raw.close()
    sink = MemorySink("a")
    d = Dispatcher(box, {"a": sink}, lambda _e: None, FAST, poll_interval=30.0, batch=5)
    d.start()
    try:
        wait_for(lambda: len(sink.alerts) >= 4)
        hand_over(box, d, alerts[12:])
        wait_for(lambda: len(sink.alerts) == 12)
    finally:
        assert d.stop(5)
        box.close()
    assert sink.ids() == [a.id for i, a in enumerate(alerts) if i != 1]
