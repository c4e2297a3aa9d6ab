"""Throttling: repeats of an alert within a window are counted instead of sent.

The key of an alert is its rule's key fields (`rule`, `priority`, `hostname`, `source`, or any
output field such as `ka.user.name`; missing values count as `<NA>`). The first alert of a key
opens a window and is delivered; repeats until the window ends are suppressed and counted. When
the window ends (`expire`, or the next alert of that key), a summary alert -- same rule,
priority, source and tags, so the same routes take it -- reports "N similar alerts suppressed"
with the window's bounds. A window without repeats closes silently.

A summary is not a detection, and any Falco consumer can tell it apart: its tags add
SUMMARY_TAG (falcosidekick, Falco Talon and SIEM rules filter on tags), its output fields hold
`detector.summary: true`, its `audit_id` is empty (no one request) and its `time` and
`evt.time` are the window's end. The rule name is kept, so that routes and per-rule views that
name the rule still take it.

Windows are state, kept in memory and written to the outbox with the alerts they decided about
(state keys `throttle/<key hash>`, in the same transaction), so a restart resumes every open
window and a re-evaluated event after a crash is decided the same way.
"""

from __future__ import annotations

import fnmatch
import hashlib
import threading
import uuid
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from decimal import Decimal
from typing import Any

import orjson

from detector.alert.model import Alert, local_time, utc_time
from detector.alert.settings import ThrottleSettings

STATE_PREFIX = "throttle/"
SUMMARY_TAG = "detector_summary"
SUMMARY_FIELD = "detector.summary"
NA = "<NA>"
_ATTRIBUTES = ("rule", "priority", "hostname", "source")
_SUMMARY_NAMESPACE = uuid.UUID("2f4e1c3a-8b7d-4e6f-9a1b-3c5d7e9f1a2b")
StateChanges = dict[str, bytes | None]


@dataclass(slots=True)
class Window:
    """One open window: what the summary needs, and how many repeats it has swallowed."""

    rule: str
    priority: str
    priority_level: int
    tags: list[str]
    source: str
    hostname: str
    key: dict[str, str]
    first_id: str
    start: float
    seconds: float
    suppressed: int = 0

    @property
    def end(self) -> float:
        return self.start + self.seconds


class Throttle:
    """Decides which alerts pass; thread-safe (the engine and a timer may both call it)."""

    def __init__(self, settings: ThrottleSettings) -> None:
        self.settings = settings
        self._windows: dict[str, Window] = {}
        self._per_rule: dict[str, tuple[float, tuple[str, ...]]] = {}
        self._lock = threading.Lock()

    @property
    def enabled(self) -> bool:
        return self.settings.window_seconds > 0 or any(o.window_seconds > 0 for o in self.settings.overrides)

    def load(self, state: Mapping[str, bytes]) -> None:
        """Resume the windows stored under `throttle/` state keys."""
        with self._lock:
            for key, value in state.items():
                if key.startswith(STATE_PREFIX):
                    self._windows[key] = Window(**orjson.loads(value))

    def admit(self, alerts: Sequence[Alert], now: float) -> tuple[list[Alert], StateChanges]:
        """The alerts to deliver (passed ones, preceded by summaries of windows they close) and
        the state changes to store with them."""
        out: list[Alert] = []
        changes: StateChanges = {}
        with self._lock:
            for alert in alerts:
                seconds, fields = self._rule_settings(alert.rule)
                if seconds <= 0:
                    out.append(alert)
                    continue
                key_values = {name: _key_value(alert, name) for name in fields}
                state_key = STATE_PREFIX + _digest(alert.rule, key_values)
                window = self._windows.get(state_key)
                if window is not None and now < window.end:
                    window.suppressed += 1
                    changes[state_key] = _encode(window)
                    continue
                if window is not None and window.suppressed:
                    out.append(summary_alert(window, now))
                window = Window(alert.rule, alert.priority, alert.priority_level, list(alert.tags), alert.source,
                                alert.hostname, key_values, alert.id, now, seconds)
                self._windows[state_key] = window
                changes[state_key] = _encode(window)
                out.append(alert)
        return out, changes

    def expire(self, now: float) -> tuple[list[Alert], StateChanges]:
        """Close every window that has ended: summaries for those with repeats."""
        out: list[Alert] = []
        changes: StateChanges = {}
        with self._lock:
            for state_key, window in list(self._windows.items()):
                if now >= window.end:
                    del self._windows[state_key]
                    changes[state_key] = None
                    if window.suppressed:
                        out.append(summary_alert(window, window.end))
        return out, changes

    def _rule_settings(self, rule: str) -> tuple[float, tuple[str, ...]]:
        found = self._per_rule.get(rule)
        if found is None:
            found = (self.settings.window_seconds, self.settings.key_fields)
            for override in self.settings.overrides:
                if any(fnmatch.fnmatchcase(rule, pattern) for pattern in override.rules):
                    found = (override.window_seconds, override.key_fields)
                    break
            self._per_rule[rule] = found
        return found


def summary_alert(window: Window, end: float) -> Alert:
    """The "N similar alerts suppressed" alert of a closed window; its id is stable, its
    `time` and `evt.time` are the window's end, to the nanosecond."""
    key = ", ".join(f"{name}={value}" for name, value in window.key.items())
    end_nanos = _nanos(end)
    start_iso, end_iso = utc_time(_nanos(window.start)), utc_time(end_nanos)
    message = (f"{window.suppressed} similar alerts suppressed in a {window.seconds:g}s window "
               f"({start_iso} to {end_iso}; {key})")
    fields: dict[str, Any] = {"evt.time": end_nanos, SUMMARY_FIELD: True}
    fields.update((name, value) for name, value in window.key.items() if name not in _ATTRIBUTES)
    fields.update({"detector.suppressed": window.suppressed, "detector.window_seconds": window.seconds,
                   "detector.window_start": start_iso, "detector.window_end": end_iso,
                   "detector.first_alert_id": window.first_id})
    return Alert(
        id=str(uuid.uuid5(_SUMMARY_NAMESPACE, f"{window.first_id}\x00{window.start!r}")),
        time=end_iso, rule=window.rule, priority=window.priority, priority_level=window.priority_level,
        message=message, output=f"{local_time(end_nanos)}: {window.priority} {message}", source=window.source,
        tags=tuple(sorted({*window.tags, SUMMARY_TAG})), output_fields=fields, hostname=window.hostname,
        audit_id="", stage="",
    )


def _key_value(alert: Alert, name: str) -> str:
    value = getattr(alert, name) if name in _ATTRIBUTES else alert.output_fields.get(name)
    if value is None:
        return NA
    if isinstance(value, list | tuple):
        return ",".join(str(v) for v in value)
    return str(value)


def _digest(rule: str, key: Mapping[str, str]) -> str:
    return hashlib.sha256(orjson.dumps([rule, list(key.items())])).hexdigest()[:32]


def _encode(window: Window) -> bytes:
    return orjson.dumps(asdict(window))


def _nanos(seconds: float) -> int:
    """Whole nanoseconds of a clock reading, from its shortest decimal form (1000.1 is
    1000100000000, not the float's 1000099999999.999...)."""
    return round(Decimal(repr(seconds)) * 1_000_000_000)
