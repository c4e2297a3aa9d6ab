"""A Python copy of lumberjack v2's Logger, syscall for syscall, to drive the follower in tests.

Follows shared/k8s/lumberjack.md (and lumberjack.go v2.2.1):

* `write(p)`: one call per event; refused whole if longer than the maximum size; on the first
  write the existing file is appended to unless it is full (the first-open rule); rotation when
  `size + len(p) > max` (strict), the event then goes to the new file;
* rotation: close, `MkdirAll`, stat for the mode, rename to `<prefix>-<UTC stamp><ext>`, create
  the new file with the old mode (chown step), open it without `O_APPEND`;
* mill (prune by MaxBackups then MaxAge, then compress in place: empty `.gz`, data, remove the
  `.log`) after each rotation and at first open. lumberjack runs it on a goroutine; here it runs
  at once (`mill="sync"`), or when the test says so (`mill="manual"`, then `run_mill()`), which
  is how a test makes a backup vanish while the follower still reads it.

Not in lumberjack, for tests: `write_raw` (a short write: bytes without rotation checks, e.g.
half a line) and `copytruncate` (what logrotate does to a file it does not own).
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Literal

MEGABYTE = 1024 * 1024
BACKUP_TIME_FORMAT = "%Y-%m-%dT%H-%M-%S."  # + milliseconds: Go's "2006-01-02T15-04-05.000"
COMPRESS_SUFFIX = ".gz"
DEFAULT_MAX_SIZE = 100  # MB


def format_stamp(when: datetime) -> str:
    """Go's `t.UTC().Format("2006-01-02T15-04-05.000")`."""
    when = when.astimezone(UTC)
    return when.strftime(BACKUP_TIME_FORMAT) + f"{when.microsecond // 1000:03d}"


class TickingClock:
    """A clock that moves `step` forward on each reading: unique backup names however fast we rotate."""

    def __init__(self, start: datetime | None = None, step: timedelta = timedelta(milliseconds=1)) -> None:
        self.now = start or datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)
        self.step = step

    def __call__(self) -> datetime:
        self.now += self.step
        return self.now


