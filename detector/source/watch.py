"""Wake the follower when its file may have changed: inotify on the directory, or polling.

The directory is watched, not the file: the file is renamed away at each rotation. Events are
filtered by name (the live file and its backups). When inotify cannot be used (no inotify,
instance or watch limits) `mode="auto"` falls back to polling the file's stat. A deleted or
replaced directory is noticed (inotify reports the deletion; a periodic check catches a rename)
and watched again once it exists.

No threads: the inotify descriptor is read on the follower's own thread, inside `wait()`. A busy
log raises thousands of IN_MODIFY a second (the API server writes one event per write(2)); while
the follower is busy reading, nobody reads the descriptor, so the kernel merges the identical
IN_MODIFY events still queued into one, and a busy log costs one small read per wake-up (at most
1/min_interval a second), not one per write. watchdog >= 7.1 reads inotify on a thread of its own
that drains the kernel queue into an unbounded Python queue, which defeats exactly that merging
(and our earlier trick of holding its reader thread would let that queue grow without bound), so
only watchdog's inotify bindings are used here: `inotify_init`, `inotify_add_watch`,
`inotify_rm_watch`, `InotifyConstants`, `InotifyEvent`. tests/unit/source/test_watch.py checks
that they still exist and behave, so a watchdog release that changes them fails loudly.

A queue overflow (IN_Q_OVERFLOW: events were dropped) wakes the follower, which looks at the
file and its backups afresh on every wake-up, and is reported as `watch_overflow`.

`wait()` only says "look now"; after it the caller runs `Follower.read()` until it returns
fewer lines than it asked for.
"""

from __future__ import annotations

import contextlib
import ctypes
import errno
import os
import select
import struct
import threading
import time
from collections.abc import Callable
from typing import Literal

from watchdog.observers.inotify_c import (
    InotifyConstants,
    InotifyEvent,
    Mask,
    WatchDescriptor,
    inotify_add_watch,
    inotify_init,
    inotify_rm_watch,
)

from detector.errors import Location, SourceError
from detector.source.backups import BackupNames

OnEvent = Callable[[str, dict[str, object]], None]
Mode = Literal["auto", "inotify", "poll"]

RECHECK_SECONDS = 1.0  # inotify mode: how often to check that the watched directory is still the one at the path
# 15 ms between wake-ups. Each wake-up costs a round of inotify, stat, read and commit; at 2,000
# events/s, 5 ms cost ~2 points of a core more than 10 ms, and 20 ms ~1 point less (measured),
# while a line still reaches its alert in ~17 ms at p99 (bench/live.py, docs/performance.md).
MIN_INTERVAL = 0.015
# A busy log (lines arriving at BUSY_LINES_PER_S or more) is looked at every 5 ms instead:
# there the fixed cost of a wake-up is shared by hundreds of lines, while every alert in a batch
# waits for the whole batch to be read and evaluated. Measured at 50,000 events/s with 1,000
# alerts/s to a webhook (bench/live.py --only delivery): p50 line -> delivered ~23 ms at 15 ms,
# ~9-13 ms at 4-8 ms, for a few points of a core more.
BUSY_INTERVAL = 0.005
BUSY_LINES_PER_S = 10_000
READ_BYTES = 64 * 1024  # one read of queued inotify events (each is 16 bytes + a padded name)
# Not IN_OPEN / IN_CLOSE_NOWRITE / IN_ACCESS: the follower's own reads would wake it.
_MASK = (InotifyConstants.IN_MODIFY | InotifyConstants.IN_CLOSE_WRITE | InotifyConstants.IN_CREATE
         | InotifyConstants.IN_DELETE | InotifyConstants.IN_MOVED_FROM | InotifyConstants.IN_MOVED_TO
         | InotifyConstants.IN_DELETE_SELF | InotifyConstants.IN_MOVE_SELF)
_HEADER = struct.Struct("iIII")  # struct inotify_event: wd, mask, cookie, len (then len bytes of name)

WAKER_EVENTS = (
    "watch_started",  # path (the directory), mode ("inotify" | "poll")
    "watch_fallback",  # path, error: inotify failed, polling instead
    "watch_lost",  # path: the directory was deleted or replaced; polling until it is back
    "watch_overflow",  # path: the kernel's inotify queue overflowed; everything is looked at again
)


def _ignore(name: str, fields: dict[str, object]) -> None:
    """The default `on_event`."""


