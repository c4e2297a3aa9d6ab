"""`detector scan` run as a user would: real files, real process."""

from __future__ import annotations

import gzip
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest

from detector.alert.redact import WITHHELD
from tests.integration.cli.events import RULES, deletion, event, line
from tests.support.deepjson import nested_object, with_request_object

Run = Callable[..., CompletedProcess[str]]


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def alerts(result: CompletedProcess[str]) -> list[dict[str, object]]:
    return [orjson.loads(x) for x in result.stdout.splitlines() if x.strip()]


def test_alert_json_has_falco_shape_and_stable_id(detector: Run, rules: Path, tmp_path: Path) -> None:
    """An alert carries Falco's keys plus audit_id and an id that is the same on every run."""
    log = tmp_path / "audit.log"
    log.write_bytes(line(event(1)) + line(deletion(2)))
    first = detector("scan", "--rules", str(rules), str(log))
    second = detector("scan", "--rules", str(rules), str(log))
    assert first.returncode == 0, first.stderr
    [alert] = alerts(first)
    assert {"time", "rule", "priority", "output", "source", "tags", "output_fields", "hostname", "audit_id",
            "id"} <= set(alert)
    assert alert["rule"] == "Pod Deleted"
    assert alert["priority"] == "Warning"
    assert alert["source"] == "k8s_audit"
    assert alert["tags"] == ["k8s", "test"]
    assert alert["time"] == "2026-11-22T10:00:00.120000000Z"
    assert alert["audit_id"] == deletion(2)["auditID"]
    assert "pod default/web-1 deleted by alice@example.com from 10.0.0.7" in str(alert["output"])
    assert alert["output_fields"]["ka.user.name"] == "alice@example.com"  # type: ignore[index]
    assert alerts(second)[0]["id"] == alert["id"]


def test_bad_input_is_reported_per_line_and_skipped(detector: Run, rules: Path, tmp_path: Path) -> None:
    """Every kind of bad line is reported once with file:line and a reason; good lines still alert."""
    log = tmp_path / "mixed.log"
    no_time = deletion(9)
    del no_time["stageTimestamp"]
    log.write_bytes(
        line(deletion(1))                                   # 1 ok
        + b"{not json\n"                                    # 2 invalid_json
        + b"[1, 2]\n"                                       # 3 not an event
        + b'"just a string"\n'                              # 4 not an object
        + b'{"kind": "Pod", "apiVersion": "v1"}\n'          # 5 not an audit event
        + line(no_time)                                     # 6 missing stageTimestamp
        + line(event(7, stageTimestamp="yesterday"))        # 7 bad timestamp
        + b"\x00\xff\xfe garbage \x80\n"                    # 8 binary garbage
        + b"\n"                                             # 9 blank
        + line(deletion(10))                                # 10 ok
        + b'{"kind":"Event","verb":"delete"'                # 11 final line without newline
    )
    result = detector("scan", "--rules", str(rules), str(log))
    assert result.returncode == 0
    assert "Traceback" not in result.stderr
    assert len(alerts(result)) == 2
    for lineno in (2, 3, 4, 5, 6, 7, 8, 9, 11):
        assert result.stderr.count(f"{log}:{lineno}:") == 1, (lineno, result.stderr)
    assert f"{log}:1:" not in result.stderr and f"{log}:10:" not in result.stderr
    for reason in ("invalid_json", "not_audit_event", "missing_timestamp", "bad_timestamp", "blank_line",
                   "unterminated_line"):
        assert reason in result.stderr
    assert "events=2" in result.stderr


def test_over_long_line_is_skipped_without_disturbing_the_next(detector: Run, rules: Path, tmp_path: Path) -> None:
    """A line over --max-line-bytes is reported and skipped; the following line still alerts."""
    log = tmp_path / "long.log"
    long_event = deletion(1)
    long_event["userAgent"] = "x" * 5000
    log.write_bytes(line(long_event) + line(deletion(2)))
    result = detector("scan", "--max-line-bytes", "2000", "--rules", str(rules), str(log))
    assert result.returncode == 0
    assert f"{log}:1: line_too_long" in result.stderr
    assert [a["audit_id"] for a in alerts(result)] == [deletion(2)["auditID"]]


def test_gzip_stdin_eventlist_and_array_inputs(detector: Run, rules: Path, tmp_path: Path) -> None:
    """.gz files, stdin, a whole EventList document and a JSON array are all read."""
    gz = tmp_path / "audit-2026-11-22T10-00-00.000.log.gz"
    gz.write_bytes(gzip.compress(line(deletion(1))))
    event_list = tmp_path / "list.json"
    event_list.write_bytes(orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "metadata": {},
                                         "items": [deletion(2), event(3)]}, option=orjson.OPT_INDENT_2))
    array = tmp_path / "array.json"
    array.write_bytes(orjson.dumps([deletion(4), deletion(5)]))
    result = detector("scan", "--rules", str(rules), str(gz), str(event_list), str(array), "-",
                      stdin=line(deletion(6)))
    assert result.returncode == 0, result.stderr
    ids = sorted(str(a["audit_id"])[-2:] for a in alerts(result))
    assert ids == ["01", "02", "04", "05", "06"]


