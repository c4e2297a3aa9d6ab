"""Follow the live audit.log across rotations, never losing or repeating a line.

kube-apiserver writes through lumberjack (shared/k8s/lumberjack.md): the file is renamed to
`audit-<UTC stamp>.log`, a new `audit.log` is created, the backup may be gzipped in place and
pruned. The follower therefore:

* detects rotation by comparing the (dev, inode) of the open file with `stat(path)`, one stat
  per `read()` call, and drains the old file through its open descriptor before switching;
* when it notices a rotation it opens the new file at once and keeps it open too: a file it
  has opened is never reopened by name, so compression or pruning cannot take it away;
* reads the backups made in between (several rotations between two looks, or while it was
  down) oldest first, by the stamp in their names; one that vanished before it could be
  opened is reported (`data_lost`, with its size), never skipped silently;
* resumes from a `Position`: the same file at the path (same inode *and* fingerprint: inodes
  are reused), else the backup holding it (`.log` by inode and fingerprint, `.log.gz` by the
  fingerprint of its decompressed first bytes), then the newer backups, then the live file;
  if that file is gone, it is silent about the files after it only when the first one left is
  provably the next (`backups.follows`), else it reports `gap_possible`;
* returns a line only once its newline has arrived (see `lines.LineSplitter`).

After a rotated file is finished the order is always: listed backups (by name), then the file
held open since the last look at the path, then a fresh look (open the path, then list the
backups: a rotation in between shows up in the list and goes first).

Notable things go to `on_event(name, fields)` (names and fields in `EVENTS`); lines that
cannot be returned go to `on_bad` as `BadInput` (`line_too_long`, `blank_line`, `torn_line`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal

from detector.errors import BadInput, Location
from detector.source.backups import (
    GZ_ERRORS,
    GZ_SUFFIX,
    Backup,
    BackupNames,
    backup_first_line,
    find_backup,
    first_event_time,
    first_line,
    follows,
    is_match,
    read_gz_head,
    read_head,
    stamp_time,
)
from detector.source.lines import Line, LineSplitter
from detector.source.openfile import BLOCK_BYTES, OpenFile
from detector.source.position import FINGERPRINT_BYTES, FileIdentity, Position

__all__ = ["EVENTS", "FileIdentity", "Follower", "Line", "Position"]

OnBad = Callable[[BadInput], None]
OnEvent = Callable[[str, dict[str, object]], None]

# A checkpointed file not among the backups is looked for this many times, this far apart,
# before it counts as lost (see Follower._find_resumed).
RESUME_LOOKS, RESUME_LOOK_SECONDS = 5, 0.2

EVENTS = (
    "follow_started",  # path, offset, start ("end" | "beginning" | "resume")
    "rotation_followed",  # path, backup (the old file's new name, None if already gone), offset (bytes read)
    "file_truncated",  # path, offset, size, bytes_lost (a lower bound), rewritten (grown again past us)
    "backup_resumed",  # path, offset, compressed: the saved position was found in a backup
    "backup_opened",  # path, compressed: a backup newer than the last file read, read in full
    "resume_file_finished",  # path, identity, next: the checkpointed file was read to its end, then pruned
    "data_lost",  # path, identity, bytes_lost (None if unknown), reason (see _lose callers)
    # path, identity, backups_left, reason: files may have been pruned unseen. "held_file_pruned": a
    # rotated file was pruned before we noticed (we lag); "resume_file_pruned": the checkpointed
    # file is gone and the first file left is not provably the next one (plus checkpoint,
    # rotated_at, next, next_first_event: see Follower._resume_gap)
    "gap_possible",
    "file_missing",  # path
    "file_appeared",  # path (read from its beginning)
    "torn_line",  # path, bytes: a file ended inside a line (also sent to on_bad)
    "read_error",  # path, error
    "open_failed",  # path, error: the path exists but cannot be followed (permission, not a file)
)


def _ignore(name: str, fields: dict[str, object]) -> None:
    """The default `on_event`."""


@dataclass(frozen=True, slots=True)
class _Seen:
    """A file by inode and first bytes: one we finished, or one seen at the path but not held."""

    dev: int
    ino: int
    head: bytes
    offset: int = 0
    lineno: int | None = 0


class Follower:
    """Follow `path` (a lumberjack-rotated log) as complete lines with checkpointable positions.

    `start_at` applies to a first start (no `resume`) when the file exists: "end" skips what is
    there (and the rest of a line in progress), "beginning" reads it (not older backups). A
    file missing at start is read from its beginning when it appears: nothing was written
    before we looked. `read()` never blocks; call it on every wake-up (see `watch.Waker`) and
    again at once while it returns `max_lines` lines.
    """

    def __init__(
        self, path: str, *, start_at: Literal["end", "beginning"] = "end", resume: Position | None = None,
        on_bad: OnBad, on_event: OnEvent | None = None, max_line_bytes: int = 1 << 20,
    ) -> None:
        self._path = os.fspath(path)
        self._names = BackupNames(self._path)
        self._on_bad = on_bad
        self._event = on_event or _ignore
        self._splitter = LineSplitter(max_line_bytes, on_bad)
        self._max_line = max_line_bytes
        self._cur: OpenFile | None = None
        self._next: OpenFile | None = None  # the file at the path at our last look, held for after the queue
        self._queue: list[Backup] = []  # backups to read in full, oldest first
        self._mark: str | None = None  # stamp of the newest backup read, or known to be older
        self._expect: _Seen | None = None  # at the path when the held file was seen rotated
        self._finished: _Seen | None = None  # the last file read to its end
        self._ready: list[Line] = []  # split but not returned yet (max_lines)
        self._pos: Position | None = None
        self._missing = self._open_failed = self._closed = False
        self._lost = self._rotations = 0
        if resume is not None:
            self._resume(resume)
        else:
            self._start(start_at)

    # -- public ------------------------------------------------------------------------------

    def read(self, max_lines: int = 10_000) -> list[Line]:
        """Every complete line available now, up to `max_lines`, in file order. Never blocks."""
        out: list[Line] = []
        if self._closed:
            return out
        self._take(out, max_lines)
        may_stat = True  # one stat of the path per call: read() runs on every wake-up
        while len(out) < max_lines:
            f = self._cur
            if f is None:
                if not self._open_next():
                    break
                may_stat = False  # just looked
                continue
            if may_stat:
                may_stat = False
                if f.live and not self._check_live(f):
                    break
                if not f.live and self._next is not None and self._expect is None:
                    self._watch_next(self._next)
            at_end = self._pump(f, max_lines - len(out))
            self._take(out, max_lines)
            if self._ready or not at_end:
                continue  # out is full, or there is more to read
            if f.live:
                break  # caught up with the writer
            self._finish(f)
        return out

    def close(self) -> None:
        """Release the open files; `read()` returns nothing afterwards."""
        for f in (self._cur, self._next):
            if f is not None:
                f.close()
        self._cur = self._next = None
        self._closed = True

    def __enter__(self) -> Follower:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def position(self) -> Position | None:
        """After the last line returned (or where reading started); None until a file was seen.

        Checkpoint this (or the last handled `Line.position`) once the returned lines are handled.
        """
        return self._pos

    @property
    def is_open(self) -> bool:
        """A file is open for reading (False while the log is missing or cannot be opened)."""
        return self._cur is not None and not self._closed

    @property
    def lost_bytes(self) -> int:
        """Bytes known to be lost (truncated before read, backups pruned before read); a lower bound."""
        return self._lost

    @property
    def rotations(self) -> int:
        """Rotations of the live file followed (the old file drained, then the next one read)."""
        return self._rotations

    @property
    def lag_bytes(self) -> int:
        """Bytes written but not read yet, best effort (as of the last stat; .gz counted compressed)."""
        lag = sum(backup.size for backup in self._queue)
        if self._next is not None:
            lag += self._next.size
        f = self._cur
        if f is not None and f.gz is None:
            lag += max(0, f.size - f.offset)
        return lag

    # -- starting ----------------------------------------------------------------------------

    def _start(self, start_at: str) -> None:
        live = self._open_path()  # before listing: a rotation in between shows up in the list
        self._mark = self._names.newest_stamp()  # what is there now is older than what comes
        if live is None:
            self._note_missing()
            return
        offset = live.size if start_at == "end" else 0
        self._use(live, offset)
        if offset and live.read_head(offset)[-1:] != b"\n":
            self._splitter.skip_current_line()  # it began before we started: not ours
        self._event("follow_started", {"path": self._path, "offset": offset, "start": start_at})

    def _resume(self, pos: Position) -> None:
        ident = pos.identity
        live = self._open_path()
        if live is not None and (live.dev, live.ino) == (ident.dev, ident.inode) and is_match(
                ident, live.read_head(ident.fingerprint_len)):
            self._mark = self._names.newest_stamp()
            offset = pos.offset
            if live.size < offset:  # truncated while we were down
                self._report_truncated(live, live.size, None, rewritten=False)
                offset = 0
            self._use(live, offset)
            self._event("follow_started", {"path": self._path, "offset": offset, "start": "resume"})
            return
        backups, found = self._find_resumed(ident)
        if found is not None:
            backup, compressed = found
            f = self._open_member(backup.gz if compressed else backup.log, backup.stamp, compressed)
            if f is not None:
                self._plan(backups, backup.stamp, live)
                self._mark = backup.stamp
                self._use(f, pos.offset)
                self._event("backup_resumed", {"path": f.path, "offset": pos.offset, "compressed": compressed})
                return
        # Gone (pruned, or not a lumberjack backup). Pruning removes the oldest first, so every
        # backup still here is newer than it, unless its own name tells its stamp.
        own = self._stamp_of(pos.path)
        stamp = own
        if pos.offset == 0 and own is not None:
            stamp = _just_before(own)  # nothing was read from it: a backup of that name is read whole
        self._plan(backups, stamp, live)
        self._mark = stamp
        name, name_stamp, first = self._first_left()
        whole = own is not None and name_stamp == own  # unrecognised, but here by name: read whole
        if pos.complete:
            self._event("resume_file_finished", {"path": pos.path, "identity": str(ident), "next": name})
        elif (pos.offset or ident.fingerprint_len) and not whole:  # offset 0: it had bytes we never read
            self._lose(pos.path, str(ident), None, "resume_file_gone")
        if not whole and (own is None or not follows(own, first)):
            self._resume_gap(pos, own, name, first)

    def _first_left(self) -> tuple[str | None, str | None, datetime | None]:
        """The file a resume reads first: its name, backup stamp (None for the live file) and the
        time of its first event (None if unknown); all None when there is no file."""
        if self._queue:
            backup = self._queue[0]
            return backup.name, backup.stamp, first_event_time(backup_first_line(backup, self._max_line))
        if self._next is not None:
            held = self._next
            return held.path, None, first_event_time(first_line(held.read_head, self._max_line))
        return None, None, None

    def _resume_gap(self, pos: Position, own: str | None, name: str | None, first: datetime | None) -> None:
        """The checkpointed file is gone and nothing proves that the first file left came right
        after it: files in between may have been pruned unseen. The fields bound the window:
        from the checkpointed file's rotation (None if it was still live when checkpointed) to
        the first event of the first file left."""
        self._event("gap_possible", {
            "path": self._path, "identity": str(pos.identity), "backups_left": len(self._queue),
            "reason": "resume_file_pruned", "checkpoint": pos.path,
            "rotated_at": _utc(stamp_time(own)) if own is not None else None,
            "next": name, "next_first_event": _utc(first) if first is not None else None})

    def _find_resumed(self, ident: FileIdentity) -> tuple[list[Backup], tuple[Backup, bool] | None]:
        """The backups and the one that is the checkpointed file. Looked for a few times before
        it counts as gone: a restart can land in lumberjack's compression, after the `.log`
        went away but before the `.gz` written in its place holds its first bytes."""
        for _ in range(RESUME_LOOKS - 1):
            backups = self._names.scan()
            found = find_backup(backups, ident)
            if found is not None:
                return backups, found
            time.sleep(RESUME_LOOK_SECONDS)
        backups = self._names.scan()
        return backups, find_backup(backups, ident)

    def _stamp_of(self, path: str) -> str | None:
        if os.path.dirname(path) != os.path.dirname(self._path):
            return None
        return self._names.stamp_of(os.path.basename(path))

    # -- switching files ---------------------------------------------------------------------

    def _plan(self, backups: list[Backup], after: str | None, held: OpenFile | None) -> None:
        """Queue the backups newer than `after`, then hold `held` (the file at the path) for after them.

        `held` was opened before `backups` were listed; if it was rotated in between, its own
        backup and anything newer are in the list, and must come after it, not before.
        """
        newer = [b for b in backups if after is None or b.stamp > after]
        held_stamp = self._stamp_of_held(newer, held) if held is not None and newer else None
        self._queue = [b for b in newer if held_stamp is None or b.stamp < held_stamp]
        if self._next is not None:
            self._next.close()
        self._next = held

    @staticmethod
    def _stamp_of_held(backups: list[Backup], held: OpenFile) -> str | None:
        """The stamp of `held` if it is among `backups` (rotated since we opened it), else None."""
        head = b""
        for backup in backups:
            if backup.log is not None:
                if (backup.dev, backup.inode) == (held.dev, held.ino):
                    return backup.stamp
                continue
            head = head or _settled(held.read_head(FINGERPRINT_BYTES))  # compressed already: by its first bytes
            if head and read_gz_head(backup.gz or "", len(head)) == head:
                return backup.stamp
        return None

    def _open_next(self) -> bool:
        """Open the next file to read: a listed backup, the held file, else look again. False if none."""
        while True:
            if self._queue:
                f = self._open_backup(self._queue.pop(0))
                if f is not None:
                    self._use(f, 0)
                    self._event("backup_opened", {"path": f.path, "compressed": f.gz is not None})
                    return True
                continue
            if self._next is not None:
                f, self._next = self._next, None
                f.live = True  # the next stat tells whether it still is
                self._use(f, 0)
                return True
            live = self._open_path()
            backups = self._names.scan(self._mark)
            self._check_expected(backups, live)
            self._plan(backups, self._mark, live)
            if self._queue:
                continue
            self._next = None
            if live is None:
                self._note_missing()
                return False
            self._use_live(live)
            return True

    def _use_live(self, live: OpenFile) -> None:
        if self._missing:
            self._missing = False
            self._event("file_appeared", {"path": self._path})
        done = self._finished
        if done is not None and (live.dev, live.ino) == (done.dev, done.ino) and done.head and (
                live.read_head(len(done.head)) == done.head and live.size >= done.offset):
            self._use(live, done.offset)  # the file we finished is back (renamed back, permission back)
            live.lineno = done.lineno
            return
        self._use(live, 0)

    def _use(self, f: OpenFile, offset: int) -> None:
        """Make `f` the current file, reading from `offset`."""
        f.seek(offset)
        f.lineno = None if offset else 0
        self._cur = f
        self._splitter.drop()
        old = self._pos  # stays after the last line returned, unless this file names the place better
        if old is None or (f.head and not old.identity.fingerprint_len) or (
                len(f.head) >= FINGERPRINT_BYTES and f.offset == 0):
            self._pos = Position(f.identity(), f.offset, f.path)

    def _open_path(self) -> OpenFile | None:
        try:
            f = OpenFile.open_plain(self._path, live=True)
        except (FileNotFoundError, NotADirectoryError):
            return None
        except OSError as exc:
            if not self._open_failed:
                self._open_failed = True
                self._event("open_failed", {"path": self._path, "error": exc.strerror or str(exc)})
            return None
        self._open_failed = False
        return f

    def _open_backup(self, backup: Backup) -> OpenFile | None:
        """Open a listed backup: the `.log` while it exists, else its `.gz` (complete once the .log is gone)."""
        f = self._open_member(backup.log, backup.stamp, compressed=False)
        if f is None:
            f = self._open_member(backup.gz or f"{backup.log}{GZ_SUFFIX}", backup.stamp, compressed=True)
        if f is None:
            self._lose(backup.name, None, backup.data_size, "pruned_before_read")
            if self._mark is None or backup.stamp > self._mark:
                self._mark = backup.stamp
        return f

    def _open_member(self, path: str | None, stamp: str, compressed: bool) -> OpenFile | None:
        if path is None:
            return None
        try:
            if compressed:
                return OpenFile.open_gz(path, stamp)
            return OpenFile.open_plain(path, live=False, stamp=stamp)
        except FileNotFoundError:
            return None
        except OSError as exc:
            self._event("read_error", {"path": path, "error": exc.strerror or str(exc)})
            return None

    def _finish(self, f: OpenFile) -> None:
        """`f` is read to its end and will not grow: close it and remember how far we got."""
        self._drop_partial(f)
        if f.rotated:
            self._rotations += 1
            self._event("rotation_followed", {
                "path": self._path, "backup": f.path if f.stamp else None, "offset": f.offset})
        if f.stamp is not None and (self._mark is None or f.stamp > self._mark):
            self._mark = f.stamp
        pos = self._pos
        if not f.live and pos is not None and pos.offset == f.offset and (
                (pos.identity.dev, pos.identity.inode) == (f.dev, f.ino) and is_match(pos.identity, f.head)):
            # Every line of a rotated file was returned: if it is pruned while we are down,
            # a resume from here has lost nothing (see _resume).
            self._pos = replace(pos, path=f.path, complete=True)
        self._finished = _Seen(f.dev, f.ino, f.head, f.offset, f.lineno)
        f.close()
        self._cur = None

    # -- the live file -----------------------------------------------------------------------

    def _check_live(self, f: OpenFile) -> bool:
        """Compare the open live file with the path; False if there is nothing new to read."""
        st = _stat(self._path)
        if st is None or st.st_ino != f.ino or st.st_dev != f.dev:
            self._rotated(f)
            return True
        size, seen = st.st_size, f.size
        f.size = size
        if size < f.offset:
            self._truncated(f, size, seen, rewritten=False)
        elif size == f.offset:
            return False
        elif f.head and f.read_head(len(f.head)) != f.head:
            self._truncated(f, size, seen, rewritten=True)  # truncated, then grew past our offset
        return True

    def _rotated(self, f: OpenFile) -> None:
        """The path no longer names `f`: drain it (under its backup name), then what followed it."""
        f.live = False
        f.rotated = True
        f.size = os.fstat(f.fd).st_size
        held = self._open_path()
        backups = self._names.scan(self._mark)  # f itself is newer than what we have read
        self._locate(f, backups)
        if f.stamp is None and backups:
            # Pruned before we saw it rotated: we hold it, but files made after it may have been
            # pruned unseen too (lumberjack prunes oldest first). We were at least MaxBackups behind.
            self._event("gap_possible", {
                "path": self._path, "identity": str(f.identity()), "backups_left": len(backups),
                "reason": "held_file_pruned"})
        self._check_expected(backups, held)
        self._plan(backups, f.stamp or self._mark, held)

    def _locate(self, f: OpenFile, backups: list[Backup]) -> None:
        """Find the backup name of the rotated file `f`: by inode, else by the first bytes of a .gz."""
        for backup in backups:
            if backup.log is not None and (backup.dev, backup.inode) == (f.dev, f.ino):
                f.path, f.stamp = backup.log, backup.stamp
                return
        head = f.read_head(FINGERPRINT_BYTES)  # we hold the file: its first bytes are still readable
        found = find_backup(backups, FileIdentity.of(f.dev, f.ino, head)) if head else None
        if found is not None:
            f.path, f.stamp = found[0].gz or found[0].name, found[0].stamp

    def _watch_next(self, held: OpenFile) -> None:
        """While catching up: if the held file was rotated meanwhile, note what replaced it."""
        st = _stat(self._path)
        if st is None or (st.st_dev, st.st_ino) == (held.dev, held.ino):
            return
        try:
            f = OpenFile.open_plain(self._path, live=True)
        except OSError:
            return
        try:
            if (f.dev, f.ino) == (st.st_dev, st.st_ino):
                self._expect = _Seen(f.dev, f.ino, _settled(f.read_head(FINGERPRINT_BYTES)))
        finally:
            f.close()

    def _check_expected(self, backups: list[Backup], live: OpenFile | None) -> None:
        """Report the file seen at the path while catching up if it was rotated and pruned unread.

        Pruning takes the oldest first, so files created and pruned while we were busy take that
        one with them: the gap is reported (without a size: we never saw those files).
        """
        expect, self._expect = self._expect, None
        if expect is None or (live is not None and (live.dev, live.ino) == (expect.dev, expect.ino)):
            return
        for backup in backups:
            if backup.log is not None:
                if (backup.dev, backup.inode) == (expect.dev, expect.ino) and (
                        not expect.head or read_head(backup.log, len(expect.head)) == expect.head):
                    return
            elif not expect.head or read_gz_head(backup.gz or "", len(expect.head)) == expect.head:
                return  # compressed: only its first bytes can tell
        self._lose(self._path, str(FileIdentity.of(expect.dev, expect.ino, expect.head)), None,
                   "rotated_and_pruned_unread")

    def _truncated(self, f: OpenFile, size: int, seen: int, *, rewritten: bool) -> None:
        """Copytruncate: the same file now holds less (or other) data; read it again from 0."""
        self._drop_partial(f)
        self._report_truncated(f, size, max(0, seen - f.offset), rewritten=rewritten)
        f.restart()
        self._pos = Position(f.identity(), 0, f.path)

    def _report_truncated(self, f: OpenFile, size: int, lost: int | None, *, rewritten: bool) -> None:
        self._event("file_truncated", {
            "path": f.path, "offset": f.offset, "size": size, "bytes_lost": lost, "rewritten": rewritten})
        if lost:
            self._lose(f.path, str(f.identity()), lost, "truncated_before_read")

    # -- reading -----------------------------------------------------------------------------

    def _pump(self, f: OpenFile, quota: int) -> bool:
        """Read blocks into lines until `quota` lines are ready (False) or the end of data (True)."""
        if f.error is not None:
            self._read_failed(f, f.error)
            return True
        while len(self._ready) < quota:
            try:
                data = f.read_block()
            except GZ_ERRORS as exc:  # OSError for plain files, plus EOFError/zlib.error for .gz
                self._read_failed(f, exc)
                return True
            if data:
                self._splitter.split(f, data, self._ready)
            if len(data) < BLOCK_BYTES and (f.live or not data):
                return True  # a short read of the live file is its current end; others: until b""
        return False

    def _read_failed(self, f: OpenFile, exc: BaseException) -> None:
        if not f.failed:
            f.failed = True
            self._event("read_error", {"path": f.path, "error": str(exc) or type(exc).__name__})
            if not f.live:
                lost = None if f.gz is not None else max(0, f.size - f.offset)
                self._lose(f.path, str(f.identity()), lost, "unreadable")

    def _take(self, out: list[Line], max_lines: int) -> None:
        """Move ready lines to `out`, up to `max_lines` in all."""
        room = max_lines - len(out)
        if room <= 0 or not self._ready:
            return
        if len(self._ready) <= room:
            out.extend(self._ready)
            self._ready = []
        else:
            out.extend(self._ready[:room])
            del self._ready[:room]
        self._pos = out[-1].position

    def _drop_partial(self, f: OpenFile) -> None:
        """The file ends (rotated, truncated) inside a line: report it; the next file starts clean."""
        size = self._splitter.drop()
        if size:
            where = Location(f.path, None if f.lineno is None else f.lineno + 1)
            self._on_bad(BadInput("torn_line", f"line cut short at the end of the file ({size} bytes, skipped)",
                                  where))
            self._event("torn_line", {"path": f.path, "bytes": size})

    # -- reporting ---------------------------------------------------------------------------

    def _lose(self, path: str, identity: str | None, lost: int | None, reason: str) -> None:
        """Data that will never be read: `resume_file_gone`, `pruned_before_read`,
        `rotated_and_pruned_unread`, `truncated_before_read` or `unreadable`."""
        self._lost += lost or 0
        self._event("data_lost", {"path": path, "identity": identity, "bytes_lost": lost, "reason": reason})

    def _note_missing(self) -> None:
        if not self._missing:
            self._missing = True
            self._event("file_missing", {"path": self._path})


def _settled(head: bytes) -> bytes:
    """`head` if it can tell files apart: a whole first line, or the full fingerprint length
    (a big event's first KiB holds its auditID). A line still being written could be the
    start of any event (their first ~80 bytes are alike): b"", i.e. "cannot tell"."""
    return head if len(head) >= FINGERPRINT_BYTES or b"\n" in head else b""


def _stat(path: str) -> os.stat_result | None:
    try:
        return os.stat(path)
    except OSError:
        return None


def _just_before(stamp: str) -> str:
    """The greatest text below `stamp` among same-format stamps (its last digit decremented)."""
    return stamp[:-1] + chr(ord(stamp[-1]) - 1)


def _utc(when: datetime) -> str:
    """`when` as the audit log writes times (RFC 3339, microseconds, Z)."""
    return when.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
