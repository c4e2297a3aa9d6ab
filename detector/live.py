"""`detector run`: follow the live audit log, evaluate every line, hand alerts durably to the
delivery stage, and checkpoint only what is safely handed over.

The loop is single-threaded: the watcher thread only signals, the dispatcher threads only
deliver from the outbox. A batch of lines becomes alerts, and `delivery.submit` writes those
alerts and the position after the batch in ONE SQLite transaction: after a crash we resume
from the last committed position, so an event is either fully handed over or read again
(re-created alerts carry the same id and are ignored by the outbox).
"""

from __future__ import annotations

import fcntl
import functools
import os
import signal
import socket
import sqlite3
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

import structlog

from detector.alert.events import DeliveryEvent, EventKind, log_event
from detector.alert.model import Alert
from detector.alert.outbox import DB_NAME, is_damaged
from detector.alert.settings import DeliverySettings
from detector.alert.stage import Delivery, open_delivery
from detector.config import RunConfig
from detector.engine import diagnose_line, evaluation_error, freeze_heap
from detector.errors import BadInput, ConfigError, DetectorError, Location, RuleLoadError, StateError
from detector.event import AuditEvent
from detector.kafkarun import KafkaMetrics
from detector.logs import configure_logging
from detector.metrics import Metrics, MetricsServer
from detector.parse.audit import parse_line
from detector.rules.loader import rule_files
from detector.rules.ruleset import Ruleset
from detector.rules.stateful import STATE_PREFIX as STATEFUL_PREFIX
from detector.source.kafka import KafkaSource
from detector.source.position import Position
from detector.source.spool import Spool, spool_path
from detector.source.stream import StreamFollower
from detector.source.tail import Follower
from detector.source.watch import Waker
from detector.source.webhook import ReceiverSettings, WebhookReceiver

CHECKPOINT_KEY = "source.checkpoint"
LOCK_NAME = "detector.lock"  # also tells that detector used the state directory before
BATCH_LINES = 2_000
WAIT_SECONDS = 0.25
SYNC_RETRY_SECONDS = 1.0  # after a failed fsync of the state database
STORE_RETRY_FIRST, STORE_RETRY_MAX, STORE_RETRY_STEP = 0.1, 5.0, 0.05  # seconds, when the state cannot be stored
STOP_TIMEOUT = 3.0  # for in-flight sends at SIGTERM: the whole stop stays well under 5 s
DRAIN_SECONDS, DRAIN_POLL_SECONDS = 30.0, 0.05  # after the end of standard input
RECEIVER_STOP_SECONDS, SPOOL_DRAIN_SECONDS = 1.5, 1.0  # webhook input at SIGTERM: requests in flight, then the spool
SWITCH_INTERVAL = 0.001  # seconds, with the webhook input (see _receiver)
SPOOL_LINE_OVERHEAD = 4096  # a spool line is the request body plus its envelope
KAFKA_CLOSE_SECONDS = 10.0  # kafka input at SIGTERM: the last commit and leaving the group
KAFKA_DELIVER_SECONDS = 10.0  # then the outbox: a replica's pod (and state_dir) may be gone for good
KAFKA_BATCH_LINES = 100  # a kafka spool line holds up to 20 records (source/kafka.py): ~2,000 events a batch
# A spool line is one webhook request or one kafka poll's run of records, and one record can be an
# EventList of thousands of events: the lines of a batch are sized by their bytes (as the last
# batch's lines ran), so that a batch's parsed events stay a few MB, whatever a line holds.
SPOOL_BATCH_BYTES = 1 << 20
SPOOL_FIRST_BATCH = 8  # lines, before any was seen
SPOOL_MAX_LAG_BYTES = 256 << 20  # spooled but not evaluated yet: past this, requests get 429
OUTBOX_FULL_FRACTION = 0.9  # of outbox.max_rows pending: requests get 429 (the outbox drops the oldest past max_rows)

log = structlog.get_logger("detector.run")


@dataclass
class _Flags:
    stop: bool = False
    reload: bool = False
    signals: list[int] = field(default_factory=list)


