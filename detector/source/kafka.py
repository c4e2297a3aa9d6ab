"""The kafka input: a consumer-group member that makes each record durable in the spool, and
commits a record's offset to Kafka only once the alerts of everything before it are stored.

One thread owns the confluent-kafka consumer (librdkafka; auto commit and the automatic offset
store are off). It polls records and appends them, in poll order, to the spool of state_dir as
spool lines (all lines of one poll share one fsync):

    {"detectorSpool":"v1","cluster":<header or key|null>,"endpoint":"audit",
     "requestId":"<topic>/<partition>/<offset>","received":"<RFC 3339 UTC>","body":<the record>}

(consecutive single-Event records share a line, see `SpoolLines`; other records go through
parse's envelope detection, see `any_record_line`). The live loop follows that spool like any
audit.log and checkpoints it with the alerts (one SQLite transaction). What a record holds (an
Event, an EventList, an array, a cloud envelope) is parse's business: the source only checks
that it is one JSON value. The commit rule lives in one place:
`CommitQueue` keeps (where a poll's lines end in the spool, {partition: next offset}) in spool
order, and `durable(checkpoint)` releases the offsets whose lines the checkpoint has passed. They
are committed asynchronously, and synchronously on a rebalance and at close. On a revoke, the
offsets still in flight are dropped: the new owner reads those records again (their alerts keep
their ids, so an outbox that saw them drops the repeats).

A record that is not JSON (or empty, or too big) is a bad record: reported with its
topic/partition/offset and skipped; its offset advances with the others.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from typing import Any, Protocol

import msgspec
import orjson

from detector.source.kafkaconf import KafkaSettings, client_config, redacted
from detector.source.position import Position
from detector.source.spool import Spool, SpoolFull, SpoolMark
from detector.source.webhook import CLUSTER

TopicPartition = tuple[str, int]
Counts = dict[TopicPartition, list[int]]  # records spooled and their bytes, per partition
Admit = Callable[[], "str | None"]  # None, or why consumption pauses now (backpressure)

POLL_RECORDS = 500
# Records a poll takes are sized by their bytes, as the last poll's ran: one record can be an
# EventList (or an envelope) of thousands of events, and 500 of those held (with their spool
# lines and parsed events) ~200 MB. ~256 KiB is the 500 records of one Event each.
POLL_BYTES = 256 << 10
POLL_FIRST = 16
POLL_SECONDS = 0.1
COMMIT_RETRY_SECONDS = 1.0
LAG_SECONDS = 2.0  # how often lag is measured
PROBE_SECONDS = 2.0  # how often an unreachable cluster is asked for metadata
SPOOL_RETRY_SECONDS = 0.5  # the spool could not be written: consumption waits, nothing is skipped
REVOKE_WAIT_SECONDS = 3.0  # on a revoke, how long the records already spooled may take to be checkpointed
# librdkafka errors that mean no broker can be reached (readiness false until one answers).
UNREACHABLE = ("_ALL_BROKERS_DOWN", "_TRANSPORT", "_RESOLVE", "_AUTHENTICATION", "_SSL")


class Observer(Protocol):
    """Told what the consumer does (the LiveRunner turns this into metrics and log lines)."""

    def records(self, topic: str, partition: int, count: int, size: int) -> None: ...

    def bad_record(self, topic: str, partition: int, offset: int, reason: str, message: str) -> None: ...

    def committed(self, topic: str, partition: int, ok: bool) -> None: ...

    def rebalance(self, kind: str, partitions: list[TopicPartition]) -> None: ...

    def lag(self, topic: str, partition: int, records: int, seconds: float | None) -> None: ...

    def event(self, name: str, fields: dict[str, object]) -> None: ...


class BadRecord(Exception):
    """A record that cannot go to the spool: a reason label and a message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


