"""The backups lumberjack (kube-apiserver's log writer) leaves beside the live file.

`audit.log` is rotated to `audit-2006-01-02T15-04-05.000.log` (UTC rotation time, which sorts
as text), then maybe compressed in place to `audit-<ts>.log.gz` (the `.log` is removed once the
`.gz` is complete) and pruned oldest first by count and age. See shared/k8s/lumberjack.md §4, §6.

A name tells when its file ended, never when it began. The file that replaced it began at that
same moment with the event that triggered the rotation, stamped just before it was written; so
`follows(stamp, head)` can tell "the file right after the one rotated at `stamp`" from a later
one by the `stageTimestamp` of its first line (the one place the source layer reads into a
line: one top-level key of one line, and only when a resume needs the proof).
"""

from __future__ import annotations

import gzip
import json
import os
import re
import stat
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from detector.source.position import FileIdentity, fingerprint

GZ_SUFFIX = ".gz"
STAMP_FORMAT = "%Y-%m-%dT%H-%M-%S.%f"  # Go's "2006-01-02T15-04-05.000" (the regex enforces 3 digits)
_STAMP = r"(\d{4}-\d{2}-\d{2}T\d{2}-\d{2}-\d{2}\.\d{3})"
GZ_ERRORS = (OSError, EOFError, zlib.error)  # gzip reports corruption with all three
_MAX_READS = 8  # directory reads until two agree (a rotation takes microseconds; a read of 1000 names ~1 ms)
_STAMP_GRAIN = timedelta(milliseconds=1)  # a name's stamp is the rotation time cut to the millisecond
FIRST_LINE_BYTES = 1 << 16  # read this much for a first line, then up to the line limit


@dataclass(frozen=True, slots=True)
class Backup:
    """One rotated file, as `.log`, `.log.gz` or both (while it is being compressed)."""

    stamp: str  # rotation time from the name; text order is time order
    log: str | None  # path of the uncompressed backup, if it was there
    gz: str | None  # path of the compressed backup, if it was there
    dev: int  # of the uncompressed file (0 when there is none)
    inode: int
    size: int  # bytes on disk (the .log if present, else the .gz)
    data_size: int | None  # bytes of data: the .log's size, or the .gz's recorded size (None if unreadable)

    @property
    def name(self) -> str:
        """The path to show in messages: the `.log` if there is one."""
        return self.log or self.gz or ""


class BackupNames:
    """The backup naming scheme of one followed path: `<prefix>-<stamp><ext>[.gz]`."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.directory = os.path.dirname(path) or "."
        self.name = os.path.basename(path)
        dot = self.name.rfind(".")  # Go's filepath.Ext: from the last dot ("" if none; ".log" for ".log")
        ext = self.name[dot:] if dot >= 0 else ""
        prefix = self.name[: len(self.name) - len(ext)]
        self._pattern = re.compile(re.escape(prefix) + "-" + _STAMP + re.escape(ext) + r"(\.gz)?\Z")

    def stamp_of(self, name: str) -> str | None:
        """The rotation stamp in a backup's base name, or None if it is not one of ours."""
        found = self._pattern.match(name)
        if found is None:
            return None
        try:
            datetime.strptime(found.group(1), STAMP_FORMAT)
        except ValueError:
            return None
        return found.group(1)

    def is_related(self, name: str) -> bool:
        """True for the live file's base name and for backup names (cheap: for the watcher)."""
        return name == self.name or self._pattern.match(name) is not None

    def scan(self, after: str | None = None) -> list[Backup]:
        """The backups present now with a stamp above `after`, oldest first; [] if no directory.

        A directory read while lumberjack renames into it may miss a new name yet show a newer
        one (readdir only promises the entries that stay put), so the names are read until two
        reads agree: then every name created before one that is listed is listed too.
        """
        names = self._names(after)
        for _ in range(_MAX_READS):
            again = self._names(after)
            if again == names:
                break
            names = again
        found: dict[str, dict[bool, tuple[str, os.stat_result]]] = {}
        for name, stamp in names.items():
            path = os.path.join(self.directory, name)
            try:
                info = os.stat(path, follow_symlinks=False)
            except OSError:
                continue  # removed since
            if stat.S_ISREG(info.st_mode):
                found.setdefault(stamp, {})[name.endswith(GZ_SUFFIX)] = (path, info)
        backups = []
        for stamp in sorted(found):
            log, gz = found[stamp].get(False), found[stamp].get(True)
            if log is not None:
                path, info = log
                backups.append(Backup(stamp, path, gz[0] if gz else None, info.st_dev, info.st_ino, info.st_size,
                                      info.st_size))
            elif gz is not None:
                path, info = gz
                backups.append(Backup(stamp, None, path, 0, 0, info.st_size, gz_data_size(path, info.st_size)))
        return backups

    def newest_stamp(self) -> str | None:
        """The stamp of the newest backup present, None if there is none."""
        return max(self._names(None).values(), default=None)

    def _names(self, after: str | None) -> dict[str, str]:
        """One read of the directory: {name: stamp} of backup names with a stamp above `after`."""
        names = {}
        try:
            with os.scandir(self.directory) as entries:
                for entry in entries:
                    found = self._pattern.match(entry.name)
                    if found is None or (after is not None and found.group(1) <= after):
                        continue
                    stamp = self.stamp_of(entry.name)
                    if stamp is not None:
                        names[entry.name] = stamp
        except OSError:
            return {}
        return names


