"""The alert stage as the engine sees it, and its assembly from settings.

The engine thread builds alerts (`Delivery.build`, i.e. `AlertBuilder`: enrich + redact), then
`submit`s each batch with the source checkpoint: throttling decides, the outbox stores alerts,
throttle windows and checkpoint in one transaction, and the dispatcher is woken. Nothing here
waits on an output; the only wait is SQLite's commit.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Protocol

from detector.alert.build import AlertBuilder, build_alerts
from detector.alert.courier import CourierProcess, wants_process
from detector.alert.dispatch import Dispatcher
from detector.alert.events import DeliveryEvent, EventKind, OnEvent, log_event
from detector.alert.model import Alert
from detector.alert.outbox import Outbox, PendingRow
from detector.alert.route import Router
from detector.alert.settings import DeliverySettings
from detector.alert.sink import Sink
from detector.alert.sinks import build_sinks
from detector.alert.throttle import STATE_PREFIX, Throttle
from detector.errors import BadInput
from detector.rules.model import Match


class AlertStage:
    """Throttle, store durably, wake the dispatcher."""

    def __init__(self, outbox: Outbox, throttle: Throttle, notify: Callable[[Sequence[PendingRow] | None], None],
                 on_event: OnEvent = log_event, clock: Callable[[], float] = time.time) -> None:
        self.outbox = outbox
        self.throttle = throttle
        self.notify = notify
        self.on_event = on_event
        self.clock = clock
        self.unstored: _Batch | None = None
        self.list_rows = True  # hand the stored rows to `notify` (an in-process dispatcher sends them)
        throttle.load(outbox.state_items(STATE_PREFIX))

    def submit(self, alerts: Sequence[Alert], state: Mapping[str, bytes | None] | None = None) -> list[Alert]:
        """Store the alerts that pass throttling (plus summaries of windows that closed) and
        `state` in one transaction; returns the alerts stored.

        If storing fails (disk full, read-only or broken database: the exception propagates),
        the batch is kept as `unstored` and `retry_unstored` stores exactly that batch later:
        throttling has already decided about it and must not count its alerts twice. Nothing
        else may be submitted before it is stored, or the state would move past it."""
        if self.unstored is not None:
            raise RuntimeError("an earlier batch is not stored yet: retry_unstored() first")
        now = self.clock()
        closed, closed_changes = self.throttle.expire(now)
        passed, changes = self.throttle.admit(alerts, now)
        self.unstored = _Batch(closed + passed, {**closed_changes, **changes, **(state or {})}, closed)
        return self.retry_unstored()

    def retry_unstored(self) -> list[Alert]:
        """Store the batch whose storing failed (nothing if none); returns its alerts."""
        batch = self.unstored
        if batch is None:
            return []
        stored = self.outbox.store(batch.alerts, batch.state, list_rows=self.list_rows)
        self.unstored = None
        self._report(batch.summaries)
        if stored.added:
            self.notify(stored.rows)
        return batch.alerts

    def tick(self) -> list[Alert]:
        """Close ended throttle windows and store their summaries; call it every second or so
        while the source is idle (submit does it too)."""
        if self.unstored is not None:
            return self.retry_unstored()
        return self.submit(())

    def _report(self, summaries: Sequence[Alert]) -> None:
        for alert in summaries:
            count = alert.output_fields.get("detector.suppressed")
            self.on_event(DeliveryEvent(EventKind.SUPPRESSED, alert_id=alert.id, rule=alert.rule,
                                        count=count if isinstance(count, int) else 0))


@dataclass(frozen=True, slots=True)
class _Batch:
    """What one submit stores in one transaction."""

    alerts: list[Alert]
    state: dict[str, bytes | None]
    summaries: list[Alert]  # of throttle windows that closed, reported once stored


class Dispatching(Protocol):
    """What the stage needs of a dispatcher: in-process threads (`Dispatcher`) or a child (`CourierProcess`)."""

    def start(self) -> None: ...

    def notify(self, rows: Sequence[PendingRow] | None = None) -> None: ...

    def stop(self, timeout: float = 30.0) -> bool: ...


class Delivery:
    """Everything `detector run` needs for alerts, assembled from the settings.

    `with open_delivery(...) as delivery:` starts the dispatcher and, on exit, stops it (letting
    in-flight sends finish), then closes sinks and the outbox.
    """

    def __init__(self, settings: DeliverySettings, outbox: Outbox, sinks: Mapping[str, Sink],
                 on_event: OnEvent = log_event, *, hostname: str | None = None, poll_interval: float = 1.0,
                 dispatcher: Dispatching | None = None) -> None:
        self.settings = settings
        self.outbox = outbox
        self.sinks = dict(sinks)
        self.build = AlertBuilder(hostname, settings.cluster_name)
        self.dispatcher: Dispatching = dispatcher or Dispatcher(outbox, self.sinks, on_event,
                                                                poll_interval=poll_interval)
        self.stage = AlertStage(outbox, Throttle(settings.throttle), self.dispatcher.notify, on_event)
        self.stage.list_rows = isinstance(self.dispatcher, Dispatcher)  # a courier child reads them back

    def alerts_for(self, matches: Sequence[Match], on_error: Callable[[BadInput], None] | None = None) -> list[Alert]:
        """Delivery-ready alerts (enriched, redacted) for an event's matches (see build_alerts).
        A match whose rule no output's route takes is not built: it would be stored nowhere,
        yet its batch would be committed (fsynced) as if it held an alert."""
        router = self.outbox.router
        return build_alerts(self.build, matches, on_error, router.may_take if router is not None else None)

    def submit(self, alerts: Sequence[Alert], state: Mapping[str, bytes | None] | None = None) -> list[Alert]:
        return self.stage.submit(alerts, state)

    def retry_unstored(self) -> list[Alert]:
        return self.stage.retry_unstored()

    def start(self) -> None:
        self.dispatcher.start()

    def close(self, timeout: float = 30.0) -> bool:
        """Stop the dispatcher, close sinks and the outbox; False if a worker did not stop in time."""
        stopped = self.dispatcher.stop(timeout)
        for sink in self.sinks.values():
            sink.close()
        # The last commits (outbox.synchronous: batched) on disk before exit. A disk that refuses
        # now leaves them in the OS's cache: lost only to a power loss, and then with their checkpoint.
        with contextlib.suppress(sqlite3.Error, OSError):
            self.outbox.sync()
        self.outbox.close()
        return stopped

    def __enter__(self) -> Delivery:
        self.start()
        return self

    def __exit__(self, kind: type[BaseException] | None, value: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()


def open_delivery(settings: DeliverySettings, state_dir: str | os.PathLike[str], on_event: OnEvent = log_event,
                  *, hostname: str | None = None, sinks: Mapping[str, Sink] | None = None,
                  poll_interval: float = 1.0, child_setup: Callable[[], None] | None = None) -> Delivery:
    """Open the outbox in `state_dir` and build one sink per output (or use `sinks`); with
    `outbox.dispatch` calling for it, the outputs live in a child process instead (its
    `child_setup` runs first there, e.g. to configure logging), started by `Delivery.start`."""
    router = Router({output.name: output.route for output in settings.outputs})
    outbox = Outbox.in_state_dir(state_dir, settings.outbox, router, on_event)
    if sinks is None and wants_process(settings):
        courier = CourierProcess(settings, os.fspath(state_dir), on_event, poll_interval=poll_interval,
                                 setup=child_setup)
        return Delivery(settings, outbox, {}, on_event, hostname=hostname, dispatcher=courier)
    try:
        built = dict(sinks) if sinks is not None else build_sinks(list(settings.outputs))
    except BaseException:
        outbox.close()
        raise
    return Delivery(settings, outbox, built, on_event, hostname=hostname, poll_interval=poll_interval)