# -- the commit rule ---------------------------------------------------------------------------------
class CommitQueue:
    """(spool mark after a batch of lines, {partition: next offset}) in spool order. Not
    thread-safe: the consumer thread owns it."""

    def __init__(self) -> None:
        self._files: list[tuple[int, int]] = []  # spool files (dev, inode) in the order written
        self._first = 0  # the index of _files[0] since the start
        self._entries: deque[tuple[int, int, dict[TopicPartition, int]]] = deque()

    def add(self, mark: SpoolMark, offsets: dict[TopicPartition, int]) -> None:
        ident = (mark.dev, mark.inode)
        if not self._files or self._files[-1] != ident:
            self._files.append(ident)
        self._entries.append((self._first + len(self._files) - 1, mark.offset, offsets))

    def passed(self, checkpoint: Position) -> dict[TopicPartition, int]:
        """Remove and merge the entries whose lines lie before `checkpoint` (in an earlier spool
        file, or in its file up to its offset): their offsets may be committed."""
        at = self._file_index(checkpoint)
        out: dict[TopicPartition, int] = {}
        if at is None:
            return out
        while self._entries:
            file, offset, offsets = self._entries[0]
            if file > at or (file == at and offset > checkpoint.offset):
                break
            self._entries.popleft()
            out.update(offsets)  # later entries hold later offsets of a partition
        self._trim()
        return out

    def drop(self, partitions: Iterable[TopicPartition]) -> None:
        """Forget the in-flight offsets of `partitions` (revoked: their records go to another owner)."""
        gone = set(partitions)
        for _file, _offset, offsets in self._entries:
            for tp in gone & offsets.keys():
                del offsets[tp]

    def holds(self, partitions: Iterable[TopicPartition]) -> bool:
        """Whether offsets of any of `partitions` still wait for the checkpoint."""
        wanted = set(partitions)
        return any(wanted & offsets.keys() for _file, _offset, offsets in self._entries)

    def __len__(self) -> int:
        return len(self._entries)

    def _file_index(self, checkpoint: Position) -> int | None:
        ident = (checkpoint.identity.dev, checkpoint.identity.inode)
        for i in range(len(self._files) - 1, -1, -1):  # the newest first: inodes are reused
            if self._files[i] == ident:
                return self._first + i
        return None  # a file from before this process: older than every entry

    def _trim(self) -> None:
        keep = self._entries[0][0] if self._entries else self._first + len(self._files) - 1
        drop = max(0, keep - self._first)
        if drop:
            del self._files[:drop]
            self._first += drop


# -- records to spool lines ----------------------------------------------------------------------------
_RAW = msgspec.json.Decoder(msgspec.Raw)  # validates JSON without building objects
_KEY_CLUSTERS = 1024  # record keys remembered with the cluster they name (keyed by cluster: a few)


def record_body(value: bytes | None, limit: int) -> bytes:
    """A record's value checked to be one JSON value, without the whitespace around it; else
    BadRecord. (A newline inside is whitespace: `spool_line` makes the line one line.)"""
    if not value:
        raise BadRecord("empty", "the record has no value (a tombstone or an empty record)")
    if len(value) > limit:
        raise BadRecord("too_large", f"the record is {len(value)} bytes, more than max_record_bytes ({limit})")
    try:
        _RAW.decode(value)
    except msgspec.DecodeError as exc:
        if not value.strip():
            raise BadRecord("empty", "the record has no value (a tombstone or an empty record)") from None
        raise BadRecord("invalid_json", f"the record is not JSON: {exc}") from None
    except RecursionError:
        pass  # valid so far, nested past the limit: the parser reads (or reports) it
    return value.strip(b" \t\r\n")  # the value itself when there is none (the usual case)


def record_cluster(key: bytes | None, headers: list[tuple[str, bytes]] | None, header: str | None,
                   from_key: bool) -> str | None:
    """The cluster a record names: its `header` header, else its key (when a valid name)."""
    if header and headers:
        for name, raw in headers:
            if name == header and raw:
                text = raw.decode("utf-8", "replace")
                if CLUSTER.match(text):
                    return text
    if from_key and key:
        return key_cluster(key)
    return None


def key_cluster(key: bytes) -> str | None:
    text = key.decode("utf-8", "replace")
    return text if CLUSTER.match(text) else None


def spool_line(body: bytes, cluster: str | None, request_id: str, received: bytes,
               endpoint: bytes = b"audit") -> bytes:
    """One spool line holding `body` (JSON: a newline in it is whitespace, made a space)."""
    if b"\n" in body or b"\r" in body:
        body = body.replace(b"\n", b" ").replace(b"\r", b" ")
    return b"".join((b'{"detectorSpool":"v1","cluster":', orjson.dumps(cluster), b',"endpoint":"', endpoint,
                     b'","requestId":"', request_id.encode(), b'","received":"', received, b'","body":', body,
                     b"}\n"))


