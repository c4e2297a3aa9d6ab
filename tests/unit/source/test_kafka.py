"""The kafka input's pure parts: the commit rule, records to spool lines, and its settings."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.config import apply, load_config
from detector.errors import BadInput, ConfigError
from detector.parse.audit import parse_line
from detector.source.kafka import (
    BadRecord,
    CommitQueue,
    KafkaSource,
    SpoolLines,
    TopicPartition,
    record_body,
    record_cluster,
    spool_line,
)
from detector.source.kafkaconf import EVENT_HUBS_USER, client_config, kafka_settings, redacted
from detector.source.position import FileIdentity, Position, fingerprint
from detector.source.spool import Spool, SpoolMark

FILE_A, FILE_B = FileIdentity(1, 10, "a", 1), FileIdentity(1, 11, "b", 1)
EVENT = b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","auditID":"a1","stage":"ResponseComplete","verb":"get",' \
        b'"stageTimestamp":"2026-11-22T10:00:00.000000Z"}'


def at(identity: FileIdentity, offset: int) -> Position:
    return Position(identity, offset, "/spool/audit.log")


def test_offsets_are_released_only_once_the_checkpoint_passes_their_lines() -> None:
    """An entry's offsets come out when the checkpoint is at or past where its lines end, never before."""
    queue = CommitQueue()
    queue.add(SpoolMark(1, 10, 100), {("t", 0): 5})
    queue.add(SpoolMark(1, 10, 200), {("t", 0): 9, ("t", 1): 3})
    assert queue.passed(at(FILE_A, 99)) == {}
    assert queue.passed(at(FILE_A, 150)) == {("t", 0): 5}
    assert queue.passed(at(FILE_A, 200)) == {("t", 0): 9, ("t", 1): 3}
    assert len(queue) == 0


def test_a_checkpoint_in_a_later_spool_file_passes_every_line_of_the_earlier_one() -> None:
    """After a rotation, a checkpoint in the new file releases all of the old file's entries."""
    queue = CommitQueue()
    queue.add(SpoolMark(1, 10, 5000), {("t", 0): 5})
    queue.add(SpoolMark(1, 11, 100), {("t", 0): 8})
    assert queue.passed(at(FILE_B, 0)) == {("t", 0): 5}
    assert queue.passed(at(FILE_B, 100)) == {("t", 0): 8}


def test_a_checkpoint_in_an_unknown_file_releases_nothing() -> None:
    """A checkpoint from before this process (a file the queue never wrote) is older than every entry."""
    queue = CommitQueue()
    queue.add(SpoolMark(1, 10, 100), {("t", 0): 5})
    assert queue.passed(at(FileIdentity(1, 99, "x", 1), 10_000)) == {}


def test_revoked_partitions_lose_their_in_flight_offsets() -> None:
    """On a revoke the uncommitted offsets of those partitions are dropped; the others stay."""
    queue = CommitQueue()
    queue.add(SpoolMark(1, 10, 100), {("t", 0): 5, ("t", 1): 7})
    queue.drop([("t", 0)])
    assert queue.passed(at(FILE_A, 100)) == {("t", 1): 7}


@pytest.mark.parametrize(("value", "reason"), [(None, "empty"), (b"  ", "empty"), (b"not json", "invalid_json"),
                                               (b'{"a": 1', "invalid_json"), (b"x" * 2000, "too_large")])
def test_records_that_cannot_be_spooled_are_bad_with_a_reason(value: bytes | None, reason: str) -> None:
    """Tombstones, non-JSON and oversized records are refused with their reason label."""
    with pytest.raises(BadRecord) as caught:
        record_body(value, 1024)
    assert caught.value.reason == reason


def test_a_record_spool_line_is_one_line_that_parse_reads_with_its_cluster() -> None:
    """A pretty-printed Event record becomes one spool line; parse yields the event with the record's cluster."""
    pretty = orjson.dumps(orjson.loads(EVENT), option=orjson.OPT_INDENT_2)
    line = spool_line(record_body(pretty, 1 << 20), "prod-eu", "k8s-audit/3/17", b"2026-11-22T10:00:00.000000Z")
    assert line.count(b"\n") == 1 and line.endswith(b"\n")
    events = parse_line(line[:-1])
    assert isinstance(events, list) and len(events) == 1
    assert events[0].auditID == "a1" and events[0].cluster == "prod-eu"