def _signature(path: str) -> tuple[int, ...] | None:
    """What polling compares: identity, size and change time of `path`, None if it is missing."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns, st.st_ctime_ns


def _inotify_error() -> OSError:
    code = ctypes.get_errno()
    if code == errno.ENOSPC:
        return OSError(code, "inotify watch limit reached")
    if code == errno.EMFILE:
        return OSError(code, "inotify instance limit reached")
    return OSError(code, os.strerror(code))


def parse_events(buffer: bytes) -> list[InotifyEvent]:
    """The `struct inotify_event` records of one read."""
    events = []
    at = 0
    while at + _HEADER.size <= len(buffer):
        wd, mask, cookie, length = _HEADER.unpack_from(buffer, at)
        name = buffer[at + _HEADER.size:at + _HEADER.size + length].rstrip(b"\0")
        at += _HEADER.size + length
        events.append(InotifyEvent(WatchDescriptor(wd), Mask(mask), cookie, name))
    return events


class _DirectoryWatch:
    """An inotify instance watching one directory, read by the caller's thread."""

    def __init__(self, directory: str, names: BackupNames) -> None:
        self._names = names
        fd = inotify_init()
        if fd < 0:
            raise _inotify_error()
        self.fd = fd
        self._lock = threading.Lock()  # close() may come from another thread than read()
        wd = inotify_add_watch(fd, os.fsencode(directory), _MASK)
        if wd < 0:
            error = _inotify_error()
            os.close(fd)
            raise error
        self._wd = wd
        self.lost = False  # the directory itself went away (deleted, moved, unmounted)
        self.overflowed = False  # the kernel dropped events

    def read(self, wait_ms: int, wake_fd: int) -> bool:
        """Wait up to `wait_ms` (0: do not wait) for events, read them all; True if one concerns
        the followed file or its backups, the directory itself, or says events were lost."""
        poller = select.poll()
        poller.register(wake_fd, select.POLLIN)
        with self._lock:
            if self.fd < 0:
                return False
            poller.register(self.fd, select.POLLIN)
        changed = False
        for _ in range(64):  # bounded: a directory flooded with events must not keep us here
            ready = {fd for fd, _flags in poller.poll(wait_ms)}
            if self.fd not in ready:
                return changed
            with self._lock:
                if self.fd < 0:
                    return changed
                try:
                    buffer = os.read(self.fd, READ_BYTES)
                except BlockingIOError:
                    return changed
            changed = self._take(parse_events(buffer)) or changed
            wait_ms = 0
        return changed

    def _take(self, events: list[InotifyEvent]) -> bool:
        changed = False
        for event in events:
            if event.is_queue_overflow:
                self.overflowed = changed = True
            elif event.is_delete_self or event.is_move_self or event.is_ignored:
                self.lost = changed = True  # the watched directory itself went away
            elif not event.is_directory and self._names.is_related(os.fsdecode(event.name)):
                changed = True
        return changed

    def close(self) -> None:
        with self._lock:
            fd, self.fd = self.fd, -1
        if fd >= 0:
            inotify_rm_watch(fd, WatchDescriptor(self._wd))
            os.close(fd)


