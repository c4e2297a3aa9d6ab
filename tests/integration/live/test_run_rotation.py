"""`detector run` under real rotation, restarts and crashes: nothing lost, nothing repeated
beyond what was in flight."""

from __future__ import annotations

import re
from collections import Counter
from pathlib import Path
from typing import Protocol

from tests.integration.live.harness import Detector, event_line, wait_for
from tests.support.gobuild import GoLumberjack
from tests.support.lumberjack import Lumberjack

TOTAL = 100_000
KILL_AT = (10_000, 28_000, 46_000, 64_000)
# ~500 bytes an event, so ~2,080 events a file. Events behind the checkpoint at a kill plus those
# written while down must span fewer than MaxBackups rotations, or lumberjack prunes the
# checkpointed file before the restart (a real loss, rightly reported as DATA_LOST).
WRITTEN_WHILE_DOWN = 6_000  # ~3 MB: three rotations happen while detector is dead
MAX_LAG = 6_000  # keep the reader within reach of MaxBackups while it is up
KILL_LAG = 1_000  # and within half a file of the writer when it is killed


class Writer(Protocol):
    def write(self, line: bytes) -> object: ...

    def close(self) -> None: ...


def test_sigkill_restarts_under_rotation_lose_nothing(tmp_path: Path) -> None:
    """100,000 events through lumberjack rotation every 1 MB with gzip and MaxBackups=5; detector is
    SIGKILLed four times and more rotations happen while it is down: every event alerts, and
    duplicates stay within the kill windows."""
    detector = Detector(tmp_path)
    writer = Lumberjack(detector.log, max_size=1, max_backups=5, compress=True)
    kill_and_restart_through(detector, writer)
    assert writer.rotations >= 30


def test_sigkill_restarts_under_the_real_go_lumberjack_lose_nothing(golumberjack: Path, tmp_path: Path) -> None:
    """The same with kube-apiserver's own log writer, the Go lumberjack.v2, which compresses and
    prunes in a goroutine of its own, concurrently with the writes."""
    detector = Detector(tmp_path)
    writer = GoLumberjack(golumberjack, detector.log, max_size=1, max_backups=5, compress=True)
    kill_and_restart_through(detector, writer)
    backups = set(re.findall(r"audit-([0-9T.-]+)\.log", detector.log_text()))
    assert len(backups) >= 30, f"{len(backups)} rotated files read"


def kill_and_restart_through(detector: Detector, writer: Writer) -> None:
    """Write TOTAL events, SIGKILL detector at KILL_AT and write more while it is down; then
    check that every event alerted, repeats stay within the kill windows, and nothing was lost."""
    detector.start()
    detector.wait_started()
    n = 0
    for stop in (*KILL_AT, TOTAL):
        while n < stop:
            if n - detector.delivered() > MAX_LAG:
                wait_for(lambda n=n: n - detector.delivered() <= MAX_LAG // 2, 120, f"detector to catch up at {n}")
            writer.write(event_line(n))
            n += 1
        if stop == TOTAL:
            break
        wait_for(lambda n=n: n - detector.delivered() <= KILL_LAG, 120, f"detector to catch up before the kill at {n}")
        detector.kill()
        for _ in range(WRITTEN_WHILE_DOWN):
            writer.write(event_line(n))
            n += 1
        detector.start()
    writer.close()
    wait_for(lambda: detector.delivered() >= TOTAL, 300, "every event to alert")
    code, _took = detector.terminate()
    assert code == 0, detector.log_text()[-2000:]
    ids = Counter(detector.alert_ids())
    assert set(ids) == {f"id-{i:09d}" for i in range(n)}
    duplicates = sum(count - 1 for count in ids.values())
    assert duplicates <= 10 * len(KILL_AT), f"{duplicates} duplicates"
    assert "DATA_LOST" not in detector.log_text()


def test_a_rotated_file_read_to_its_end_then_pruned_while_down_is_no_loss(tmp_path: Path) -> None:
    """detector drains a rotated file, stops, the file is pruned while it is down: the restart
    reports nothing lost (`resume_file_finished`, no DATA_LOST) and reads on from the new file."""
    detector = Detector(tmp_path)
    writer = Lumberjack(detector.log, max_size=1, max_backups=5)
    for n in range(20):
        writer.write(event_line(n))
    detector.start()
    detector.wait_started()
    wait_for(lambda: detector.delivered() >= 20, 60, "the first file's alerts")
    writer.rotate()  # the new audit.log stays empty: only the end of the rotated file moves the checkpoint
    [backup] = [p for p in detector.log.parent.iterdir() if p.name != "audit.log"]
    wait_for(lambda: '"rotation_followed"' in detector.log_text(), 30, "the rotation to be followed")
    code, _took = detector.terminate()
    assert code == 0
    backup.unlink()  # pruned while detector is down
    for n in range(20, 30):
        writer.write(event_line(n))
    writer.close()
    detector.start()
    detector.wait_started()
    wait_for(lambda: detector.delivered() >= 30, 60, "the new file's alerts")
    assert detector.terminate()[0] == 0
    assert sorted(detector.alert_ids()) == [f"id-{i:09d}" for i in range(30)]
    assert "DATA_LOST" not in detector.log_text()
    assert '"resume_file_finished"' in detector.log_text()