class LiveRunner:
    """Owns the follower, the ruleset, the delivery stage and the metrics of one `detector run`."""

    def __init__(self, config: RunConfig, delivery: DeliverySettings, load_rules: Callable[[], Ruleset],
                 rule_paths: list[str]) -> None:
        self.config = config
        self.delivery_settings = delivery
        self.load_rules = load_rules
        self.rule_paths = rule_paths
        self.metrics = Metrics()
        self.flags = _Flags()
        self.ruleset = load_rules()
        self.metrics.rules_loaded.set(len(self.ruleset.active))
        self.metrics.ready = True
        self._rule_mtimes = self._mtimes()
        self._alert_counters: dict[tuple[str, str], Any] = {}  # (output, result) -> its counter
        self._input_observer: InputObserver | None = None  # the webhook input's metrics, when it is on
        self._loading: _RulesLoad | None = None  # a reload under way
        self._reload_pending: str | None = None  # a reload asked for while one was under way
        self._pending: Position | None = None  # handled but not yet checkpointed
        self._committed: Position | None = None  # stored with its alerts (SQLite commit)
        self._durable: Position | None = None  # ... and on disk (see outbox.synchronous)
        self._sync_retry_at = 0.0  # after a failed sync: not before then
        self._sync_error: str | None = None  # the last failed sync's error, until one succeeds
        self._last_commit = time.monotonic()
        self._line: SourceLine | None = None  # the line being handled, for reports
        self.spool: Spool | None = None
        self.receiver: WebhookReceiver | None = None
        self._outbox_pending = 0  # as of the last housekeeping: backpressure for the webhook input
        self.kafka: KafkaSource | None = None
        self._kafka_metrics: KafkaMetrics | None = None
        self._spool_lag = 0

    # -- lifecycle --------------------------------------------------------------------------
    def run(self) -> int:
        state_dir = Path(self.config.state_dir)
        used_before = (state_dir / LOCK_NAME).exists()
        lock = _lock_state_dir(state_dir)
        _report_state_files(state_dir, used_before, self.config.start_at)
        server = self._metrics_server()
        try:
            delivery = open_delivery(self.delivery_settings, state_dir, self._on_delivery_event,
                                     hostname=alert_hostname(), child_setup=functools.partial(
                                         configure_logging, self.config.log_format, self.config.log_level))
            try:
                delivery.start()
                freeze_heap()
                self._follow(delivery)
            finally:
                # Unsent alerts stay pending in the outbox and go out after the next start.
                if not delivery.close(STOP_TIMEOUT):
                    log.warning("delivery_stop_timeout", seconds=STOP_TIMEOUT)
        finally:
            if server is not None:
                server.close()
            os.close(lock)
        log.info("stopped", signals=self.flags.signals)
        return 0

    def install_signal_handlers(self) -> None:
        signal.signal(signal.SIGTERM, self._on_stop)
        signal.signal(signal.SIGINT, self._on_stop)
        signal.signal(signal.SIGHUP, self._on_hup)

    def _on_stop(self, signum: int, _frame: FrameType | None) -> None:
        self.flags.stop = True
        self.flags.signals.append(signum)

    def _on_hup(self, _signum: int, _frame: FrameType | None) -> None:
        self.flags.reload = True

    def _metrics_server(self) -> MetricsServer | None:
        listen = self.config.metrics.get("listen") if self.config.metrics else None
        if not listen:
            return None
        try:
            server = MetricsServer(self.metrics, listen)
        except OSError as exc:
            raise ConfigError(f"metrics.listen: cannot listen on {listen}: {exc.strerror or exc}") from None
        log.info("metrics_listening", listen=listen, port=server.port)
        return server

    # -- the loop ---------------------------------------------------------------------------
    def _follow(self, delivery: Delivery) -> None:
        webhook = self.config.input.type == "webhook"
        spooled = webhook or self.config.input.type == "kafka"
        if self.config.file == "-" and not spooled:
            self._follow_stream(delivery)
            return
        # The webhook input spools each accepted request as one line, the kafka input each
        # record, and that spool is followed and checkpointed exactly like a live audit.log
        # (detector/source/spool.py).
        path = spool_path(self.config.state_dir) if spooled else self.config.file
        spool = Spool(path, on_event=self._on_source_event) if spooled else None
        resume = self._resume_position(delivery, path)
        self._load_stateful(delivery, resumed=resume is not None)
        max_line = self._max_line_bytes() if spooled else self.config.max_line_bytes
        follower = Follower(path, start_at="beginning" if spooled else self.config.start_at,  # type: ignore[arg-type]
                            resume=resume, on_bad=self._on_bad, on_event=self._on_source_event,
                            max_line_bytes=max_line)
        waker = Waker(path, mode=self.config.watch,  # type: ignore[arg-type]
                      poll_interval=self.config.poll_interval, on_event=self._on_source_event)
        receiver = self._receiver(spool) if spool is not None and webhook else None
        self.spool, self.receiver, kafka = spool, receiver, (self._kafka(spool) if spool and not webhook else None)
        log.info("started", file=path, state_dir=self.config.state_dir, rules=len(self.ruleset.active),
                 resume=resume is not None, watch=waker.mode, **self._input_fields(receiver))
        next_housekeeping = 0.0
        # handled: lines since the last wake-up (a busy log is looked at more often)
        handled, batch = 0, (SPOOL_FIRST_BATCH if spooled else BATCH_LINES)
        try:
            while not self.flags.stop:
                lines = follower.read(batch)
                if lines:
                    # The follower's position, not the last line's: it also knows a file ended.
                    self._handle(lines, follower.position or lines[-1].position, delivery)
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._housekeeping(delivery, follower, now)
                    next_housekeeping = now + 1.0
                self.metrics.input_open = follower.is_open and (receiver is None or self._admit() is None) \
                    and (kafka is None or kafka.ready)
                handled += len(lines)
                if len(lines) < batch and not self.flags.stop:
                    waker.wait(self._idle_seconds(delivery, now), handled)
                    handled = 0
                else:
                    self._sync_if_due(delivery, now)
                batch = spool_batch(lines, KAFKA_BATCH_LINES if kafka else BATCH_LINES, batch) if spooled else batch
                self.metrics.beat()
            self._stop_inputs(receiver, kafka, follower, delivery)
        finally:
            if receiver is not None:
                receiver.close(0.0)  # stopped already, unless the loop ended with an error
            try:
                self._final_checkpoint(delivery, follower)
            finally:
                self._close_kafka(kafka)  # after the last checkpoint: its offsets are committed
                self.metrics.input_open = False
                waker.close()
                follower.close()
                if spool is not None:
                    spool.close()
        self._deliver_before_exit(delivery, kafka)

    def _final_checkpoint(self, delivery: Delivery, follower: Follower) -> None:
        if self._pending is None and follower.position not in (None, self._committed):
            self._pending = follower.position  # e.g. a rotated file finished since the last housekeeping
        if delivery.stage.unstored is None:  # else the last batch failed: its position stays out
            self._commit(delivery, [], force=True)
            self._sync(delivery)

    # -- the webhook input ------------------------------------------------------------------------
    def _receiver(self, spool: Spool) -> WebhookReceiver:
        from detector.metrics import parse_listen  # noqa: PLC0415 - validated at config load

        cfg = self.config.input
        host, port = parse_listen(cfg.listen)
        settings = ReceiverSettings(host, port, tls_cert_file=cfg.tls_cert_file, tls_key_file=cfg.tls_key_file,
                                    client_ca_file=cfg.client_ca_file, token_file=cfg.token_file,
                                    max_body_bytes=cfg.max_body_bytes,
                                    max_concurrent_requests=cfg.max_concurrent_requests)
        # The loop holds the GIL while it evaluates a batch; a receiver thread reading a body
        # (one TLS record at a time) waits up to the switch interval for each record: 5 ms by
        # default made a 2xx take 50-80 ms while a batch was evaluated. 1 ms keeps p99 low.
        sys.setswitchinterval(SWITCH_INTERVAL)
        self._input_observer = InputObserver(self.metrics, self._on_source_event)
        receiver = WebhookReceiver(settings, spool, admit=self._admit, observer=self._input_observer)
        log.info("webhook_listening", listen=cfg.listen, port=receiver.port, tls=receiver.tls is not None,
                 mtls=bool(cfg.client_ca_file), token=bool(cfg.token_file))
        return receiver

    def _input_fields(self, receiver: WebhookReceiver | None) -> dict[str, object]:
        return {} if receiver is None else {"input": "webhook", "port": receiver.port}

    def _admit(self) -> str | None:
        """Why the webhook refuses requests now (429 and /readyz false), or None: alerts could
        not be stored, the outbox is (nearly) full, or evaluation is far behind the spool."""
        if not self.metrics.state_writable:
            return "state_unwritable"
        if self._outbox_pending >= self.delivery_settings.outbox.max_rows * OUTBOX_FULL_FRACTION:
            return "outbox_full"
        if self._spool_lag > SPOOL_MAX_LAG_BYTES:
            return "spool_behind"
        return None

    def _stop_receiver(self, receiver: WebhookReceiver, follower: Follower, delivery: Delivery) -> None:
        """SIGTERM with the webhook input: stop accepting, answer the requests in flight, then
        evaluate what the spool holds (for a while: the rest is read after the next start)."""
        if not receiver.close(RECEIVER_STOP_SECONDS):
            log.warning("webhook_stop_timeout", seconds=RECEIVER_STOP_SECONDS)
        self._drain_spool(follower, delivery)

    def _drain_spool(self, follower: Follower, delivery: Delivery) -> None:
        """Evaluate what the spool holds, for SPOOL_DRAIN_SECONDS at most (the rest after the next start)."""
        deadline = time.monotonic() + SPOOL_DRAIN_SECONDS
        while time.monotonic() < deadline:
            lines = follower.read(BATCH_LINES)
            if lines:
                self._handle(lines, follower.position or lines[-1].position, delivery)
            if len(lines) < BATCH_LINES:
                break

    def _max_line_bytes(self) -> int:
        """A spool line holds a request body or a record, plus its envelope."""
        kafka = self.config.input.kafka
        body = kafka.max_record_bytes if kafka is not None else self.config.input.max_body_bytes
        return max(self.config.max_line_bytes, body + SPOOL_LINE_OVERHEAD)

    def _stop_inputs(self, receiver: WebhookReceiver | None, kafka: KafkaSource | None, follower: Follower,
                     delivery: Delivery) -> None:
        if receiver is not None:
            self._stop_receiver(receiver, follower, delivery)
        if kafka is not None:
            kafka.stop_consuming()
            self._drain_spool(follower, delivery)

    # -- the kafka input --------------------------------------------------------------------------
    def _kafka(self, spool: Spool) -> KafkaSource:
        """A consumer-group member spooling records; it commits offsets as `_commit` tells it
        the checkpoint moved (detector/source/kafka.py), and pauses while `_admit` says so."""
        settings = self.config.input.kafka
        assert settings is not None
        self._kafka_metrics = KafkaMetrics(self.metrics, self._on_source_event)
        kafka = KafkaSource(settings, spool, admit=self._admit, observer=self._kafka_metrics)
        kafka.start()
        self.kafka = kafka
        log.info("kafka_consuming", brokers=",".join(settings.brokers), topics=",".join(settings.topics),
                 group_id=settings.group_id, security=settings.security.protocol)
        return kafka

    def _deliver_before_exit(self, delivery: Delivery, kafka: KafkaSource | None) -> None:
        """Kafka input at SIGTERM: its offsets are committed, so the group reads on from them and
        this replica's outbox is the only copy of its alerts; a scaled-down replica's state_dir
        may never come back. Deliver what is pending, for KAFKA_DELIVER_SECONDS at most."""
        if kafka is not None:
            self._wait_delivered(delivery, KAFKA_DELIVER_SECONDS, stoppable=False)

    def _close_kafka(self, kafka: KafkaSource | None) -> None:
        if kafka is not None and not kafka.close(KAFKA_CLOSE_SECONDS):
            log.warning("kafka_stop_timeout", seconds=KAFKA_CLOSE_SECONDS)

    def _follow_stream(self, delivery: Delivery) -> None:
        """`--file -`: standard input until it ends. A pipe cannot be resumed, so nothing is
        checkpointed; at its end, detector waits (a while) for the outbox to be delivered."""
        try:
            fd = sys.stdin.fileno()
        except (AttributeError, ValueError, OSError):  # no stdin at all (None), or closed
            raise ConfigError("file: '-' reads standard input, and this process has none") from None
        stream = StreamFollower(fd, on_bad=self._on_bad, max_line_bytes=self.config.max_line_bytes,
                                diagnose=diagnose_line)
        log.info("started", file="-", state_dir=self.config.state_dir, rules=len(self.ruleset.active),
                 resume=False, watch="stream")
        self.metrics.input_open = True
        next_housekeeping = 0.0
        try:
            while not self.flags.stop and not stream.ended:
                lines = stream.read(BATCH_LINES)
                if lines:
                    self._handle(lines, None, delivery)
                now = time.monotonic()
                if now >= next_housekeeping:
                    self._housekeeping(delivery, None, now)
                    next_housekeeping = now + 1.0
                if len(lines) < BATCH_LINES and not self.flags.stop:
                    stream.wait(self._idle_seconds(delivery, now))
                else:
                    self._sync_if_due(delivery, now)
                self.metrics.beat()
        finally:
            self.metrics.input_open = False
            if delivery.stage.unstored is None:
                self._commit(delivery, [], force=True)
                self._sync(delivery)  # a pipe cannot be read again: its alerts on disk now
        if stream.ended:
            log.info("input_ended", file="-")
            self._drain(delivery)

    def _drain(self, delivery: Delivery) -> None:
        """Wait until every alert is out of the outbox (delivered or dead-lettered), at most
        DRAIN_SECONDS or until a stop signal: then what is left goes out after the next start."""
        self._wait_delivered(delivery, DRAIN_SECONDS, stoppable=True)

    def _wait_delivered(self, delivery: Delivery, seconds: float, *, stoppable: bool) -> None:
        """Until nothing is pending in the outbox, for `seconds` at most (and, if `stoppable`,
        until a stop signal), closing throttle windows and syncing as the run loop would."""
        deadline = time.monotonic() + seconds
        while not (stoppable and self.flags.stop):
            delivery.stage.tick()
            self._sync_if_due(delivery, time.monotonic())
            pending = delivery.outbox.held_counts()[0]
            if pending == 0:
                return
            if time.monotonic() >= deadline:
                log.warning("outbox_not_drained", pending=pending, seconds=seconds)
                return
            time.sleep(DRAIN_POLL_SECONDS)

    def _handle(self, lines: Sequence[SourceLine], after: Position | None, delivery: Delivery) -> None:
        started = time.perf_counter()
        alerts: list[Alert] = []
        evaluate, report = self.ruleset.evaluate, self._report_at_line
        event: AuditEvent | None = None
        count = 0
        for line in lines:
            self._line = line  # where reports go, also those from inside parse_line (EventList lines)
            try:
                parsed = parse_line(line.data, report)
            except BadInput as error:
                report(error)
                continue
            events: Sequence[AuditEvent] = parsed if isinstance(parsed, list) else (parsed,)
            for event in events:
                count += 1
                try:
                    matches = evaluate(event)
                except Exception:  # one event must never stop the daemon: its failing rules are reported
                    matches = self.ruleset.evaluate_each(
                        event, lambda rule, exc: report(evaluation_error(rule, exc)))
                if matches:
                    for match in matches:
                        self.metrics.count_match(match)
                    alerts += delivery.alerts_for(matches, report)
        self._line = None
        self.metrics.events.inc(count)
        if self._input_observer is not None:
            self._input_observer.records.labels("webhook").inc(count)
        self.metrics.lines.inc(len(lines))
        self.metrics.evaluation.observe(time.perf_counter() - started)
        self._pending = after
        self._commit(delivery, alerts)
        if event is not None and event.time is not None:
            self.metrics.lag_seconds.set(max(0.0, time.time() - event.time.timestamp()))

    def _report_at_line(self, error: BadInput) -> None:
        """Report bad input at the line being handled."""
        if self._line is not None:
            error.location = _location(self._line)
        self._on_bad(error)

    def _commit(self, delivery: Delivery, alerts: list[Alert], force: bool = False) -> None:
        """Hand alerts over with the position after them; without alerts, checkpoint at most
        every `checkpoint_interval` (re-reading a few alert-free lines after a crash is harmless).
        Returns only once they are stored (see _store)."""
        now = time.monotonic()
        due = force or alerts or now - self._last_commit >= self.config.checkpoint_interval
        if self._pending is None or not due:
            if alerts:
                # Stateful rules' state goes with the checkpoint only: it must correspond to
                # the events up to it. Alerts of a wall-clock tick with nothing pending may take it.
                idle = self._pending is None and self._committed is not None
                self._store(delivery, alerts, self.ruleset.stateful.changes() if idle else None)
            return
        position = self._pending
        self._store(delivery, alerts, {CHECKPOINT_KEY: position.to_bytes(), **self.ruleset.stateful.changes()})
        self._committed, self._pending = position, None
        self._last_commit = now
        if delivery.outbox.synced:
            self._made_durable()

    def _made_durable(self) -> None:
        """The committed checkpoint is on disk: what comes before it may be let go of."""
        self._durable = self._committed
        if self.kafka is not None and self._durable is not None:
            self.kafka.durable(self._durable)  # offsets of the records before it may be committed now

    def _idle_seconds(self, delivery: Delivery, now: float) -> float:
        """How long the loop may wait for input: until the next sync is due, at most WAIT_SECONDS."""
        sync_in = self._sync_if_due(delivery, now)
        return WAIT_SECONDS if sync_in is None else min(WAIT_SECONDS, sync_in)

    def _sync_if_due(self, delivery: Delivery, now: float) -> float | None:
        """Fsync the commits made since the last one once they are `sync_interval_seconds` old
        (outbox.synchronous: batched); returns the seconds until the next is due, if any."""
        if delivery.outbox.synced and self._durable is not self._committed:
            self._made_durable()  # fsynced by a commit without a checkpoint (alerts of a tick, throttle summaries)
        due = delivery.outbox.sync_due(now)
        if due is None:
            return None
        if due > 0 or now < self._sync_retry_at:
            return max(due, self._sync_retry_at - now, 0.001)
        return None if self._sync(delivery) else SYNC_RETRY_SECONDS

    def _sync(self, delivery: Delivery) -> bool:
        """Make every commit durable; False (logged, retried later) when the disk refuses."""
        try:
            delivery.outbox.sync()
        except _STORE_ERRORS as exc:
            _fail_if_damaged(exc, self.config.state_dir)
            self._sync_retry_at = time.monotonic() + SYNC_RETRY_SECONDS
            self.metrics.state_write_failures.inc()
            if self._sync_error != _describe(exc):  # logged once per state change, not per attempt
                self._sync_error = _describe(exc)
                log.error("state_sync_failed", error=self._sync_error, state_dir=self.config.state_dir)
            return False
        if self._sync_error is not None:
            self._sync_error = None
            log.info("state_sync_recovered", state_dir=self.config.state_dir)
        self._made_durable()
        return True

    def _store(self, delivery: Delivery, alerts: list[Alert], state: dict[str, bytes | None] | None) -> None:
        """Store alerts and state in one transaction. When that fails (state_dir full or
        read-only, database broken) the checkpoint must not move past these alerts, so the loop
        waits here, retrying the same batch with backoff, until it is stored, or until a stop
        signal, which ends the run with a StateError and the checkpoint still before the batch."""
        try:
            delivery.submit(alerts, state)
        except _STORE_ERRORS as exc:
            _fail_if_damaged(exc, self.config.state_dir)
            self._wait_for_store(delivery, exc)

    def _wait_for_store(self, delivery: Delivery, error: BaseException) -> None:
        started = time.monotonic()
        self.metrics.state_writable = False
        self.metrics.state_write_failures.inc()
        log.error("state_write_failed", error=_describe(error), state_dir=self.config.state_dir,
                  alerts=len(delivery.stage.unstored.alerts) if delivery.stage.unstored else 0)
        delay = STORE_RETRY_FIRST
        while True:
            deadline = time.monotonic() + delay
            while time.monotonic() < deadline:
                if self.flags.stop:
                    raise StateError(f"state_dir {self.config.state_dir}: alerts could not be stored "
                                     f"({_describe(error)}); stopped with the checkpoint before them, "
                                     f"so they are evaluated again at the next start")
                self.metrics.beat()  # alive, and waiting on purpose: /readyz says why
                time.sleep(STORE_RETRY_STEP)
            try:
                delivery.retry_unstored()
            except _STORE_ERRORS as exc:
                _fail_if_damaged(exc, self.config.state_dir)
                self.metrics.state_write_failures.inc()
                if _describe(exc) != _describe(error):  # logged once per state change, not per attempt
                    log.error("state_write_failed", error=_describe(exc), state_dir=self.config.state_dir)
                error = exc
                delay = min(delay * 2, STORE_RETRY_MAX)
                continue
            break
        self.metrics.state_writable = True
        log.info("state_write_recovered", state_dir=self.config.state_dir,
                 seconds=round(time.monotonic() - started, 3))

    def _housekeeping(self, delivery: Delivery, follower: Follower | None, now: float) -> None:
        if delivery.outbox.replaced():
            # SQLite would go on writing to the unlinked file, and the next start would find no
            # checkpoint and read the log again as if for the first time: stop, loudly.
            raise StateError(f"state_dir {self.config.state_dir}: the database {delivery.outbox.path} was deleted "
                             f"or replaced while detector ran; stopped (the next start begins afresh, per start_at, "
                             f"and reports state_database_missing)")
        # Also checkpoint where the follower stands when no line moved it (a new file after a
        # rotation, a first file opened): a resume then starts from the right file.
        if follower is not None and self._pending is None and follower.position not in (None, self._committed):
            self._pending = follower.position
        self._commit(delivery, self._stateful_tick(delivery))
        delivery.stage.tick()
        if self.spool is not None:
            self._spool_lag = follower.lag_bytes if follower is not None else 0
            self.spool.prune(self._durable)  # a segment goes once the checkpoint past it is on disk
        if self.kafka is not None and self.kafka.error is not None:
            raise DetectorError(f"the kafka consumer failed: {_describe(self.kafka.error)}")
        self.metrics.lag_bytes.set(follower.lag_bytes if follower is not None else 0)
        self.metrics.checkpoint_age.set(now - self._last_commit)
        pending, dead, oldest = _outbox_depth(delivery)
        self.metrics.outbox_depth.set(pending)
        self._outbox_pending = pending
        self.metrics.outbox_dead.set(dead)
        self.metrics.outbox_oldest.set(oldest)
        self._finish_reload()
        if self.flags.reload or self._rules_changed():
            self._reload("signal" if self.flags.reload else "file_changed")

    # -- rules ------------------------------------------------------------------------------
    def _mtimes(self) -> dict[str, float]:
        mtimes: dict[str, float] = {}
        for path in rule_files(self.rule_paths):
            try:
                mtimes[str(path)] = path.stat().st_mtime
            except OSError:
                mtimes[str(path)] = -1.0
        return mtimes

    def _rules_changed(self) -> bool:
        return self._mtimes() != self._rule_mtimes

    def _reload(self, why: str) -> None:
        """Load the rules again on a thread of its own: a big or hostile rules file must not
        stall evaluation (the loader is bounded, but a file at its caps still takes seconds).
        The old rules run until the new ones are ready; `_finish_reload` swaps them in."""
        self.flags.reload = False
        self._rule_mtimes = self._mtimes()
        if self._loading is not None:
            self._reload_pending = why  # a load is under way: load once more after it
            return
        self._loading = _RulesLoad(self.load_rules, why)

    def _finish_reload(self) -> None:
        load = self._loading
        if load is None or not load.done.is_set():
            return
        self._loading = None
        if load.ruleset is None:
            error = load.error
            for diagnostic in getattr(error, "diagnostics", []):
                log.error("rules_reload_error", error=str(diagnostic))
            log.error("rules_reload_failed", reason=load.why,
                      error=str(error) if isinstance(error, RuleLoadError) else _describe(error or RuntimeError()),
                      kept_rules=len(self.ruleset.active))
            self.metrics.reloads.labels("failed").inc()
        else:
            kept, dropped = load.ruleset.stateful.adopt(self.ruleset.stateful)  # unchanged rules keep their windows
            if kept or dropped:
                log.info("stateful_state_reloaded", kept_rules=kept, dropped_rules=dropped)
            self.ruleset = load.ruleset
            freeze_heap()
            self.metrics.rules_loaded.set(len(load.ruleset.active))
            self.metrics.reloads.labels("ok").inc()
            log.info("rules_reloaded", reason=load.why, rules=len(load.ruleset.active))
        if self._reload_pending is not None:
            why, self._reload_pending = self._reload_pending, None
            self._reload(why)

    # -- stateful rules -------------------------------------------------------------------------
    def _load_stateful(self, delivery: Delivery, resumed: bool) -> None:
        """The windows of stateful rules as of the checkpoint (committed with it); without a
        checkpoint to resume from, stored state does not count and is deleted at the first commit."""
        items = delivery.outbox.state_items(STATEFUL_PREFIX)
        stateful = self.ruleset.stateful
        if not resumed:
            stateful.forget_stored(items)
            return
        found = stateful.load(items)
        if items:
            log.info("stateful_state_loaded", rules=found, stored_keys=len(items))

    def _stateful_tick(self, delivery: Delivery) -> list[Alert]:
        """Absence windows closed on the wall clock (a log that stopped entirely), and metrics."""
        stateful = self.ruleset.stateful
        if not stateful:
            return []
        matches = stateful.tick()
        self.metrics.stateful(stateful.counters())
        return delivery.alerts_for(matches, self._on_bad) if matches else []

    # -- callbacks ----------------------------------------------------------------------------
    def _resume_position(self, delivery: Delivery, path: str) -> Position | None:
        raw = delivery.outbox.get_state(CHECKPOINT_KEY)
        if raw is None:
            return None
        try:
            position = Position.from_bytes(raw)
        except DetectorError as exc:
            log.error("checkpoint_unreadable", error=str(exc), start_at=self.config.start_at)
            return None
        if os.path.dirname(os.path.abspath(position.path)) != os.path.dirname(os.path.abspath(path)):
            log.warning("checkpoint_ignored", reason="the checkpoint is for another directory",
                        checkpoint=position.path, file=path)
            return None
        return position

    def _on_bad(self, error: BadInput) -> None:
        self.metrics.bad_lines.labels(error.reason).inc()
        if self._kafka_metrics is not None:
            self._kafka_metrics.bad_line(error)
        where = error.location
        log.warning("bad_input", reason=error.reason, message=error.message,
                    file=where.path if where else None, line=where.line if where else None)

    def _on_source_event(self, name: str, fields: dict[str, object]) -> None:
        if name == "rotation_followed":
            self.metrics.rotations.inc()
        elif name == "watch_overflow":
            self.metrics.watch_overflows.inc()
        elif name == "gap_possible":
            self.metrics.gaps_possible.labels(str(fields.get("reason", "held_file_pruned"))).inc()
        if name == "data_lost":
            self.metrics.data_losses.inc()
            lost = fields.get("bytes_lost")
            if isinstance(lost, int):
                self.metrics.bytes_lost.inc(lost)
            log.error("DATA_LOST", **_loggable(fields))
            return
        level = "warning" if name in _WARNINGS else "info"
        getattr(log, level)(name, **_loggable(fields))

    def _on_delivery_event(self, event: DeliveryEvent) -> None:
        # Once per delivered alert: the labelled child is looked up once per (output, result).
        key = (event.output or "-", _DELIVERY_RESULTS[event.kind])
        counter = self._alert_counters.get(key)
        if counter is None:
            counter = self._alert_counters[key] = self.metrics.alerts.labels(*key)
        counter.inc(max(event.count, 1))
        if event.kind is EventKind.RETRY:
            self.metrics.alerts.labels(event.output or "-", "failed").inc()
        log_event(event)


