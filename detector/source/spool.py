"""The webhook input's spool: accepted request bodies as lines of a local, lumberjack-style log.

A receiver (source/webhook.py) answers 2xx only once `Spool.append` has returned, that is once
its line is on disk (written and fsynced). The spool is then followed by the ordinary file
Follower and checkpointed with the alerts, exactly like kube-apiserver's audit.log: one seam
for "commit, then acknowledge", and a crash after the answer loses nothing.

* Concurrent appends share one fsync (group commit): each writer waits until an fsync that
  started after its write has finished.
* Past `rotate_bytes` the file is renamed `audit-<UTC stamp>.log` (lumberjack's name, which
  the Follower knows) and a new one is created; the directory is fsynced, so the new file
  survives a power cut too.
* A write that fails half-way (disk full) leaves a torn fragment; the next write starts with a
  newline so that fragment stays a line of its own (reported by the parser) and never glues
  onto an accepted line.
* `prune(position)` deletes backups entirely behind the committed checkpoint, never the
  checkpointed file itself.
"""

from __future__ import annotations

import errno
import os
import threading
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from detector.source.backups import STAMP_FORMAT, BackupNames
from detector.source.position import Position, fingerprint

SPOOL_DIR = "spool"
SPOOL_NAME = "audit.log"
ROTATE_BYTES = 64 << 20
DISK_RESERVE_BYTES = 16 << 20  # left free for the state database: a full spool must not stop commits

OnEvent = Callable[[str, dict[str, object]], None]


@dataclass(frozen=True, slots=True)
class SpoolMark:
    """Where an appended line ends: the spool file (device, inode) and the offset after it."""

    dev: int
    inode: int
    offset: int


class SpoolFull(OSError):
    """The spool's file system has no room for this line (answered 507, retried by clients)."""


def spool_path(state_dir: str) -> str:
    """Where the spool of a state directory lives."""
    return os.path.join(state_dir, SPOOL_DIR, SPOOL_NAME)


