"""The real `detector run` when its state directory fails: full, deleted, damaged or empty.

The checkpoint must never pass an alert that is not committed: a state_dir that fills up stops
the loop before the batch (retrying it, /readyz false) and, once space is back, every alert of
every event is delivered, also across a SIGTERM in between.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.integration.live.harness import REPO, Detector, event_line, wait_for

EVENTS = 3000


def free_port() -> int:
    import socket  # noqa: PLC0415

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def readyz(port: int) -> tuple[int, dict[str, object]]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/readyz", timeout=5) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.fixture
def small_state_dir(tmp_path: Path) -> Iterator[Path]:
    """A 256 KiB tmpfs for state_dir (root only: mount)."""
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs for a full state_dir needs root")
    state = tmp_path / "state"
    state.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=256k,mode=0700", "tmpfs", str(state)],
                          capture_output=True, text=True, check=False)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield state
    finally:
        subprocess.run(["umount", "-l", str(state)], check=False)


def grow(state: Path) -> None:
    subprocess.run(["mount", "-o", "remount,size=64m", str(state)], check=True)


def write_events(detector: Detector, count: int) -> None:
    with detector.log.open("ab") as log:
        for n in range(count):
            log.write(event_line(n))


def delivered_ids(detector: Detector) -> set[str]:
    return set(detector.alert_ids())


def test_a_full_state_dir_holds_the_batch_and_delivers_every_alert_once_space_is_back(
        tmp_path: Path, small_state_dir: Path) -> None:
    port = free_port()
    detector = Detector(tmp_path, metrics={"listen": f"127.0.0.1:{port}"})
    detector.start()
    detector.wait_started()
    write_events(detector, EVENTS)
    wait_for(lambda: '"event": "state_write_failed"' in detector.log_text(), 60, "the state_dir to fill up")
    status, body = readyz(port)
    assert status == 503 and body["state_writable"] is False
    assert detector.proc is not None and detector.proc.poll() is None  # waits, does not crash
    assert len(delivered_ids(detector)) < EVENTS
    grow(small_state_dir)
    wait_for(lambda: len(delivered_ids(detector)) >= EVENTS, 60, "every alert after space came back")
    assert delivered_ids(detector) == {f"id-{n:09d}" for n in range(EVENTS)}
    assert '"event": "state_write_recovered"' in detector.log_text()
    wait_for(lambda: readyz(port)[0] == 200, 10, "/readyz to be true again")
    assert detector.log_text().count('"event": "state_write_failed"') <= 3  # once per state change, not per try
    assert detector.terminate()[0] == 0


def test_stopped_while_the_state_dir_is_full_the_restart_loses_nothing(tmp_path: Path, small_state_dir: Path) -> None:
    """SIGTERM while the batch cannot be stored: a non-zero exit with one line, the checkpoint
    still before the batch; after space is back the restart delivers every alert."""
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    write_events(detector, EVENTS)
    wait_for(lambda: '"event": "state_write_failed"' in detector.log_text(), 60, "the state_dir to fill up")
    code, _seconds = detector.terminate()
    assert code == 2
    assert "alerts could not be stored" in detector.log_text()
    assert "Traceback" not in detector.log_text()
    grow(small_state_dir)
    detector.start()
    detector.wait_started()
    wait_for(lambda: len(delivered_ids(detector)) >= EVENTS, 60, "every alert after the restart")
    assert delivered_ids(detector) == {f"id-{n:09d}" for n in range(EVENTS)}
    assert detector.terminate()[0] == 0


def test_the_database_deleted_while_running_stops_the_run_and_the_restart_says_so(tmp_path: Path) -> None:
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    write_events(detector, 5)
    wait_for(lambda: len(delivered_ids(detector)) >= 5, 30, "the first alerts")
    (tmp_path / "state" / "detector.db").unlink()
    assert detector.proc is not None
    assert detector.proc.wait(timeout=30) == 2
    assert "was deleted or replaced while detector ran" in detector.log_text()
    detector.start()
    detector.wait_started()
    assert '"event": "state_database_missing"' in detector.log_text()
    assert detector.terminate()[0] == 0


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detector", *args], capture_output=True, text=True,
                          cwd=REPO, timeout=60, check=False)


def test_a_damaged_database_is_one_line_and_exit_2_for_run_and_outbox(tmp_path: Path) -> None:
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    write_events(detector, 50)
    wait_for(lambda: len(delivered_ids(detector)) >= 50, 30, "the first alerts")
    assert detector.terminate()[0] == 0
    database = tmp_path / "state" / "detector.db"
    with database.open("r+b") as f:  # keep the header (it still opens), ruin the pages after it
        f.seek(4096)
        f.write(b"\xff" * 8192)
    for args in (["run", "--config", str(detector.config)], ["outbox", "list", "--state-dir", str(tmp_path / "state")]):
        done = run_cli(*args)
        assert done.returncode == 2, done
        lines = [line for line in done.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "the state database is damaged" in lines[0], done.stderr
        assert "Traceback" not in done.stderr


def test_an_empty_database_file_is_a_warning_not_a_silent_first_start(tmp_path: Path) -> None:
    detector = Detector(tmp_path)
    (tmp_path / "state").mkdir(mode=0o700)
    (tmp_path / "state" / "detector.db").write_bytes(b"")
    detector.start()
    detector.wait_started()
    assert '"event": "state_database_empty"' in detector.log_text()
    write_events(detector, 3)
    wait_for(lambda: len(delivered_ids(detector)) >= 3, 30, "alerts")
    assert detector.terminate()[0] == 0