def test_v1beta1_events_are_accepted(detector: Run, rules: Path, tmp_path: Path) -> None:
    """A v1beta1 event with its old timestamp/metadata fields is evaluated like a v1 event."""
    old = deletion(1)
    old.update(apiVersion="audit.k8s.io/v1beta1", timestamp="2026-11-22T10:00:00Z",
               metadata={"creationTimestamp": "2026-11-22T10:00:00Z"})
    log = tmp_path / "old.log"
    log.write_bytes(line(old))
    result = detector("scan", "--rules", str(rules), str(log))
    assert len(alerts(result)) == 1


def test_text_format_and_min_priority(detector: Run, rules: Path, tmp_path: Path) -> None:
    """--format text prints readable lines; --min-priority drops less severe rules."""
    log = tmp_path / "audit.log"
    log.write_bytes(line(deletion(1)))
    text = detector("scan", "--format", "text", "--rules", str(rules), str(log))
    assert "Warning" in text.stdout and "[Pod Deleted]" in text.stdout
    strict = detector("scan", "--min-priority", "error", "--rules", str(rules), str(log))
    assert strict.stdout == ""


def test_unloadable_rules_exit_2_naming_the_place(detector: Run, tmp_path: Path) -> None:
    """Broken rules stop the scan with exit 2 and a message naming file, line and rule."""
    bad = tmp_path / "bad.yaml"
    bad.write_text("- rule: Broken\n  desc: d\n  condition: ka.verb ==\n  output: o\n  priority: WARNING\n"
                   "  source: k8s_audit\n")
    log = tmp_path / "audit.log"
    log.write_bytes(line(deletion(1)))
    result = detector("scan", "--rules", str(bad), str(log))
    assert result.returncode == 2
    assert f"{bad}:3" in result.stderr and "Broken" in result.stderr
    assert "Traceback" not in result.stderr


def test_missing_input_file_is_one_line_error(detector: Run, rules: Path, tmp_path: Path) -> None:
    """A file that does not exist gives a one-line error, not a traceback."""
    result = detector("scan", "--rules", str(rules), str(tmp_path / "nope.log"))
    assert result.returncode == 2
    assert "nope.log" in result.stderr and "Traceback" not in result.stderr


def test_default_rules_are_the_shipped_set(detector: Run, tmp_path: Path) -> None:
    """Without --rules the shipped rules load and the scan runs."""
    log = tmp_path / "audit.log"
    log.write_bytes(line(event(1)))
    result = detector("scan", str(log))
    assert result.returncode == 0, result.stderr
    assert "events=1" in result.stderr


def test_rule_matching_first_stops_at_first_rule(detector: Run, tmp_path: Path) -> None:
    """--rule-matching first emits only the first matching rule; all emits both."""
    rules = tmp_path / "two.yaml"
    rules.write_text(RULES + "\n- rule: Second\n  desc: d\n  condition: ka.verb = delete\n"
                     "  output: second\n  priority: NOTICE\n  source: k8s_audit\n")
    log = tmp_path / "audit.log"
    log.write_bytes(line(deletion(1)))
    both = detector("scan", "--rules", str(rules), str(log))
    first = detector("scan", "--rule-matching", "first", "--rules", str(rules), str(log))
    assert [a["rule"] for a in alerts(both)] == ["Pod Deleted", "Second"]
    assert [a["rule"] for a in alerts(first)] == ["Pod Deleted"]


