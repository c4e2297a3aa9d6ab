"""Tests for tests/support/lumberjack.py: the Python lumberjack the follower's tests rely on."""

from __future__ import annotations

import gzip
import os
import stat
from datetime import timedelta
from pathlib import Path

import pytest

from tests.support.lumberjack import Lumberjack, TickingClock, format_stamp


def names(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


def test_rotation_renames_to_a_utc_millisecond_stamp_and_keeps_the_mode(tmp_path: Path) -> None:
    """Backups are `<prefix>-2006-01-02T15-04-05.000<ext>`; the new file gets the old one's mode."""
    clock = TickingClock()
    writer = Lumberjack(tmp_path / "audit.log", max_size=10, megabyte=1, clock=clock)
    writer.write(b"0123456\n")
    assert stat.S_IMODE(os.stat(tmp_path / "audit.log").st_mode) == 0o600 & ~_umask()
    os.chmod(tmp_path / "audit.log", 0o640)
    writer.write(b"abcdef\n")  # 8 + 7 > 10: rotate first, then write to the new file
    assert names(tmp_path) == ["audit-2024-05-01T12-00-00.001.log", "audit.log"]
    assert (tmp_path / "audit.log").read_bytes() == b"abcdef\n"
    assert stat.S_IMODE(os.stat(tmp_path / "audit.log").st_mode) == 0o640
    assert format_stamp(clock.now) == "2024-05-01T12-00-00.001"


def test_a_write_larger_than_max_size_is_refused_whole(tmp_path: Path) -> None:
    """lumberjack never splits an event across files: too big is an error and nothing is written."""
    writer = Lumberjack(tmp_path / "audit.log", max_size=4, megabyte=1)
    with pytest.raises(ValueError, match="exceeds maximum file size"):
        writer.write(b"12345\n")
    assert not (tmp_path / "audit.log").exists()


def test_first_open_appends_to_an_existing_file_unless_it_is_full(tmp_path: Path) -> None:
    """On the first write an existing file is appended to (same inode), or rotated if the write would fill it."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"old\n")
    inode = os.stat(path).st_ino
    Lumberjack(path, max_size=10, megabyte=1).write(b"new\n")
    assert path.read_bytes() == b"old\nnew\n"
    assert os.stat(path).st_ino == inode
    Lumberjack(path, max_size=10, megabyte=1, clock=TickingClock()).write(b"x\n")  # 8 + 2 >= 10
    assert path.read_bytes() == b"x\n"
    assert len(names(tmp_path)) == 2


def test_mill_prunes_by_count_then_compresses_in_place(tmp_path: Path) -> None:
    """MaxBackups keeps the newest names (a .log and its .gz count once); the rest is gzipped, the .log removed."""
    writer = Lumberjack(tmp_path / "audit.log", max_size=4, megabyte=1, max_backups=2, compress=True,
                        clock=TickingClock())
    for i in range(5):
        writer.write(b"%d\n" % i)
        writer.write(b"x\n")  # 4 bytes per file: every pair is one file
    assert names(tmp_path) == [
        "audit-2024-05-01T12-00-00.003.log.gz", "audit-2024-05-01T12-00-00.004.log.gz", "audit.log"]
    with gzip.open(tmp_path / "audit-2024-05-01T12-00-00.004.log.gz") as stream:
        assert stream.read() == b"3\nx\n"


def test_mill_prunes_by_age(tmp_path: Path) -> None:
    """MaxAge removes backups whose name stamp is older than that many days."""
    clock = TickingClock(step=timedelta(0))
    writer = Lumberjack(tmp_path / "audit.log", max_size=2, megabyte=1, max_age=2, clock=clock)
    for i in range(5):
        writer.write(b"%d\n" % i)  # each write rotates the previous one out, a day later
        clock.now += timedelta(days=1)
    assert names(tmp_path) == [
        "audit-2024-05-03T12-00-00.000.log", "audit-2024-05-04T12-00-00.000.log",
        "audit-2024-05-05T12-00-00.000.log", "audit.log"]


def test_copytruncate_keeps_the_inode_and_the_writer_offset(tmp_path: Path) -> None:
    """logrotate's copytruncate: the copy has the data, the file is emptied in place, lumberjack does not notice."""
    path = tmp_path / "audit.log"
    writer = Lumberjack(path, max_size=100, megabyte=1)
    writer.write(b"a\n")
    inode = os.stat(path).st_ino
    copy = writer.copytruncate()
    assert Path(copy).read_bytes() == b"a\n"
    assert os.stat(path).st_ino == inode and os.stat(path).st_size == 0
    writer.write(b"b\n")  # the fd has no O_APPEND (lumberjack created the file): lands at offset 2
    assert path.read_bytes() == b"\0\0b\n"


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