def test_an_event_list_record_yields_each_item() -> None:
    """A record holding an EventList gives one event per item."""
    body = b'{"kind":"EventList","items":[' + EVENT + b"," + EVENT.replace(b"a1", b"a2") + b"]}"
    events = parse_line(spool_line(record_body(body, 1 << 20), None, "t/0/1", b"now")[:-1])
    assert [e.auditID for e in events] == ["a1", "a2"]  # type: ignore[union-attr]


def test_a_json_record_that_is_no_event_is_reported_with_topic_partition_offset() -> None:
    """JSON that holds no audit event is bad input whose message names the record."""
    reports: list[str] = []
    try:
        parse_line(spool_line(b'{"foo": 1}', None, "k8s-audit/2/41", b"now")[:-1], lambda e: reports.append(e.message))
    except BadInput as exc:  # the error is the report when no event is usable
        reports.append(str(exc))
    assert any("k8s-audit/2/41" in r for r in reports)


def test_the_cluster_comes_from_the_header_then_the_key() -> None:
    """The `cluster` header wins; else a key that is a valid cluster name; else none."""
    assert record_cluster(b"key-a", [("cluster", b"hdr-b")], "cluster", True) == "hdr-b"
    assert record_cluster(b"key-a", None, "cluster", True) == "key-a"
    assert record_cluster(b"key-a", None, "cluster", False) is None
    assert record_cluster(b"bad key/", None, "cluster", True) is None


# -- settings ---------------------------------------------------------------------------------------
BASE = {"type": "kafka", "brokers": ["127.0.0.1:9092"], "topics": ["k8s-audit"], "group_id": "detector"}


def kafka(**extra: object) -> dict[str, object]:
    return {"input": {**BASE, **extra}}


def test_the_acceptance_names_load() -> None:
    """`input: {type: kafka, brokers, topics, group_id, client}` loads, patterns too."""
    config = apply(load_config(None), kafka(topics="^k8s-audit-.*", client={"fetch.max.bytes": 1 << 20}), "c.yaml")
    settings = config.input.kafka
    assert settings is not None and settings.topics == ("^k8s-audit-.*",)
    assert dict(settings.client) == {"fetch.max.bytes": str(1 << 20)}