def test_offline_commands_leave_the_daemon_imports_alone() -> None:
    """scan/validate/test-rule start without structlog, prometheus_client or http.server: the
    daemon's imports were ~40% of a scan's start-up (0.26 s -> 0.13 s without them)."""
    code = ("import sys, detector.cli; "
            "print(sorted(m for m in ('structlog', 'prometheus_client', 'http.server') if m in sys.modules))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def _with_request(data: dict[str, object], request: bytes) -> bytes:
    """The event's JSON line with a raw `requestObject` (too deep for a JSON library to build)."""
    return with_request_object(orjson.dumps(data), request) + b"\n"


def test_deeply_nested_json_is_evaluated_or_reported_never_a_crash(detector: Run, tmp_path: Path) -> None:
    """Request objects nested past orjson's 1,024 levels are still evaluated; deeper than detector
    decodes, a Secret alert is withheld rather than risk its data; a line nested 100,000 deep is
    reported. Before, such lines ended the scan with a traceback or a segfault."""
    pod = {"kind": "Pod", "spec": {"hostNetwork": True, "containers": [{"name": "c", "image": "nginx"}]}}
    pod_body = orjson.dumps(pod)[:-1]
    creates = [event(n, verb="create", level="Request", requestURI="/api/v1/namespaces/default/pods",
                     objectRef={"resource": "pods", "namespace": "default", "name": f"p{n}"}) for n in (1, 2)]
    secret = event(3, verb="create", level="Request", requestURI="/api/v1/namespaces/default/secrets",
                   objectRef={"resource": "secrets", "namespace": "default", "name": "s"})
    log = tmp_path / "audit.log"
    log.write_bytes(
        _with_request(creates[0], pod_body + b',"x":' + nested_object(1_500) + b"}")
        + _with_request(creates[1], pod_body + b',"x":' + nested_object(10_000) + b"}")
        + _with_request(secret, b'{"kind":"Secret","data":{"k":"c2VjcmV0LXZhbHVl"},"x":' + nested_object(10_000) + b"}")
        + _with_request(event(4), nested_object(100_000)))
    rules = tmp_path / "rules.yaml"
    rules.write_text("""\
- rule: Host Network Pod
  desc: a pod on the host network
  condition: ka.verb = create and ka.req.pod.host_network = true
  output: host network pod %ka.target.name
  priority: WARNING
  source: k8s_audit
- rule: Secret Created
  desc: a secret, shown whole
  condition: ka.verb = create and ka.target.resource = secrets
  output: secret %ka.target.name by %ka.user.name
  priority: WARNING
  source: k8s_audit
- rule: Secret Data Shown
  desc: a secret's data in the output, which needs the whole body
  condition: ka.verb = create and ka.target.resource = secrets
  output: secret data %jevt.value[/requestObject/data]
  priority: WARNING
  source: k8s_audit
""")
    result = detector("scan", "--rules", str(rules), str(log))
    assert result.returncode == 0, result.stderr
    assert "Traceback" not in result.stderr
    fired = {(a["rule"], a["output_fields"].get("ka.target.name")): a for a in alerts(result)}
    assert set(fired) == {("Host Network Pod", "p1"), ("Secret Created", "s")}  # p1: 1,500 deep, decoded
    assert fired["Secret Created", "s"]["message"] == WITHHELD  # its data could not be read to redact it
    assert "c2VjcmV0LXZhbHVl" not in result.stdout
    # A rule that needs a body nested deeper than detector decodes fails loudly, at its line;
    # the event's other rules still alert.
    too_deep = "failed: TooDeep: JSON nested deeper than 4,000 levels"
    assert f"{log}:2: evaluation_error: rule 'Host Network Pod' {too_deep}" in result.stderr
    assert f"{log}:3: evaluation_error: rule 'Secret Data Shown' {too_deep}" in result.stderr
    assert f"{log}:4: invalid_json: invalid JSON: nested too deeply" in result.stderr


def test_documents_and_eventlist_lines_nested_past_orjson_are_still_read(detector: Run, tmp_path: Path) -> None:
    """A JSON array document, or an EventList line, whose item nests past orjson's 1,024 levels
    is read whole (msgspec, bounded), as a plain line is; before, the whole input or line was
    invalid_json. An item deeper than detector decodes still makes it invalid_json, no traceback."""
    rules = tmp_path / "rules.yaml"
    rules.write_text("""\
- rule: Reads The Body
  desc: its output reads the request body
  condition: ka.verb = get
  output: body %jevt.value[/requestObject/a/a]
  priority: WARNING
  source: k8s_audit
""")
    deep = _with_request(event(2), nested_object(2_000)).rstrip(b"\n")
    document = tmp_path / "events.json"
    document.write_bytes(b"[" + orjson.dumps(event(1)) + b",\n" + deep + b"]\n")
    eventlist = tmp_path / "audit.log"
    eventlist.write_bytes(orjson.dumps(event(3)) + b"\n"
                          + b'{"kind":"EventList","items":[' + orjson.dumps(event(4)) + b"," + deep + b"]}\n")
    for path, count in ((document, 2), (eventlist, 3)):
        result = detector("scan", "--rules", str(rules), str(path))
        assert result.returncode == 0, result.stderr
        assert len(alerts(result)) == count, result.stderr
    too_deep = tmp_path / "deeper.json"
    too_deep.write_bytes(b"[" + orjson.dumps(event(1)) + b"," + _with_request(event(2), nested_object(10_000)) + b"]")
    result = detector("scan", "--rules", str(rules), str(too_deep))
    assert result.returncode == 0, result.stderr
    assert f"{too_deep}:1: invalid_json: invalid JSON document: depth limit exceeded" in result.stderr
    assert "Traceback" not in result.stderr