def any_record_line(body: bytes, cluster: str | None, request_id: str, received: bytes) -> bytes:
    """The spool line of a record that is not one Event as kube-apiserver writes it: an EventList,
    an array, or a cloud envelope (AKS diagnostic records from Event Hubs, CloudWatch Logs data,
    a LogEntry, ...), which parse detects per record (its `record` endpoint, which names it
    `request <topic>/<partition>/<offset>`; the body is the record as it is, so alert ids are too)."""
    return spool_line(body, cluster, request_id, received, b"record")


EVENT_HEAD = b'{"kind":"Event"'  # how kube-apiserver writes every audit.log line (and Fluent Bit passes it)
RUN_ITEMS, RUN_BYTES = 20, 64 << 10  # the loop reads 100 lines a batch (live.KAFKA_BATCH_LINES): memory stays flat


class SpoolLines:
    """The spool lines of one poll. A run of records of one partition and cluster, at consecutive
    offsets, each one Event as kube-apiserver writes it, becomes ONE line whose body is an
    EventList of those records as they are (parse decodes EventList items on its fast path, the
    event bytes stay the record's, so alert ids are the same as with a line per record); its
    requestId is `<topic>/<partition>/<first>-<last>`, item i being offset first+i-1. Any other
    record (an EventList, an array, an envelope, another key order) is a line of its own
    (`any_record_line`)."""

    def __init__(self, received: bytes, max_bytes: int) -> None:
        self.received = received
        self._lines: list[bytes] = []
        self._run: list[bytes] = []
        self._topic, self._partition = "", -1  # the run's
        self._cluster: str | None = None
        self._first = self._next = self._size = 0
        self._max = min(RUN_BYTES, max_bytes)

    def add(self, topic: str, partition: int, offset: int, cluster: str | None, body: bytes) -> None:
        if not body.startswith(EVENT_HEAD):
            self._flush()
            self._lines.append(any_record_line(body, cluster, f"{topic}/{partition}/{offset}", self.received))
            return
        run = self._run
        if run and (offset != self._next or partition != self._partition or cluster != self._cluster
                    or topic != self._topic or len(run) >= RUN_ITEMS or self._size + len(body) > self._max):
            self._flush()
            run = self._run
        if not run:
            self._topic, self._partition, self._cluster, self._first = topic, partition, cluster, offset
        run.append(body)
        self._next, self._size = offset + 1, self._size + len(body)

    def finish(self) -> bytes:
        self._flush()
        return b"".join(self._lines)

    def _flush(self) -> None:
        if not self._run:
            return
        topic, partition, cluster = self._topic, self._partition, self._cluster
        if len(self._run) == 1:
            request, body = f"{topic}/{partition}/{self._first}", self._run[0]
        else:
            request = f"{topic}/{partition}/{self._first}-{self._next - 1}"
            body = b'{"kind":"EventList","items":[' + b",".join(self._run) + b"]}"
        self._lines.append(spool_line(body, cluster, request, self.received))
        self._run, self._size = [], 0


