"""A sink that keeps alerts in memory: the shipped test double (and `test-rule`'s sink).

It can be told to fail: `fail_with` (a `DeliveryError`) is raised by every `send` while set.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence

from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.sink import DeliveryError


class MemorySink:
    """Collects delivered alerts in `alerts`, in delivery order."""

    def __init__(self, name: str = "memory") -> None:
        self.name = name
        self.alerts: list[Alert] = []
        self.attempts = 0
        self.fail_with: DeliveryError | None = None
        self._lock = threading.Lock()

    @property
    def secrets(self) -> Sequence[Secret]:
        return ()

    def send(self, alert: Alert) -> None:
        with self._lock:
            self.attempts += 1
            if self.fail_with is not None:
                raise self.fail_with
            self.alerts.append(alert)

    def ids(self) -> list[str]:
        with self._lock:
            return [a.id for a in self.alerts]

    def close(self) -> None:
        return None
