"""A corpus of the credential forms operators type and send, each secret a unique marker, run
through the real CLI (`detector scan`, `detector run`): no marker may appear in stdout, stderr,
the alert file or any file of the state directory (the SQLite outbox).

Rules: the shipped ones, Falco's upstream k8s_audit rules (../shared, skipped when absent), and
a rules file whose outputs print every field that can carry a credential (the whole event
included), which stands for "any rule file".
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import Any
from urllib.parse import quote

import orjson
import pytest

from tests.integration.live.harness import Detector, wait_for

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared"
UPSTREAM = SHARED / "falco" / "data" / "falcosecurity-plugins@k8saudit-0.6.0" / "plugins" / "k8saudit" / "rules"
PRINT_ALL = """\
- rule: Print Everything
  desc: prints every field that can carry a credential
  condition: ka.auditid exists
  output: >-
    cmd=%ka.exec.command uri=%ka.uri first=%ka.uri.param[command] token=%ka.uri.param[access_token]
    cm=%ka.req.configmap.obj env=%jevt.value[/requestObject/spec/containers/0/env]
    req=%jevt.value[/requestObject] resp=%json.value[/responseObject] uri2=%jevt.value[/requestURI]
    obj=%jevt.obj
  priority: WARNING
  source: k8s_audit
