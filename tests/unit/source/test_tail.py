"""Tests for detector.source.tail: following a lumberjack-rotated audit.log without loss or repeats."""

from __future__ import annotations

import gzip
import os
import shutil
import tempfile
import tracemalloc
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.errors import BadInput, SourceError
from detector.source.position import FileIdentity, Position
from detector.source.tail import EVENTS, Follower, Line
from tests.support.lumberjack import Lumberjack, TickingClock


class Recorder:
    """Collects what a follower reports."""

    def __init__(self) -> None:
        self.bad: list[BadInput] = []
        self.events: list[tuple[str, dict[str, object]]] = []

    def on_event(self, name: str, fields: dict[str, object]) -> None:
        assert name in EVENTS, name
        self.events.append((name, fields))

    def names(self) -> list[str]:
        return [name for name, _ in self.events]

    def fields(self, name: str) -> list[dict[str, object]]:
        return [fields for event, fields in self.events if event == name]

    def reasons(self) -> list[str]:
        return [bad.reason for bad in self.bad]


def follow(path: Path, rec: Recorder, **options: Any) -> Follower:
    """A follower on `path` reporting to `rec`."""
    return Follower(str(path), on_bad=rec.bad.append, on_event=rec.on_event, **options)


def drain(follower: Follower, max_lines: int = 10_000) -> list[Line]:
    """Every line available now (read until a call returns nothing)."""
    lines: list[Line] = []
    while batch := follower.read(max_lines):
        lines += batch
    return lines


def data(lines: list[Line]) -> list[bytes]:
    return [line.data for line in lines]


def numbered(start: int, stop: int, width: int = 0) -> list[bytes]:
    """Distinct audit-like lines: every file then starts with distinct bytes, as real ones do."""
    return [b'{"auditID":"%08d"%s}' % (i, b"x" * width) for i in range(start, stop)]


def write_all(writer: Lumberjack, lines: list[bytes]) -> None:
    for line in lines:
        writer.write(line + b"\n")


def position_after(path: Path, lines: int) -> Position:
    """Where a follower from the beginning of `path` stands after `lines` lines, as checkpointed
    just before a stop (the follower is closed)."""
    first = follow(path, Recorder(), start_at="beginning")
    saved = first.read(lines)[-1].position
    first.close()
    return saved


def small_writer(path: Path, max_size: int = 200, **options: Any) -> Lumberjack:
    """A lumberjack rotating every `max_size` bytes, with unique backup names."""
    return Lumberjack(path, max_size=max_size, megabyte=1, clock=TickingClock(), **options)


# -- property: whatever the splits and rotations, every complete line exactly once, in order --


@st.composite
def scenarios(draw: st.DrawFn) -> dict[str, Any]:
    count = draw(st.integers(1, 60))
    bodies = draw(st.lists(st.binary(max_size=40), min_size=count, max_size=count))
    lines = [b"%d:" % i + body.replace(b"\n", b"n").replace(b"\r", b"r") for i, body in enumerate(bodies)]
    steps = []
    for line in lines:
        cuts = sorted(draw(st.lists(st.integers(1, len(line)), max_size=3, unique=True)))
        chunks = [line[a:b] for a, b in zip([0, *cuts], [*cuts, len(line) + 1], strict=True)]
        chunks[-1] += b"\n"
        steps.append({
            "line": line, "chunks": chunks, "rotate": draw(st.booleans()) and draw(st.booleans()),
            "reads": draw(st.lists(st.booleans(), min_size=len(chunks), max_size=len(chunks))),
            "restart": draw(st.integers(0, 15)) == 0,
        })
    return {"steps": steps, "max_size": draw(st.integers(30, 300)), "compress": draw(st.booleans()),
            "max_lines": draw(st.integers(1, 5))}


