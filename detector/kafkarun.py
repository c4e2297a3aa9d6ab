"""The kafka input's metrics and log lines (the `Observer` of detector/source/kafka.py), for
`detector run`. Label sets are bounded by the partitions of the subscribed topics; a partition's
lag gauges are removed when it is revoked.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable

from prometheus_client import Counter, Gauge

from detector.errors import BadInput
from detector.metrics import Metrics
from detector.source.kafka import TopicPartition

OnEvent = Callable[[str, dict[str, object]], None]
# parse names a spool line's record "request <topic>/<partition>/<offset>" (its requestId).
_REQUEST = re.compile(r"request ([A-Za-z0-9._-]+)/(\d+)/(\d+)")


class KafkaMetrics:
    """Per partition: records, bytes, bad records by reason, commits, rebalances, lag."""

    def __init__(self, metrics: Metrics, on_event: OnEvent) -> None:
        r = metrics.registry
        tp = ["topic", "partition"]
        self._records = Counter("detector_kafka_records", "Records read from Kafka into the spool", tp, registry=r)
        self._bytes = Counter("detector_kafka_record_bytes", "Bytes of record values read", tp, registry=r)
        self._bad = Counter("detector_kafka_bad_records", "Records reported and skipped, by reason (not JSON, "
                            "empty, too large; or JSON that holds no audit event)", [*tp, "reason"], registry=r)
        self._commits = Counter("detector_kafka_commits", "Offset commits per partition, by result",
                                [*tp, "result"], registry=r)
        self._rebalances = Counter("detector_kafka_rebalances", "Partitions assigned, revoked or lost",
                                   [*tp, "kind"], registry=r)
        self._lag = Gauge("detector_kafka_lag_records", "Records in the partition after the last one read",
                          tp, registry=r)
        self._lag_seconds = Gauge("detector_kafka_lag_seconds", "Age of the last record read (its Kafka "
                                  "timestamp) while the partition has more", tp, registry=r)
        self._assigned = Gauge("detector_kafka_assigned_partitions", "Partitions this member owns", registry=r)
        self._owned: set[TopicPartition] = set()
        self._on_event = on_event

    def records(self, topic: str, partition: int, count: int, size: int) -> None:
        p = str(partition)
        self._records.labels(topic, p).inc(count)
        self._bytes.labels(topic, p).inc(size)

    def bad_record(self, topic: str, partition: int, offset: int, reason: str, message: str) -> None:
        self._bad.labels(topic, str(partition), reason).inc()
        self._on_event("bad_record", {"topic": topic, "partition": partition, "offset": offset, "reason": reason,
                                      "message": message})

    def bad_line(self, error: BadInput) -> None:
        """A record spooled as JSON that parse found unusable: counted for its partition too."""
        match = _REQUEST.match(error.message)
        if match is not None:
            self._bad.labels(match.group(1), match.group(2), error.reason).inc()

    def committed(self, topic: str, partition: int, ok: bool) -> None:
        self._commits.labels(topic, str(partition), "ok" if ok else "failed").inc()

    def rebalance(self, kind: str, partitions: list[TopicPartition]) -> None:
        for topic, partition in partitions:
            self._rebalances.labels(topic, str(partition), kind).inc()
            if kind == "assigned":
                self._owned.add((topic, partition))
            elif (topic, partition) in self._owned:
                self._owned.discard((topic, partition))
                for gauge in (self._lag, self._lag_seconds):
                    with contextlib.suppress(KeyError):
                        gauge.remove(topic, str(partition))
        self._assigned.set(len(self._owned))
        self._on_event(f"kafka_partitions_{kind}", {
            "partitions": ",".join(f"{t}/{p}" for t, p in sorted(partitions)), "owned": len(self._owned)})

    def lag(self, topic: str, partition: int, records: int, seconds: float | None) -> None:
        self._lag.labels(topic, str(partition)).set(records)
        if seconds is not None:
            self._lag_seconds.labels(topic, str(partition)).set(seconds)

    def event(self, name: str, fields: dict[str, object]) -> None:
        self._on_event(name, fields)