"""
BASE: dict[str, Any] = {
    "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "RequestResponse",
    "user": {"username": "alice@example.com", "groups": ["system:authenticated"]}, "sourceIPs": ["203.0.113.9"],
    "userAgent": "kubectl/v1.29.0", "requestReceivedTimestamp": "2026-11-22T10:00:00.000000Z",
    "stageTimestamp": "2026-11-22T10:00:00.000100Z",
}


def marker(n: int) -> str:
    """A unique, password-looking marker."""
    return f"Mk{n:03d}Hunter2zQ"


# Exec commands as kubectl sends them: one `command=` parameter per argument.
COMMANDS: list[list[str]] = [
    ["mysql", "-uroot", "-p{}"],
    ["mysql", "-u", "root", "--password={}", "app"],
    ["sh", "-c", "curl -u admin:{} https://db.internal/"],
    ["curl", "--user", "admin:{}", "https://x"],
    ["redis-cli", "-a", "{}"],
    ["redis-cli", "AUTH", "default", "{}"],
    ["psql", "--password", "{}"],
    ["cli", "--token", "{}"],
    ["sshpass", "-p", "{}", "ssh", "host"],
    ["mongosh", "-u", "admin", "-p", "{}"],
    ["docker", "login", "-u", "bob", "-p", "{}", "registry.io"],
    ["ldapsearch", "-D", "cn=admin", "-w", "{}"],
    ["kubectl", "create", "secret", "generic", "s", "--from-literal=password={}"],
    ["openssl", "enc", "-pass", "pass:{}"],
    ["sh", "-c", 'curl -H "Authorization: Bearer {}" https://x'],
    ["sh", "-c", "curl -H 'Authorization: Token {}' https://x"],
    ["git", "clone", "https://deploy:{}@github.com/org/repo.git"],
    ["sh", "-c", "export DB_PASSWORD={}; ./run"],
    ["env", "GITHUB_TOKEN={}", "make"],
    ["sh", "-c", "PGPASSWORD={} psql -h db"],
    ["sh", "-c", "wget 'https://x/f?access_token={}'"],
]


def exec_events(n: int, args: list[str], space: str) -> list[dict[str, Any]]:
    """The ResponseStarted (the exec rule) and ResponseComplete (the outside-networks rule) events."""
    query = "&".join("command=" + quote(arg, safe="").replace("%20", space) for arg in args)
    uri = f"/api/v1/namespaces/db/pods/db-0/exec?{query}&container=db&stdin=true&tty=true"
    common = {**BASE, "verb": "create", "requestURI": uri, "level": "Metadata",
              "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "db", "name": "db-0",
                            "apiVersion": "v1"}, "responseStatus": {"metadata": {}, "code": 101}}
    return [{**common, "auditID": f"exec-{n}-s", "stage": "ResponseStarted"},
            {**common, "auditID": f"exec-{n}-c", "stage": "ResponseComplete"}]


def body_events(first: int) -> tuple[list[dict[str, Any]], list[str]]:
    """Events whose bodies carry credentials, and their markers (numbered from `first`)."""
    m = [marker(first + i) for i in range(10)]
    complete = {**BASE, "stage": "ResponseComplete", "responseStatus": {"metadata": {}, "code": 201}}
    configmap = {"kind": "ConfigMap", "apiVersion": "v1", "metadata": {"name": "app", "namespace": "kube-system"},
                 "data": {"aws_secret_access_key": m[0], "db_password": m[1], "log_level": "debug",
                          "application.properties": f"db.user=app\ndb.password={m[2]}\n",
                          "config.json": f'{{"apiKey": "{m[3]}"}}'}}
    last_applied = orjson.dumps({"kind": "Deployment", "metadata": {"annotations": {"note": m[4]}}}).decode()
    events = [
        {**complete, "auditID": "cm", "verb": "create", "requestURI": "/api/v1/namespaces/kube-system/configmaps",
         "objectRef": {"resource": "configmaps", "namespace": "kube-system", "name": "app", "apiVersion": "v1"},
         "requestObject": configmap},
        {**complete, "auditID": "tr", "verb": "create", "requestURI": "/apis/authentication.k8s.io/v1/tokenreviews",
         "objectRef": {"resource": "tokenreviews", "apiGroup": "authentication.k8s.io", "apiVersion": "v1"},
         "requestObject": {"kind": "TokenReview", "apiVersion": "authentication.k8s.io/v1",
                           "spec": {"token": f"eyJ{m[5]}"}}},
        {**complete, "auditID": "treq", "verb": "create",
         "requestURI": "/api/v1/namespaces/default/serviceaccounts/builder/token",
         "objectRef": {"resource": "serviceaccounts", "subresource": "token", "namespace": "default",
                       "name": "builder", "apiVersion": "v1"},
         "requestObject": {"kind": "TokenRequest", "spec": {"audiences": ["api"]}},
         "responseObject": {"kind": "TokenRequest", "status": {"token": f"eyJ{m[6]}",
                                                               "expirationTimestamp": "2026-11-22T11:00:00Z"}}},
        {**complete, "auditID": "pod", "verb": "create", "requestURI": "/api/v1/namespaces/kube-system/pods",
         "objectRef": {"resource": "pods", "namespace": "kube-system", "name": "x", "apiVersion": "v1"},
         "requestObject": {"kind": "Pod", "apiVersion": "v1",
                           "metadata": {"name": "x", "annotations": {
                               "kubectl.kubernetes.io/last-applied-configuration": last_applied}},
                           "spec": {"containers": [{"name": "c", "image": "nginx", "env": [
                               {"name": "DB_PASSWORD", "value": m[7]}, {"name": "STRIPE_KEY", "value": m[8]},
                               {"name": "LOG_LEVEL", "value": "debug"}]}]}}},
        {**complete, "auditID": "uri", "verb": "get", "requestURI": f"/api/v1/namespaces/x/pods?access_token={m[9]}",
         "objectRef": {"resource": "pods", "namespace": "x", "apiVersion": "v1"}},
    ]
    return events, m


def corpus() -> tuple[bytes, list[str]]:
    """The audit log lines and every marker they carry."""
    events, markers = body_events(500)
    for n, args in enumerate(COMMANDS):
        for space in ("+", "%20"):
            index = 2 * n + (space == "+")
            markers.append(marker(index))
            events += exec_events(index, [arg.format(marker(index)) for arg in args], space)
    return b"".join(orjson.dumps(event) + b"\n" for event in events), markers


def leaks(texts: dict[str, str], markers: list[str]) -> list[str]:
    """Every (place, marker) where a marker, or its start, is still readable."""
    return [f"{place}: {m}" for place, text in texts.items() for m in markers
            if m in text or m[:9] in text or quote(m) in text]


def scan(tmp_path: Path, rules: list[Path], log: Path, fmt: str) -> subprocess.CompletedProcess[str]:
    argv = [sys.executable, "-m", "detector", "scan", "--format", fmt]
    for path in rules:
        argv += ["--rules", str(path)]
    return subprocess.run([*argv, str(log)], capture_output=True, text=True, cwd=REPO, timeout=120, check=False)


@pytest.fixture
def audit_log(tmp_path: Path) -> tuple[Path, list[str]]:
    lines, markers = corpus()
    log = tmp_path / "audit.log"
    log.write_bytes(lines)
    return log, markers


def _print_all(tmp_path: Path) -> Path:
    path = tmp_path / "print-all.yaml"
    path.write_text(PRINT_ALL)
    return path


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_scan_with_shipped_and_print_all_rules_leaks_no_marker(tmp_path: Path, audit_log: tuple[Path, list[str]],
                                                                fmt: str) -> None:
    """detector scan with the shipped rules and a rule printing every field: no marker in stdout or stderr."""
    log, markers = audit_log
    for rules in ([REPO / "rules"], [_print_all(tmp_path)]):
        done = scan(tmp_path, rules, log, fmt)
        assert done.returncode in (0, 1), done.stderr
        assert "****" in done.stdout
        assert leaks({"stdout": done.stdout, "stderr": done.stderr}, markers) == []


def test_scan_shipped_rules_alert_on_the_exec_commands(tmp_path: Path, audit_log: tuple[Path, list[str]]) -> None:
    """The shipped exec and outside-networks rules fire on the corpus, showing the masked commands."""
    log, _markers = audit_log
    out = scan(tmp_path, [REPO / "rules"], log, "json").stdout
    assert "command=mysql -uroot -p****" in out and "curl -u admin:****" in out and "redis-cli -a ****" in out
    assert "command=psql&command=--password&command=****" in out


def test_scan_with_falco_upstream_rules_leaks_no_marker(tmp_path: Path, audit_log: tuple[Path, list[str]]) -> None:
    """Falco's upstream k8s_audit rules (configmap with private credentials, exec, all events): no marker."""
    if not (UPSTREAM / "k8s_audit_rules.yaml").is_file():
        pytest.skip("../shared (Falco's upstream rules) is absent")
    log, markers = audit_log
    enable = tmp_path / "enable.yaml"
    enable.write_text("- macro: consider_all_events\n  condition: (ka.auditid exists)\n")
    done = scan(tmp_path, [UPSTREAM / "k8s_audit_rules.yaml", enable], log, "json")
    assert "K8s configmap with private credential" in done.stdout, done.stderr
    assert leaks({"stdout": done.stdout, "stderr": done.stderr}, markers) == []


def test_run_leaks_no_marker_in_alerts_logs_or_state(tmp_path: Path, audit_log: tuple[Path, list[str]]) -> None:
    """detector run with the shipped rules and the print-all rule: no marker in the alert file, its
    log, or any file of the state directory (the outbox)."""
    log, markers = audit_log
    detector = Detector(tmp_path, rules=[str(REPO / "rules"), str(_print_all(tmp_path))])
    detector.log.write_bytes(log.read_bytes())
    detector.start()
    expected = len(log.read_bytes().splitlines())
    wait_for(lambda: detector.alerts.exists() and detector.alerts.read_text().count("Print Everything") >= expected,
             60, "every event's alert")
    detector.terminate()
    texts = {"alerts": detector.alerts.read_text(), "stderr": detector.stderr.read_text()}
    for path in (tmp_path / "state").rglob("*"):
        if path.is_file():
            texts[str(path)] = path.read_bytes().decode("utf-8", "replace")
    assert leaks(texts, markers) == []