@settings(max_examples=100, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(scenarios())
def test_every_complete_line_is_returned_once_in_order(scenario: dict[str, Any]) -> None:
    """Random line contents, write splits, rotations (plain or gzip) and restarts lose and repeat nothing."""
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "audit.log"
        writer = small_writer(path, scenario["max_size"], compress=scenario["compress"])
        rec = Recorder()
        follower = follow(path, rec, start_at="beginning")
        got: list[bytes] = []
        for step in scenario["steps"]:
            line = step["line"] + b"\n"
            if writer.fd is None:
                writer.write_raw(b"")
            if step["rotate"] or writer.size + len(line) > writer.max():
                writer.rotate()
            for chunk, read in zip(step["chunks"], step["reads"], strict=True):
                writer.write_raw(chunk)
                if read:
                    got += data(follower.read(scenario["max_lines"]))
            if step["restart"] and follower.position is not None:  # None: no file seen yet, nothing to save
                position = follower.position
                follower.close()
                follower = follow(path, rec, resume=position)
        got += data(drain(follower))
        follower.close()
        assert got == [step["line"] for step in scenario["steps"]]
        assert rec.bad == []
        assert "data_lost" not in rec.names()


# -- starting ---------------------------------------------------------------------------------


def append(path: Path, data: bytes) -> None:
    with open(path, "ab") as stream:
        stream.write(data)


def backups_of(path: Path) -> list[str]:
    """The backup files beside `path`, oldest first."""
    return sorted(str(p) for p in path.parent.iterdir() if p.name != path.name)


def test_start_at_end_returns_only_what_is_written_afterwards(tmp_path: Path) -> None:
    """A first start at the end skips the existing lines and the rest of a line in progress."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"old 1\nold 2\nin progr")
    rec = Recorder()
    follower = follow(path, rec)
    assert follower.read() == []
    append(path, b"ess\nnew 1\n")
    lines = drain(follower)
    assert data(lines) == [b"new 1"]
    assert lines[0].lineno is None  # started mid-file
    assert rec.bad == []
    assert rec.fields("follow_started") == [{"path": str(path), "offset": 20, "start": "end"}]


def test_start_at_beginning_reads_everything_with_line_numbers(tmp_path: Path) -> None:
    """From the beginning, every line comes back with its 1-based number and the offset after it."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"a\r\nbb\n\n  \nccc\n")
    rec = Recorder()
    lines = drain(follow(path, rec, start_at="beginning"))
    assert [(line.data, line.lineno, line.position.offset) for line in lines] == [
        (b"a", 1, 3), (b"bb", 2, 6), (b"ccc", 5, 14)]
    assert [(bad.reason, bad.location.line if bad.location else None) for bad in rec.bad] == [
        ("blank_line", 3), ("blank_line", 4)]


def test_lines_and_positions_are_frozen_values(tmp_path: Path) -> None:
    """Line, Position and FileIdentity are immutable."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"a\n")
    line = drain(follow(path, Recorder(), start_at="beginning"))[0]
    with pytest.raises(AttributeError):
        line.data = b"b"  # type: ignore[misc]
    with pytest.raises(AttributeError):
        line.position.offset = 0  # type: ignore[misc]


def test_binary_garbage_lines_are_returned_as_they_are(tmp_path: Path) -> None:
    """The source does not judge content: undecodable bytes are the parser's business."""
    garbage = [b"\xff\xfe\x00\x01garbage", b"\x1b[31mred\x1b[0m", bytes(range(14, 256)), b"x\x00y"]
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(g + b"\n" for g in garbage))
    rec = Recorder()
    assert data(drain(follow(path, rec, start_at="beginning"))) == garbage
    assert rec.bad == []


def test_max_lines_bounds_each_read_without_losing_lines(tmp_path: Path) -> None:
    """read(max_lines) returns at most that many lines; the next call continues where it stopped."""
    path = tmp_path / "audit.log"
    write_all(small_writer(path, max_size=10_000), numbered(0, 40))
    follower = follow(path, Recorder(), start_at="beginning")
    sizes, got = [], []
    while batch := follower.read(7):
        sizes.append(len(batch))
        got += data(batch)
        assert follower.position == batch[-1].position
    assert sizes == [7, 7, 7, 7, 7, 5]
    assert got == numbered(0, 40)