class InputObserver:
    """The webhook receiver's requests as metrics per endpoint (requests by code, bytes,
    rejects by reason, latency) and its rejects as log lines, one per reason per 10 s at most."""

    LOG_EVERY = 10.0

    def __init__(self, metrics: Metrics, on_event: Callable[[str, dict[str, object]], None]) -> None:
        from prometheus_client import Counter, Histogram  # noqa: PLC0415 - only with a webhook input

        r = metrics.registry
        self.requests = Counter("detector_input_requests", "Requests to the webhook input, by endpoint and "
                                "HTTP status", ["input", "endpoint", "code"], registry=r)
        self.bytes = Counter("detector_input_bytes", "Request body bytes accepted into the spool, by endpoint",
                             ["input", "endpoint"], registry=r)
        self.rejects = Counter("detector_input_rejects", "Requests and connections refused, by endpoint and "
                               "reason", ["input", "endpoint", "reason"], registry=r)
        self.records = Counter("detector_input_records", "Audit events the input's spool yielded to evaluation "
                               "(decoded from requests: EventList items, envelope records)", ["input"], registry=r)
        self.latency = Histogram("detector_input_request_seconds", "From the request head read to the answer, "
                                 "by endpoint", ["input", "endpoint"], registry=r,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1, 5))
        self._on_event = on_event
        self._logged: dict[str, float] = {}

    def request(self, endpoint: str, status: int, reason: str | None, size: int, seconds: float) -> None:
        if status:
            self.requests.labels("webhook", endpoint, str(status)).inc()
            self.latency.labels("webhook", endpoint).observe(seconds)
        if reason is None:
            self.bytes.labels("webhook", endpoint).inc(size)
            return
        self.rejects.labels("webhook", endpoint, reason).inc()
        now = time.monotonic()
        if now - self._logged.get(reason, -self.LOG_EVERY) >= self.LOG_EVERY:  # never a header or a token
            self._logged[reason] = now
            self._on_event("webhook_rejected", {"endpoint": endpoint, "status": status, "reason": reason})

    def event(self, name: str, fields: dict[str, object]) -> None:
        self._on_event(name, fields)


