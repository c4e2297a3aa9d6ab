"""The dispatcher: one worker thread per output, reading that output's rows from the outbox.

Isolation: a worker only ever waits on its own output (a hanging webhook holds its own thread
for at most its timeout, never Slack's). Order: a worker sends its output's rows strictly by
`seq`; a retryable failure puts the head row in backoff and the rows behind it wait (in order,
in the outbox). A permanent failure dead-letters the row and the worker moves on.

Retries are durable, across time and restarts: the schedule lives in the outbox
(`next_attempt_at`), so in-process retry helpers (urllib3's Retry, tenacity) do not fit; the
delay is exponential with "equal jitter" -- half the capped exponential, plus a uniform random
half -- so that outputs failing together do not retry in lockstep, yet never retry instantly.
A server's Retry-After (429/503) replaces the computed delay, capped by `max_retry_after`.
"""

from __future__ import annotations

import contextlib
import random
import sqlite3
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import structlog

from detector.alert.events import DeliveryEvent, EventKind, OnEvent, log_event
from detector.alert.outbox import Outbox, PendingRead, PendingRow
from detector.alert.secret import scrub
from detector.alert.settings import OutboxSettings
from detector.alert.sink import DeliveryError, Sink

_log = structlog.get_logger("detector.alert")
# Delivered marks are batched: sent rows are marked in one transaction per MARK_BATCH rows or per
# MARK_SECONDS, whichever comes first, not per wake-up. A mark is a write transaction of its own
# (~130 us of CPU, and a WAL to checkpoint): at 200 alerts/s in ~60 batches/s, marking each batch
# cost more than sending it. What a crash between a send and its mark costs is a repeat, with the
# same id, of the alerts sent and not yet marked: at most MAX_UNMARKED, usually under MARK_BATCH.
# Kept small on purpose: Slack, SNS and most webhooks do not drop repeats by id, so every
# repeat after a SIGKILL is a message a person reads twice (0.5 s and 256 rows saved ~1 point of
# a core at 200 alerts/s and repeated hundreds of alerts per SIGKILL when catching up).
MARK_BATCH = 8
MARK_SECONDS = 0.1
MARK_RETRY_SECONDS = 0.005
MAX_UNMARKED = 32  # sent rows held unmarked at most (a mark that waits for the engine's commit)
INBOX_MAX = 1_000  # rows handed over and not yet sent, per output; past it they are read back


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Delays between attempts: initial * 2**(n-1), capped at maximum, with equal jitter."""

    initial: float = 1.0
    maximum: float = 300.0
    max_retry_after: float = 900.0

    @classmethod
    def from_settings(cls, settings: OutboxSettings) -> RetryPolicy:
        return cls(settings.retry_initial_seconds, settings.retry_max_seconds, settings.max_retry_after_seconds)

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float:
        """Seconds to wait after the `attempt`-th failed attempt (1-based)."""
        if retry_after is not None:
            return min(max(retry_after, 0.0), self.max_retry_after)
        ceiling = min(self.maximum, self.initial * 2.0 ** min(max(attempt - 1, 0), 62))
        return ceiling / 2 + (rng or random).uniform(0, ceiling / 2)


class Dispatcher:
    """Delivers the outbox's pending rows through `sinks` (output name -> sink)."""

    def __init__(self, outbox: Outbox, sinks: Mapping[str, Sink], on_event: OnEvent = log_event,
                 retry: RetryPolicy | None = None, *, poll_interval: float = 1.0,
                 maintain_interval: float = 30.0, batch: int = 100, clock: Callable[[], float] = time.time,
                 defer_marks: bool = False) -> None:
        self.outbox = outbox
        # In another process than the engine (the courier), waiting for the outbox's write lock
        # means sleeping in SQLite's busy handler (1, 2, 5... ms) behind each engine commit:
        # there a worker sends on and marks when the lock is free. In the engine's process the
        # lock is handed over at once, and marks are not deferred (fewer repeats after a crash).
        self.defer_marks = defer_marks
        self.sinks = dict(sinks)
        self.on_event = on_event
        self.retry = retry or RetryPolicy.from_settings(outbox.settings)
        self.poll_interval = poll_interval
        self.maintain_interval = maintain_interval
        self.batch = batch
        self.clock = clock
        self._stop = threading.Event()
        self._workers = [_Worker(self, name, sink) for name, sink in self.sinks.items()]
        self._housekeeper = threading.Thread(target=self._housekeep, name="detector-outbox-maintain", daemon=True)
        self._started = False

    def start(self) -> None:
        if self._started:
            raise RuntimeError("dispatcher already started")
        self._started = True
        self._report_orphans()
        for worker in self._workers:
            worker.start()
        self._housekeeper.start()

    def notify(self, rows: Sequence[PendingRow] | None = None) -> None:
        """New rows are in the outbox: wake the idle workers (never blocks). `rows` are the rows
        just stored, when the caller knows them (Outbox.store): a worker that has read all older
        rows sends these without reading them back. None: rows it cannot list were stored."""
        if rows is None:
            for worker in self._workers:
                worker.resync()
            return
        by_output: dict[str, list[PendingRow]] = {}
        for row in rows:
            by_output.setdefault(row.output, []).append(row)
        for worker in self._workers:
            handed = by_output.get(worker.output)
            if handed:
                worker.offer(handed)

    def stop(self, timeout: float = 30.0) -> bool:
        """Stop after in-flight sends finish; True when every thread has ended in time."""
        self._stop.set()
        for worker in self._workers:
            worker.wake.set()
        deadline = time.monotonic() + timeout
        threads: list[threading.Thread] = [*self._workers, self._housekeeper]
        for thread in threads:
            if thread.is_alive():
                thread.join(max(0.0, deadline - time.monotonic()))
        return not any(thread.is_alive() for thread in threads)

    @property
    def stopping(self) -> bool:
        return self._stop.is_set()

    def pause(self, seconds: float) -> None:
        """Sleep up to `seconds`, ending early when stopping."""
        self._stop.wait(seconds)

    def emit(self, event: DeliveryEvent) -> None:
        """Report through `on_event`; a failing callback is logged, never fatal to a worker."""
        try:
            self.on_event(event)
        except Exception:  # the callback is the caller's code; a worker must outlive its bugs
            _log.exception("delivery event callback failed", kind=str(event.kind), output=event.output)

    def _report_orphans(self) -> None:
        """Say so when held rows belong to an output no longer configured: nothing sends them."""
        for (output, status), count in self.outbox.counts().items():
            if output not in self.sinks and status in ("pending", "dead"):
                self.emit(DeliveryEvent(
                    EventKind.WORKER_ERROR, output, count=count,
                    error=f"{count} {status} alerts for output {output!r}, which is not configured; they stay "
                          f"until the outbox's max age (or `detector outbox purge --output {output}`)"))

    def _housekeep(self) -> None:
        try:
            self.outbox.relax_sync()
            while not self._stop.is_set():
                try:
                    self.outbox.maintain()
                except sqlite3.Error as exc:
                    self.emit(DeliveryEvent(EventKind.WORKER_ERROR, error=f"outbox maintenance: {exc}"))
                self._stop.wait(self.maintain_interval)
        finally:
            self.outbox.release()


