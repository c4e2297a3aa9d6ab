"""The follower against the real lumberjack.v2 (Go), as kube-apiserver uses it: nothing lost, nothing twice."""

from __future__ import annotations

import subprocess
import threading
import time
from pathlib import Path

from detector.errors import BadInput
from detector.source.tail import Follower
from detector.source.watch import Waker
from tests.support.lumberjack import Lumberjack, TickingClock

LINES = 20_000
MAX_AHEAD = 2_000  # lines the writer may be ahead of the reader: ~0.9 MB, under one rotation of MaxSize=1


def test_real_lumberjack_rotating_compressing_and_pruning_loses_and_repeats_nothing(
        golumberjack: Path, tmp_path: Path) -> None:
    """~9 MB through MaxSize=1, Compress, MaxBackups=3 while following: every line exactly once, in order."""
    path = tmp_path / "audit.log"
    lines = [b'{"kind":"Event","auditID":"%08d","pad":"%s"}' % (i, b"x" * 400) for i in range(LINES)]
    bad: list[BadInput] = []
    events: list[str] = []
    follower = Follower(str(path), start_at="beginning", on_bad=bad.append,
                        on_event=lambda name, fields: events.append(name))
    waker = Waker(str(path), mode="auto")
    writer = subprocess.Popen(
        [str(golumberjack), "-path", str(path), "-maxsize", "1", "-maxbackups", "3", "-compress"],
        stdin=subprocess.PIPE)
    assert writer.stdin is not None
    progress = threading.Condition()
    received = 0

    def feed() -> None:
        """Send lines in batches, never more than MAX_AHEAD ahead of what the follower has returned."""
        assert writer.stdin is not None
        for start in range(0, LINES, 500):
            with progress:
                progress.wait_for(lambda start=start: received >= start - MAX_AHEAD, timeout=30)
            writer.stdin.write(b"".join(line + b"\n" for line in lines[start:start + 500]))
            writer.stdin.flush()
        writer.stdin.close()

    feeder = threading.Thread(target=feed)
    feeder.start()
    got: list[bytes] = []
    deadline = time.monotonic() + 30
    try:
        while len(got) < LINES and time.monotonic() < deadline:
            batch = follower.read()
            if batch:
                got += [line.data for line in batch]
                with progress:
                    received = len(got)
                    progress.notify_all()
            else:
                waker.wait(0.5)
    finally:
        feeder.join(30)
        writer.wait(30)
        waker.close()
        follower.close()
    assert writer.returncode == 0
    assert len(got) == LINES
    assert got == lines
    assert bad == []
    assert "data_lost" not in events
    # ~8.6 MB through MaxSize=1: 8 rotations, each followed from the renamed file or, when two
    # came between two looks (the writer may be up to ~1.1 MB ahead), read as a backup.
    assert follower.rotations + events.count("backup_opened") >= 8, (follower.rotations, events)
    assert follower.rotations >= 1, events


def test_python_double_cuts_files_exactly_like_the_real_lumberjack(golumberjack: Path, tmp_path: Path) -> None:
    """Same existing file, same events: tests/support/lumberjack.py and lumberjack.v2 leave the same files."""
    events = [b'{"auditID":"%06d","pad":"%s"}\n' % (i, b"y" * (i % 700)) for i in range(10_000)]
    existing = b'{"auditID":"before"}\n' * 5000  # the first-open rule: appended to, not replaced
    contents = {}
    for kind in ("go", "python"):
        directory = tmp_path / kind
        directory.mkdir()
        (directory / "audit.log").write_bytes(existing)
        if kind == "go":
            subprocess.run([str(golumberjack), "-path", str(directory / "audit.log"), "-maxsize", "1"],
                           input=b"".join(events), check=True, timeout=60)
        else:
            writer = Lumberjack(directory / "audit.log", max_size=1, clock=TickingClock())
            for event in events:
                writer.write(event)
            writer.close()
        backups = sorted(p for p in directory.iterdir() if p.name != "audit.log")
        contents[kind] = [p.read_bytes() for p in [*backups, directory / "audit.log"]]
    assert len(contents["go"]) >= 4
    assert [len(c) for c in contents["python"]] == [len(c) for c in contents["go"]]
    assert contents["python"] == contents["go"]
