"""Tests for detector.source.tail on resume: silent when the files after the checkpoint are
provably all there, `gap_possible` when pruning may have taken some unseen."""

from __future__ import annotations

import gzip
import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from detector.source.backups import first_event_time, follows
from detector.source.position import Position
from detector.source.tail import Follower, Line
from tests.support.lumberjack import Lumberjack, TickingClock
from tests.unit.source.test_tail import Recorder, backups_of, drain, follow

AUDIT_TIME = "%Y-%m-%dT%H:%M:%S.%fZ"  # how the API server writes stageTimestamp


def event(n: int, when: datetime) -> bytes:
    """A small audit event line with a unique auditID and its stageTimestamp."""
    return b'{"auditID":"%08d","stageTimestamp":"%s"}\n' % (n, when.strftime(AUDIT_TIME).encode())


class AuditLog:
    """The API server writing through lumberjack: each event is stamped by the clock lumberjack
    names backups with, just before it is written (so a rotation's trigger event, first in the
    new file, is stamped before that rotation's name). ~4 events a file."""

    def __init__(self, path: Path, **options: Any) -> None:
        self.clock = TickingClock()
        self.writer = Lumberjack(path, max_size=300, megabyte=1, clock=self.clock, **options)
        self.n = 0

    def write(self, count: int = 1) -> None:
        for _ in range(count):
            self.writer.write(event(self.n, self.clock()))
            self.n += 1

    def write_until_gone(self, name: str) -> None:
        """Write events until the backup `name` (.log or .gz) is pruned; stop at that rotation."""
        while any(p.startswith(name.removesuffix(".gz")) for p in backups_of(Path(self.writer.filename))):
            self.write()


def ids(lines: list[Line]) -> list[int]:
    return [int(json.loads(line.data)["auditID"]) for line in lines]


def first_event(backup: str) -> dict[str, Any]:
    """A backup's first event (auditID as a number)."""
    opener: Any = gzip.open if backup.endswith(".gz") else open
    with opener(backup, "rb") as stream:
        doc: dict[str, Any] = json.loads(stream.readline())
    doc["auditID"] = int(doc["auditID"])
    return doc


def first_stamp(backup: str) -> str:
    """The stageTimestamp of a backup's first event, as written."""
    return str(first_event(backup)["stageTimestamp"])


def rotation_time(backup: str) -> str:
    """The rotation time a backup's name carries, as an audit timestamp."""
    found = re.search(r"audit-(.+?)\.log", backup)
    assert found is not None
    return datetime.strptime(found.group(1), "%Y-%m-%dT%H-%M-%S.%f").strftime(AUDIT_TIME)


def finished_position(log: AuditLog, path: Path) -> Position:
    """A checkpoint taken after the first file was read to its end: the API server stamped an
    event, lumberjack rotated, detector drained the old file and stopped before the event landed."""
    log.write(3)
    first = follow(path, Recorder(), start_at="beginning")
    assert len(drain(first)) == 3
    trigger = log.clock()
    log.writer.rotate()
    assert drain(first) == []
    saved = first.position
    first.close()
    log.writer.write(event(log.n, trigger))
    log.n += 1
    assert saved is not None and saved.complete
    return saved


def backup_position(log: AuditLog, path: Path) -> Position:
    """A checkpoint taken inside the first file after it was rotated (detector was catching up)."""
    log.write(4)
    first = follow(path, Recorder(), start_at="beginning")
    [line] = first.read(1)
    first.close()
    log.write()  # rotates
    with follow(path, Recorder(), resume=line.position) as second:
        [line] = second.read(1)
    assert line.position.path == backups_of(path)[0]
    return line.position


def live_position(log: AuditLog, path: Path) -> Position:
    """A checkpoint taken in the live file (its rotation time is not known then)."""
    log.write(3)
    first = follow(path, Recorder(), start_at="beginning")
    assert len(first.read(2)) == 2
    saved = first.position
    first.close()
    assert saved is not None and saved.path == str(path)
    return saved


CHECKPOINTS = {"finished": finished_position, "in_backup": backup_position, "live": live_position}


def resume(path: Path, saved: Position) -> tuple[list[int], Recorder]:
    rec = Recorder()
    with Follower(str(path), resume=Position.from_bytes(saved.to_bytes()), on_bad=rec.bad.append,
                  on_event=rec.on_event) as follower:
        return ids(drain(follower)), rec


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("kind", sorted(CHECKPOINTS))
def test_resume_with_every_file_since_the_checkpoint_left_reports_no_gap(
        tmp_path: Path, kind: str, compress: bool) -> None:
    """The checkpointed file found (live, rotated, gzipped) with every newer file: no gap, no loss."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, compress=compress, max_backups=10)
    saved = CHECKPOINTS[kind](log, path)
    read = {"finished": 3, "in_backup": 2, "live": 2}[kind]
    log.write(20)
    got, rec = resume(path, saved)
    assert got == list(range(read, log.n))
    assert "gap_possible" not in rec.names()
    assert "data_lost" not in rec.names()


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("kind", ["finished", "in_backup"])
def test_resume_after_the_checkpointed_file_and_the_next_were_pruned_reports_a_gap(
        tmp_path: Path, kind: str, compress: bool) -> None:
    """The checkpointed file and the one after it pruned while down: the first file left began
    after the checkpointed file's rotation, so files were lost unseen; `gap_possible` says which
    checkpoint, when its file ended and where reading picks up."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, compress=compress, max_backups=2)
    saved = CHECKPOINTS[kind](log, path)
    checkpointed = backups_of(path)[0]
    log.write_until_gone(checkpointed)
    log.write_until_gone(backups_of(path)[0])  # the next file too
    log.write(2)
    oldest = backups_of(path)[0]
    got, rec = resume(path, saved)
    assert got == list(range(first_event(oldest)["auditID"], log.n))
    assert rec.fields("gap_possible") == [{
        "path": str(path), "identity": str(saved.identity), "backups_left": 2, "reason": "resume_file_pruned",
        "checkpoint": saved.path, "rotated_at": rotation_time(checkpointed), "next": oldest,
        "next_first_event": first_stamp(oldest)}]
    assert [f["reason"] for f in rec.fields("data_lost")] == ([] if kind == "finished" else ["resume_file_gone"])


