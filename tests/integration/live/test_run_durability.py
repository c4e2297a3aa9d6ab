"""`detector run` makes its commits durable in batches (outbox.synchronous: batched, issue 13).

The engine commits each batch's alerts with its checkpoint at once (a crash of the process
loses nothing), and fsyncs them at most `sync_interval_seconds` later: by the next commit made
with synchronous=FULL, or, when none comes, by a small one of its own (`outbox.synced`).
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from tests.integration.live.harness import Detector, event_line, wait_for


def state_keys(db: Path) -> set[str]:
    reader = sqlite3.connect(f"file:{db}?mode=ro", uri=True)
    try:
        return {key for (key,) in reader.execute("SELECT key FROM state")}
    finally:
        reader.close()


@pytest.mark.parametrize("mode", ["batched", "full"])
def test_an_idle_detector_fsyncs_its_last_commits(tmp_path: Path, mode: str) -> None:
    """batched: once the log goes quiet after an alert, the sync of its own comes within the
    interval; full: every commit was fsynced, so none is needed."""
    detector = Detector(tmp_path, outbox={"synchronous": mode, "sync_interval_seconds": 0.2})
    db = tmp_path / "state" / "detector.db"
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(event_line(1))
    wait_for(lambda: detector.delivered() >= 1, 30, "the alert")
    if mode == "batched":
        wait_for(lambda: "outbox.synced" in state_keys(db), 10, "the batched sync after the alert")
    assert detector.terminate()[0] == 0
    keys = state_keys(db)
    assert "source.checkpoint" in keys
    assert ("outbox.synced" in keys) == (mode == "batched")
    assert "state_sync_failed" not in detector.log_text()
