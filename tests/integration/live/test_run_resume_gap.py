"""`detector run` restarted after its checkpointed file was pruned: it says whether files after
that one may have been pruned unseen (`gap_possible`), and stays silent when it can prove not."""

from __future__ import annotations

import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import orjson
import pytest

from tests.integration.live.harness import Detector, event_line, wait_for
from tests.support.lumberjack import Lumberjack


def stamped(n: int, when: datetime | None = None) -> bytes:
    """`event_line(n)` stamped now (or `when`), as the API server stamps an event just before writing it."""
    doc = orjson.loads(event_line(n))
    doc["requestReceivedTimestamp"] = doc["stageTimestamp"] = (when or datetime.now(UTC)).strftime(
        "%Y-%m-%dT%H:%M:%S.%fZ")
    return orjson.dumps(doc) + b"\n"


def backups(log: Path) -> list[Path]:
    return sorted(p for p in log.parent.iterdir() if p.name != log.name)


def write_until_gone(writer: Lumberjack, backup: Path, n: int) -> int:
    """Write events numbered from `n` until `backup` is pruned; the next number."""
    while backup.exists():
        time.sleep(0.002)  # one rotation a millisecond at most: lumberjack's names have milliseconds
        writer.write(stamped(n))
        n += 1
    return n


def log_events(detector: Detector, name: str) -> list[dict[str, Any]]:
    """The JSON log lines of `detector` with event `name`."""
    found = []
    for line in detector.log_text().splitlines():
        if f'"{name}"' in line:
            doc = orjson.loads(line)
            if doc.get("event") == name:
                found.append(doc)
    return found


@pytest.mark.parametrize("next_pruned", [True, False])
def test_restart_after_the_checkpointed_file_was_pruned_reports_a_gap_only_if_one_is_possible(
        tmp_path: Path, next_pruned: bool) -> None:
    """detector drains a rotated file and stops; while it is down that file is pruned (and, in
    one case, the file after it too). The restart logs `gap_possible` naming the checkpointed
    file and the first file left when the next file is gone too, and nothing when it is there."""
    detector = Detector(tmp_path)
    writer = Lumberjack(detector.log, max_size=2_000, megabyte=1, max_backups=2)  # ~4 events a file
    for n in range(3):
        writer.write(stamped(n))
    detector.start()
    detector.wait_started()
    wait_for(lambda: detector.delivered() >= 3, 60, "the first file's alerts")
    trigger = datetime.now(UTC)  # the API server stamps the next event; lumberjack rotates for it
    time.sleep(0.002)
    writer.rotate()
    wait_for(lambda: '"rotation_followed"' in detector.log_text(), 30, "the rotation to be followed")
    assert detector.terminate()[0] == 0  # checkpoint: the rotated file, read to its end
    [checkpointed] = backups(detector.log)
    writer.write(stamped(3, trigger))
    n = write_until_gone(writer, checkpointed, 4)
    if next_pruned:
        n = write_until_gone(writer, backups(detector.log)[0], n)  # the file right after it too
    writer.close()
    oldest = backups(detector.log)[0]
    first_left = int(orjson.loads(oldest.read_bytes().split(b"\n")[0])["auditID"].removeprefix("id-"))
    detector.start()
    detector.wait_started()
    wait_for(lambda: detector.delivered() >= 3 + n - first_left, 60, "the alerts of the files left")
    assert detector.terminate()[0] == 0
    assert sorted(detector.alert_ids()) == [f"id-{i:09d}" for i in (*range(3), *range(first_left, n))]
    assert "DATA_LOST" not in detector.log_text()
    [finished] = log_events(detector, "resume_file_finished")
    assert finished["path"] == str(checkpointed)
    assert finished["next"] == str(oldest)
    gaps = log_events(detector, "gap_possible")
    if not next_pruned:  # the file right after the checkpointed one is there: provably no gap
        assert first_left == 3
        assert gaps == []
        return
    assert first_left > 3
    [gap] = gaps
    assert gap["level"] == "warning"
    assert gap["reason"] == "resume_file_pruned"
    assert gap["checkpoint"] == str(checkpointed)
    assert gap["next"] == str(oldest)
    assert gap["rotated_at"] < gap["next_first_event"]