class Lumberjack:
    """lumberjack.Logger: `max_size` in MB of `megabyte` bytes (lumberjack's own tests shrink that)."""

    def __init__(
        self, filename: str | os.PathLike[str], *, max_size: int = 0, max_backups: int = 0, max_age: int = 0,
        compress: bool = False, megabyte: int = MEGABYTE, version: Literal["2.2.1", "2.0.0"] = "2.2.1",
        clock: Callable[[], datetime] | None = None, mill: Literal["sync", "manual"] = "sync",
    ) -> None:
        self.filename = os.fspath(filename)
        self.max_size, self.max_backups, self.max_age, self.compress = max_size, max_backups, max_age, compress
        self.megabyte = megabyte
        self.clock = clock or (lambda: datetime.now(UTC))
        self.mill_mode = mill
        self.dir_mode, self.new_mode = (0o755, 0o600) if version == "2.2.1" else (0o744, 0o644)
        self.size = 0
        self.fd: int | None = None
        self.rotations = 0
        dirname = os.path.dirname(self.filename) or "."
        base = os.path.basename(self.filename)
        dot = base.rfind(".")
        self.ext = base[dot:] if dot >= 0 else ""
        self.prefix = base[: len(base) - len(self.ext)]
        self.dir = dirname

    # -- Logger.Write --------------------------------------------------------------------------

    def max(self) -> int:
        return (self.max_size or DEFAULT_MAX_SIZE) * self.megabyte

    def write(self, p: bytes) -> int:
        """`Logger.Write(p)`: one event, never split across files."""
        if len(p) > self.max():
            raise ValueError(f"write length {len(p)} exceeds maximum file size {self.max()}")
        if self.fd is None:
            self._open_existing_or_new(len(p))
        if self.size + len(p) > self.max():
            self.rotate()
        return self._write(p)

    def write_raw(self, data: bytes) -> int:
        """Bytes straight into the current file, no size check: a short write, half a line."""
        if self.fd is None:
            self._open_existing_or_new(len(data))
        return self._write(data)

    def _write(self, data: bytes) -> int:
        assert self.fd is not None
        n = os.write(self.fd, data)
        self.size += n
        return n

    def close(self) -> None:
        if self.fd is not None:
            os.close(self.fd)
            self.fd = None

    def rotate(self) -> None:
        """`rotate()`: close, open new (renaming the old aside), mill."""
        self.close()
        self._open_new()
        self._mill()

    # -- opening -------------------------------------------------------------------------------

    def _open_existing_or_new(self, write_len: int) -> None:
        self._mill()
        try:
            info = os.stat(self.filename)
        except FileNotFoundError:
            self._open_new()
            return
        if info.st_size + write_len >= self.max():
            self.rotate()
            return
        try:
            self.fd = os.open(self.filename, os.O_APPEND | os.O_WRONLY)
        except OSError:
            self._open_new()
            return
        self.size = info.st_size

    def _open_new(self) -> None:
        os.makedirs(self.dir, self.dir_mode, exist_ok=True)
        mode = self.new_mode
        try:
            info = os.stat(self.filename)
        except FileNotFoundError:
            pass
        else:
            mode = info.st_mode & 0o7777
            os.rename(self.filename, self.backup_name())
            self.rotations += 1
            fd = os.open(self.filename, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)  # chown()
            os.close(fd)
            os.chown(self.filename, info.st_uid, info.st_gid)
        self.fd = os.open(self.filename, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, mode)
        self.size = 0

    def backup_name(self) -> str:
        return os.path.join(self.dir, f"{self.prefix}-{format_stamp(self.clock())}{self.ext}")

    # -- mill ----------------------------------------------------------------------------------

    def _mill(self) -> None:
        if self.mill_mode == "sync":
            self.run_mill()

    def old_log_files(self) -> list[tuple[datetime, str]]:
        """Backups (stamp, name), newest first, as `oldLogFiles()`."""
        pattern = re.compile(
            re.escape(self.prefix) + r"-(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})"
            + re.escape(self.ext) + r"(\.gz)?\Z")
        found = []
        try:
            names = os.listdir(self.dir)
        except FileNotFoundError:
            return []
        for name in names:
            match = pattern.match(name)
            if match and os.path.isfile(os.path.join(self.dir, name)):
                stamp = datetime.strptime(match.group(1), "%Y-%m-%dT%H-%M-%S.%f").replace(tzinfo=UTC)
                found.append((stamp, name))
        found.sort(key=lambda item: item[0], reverse=True)
        return found

    def run_mill(self) -> None:
        """`millRunOnce()`: prune by count, then by age, then compress what is left uncompressed."""
        if not self.max_backups and not self.max_age and not self.compress:
            return
        files = self.old_log_files()
        remove: list[str] = []
        if 0 < self.max_backups < len(files):
            preserved: set[str] = set()
            remaining = []
            for stamp, name in files:
                preserved.add(name.removesuffix(COMPRESS_SUFFIX))
                if len(preserved) > self.max_backups:
                    remove.append(name)
                else:
                    remaining.append((stamp, name))
            files = remaining
        if self.max_age > 0:
            cutoff = self.clock() - timedelta(days=self.max_age)
            remove += [name for stamp, name in files if stamp < cutoff]
            files = [(stamp, name) for stamp, name in files if stamp >= cutoff]
        compress = [name for _, name in files if self.compress and not name.endswith(COMPRESS_SUFFIX)]
        for name in remove:
            os.remove(os.path.join(self.dir, name))
        for name in compress:
            path = os.path.join(self.dir, name)
            compress_log_file(path, path + COMPRESS_SUFFIX)

    # -- not lumberjack: logrotate's copytruncate ----------------------------------------------

    def copytruncate(self, backup: str | None = None) -> str:
        """Copy the live file aside (logrotate's dateext name by default) and truncate it in place."""
        stamp = self.clock()
        backup = backup or f"{self.filename}-{stamp:%Y%m%d}-{int(stamp.timestamp())}"
        shutil.copyfile(self.filename, backup)
        os.truncate(self.filename, 0)  # lumberjack's size counter does not notice (lumberjack.md §8E)
        return backup


def compress_log_file(src: str, dst: str) -> None:
    """`compressLogFile(src, dst)`: an empty .gz first, then the data, then the source removed."""
    with open(src, "rb") as source:
        info = os.fstat(source.fileno())
        fd = os.open(dst, os.O_CREAT | os.O_WRONLY | os.O_TRUNC, info.st_mode & 0o7777)  # chown()
        os.close(fd)
        os.chown(dst, info.st_uid, info.st_gid)
        try:
            with open(dst, "wb") as target, gzip.GzipFile(  # Go: default level (6), no name, zero mtime
                    filename="", fileobj=target, mode="wb", compresslevel=6, mtime=0) as gz:
                shutil.copyfileobj(source, gz)
        except BaseException:
            os.remove(dst)
            raise
    os.remove(src)