class Waker:
    """Block until `path` (or its backups) may have changed, at most every `min_interval` seconds
    (`busy_interval` while lines arrive at BUSY_LINES_PER_S or more)."""

    def __init__(self, path: str, *, mode: Mode = "auto", poll_interval: float = 0.25,
                 min_interval: float = MIN_INTERVAL, busy_interval: float = BUSY_INTERVAL,
                 on_event: OnEvent | None = None) -> None:
        if mode not in ("auto", "inotify", "poll"):
            raise ValueError(f"unknown watch mode {mode!r}")
        self._path = os.fspath(path)
        self._names = BackupNames(self._path)
        self._directory = os.path.abspath(self._names.directory)
        self._requested = mode
        self._poll_interval = poll_interval
        self._min_interval = min_interval
        self._busy_interval = min(busy_interval, min_interval)
        self._interval = min_interval  # the pause in force: min_interval, or busy_interval while busy
        self._event = on_event or _ignore
        self._closed = threading.Event()  # also what we sleep on, so close() interrupts a wait
        self._wake_r, self._wake_w = os.pipe()  # close() from another thread interrupts a poll()
        self._observer: _DirectoryWatch | None = None
        self._watched: tuple[int, int] | None = None  # (dev, inode) of the watched directory
        self._next_check = 0.0
        self._last_return = self._previous_return = float("-inf")
        self._sig = _signature(self._path)
        self.overflows = 0
        self.mode: Literal["inotify", "poll"] = "poll" if mode == "poll" else "inotify"
        try:
            if self.mode == "inotify":
                self._arm()
        except BaseException:
            self._close_pipe()
            raise
        self._event("watch_started", {"path": self._directory, "mode": self.mode})

    def wait(self, timeout: float, lines: int = 0) -> bool:
        """True as soon as a change may have happened (not sooner than `min_interval` after the
        previous return, `busy_interval` if the `lines` handled since then came at
        BUSY_LINES_PER_S or more), False after `timeout` seconds without one or once closed."""
        deadline = time.monotonic() + timeout
        # The lines read after the last return were written between the two returns before it.
        busy = lines >= BUSY_LINES_PER_S * (self._last_return - self._previous_return)
        self._interval = self._busy_interval if busy else self._min_interval
        while not self._closed.is_set():
            now = time.monotonic()
            if self._poll_once(now):
                return self._changed_return(deadline)
            remaining = deadline - now
            if remaining <= 0:
                return False
            if self._block(min(remaining, self._step())):
                return self._changed_return(deadline)
        return False

    def close(self) -> None:
        """Stop watching and wake a wait() in progress (from any thread)."""
        if self._closed.is_set():
            return
        self._closed.set()
        self._disarm()
        with contextlib.suppress(OSError):
            os.write(self._wake_w, b"!")
        self._close_pipe()

    def __enter__(self) -> Waker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _step(self) -> float:
        """How long to block before looking at the filesystem ourselves."""
        if self._observer is None:
            return self._poll_interval
        return RECHECK_SECONDS

    def _block(self, seconds: float) -> bool:
        """Wait on inotify (or, polling, just sleep) up to `seconds`; True if a related change came."""
        observer = self._observer
        if observer is None:
            self._closed.wait(seconds)
            return False
        return self._take_events(observer, max(1, round(seconds * 1000)))

    def _take_events(self, observer: _DirectoryWatch, wait_ms: int) -> bool:
        changed = observer.read(wait_ms, self._wake_r)
        if observer.overflowed:
            observer.overflowed = False
            self.overflows += 1
            self._event("watch_overflow", {"path": self._directory, "overflows": self.overflows})
        return changed

    def _poll_once(self, now: float) -> bool:
        """Without a working watch, compare the file's stat; with one, check the directory. True if changed."""
        if self._observer is not None:
            if self._observer.lost or now >= self._next_check:
                self._next_check = now + RECHECK_SECONDS
                if self._observer.lost or self._directory_identity() != self._watched:
                    self._disarm()
                    self._event("watch_lost", {"path": self._directory})
                    return True
            return False
        sig = _signature(self._path)
        changed = sig != self._sig
        self._sig = sig
        if self.mode == "inotify" and now >= self._next_check:
            self._next_check = now + self._poll_interval
            if self._arm():
                return True  # the directory is (back): whatever is in it is news
        return changed

    def _changed_return(self, deadline: float) -> bool:
        earliest = self._last_return + self._interval
        pause = min(earliest, deadline) - time.monotonic()
        if pause > 0:
            # Coalesce: a busy log costs at most 1/interval wake-ups a second. Meanwhile the
            # kernel merges the writes' IN_MODIFY events into one.
            self._closed.wait(pause)
        observer = self._observer
        if observer is not None:
            # What queued up until now is covered by the read the caller does next: take it
            # off the queue, or the next wait() would return at once for nothing new.
            self._take_events(observer, 0)
        else:
            self._sig = _signature(self._path)
        self._previous_return, self._last_return = self._last_return, time.monotonic()
        return not self._closed.is_set()

    def _directory_identity(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self._directory)
        except OSError:
            return None
        return st.st_dev, st.st_ino

    def _arm(self) -> bool:
        """Start watching the directory; True on success. Falls back to polling if inotify fails."""
        identity = self._directory_identity()
        if identity is None:
            return False  # not there (yet): poll until it is
        try:
            observer = _DirectoryWatch(self._directory, self._names)
        except OSError as exc:
            if self._requested == "inotify":
                raise SourceError(f"cannot watch with inotify: {exc}", Location(self._directory)) from None
            self.mode = "poll"
            self._event("watch_fallback", {"path": self._directory, "error": str(exc)})
            return False
        if self._directory_identity() != identity:  # replaced while we armed: look again later
            observer.close()
            return False
        self._observer = observer
        self._watched = identity
        self._next_check = time.monotonic() + RECHECK_SECONDS
        return True

    def _disarm(self) -> None:
        observer, self._observer = self._observer, None
        self._watched = None
        if observer is not None:
            observer.close()
        self._sig = _signature(self._path)

    def _close_pipe(self) -> None:
        for fd in (self._wake_r, self._wake_w):
            with contextlib.suppress(OSError):
                os.close(fd)