@pytest.mark.parametrize("compress", [False, True])
@pytest.mark.parametrize("kind", ["finished", "in_backup"])
def test_resume_after_only_the_checkpointed_file_was_pruned_proves_the_next_is_there(
        tmp_path: Path, kind: str, compress: bool) -> None:
    """The checkpointed file pruned, the one after it still there: its first event was stamped
    before the checkpointed file's rotation (it triggered it), so nothing came in between: no gap.
    A finished file names the next one; an unfinished one is still a loss of its rest."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, compress=compress, max_backups=2)
    saved = CHECKPOINTS[kind](log, path)
    log.write_until_gone(backups_of(path)[0])
    following = backups_of(path)[0]
    log.write(2)
    got, rec = resume(path, saved)
    assert "gap_possible" not in rec.names()
    if kind == "finished":
        assert got == list(range(3, log.n))
        assert rec.fields("resume_file_finished") == [
            {"path": saved.path, "identity": str(saved.identity), "next": following}]
    else:
        assert got == list(range(4, log.n))
        assert [f["reason"] for f in rec.fields("data_lost")] == ["resume_file_gone"]


def test_resume_from_a_live_file_since_pruned_cannot_prove_the_next_is_there(tmp_path: Path) -> None:
    """Checkpointed while it was the live file, then rotated and pruned: when it ended is unknown,
    so even the next file being there proves nothing: a loss and a possible gap."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_backups=2)
    saved = live_position(log, path)
    log.write(2)  # rotates
    log.write_until_gone(backups_of(path)[0])
    oldest = backups_of(path)[0]
    got, rec = resume(path, saved)
    assert got == list(range(first_event(oldest)["auditID"], log.n))
    assert [f["reason"] for f in rec.fields("data_lost")] == ["resume_file_gone"]
    [gap] = rec.fields("gap_possible")
    assert gap["checkpoint"] == str(path)
    assert gap["rotated_at"] is None
    assert gap["next"] == oldest
    assert gap["next_first_event"] == first_stamp(oldest)


def test_first_event_time_reads_the_stage_timestamp_of_a_whole_first_line() -> None:
    """Only a complete first line that is a JSON object with a zoned stageTimestamp gives a time."""
    when = datetime(2026, 11, 22, 10, 0, 0, 123456, tzinfo=UTC)
    assert first_event_time(event(1, when) + b'{"auditID":"2"') == when
    assert first_event_time(b'{"stageTimestamp":"2026-11-22T11:00:00.123456+01:00"}\n') == when
    for head in (event(1, when)[:-1], b"not json\n", b"[1]\n", b'{"stageTimestamp":5}\n',
                 b'{"stageTimestamp":"2026-11-22T10:00:00"}\n', b"[" * 100_000 + b"\n", b"\xff\n"):
        assert first_event_time(head) is None, head[:40]


def test_follows_accepts_a_first_event_up_to_the_end_of_the_stamp_millisecond() -> None:
    """A name's stamp is its rotation time cut to the millisecond: the next file's first event
    may carry any microsecond of that millisecond, not one past it."""
    stamp = "2026-11-22T10-00-00.005"
    assert follows(stamp, datetime(2026, 11, 22, 10, 0, 0, 5999, tzinfo=UTC))
    assert follows(stamp, datetime(2026, 11, 22, 9, 0, 0, tzinfo=UTC))
    assert not follows(stamp, datetime(2026, 11, 22, 10, 0, 0, 6000, tzinfo=UTC))
    assert not follows(stamp, None)


def test_resume_from_the_start_of_a_file_since_pruned_reports_its_bytes_lost(tmp_path: Path) -> None:
    """Checkpointed at offset 0 of a file that held bytes (a line in progress), which was then
    rotated and pruned: none of it was read, so it is a loss, not silence."""
    path = tmp_path / "audit.log"
    log = AuditLog(path, max_backups=2)
    line = event(0, log.clock())
    log.writer.write_raw(line[:30])
    with follow(path, Recorder(), start_at="beginning") as first:
        assert first.read() == []
        saved = first.position
    assert saved is not None and saved.offset == 0 and saved.identity.fingerprint_len == 30
    log.writer.write_raw(line[30:])
    log.n = 1
    log.write(4)  # rotates
    log.write_until_gone(backups_of(path)[0])
    got, rec = resume(path, saved)
    assert got == list(range(first_event(backups_of(path)[0])["auditID"], log.n))
    assert rec.fields("data_lost") == [
        {"path": str(path), "identity": str(saved.identity), "bytes_lost": None, "reason": "resume_file_gone"}]
    assert [gap["checkpoint"] for gap in rec.fields("gap_possible")] == [str(path)]