def test_close_ends_reading(tmp_path: Path) -> None:
    """After close() read() returns nothing, and the file is released."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"a\n")
    follower = follow(path, Recorder(), start_at="beginning")
    follower.close()
    assert follower.read() == []


# -- rotation ---------------------------------------------------------------------------------


def test_rename_rotation_drains_the_old_file_before_the_new_one(tmp_path: Path) -> None:
    """Lines written to the old file just before the rename come first, under the backup's name."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000)
    write_all(writer, numbered(0, 3))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 3)
    write_all(writer, numbered(3, 6))  # unread when the rotation happens
    writer.rotate()
    write_all(writer, numbered(6, 9))
    lines = drain(follower)
    [backup] = backups_of(path)
    assert data(lines) == numbered(3, 9)
    assert [line.path for line in lines] == [backup] * 3 + [str(path)] * 3
    assert [line.lineno for line in lines] == [4, 5, 6, 1, 2, 3]
    assert rec.fields("rotation_followed") == [
        {"path": str(path), "backup": backup, "offset": os.path.getsize(backup)}]
    assert follower.rotations == 1


def test_several_rotations_between_two_reads_are_read_in_order(tmp_path: Path) -> None:
    """Backups made while the reader was busy are read, oldest first, before the live file."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=200)
    write_all(writer, numbered(0, 1))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    write_all(writer, numbered(1, 60))
    assert writer.rotations >= 5
    assert data(drain(follower)) == numbered(0, 60)
    assert len(rec.fields("backup_opened")) == writer.rotations - 1
    assert "data_lost" not in rec.names()


def test_path_missing_between_rename_and_create(tmp_path: Path) -> None:
    """Renamed but not yet recreated: the old file is drained, then the new one is read from 0."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"a\n")
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == [b"a"]
    append(path, b"b\n")
    os.rename(path, tmp_path / "audit-2024-05-01T12-00-00.000.log")
    assert data(drain(follower)) == [b"b"]
    assert rec.names()[-1] == "file_missing"
    path.write_bytes(b"c\n")
    assert data(drain(follower)) == [b"c"]
    assert rec.names()[-1] == "file_appeared"


def test_backup_compressed_and_pruned_while_being_drained(tmp_path: Path) -> None:
    """A backup gzipped and then pruned before we finished it is still read through the open descriptor."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000, compress=True, max_backups=1, mill="manual")
    write_all(writer, numbered(0, 2))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 2)
    write_all(writer, numbered(2, 5))  # still unread in the first file...
    writer.rotate()
    write_all(writer, numbered(5, 7))
    writer.run_mill()  # ...which is now only a .gz
    assert [name.endswith(".log.gz") for name in backups_of(path)] == [True]
    writer.rotate()
    write_all(writer, numbered(7, 9))
    writer.run_mill()  # ...and now gone entirely (MaxBackups=1 keeps the second file's .gz)
    assert len(backups_of(path)) == 1
    assert data(drain(follower)) == numbered(2, 9)
    assert "data_lost" not in rec.names()


def test_the_file_that_replaced_a_rotated_one_is_held_open_until_read(tmp_path: Path) -> None:
    """Noticing a rotation opens the new file at once: pruned before we get to it, it is still read."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000, max_backups=1, mill="manual")
    write_all(writer, numbered(0, 1))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 1)
    write_all(writer, numbered(1, 4))
    writer.rotate()
    write_all(writer, numbered(4, 6))  # the second file
    got = data(follower.read(1))  # notices the rotation, holds the second file, returns one line
    writer.rotate()
    write_all(writer, numbered(6, 8))
    writer.run_mill()  # MaxBackups=1: the first file's backup is pruned...
    writer.rotate()
    write_all(writer, numbered(8, 10))
    writer.run_mill()  # ...and then the second file's
    assert all(os.path.getsize(b) < 100 for b in backups_of(path))  # only the third file's backup is left
    got += data(drain(follower))
    assert got == numbered(1, 10)
    assert "data_lost" not in rec.names()


