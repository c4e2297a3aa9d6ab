"""Standard output: one JSON line (or Falco's text line) per alert, flushed."""

from __future__ import annotations

import sys
from collections.abc import Sequence
from typing import BinaryIO

from detector.alert.format import to_json_line, to_text_line
from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import StdoutSettings
from detector.alert.sink import DeliveryError


class StdoutSink:
    """Writes to `stream` (default: the process's stdout)."""

    def __init__(self, settings: StdoutSettings, stream: BinaryIO | None = None) -> None:
        self.name = settings.name
        self._text = settings.format == "text"
        self._stream = stream

    @property
    def secrets(self) -> Sequence[Secret]:
        return ()

    def encode(self, alert: Alert) -> bytes:
        return to_text_line(alert).encode() if self._text else to_json_line(alert)

    def send(self, alert: Alert) -> None:
        stream = self._stream or sys.stdout.buffer
        try:
            stream.write(self.encode(alert))
            stream.flush()
        except BrokenPipeError:
            raise DeliveryError("stdout is closed (broken pipe)", retryable=False) from None
        except (OSError, ValueError) as exc:
            raise DeliveryError(f"cannot write to stdout: {type(exc).__name__}", retryable=True) from None

    def close(self) -> None:
        return None
