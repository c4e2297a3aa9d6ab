"""Wake the follower when its file may have changed: inotify on the directory, or polling.

The directory is watched, not the file: the file is renamed away at each rotation. Events are
filtered by name (the live file and its backups) and only set a flag: watchdog's reader thread
never reads the file, the follower does all I/O on its own thread (STYLE.md §13). When inotify
cannot be used (no inotify, instance or watch limits: watchdog raises) `mode="auto"` falls back
to polling the file's stat. A deleted or replaced directory is noticed (inotify reports the
deletion; a periodic check catches a rename) and watched again once it exists.

Coalescing: the API server writes one event per write(2), so a busy log raises thousands of
IN_MODIFY a second. We use watchdog's inotify reader (`InotifyFD`) without its observer and
event-queue threads, and our callback holds the reader until the follower has taken the
wake-up: meanwhile the kernel merges the identical IN_MODIFY events still queued into one, so a
busy log costs one inotify read per wake-up (at most 1/min_interval a second), not one per write.

`wait()` only says "look now"; after it the caller runs `Follower.read()` until it returns
fewer lines than it asked for.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable
from typing import Literal

from watchdog.observers.inotify_c import CallbackId, InotifyConstants, InotifyEvent, InotifyFD, Mask

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
HOLD_SECONDS = 1.0  # longest the reader is held for an unclaimed wake-up (the follower is busy reading)
# Not IN_OPEN / IN_CLOSE_NOWRITE / IN_ACCESS: the follower's own reads would wake it.
_MASK = (InotifyConstants.IN_MODIFY | InotifyConstants.IN_CLOSE_WRITE | InotifyConstants.IN_CREATE
         | InotifyConstants.IN_DELETE | InotifyConstants.IN_MOVED_FROM | InotifyConstants.IN_MOVED_TO
         | InotifyConstants.IN_DELETE_SELF | InotifyConstants.IN_MOVE_SELF)

WAKER_EVENTS = (
    "watch_started",  # path (the directory), mode ("inotify" | "poll")
    "watch_fallback",  # path, error: inotify failed, polling instead
    "watch_lost",  # path: the directory was deleted or replaced; polling until it is back
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


class _DirectoryWatch:
    """watchdog's inotify reader on one directory; `on_event` and friends run on its thread."""

    def __init__(self, directory: str, names: BackupNames, changed: threading.Event,
                 lost: threading.Event) -> None:
        self._names = names
        self._changed = changed
        self._lost = lost
        self._claimed = threading.Event()
        self._reader = InotifyFD()  # our own instance, not the process-wide shared one
        try:
            self._reader.add_callback(os.fsencode(directory), Mask(_MASK), self, CallbackId(0))
        except BaseException:
            self._reader.close()
            raise
        self._reader.start()

    def on_event(self, event: InotifyEvent) -> None:
        if event.is_delete_self or event.is_move_self:  # the watched directory itself went away
            self._lost.set()
            self._changed.set()
        elif not event.is_directory and self._names.is_related(os.fsdecode(event.name)):
            self._changed.set()
            # Hold the reader until the follower claims this wake-up: writes in the meantime
            # merge into one queued IN_MODIFY in the kernel instead of costing a read each.
            self._claimed.wait(HOLD_SECONDS)
            self._claimed.clear()

    def on_watch_deleted(self, wd: int) -> None:
        self._lost.set()
        self._changed.set()

    def on_queue_overflow(self) -> None:
        self._changed.set()  # events were dropped: look at everything

    def claimed(self) -> None:
        """The follower took the wake-up: release the reader (from the follower's thread)."""
        self._claimed.set()

    def close(self) -> None:
        self._claimed.set()
        self._reader.stop()  # closes the inotify instance, which ends the reader's loop
        if self._reader.is_alive():
            self._reader.join()


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
        self._changed = threading.Event()
        self._lost = threading.Event()
        self._closed = threading.Event()  # also what we sleep on, so close() interrupts a wait
        self._observer: _DirectoryWatch | None = None
        self._watched: tuple[int, int] | None = None  # (dev, inode) of the watched directory
        self._next_check = 0.0
        self._last_return = self._previous_return = float("-inf")
        self._sig = _signature(self._path)
        self.mode: Literal["inotify", "poll"] = "poll" if mode == "poll" else "inotify"
        if self.mode == "inotify":
            self._arm()
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
            if self._changed.wait(min(remaining, self._step())):
                return self._changed_return(deadline)
        return False

    def close(self) -> None:
        """Stop watching; watchdog's reader thread is stopped and joined."""
        self._closed.set()
        self._changed.set()
        self._disarm()

    def __enter__(self) -> Waker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- internals -----------------------------------------------------------------------------

    def _step(self) -> float:
        """How long to block on the flag before looking at the filesystem ourselves."""
        if self._observer is None:
            return self._poll_interval
        return RECHECK_SECONDS

    def _poll_once(self, now: float) -> bool:
        """Without a working watch, compare the file's stat; with one, check the directory. True if changed."""
        if self._observer is not None:
            if self._lost.is_set() or now >= self._next_check:
                self._next_check = now + RECHECK_SECONDS
                if self._lost.is_set() or self._directory_identity() != self._watched:
                    self._disarm()
                    self._event("watch_lost", {"path": self._directory})
                    self._changed.set()
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
            self._closed.wait(pause)  # coalesce: a busy log costs at most 1/interval wake-ups a second
        self._changed.clear()
        if self._observer is not None:
            self._observer.claimed()
        self._sig = _signature(self._path) if self._observer is None else self._sig
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
        self._lost.clear()
        try:
            observer = _DirectoryWatch(self._directory, self._names, self._changed, self._lost)
        except OSError as exc:
            if self._requested == "inotify":
                raise SourceError(f"cannot watch with inotify: {exc}", Location(self._directory)) from None
            self.mode = "poll"
            self._event("watch_fallback", {"path": self._directory, "error": str(exc)})
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