def test_files_rotated_and_pruned_before_the_follower_looked_are_reported(tmp_path: Path) -> None:
    """A follower several rotations behind cannot read files pruned unseen, but says so."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000, max_backups=1)
    write_all(writer, numbered(0, 2))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 2)
    write_all(writer, numbered(2, 3))
    for start in (3, 5, 7):  # three rotations while the follower does not look: the second file is pruned
        writer.rotate()
        write_all(writer, numbered(start, start + 2))
    got = data(drain(follower))
    assert got == numbered(2, 3) + numbered(5, 9)  # the first file (held open), then what is left
    assert "gap_possible" in rec.names()  # its backup was gone when we noticed: files after it may be too


def test_a_file_seen_while_catching_up_then_pruned_unread_is_reported(tmp_path: Path) -> None:
    """While reading older backups we notice the held file rotate; if what replaced it is pruned, say so."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000, max_backups=0, mill="manual")
    write_all(writer, numbered(0, 2))
    saved = position_after(path, 1)
    for start in (2, 4):  # down for two rotations: two backups to catch up with, the live file held
        writer.rotate()
        write_all(writer, numbered(start, start + 2))
    rec = Recorder()
    follower = follow(path, rec, resume=saved)
    got = data(follower.read(1))  # in the first backup; the live (third) file is held
    writer.rotate()  # the third file rotates, a fourth is live...
    write_all(writer, numbered(6, 8))
    got += data(follower.read(1))  # ...which we notice (and note) while still catching up
    writer.rotate()
    write_all(writer, numbered(8, 10))
    os.remove(sorted(backups_of(path))[-1])  # the fourth file's backup pruned before we got to it
    got += data(drain(follower))
    assert got == numbered(1, 6) + numbered(8, 10)
    assert [f["reason"] for f in rec.fields("data_lost")] == ["rotated_and_pruned_unread"]


def test_torn_line_at_rotation_is_reported_and_the_next_file_is_whole(tmp_path: Path) -> None:
    """A short write left half a line at the end of a rotated file: reported once, never glued to the next."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000)
    write_all(writer, numbered(0, 1))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    writer.write_raw(b'{"auditID":"cut sh')
    assert data(drain(follower)) == numbered(0, 1)
    writer.rotate()
    write_all(writer, numbered(1, 3))
    assert data(drain(follower)) == numbered(1, 3)
    [backup] = backups_of(path)
    assert [(bad.reason, str(bad.location)) for bad in rec.bad] == [("torn_line", f"{backup}:2")]
    assert rec.fields("torn_line") == [{"path": backup, "bytes": 18}]


def test_line_written_in_two_halves_is_returned_once_whole(tmp_path: Path) -> None:
    """A line is only returned once its newline has arrived, however long the pause between halves."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000)
    writer.write_raw(b"")
    follower = follow(path, Recorder(), start_at="beginning")
    writer.write_raw(b'{"auditID":"first half')
    assert follower.read() == []
    assert follower.read() == []
    writer.write_raw(b' and second half"}\n')
    assert data(follower.read()) == [b'{"auditID":"first half and second half"}']
    assert follower.read() == []


def test_over_long_line_is_skipped_once_and_the_next_line_is_intact(tmp_path: Path) -> None:
    """A 2 MB line is reported once and never held whole; the line after it comes back unharmed."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"before\n")
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(follower.read()) == [b"before"]
    chunk = b"x" * (512 * 1024)
    tracemalloc.start()
    try:
        got = []
        for _ in range(4):
            append(path, chunk)
            got += follower.read()
        append(path, b"\nafter\n")
        got += drain(follower)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert data(got) == [b"after"]
    assert got[0].lineno == 3
    assert [(bad.reason, bad.location.line if bad.location else None) for bad in rec.bad] == [("line_too_long", 2)]
    assert peak < 3 * 1024 * 1024  # the limit (1 MiB) plus a block or two; never the 2 MiB line (twice)


# -- resuming ---------------------------------------------------------------------------------


def test_position_round_trips_through_bytes() -> None:
    """to_bytes/from_bytes give back an equal Position; anything else is a SourceError."""
    position = Position(FileIdentity(1, 2, "ab" * 16, 1024), 99, "/var/log/audit.log")
    assert Position.from_bytes(position.to_bytes()) == position
    complete = Position(position.identity, 99, "/var/log/audit-2024-05-01T12-00-00.000.log", complete=True)
    assert Position.from_bytes(complete.to_bytes()) == complete
    not_bool = complete.to_bytes().replace(b"true", b"1")
    for bad in (b"", b"[]", b'{"v":2}', b'{"v":1,"dev":-1}', b"\xff", not_bool):
        with pytest.raises(SourceError):
            Position.from_bytes(bad)


def test_resume_in_the_same_file_continues_after_the_position(tmp_path: Path) -> None:
    """A restart resumes exactly after the checkpointed line (line numbers unknown from there)."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000)
    write_all(writer, numbered(0, 5))
    saved = position_after(path, 3)
    write_all(writer, numbered(5, 7))
    rec = Recorder()
    lines = drain(follow(path, rec, resume=Position.from_bytes(saved.to_bytes())))
    assert data(lines) == numbered(3, 7)
    assert lines[0].lineno is None
    assert rec.names() == ["follow_started"]


