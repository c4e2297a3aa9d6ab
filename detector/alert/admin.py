"""What `detector send-test-alert` and `detector outbox list|retry|purge` do; the CLI only
parses arguments and prints.

`send_test_alert` goes straight to each output (no outbox, routes or throttling: it tests the
connection and credentials) and reports, per output, success or the exact failure.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from detector.alert.build import CLUSTER_FIELD
from detector.alert.events import DeliveryEvent
from detector.alert.model import Alert, local_time, utc_time
from detector.alert.outbox import DB_NAME, DEFAULT_SETTINGS, Outbox, OutboxRow
from detector.alert.secret import scrub
from detector.alert.settings import OutboxSettings, OutputSettings
from detector.alert.sink import DeliveryError
from detector.alert.sinks import build_sink
from detector.errors import ConfigError, DetectorError
from detector.rules.model import SOURCE, Priority

TEST_RULE = "Detector test alert"


@dataclass(frozen=True, slots=True)
class TestResult:
    """The outcome of the test alert on one output."""

    __test__ = False  # not a pytest test class

    name: str
    ok: bool
    detail: str


def sample_alert(hostname: str | None = None, cluster_name: str | None = None) -> Alert:
    """A realistic alert with a fresh id (so FIFO de-duplication never swallows a re-test); its
    `time`, `evt.time` and `output` come from one integer of nanoseconds, so they agree."""
    nanos = time.time_ns()
    message = ("Test alert from detector: delivery works (user=test-user verb=get "
               "target=default/example resource=pods)")
    fields: dict[str, object] = {
        "evt.time": nanos, "ka.user.name": "test-user", "ka.verb": "get",
        "ka.target.resource": "pods", "ka.target.namespace": "default", "ka.target.name": "example",
        "ka.sourceips": ["127.0.0.1"], "ka.useragent": "detector/send-test-alert",
    }
    if cluster_name:
        fields[CLUSTER_FIELD] = cluster_name
    priority = Priority.NOTICE
    return Alert(
        id=str(uuid.uuid4()), time=utc_time(nanos), rule=TEST_RULE,
        priority=priority.label, priority_level=int(priority), message=message,
        output=f"{local_time(nanos)}: {priority.label} {message}", source=SOURCE,
        tags=("test",), output_fields=fields, hostname=hostname or socket.gethostname(),
        audit_id=str(uuid.uuid4()), stage="ResponseComplete",
    )


def send_test_alert(outputs: Sequence[OutputSettings], only: str | None = None,
                    alert: Alert | None = None) -> list[TestResult]:
    """Send one sample alert through each output (or only the one named `only`)."""
    chosen = [o for o in outputs if only is None or o.name == only]
    if only is not None and not chosen:
        known = ", ".join(o.name for o in outputs) or "none configured"
        raise ConfigError(f"no output named {only!r} (outputs: {known})")
    sample = alert or sample_alert()
    return [_send_one(output, sample) for output in chosen]


def _send_one(output: OutputSettings, alert: Alert) -> TestResult:
    try:
        sink = build_sink(output)
    except DetectorError as exc:
        return TestResult(output.name, False, f"cannot set up: {exc}")
    try:
        sink.send(alert)
    except DeliveryError as exc:
        kind = "retryable" if exc.retryable else "permanent"
        return TestResult(output.name, False, f"{scrub(exc.message, sink.secrets)} ({kind})")
    finally:
        sink.close()
    return TestResult(output.name, True, f"delivered (alert id {alert.id})")


# -- outbox commands ---------------------------------------------------------------------------
def open_outbox(state_dir: str | os.PathLike[str], settings: OutboxSettings = DEFAULT_SETTINGS) -> Outbox:
    """The existing outbox of `state_dir`, for inspection (no routes: it cannot take alerts).
    An operator's retry or purge is fsynced when it returns (synchronous full), whatever the
    engine's setting: a power loss must not undo it."""
    path = Path(state_dir) / DB_NAME
    if not path.is_file():
        raise ConfigError(f"no outbox at {path} (has `detector run` used this state directory?)")
    return Outbox(path, dataclasses.replace(settings, synchronous="full"), on_event=_quiet)


def _quiet(_event: DeliveryEvent) -> None:
    return None


def format_rows(rows: Sequence[OutboxRow]) -> str:
    """A table of rows, one line each, the error last."""
    lines = [f"{'SEQ':>8}  {'OUTPUT':<16} {'STATUS':<9} {'TRIES':>5}  {'CREATED (UTC)':<19}  {'RULE':<32} ERROR"]
    for row in rows:
        created = datetime.fromtimestamp(row.created_at, UTC).strftime("%Y-%m-%d %H:%M:%S")
        lines.append(f"{row.seq:>8}  {row.output:<16} {row.status:<9} {row.attempts:>5}  {created:<19}  "
                     f"{row.rule[:32]:<32} {row.last_error or ''}".rstrip())
    return "\n".join(lines)


def format_counts(outbox: Outbox) -> str:
    """Rows per output and status, and the drop total."""
    lines = [f"{output}: {status}={count}" for (output, status), count in outbox.counts().items()]
    lines.append(f"dropped by bounds (all time): {outbox.dropped_total}")
    return "\n".join(lines)


def outbox_list(outbox: Outbox, output: str | None = None, status: str | None = None,
                limit: int | None = 100) -> list[OutboxRow]:
    return outbox.rows(output, status, limit)


def outbox_retry(outbox: Outbox, output: str | None = None, status: str = "dead",
                 seqs: Sequence[int] | None = None) -> int:
    """Due now, attempts reset; a running dispatcher picks them up within its poll interval."""
    return outbox.retry(output, status, seqs)


def outbox_purge(outbox: Outbox, output: str | None = None, status: str | None = None,
                 seqs: Sequence[int] | None = None) -> int:
    return outbox.purge(output, status, seqs)
