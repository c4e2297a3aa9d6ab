"""Encodings of an alert for humans and machines."""

from __future__ import annotations

import orjson

from detector.alert.model import Alert


def to_json_line(alert: Alert) -> bytes:
    """One compact JSON object and a newline."""
    return orjson.dumps(alert.to_dict(), option=orjson.OPT_APPEND_NEWLINE)


def to_text_line(alert: Alert) -> str:
    """A readable line: time, priority, rule, then the rendered output."""
    return f"{alert.time} {alert.priority:<13} [{alert.rule}] {alert.message}\n"
