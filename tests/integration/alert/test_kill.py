"""Durability: alerts pending when the process is SIGKILLed are delivered by the next one,
each exactly once and in order, even when the restarted process submits them again."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import orjson

from tests.support.alertkit import make_alerts
from tests.support.receiver import Receiver, free_port

ROOT = Path(__file__).resolve().parents[3]


def child(state: Path, url: str, count: int, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen([sys.executable, "-m", "tests.integration.alert.kill_child", str(state), url,
                             str(count), mode], cwd=ROOT, stdout=subprocess.PIPE, text=True)


def test_pending_alerts_survive_sigkill(tmp_path: Path) -> None:
    """Enqueue 20 against a down receiver, kill -9, restart with the receiver up: 20 arrive once."""
    port = free_port()
    url = f"http://127.0.0.1:{port}/in"
    first = child(tmp_path, url, 20, "enqueue")
    assert first.stdout is not None and first.stdout.readline().strip() == "enqueued"
    os.kill(first.pid, signal.SIGKILL)
    assert first.wait(10) == -signal.SIGKILL
    first.stdout.close()
    with Receiver(port) as receiver:
        second = child(tmp_path, url, 20, "deliver")
        out, _ = second.communicate(timeout=30)
    assert second.returncode == 0, out
    assert out.strip() == "[(('siem', 'delivered'), 20)]"
    ids = [orjson.loads(r.body)["id"] for r in receiver.accepted()]
    assert ids == [a.id for a in make_alerts(20)]
