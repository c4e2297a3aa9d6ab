"""Tests for detector.alert.outbox: the durable, bounded, de-duplicating queue in SQLite."""

from __future__ import annotations

import sqlite3
import stat
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.outbox import SYNCED_KEY, Outbox, decode_alert, encode_alert
from detector.alert.route import Router
from detector.alert.settings import OutboxSettings, RouteSettings
from detector.errors import ConfigError
from detector.rules.model import Priority
from tests.support.alertkit import make_alert, make_alerts
from tests.support.receiver import wait_for


class Clock:
    """A settable clock."""

    def __init__(self, now: float = 1000.0) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


ROUTES = Router({"all": RouteSettings(), "loud": RouteSettings(min_priority=Priority.ERROR)})


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def events() -> list[DeliveryEvent]:
    return []


@pytest.fixture
def outbox(tmp_path: Path, clock: Clock, events: list[DeliveryEvent]) -> Iterator[Outbox]:
    box = Outbox(tmp_path / "detector.db", OutboxSettings(max_rows=5, max_age_seconds=100, dedup_seconds=1000),
                 ROUTES, events.append, clock)
    yield box
    box.close()


def test_one_row_per_selected_output(outbox: Outbox) -> None:
    """A warning goes to `all` only; a critical to both; each output sees its own order."""
    warning, critical = make_alert(1), make_alert(2, priority=Priority.CRITICAL)
    assert outbox.enqueue([warning, critical]) == 3
    assert [d.alert for d in outbox.pending("all")] == [warning, critical]
    assert [d.alert for d in outbox.pending("loud")] == [critical]


def test_alerts_round_trip_losslessly() -> None:
    """Every field survives encode/decode (tags as a tuple, lists inside fields)."""
    alert = make_alert(3, tags=("a", "b"), cluster="prod")
    assert decode_alert(encode_alert(alert)) == alert


def test_duplicate_ids_are_ignored_even_after_delivery(tmp_path: Path, clock: Clock) -> None:
    """Re-enqueueing an alert -- pending, delivered, or after a restart -- adds nothing."""
    alert = make_alert(1)
    box = Outbox(tmp_path / "d.db", OutboxSettings(), ROUTES, clock=clock)
    assert box.enqueue([alert]) == 1
    assert box.enqueue([alert]) == 0
    box.mark_delivered(box.pending("all")[0].seq)
    box.close()
    reopened = Outbox(tmp_path / "d.db", OutboxSettings(), ROUTES, clock=clock)
    assert reopened.enqueue([alert]) == 0 and reopened.pending("all") == []
    reopened.close()


def test_state_is_written_with_the_alerts(outbox: Outbox) -> None:
    """State keys go in the same transaction; None deletes; prefix listing works."""
    outbox.enqueue([make_alert(1)], {"checkpoint": b"offset=10", "throttle/a": b"{}"})
    assert outbox.get_state("checkpoint") == b"offset=10"
    outbox.enqueue([], {"checkpoint": b"offset=20", "throttle/a": None, "throttle/b": b"1"})
    assert outbox.get_state("checkpoint") == b"offset=20"
    assert outbox.state_items("throttle/") == {"throttle/b": b"1"}
    assert outbox.get_state("missing") is None


def test_a_failed_transaction_moves_no_state(outbox: Outbox) -> None:
    """If the alerts cannot be written, the checkpoint does not move either."""
    outbox.enqueue([], {"checkpoint": b"1"})
    with pytest.raises(sqlite3.Error):
        outbox.enqueue([make_alert(1)], {"checkpoint": b"2", "bad": object()})  # type: ignore[dict-item]
    assert outbox.get_state("checkpoint") == b"1" and outbox.pending("all") == []


def test_retry_dead_letter_and_delivery_marks(outbox: Outbox, clock: Clock) -> None:
    """Marks move rows between pending, delivered and dead, counting attempts."""
    outbox.enqueue(make_alerts(3))
    first, second, third = outbox.pending("all")
    outbox.schedule_retry(first.seq, clock.now + 30, "HTTP 500")
    head = outbox.pending("all")[0]
    assert head.attempts == 1 and head.next_attempt_at == clock.now + 30
    outbox.dead_letter(second.seq, "HTTP 404")
    outbox.mark_delivered(third.seq)
    rows = {row.seq: row for row in outbox.rows()}
    assert rows[first.seq].status == "pending" and rows[first.seq].last_error == "HTTP 500"
    assert rows[second.seq].status == "dead" and rows[second.seq].last_error == "HTTP 404"
    assert rows[third.seq].status == "delivered"
    assert [d.seq for d in outbox.pending("all")] == [first.seq]