_DELIVERY_RESULTS = {EventKind.DELIVERED: "sent", EventKind.RETRY: "retried", EventKind.DEAD: "dead_lettered",
                      EventKind.DROPPED: "dropped", EventKind.SUPPRESSED: "suppressed",
                      EventKind.WORKER_ERROR: "failed"}
_WARNINGS = ("torn_line", "file_truncated", "read_error", "open_failed", "gap_possible", "watch_overflow",
             "webhook_rejected", "token_file_unreadable", "token_file_empty", "tls_reload_failed", "spool_full",
             "spool_write_failed", "bad_record", "kafka_unreachable", "kafka_error", "kafka_commit_failed",
             "kafka_failed", "kafka_paused", "kafka_close_failed", "kafka_partitions_lost")


# What a full, read-only or broken state_dir raises from SQLite or the file system.
_STORE_ERRORS = (sqlite3.Error, OSError)


class _RulesLoad:
    """One reload of the rules, on a daemon thread: `ruleset` on success, else `error`
    (any exception: an unexpected loader error keeps the old rules too)."""

    def __init__(self, load: Callable[[], Ruleset], why: str) -> None:
        self.why = why
        self.ruleset: Ruleset | None = None
        self.error: BaseException | None = None
        self.done = threading.Event()
        self._load = load
        threading.Thread(target=self._run, name="detector-rules-reload", daemon=True).start()

    def _run(self) -> None:
        try:
            self.ruleset = self._load()
        except BaseException as exc:  # reported by the loop; never the end of the run
            self.error = exc
        finally:
            self.done.set()


