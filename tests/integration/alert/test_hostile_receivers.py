"""Delivery against hostile receivers on 127.0.0.1: endless bodies, trickles, error bodies that
echo the secret URL in every encoding, kept-alive connections dropped, and a worker whose own
error handling fails. Each of these broke or leaked on the build before issue 14 (SNS's
endless and trickled responses, and its oversized error bodies, on the build before SNS went
through the shared transport)."""

from __future__ import annotations

import base64
import json
import re
import threading
import time
from pathlib import Path
from typing import Any
from urllib.parse import quote

import pytest

from detector.alert.admin import send_test_alert
from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.secret import Secret
from detector.alert.settings import DeliverySettings, OutboxSettings, SnsSettings, WebhookSettings, parse_outputs
from detector.alert.sink import DeliveryError, Sink
from detector.alert.sinks.sns import BODY_CAP as SNS_BODY_CAP
from detector.alert.sinks.sns import SnsSink
from detector.alert.sinks.webhook import WebhookSink
from detector.alert.stage import Delivery, open_delivery
from tests.support.alertkit import make_alerts
from tests.support.hostile import (
    HostileReceiver,
    Request,
    drop_kept_alive,
    endless,
    reply,
    trickle_body,
    trickle_headers,
    wait_until,
)

FAST = OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2)
THREADS = OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2, dispatch="thread")
TOKEN = "XyZs3cr3tT0kenValue12"
HOOK_PATH = f"/services/T0123ABCD/B0456EFGH/{TOKEN}"
HEADER_TOKEN = "h3aderT0kenValue99"
HMAC_KEY = "hmacK3yValue77"
PASSWORD = "Hunter2PwValue"
BASIC = base64.b64encode(f"admin:{PASSWORD}".encode()).decode()
MARKERS = (TOKEN, HEADER_TOKEN, HMAC_KEY, PASSWORD, BASIC, TOKEN[:7], HEADER_TOKEN[:7], HMAC_KEY[:7])


def rss_kb() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    raise AssertionError("no VmRSS")


def webhook(url: str, timeout: float = 1.0) -> WebhookSink:
    return WebhookSink(WebhookSettings("w", Secret(url, "env URL"), timeout=timeout))


def sns(url: str, timeout: float = 1.0) -> SnsSink:
    return SnsSink(SnsSettings("s", "arn:aws:sns:eu-west-1:123456789012:alerts", "eu-west-1", url, timeout=timeout))


def timed_send(sink: Sink, limit: float) -> tuple[float, BaseException | None]:
    """Send one alert in a thread; (seconds taken, the error), failing if it takes over `limit`."""
    outcome: list[BaseException | None] = []

    def send() -> None:
        try:
            sink.send(make_alerts(1)[0])
            outcome.append(None)
        except BaseException as exc:
            outcome.append(exc)

    started = time.monotonic()
    thread = threading.Thread(target=send, daemon=True)
    thread.start()
    thread.join(limit)
    elapsed = time.monotonic() - started
    assert not thread.is_alive(), f"the attempt was still running after {limit} s"
    return elapsed, outcome[0]


def test_an_endless_body_is_read_up_to_a_small_cap() -> None:
    """A 200 streaming without end is delivered at once, and the process's RSS barely moves."""
    with HostileReceiver(endless) as receiver:
        sink = webhook(receiver.url + "/in", timeout=5)
        try:
            before = rss_kb()
            elapsed, error = timed_send(sink, 8)
            grown = rss_kb() - before
        finally:
            sink.close()
    assert error is None and elapsed < 2
    assert grown < 20_000, f"RSS grew {grown} kB"


