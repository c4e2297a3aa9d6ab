"""Delivery in a child process (`outbox.dispatch`): real child, real receiver on 127.0.0.1."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.alert.courier import CourierProcess, wants_process
from detector.alert.dispatch import Dispatcher
from detector.alert.events import DeliveryEvent, EventKind
from detector.alert.settings import DeliverySettings, OutboxSettings, parse_outbox, parse_outputs
from detector.alert.stage import Delivery, open_delivery
from detector.errors import ConfigError
from tests.support.alertkit import make_alerts
from tests.support.receiver import Receiver, free_port, wait_for

ROOT = Path(__file__).resolve().parents[3]
FAST = OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2)


def settings(outputs: list[dict[str, Any]], dispatch: str = "auto") -> DeliverySettings:
    outbox = OutboxSettings(retry_initial_seconds=0.05, retry_max_seconds=0.2, dispatch=dispatch)
    return DeliverySettings(outputs=tuple(parse_outputs(outputs, environ={})), outbox=outbox)


def webhook_delivery(tmp_path: Path, receiver: Receiver, events: list[DeliveryEvent]) -> Delivery:
    """A delivery to `receiver` whose outputs run in the child (`auto` with a webhook)."""
    delivery = open_delivery(settings([{"name": "siem", "type": "webhook", "url": receiver.url}]),
                             tmp_path / "state", events.append, poll_interval=0.05)
    assert isinstance(delivery.dispatcher, CourierProcess)
    return delivery


def test_auto_uses_a_process_only_for_network_outputs(tmp_path: Path) -> None:
    local = [{"name": "out", "type": "stdout"}, {"name": "f", "type": "file", "path": str(tmp_path / "a.jsonl")}]
    hook = [{"name": "siem", "type": "webhook", "url": "http://127.0.0.1:9/in"}]
    assert not wants_process(settings(local))
    assert wants_process(settings(local + hook))
    assert not wants_process(settings(hook, dispatch="thread"))
    assert wants_process(settings(local, dispatch="process"))


def test_dispatch_must_be_a_known_mode() -> None:
    with pytest.raises(ConfigError, match=r"outbox\.dispatch"):
        parse_outbox({"dispatch": "fork"})


def test_alerts_go_out_from_the_child_and_its_events_come_back(tmp_path: Path) -> None:
    """The webhook receives every alert in order; DELIVERED events reach the parent's callback."""
    events: list[DeliveryEvent] = []
    with Receiver() as receiver:
        delivery = webhook_delivery(tmp_path, receiver, events)
        assert delivery.sinks == {}  # no HTTP client in the evaluating process
        delivery.start()
        try:
            pid = delivery.dispatcher.pid
            assert pid is not None and pid != os.getpid()
            delivery.submit(make_alerts(30))
            wait_for(lambda: sum(e.kind is EventKind.DELIVERED for e in events) == 30)
        finally:
            assert delivery.close(10.0)
        ids = [orjson.loads(r.body)["id"] for r in receiver.accepted()]
    assert ids == [a.id for a in make_alerts(30)]
    assert {e.output for e in events} == {"siem"}
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)  # the child is gone after close()


def test_thread_mode_keeps_delivery_in_process(tmp_path: Path) -> None:
    hook = [{"name": "siem", "type": "webhook", "url": "http://127.0.0.1:9/in"}]
    delivery = open_delivery(settings(hook, dispatch="thread"), tmp_path / "state", lambda _e: None)
    try:
        assert isinstance(delivery.dispatcher, Dispatcher)
        assert set(delivery.sinks) == {"siem"}
    finally:
        delivery.close(5.0)


def test_an_output_that_cannot_be_built_fails_start_with_its_reason(tmp_path: Path) -> None:
    """The child's startup error becomes the parent's one-line ConfigError (exit 2 in the CLI)."""
    missing = tmp_path / "no-such-dir" / "alerts.jsonl"
    delivery = open_delivery(settings([{"name": "f", "type": "file", "path": str(missing)}], dispatch="process"),
                             tmp_path / "state", lambda _e: None)
    try:
        with pytest.raises(ConfigError, match=r"output f: directory .*no-such-dir does not exist"):
            delivery.start()
    finally:
        assert delivery.close(5.0)


def _children(pid: int) -> list[int]:
    path = Path(f"/proc/{pid}/task/{pid}/children")
    return [int(p) for p in path.read_text().split()] if path.exists() else []


def _alive(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"  # a zombie has exited


def test_the_child_exits_when_its_parent_is_killed(tmp_path: Path) -> None:
    """SIGKILL of the detector leaves no orphan delivering alongside the next start."""
    url = f"http://127.0.0.1:{free_port()}/in"  # down: the child keeps retrying until told otherwise
    parent = subprocess.Popen([sys.executable, "-m", "tests.integration.alert.kill_child", str(tmp_path), url,
                               "5", "enqueue"], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert parent.stdout is not None and parent.stdout.readline().strip() == "enqueued"
        couriers = _children(parent.pid)
        assert len(couriers) >= 1
        os.kill(parent.pid, signal.SIGKILL)
        assert parent.wait(10) == -signal.SIGKILL
        deadline = time.monotonic() + 15
        while any(_alive(pid) for pid in couriers) and time.monotonic() < deadline:
            time.sleep(0.02)
        assert not any(_alive(pid) for pid in couriers)
    finally:
        if parent.poll() is None:
            parent.kill()
        if parent.stdout is not None:
            parent.stdout.close()


def test_a_child_that_dies_is_reported_and_replaced(tmp_path: Path) -> None:
    """kill -9 of the delivery process: the parent says so, starts another, and alerts flow again."""
    events: list[DeliveryEvent] = []
    with Receiver() as receiver:
        delivery = webhook_delivery(tmp_path, receiver, events)
        delivery.start()
        try:
            first = delivery.dispatcher.pid
            assert first is not None
            os.kill(first, signal.SIGKILL)
            wait_for(lambda: any(e.kind is EventKind.WORKER_ERROR for e in events))
            wait_for(lambda: delivery.dispatcher.pid not in (None, first))  # type: ignore[attr-defined]
            delivery.submit(make_alerts(5))
            wait_for(lambda: sum(e.kind is EventKind.DELIVERED for e in events) == 5)
        finally:
            assert delivery.close(10.0)
    error = next(e.error for e in events if e.kind is EventKind.WORKER_ERROR)
    assert error is not None and "exited unexpectedly (signal 9)" in error
    assert len(receiver.accepted()) == 5


def test_sighup_to_the_child_is_ignored(tmp_path: Path) -> None:
    """A closed terminal or a group-wide SIGHUP must not take delivery down (reloads are the parent's)."""
    events: list[DeliveryEvent] = []
    with Receiver() as receiver:
        delivery = webhook_delivery(tmp_path, receiver, events)
        delivery.start()
        try:
            pid = delivery.dispatcher.pid  # type: ignore[attr-defined]
            os.kill(pid, signal.SIGHUP)
            delivery.submit(make_alerts(3))
            wait_for(lambda: sum(e.kind is EventKind.DELIVERED for e in events) == 3)
            assert delivery.dispatcher.pid == pid  # type: ignore[attr-defined]
            assert not [e for e in events if e.kind is EventKind.WORKER_ERROR]
        finally:
            assert delivery.close(10.0)