def _describe(error: BaseException) -> str:
    return f"{type(error).__name__}: {error}"


def _fail_if_damaged(error: BaseException, state_dir: str) -> None:
    """A damaged database does not heal by waiting: stop at once."""
    if is_damaged(error):
        raise StateError(f"state_dir {state_dir}: the state database is damaged ({error}); stopped with the "
                         f"checkpoint before the alerts it could not store") from None


def _report_state_files(state_dir: Path, used_before: bool, start_at: str) -> None:
    """A state directory that held a database before and now holds none, or an empty one, is
    not a first start: the checkpoint and undelivered alerts are gone, and the log is read
    again from start_at. Say so, loudly."""
    database = state_dir / DB_NAME
    try:
        size: int | None = database.stat().st_size
    except FileNotFoundError:
        size = None
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot use {database}: {exc.strerror or exc}") from None
    if size is None and used_before:
        log.error("state_database_missing", path=str(database), start_at=start_at,
                  message="detector ran with this state directory before, but its database is gone: its "
                          "checkpoint and undelivered alerts are lost; starting as on a first start")
    elif size == 0:
        log.warning("state_database_empty", path=str(database), start_at=start_at,
                    message="the state database is an empty file (no checkpoint, no alerts); "
                            "starting as on a first start")


def spool_batch(lines: Sequence[SourceLine], most: int, current: int) -> int:
    """How many spool lines to read next: about SPOOL_BATCH_BYTES of lines like `lines` (the
    last batch), at least one, at most `most`; `current` when there were none."""
    if not lines:
        return current
    mean = sum(len(line.data) for line in lines) / len(lines)
    return max(1, min(most, int(SPOOL_BATCH_BYTES / max(mean, 1.0))))