@pytest.mark.parametrize("compress", [False, True])
def test_resume_finds_the_rotated_file_then_reads_newer_backups(tmp_path: Path, compress: bool) -> None:
    """Down across several rotations: resume in the backup (even gzipped), then each newer one, then the live file."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=300, compress=compress)
    write_all(writer, numbered(0, 5))
    saved = position_after(path, 2)
    write_all(writer, numbered(5, 60))
    assert writer.rotations >= 4
    rec = Recorder()
    assert data(drain(follow(path, rec, resume=saved))) == numbered(2, 60)
    [resumed] = rec.fields("backup_resumed")
    assert resumed["compressed"] is compress
    assert str(resumed["path"]).endswith(".log.gz" if compress else ".log")
    assert "data_lost" not in rec.names()


@pytest.mark.parametrize("compress", [False, True])
def test_resume_after_the_file_was_pruned_reports_the_loss_and_reads_the_rest(tmp_path: Path, compress: bool) -> None:
    """If the checkpointed file is gone, say so loudly, then read every backup left, in order, then the live file."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=300, compress=compress, max_backups=2)
    write_all(writer, numbered(0, 5))
    saved = position_after(path, 2)
    write_all(writer, numbered(5, 80))
    rec = Recorder()
    got = data(drain(follow(path, rec, resume=saved)))
    oldest_left = numbered(0, 80).index(got[0])
    assert got == numbered(oldest_left, 80)
    assert oldest_left > 5
    assert rec.fields("data_lost") == [
        {"path": saved.path, "identity": str(saved.identity), "bytes_lost": None, "reason": "resume_file_gone"}]


@pytest.mark.parametrize("compress", [False, True])
def test_resume_after_a_file_read_to_its_end_was_pruned_reports_no_loss(tmp_path: Path, compress: bool) -> None:
    """Once a rotated file is read to its end the position says so: if that file is pruned while
    detector is down, nothing of it was lost, and reading goes on with every newer file."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=300, compress=compress, max_backups=2)
    write_all(writer, numbered(0, 12))  # 23 bytes a line: 13 fit in 300
    first = follow(path, Recorder(), start_at="beginning")
    assert data(drain(first)) == numbered(0, 12)
    assert not first.position.complete  # type: ignore[union-attr]
    writer.rotate()  # the new audit.log stays empty: nothing else moves the position on
    assert drain(first) == []
    saved = first.position
    first.close()
    assert saved is not None and saved.complete
    assert saved.path == backups_of(path)[0]  # its backup name (.log.gz once compressed)
    write_all(writer, numbered(12, 39))  # two more rotations: the finished file is pruned
    assert saved.path not in backups_of(path)
    assert len(backups_of(path)) == 2
    rec = Recorder()
    assert data(drain(follow(path, rec, resume=Position.from_bytes(saved.to_bytes())))) == numbered(12, 39)
    assert "data_lost" not in rec.names()
    assert rec.fields("resume_file_finished") == [
        {"path": saved.path, "identity": str(saved.identity), "next": backups_of(path)[0]}]


def test_backup_pruned_during_catch_up_is_reported_with_its_size(tmp_path: Path) -> None:
    """A backup pruned before we reached it is a reported loss with its size, and reading goes on after it."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=300, max_backups=0, mill="manual")
    write_all(writer, numbered(0, 5))
    saved = position_after(path, 2)
    write_all(writer, numbered(5, 40))
    backups = backups_of(path)
    rec = Recorder()
    follower = follow(path, rec, resume=saved)
    got = data(follower.read(1))  # in the first backup now, the others queued
    pruned = backups[1]
    size = os.path.getsize(pruned)
    lost = {line.rstrip(b"\n") for line in Path(pruned).read_bytes().splitlines()}
    os.remove(pruned)
    got += data(drain(follower))
    assert got == [line for line in numbered(2, 40) if line not in lost]
    assert rec.fields("data_lost") == [
        {"path": pruned, "identity": None, "bytes_lost": size, "reason": "pruned_before_read"}]
    assert follower.lost_bytes == size


