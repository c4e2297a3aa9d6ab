"""Webhook delivery against a real HTTP receiver on 127.0.0.1 that verifies the HMAC, and the
fault sequence: connection refused, hanging, 500s, 429 with Retry-After, then recovery."""

from __future__ import annotations

import hashlib
import hmac
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.settings import DeliverySettings, OutboxSettings, parse_outputs
from detector.alert.stage import Delivery, open_delivery
from tests.support.alertkit import make_alerts, make_match
from tests.support.receiver import Receiver, Reply, free_port, wait_for

SECRET = "hmac-shared-secret"
FAST = OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2)


@pytest.fixture
def hmac_file(tmp_path: Path) -> str:
    path = tmp_path / "hmac"
    path.write_text(SECRET + "\n")
    return str(path)


def delivery(tmp_path: Path, outputs: list[dict[str, Any]], events: list[DeliveryEvent], env: dict[str, str],
             outbox: OutboxSettings = FAST) -> Delivery:
    settings = DeliverySettings(outputs=tuple(parse_outputs(outputs, environ=env)), outbox=outbox,
                                cluster_name="prod")
    return open_delivery(settings, tmp_path / "state", events.append, hostname="h", poll_interval=0.05)


def bodies(receiver: Receiver) -> list[dict[str, Any]]:
    return [orjson.loads(r.body) for r in receiver.accepted()]


@pytest.fixture
def siem() -> Iterator[Receiver]:
    with Receiver(hmac_secret=SECRET) as receiver:
        yield receiver


def test_signed_falco_json_is_verified_by_the_receiver(tmp_path: Path, siem: Receiver, hmac_file: str) -> None:
    """The receiver checks the HMAC over the exact body; headers and the Falco shape arrive."""
    events: list[DeliveryEvent] = []
    outputs = [{"name": "siem", "type": "webhook", "url_env": "SIEM_URL", "hmac_secret_file": hmac_file,
                "headers": {"X-Team": "sec"}, "headers_env": {"Authorization": "SIEM_AUTH"}, "timeout": 2}]
    alerts = make_alerts(3)
    with delivery(tmp_path, outputs, events, {"SIEM_URL": siem.url + "/falco", "SIEM_AUTH": "Bearer t0k"}) as d:
        d.submit(alerts)
        wait_for(lambda: len(siem.accepted()) == 3)
    first = siem.accepted()[0]
    assert first.path == "/falco" and first.method == "POST"
    assert first.headers["X-Team"] == "sec" and first.headers["Authorization"] == "Bearer t0k"
    assert first.headers["Content-Type"] == "application/json" and first.headers["X-Detector-Alert-Id"] == alerts[0].id
    expected = "sha256=" + hmac.new(SECRET.encode(), first.body, hashlib.sha256).hexdigest()
    assert first.headers["X-Detector-Signature"] == expected
    assert bodies(siem) == [orjson.loads(orjson.dumps(a.to_dict())) for a in alerts]
    assert [e.kind for e in events] == [EventKind.DELIVERED] * 3


def test_a_wrong_secret_is_a_permanent_failure(tmp_path: Path, siem: Receiver) -> None:
    """401 from the receiver dead-letters the alert with the exact error, secret-free."""
    (tmp_path / "wrong").write_text("not-the-secret")
    events: list[DeliveryEvent] = []
    outputs = [{"name": "siem", "type": "webhook", "url": siem.url + "/in",
                "hmac_secret_file": str(tmp_path / "wrong"), "timeout": 2}]
    with delivery(tmp_path, outputs, events, {}) as d:
        d.submit(make_alerts(1))
        wait_for(lambda: any(e.kind is EventKind.DEAD for e in events))
        (row,) = d.outbox.rows(status="dead")
    assert row.last_error == "HTTP 401: bad signature"
    assert "not-the-secret" not in repr(events)


def test_user_template_body(tmp_path: Path) -> None:
    """A template replaces the Falco JSON; its content type is sent."""
    events: list[DeliveryEvent] = []
    outputs = [{"name": "chat", "type": "webhook", "url_env": "U", "content_type": "application/json",
                "template": '{"text": "${priority} ${rule}: ${output}", "cluster": "${ka.cluster.name}"}'}]
    with Receiver() as receiver, delivery(tmp_path, outputs, events, {"U": receiver.url}) as d:
        d.submit(d.alerts_for([make_match('Quote " rule')]))
        wait_for(lambda: len(receiver.accepted()) == 1)
    (body,) = bodies(receiver)
    assert body["text"].startswith('Warning Quote " rule: ') and body["cluster"] == "prod"