@pytest.mark.parametrize(("extra", "message"), [
    ({"brokers": ["nohost"]}, "input.brokers: 'nohost' is not host:port"),
    ({"topics": ["a b"]}, "input.topics:"),
    ({"topics": ["^(unclosed"]}, "not a valid pattern"),
    ({"group_id": ""}, "input.group_id: required"),
    ({"listen": "0.0.0.0:1"}, "unknown key 'listen' for type kafka"),
    ({"client": {"enable.auto.commit": True}}, "input.client.enable.auto.commit: is set by detector"),
    ({"client": {"sasl.password": "x"}}, "input.client.sasl.password"),
    ({"security": {"protocol": "sasl_ssl"}}, "input.security.sasl_mechanism: required"),
    ({"security": {"sasl_mechanism": "GSSAPI", "username": "u", "password_env": "HOME"}}, "must be one of PLAIN"),
    ({"security": {"sasl_mechanism": "PLAIN", "username": "u"}}, "input.security.password_env: set exactly one"),
    ({"security": {"sasl_mechanism": "SCRAM-SHA-512", "username": "u", "password_env": "NO_SUCH_VAR_X"}},
     "NO_SUCH_VAR_X is not set"),
    ({"security": {"sasl_mechanism": "PLAIN", "username": "u", "password_file": "/no/such"}}, "/no/such: no such"),
    ({"security": {"protocol": "sasl_plaintext", "sasl_mechanism": "PLAIN", "username": "u", "password_env": "HOME"},
      "brokers": ["kafka.example.com:9092"]}, "sends the password in clear"),
    ({"security": {"protocol": "plaintext", "ca_file": "/etc/hostname"}}, "input.security.ca_file: needs protocol"),
    ({"security": {"cert_file": "/etc/hostname"}}, "cert_file and key_file go together"),
    ({"security": {"connection_string_env": "HOME", "username": "u"}}, "input.security.username: not with"),
    ({"security": {"connection_string_env": "HOME", "protocol": "ssl"}}, "needs sasl_ssl"),
    ({"security": {"bogus": "x"}}, "input.security: unknown key 'bogus'"),
])
def test_bad_settings_are_one_line_naming_the_key(extra: dict[str, object], message: str) -> None:
    """Every broken kafka setting is a ConfigError of one line naming input.<key>."""
    with pytest.raises(ConfigError) as caught:
        apply(load_config(None), kafka(**extra), "c.yaml")
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_scram_over_tls_reads_its_secrets_at_start_and_never_logs_them(tmp_path: Path,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    """Username from the config, password from a file, CA for TLS: the client config holds them, the log form not."""
    secret = tmp_path / "password"
    secret.write_text("s3cr3t-value\n")
    ca = tmp_path / "ca.pem"
    ca.write_text("x")
    config = apply(load_config(None), kafka(security={
        "sasl_mechanism": "scram-sha-512", "username": "det", "password_file": str(secret), "ca_file": str(ca)}), "c")
    assert config.input.kafka is not None
    conf = client_config(config.input.kafka)
    assert conf["security.protocol"] == "sasl_ssl" and conf["sasl.mechanism"] == "SCRAM-SHA-512"
    assert conf["sasl.password"] == "s3cr3t-value" and conf["ssl.ca.location"] == str(ca)
    assert conf["enable.auto.commit"] == "false" and conf["enable.auto.offset.store"] == "false"
    assert "s3cr3t-value" not in str(redacted(conf))


def test_event_hubs_connection_string_is_plain_sasl_ssl(monkeypatch: pytest.MonkeyPatch) -> None:
    """`connection_string_env` means SASL_SSL, PLAIN, user $ConnectionString, the string as password."""
    text = "Endpoint=sb://ns.servicebus.windows.net/;SharedAccessKeyName=listen;SharedAccessKey=abc="
    monkeypatch.setenv("EH_CONN", text)
    config = apply(load_config(None), kafka(security={"connection_string_env": "EH_CONN"}), "c")
    assert config.input.kafka is not None
    conf = client_config(config.input.kafka)
    assert (conf["security.protocol"], conf["sasl.mechanism"], conf["sasl.username"], conf["sasl.password"]) == \
        ("sasl_ssl", "PLAIN", EVENT_HUBS_USER, text)
    monkeypatch.setenv("EH_CONN", "not a connection string")
    with pytest.raises(ConfigError, match="not an Event Hubs connection string"):
        client_config(config.input.kafka)


def test_a_run_of_event_records_is_one_line_with_the_same_events_as_one_line_each() -> None:
    """Consecutive Event records of one partition and cluster share a line; the events (and so
    their bytes, the alert ids' input) are those of a line per record; a gap or another record
    starts a new line."""
    bodies = [EVENT.replace(b"a1", f"a{n}".encode()) for n in range(5)]
    lines = SpoolLines(b"now", 1 << 20)
    for offset, body in enumerate(bodies[:3]):
        lines.add("t", 0, offset, "c", body)
    lines.add("t", 0, 3, "c", b'{"kind":"EventList","items":[]}')
    lines.add("t", 0, 5, "c", bodies[4])
    data = lines.finish().splitlines()
    assert len(data) == 3 and b'"requestId":"t/0/0-2"' in data[0] and b'"requestId":"t/0/5"' in data[2]
    batched = parse_line(data[0])
    single = [parse_line(spool_line(b, "c", "t/0/x", b"now")[:-1]) for b in bodies[:3]]
    assert isinstance(batched, list)
    assert [(e.auditID, e.line(), e.cluster) for e in batched] == \
        [(e.auditID, e.line(), e.cluster) for [e] in single]  # type: ignore[misc]


def test_an_aks_event_hubs_record_is_detected_per_record_with_its_cluster() -> None:
    """A record holding Azure diagnostic records (as Event Hubs delivers AKS audit logs) yields its
    kube-audit events with the managed cluster's name; other categories are skipped."""
    records = {"records": [
        {"time": "x", "resourceId": "/SUBSCRIPTIONS/1/RESOURCEGROUPS/rg/PROVIDERS/MICROSOFT.CONTAINERSERVICE/"
         "MANAGEDCLUSTERS/aks-prod", "category": "kube-audit", "properties": {"log": EVENT.decode()}},
        {"time": "x", "resourceId": "/x", "category": "kube-apiserver", "properties": {"log": "I0101 ..."}}]}
    lines = SpoolLines(b"now", 1 << 20)
    lines.add("aks-audit", 1, 7, None, orjson.dumps(records))
    reports: list[str] = []
    events = parse_line(lines.finish()[:-1], lambda e: reports.append(e.message))
    assert [(e.auditID, e.cluster) for e in events] == [("a1", "aks-prod")]  # type: ignore[union-attr]
    assert reports and reports[0].startswith("request aks-audit/1/7")


def test_a_record_array_and_an_event_in_another_key_order_are_events() -> None:
    """A JSON array of Events and an Event whose keys are sorted (as Vector writes) are read too."""
    sorted_event = orjson.dumps(orjson.loads(EVENT), option=orjson.OPT_SORT_KEYS)
    lines = SpoolLines(b"now", 1 << 20)
    lines.add("t", 0, 0, "c", b"[" + EVENT + b"," + EVENT.replace(b"a1", b"a2") + b"]")
    lines.add("t", 0, 1, "c", sorted_event)
    got = [parse_line(line) for line in lines.finish().splitlines()]
    assert [[(e.auditID, e.cluster) for e in r] for r in got] == [  # type: ignore[union-attr]
        [("a1", "c"), ("a2", "c")], [("a1", "c")]]


def test_the_prefetch_defaults_keep_memory_small_and_refetch_at_once() -> None:
    """2 MiB of prefetch, and a full queue postpones the next fetch by 10 ms, not librdkafka's 1 s
    (which held one instance to ~11,000 events/s); `client` overrides both."""
    config = apply(load_config(None), kafka(), "c.yaml")
    assert config.input.kafka is not None
    conf = client_config(config.input.kafka)
    assert (conf["queued.max.messages.kbytes"], conf["fetch.max.bytes"], conf["fetch.queue.backoff.ms"]) == \
        ("2048", str(2 << 20), "10")
    config = apply(load_config(None), kafka(client={"fetch.queue.backoff.ms": 100, "queued.max.messages.kbytes": 8192}),
                   "c.yaml")
    assert config.input.kafka is not None
    conf = client_config(config.input.kafka)
    assert (conf["fetch.queue.backoff.ms"], conf["queued.max.messages.kbytes"]) == ("100", "8192")


# -- the consumer thread, with a consumer double ----------------------------------------------------------
class Record:
    """What the source reads of a confluent_kafka.Message."""

    def __init__(self, partition: int, offset: int, value: bytes | None, key: bytes | None = b"k1",
                 headers: list[tuple[str, bytes]] | None = None) -> None:
        self._topic, self._partition, self._offset = "t", partition, offset
        self._value, self._key, self._headers = value, key, headers

    def error(self) -> None:
        return None

    def topic(self) -> str:
        return self._topic

    def partition(self) -> int:
        return self._partition

    def offset(self) -> int:
        return self._offset

    def value(self) -> bytes | None:
        return self._value

    def key(self) -> bytes | None:
        return self._key

    def headers(self) -> list[tuple[str, bytes]] | None:
        return self._headers

    def timestamp(self) -> tuple[int, int]:
        return 1, 1_700_000_000_000 + self._offset


class Partition:
    def __init__(self, topic: str, partition: int, offset: int = -1001) -> None:
        self.topic, self.partition, self.offset, self.error = topic, partition, offset, None


class Consumer:
    """A consumer double: assigns partitions 0 and 1 of `t` on subscribe, hands out `polls` one
    per consume(), and records commits (confirming each at once, as the broker would)."""

    def __init__(self, polls: list[list[Record]]) -> None:
        self.polls = polls
        self.commits: list[dict[TopicPartition, int]] = []
        self.closed = threading.Event()

    def subscribe(self, topics: list[str], on_assign: Any, on_revoke: Any, on_lost: Any) -> None:
        on_assign(self, [Partition("t", 0), Partition("t", 1)])

    def consume(self, count: int, timeout: float) -> list[Record]:
        if self.polls:
            return self.polls.pop(0)
        time.sleep(timeout / 10)
        return []

    def commit(self, offsets: list[Any], asynchronous: bool) -> list[Partition]:
        self.commits.append({(o.topic, o.partition): o.offset for o in offsets})
        return [Partition(o.topic, o.partition, o.offset) for o in offsets]

    def get_watermark_offsets(self, tp: Any, cached: bool) -> tuple[int, int]:
        return 0, 100

    def assignment(self) -> list[Partition]:
        return []

    def close(self) -> None:
        self.closed.set()


class Seen:
    """The source's Observer, keeping what it was told."""

    def __init__(self) -> None:
        self.counted: list[tuple[str, int, int, int]] = []
        self.bad: list[tuple[str, int, int, str]] = []
        self.events: list[tuple[str, dict[str, object]]] = []

    def records(self, topic: str, partition: int, count: int, size: int) -> None:
        self.counted.append((topic, partition, count, size))

    def bad_record(self, topic: str, partition: int, offset: int, reason: str, message: str) -> None:
        self.bad.append((topic, partition, offset, reason))

    def committed(self, topic: str, partition: int, ok: bool) -> None: ...

    def rebalance(self, kind: str, partitions: list[TopicPartition]) -> None: ...

    def lag(self, topic: str, partition: int, records: int, seconds: float | None) -> None: ...

    def event(self, name: str, fields: dict[str, object]) -> None:
        self.events.append((name, fields))


def wait(cond: Any, what: str) -> None:
    deadline = time.monotonic() + 10
    while not cond():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.01)