def test_full_outbox_drops_the_oldest_and_says_so(outbox: Outbox, events: list[DeliveryEvent]) -> None:
    """Beyond max_rows (5) the oldest held rows are dropped, counted and reported."""
    alerts = make_alerts(8)
    for alert in alerts:
        outbox.enqueue([alert])
    assert [d.alert.id for d in outbox.pending("all")] == [a.id for a in alerts[3:]]
    assert outbox.dropped_total == 3
    drops = [e for e in events if e.kind is EventKind.DROPPED]
    assert sum(e.count for e in drops) == 3 and {e.reason for e in drops} == {"outbox full"}
    assert [row.status for row in outbox.rows(status="dropped")] == ["dropped"] * 3
    assert outbox.enqueue([alerts[0]]) == 0  # a dropped id stays known: no late re-delivery


def test_dead_rows_count_against_the_bound(outbox: Outbox) -> None:
    """Dead-lettered rows hold their body, so they count; they are dropped oldest-first too."""
    outbox.enqueue(make_alerts(5))
    for row in outbox.pending("all"):
        outbox.dead_letter(row.seq, "HTTP 400")
    outbox.enqueue(make_alerts(2, start=10))
    assert len(outbox.rows(status="dead")) == 3 and outbox.dropped_total == 2


def test_age_bound_and_tombstone_pruning(outbox: Outbox, clock: Clock, events: list[DeliveryEvent]) -> None:
    """maintain() drops held rows older than max_age and forgets old tombstones."""
    outbox.enqueue(make_alerts(2))
    first, _ = outbox.pending("all")
    outbox.mark_delivered(first.seq)
    clock.now += 101
    outbox.enqueue([make_alert(5)])
    outbox.maintain()
    assert [d.alert.id for d in outbox.pending("all")] == [make_alert(5).id]
    assert [e.reason for e in events if e.kind is EventKind.DROPPED] == ["too old"]
    assert len(outbox.rows(status="delivered")) == 1
    clock.now += 1000
    outbox.maintain()
    assert outbox.rows(status="delivered") == []
    assert outbox.enqueue([make_alert(0)]) == 1  # past dedup_seconds an id is new again


def test_cli_retry_and_purge(outbox: Outbox, clock: Clock) -> None:
    """retry makes dead rows due with a fresh count; purge turns held rows into tombstones."""
    outbox.enqueue(make_alerts(3))
    rows = outbox.pending("all")
    for row in rows[:2]:
        outbox.dead_letter(row.seq, "HTTP 400")
    assert outbox.retry(output="all", seqs=[rows[0].seq]) == 1
    due = outbox.pending("all")[0]
    assert due.seq == rows[0].seq and due.attempts == 0 and due.next_attempt_at == clock.now
    assert outbox.purge(status="dead") == 1
    assert outbox.purge(output="all") == 2
    assert outbox.pending("all") == [] and outbox.dropped_total == 0
    with pytest.raises(ConfigError, match="only pending or dead rows can be retried"):
        outbox.retry(status="delivered")
    with pytest.raises(ConfigError, match="unknown status 'lost'"):
        outbox.rows(status="lost")


def test_counts_and_listing_filters(outbox: Outbox) -> None:
    """counts() groups by output and status; rows() filters and limits."""
    outbox.enqueue([make_alert(1), make_alert(2, priority=Priority.CRITICAL)])
    assert outbox.counts() == {("all", "pending"): 2, ("loud", "pending"): 1}
    assert [r.output for r in outbox.rows(output="loud")] == ["loud"]
    assert len(outbox.rows(limit=1)) == 1


def test_file_mode_and_wal(tmp_path: Path) -> None:
    """The database is private to its owner and in WAL mode."""
    box = Outbox.in_state_dir(tmp_path / "state", router=ROUTES)
    path = tmp_path / "state" / "detector.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    box.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    """A database written by a newer detector is not touched."""
    path = tmp_path / "detector.db"
    with sqlite3.connect(path) as db:
        db.execute("PRAGMA user_version=99")
    with pytest.raises(ConfigError, match="outbox schema 99 is newer"):
        Outbox(path)


def test_an_outbox_without_routes_cannot_take_alerts(tmp_path: Path) -> None:
    """The CLI's outbox (no routes) refuses enqueue rather than dropping alerts."""
    box = Outbox(tmp_path / "detector.db")
    with pytest.raises(ConfigError, match="without routes"):
        box.enqueue([make_alert(1)])
    box.close()


def test_threads_use_their_own_connections(outbox: Outbox) -> None:
    """A dispatcher thread reads and marks through its own connection while the engine writes."""
    outbox.enqueue(make_alerts(3))
    seen: list[int] = []

    def worker() -> None:
        for row in outbox.pending("all"):
            outbox.mark_delivered(row.seq)
            seen.append(row.seq)
        outbox.release()

    thread = threading.Thread(target=worker)
    thread.start()
    outbox.enqueue(make_alerts(1, start=10))
    thread.join()
    assert len(seen) >= 3 and outbox.get_state("x") is None


