"""File output: JSON lines appended to a file, fsynced before an alert counts as delivered.

The file is reopened when it is moved or deleted (log rotation). A crash between the write and
the outbox's "delivered" mark repeats that one line after restart (at-least-once); readers can
drop repeats by `id`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from detector.alert.format import to_json_line
from detector.alert.model import Alert
from detector.alert.secret import Secret
from detector.alert.settings import FileSettings
from detector.alert.sink import DeliveryError
from detector.errors import ConfigError


class FileSink:
    """Appends to `settings.path` (created 0600 if missing)."""

    def __init__(self, settings: FileSettings) -> None:
        self.name = settings.name
        self._path = Path(settings.path)
        self._fsync = settings.fsync
        self._fd: int | None = None
        if not self._path.parent.is_dir():
            raise ConfigError(f"output {settings.name}: directory {self._path.parent} does not exist")

    @property
    def secrets(self) -> Sequence[Secret]:
        return ()

    def encode(self, alert: Alert) -> bytes:
        return to_json_line(alert)

    def send(self, alert: Alert) -> None:
        line = self.encode(alert)
        try:
            fd = self._open()
            written = os.write(fd, line)
            if written != len(line):  # O_APPEND regular files do not short-write, but be loud if they do
                raise OSError(f"short write ({written} of {len(line)} bytes)")
            if self._fsync:
                os.fsync(fd)
        except OSError as exc:
            self.close()
            raise DeliveryError(f"cannot write {self._path}: {exc.strerror or exc}", retryable=True) from None

    def _open(self) -> int:
        if self._fd is not None:
            try:
                if os.stat(self._path).st_ino == os.fstat(self._fd).st_ino:
                    return self._fd
            except FileNotFoundError:
                pass
            self.close()
        self._fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        return self._fd

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