def test_faults_then_recovery_deliver_each_alert_once_in_order(tmp_path: Path, hmac_file: str) -> None:
    """Refused, then hanging (timeouts), then 500s, then 429 + Retry-After, then healthy: each
    output gets every alert exactly once and in order; the healthy output is never held up."""
    port = free_port()
    events: list[DeliveryEvent] = []
    outputs = [
        {"name": "flaky", "type": "webhook", "url": f"http://127.0.0.1:{port}/in", "timeout": 0.3,
         "hmac_secret_file": hmac_file},
        {"name": "steady", "type": "webhook", "url_env": "STEADY", "timeout": 2},
    ]
    alerts = make_alerts(12)
    flaky = Receiver(port, hmac_secret=SECRET)
    with Receiver() as steady, delivery(tmp_path, outputs, events, {"STEADY": steady.url}) as d:
        for chunk in (alerts[:4], alerts[4:8], alerts[8:]):
            d.submit(chunk)
        wait_for(lambda: len(steady.accepted()) == 12)  # while `flaky` refuses connections
        wait_for(lambda: sum(e.error == "connection refused" for e in events) >= 2)
        flaky.plan.extend([Reply(hang=True), Reply(hang=True), Reply(500, b"oops"), Reply(503, b"busy"),
                           Reply(429, b"slow down", {"Retry-After": "1"})])
        with flaky:
            wait_for(lambda: len(flaky.accepted()) == 12, timeout=20)
            received = list(flaky.received)
    assert [b["id"] for b in bodies(steady)] == [a.id for a in alerts]
    assert [orjson.loads(r.body)["id"] for r in received if r.status == 200] == [a.id for a in alerts]
    assert [r.status for r in received[:6]] == [0, 0, 500, 503, 429, 200]
    assert received[5].at - received[4].at >= 0.95  # Retry-After: 1 was honoured
    errors = [e.error for e in events if e.kind is EventKind.RETRY]
    assert {"connection refused", "no response within 0.3s", "HTTP 500: oops", "HTTP 503: busy",
            "HTTP 429: slow down (Retry-After 1s)"} <= set(errors)
    assert all(e.output == "flaky" for e in events if e.kind is EventKind.RETRY)


def test_full_outbox_drops_the_oldest_and_counts(tmp_path: Path) -> None:
    """With the receiver down and max_rows 5, the 7 oldest of 12 are dropped (counted, reported);
    after recovery the 5 newest arrive in order."""
    port = free_port()
    events: list[DeliveryEvent] = []
    outputs = [{"name": "siem", "type": "webhook", "url": f"http://127.0.0.1:{port}/in", "timeout": 1}]
    bounded = OutboxSettings(max_rows=5, retry_initial_seconds=0.05, retry_max_seconds=0.1)
    alerts = make_alerts(12)
    with delivery(tmp_path, outputs, events, {}, bounded) as d:
        d.submit(alerts[:1])
        # The first alert was tried and failed: a worker that read it before it is dropped below
        # does not send it once the receiver is up.
        wait_for(lambda: any(e.kind is EventKind.RETRY for e in events))
        for alert in alerts[1:]:
            d.submit([alert])
        assert d.outbox.dropped_total == 7
        with Receiver(port) as receiver:
            wait_for(lambda: len(receiver.accepted()) == 5)
    assert [b["id"] for b in bodies(receiver)] == [a.id for a in alerts[7:]]
    drops = [e for e in events if e.kind is EventKind.DROPPED]
    assert sum(e.count for e in drops) == 7 and all(e.output == "siem" and e.reason == "outbox full" for e in drops)


def test_a_hanging_output_delays_nothing_else(tmp_path: Path) -> None:
    """While one receiver hangs every request, the other output gets every alert at once and
    submitting (evaluation's side) never waits for either."""
    events: list[DeliveryEvent] = []
    with Receiver(default=Reply(hang=True)) as hanging, Receiver() as healthy:
        outputs = [{"name": "hanging", "type": "webhook", "url": hanging.url, "timeout": 3},
                   {"name": "healthy", "type": "webhook", "url": healthy.url, "timeout": 3}]
        with delivery(tmp_path, outputs, events, {}) as d:
            for alert in make_alerts(5):
                started = time.monotonic()
                d.submit([alert])
                assert time.monotonic() - started < 0.5
            wait_for(lambda: len(healthy.accepted()) == 5, timeout=2)
            assert len(hanging.received) == 1 and hanging.accepted() == []
            hanging.release.set()  # let the in-flight request end so shutdown is quick
