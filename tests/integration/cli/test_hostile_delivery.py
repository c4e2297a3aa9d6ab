"""The real `detector` against bad output config and a process-group SIGTERM (issue 14)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess
from typing import Any
from urllib.parse import quote

import pytest
import yaml

from tests.support.hostile import HostileReceiver, Request, reply, wait_until

Run = Callable[..., CompletedProcess[str]]
REPO = Path(__file__).resolve().parents[3]
TOKEN = "XyZs3cr3tT0kenValue12"
RULE = """\
- rule: Every Event
  desc: every event
  condition: ka.auditid exists
  output: seen %ka.auditid
  priority: WARNING
  source: k8s_audit
"""
EVENT = (b'{"kind":"Event","apiVersion":"audit.k8s.io/v1","level":"Metadata","auditID":"a-1","stage":'
         b'"ResponseComplete","requestURI":"/api/v1/pods","verb":"list","user":{"username":"u"},'
         b'"sourceIPs":["10.0.0.1"],"objectRef":{"resource":"pods"},"responseStatus":{"code":200},'
         b'"requestReceivedTimestamp":"2026-01-01T00:00:00.000000Z","stageTimestamp":"2026-01-01T00:00:00.000100Z"}\n')


def write_config(tmp_path: Path, output: dict[str, Any]) -> Path:
    (tmp_path / "rules.yaml").write_text(RULE)
    (tmp_path / "audit.log").write_bytes(EVENT)
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump({
        "file": str(tmp_path / "audit.log"), "rules": [str(tmp_path / "rules.yaml")], "start_at": "beginning",
        "state_dir": str(tmp_path / "state"), "log_format": "json", "outputs": [output]}))
    return config


@pytest.mark.parametrize(("output", "key"), [
    ({"url": "http://[::1/hook"}, "url"),
    ({"url": "http://[::1]:99999/hook"}, "url"),
    ({"url": "ftp://example.com/hook"}, "url"),
    ({"url": "file:///etc/passwd"}, "url"),
    ({"url": "http://h/x", "timeout": float("nan")}, "timeout"),
    ({"url": "http://h/x", "timeout": float("inf")}, "timeout"),
    ({"url": "http://h/x", "timeout": -1}, "timeout"),
    ({"url": "http://h/x", "timeout": 0}, "timeout"),
], ids=["ipv6-bracket", "port", "ftp", "file", "nan", "inf", "negative", "zero"])
def test_bad_output_values_exit_2_with_one_line(detector: Run, tmp_path: Path, output: dict[str, Any],
                                                 key: str) -> None:
    """`run` and `send-test-alert` refuse the config with one line naming the key, exit 2."""
    config = write_config(tmp_path, {"name": "hook", "type": "webhook", **output})
    for command in ("run", "send-test-alert"):
        result = detector(command, "--config", str(config), timeout=30)
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (command, result.stderr)
        assert len(lines) == 1 and f"outputs[0].{key}" in lines[0], (command, result.stderr)


def test_sigterm_to_the_process_group_is_a_clean_stop(tmp_path: Path) -> None:
    """`docker stop`/systemd signal every process of the group, the delivery child too: exit 0,
    no error-level line but the dead letter's; and the secret a receiver echoed stays out of the log, `outbox list`
    and the database."""
    def answer(request: Request, conn: Any, _stop: object) -> None:
        escaped = request.path.replace("/", "\\/")
        conn.sendall(reply(404, f"no hook {quote(request.path, safe='')} {escaped}".encode()))

    with HostileReceiver(answer) as receiver:
        config = write_config(tmp_path, {"name": "hook", "type": "webhook", "url_env": "HOOK_URL", "timeout": 2})
        env = {**os.environ, "HOOK_URL": f"{receiver.url}/services/T0123ABCD/B0456EFGH/{TOKEN}"}
        stderr = tmp_path / "stderr"
        with stderr.open("wb") as err:
            proc = subprocess.Popen([sys.executable, "-m", "detector", "run", "--config", str(config)], cwd=REPO,
                                    env=env, stdout=subprocess.DEVNULL, stderr=err, start_new_session=True)
        try:
            wait_until(lambda: "alert_dead_lettered" in stderr.read_text(), timeout=60)
            time.sleep(0.5)
            os.killpg(proc.pid, signal.SIGTERM)
            code = proc.wait(20)
        finally:
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
    log = stderr.read_text()
    assert code == 0, log
    errors = [line for line in log.splitlines() if '"level": "error"' in line]
    assert all('"event": "alert_dead_lettered"' in line for line in errors), log
    assert "delivery_worker_error" not in log, log
    listed = subprocess.run([sys.executable, "-m", "detector", "outbox", "list", "--config", str(config)],
                            cwd=REPO, capture_output=True, text=True, timeout=60, check=False)
    assert "HTTP 404: no hook" in listed.stdout, listed.stdout + listed.stderr
    database = b"".join(p.read_bytes() for p in (tmp_path / "state").glob("detector.db*")).decode("latin-1")
    for where, text in {"log": log, "outbox list": listed.stdout, "database": database}.items():
        assert TOKEN[:7] not in text, where