def alert_hostname() -> str:
    """The `hostname` of alerts: in a DaemonSet the node's name (its pod's own host name is the
    pod name), else the machine's host name."""
    return os.environ.get("DETECTOR_HOSTNAME") or os.environ.get("NODE_NAME") or socket.gethostname()


class SourceLine(Protocol):
    """What the loop needs of a line: the file follower's `Line` or the stream's `StreamLine`."""

    @property
    def data(self) -> bytes: ...

    @property
    def path(self) -> str: ...

    @property
    def lineno(self) -> int | None: ...


def _location(line: SourceLine) -> Location:
    return Location(line.path, line.lineno)


def _loggable(fields: dict[str, object]) -> dict[str, Any]:
    return {k: (v if isinstance(v, str | int | float | bool) or v is None else str(v)) for k, v in fields.items()}


def _outbox_depth(delivery: Delivery) -> tuple[int, int, float]:
    pending, dead = delivery.outbox.held_counts()
    return pending, dead, delivery.outbox.oldest_pending_age()


def _lock_state_dir(state_dir: Path) -> int:
    """Create the state directory (0700) and hold an exclusive lock: two processes delivering
    from one outbox would send every alert twice."""
    try:
        state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(state_dir / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o600)
    except OSError as exc:
        raise ConfigError(f"state_dir: cannot use {state_dir}: {exc.strerror or exc}") from None
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        os.close(fd)
        raise ConfigError(f"state_dir: {state_dir} is in use by another detector process") from None
    return fd