@pytest.mark.parametrize("answer", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_a_trickle_is_cut_at_the_timeout(answer: Any) -> None:
    """A byte every 0.2 s keeps each read alive, but the attempt ends at `timeout` (+ slack)."""
    with HostileReceiver(answer) as receiver:
        sink = webhook(receiver.url + "/in", timeout=1.0)
        try:
            elapsed, error = timed_send(sink, 6)
        finally:
            sink.close()
    assert isinstance(error, DeliveryError) and error.retryable
    assert error.message == "no response within 1s"
    assert 0.9 <= elapsed < 1.6


@pytest.mark.usefixtures("aws_env")
def test_sns_an_endless_body_ends_the_attempt_at_the_cap() -> None:
    """A 200 streaming without end to SNS's `endpoint_url`: the attempt stops reading at the
    cap at once, retryably (a 2xx botocore cannot read), and the process's RSS barely moves
    (botocore alone read the body whole, for ever)."""
    with HostileReceiver(endless) as receiver:
        sink = sns(receiver.url, timeout=5)
        try:
            before = rss_kb()
            elapsed, error = timed_send(sink, 3)
            grown = rss_kb() - before
        finally:
            sink.close()
    assert isinstance(error, DeliveryError) and error.retryable and error.status == 200
    assert error.message == f"SNS: HTTP 200, a response body over {SNS_BODY_CAP} bytes"
    assert elapsed < 1 and grown < 20_000, f"{elapsed:.2f} s, RSS grew {grown} kB"


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize("answer", [trickle_body, trickle_headers], ids=["body", "headers"])
def test_sns_a_trickle_is_cut_at_the_timeout(answer: Any) -> None:
    """SNS's `timeout` bounds the whole attempt too (botocore's own timed each read)."""
    with HostileReceiver(answer) as receiver:
        sink = sns(receiver.url, timeout=1.0)
        try:
            elapsed, error = timed_send(sink, 4)
        finally:
            sink.close()
    assert isinstance(error, DeliveryError) and error.retryable
    assert error.message == "SNS: no response within 1s"
    assert 0.9 <= elapsed < 1.6


def _big_aws_error(status: int, code: str) -> Any:
    text = f"<ErrorResponse><Error><Type>Sender</Type><Code>{code}</Code><Message>{'m' * 1_000_000}"
    body = (text + "</Message></Error></ErrorResponse>").encode()

    def answer(_request: Request, conn: Any, _stop: threading.Event) -> None:
        conn.sendall(reply(status, body))
    return answer


@pytest.mark.usefixtures("aws_env")
@pytest.mark.parametrize(("status", "code", "retryable"), [(403, "AuthorizationError", False),
                                                           (503, "ServiceUnavailable", True)])
def test_sns_an_error_body_over_the_cap_is_classified_by_its_status(status: int, code: str, retryable: bool) -> None:
    """A 1 MB AWS error is not read: its status alone decides, as for an unknown error code
    (a 403 is a dead letter, a 503 a retry)."""
    with HostileReceiver(_big_aws_error(status, code)) as receiver:
        sink = sns(receiver.url)
        try:
            _, error = timed_send(sink, 4)
        finally:
            sink.close()
    assert isinstance(error, DeliveryError) and error.retryable is retryable and error.status == status
    assert error.message == f"SNS: HTTP {status}, a response body over {SNS_BODY_CAP} bytes"


def _lower_hex(text: str) -> str:
    return re.sub(r"%[0-9A-F]{2}", lambda m: m.group(0).lower(), text)


ECHOES = {
    "raw": lambda p: f"no hook at {p}",
    "json-escaped": lambda p: json.dumps({"error": "no_hook", "path": p}).replace("/", "\\/"),
    "json-unicode": lambda p: json.dumps({"path": p}).replace("/", "\\u002F"),
    "percent-upper": lambda p: "path=" + quote(p, safe=""),
    "percent-lower": lambda p: "path=" + _lower_hex(quote(p, safe="")),
    "token-alone": lambda p: f"unknown token {p.rsplit('/', 1)[-1]}",
    "cut-at-200": lambda p: "e" * (200 - len(p) + 12) + p,
    "cut-after-blanks": lambda p: " " * 3000 + "z" * 190 + p,
}


def _echo(template: Any) -> Any:
    def answer(request: Request, conn: Any, _stop: threading.Event) -> None:
        echoed = " | ".join([template(request.path), template(request.headers.get("authorization", "")),
                             template(request.headers.get("x-key", "")), request.headers.get("x-basic", "")])
        conn.sendall(reply(404, echoed.encode()))
    return answer


def _echo_outputs(url: str) -> list[dict[str, Any]]:
    return [{"name": "hook", "type": "webhook", "url_env": "HOOK_URL", "timeout": 2,
             "headers_env": {"Authorization": "HOOK_AUTH", "X-Key": "HOOK_KEY"}, "hmac_secret_env": "HOOK_KEY"}]


def _echo_env(url: str) -> dict[str, str]:
    return {"HOOK_URL": url + HOOK_PATH, "HOOK_AUTH": f"Bearer {HEADER_TOKEN}", "HOOK_KEY": HMAC_KEY}


@pytest.mark.parametrize("encoding", list(ECHOES))
def test_echoed_secrets_never_reach_events_outbox_or_send_test_alert(tmp_path: Path, encoding: str) -> None:
    """A 404 body echoing the URL path, the header token and the HMAC key (in one encoding)
    dead-letters the alert with an error free of every secret, in the events (the logs), the
    stored row, the database file and send-test-alert's detail."""
    events: list[DeliveryEvent] = []
    with HostileReceiver(_echo(ECHOES[encoding])) as receiver:
        env = _echo_env(receiver.url)
        outputs = parse_outputs(_echo_outputs(receiver.url), environ=env)
        settings = DeliverySettings(outputs=tuple(outputs), outbox=FAST)
        with open_delivery(settings, tmp_path / "state", events.append, hostname="h", poll_interval=0.05) as d:
            d.submit(make_alerts(1))
            wait_until(lambda: any(e.kind is EventKind.DEAD for e in events))
            (row,) = d.outbox.rows(status="dead")
        (result,) = send_test_alert(outputs)
    assert row.last_error and row.last_error.startswith("HTTP 404: ")
    database = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("detector.db*"))
    texts = {"events": repr(events), "row": row.last_error, "send-test-alert": result.detail,
             "database": database.decode("latin-1")}
    for where, text in texts.items():
        for marker in MARKERS:
            assert marker not in text, f"{marker!r} leaked into {where} ({encoding})"
            assert quote(marker, safe="") not in text


