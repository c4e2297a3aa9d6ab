"""The shipped rules (rules/): their tests pass, and their outputs show the pod spec of workloads too."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[3]
RULES = REPO / "rules"
DEMO = REPO / "tests" / "fixtures" / "demo" / "audit.log"
WORKLOADS = ("pods", "deployments", "daemonsets", "statefulsets", "replicasets", "jobs", "cronjobs")


def detector(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "detector", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False, cwd=REPO)


def test_every_shipped_rule_has_firing_and_near_miss_tests_that_pass() -> None:
    """`detector test-rule --rules rules/ --require-cases` passes: each rule fires on its events, not on near-misses."""
    result = detector("test-rule", "--rules", RULES, "--require-cases")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr
    assert re.search(r"^\d+ passed, 0 failed$", result.stderr, re.MULTILINE)


def test_demo_daemonset_alert_shows_its_host_paths_and_images() -> None:
    """The demo's node-exporter DaemonSet alert shows the template's host paths and images, not <NA>."""
    result = detector("scan", "--format", "text", DEMO)
    (line,) = [x for x in result.stdout.splitlines() if "[Sensitive Host Path Mount By Human]" in x
               and "name=node-exporter" in x]
    assert "host_paths=(/)" in line
    assert "images=(quay.io/prometheus/node-exporter:v1.8.0)" in line


def test_workload_alerts_never_print_na_for_images() -> None:
    """Every alert on a pod or a workload of the demo and the rules' fixtures names the images of its pod spec."""
    fixtures = sorted((RULES / "fixtures").glob("*.json"))
    result = detector("scan", "--format", "text", DEMO, *fixtures)
    assert result.returncode == 0, result.stderr
    checked = [x for x in result.stdout.splitlines()
               if re.search(rf"resource=({'|'.join(WORKLOADS)}) ", x) and " images=" in x
               and "subresource=ephemeralcontainers" not in x]
    assert len(checked) >= 10
    assert not [x for x in checked if " images=<NA>" in x or " host_paths=<NA>" in x]


def test_role_rules_are_shown_one_by_one() -> None:
    """A role's rules are printed each with its own verbs, never merged into one list like (get,list,create,get)."""
    result = detector("scan", "--format", "text", RULES / "fixtures" / "clusterrole_pods_exec_human.json")
    (line,) = [x for x in result.stdout.splitlines() if "[Role Granting Pod Exec Or Node Proxy]" in x]
    assert '{"apiGroups":[""],"resources":["pods/exec"],"verbs":["create","get"]}' in line
    assert "verbs=(" not in line