def test_every_line_position_resumes_exactly_after_that_line(tmp_path: Path) -> None:
    """Resuming from any returned line's position yields exactly the lines after it, across gzipped backups."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=150, compress=True)
    write_all(writer, numbered(0, 20))
    everything = drain(follow(path, Recorder(), start_at="beginning"))
    # start_at="beginning" reads the live file only; backups are older: resume from the first backup instead
    lines = drain(follow(path, Recorder(), resume=first_position(path)))
    assert data(lines) == numbered(0, 20)
    assert data(everything) == data(lines)[-len(everything):]
    for i, line in enumerate(lines):
        rec = Recorder()
        assert data(drain(follow(path, rec, resume=line.position))) == numbered(i + 1, 20), i
        assert "data_lost" not in rec.names()


def first_position(path: Path) -> Position:
    """A position at the very start of the oldest backup (whose first bytes are read to identify it)."""
    oldest = backups_of(path)[0]
    with gzip.open(oldest, "rb") as stream:
        head = stream.read(1024)
    info = os.stat(oldest)
    return Position(FileIdentity.of(info.st_dev, info.st_ino, head), 0, oldest)


def test_a_reused_inode_is_not_mistaken_for_the_saved_file(tmp_path: Path) -> None:
    """Same inode number, other first bytes: a different file, so the saved offset is not applied to it."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"".join(line + b"\n" for line in numbered(0, 4)))
    saved = drain(follow(path, Recorder(), start_at="beginning"))[1].position
    reused = Position(FileIdentity(saved.identity.dev, saved.identity.inode, "0" * 32, 1024), saved.offset, saved.path)
    rec = Recorder()
    assert data(drain(follow(path, rec, resume=reused))) == numbered(0, 4)
    assert [f["reason"] for f in rec.fields("data_lost")] == ["resume_file_gone"]


# -- truncation (copytruncate) ----------------------------------------------------------------


def test_copytruncate_restarts_at_zero(tmp_path: Path) -> None:
    """Same inode, smaller than our offset: reported, then the file is read again from its start."""
    path = tmp_path / "audit.log"
    path.write_bytes(numbered(0, 1)[0] + b"\n")
    writer = small_writer(path, max_size=10_000)  # appends to the existing file: O_APPEND
    write_all(writer, numbered(1, 3))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 3)
    writer.copytruncate()
    write_all(writer, numbered(3, 4))
    lines = drain(follower)
    assert data(lines) == numbered(3, 4)
    assert lines[0].lineno == 1
    [event] = rec.fields("file_truncated")
    assert event["rewritten"] is False and event["bytes_lost"] == 0


def test_copytruncate_loss_beyond_what_was_read_is_counted(tmp_path: Path) -> None:
    """Bytes we knew were there but had not read when the file was truncated are reported lost."""
    path = tmp_path / "audit.log"
    body = b"".join(line + b"\n" for line in numbered(0, 6000, width=80))
    path.write_bytes(body)
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    got = follower.read(1)  # one block read: the rest of the file is known but unread
    os.truncate(path, 0)
    append(path, b"new\n")
    got += drain(follower)
    assert data(got)[-1] == b"new"
    [event] = rec.fields("file_truncated")
    assert isinstance(event["bytes_lost"], int) and event["bytes_lost"] > 0
    assert follower.lost_bytes == event["bytes_lost"]
    assert rec.fields("data_lost")[0]["reason"] == "truncated_before_read"