def test_basic_credentials_of_a_url_are_scrubbed_in_every_form(tmp_path: Path) -> None:
    """`http://admin:pw@host/`: the password and the Basic header built from it, echoed back,
    are masked."""
    def answer(request: Request, conn: Any, _stop: threading.Event) -> None:
        auth = request.headers.get("authorization", "")
        conn.sendall(reply(401, f"bad credentials {auth} ({PASSWORD}, {quote(PASSWORD)})".encode()))

    with HostileReceiver(answer) as receiver:
        url = receiver.url.replace("http://", f"http://admin:{PASSWORD}@") + "/in"
        (result,) = send_test_alert(parse_outputs([{"name": "w", "type": "webhook", "url": url}], environ={}))
    assert not result.ok and result.detail.startswith("HTTP 401: bad credentials")
    assert PASSWORD not in result.detail and BASIC not in result.detail


def test_a_kept_alive_connection_dropped_by_the_server_is_retried_at_once(tmp_path: Path) -> None:
    """The second alert's request meets a connection the server dropped: it is sent again on a
    fresh one at once, and both alerts are delivered at their first attempt."""
    events: list[DeliveryEvent] = []
    with HostileReceiver(drop_kept_alive) as receiver:
        outputs = parse_outputs([{"name": "w", "type": "webhook", "url": receiver.url + "/in", "timeout": 2}],
                                environ={})
        settings = DeliverySettings(outputs=tuple(outputs), outbox=FAST)
        with open_delivery(settings, tmp_path / "state", events.append, hostname="h", poll_interval=0.05) as d:
            first, second = make_alerts(2)
            d.submit([first])
            wait_until(lambda: any(e.kind is EventKind.DELIVERED for e in events))
            d.submit([second])
            wait_until(lambda: sum(e.kind is EventKind.DELIVERED for e in events) == 2)
    assert [(e.kind, e.attempts) for e in events] == [(EventKind.DELIVERED, 1), (EventKind.DELIVERED, 1)]
    assert [r.nth_on_connection for r in receiver.requests] == [1, 2, 1]


def test_a_url_that_fails_inside_the_worker_is_a_dead_letter_not_a_dead_thread(tmp_path: Path) -> None:
    """A URL urllib cannot parse (had it passed validation) raises inside the send; the worker
    dead-letters the alert and goes on delivering, its error text scrubbed."""
    events: list[DeliveryEvent] = []
    bad = WebhookSettings("w", Secret("http://[::1/services/T0/B0/" + TOKEN, "env URL"), timeout=1)
    settings = DeliverySettings(outputs=(bad,), outbox=THREADS)
    delivery: Delivery
    with open_delivery(settings, tmp_path / "state", events.append, hostname="h", poll_interval=0.05) as delivery:
        delivery.submit(make_alerts(2))
        wait_until(lambda: sum(e.kind is EventKind.DEAD for e in events) == 2)
        workers = [t for t in threading.enumerate() if t.name == "detector-deliver-w"]
        assert workers and all(t.is_alive() for t in workers)
    assert all(TOKEN not in (e.error or "") for e in events)
    assert [e.error for e in events] == ["invalid request (InvalidURL)"] * 2
