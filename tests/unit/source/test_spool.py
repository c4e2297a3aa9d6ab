"""Tests for detector.source.spool: the webhook/kafka inputs' durable, rotating spool, read back
by the ordinary Follower exactly as a live audit.log."""

from __future__ import annotations

import errno
import os
import threading
from pathlib import Path

import pytest

from detector.errors import BadInput
from detector.source.spool import Spool, SpoolFull
from detector.source.tail import Follower


def line(n: int) -> bytes:
    return b'{"n":%d,"pad":"%s"}\n' % (n, b"x" * 40)


def read_all(path: Path, bad: list[BadInput] | None = None) -> tuple[list[bytes], Follower]:
    follower = Follower(str(path), start_at="beginning", on_bad=(bad.append if bad is not None else _fail))
    return drain(follower), follower


def drain(follower: Follower) -> list[bytes]:
    lines: list[bytes] = []
    for _ in range(1000):  # bounded: read() never blocks, and returns [] once caught up
        batch = follower.read(1000)
        if not batch:
            break
        lines += [item.data for item in batch]
    return lines


def _fail(error: BadInput) -> None:
    raise AssertionError(f"unexpected bad input: {error}")


def test_every_append_is_read_back_in_order_across_rotations(tmp_path: Path) -> None:
    """The follower, reading as the live loop does between appends, gets every line once, in
    order, across the spool's lumberjack-style rotations."""
    path = tmp_path / "spool" / "audit.log"
    events: list[tuple[str, dict[str, object]]] = []
    spool = Spool(str(path), rotate_bytes=1000, reserve_bytes=0, on_event=lambda n, f: events.append((n, f)))
    follower = Follower(str(path), start_at="beginning", on_bad=_fail)
    lines: list[bytes] = []
    for n in range(100):
        spool.append(line(n))
        if n % 7 == 0:  # several rotations may pass between two looks
            lines += drain(follower)
    spool.close()
    lines += drain(follower)
    backups = sorted(p.name for p in path.parent.iterdir() if p.name != "audit.log")
    assert len(backups) >= 5 and all(name.startswith("audit-") and name.endswith(".log") for name in backups)
    assert sum(1 for name, _ in events if name == "spool_rotated") == len(backups)
    assert lines == [line(n).rstrip(b"\n") for n in range(100)]


def test_concurrent_appends_are_whole_lines(tmp_path: Path) -> None:
    """Writers on several threads share fsyncs; no line is interleaved with another."""
    path = tmp_path / "audit.log"
    spool = Spool(str(path), rotate_bytes=4000, reserve_bytes=0)
    threads = [threading.Thread(target=lambda k=k: [spool.append(line(k * 1000 + n)) for n in range(50)])
               for k in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    spool.close()
    files = [*sorted(p for p in tmp_path.iterdir() if p.name != "audit.log"), path]  # backups by stamp, then live
    lines = b"".join(f.read_bytes() for f in files).splitlines()
    assert sorted(lines) == sorted(line(k * 1000 + n).rstrip(b"\n") for k in range(4) for n in range(50))


def test_prune_deletes_only_backups_behind_the_checkpointed_file(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    spool = Spool(str(path), rotate_bytes=500, reserve_bytes=0)
    follower = Follower(str(path), start_at="beginning", on_bad=_fail)
    taken: list[bytes] = []
    checkpoint = None
    for n in range(40):
        spool.append(line(n))
        taken += drain(follower)
        if n == 20:
            checkpoint = follower.position  # the live loop's committed position, mid-way
    assert checkpoint is not None
    backups = sorted(p for p in tmp_path.iterdir() if p.name != "audit.log")
    assert len(backups) >= 4
    assert spool.prune(None) == []  # no checkpoint yet: nothing is behind it
    deleted = spool.prune(checkpoint)
    kept = sorted(p for p in tmp_path.iterdir() if p.name != "audit.log")
    assert deleted, "backups before the checkpointed file are deleted"
    assert all(Path(p) < kept[0] for p in deleted) and path.exists()
    # A restart from that checkpoint still finds everything after it.
    again = Follower(str(path), resume=checkpoint, on_bad=_fail)
    assert drain(again) == [line(n).rstrip(b"\n") for n in range(21, 40)]
    assert taken == [line(n).rstrip(b"\n") for n in range(40)]
    spool.close()


def test_prune_keeps_everything_when_the_checkpoint_cannot_be_placed(tmp_path: Path) -> None:
    path = tmp_path / "audit.log"
    spool = Spool(str(path), rotate_bytes=300, reserve_bytes=0)
    for n in range(20):
        spool.append(line(n))
    other = tmp_path / "elsewhere.log"
    other.write_bytes(line(0))
    follower = Follower(str(other), start_at="beginning", on_bad=_fail)
    follower.read(10)
    assert follower.position is not None
    before = sorted(tmp_path.iterdir())
    assert spool.prune(follower.position) == []
    assert sorted(tmp_path.iterdir()) == before
    spool.close()


def test_a_torn_write_never_glues_onto_the_next_line(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A write that fails half-way (disk full) leaves a fragment; the next line starts on a new
    line, so the fragment is reported as a bad line and every accepted line is read whole."""
    path = tmp_path / "audit.log"
    spool = Spool(str(path), rotate_bytes=1 << 20, reserve_bytes=0)
    spool.append(line(1))
    real_write = os.write
    calls = {"n": 0}

    def half_then_full(fd: int, data: bytes | memoryview) -> int:
        calls["n"] += 1
        if calls["n"] == 1:
            return real_write(fd, bytes(data)[:10])
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "write", half_then_full)
    with pytest.raises(SpoolFull):
        spool.append(line(2))
    monkeypatch.setattr(os, "write", real_write)
    spool.append(line(3))
    spool.close()
    bad: list[BadInput] = []
    lines, _ = read_all(path, bad)
    assert line(1).rstrip(b"\n") in lines and line(3).rstrip(b"\n") in lines
    assert all(item in (line(1).rstrip(b"\n"), line(3).rstrip(b"\n"), line(2)[:10]) for item in lines)
    assert lines.index(line(3).rstrip(b"\n")) == len(lines) - 1


def test_no_room_is_refused_before_writing(tmp_path: Path) -> None:
    """Below the reserve kept for the state database nothing is written (answered 507)."""
    path = tmp_path / "audit.log"
    st = os.statvfs(tmp_path)
    spool = Spool(str(path), reserve_bytes=st.f_bavail * st.f_frsize + (1 << 30))
    with pytest.raises(SpoolFull):
        spool.append(line(1))
    spool.close()
    assert path.stat().st_size == 0
