"""`detector run` as an operator uses it: signals, reloads, odd input, bad config."""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time
from pathlib import Path

import orjson

from tests.integration.live.harness import CATCH_ALL, REPO, STARTED, Detector, event_line, wait_for
from tests.support.deepjson import nested_object, with_request_object
from tests.support.lumberjack import Lumberjack


def append(path: Path, data: bytes) -> None:
    with path.open("ab") as f:
        f.write(data)


def test_sigterm_exits_0_fast_and_resumes_without_repeats(tmp_path: Path) -> None:
    """SIGTERM stops within 5 s with exit 0; the next run starts after what was already handled."""
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    append(detector.log, b"".join(event_line(n) for n in range(50)))
    wait_for(lambda: detector.delivered() >= 50, 30, "first 50 alerts")
    code, took = detector.terminate()
    assert code == 0 and took < 5, (code, took)
    append(detector.log, b"".join(event_line(n) for n in range(50, 80)))
    detector.start()
    detector.wait_started()
    wait_for(lambda: detector.delivered() >= 80, 30, "the 30 written while stopped")
    assert detector.terminate()[0] == 0
    assert sorted(detector.alert_ids()) == [f"id-{n:09d}" for n in range(80)]


def test_torn_line_long_line_garbage_and_copytruncate(tmp_path: Path) -> None:
    """A line written in two halves alerts once, whole; a 2 MB line and garbage are skipped and
    reported; copytruncate is followed."""
    detector = Detector(tmp_path)
    writer = Lumberjack(detector.log, max_size=100)
    detector.start()
    detector.wait_started()
    line = event_line(1)
    writer.write_raw(line[:40])
    time.sleep(0.3)  # the pause itself is under test: the half line sits there across several wake-ups
    assert detector.delivered() == 0
    writer.write_raw(line[40:])
    writer.write(b'{"kind":"Event","auditID":"big","x":"' + b"a" * (2 << 20) + b'"}\n')
    writer.write(b"\x00\xff\xfe binary garbage\n")
    writer.write(event_line(2))
    wait_for(lambda: detector.delivered() >= 2, 30, "alerts for both good lines")
    writer.copytruncate()
    writer.write(event_line(3))
    wait_for(lambda: detector.delivered() >= 3, 30, "the line after copytruncate")
    assert detector.terminate()[0] == 0
    assert detector.alert_ids() == ["id-000000001", "id-000000002", "id-000000003"]
    log = detector.log_text()
    assert '"reason": "line_too_long"' in log and '"reason": "invalid_json"' in log
    assert "file_truncated" in log


def test_missing_file_at_start_is_read_when_it_appears(tmp_path: Path) -> None:
    """Started before the API server created the log, detector reads it from its first line."""
    detector = Detector(tmp_path, start_at="end")
    detector.start()
    detector.wait_started()
    append(detector.log, event_line(7))
    wait_for(lambda: detector.delivered() >= 1, 30, "the first line of the new file")
    assert detector.terminate()[0] == 0
    assert detector.alert_ids() == ["id-000000007"]


def test_rules_reload_on_sighup_and_file_change_keeps_old_rules_when_broken(tmp_path: Path) -> None:
    """SIGHUP or an edited rules file reloads under load; a broken file keeps the running rules."""
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    assert detector.proc is not None
    detector.rules.write_text(CATCH_ALL + "  bogus: [unclosed\n")
    detector.proc.send_signal(signal.SIGHUP)
    wait_for(lambda: "rules_reload_failed" in detector.log_text(), 30, "the failed reload to be logged")
    append(detector.log, event_line(1))
    wait_for(lambda: detector.delivered() >= 1, 30, "alert from the old rules")
    detector.rules.write_text(CATCH_ALL.replace("seen %ka.auditid", "renamed %ka.auditid")
                              .replace("Every Event", "Renamed Rule"))
    wait_for(lambda: "rules_reloaded" in detector.log_text(), 30, "the reload after the file changed")
    append(detector.log, b"".join(event_line(n) for n in range(2, 2000)))
    wait_for(lambda: detector.delivered() >= 1999, 60, "alerts under the new rules")
    assert detector.terminate()[0] == 0
    rules = {orjson.loads(x)["rule"] for x in detector.alerts.read_bytes().splitlines()[1:]}
    assert rules == {"Renamed Rule"}


def test_invalid_config_is_one_line_naming_the_key(tmp_path: Path) -> None:
    """A bad key or value stops `detector run` with exit 2 and a message naming the key."""
    config = tmp_path / "config.yaml"
    config.write_text("start_at: middle\n")
    result = subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
    assert result.returncode == 2
    assert "start_at" in result.stderr and "Traceback" not in result.stderr
    config.write_text(f"state_dir: {tmp_path}/s\nfile: {tmp_path}/a.log\noutputs:\n  - name: s\n    type: slack\n"
                      "    webhook_url_env: DETECTOR_TEST_UNSET\n")
    result = subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(config)],
                            capture_output=True, text=True, timeout=30, cwd=REPO, check=False,
                            env={k: v for k, v in os.environ.items() if k != "DETECTOR_TEST_UNSET"})
    assert result.returncode == 2
    assert "outputs[0].webhook_url_env" in result.stderr


def test_default_output_is_stdout_json(tmp_path: Path) -> None:
    """Without outputs configured, alerts are JSON lines on stdout and logs go to stderr."""
    log = tmp_path / "audit.log"
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    with subprocess.Popen([sys.executable, "-m", "detector", "run", "--file", str(log), "--rules", str(rules),
                           "--state-dir", str(tmp_path / "state"), "--start-at", "beginning"],
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO) as proc:
        append(log, event_line(5))
        assert proc.stdout is not None and proc.stderr is not None
        first = proc.stdout.readline()
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0
        logs = proc.stderr.read()
    assert orjson.loads(first)["audit_id"] == "id-000000005"
    assert b'"event": "started"' in logs