def gz_data_size(path: str, size: int) -> int | None:
    """The uncompressed size a complete .gz records in its last 4 bytes (modulo 4 GiB: one rotated
    file is far smaller), or None if it cannot be read."""
    if size < 18:  # header (10) + trailer (8)
        return None
    try:
        with open(path, "rb") as stream:
            stream.seek(size - 4)
            return int.from_bytes(stream.read(4), "little")
    except OSError:
        return None


def read_gz_head(path: str, size: int) -> bytes | None:
    """The first `size` decompressed bytes of a .gz file (fewer if shorter), None if unreadable."""
    try:
        with gzip.open(path, "rb") as stream:
            return stream.read(size)
    except GZ_ERRORS:
        return None


def read_head(path: str, size: int) -> bytes | None:
    """The first `size` bytes of a plain file (fewer if shorter), None if unreadable."""
    try:
        with open(path, "rb") as stream:
            return stream.read(size)
    except OSError:
        return None


def is_match(identity: FileIdentity, head: bytes | None) -> bool:
    """Whether a file whose first bytes are `head` has `identity`'s fingerprint."""
    if head is None or len(head) < identity.fingerprint_len:
        return False
    return fingerprint(head[: identity.fingerprint_len]) == identity.fingerprint


def find_backup(backups: list[Backup], identity: FileIdentity) -> tuple[Backup, bool] | None:
    """The backup holding `identity`'s file and whether it is the `.gz` member, or None.

    An uncompressed backup is the same inode as the file was (rename keeps it) and must also
    match the fingerprint (inodes are reused). A compressed one can only match by fingerprint,
    and only once its `.log` twin is gone: before that the `.gz` may be incomplete. Newest
    first, since the file we look for is usually recent; if fingerprints collide (a short
    fingerprint of identical first lines), the oldest match wins: a repeat beats a loss.
    """
    match: tuple[Backup, bool] | None = None
    for backup in reversed(backups):
        if backup.log is not None:
            if (backup.dev, backup.inode) == (identity.dev, identity.inode) and is_match(
                    identity, read_head(backup.log, identity.fingerprint_len)):
                return backup, False
        elif backup.gz is not None and identity.fingerprint_len > 0 and is_match(
                identity, read_gz_head(backup.gz, identity.fingerprint_len)):
            match = backup, True
    return match


def stamp_time(stamp: str) -> datetime:
    """The rotation time (UTC) a backup stamp stands for, cut to the millisecond as in the name."""
    return datetime.strptime(stamp, STAMP_FORMAT).replace(tzinfo=UTC)


def first_event_time(head: bytes) -> datetime | None:
    """The `stageTimestamp` of the audit event on the first line of `head`, or None if that line
    is incomplete, not a JSON object or has no timezone-aware `stageTimestamp` (legacy format)."""
    end = head.find(b"\n")
    if end < 0:
        return None
    try:
        doc = json.loads(head[:end])
    except (ValueError, RecursionError):  # not JSON (UnicodeDecodeError is a ValueError), or nested too deep
        return None
    value = doc.get("stageTimestamp") if isinstance(doc, dict) else None
    if not isinstance(value, str):
        return None
    try:
        when = datetime.fromisoformat(value)
    except ValueError:
        return None
    return when.astimezone(UTC) if when.tzinfo is not None else None


def follows(stamp: str, first: datetime | None) -> bool:
    """Whether a file whose first event is stamped `first` began when the file stamped `stamp`
    was rotated, i.e. is the very next file: that first event was stamped before the rotation
    (it triggered it). A later file begins with an event stamped after the next rotation. The
    one way to be fooled is an event held back longer than a whole file takes to fill."""
    return first is not None and first < stamp_time(stamp) + _STAMP_GRAIN


def first_line(read: Callable[[int], bytes | None], limit: int) -> bytes:
    """The first bytes of a file up to and including its first newline if that is within
    `limit` bytes (else what was read): `read(size)` returns its first `size` bytes."""
    head = read(min(FIRST_LINE_BYTES, limit)) or b""
    if b"\n" not in head and len(head) < limit and len(head) == min(FIRST_LINE_BYTES, limit):
        head = read(limit) or b""
    return head


def backup_first_line(backup: Backup, limit: int) -> bytes:
    """The first line of a backup: from its `.log` while there is one, else from its `.gz`."""
    if backup.log is not None:
        log = backup.log
        head = first_line(lambda size: read_head(log, size), limit)
        if head:
            return head
    gz = backup.gz or f"{backup.log}{GZ_SUFFIX}"  # the .log may have been compressed since the listing
    return first_line(lambda size: read_gz_head(gz, size), limit)
