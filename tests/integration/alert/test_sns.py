"""SNS delivery through boto3 against a real moto server, read back from SQS queues subscribed
to the topic (one with a filter policy on the priority attribute)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import orjson
import pytest

from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.settings import DeliverySettings, OutboxSettings, SnsSettings, parse_outputs
from detector.alert.sink import DeliveryError
from detector.alert.sinks.sns import SnsSink
from detector.alert.stage import Delivery, open_delivery
from detector.rules.model import Priority
from tests.support.alertkit import make_alert
from tests.support.receiver import free_port, wait_for

pytestmark = pytest.mark.usefixtures("aws_env")
REGION = "eu-west-1"


class Topic:
    """A topic with subscribed queues, created fresh for one test."""

    def __init__(self, endpoint: str, fifo: bool = False) -> None:
        self.sns = boto3.client("sns", endpoint_url=endpoint, region_name=REGION)
        self.sqs = boto3.client("sqs", endpoint_url=endpoint, region_name=REGION)
        suffix = ".fifo" if fifo else ""
        name = f"alerts-{uuid.uuid4().hex[:8]}"
        attributes = {"FifoTopic": "true", "ContentBasedDeduplication": "false"} if fifo else {}
        self.arn: str = self.sns.create_topic(Name=name + suffix, Attributes=attributes)["TopicArn"]
        self.fifo = fifo

    def queue(self, filter_policy: dict[str, Any] | None = None) -> str:
        name = f"q-{uuid.uuid4().hex[:8]}" + (".fifo" if self.fifo else "")
        url: str = self.sqs.create_queue(QueueName=name, Attributes={"FifoQueue": "true"} if self.fifo else {})[
            "QueueUrl"]
        arn = self.sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        attributes = {"FilterPolicy": json.dumps(filter_policy)} if filter_policy else {}
        self.sns.subscribe(TopicArn=self.arn, Protocol="sqs", Endpoint=arn, Attributes=attributes)
        return url

    def read(self, queue: str, count: int) -> list[dict[str, Any]]:
        """`count` SNS envelopes from the queue (fails the test if they do not come)."""
        messages: list[dict[str, Any]] = []

        def more() -> bool:
            got = self.sqs.receive_message(QueueUrl=queue, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            for message in got.get("Messages", []):
                messages.append(json.loads(message["Body"]))
                self.sqs.delete_message(QueueUrl=queue, ReceiptHandle=message["ReceiptHandle"])
            return len(messages) >= count

        wait_for(more, timeout=10, interval=0.05)
        return messages


def delivery(tmp_path: Path, output: dict[str, Any], events: list[DeliveryEvent]) -> Delivery:
    settings = DeliverySettings(outputs=tuple(parse_outputs([output])), cluster_name="prod",
                                outbox=OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2))
    return open_delivery(settings, tmp_path, events.append, hostname="h", poll_interval=0.05)


def test_alert_json_subject_and_filterable_attributes(tmp_path: Path, moto_endpoint: str) -> None:
    """Each alert is published once: message = alert JSON, subject `[Priority] rule`, and
    attributes a subscriber can filter on (the filtered queue only gets Critical)."""
    topic = Topic(moto_endpoint)
    everything = topic.queue()
    critical_only = topic.queue({"priority": ["Critical"]})
    events: list[DeliveryEvent] = []
    output = {"name": "sns", "type": "sns", "topic_arn": topic.arn, "region": REGION,
              "endpoint_url": moto_endpoint, "timeout": 5}
    alerts = [make_alert(1, tags=("k8s", "mitre")), make_alert(2, priority=Priority.CRITICAL),
              make_alert(3, priority=Priority.CRITICAL, rule="Other")]
    with delivery(tmp_path, output, events) as d:
        d.submit(alerts)
        wait_for(lambda: len(events) == 3)
    received = {json.loads(m["Message"])["id"]: m for m in topic.read(everything, 3)}
    assert set(received) == {a.id for a in alerts}
    first = received[alerts[0].id]
    assert json.loads(first["Message"]) == orjson.loads(orjson.dumps(alerts[0].to_dict()))
    assert first["Subject"] == "[Warning] Test rule"
    attrs = first["MessageAttributes"]
    assert attrs["priority"] == {"Type": "String", "Value": "Warning"}
    assert attrs["rule"]["Value"] == "Test rule" and json.loads(attrs["tags"]["Value"]) == ["k8s", "mitre"]
    filtered = topic.read(critical_only, 2)
    assert sorted(json.loads(m["Message"])["id"] for m in filtered) == sorted(a.id for a in alerts[1:])
    assert all(e.kind is EventKind.DELIVERED for e in events)


def test_fifo_topic_orders_and_deduplicates_by_alert_id(moto_endpoint: str) -> None:
    """FIFO: one message group keeps order; the alert id as deduplication id makes SNS drop a
    re-send of the same alert (e.g. after a crash between publish and the delivered mark)."""
    topic = Topic(moto_endpoint, fifo=True)
    queue = topic.queue()
    sink = SnsSink(SnsSettings("fifo", topic.arn, REGION, moto_endpoint))
    alerts = [make_alert(n) for n in range(4)]
    for alert in [*alerts[:2], alerts[1], *alerts[2:]]:
        sink.send(alert)
    sink.close()
    messages = topic.read(queue, 4)
    assert [json.loads(m["Message"])["id"] for m in messages] == [a.id for a in alerts]


def test_errors_are_classified(moto_endpoint: str) -> None:
    """A missing topic is permanent (moto's XML error, parsed by botocore); an unreachable
    endpoint is retryable (our transport's error)."""
    missing = SnsSink(SnsSettings("s", f"arn:aws:sns:{REGION}:123456789012:nope", REGION, moto_endpoint))
    with pytest.raises(DeliveryError) as caught:
        missing.send(make_alert())
    assert not caught.value.retryable and caught.value.message.startswith("SNS NotFound (HTTP 404)")
    missing.close()
    down = SnsSink(SnsSettings("s", f"arn:aws:sns:{REGION}:123456789012:a", REGION,
                               f"http://127.0.0.1:{free_port()}", timeout=1))
    with pytest.raises(DeliveryError) as caught:
        down.send(make_alert())
    assert caught.value.retryable and caught.value.message == "SNS: connection refused"
    down.close()


def test_resolved_credentials_are_scrubbed_from_errors(moto_endpoint: str) -> None:
    """The sink offers the credentials the AWS chain resolved as secrets to scrub."""
    sink = SnsSink(SnsSettings("s", f"arn:aws:sns:{REGION}:123456789012:a", REGION, moto_endpoint))
    assert {s.reveal() for s in sink.secrets} == {"testing"}
    assert all("testing" not in repr(s) for s in sink.secrets)
    sink.close()


def test_a_cut_message_is_still_the_alert_json_and_names_its_host(tmp_path: Path, moto_endpoint: str) -> None:
    """An alert over SNS's limit arrives as the alert's JSON with its list fields still lists
    (strings cut inside them), and every message carries a `hostname` attribute."""
    topic = Topic(moto_endpoint)
    queue = topic.queue({"hostname": ["test-host"]})
    events: list[DeliveryEvent] = []
    output = {"name": "sns", "type": "sns", "topic_arn": topic.arn, "region": REGION,
              "endpoint_url": moto_endpoint, "timeout": 5}
    images = ["nginx:1.25", "x" * 300_000, "redis:7"]
    alert = make_alert(1, fields={"ka.req.pod.containers.image": images, "ka.user.name": "alice"})
    with delivery(tmp_path, output, events) as d:
        d.submit([alert])
        wait_for(lambda: len(events) == 1)
    (message,) = topic.read(queue, 1)
    assert message["MessageAttributes"]["hostname"] == {"Type": "String", "Value": "test-host"}
    body = json.loads(message["Message"])
    assert body["truncated"] is True and body["id"] == alert.id and body["rule"] == "Test rule"
    shown = body["output_fields"]["ka.req.pod.containers.image"]
    assert isinstance(shown, list) and shown[0] == "nginx:1.25" and shown[2] == "redis:7"
    assert shown[1].startswith("xxx") and shown[1].endswith("...(truncated)")
    assert body["output_fields"]["ka.user.name"] == "alice" and len(message["Message"].encode()) < 256 * 1024
