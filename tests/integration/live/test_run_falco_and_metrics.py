"""`detector run` with Falco's own rules, and its metrics and health endpoints."""

from __future__ import annotations

import socket
import urllib.error
import urllib.request
from pathlib import Path

import orjson
import pytest

from tests.integration.live.harness import Detector, event_line, wait_for

SHARED = Path(__file__).resolve().parents[3].parent / "shared" / "falco" / "data"
FALCO_RULES = SHARED / "falcosecurity-rules@falco-rules-1.0.1" / "rules" / "falco_rules.yaml"
K8S_RULES = (SHARED / "falcosecurity-plugins@0b3cbd8d84eba83877159cf3c9fdae1820084c26" / "plugins" / "k8saudit"
             / "rules" / "k8s_audit_rules.yaml")
TRACES = SHARED / "falcosecurity-falco@2583ea9bfdb2d6acdfbeedb094ea26f4866bb02e" / "test" / "trace_files" / "k8s_audit"


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def get(url: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(url, timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode()


@pytest.mark.skipif(not K8S_RULES.exists(), reason="../shared (Falco's upstream rules) is absent")
def test_upstream_falco_rules_run_live_unchanged(tmp_path: Path) -> None:
    """Falco's rules files load unchanged in live mode and fire on Falco's own traces."""
    detector = Detector(tmp_path, rules=[str(FALCO_RULES), str(K8S_RULES)], rule_matching="first")
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        for name in ("create_nginx_pod_privileged.json", "exec_pod.json", "create_nginx_service_nodeport.json"):
            log.write((TRACES / name).read_bytes().strip() + b"\n")
    wait_for(lambda: detector.delivered() >= 3, 30, "three upstream alerts")
    assert detector.terminate()[0] == 0
    rules = sorted(orjson.loads(x)["rule"] for x in detector.alerts.read_bytes().splitlines())
    assert rules == ["Attach/Exec Pod", "Create NodePort Service", "Create Privileged Pod"]


def test_metrics_health_and_readiness(tmp_path: Path) -> None:
    """/metrics counts lines, events, bad lines and alerts; /healthz and /readyz answer 200 while running."""
    port = free_port()
    detector = Detector(tmp_path, metrics={"listen": f"127.0.0.1:{port}"})
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(event_line(1) + b"not json\n" + event_line(2))
    wait_for(lambda: detector.delivered() >= 2, 30, "two alerts")
    base = f"http://127.0.0.1:{port}"
    wait_for(lambda: "detector_events_total 2.0" in get(base + "/metrics")[1], 10, "metrics to show 2 events")
    status, text = get(base + "/metrics")
    assert status == 200
    assert 'detector_bad_lines_total{reason="invalid_json"} 1.0' in text
    assert "detector_lines_read_total 3.0" in text
    assert 'detector_rule_matches_total{priority="Informational",rule="Every Event",source="k8s_audit",tags=""} 2.0' \
        in text
    wait_for(lambda: 'detector_alerts_total{output="file",result="sent"} 2.0' in get(base + "/metrics")[1], 10,
             "delivery metrics")
    assert get(base + "/healthz")[0] == 200
    status, body = get(base + "/readyz")
    assert status == 200 and '"input_open": true' in body
    assert get(base + "/nope")[0] == 404
    assert detector.terminate()[0] == 0
