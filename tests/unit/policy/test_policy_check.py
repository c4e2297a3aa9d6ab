"""`detector policy-check`: audit policy matching and per-rule verdicts."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from detector.errors import ConfigError
from detector.policy.audit import Level, Request, load_policy
from detector.policy.check import Verdict, check_rule
from detector.rules.loader import load_rules

REPO = Path(__file__).resolve().parents[3]
SHARED = REPO.parent / "shared"
POLICIES = SHARED / "k8s" / "policies"
UPSTREAM = (SHARED / "falco" / "data" / "falcosecurity-plugins@0b3cbd8d84eba83877159cf3c9fdae1820084c26"
            / "plugins" / "k8saudit" / "rules" / "k8s_audit_rules.yaml")

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{group: "", resources: [events]}]
  - level: None
    users: [system:kube-proxy]
    verbs: [watch]
  - level: RequestResponse
    resources: [{group: "", resources: [pods]}]
  - level: Metadata
    resources: [{group: "", resources: ["pods/*"]}]
    omitStages: [ResponseStarted]
  - level: Request
    resources: [{group: "", resources: [configmaps]}]
    namespaces: [kube-system]
  - level: Metadata
"""

RULES = """\
- rule: Privileged Pod
  desc: d
  condition: ka.verb = create and ka.target.resource = pods and ka.req.pod.containers.privileged intersects (true)
  output: o
  priority: WARNING
  source: k8s_audit
- rule: Exec
  desc: d
  condition: ka.stage = ResponseStarted and ka.target.resource = pods and ka.target.subresource = exec
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: Events Deleted
  desc: d
  condition: ka.verb = delete and ka.target.resource = events
  output: o
  priority: WARNING
  source: k8s_audit
- rule: ConfigMap Body
  desc: d
  condition: ka.target.resource = configmaps and ka.req.configmap.obj contains password
  output: o
  priority: WARNING
  source: k8s_audit
- rule: Any Secret Read
  desc: d
  condition: ka.target.resource = secrets and not ka.req.configmap.obj exists
  output: o
  priority: NOTICE
  source: k8s_audit
"""


@pytest.fixture
def policy(tmp_path: Path) -> Path:
    path = tmp_path / "policy.yaml"
    path.write_text(POLICY)
    return path


@pytest.fixture
def verdicts(tmp_path: Path, policy: Path) -> dict[str, Verdict]:
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    loaded = load_policy(str(policy))
    return {r.name: check_rule(r, loaded).verdict for r in load_rules([rules]).rules}


def test_first_matching_rule_wins(policy: Path) -> None:
    """The policy decision is the first matching rule's level and stages."""
    loaded = load_policy(str(policy))
    pod = loaded.decide(Request("alice", ("system:authenticated",), "create", "", "pods"))
    exec_ = loaded.decide(Request("alice", ("system:authenticated",), "create", "", "pods", "exec"))
    proxy = loaded.decide(Request("system:kube-proxy", (), "watch", "", "services"))
    assert (pod.level, pod.rule) == (Level.REQUEST_RESPONSE, 3)
    assert exec_.level is Level.METADATA and "ResponseStarted" in exec_.omit_stages
    assert "RequestReceived" in exec_.omit_stages
    assert (proxy.level, proxy.rule) == (Level.NONE, 2)


def test_verdicts(verdicts: dict[str, Verdict]) -> None:
    """Bodies, stages, None levels and namespaces each decide a rule's verdict."""
    assert verdicts["Privileged Pod"] is Verdict.OK
    assert verdicts["Exec"] is Verdict.BLIND  # ResponseStarted omitted for pods/*
    assert verdicts["Events Deleted"] is Verdict.BLIND  # events at None
    assert verdicts["ConfigMap Body"] is Verdict.PARTIAL  # bodies only in kube-system
    assert verdicts["Any Secret Read"] is Verdict.OK  # a body field under `not` blinds nothing


def test_invalid_policy_is_one_clear_error(tmp_path: Path) -> None:
    """A bad level names the file and the rule number."""
    path = tmp_path / "bad.yaml"
    path.write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Verbose\n")
    with pytest.raises(ConfigError, match="rule 1"):
        load_policy(str(path))


def test_cli_strict_exit_code(tmp_path: Path, policy: Path) -> None:
    """--strict exits 1 when an enabled rule is blind, and names the reason."""
    rules = tmp_path / "rules.yaml"
    rules.write_text(RULES)
    cmd = [sys.executable, "-m", "detector", "policy-check", "--policy", str(policy), "--rules", str(rules)]
    loose = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    strict = subprocess.run([*cmd, "--strict"], capture_output=True, text=True, check=False, cwd=REPO)
    assert loose.returncode == 0 and strict.returncode == 1
    assert "BLIND    Events Deleted" in strict.stdout
    assert "is not logged (level None, policy rule 1)" in strict.stdout
    assert "stage ResponseStarted is omitted" in strict.stdout


@pytest.mark.skipif(not POLICIES.is_dir(), reason="../shared (real audit policies) is absent")
def test_real_policies_against_shipped_and_upstream_rules() -> None:
    """The real policies load; known blind spots are found (GCE drops events; docs policy logs RBAC at Metadata)."""
    shipped = load_rules([REPO / "rules"])
    upstream = load_rules([UPSTREAM])
    gce = load_policy(str(POLICIES / "gce-configure-helper-audit-policy.yaml"))
    docs = load_policy(str(POLICIES / "k8s-docs-audit-policy.yaml"))
    for name in ("falco-k8saudit-audit-policy.yaml", "audit2rbac-demo-policy.yaml"):
        load_policy(str(POLICIES / name))
    shipped_gce = {r.name: check_rule(r, gce).verdict for r in shipped.rules}
    assert shipped_gce["Events Deleted"] is Verdict.BLIND
    assert sum(v is Verdict.OK for v in shipped_gce.values()) == len(shipped_gce) - 1
    upstream_docs = {r.name: check_rule(r, docs).verdict for r in upstream.rules}
    assert upstream_docs["ClusterRole With Wildcard Created"] is Verdict.BLIND
    assert upstream_docs["Create/Modify Configmap With Private Credentials"] is Verdict.PARTIAL
    assert upstream_docs["Create Privileged Pod"] is Verdict.OK