def test_copytruncate_with_a_writer_without_o_append_skips_the_nul_hole(tmp_path: Path) -> None:
    """After lumberjack's own rotation its fd has no O_APPEND: writes after a truncate leave NULs first."""
    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=10_000)  # creates the file: no O_APPEND
    write_all(writer, numbered(0, 3))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 3)
    writer.copytruncate()
    write_all(writer, numbered(3, 5))
    assert path.read_bytes().startswith(b"\0")
    assert data(drain(follower)) == numbered(3, 5)
    [event] = rec.fields("file_truncated")
    assert event["rewritten"] is True
    assert rec.bad == []


# -- missing file, missing directory ----------------------------------------------------------


def test_missing_file_is_read_from_its_beginning_once_it_appears(tmp_path: Path) -> None:
    """Nothing was there to skip: a file that appears after the start is read whole, even with start_at=end."""
    path = tmp_path / "audit.log"
    rec = Recorder()
    follower = follow(path, rec, start_at="end")
    assert follower.read() == []
    assert follower.position is None
    write_all(small_writer(path), numbered(0, 3))
    lines = drain(follower)
    assert data(lines) == numbered(0, 3)
    assert lines[0].lineno == 1
    assert rec.names() == ["file_missing", "file_appeared"]


def test_directory_deleted_and_recreated(tmp_path: Path) -> None:
    """Unread lines of a deleted file are drained; the file in the recreated directory is read from 0."""
    directory = tmp_path / "logs"
    path = directory / "audit.log"
    writer = small_writer(path, max_size=10_000)
    write_all(writer, numbered(0, 2))
    rec = Recorder()
    follower = follow(path, rec, start_at="beginning")
    assert data(drain(follower)) == numbered(0, 2)
    write_all(writer, numbered(2, 3))
    writer.close()
    shutil.rmtree(directory)
    assert data(drain(follower)) == numbered(2, 3)
    assert rec.names()[-1] == "file_missing"
    assert follower.read() == []
    write_all(small_writer(path, max_size=10_000), numbered(3, 5))
    assert data(drain(follower)) == numbered(3, 5)
    assert rec.names()[-1] == "file_appeared"
    assert "data_lost" not in rec.names()


def test_lag_bytes_counts_what_is_written_but_unread(tmp_path: Path) -> None:
    """lag_bytes is what the last look at the file showed beyond our offset."""
    path = tmp_path / "audit.log"
    path.write_bytes(b"a\n" * 200_000)
    follower = follow(path, Recorder(), start_at="beginning")
    follower.read(1)
    assert 0 < follower.lag_bytes <= 400_000
    drain(follower)
    assert follower.lag_bytes == 0


def test_resume_waits_out_a_backup_being_compressed(tmp_path: Path) -> None:
    """A restart that lands inside lumberjack's compression (the `.log` gone, its `.gz` still
    empty) finds the file once the `.gz` has its first bytes, and reports no loss."""
    import threading  # noqa: PLC0415
    import time  # noqa: PLC0415

    path = tmp_path / "audit.log"
    writer = small_writer(path, max_size=300, compress=False)
    write_all(writer, numbered(0, 5))
    saved = position_after(path, 2)
    write_all(writer, numbered(5, 30))
    [oldest] = [Path(p) for p in sorted(backups_of(path))[:1]]
    content = oldest.read_bytes()
    gz = Path(f"{oldest}.gz")
    gz.write_bytes(b"")  # lumberjack has created the .gz and is about to fill it
    oldest.unlink()

    def finish_compression() -> None:
        time.sleep(0.3)
        gz.write_bytes(gzip.compress(content))

    filler = threading.Thread(target=finish_compression)
    filler.start()
    rec = Recorder()
    try:
        got = data(drain(follow(path, rec, resume=saved)))
    finally:
        filler.join()
    assert got == numbered(2, 30)
    assert "data_lost" not in rec.names()
    [resumed] = rec.fields("backup_resumed")
    assert resumed["compressed"] is True