# -- the consumer ------------------------------------------------------------------------------------------
class KafkaSource:
    """One member of the consumer group, on a thread of its own (see the module docstring)."""

    def __init__(self, settings: KafkaSettings, spool: Spool, *, admit: Admit, observer: Observer,
                 consumer_factory: Callable[[dict[str, str]], Any] | None = None) -> None:
        self.settings = settings
        self.spool = spool
        self.config = client_config(settings)  # ConfigError (exit 2) when a secret cannot be read
        self._admit = admit
        self._observer = observer
        self._factory = consumer_factory or _confluent_consumer
        self._queue = CommitQueue()
        self._checkpoint: Position | None = None  # set by the live loop: the committed spool position
        self._wanted: dict[TopicPartition, int] = {}  # durable, to commit
        self._acked: dict[TopicPartition, int] = {}  # committed, as the broker confirmed
        self._sent: dict[TopicPartition, tuple[int, float]] = {}  # asked for, not confirmed yet: (offset, when)
        self._mark: SpoolMark | None = None  # where the last append ended
        self._assigned: set[TopicPartition] = set()
        self._unreachable = False
        self._paused: str | None = None
        self._consuming = threading.Event()
        self._consuming.set()
        self._stop = threading.Event()
        self._last_timestamp: dict[TopicPartition, float] = {}
        self._next: dict[TopicPartition, int] = {}  # the next offset to read, per partition
        self._key_clusters: dict[bytes | None, str | None] = {}  # see key_cluster
        self._consumer: Any = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, name="detector-kafka", daemon=True)

    # -- the live loop's side ----------------------------------------------------------------------
    def start(self) -> None:
        self._consumer = self._factory(self._client_conf())
        self._thread.start()

    @property
    def ready(self) -> bool:
        """Partitions assigned and the cluster reachable (for /readyz)."""
        return bool(self._assigned) and not self._unreachable and self._thread.is_alive()

    @property
    def error(self) -> BaseException | None:
        """Why the consumer thread ended, if it failed."""
        return self._error

    def durable(self, checkpoint: Position) -> None:
        """The live loop committed `checkpoint` (alerts and spool position): offsets before it may go."""
        self._checkpoint = checkpoint

    def stop_consuming(self) -> None:
        """Spool nothing more (SIGTERM: the loop then drains the spool); commits go on until close."""
        self._consuming.clear()

    def close(self, timeout: float) -> bool:
        """Commit what is durable (synchronously), leave the group, stop the thread."""
        self._consuming.clear()
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    # -- the consumer thread ---------------------------------------------------------------------------
    def _client_conf(self) -> dict[str, Any]:
        conf: dict[str, Any] = dict(self.config)
        conf["error_cb"] = self._on_error
        conf["on_commit"] = self._on_commit
        self._observer.event("kafka_starting", {"config": str(redacted(self.config))})
        return conf

    def _run(self) -> None:
        consumer = self._consumer
        try:
            consumer.subscribe(list(self.settings.topics), on_assign=self._on_assign, on_revoke=self._on_revoke,
                               on_lost=self._on_lost)
            next_lag = next_probe = 0.0
            take = POLL_FIRST  # records, before any was seen
            while not self._stop.is_set():
                self._commit(asynchronous=True)
                if not self._consuming.is_set():
                    self._hold(consumer)
                    continue
                self._backpressure()
                records = consumer.consume(take, POLL_SECONDS)
                if records:
                    take = poll_size(records)
                    self._spool(records)
                now = time.monotonic()
                if now >= next_lag:
                    self._measure_lag()
                    next_lag = now + LAG_SECONDS
                if self._unreachable and now >= next_probe:
                    self._probe()
                    next_probe = now + PROBE_SECONDS
        except StopConsuming:  # closed while the spool could not be written: a stop, not a failure
            pass
        except BaseException as exc:  # reported by the live loop, which stops: nothing is committed past it
            self._error = exc
            self._observer.event("kafka_failed", {"error": f"{type(exc).__name__}: {exc}"})
        finally:
            self._finish(consumer)

    def _hold(self, consumer: Any) -> None:
        """Stopping: fetch nothing more but serve callbacks (commit results, rebalances). A record
        fetched before the pause is dropped: nothing after it is spooled, so its offset and the
        later ones are never committed, and it is read again after the next start."""
        if self._paused != "stopping":
            consumer.pause(consumer.assignment())
            self._paused = "stopping"
        consumer.poll(POLL_SECONDS)

    def _finish(self, consumer: Any) -> None:
        try:
            if self._error is None:
                self._commit(asynchronous=False)
        finally:
            try:
                consumer.close()  # leaves the group: the others take the partitions at once
            except Exception as exc:  # closing a consumer whose broker is gone
                self._observer.event("kafka_close_failed", {"error": f"{type(exc).__name__}: {exc}"})
            self._assigned = set()

    def _spool(self, records: list[Any]) -> None:
        lines, last, counts = self._lines(records)
        if not last:
            return
        self._unreachable = False
        offsets = {tp: record.offset() + 1 for tp, record in last.items()}
        for tp, record in last.items():
            kind, stamp = record.timestamp()
            if kind:
                self._last_timestamp[tp] = stamp / 1000.0
        data = lines.finish()
        mark = self._append(data) if data else None
        self._next.update(offsets)
        for (topic, partition), (spooled, size) in counts.items():
            self._observer.records(topic, partition, spooled, size)
        if mark is not None:
            self._queue.add(mark, offsets)
        else:  # only bad records: they are behind the checkpoint once it passes what came before
            self._queue.add(self._last_mark(), offsets)

    def _lines(self, records: list[Any]) -> tuple[SpoolLines, dict[TopicPartition, Any], Counts]:
        """One poll's records as spool lines, with the last record of each partition and the
        records spooled and their bytes per partition. Per record only what it needs: offsets,
        lag timestamps and counts are taken per partition, once a poll (a poll holds runs of
        records of one partition), and a key's cluster is looked up once."""
        settings = self.settings
        limit, header, from_key = settings.max_record_bytes, settings.cluster_header, settings.cluster_from_key
        lines = SpoolLines(datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ").encode(), limit)
        add, clusters = lines.add, self._key_clusters
        last: dict[TopicPartition, Any] = {}
        counts: Counts = {}
        tp: TopicPartition = ("", -1)
        count = [0, 0]
        for record in records:
            error = record.error()
            if error is not None:
                self._on_record_error(error)
                continue
            topic, partition, offset = record.topic(), record.partition(), record.offset()
            if partition != tp[1] or topic != tp[0]:
                tp = (topic, partition)
                if tp not in last and tp not in self._next:  # the first record since it was assigned
                    self._observer.event("kafka_reading", {"topic": topic, "partition": partition, "offset": offset})
                count = counts.setdefault(tp, [0, 0])
            last[tp] = record
            value = record.value()
            try:
                body = record_body(value, limit)
            except BadRecord as bad:
                self._observer.bad_record(topic, partition, offset, bad.reason, bad.message)
                continue
            headers = record.headers() if header else None
            if headers or not from_key:
                cluster = record_cluster(record.key(), headers, header, from_key)
            else:
                key = record.key()
                try:
                    cluster = clusters[key]
                except KeyError:
                    cluster = self._key_cluster(key)
            add(topic, partition, offset, cluster, body)
            count[0] += 1
            count[1] += len(value)
        return lines, last, counts

    def _key_cluster(self, key: bytes | None) -> str | None:
        if len(self._key_clusters) >= _KEY_CLUSTERS:
            self._key_clusters.clear()
        cluster = self._key_clusters[key] = key_cluster(key) if key else None
        return cluster

    def _append(self, data: bytes) -> SpoolMark:
        """Append until it is stored: a full or failing disk pauses consumption, it skips nothing."""
        while True:
            try:
                mark = self.spool.append(data)
            except SpoolFull as exc:
                self._observer.event("spool_full", {"error": str(exc)})
            except OSError as exc:
                self._observer.event("spool_write_failed", {"error": f"{type(exc).__name__}: {exc.strerror or exc}"})
            else:
                self._mark = mark
                return mark
            if self._stop.wait(SPOOL_RETRY_SECONDS):
                raise StopConsuming("stopped while the spool could not be written")

    def _last_mark(self) -> SpoolMark:
        return self._mark if self._mark is not None else self._append(b"")

    def _commit(self, asynchronous: bool) -> None:
        """Commit the durable offsets not committed yet: new ones at once, unconfirmed ones again
        after COMMIT_RETRY_SECONDS (or now, when synchronous)."""
        checkpoint = self._checkpoint
        if checkpoint is not None:
            self._wanted.update(self._queue.passed(checkpoint))
        now = time.monotonic()
        due = {}
        for tp, offset in self._wanted.items():
            if tp not in self._assigned or offset <= self._acked.get(tp, -1):
                continue
            sent, when = self._sent.get(tp, (-1, 0.0))
            if not asynchronous or offset > sent or now - when >= COMMIT_RETRY_SECONDS:
                due[tp] = offset
        if not due:
            return
        for tp, offset in due.items():
            self._sent[tp] = (offset, now)
        offsets = [_topic_partition(tp, o) for tp, o in sorted(due.items())]
        try:
            result = self._consumer.commit(offsets=offsets, asynchronous=asynchronous)
        except Exception as exc:  # KafkaException: no coordinator, a rebalance under way; retried
            self._observer.event("kafka_commit_failed", {"error": str(exc), "partitions": len(offsets)})
            for tp in due:
                self._observer.committed(tp[0], tp[1], False)
            return
        if not asynchronous and result is not None:
            self._on_commit(None, result)
            self._observer.event("kafka_committed", {
                "offsets": ",".join(f"{t}/{p}:{o}" for (t, p), o in sorted(due.items()))})

    # -- callbacks (on the consumer thread, from inside consume/poll/commit) ----------------------------
    def _on_assign(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._assigned.update(tps)
        self._unreachable = False
        self._observer.rebalance("assigned", tps)
        if self._paused is not None:
            consumer.assign(partitions)
            consumer.pause(partitions)

    def _on_revoke(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._await_checkpoint(tps)
        self._commit(asynchronous=False)  # what is durable goes now, before another member reads on
        self._forget(tps)
        self._observer.rebalance("revoked", tps)

    def _on_lost(self, consumer: Any, partitions: list[Any]) -> None:
        tps = [(p.topic, p.partition) for p in partitions]
        self._forget(tps)  # no longer ours: a commit would be refused
        self._observer.rebalance("lost", tps)

    def _await_checkpoint(self, tps: list[TopicPartition]) -> None:
        """A graceful hand-over: give the live loop a moment to checkpoint what is spooled of
        `tps`, so the next owner starts right after it (no repeats). Not when stopping (the loop
        has checkpointed all it will), and never long: past that, the rest is read again."""
        deadline = time.monotonic() + REVOKE_WAIT_SECONDS
        while not self._stop.is_set() and self._queue.holds(tps) and time.monotonic() < deadline:
            checkpoint = self._checkpoint
            if checkpoint is not None:
                self._wanted.update(self._queue.passed(checkpoint))
            time.sleep(0.02)

    def _forget(self, tps: list[TopicPartition]) -> None:
        self._queue.drop(tps)
        for tp in tps:
            self._assigned.discard(tp)
            self._wanted.pop(tp, None)
            self._acked.pop(tp, None)
            self._sent.pop(tp, None)
            self._next.pop(tp, None)

    def _on_commit(self, error: Any, partitions: list[Any]) -> None:
        for p in partitions:
            ok = error is None and p.error is None
            tp = (p.topic, p.partition)
            if ok and p.offset >= 0:
                self._acked[tp] = max(self._acked.get(tp, -1), p.offset)
            self._observer.committed(p.topic, p.partition, ok)
        if error is not None:
            self._observer.event("kafka_commit_failed", {"error": str(error), "partitions": len(partitions)})

    def _on_error(self, error: Any) -> None:
        name = error.name()
        if name in UNREACHABLE:
            if not self._unreachable:
                self._observer.event("kafka_unreachable", {"error": name, "message": error.str()})
            self._unreachable = True
        else:
            self._observer.event("kafka_error", {"error": name, "message": error.str(), "fatal": error.fatal()})
        if error.fatal():
            raise KafkaFatal(f"{name}: {error.str()}")

    def _on_record_error(self, error: Any) -> None:
        if error.name() == "_PARTITION_EOF":
            return
        self._on_error(error)

    # -- backpressure, reachability, lag -------------------------------------------------------------
    def _backpressure(self) -> None:
        reason = self._admit()
        if reason == self._paused:
            return
        assignment = self._consumer.assignment()
        if reason is not None and self._paused is None:
            self._consumer.pause(assignment)
            self._observer.event("kafka_paused", {"reason": reason, "partitions": len(assignment)})
        elif reason is None:
            self._consumer.resume(assignment)
            self._observer.event("kafka_resumed", {"partitions": len(assignment)})
        self._paused = reason

    def _probe(self) -> None:
        try:
            self._consumer.list_topics(timeout=1.0)
        except Exception:  # still unreachable
            return
        self._unreachable = False
        self._observer.event("kafka_reachable", {})

    def _measure_lag(self) -> None:
        now = time.time()
        for tp in list(self._assigned):
            position = self._next.get(tp)
            try:
                _low, high = self._consumer.get_watermark_offsets(_topic_partition(tp, -1), cached=True)
            except Exception:  # not known yet
                continue
            records = max(0, high - position) if position is not None and high >= 0 else 0
            stamp = self._last_timestamp.get(tp)
            seconds = max(0.0, now - stamp) if stamp is not None and records else 0.0
            self._observer.lag(tp[0], tp[1], records, seconds if stamp is not None else None)


class StopConsuming(Exception):
    """The source was closed while it waited for the spool."""


class KafkaFatal(Exception):
    """librdkafka reported a fatal error: the consumer cannot go on."""


def _topic_partition(tp: TopicPartition, offset: int) -> Any:
    from confluent_kafka import TopicPartition as Tp  # noqa: PLC0415 - only with the kafka input

    return Tp(tp[0], tp[1], offset)


def _confluent_consumer(conf: dict[str, Any]) -> Any:
    from confluent_kafka import Consumer, KafkaException  # noqa: PLC0415 - only with the kafka input

    from detector.errors import ConfigError  # noqa: PLC0415

    try:
        return Consumer(conf)
    except (KafkaException, ValueError, TypeError) as exc:  # an unknown or invalid client option
        raise ConfigError(f"input.client: {exc}") from None


def poll_size(records: list[Any]) -> int:
    """How many records the next poll takes: about POLL_BYTES of records like `records`, at
    least one, at most POLL_RECORDS."""
    size = sum(len(record.value() or b"") for record in records) / len(records)
    return max(1, min(POLL_RECORDS, int(POLL_BYTES / max(size, 1.0))))