def test_second_detector_on_same_state_dir_is_refused(tmp_path: Path) -> None:
    """Two processes sharing one outbox would double-send: the second exits 2."""
    detector = Detector(tmp_path)
    detector.start()
    detector.wait_started()
    result = subprocess.run([sys.executable, "-m", "detector", "run", "--config", str(detector.config)],
                            capture_output=True, text=True, timeout=30, cwd=REPO, check=False)
    assert result.returncode == 2 and "in use by another detector" in result.stderr
    assert detector.terminate()[0] == 0


def _stdin_detector(tmp_path: Path) -> subprocess.Popen[bytes]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(CATCH_ALL)
    proc = subprocess.Popen(
        [sys.executable, "-m", "detector", "run", "--file", "-", "--rules", str(rules),
         "--state-dir", str(tmp_path / "state"), "--log-format", "json"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, cwd=REPO)
    STARTED.append(proc)
    return proc


def _read_lines(proc: subprocess.Popen[bytes], count: int, timeout: float) -> tuple[list[bytes], bytes]:
    """At least `count` complete lines of the child's stdout (waiting at most `timeout` seconds,
    the child keeps running), and the bytes read after them."""
    assert proc.stdout is not None
    fd, data = proc.stdout.fileno(), b""
    deadline = time.monotonic() + timeout
    while data.count(b"\n") < count:
        left = deadline - time.monotonic()
        assert left > 0, f"timed out waiting for {count} lines of stdout, got {data!r}"
        if select.select([fd], [], [], left)[0]:
            chunk = os.read(fd, 65536)
            assert chunk, f"stdout closed early: {data!r}"
            data += chunk
    complete, _, rest = data.rpartition(b"\n")
    return complete.split(b"\n"), rest


def test_file_dash_follows_stdin_live_until_it_ends(tmp_path: Path) -> None:
    """`--file -`: lines are evaluated as they arrive (alerts on stdout while stdin is still
    open), a line written in two halves counts once, and the end of stdin ends the run with 0."""
    proc = _stdin_detector(tmp_path)
    assert proc.stdin is not None
    second = event_line(2)
    proc.stdin.write(event_line(1) + second[:40])
    proc.stdin.flush()
    [first_alert], rest = _read_lines(proc, 1, 60)
    assert orjson.loads(first_alert)["audit_id"] == "id-000000001"
    proc.stdin.write(second[40:] + event_line(3) + b"not json\n")
    proc.stdin.close()
    assert proc.stdout is not None and proc.stderr is not None
    out, err = rest + proc.stdout.read(), proc.stderr.read()
    assert proc.wait(timeout=60) == 0, err.decode()[-2000:]
    proc.stdout.close()
    proc.stderr.close()
    assert [orjson.loads(line)["audit_id"] for line in out.splitlines()] == ["id-000000002", "id-000000003"]
    assert b'"reason": "invalid_json"' in err and b'"line": 4' in err
    assert b'"input_ended"' in err and b"Traceback" not in err


def test_file_dash_stops_on_sigterm_while_stdin_stays_open(tmp_path: Path) -> None:
    """A writer that never closes stdin does not keep detector from stopping: SIGTERM, exit 0."""
    proc = _stdin_detector(tmp_path)
    assert proc.stderr is not None
    wait_for(lambda: b'"started"' in _peek(proc), 60, "detector to start")
    started = time.monotonic()
    proc.send_signal(signal.SIGTERM)
    assert proc.wait(timeout=10) == 0
    assert time.monotonic() - started < 5
    for stream in (proc.stdin, proc.stdout, proc.stderr):
        assert stream is not None
        stream.close()


def _peek(proc: subprocess.Popen[bytes]) -> bytes:
    """What the child wrote to stderr so far (kept across calls)."""
    assert proc.stderr is not None
    seen = _PEEKED.setdefault(proc.pid, bytearray())
    while select.select([proc.stderr.fileno()], [], [], 0)[0]:
        chunk = os.read(proc.stderr.fileno(), 65536)
        if not chunk:
            break
        seen += chunk
    return bytes(seen)


_PEEKED: dict[int, bytearray] = {}


def test_deeply_nested_lines_are_reported_and_the_daemon_goes_on(tmp_path: Path) -> None:
    """A line nested 100,000 deep (before: a RecursionError that stopped the daemon, and again
    after every restart, as the same line came back) and a rule reading a body nested 10,000
    deep are reported at their lines; the events after them still alert."""
    body_rule = """\
- rule: Reads The Body
  desc: its output reads the request body
  condition: ka.verb = get
  output: body %jevt.value[/requestObject]
  priority: INFORMATIONAL
  source: k8s_audit
"""
    detector = Detector(tmp_path, rules=CATCH_ALL + body_rule)
    detector.start()
    detector.wait_started()
    append(detector.log, b'{"kind":"Event","x":' + b"[" * 100_000 + b"]" * 100_000 + b"}\n"
           + with_request_object(event_line(1).rstrip(b"\n"), nested_object(10_000)) + b"\n" + event_line(2))
    wait_for(lambda: detector.delivered() >= 2, 30, "alerts of the events around the deep lines")
    assert detector.terminate()[0] == 0
    # Event 1: its catch-all alert; the body rule failed and was reported. Event 2: both rules.
    assert sorted(detector.alert_ids()) == ["id-000000001", "id-000000002", "id-000000002"]
    log = detector.log_text()
    assert '"reason": "invalid_json"' in log and "nested too deeply" in log
    assert "rule 'Reads The Body' failed: TooDeep" in log