def test_a_poll_is_spooled_in_runs_and_its_offsets_committed_once_the_checkpoint_passes(tmp_path: Path) -> None:
    """One poll holding runs of two partitions, a bad record and keys and headers: the spool gets
    the runs in poll order (a newline inside a record made a space), each key's cluster (a header
    wins, a key that is no name names none); counts, bytes, the bad record with its offset, and
    `kafka_reading` once a partition are reported; nothing is committed before the checkpoint
    passes the poll's lines, then the next offset of each partition (past the bad record) is."""
    events = [EVENT.replace(b"a1", f"a{n}".encode()) for n in range(5)]
    events[1] = events[1].replace(b'"verb"', b'\n"verb"')
    poll = [Record(0, 10, events[0]), Record(0, 11, events[1]),
            Record(1, 3, events[2], key=b"k2", headers=[("cluster", b"h2")]), Record(1, 4, b"not json", key=b"k2"),
            Record(0, 12, events[3], key=b"bad key/"), Record(1, 5, events[4], key=b"k2")]
    settings = kafka_settings({**BASE, "brokers": ["127.0.0.1:9092"]}, "c.yaml")
    spool = Spool(str(tmp_path / "spool" / "audit.log"))
    seen = Seen()
    consumer = Consumer([poll])
    source = KafkaSource(settings, spool, admit=lambda: None, observer=seen, consumer_factory=lambda conf: consumer)
    source.start()
    path = tmp_path / "spool" / "audit.log"
    try:
        wait(lambda: len(seen.counted) == 2, "the poll")  # told once its lines are in the spool
        data = path.read_bytes()
        lines = data.splitlines()
        assert [orjson.loads(line)["requestId"] for line in lines] == ["t/0/10-11", "t/1/3", "t/0/12", "t/1/5"]
        assert [[(e.auditID, e.cluster) for e in parse_line(line)] for line in lines] == [  # type: ignore[union-attr]
            [("a0", "k1"), ("a1", "k1")], [("a2", "h2")], [("a3", None)], [("a4", "k2")]]
        assert seen.counted == [("t", 0, 3, sum(map(len, (events[0], events[1], events[3])))),
                           ("t", 1, 2, len(events[2]) + len(events[4]))]
        assert seen.bad == [("t", 1, 4, "invalid_json")]
        assert [f for name, f in seen.events if name == "kafka_reading"] == [
            {"topic": "t", "partition": 0, "offset": 10}, {"topic": "t", "partition": 1, "offset": 3}]
        time.sleep(0.05)
        assert consumer.commits == []
        st = path.stat()
        identity = FileIdentity(st.st_dev, st.st_ino, fingerprint(data[:1024]), min(1024, len(data)))
        source.durable(Position(identity, len(data) - 1, str(path)))  # short of the poll's last line
        time.sleep(0.05)
        assert consumer.commits == []
        source.durable(Position(identity, len(data), str(path)))
        wait(lambda: consumer.commits, "the commit")
        assert consumer.commits == [{("t", 0): 13, ("t", 1): 6}]
    finally:
        assert source.close(5)
        spool.close()
    assert consumer.closed.is_set()


class _Record:
    def __init__(self, size: int) -> None:
        self._value = b"x" * size

    def value(self) -> bytes:
        return self._value


def test_a_poll_takes_about_a_quarter_mebibyte_of_records_like_the_last() -> None:
    """One record can hold an EventList of thousands of events: 500 such records held ~200 MB
    (bench/kafka.py --format list). Polls are sized by the bytes of the last poll's records."""
    from detector.source.kafka import POLL_BYTES, POLL_RECORDS, poll_size  # noqa: PLC0415

    assert poll_size([_Record(500)] * 10) == POLL_RECORDS  # one Event a record: 500 a poll
    assert poll_size([_Record(50_000)] * 3) == POLL_BYTES // 50_000  # EventLists of ~100 events: 5
    assert poll_size([_Record(10_000_000)]) == 1