def test_nothing_to_store_means_no_transaction(outbox: Outbox) -> None:
    """An idle tick (no alerts, no state) does not even wait for the write lock."""
    blocker = sqlite3.connect(outbox.path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    done = threading.Event()

    def idle() -> None:
        outbox.enqueue([], {})
        outbox.release()
        done.set()

    thread = threading.Thread(target=idle)
    thread.start()
    finished = done.wait(2)
    blocker.execute("ROLLBACK")
    blocker.close()
    thread.join()
    assert finished


def test_an_undecodable_row_is_dead_lettered_not_fatal(outbox: Outbox) -> None:
    """A stored body that no longer decodes goes to the dead letters; the rest is delivered."""
    outbox.enqueue(make_alerts(2))
    first, second = outbox.pending("all")
    with sqlite3.connect(outbox.path) as db:
        db.execute("UPDATE delivery SET body = ? WHERE seq = ?", (b'{"id": "x"}', first.seq))
    assert [d.seq for d in outbox.pending("all")] == [second.seq]
    (dead,) = outbox.rows(status="dead")
    assert dead.seq == first.seq and dead.last_error == "stored alert cannot be decoded (ValidationError)"


def test_held_counts_see_pending_and_dead_rows_only(outbox: Outbox) -> None:
    outbox.enqueue(make_alerts(3))
    rows = outbox.pending("all", 10)
    assert len(rows) == 3
    outbox.mark_delivered_many([rows[0].seq])
    outbox.dead_letter(rows[1].seq, "HTTP 400")
    assert outbox.held_counts() == (1, 1)


def test_many_marks_and_the_pending_query_skipping_held_rows(tmp_path: Path) -> None:
    """Marks of more rows than one UPDATE takes land all, and only on the rows named; `skip`
    leaves a worker's held range out of `pending`."""
    box = Outbox(tmp_path / "big.db", OutboxSettings(), ROUTES, lambda _e: None)
    try:
        box.enqueue(make_alerts(1_203))
        rows = box.pending("all", 2_000)
        assert len(rows) == 1_203
        assert [r.seq for r in box.pending("all", 3, skip=(rows[0].seq, rows[9].seq))] == [
            r.seq for r in rows[10:13]]
        marked = [r.seq for r in rows[:1_200]]
        assert box.mark_delivered_many(marked)
        assert [r.seq for r in box.pending("all", 10)] == [r.seq for r in rows[1_200:]]
        assert box.counts()[("all", "delivered")] == 1_200
        assert all(r.attempts == 1 for r in box.rows(status="delivered", limit=None))
    finally:
        box.close()


def test_batched_commits_are_fsynced_within_the_interval(tmp_path: Path) -> None:
    """outbox.synchronous batched (the default): the engine's commits are not fsynced one by
    one; the first commit `sync_interval_seconds` after an unsynced one is (synchronous=FULL,
    which syncs the WAL up to it), and `sync` makes them durable when no commit comes."""
    settings = OutboxSettings(sync_interval_seconds=0.05)
    assert settings.synchronous == "batched"
    box = Outbox(tmp_path / "detector.db", settings, Router({"a": RouteSettings()}), lambda _e: None)
    statements: list[str] = []
    box._db().set_trace_callback(statements.append)
    try:
        fsynced = lambda: [s for s in statements if s.upper().startswith("PRAGMA SYNCHRONOUS")]  # noqa: E731
        assert box.synced and box.sync_due() is None
        box.store(make_alerts(2), {"checkpoint": b"1"})
        box.store(make_alerts(2, start=2), {"checkpoint": b"2"})
        due = box.sync_due()
        assert not box.synced and due is not None and 0 < due <= 0.05
        assert fsynced() == []  # both committed with the connection's synchronous=NORMAL
        wait_for(lambda: (box.sync_due() or 0) <= 0)
        box.store(make_alerts(1, start=4), {"checkpoint": b"3"})
        assert box.synced and fsynced() == ["PRAGMA synchronous=FULL", "PRAGMA synchronous=NORMAL"]
        first = box.get_state(SYNCED_KEY)  # written by the commit made to be fsynced
        box.put_state({"checkpoint": b"3"})  # changes no page: its fsync needs the key's write
        assert not box.synced
        box.sync()
        assert box.synced and len(fsynced()) == 4 and first is not None
        assert box.get_state(SYNCED_KEY) not in (None, first)
        box.sync()  # nothing to make durable: no transaction
        assert len(fsynced()) == 4
    finally:
        box.close()
    reader = sqlite3.connect(tmp_path / "detector.db")
    assert reader.execute("SELECT COUNT(*) FROM delivery").fetchone()[0] == 5
    reader.close()


@pytest.mark.parametrize("mode", ["full", "normal"])
def test_full_and_normal_are_synced_as_far_as_they_go(tmp_path: Path, mode: str) -> None:
    """full fsyncs every commit; normal never asks for it: neither has commits waiting for a sync."""
    box = Outbox(tmp_path / "detector.db", OutboxSettings(synchronous=mode), Router({"a": RouteSettings()}),
                 lambda _e: None)
    try:
        box.store(make_alerts(2), {"checkpoint": b"1"})
        assert box.synced and box.sync_due() is None
        expected = 2 if mode == "full" else 1
        assert box._db().execute("PRAGMA synchronous").fetchone()[0] == expected
    finally:
        box.close()