class _Worker(threading.Thread):
    """Delivers one output's rows, in order."""

    def __init__(self, dispatcher: Dispatcher, output: str, sink: Sink) -> None:
        super().__init__(name=f"detector-deliver-{output}", daemon=True)
        self.d = dispatcher
        self.output = output
        self.sink = sink
        self.wake = threading.Event()
        self.rng = random.Random()
        self.unmarked: list[tuple[PendingRow, float]] = []  # sent, not yet marked delivered (and when sent)
        self.mark_at = 0.0  # time.monotonic() by which the unmarked rows are to be marked
        # Rows handed over by the engine as it stores them (Dispatcher.notify), so that a worker
        # that has read every older row sends them without a query (~160 us of CPU a wake-up,
        # ~1 point of a core at 200 alerts/s). `synced`: the last query saw every pending row
        # stored before it, so the inbox holds all that came since (rows <= last_seq were seen).
        self.lock = threading.Lock()
        self.inbox: list[PendingRow] = []
        self.synced = False
        self.generation = 0  # moves on when the inbox lost rows: a query in progress cannot sync
        self.last_seq = 0
        self.query_at = 0.0  # time.monotonic() by which to query anyway (rows an operator retried)

    def offer(self, rows: list[PendingRow]) -> None:
        """Rows just stored for this output, in seq order."""
        with self.lock:
            if len(self.inbox) + len(rows) > INBOX_MAX:  # the output is slow or failing: read them back later
                self._lose_inbox()
            else:
                self.inbox += rows
        self.wake.set()

    def resync(self) -> None:
        """Rows were stored that the inbox does not have: query before sending from it again."""
        with self.lock:
            self._lose_inbox()
        self.wake.set()

    def _lose_inbox(self) -> None:
        self.inbox.clear()
        self.synced = False
        self.generation += 1

    def _next_rows(self) -> tuple[list[PendingRow], PendingRead | None, int]:
        """The rows to send next, with the query that read them (None: the inbox) and the
        inbox's generation before it."""
        now = time.monotonic()
        with self.lock:
            if self.synced and now < self.query_at:
                rows = [row for row in self.inbox if row.seq > self.last_seq]
                self.inbox.clear()
                return rows, None, self.generation
            self.synced = False
            generation = self.generation
        self.query_at = now + self.d.poll_interval
        # Rows sent and not yet marked are left out in the query. They are a run of seqs, but for
        # a row an operator retried meanwhile (an older seq): a pending row of the range that is
        # not held waits until the held ones are marked (MARK_SECONDS at most).
        seqs = [row.seq for row, _ in self.unmarked]
        skip = (min(seqs), max(seqs)) if seqs else None
        read = self.d.outbox.pending_read(self.output, self.d.batch, skip)
        return read.rows, read, generation

    def _sent_all(self, rows: list[PendingRow], read: PendingRead | None, generation: int) -> None:
        """Every row of a round was sent. After a complete query, no pending row up to its
        horizon is unsent: the inbox is trusted from there on, and what it holds up to the
        horizon (sent by the query's round or an earlier one, purged, dropped) is let go."""
        with self.lock:
            if rows:
                self.last_seq = max(self.last_seq, rows[-1].seq)
            if read is not None and read.complete and generation == self.generation:
                self.synced = True
                self.last_seq = max(self.last_seq, read.horizon)
                self.inbox = [row for row in self.inbox if row.seq > self.last_seq]

    def run(self) -> None:
        try:
            self.d.outbox.relax_sync()
            while not self.d.stopping:
                try:
                    self._round()
                except Exception as exc:  # the outbox's disk or a bug: report, wait, go on
                    error = scrub(f"{type(exc).__name__}: {exc}", self.sink.secrets)
                    self.d.emit(DeliveryEvent(EventKind.WORKER_ERROR, self.output, error=error))
                    self._sleep(self.d.poll_interval)
        finally:
            with contextlib.suppress(Exception):  # the outbox's disk: the rows are sent again next start
                self._mark(wait=True)
            self.d.outbox.release()

    def _round(self) -> None:
        """Send due rows until the output is empty, in backoff, or stopping; then wait for new
        rows (or until the sent ones are to be marked)."""
        self.wake.clear()
        rows, read, generation = self._next_rows()
        if not self._send(rows):
            with self.lock:
                self.synced = False  # the rows not sent are read back, in order, by the next query
            return
        self._sent_all(rows, read, generation)
        if (read is not None and not read.complete) or self.wake.is_set() or self.inbox:
            return  # there may be more: look again at once
        if not self.unmarked:
            self.wake.wait(self.d.poll_interval)
            return
        due = self.mark_at - time.monotonic()
        if due > 0:
            self.wake.wait(min(due, self.d.poll_interval))
            return
        # All sent: mark now if the outbox is free, else look again in a moment (new rows may
        # come first) rather than sleep in SQLite's busy handler.
        self._mark(wait=not self.d.defer_marks)
        if self.unmarked:
            self.wake.wait(MARK_RETRY_SECONDS)

    def _send(self, rows: list[PendingRow]) -> bool:
        """Send rows in order; False when stopped early (stopping, a row in backoff, a failure)."""
        try:
            for row in rows:
                if self.d.stopping:
                    return False
                wait = row.next_attempt_at - self.d.clock()
                if wait > 0:
                    self._sleep(min(wait, self.d.poll_interval * 5))  # re-read: an operator may retry
                    return False
                if not self._deliver(row):
                    return False
                if len(self.unmarked) >= MARK_BATCH or time.monotonic() >= self.mark_at:
                    self._mark(wait=not self.d.defer_marks or len(self.unmarked) >= MAX_UNMARKED)
        finally:
            if self.d.stopping:
                self._mark(wait=True)
        return True

    def _mark(self, *, wait: bool) -> None:
        """One transaction for the rows sent and not yet marked, then their DELIVERED events.
        Without `wait` it is skipped while another connection (the engine) writes, and the
        rows stay held in memory (never re-sent by this worker); a crash before the mark sends
        them again (at least once, at most MAX_UNMARKED alerts, with their ids)."""
        if not self.unmarked:
            return
        if not self.d.outbox.mark_delivered_many([row.seq for row, _ in self.unmarked], wait=wait):
            return
        for row, sent_at in self.unmarked:
            self.d.emit(DeliveryEvent(EventKind.DELIVERED, self.output, row.alert.id, row.alert.rule,
                                      row.attempts + 1, latency=sent_at - row.created_at))
        self.unmarked.clear()

    def _sleep(self, seconds: float) -> None:
        """Wait without waking for new rows (they queue behind the row in backoff)."""
        self.d.pause(seconds)

    def _deliver(self, row: PendingRow) -> bool:
        """One attempt; True when the worker may go on to the next row."""
        try:
            self.sink.send(row.alert)
        except DeliveryError as exc:
            error = scrub(exc.message, self.sink.secrets)
            self._mark(wait=True)  # the rows sent before this one are reported first
            if not exc.retryable:
                self.d.outbox.dead_letter(row.seq, error)
                self.d.emit(DeliveryEvent(EventKind.DEAD, self.output, row.alert.id, row.alert.rule,
                                          row.attempts + 1, error=error))
                return True
            self._schedule(row, error, exc.retry_after, EventKind.RETRY)
            return False
        except Exception as exc:  # a sink bug must not kill the worker and silently stall the output
            error = scrub(f"{type(exc).__name__}: {exc}", self.sink.secrets)
            self._mark(wait=True)
            self._schedule(row, error, None, EventKind.WORKER_ERROR)
            return False
        if not self.unmarked:
            self.mark_at = time.monotonic() + MARK_SECONDS
        self.unmarked.append((row, self.d.clock()))
        return True

    def _schedule(self, row: PendingRow, error: str, retry_after: float | None, kind: EventKind) -> None:
        delay = self.d.retry.delay(row.attempts + 1, retry_after, self.rng)
        self.d.outbox.schedule_retry(row.seq, self.d.clock() + delay, error)
        self.d.emit(DeliveryEvent(kind, self.output, row.alert.id, row.alert.rule, row.attempts + 1,
                                  error=error, retry_in=delay))