class Spool:
    """Appends whole lines durably to `path`, rotating past `rotate_bytes`. Thread-safe."""

    def __init__(self, path: str, *, rotate_bytes: int = ROTATE_BYTES, reserve_bytes: int = DISK_RESERVE_BYTES,
                 on_event: OnEvent | None = None) -> None:
        self.path = path
        self.names = BackupNames(path)
        self._rotate_bytes = rotate_bytes
        self._reserve = reserve_bytes
        self._event = on_event or (lambda _name, _fields: None)
        self._cond = threading.Condition()
        self._written = self._synced = 0  # sequence numbers of appends
        self._syncing = False
        self._torn = False  # the last write failed half-way: start the next one on a new line
        os.makedirs(os.path.dirname(path) or ".", mode=0o700, exist_ok=True)
        self._fd = self._open()
        st = os.fstat(self._fd)
        self._size, self._ident = st.st_size, (st.st_dev, st.st_ino)

    def append(self, line: bytes) -> SpoolMark:
        """Write `line` (ending in a newline, holding no other) and return once it is fsynced.
        Raises SpoolFull or OSError: then the line may be on disk, or part of it (see above).
        Returns where the line ends (the kafka input commits an offset once the checkpoint is
        past it); `line` may also be several whole lines, written and fsynced together."""
        with self._cond:
            self._write(line)
            self._written += 1
            seq = self._written
            mark = SpoolMark(self._ident[0], self._ident[1], self._size)
        self._sync_through(seq)
        return mark

    def close(self) -> None:
        with self._cond:
            while self._syncing:
                self._cond.wait()
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    # -- writing -------------------------------------------------------------------------------
    def _write(self, line: bytes) -> None:
        data = b"\n" + line if self._torn else line
        self._check_room(len(data))
        view = memoryview(data)
        written = 0
        try:
            while written < len(data):
                written += os.write(self._fd, view[written:])
        except OSError as exc:
            self._size += written
            if written:
                self._torn = True
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise SpoolFull(exc.errno, f"no space left for the spool in {os.path.dirname(self.path)}") from None
            raise
        self._size += written
        self._torn = False

    def _check_room(self, size: int) -> None:
        st = os.fstatvfs(self._fd)
        free = st.f_bavail * st.f_frsize
        if free < size + self._reserve:
            raise SpoolFull(errno.ENOSPC, f"{free} bytes free in {os.path.dirname(self.path)}, "
                                          f"{size} needed plus {self._reserve} kept for the state database")

    def _sync_through(self, seq: int) -> None:
        """Return once an fsync that began after append number `seq` was written has finished."""
        with self._cond:
            while self._synced < seq:
                if self._syncing:
                    self._cond.wait()
                    continue
                self._syncing = True
                target, fd = self._written, self._fd
                self._cond.release()
                try:
                    os.fsync(fd)
                finally:
                    self._cond.acquire()
                    self._syncing = False
                    self._cond.notify_all()
                self._synced = max(self._synced, target)
                if self._size >= self._rotate_bytes:
                    self._rotate()

    def _rotate(self) -> None:
        """Under the lock, with every write so far fsynced: rename, then start a new file."""
        os.fsync(self._fd)
        self._synced = self._written
        backup = self._backup_name(datetime.now(UTC))
        os.rename(self.path, backup)
        os.close(self._fd)
        self._fd = self._open()
        self._size, self._torn = 0, False
        st = os.fstat(self._fd)
        self._ident = (st.st_dev, st.st_ino)
        self._event("spool_rotated", {"backup": backup})

    def _backup_name(self, now: datetime) -> str:
        directory, stem = os.path.dirname(self.path), os.path.splitext(os.path.basename(self.path))[0]
        while True:  # two rotations within a millisecond: the later one takes the next stamp
            stamp = now.strftime(STAMP_FORMAT)[:-3]
            name = os.path.join(directory, f"{stem}-{stamp}.log")
            if not os.path.exists(name):
                return name
            now += timedelta(milliseconds=1)

    def _open(self) -> int:
        fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, 0o600)
        dir_fd = os.open(os.path.dirname(self.path) or ".", os.O_RDONLY | os.O_DIRECTORY)
        try:
            os.fsync(dir_fd)  # the new name is durable before any line in it is acknowledged
        finally:
            os.close(dir_fd)
        return fd

    # -- pruning ---------------------------------------------------------------------------------
    def prune(self, committed: Position | None) -> list[str]:
        """Delete the backups that come before the file `committed` is in (its alerts and
        checkpoint are stored: nothing in them is needed again). Returns the deleted paths."""
        if committed is None:
            return []
        backups = self._backups()
        ident = committed.identity
        held = None  # the stamp of the checkpointed backup; "" when it is the live file
        for stamp, path, st in backups:
            if (st.st_dev, st.st_ino) == (ident.dev, ident.inode) and _same_head(path, ident.fingerprint,
                                                                                 ident.fingerprint_len):
                held = stamp
                break
        if held is None:
            try:
                st = os.stat(self.path)
            except OSError:
                return []
            if (st.st_dev, st.st_ino) != (ident.dev, ident.inode):
                return []  # where the checkpoint is cannot be proven: keep everything
            held = "~"  # after every stamp
        deleted = []
        for stamp, path, _st in backups:
            if stamp < held:
                try:
                    os.unlink(path)
                except FileNotFoundError:
                    continue
                deleted.append(path)
        if deleted:
            self._event("spool_pruned", {"deleted": len(deleted), "before": held})
        return deleted

    def _backups(self) -> list[tuple[str, str, os.stat_result]]:
        directory = os.path.dirname(self.path) or "."
        found = []
        for name in os.listdir(directory):
            stamp = self.names.stamp_of(name)
            if stamp is None or name.endswith(".gz"):
                continue
            path = os.path.join(directory, name)
            try:
                found.append((stamp, path, os.stat(path)))
            except FileNotFoundError:
                continue
        return sorted(found)

    def disk_bytes(self) -> int:
        """Bytes of the live spool file and its backups."""
        total = self._size
        for _stamp, _path, st in self._backups():
            total += st.st_size
        return total


def _same_head(path: str, expected: str, length: int) -> bool:
    try:
        with open(path, "rb") as f:
            return fingerprint(f.read(length)) == expected
    except OSError:
        return False
