"""Tests for detector.source.watch: wake-ups on changes to the followed file, by inotify or polling."""

from __future__ import annotations

import ctypes
import errno
import itertools
import os
import shutil
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from watchdog.observers import inotify_c

from detector.errors import SourceError
from detector.source import watch
from detector.source.watch import WAKER_EVENTS, Waker

QUIET = 0.3  # how long "nothing happens" is observed for (a bound on a negative, not a synchronisation)


@pytest.fixture(autouse=True)
def no_leaked_threads() -> Iterator[None]:
    """Every test must stop the threads it started (watchdog's observer, emitter, inotify reader)."""
    before = set(threading.enumerate())
    yield
    leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
    assert leaked == []


class Events:
    """Collects what a waker reports."""

    def __init__(self) -> None:
        self.seen: list[tuple[str, dict[str, object]]] = []

    def __call__(self, name: str, fields: dict[str, object]) -> None:
        assert name in WAKER_EVENTS, name
        self.seen.append((name, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.seen]


def make_waker(path: Path, **options: Any) -> Waker:
    return Waker(str(path), **options)


def append(path: Path, data: bytes = b"line\n") -> None:
    with open(path, "ab") as stream:
        stream.write(data)


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_a_write_to_the_file_wakes_the_waiter(tmp_path: Path, mode: str) -> None:
    """Appending to the followed file makes wait() return True well before its timeout."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    with make_waker(path, mode=mode, poll_interval=0.02) as waker:
        assert waker.mode == mode
        append(path)
        started = time.monotonic()
        assert waker.wait(5.0) is True
        assert time.monotonic() - started < 2.0


@pytest.mark.parametrize("mode", ["inotify", "poll"])
def test_wait_times_out_when_nothing_changes(tmp_path: Path, mode: str) -> None:
    """Without changes wait() returns False, after the timeout and not before."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"x\n")
    with make_waker(path, mode=mode, poll_interval=0.02) as waker:
        started = time.monotonic()
        assert waker.wait(0.1) is False
        assert time.monotonic() - started >= 0.1


def test_unrelated_files_in_the_directory_do_not_wake(tmp_path: Path) -> None:
    """Only the followed file and its backups count: other files in the directory are ignored."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    with make_waker(path, mode="inotify") as waker:
        (tmp_path / "other.log").write_bytes(b"noise\n")
        (tmp_path / "audit.log.tmp").write_bytes(b"noise\n")
        assert waker.wait(QUIET) is False
        append(path)
        assert waker.wait(5.0) is True


def test_reading_the_file_does_not_wake(tmp_path: Path) -> None:
    """The follower's own opens and reads (IN_OPEN, IN_ACCESS, IN_CLOSE_NOWRITE) cause no wake-up."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"data\n")
    with make_waker(path, mode="inotify") as waker:
        for _ in range(3):
            path.read_bytes()
        assert waker.wait(QUIET) is False


def test_rename_rotation_and_backup_changes_wake(tmp_path: Path) -> None:
    """A rename of the file to a backup name wakes, and so does the removal of a backup."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"a\n")
    backup = tmp_path / "audit-2024-05-01T12-00-00.000.log"
    with make_waker(path, mode="inotify", min_interval=0.0) as waker:
        os.rename(path, backup)
        assert waker.wait(5.0) is True
        backup.unlink()
        assert waker.wait(5.0) is True


def test_wake_ups_are_coalesced_to_min_interval(tmp_path: Path) -> None:
    """However many writes happen, wait() never returns sooner than min_interval after the last return."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    with make_waker(path, mode="inotify", min_interval=0.1) as waker:
        returns = []
        for _ in range(4):
            for _ in range(20):
                append(path)
            assert waker.wait(5.0) is True
            returns.append(time.monotonic())
        gaps = [b - a for a, b in itertools.pairwise(returns)]
        assert min(gaps) >= 0.1 - 0.005


def test_a_busy_log_is_looked_at_every_busy_interval(tmp_path: Path) -> None:
    """Told that lines arrive at BUSY_LINES_PER_S or more, wait() coalesces to busy_interval;
    told of a trickle, back to min_interval."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    with make_waker(path, mode="inotify", min_interval=0.2, busy_interval=0.02) as waker:

        def gap_after(lines: int) -> float:
            before = time.monotonic()
            append(path)
            assert waker.wait(5.0, lines) is True
            return time.monotonic() - before

        append(path)
        assert waker.wait(5.0) is True
        assert gap_after(0) >= 0.2 - 0.005  # two returns: the rate of the lines can be told
        busy = int(watch.BUSY_LINES_PER_S * 0.4)  # the last interval (~0.2 s) brought twice the busy rate
        assert 0.02 - 0.005 <= gap_after(busy) < 0.2 - 0.005
        assert gap_after(1) >= 0.2 - 0.005  # a trickle: back to min_interval


def test_auto_falls_back_to_polling_when_inotify_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """If inotify cannot be used (watch limit), auto mode polls instead and says so."""

    def exhausted(_fd: int, _path: bytes, _mask: int) -> int:
        ctypes.set_errno(errno.ENOSPC)
        return -1

    monkeypatch.setattr(watch, "inotify_add_watch", exhausted)
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    events = Events()
    fds_before = open_fds()
    with make_waker(path, mode="auto", poll_interval=0.02, on_event=events) as waker:
        assert waker.mode == "poll"
        assert events.names() == ["watch_fallback", "watch_started"]
        assert "inotify watch limit reached" in str(events.seen[0][1]["error"])
        append(path)
        assert waker.wait(5.0) is True
    assert open_fds() == fds_before  # the inotify instance of the failed attempt was closed


def test_inotify_mode_raises_when_inotify_fails(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Asked for inotify explicitly, a failure is an error naming the directory, not a silent fallback."""

    def no_inotify() -> int:
        ctypes.set_errno(errno.EMFILE)
        return -1

    monkeypatch.setattr(watch, "inotify_init", no_inotify)
    fds_before = open_fds()
    with pytest.raises(SourceError, match=r"cannot watch with inotify: .*inotify instance limit reached"):
        make_waker(tmp_path / "audit.log", mode="inotify")
    assert open_fds() == fds_before


def test_the_waker_starts_no_threads_and_close_releases_its_descriptors(tmp_path: Path) -> None:
    """inotify is read on the caller's thread: no thread is started, and close() releases the
    inotify instance and the wake-up pipe."""
    before = set(threading.enumerate())
    fds_before = open_fds()
    waker = make_waker(tmp_path / "audit.log", mode="inotify")
    append(tmp_path / "audit.log")
    assert waker.wait(5.0) is True
    assert set(threading.enumerate()) == before
    assert len(open_fds()) == len(fds_before) + 3  # inotify + the two ends of the pipe
    waker.close()
    waker.close()  # twice is harmless
    assert open_fds() == fds_before


def test_a_burst_of_writes_costs_a_few_inotify_reads_not_one_each(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Nobody reads the inotify descriptor while the follower works, so the kernel merges the
    IN_MODIFY of a burst of writes: a handful of events are read, not one per write."""
    seen: list[int] = []
    parse = watch.parse_events

    def counting(buffer: bytes) -> list[watch.InotifyEvent]:
        events = parse(buffer)
        seen.extend(event.mask for event in events)
        return events

    monkeypatch.setattr(watch, "parse_events", counting)
    path = tmp_path / "audit.log"
    path.write_bytes(b"")
    with make_waker(path, mode="inotify", min_interval=0.05) as waker:
        fd = os.open(path, os.O_WRONLY | os.O_APPEND)
        try:
            for _ in range(2000):
                os.write(fd, b'{"kind":"Event"}\n')
        finally:
            os.close(fd)
        assert waker.wait(5.0) is True
        assert waker.wait(QUIET) is False  # what the burst queued was taken with the first wake-up
    assert 1 <= len(seen) <= 10, len(seen)


def test_a_queue_overflow_wakes_the_waiter_and_is_reported(tmp_path: Path) -> None:
    """When the kernel drops events (IN_Q_OVERFLOW, here for real: the queue is filled past
    fs.inotify.max_queued_events while nobody reads), wait() returns True and `watch_overflow`
    is reported, so the follower looks at everything again."""
    limit = int(Path("/proc/sys/fs/inotify/max_queued_events").read_text())
    if limit > 100_000:
        pytest.skip(f"fs.inotify.max_queued_events is {limit}: too many files to overflow it in a test")
    path = tmp_path / "audit.log"
    events = Events()
    with make_waker(path, mode="inotify", on_event=events) as waker:
        for index in range(limit // 2 + 10):  # a create and a delete each: distinct, never merged
            name = tmp_path / f"audit-{index}.log"
            name.touch()
            name.unlink()
        assert waker.wait(5.0) is True
        assert "watch_overflow" in events.names()
        assert waker.overflows == 1


def test_the_watchdog_bindings_we_rely_on_still_behave(tmp_path: Path) -> None:
    """Protocol drift guard: watch.py uses watchdog's ctypes bindings and event type, not its
    threads. If a watchdog release renames or changes them, this fails, naming what changed."""
    for name in ("inotify_init", "inotify_add_watch", "inotify_rm_watch", "InotifyConstants", "InotifyEvent"):
        assert hasattr(inotify_c, name), f"watchdog.observers.inotify_c.{name} is gone (watchdog drift)"
    fd = inotify_c.inotify_init()
    assert fd >= 0
    try:
        wd = inotify_c.inotify_add_watch(fd, os.fsencode(tmp_path), watch._MASK)
        assert wd >= 0
        (tmp_path / "audit.log").write_bytes(b"x\n")
        events = watch.parse_events(os.read(fd, 4096))
        assert any(e.is_create and e.name == b"audit.log" and not e.is_directory for e in events)
        assert inotify_c.inotify_rm_watch(fd, wd) == 0
        ignored = watch.parse_events(os.read(fd, 4096))
        assert any(e.is_ignored for e in ignored)
    finally:
        os.close(fd)
    overflow = inotify_c.InotifyEvent(-1, inotify_c.InotifyConstants.IN_Q_OVERFLOW, 0, b"")
    assert overflow.is_queue_overflow and not overflow.is_delete_self


def test_close_releases_a_waiting_thread(tmp_path: Path) -> None:
    """A wait() in progress returns False promptly when another thread closes the waker."""
    waker = make_waker(tmp_path / "audit.log", mode="inotify")
    result: list[bool] = []
    waiter = threading.Thread(target=lambda: result.append(waker.wait(30.0)))
    waiter.start()
    waker.close()
    waiter.join(5.0)
    assert result == [False]


def test_deleted_and_recreated_directory_is_watched_again(tmp_path: Path) -> None:
    """Deleting the directory wakes the waiter; once it is back, writes there wake it again."""
    directory = tmp_path / "logs"
    directory.mkdir()
    path = directory / "audit.log"
    path.write_bytes(b"a\n")
    events = Events()
    with make_waker(path, mode="inotify", poll_interval=0.02, on_event=events) as waker:
        shutil.rmtree(directory)
        assert waker.wait(5.0) is True
        assert wait_for_event(waker, events, "watch_lost")
        directory.mkdir()
        path.write_bytes(b"b\n")
        assert waker.wait(5.0) is True  # the directory is back (armed again)
        while waker.wait(QUIET):
            pass  # the creation itself may be a separate wake-up
        append(path)
        assert waker.wait(5.0) is True
        assert waker.mode == "inotify"


def test_missing_directory_at_start_is_watched_once_it_exists(tmp_path: Path) -> None:
    """A waker on a directory that does not exist yet polls for it, then watches it."""
    path = tmp_path / "later" / "audit.log"
    with make_waker(path, mode="inotify", poll_interval=0.02) as waker:
        assert waker.wait(0.05) is False
        path.parent.mkdir()
        assert waker.wait(5.0) is True
        path.write_bytes(b"x\n")
        assert waker.wait(5.0) is True


def open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")} - {-1}


def wait_for_event(waker: Waker, events: Events, name: str, timeout: float = 5.0) -> bool:
    """Call wait() until `name` has been reported or the deadline passes."""
    deadline = time.monotonic() + timeout
    while name not in events.names() and time.monotonic() < deadline:
        waker.wait(0.05)
    return name in events.names()
