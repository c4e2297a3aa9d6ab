"""`detector policy-check`: audit policy matching and per-rule verdicts."""

from __future__ import annotations

import gzip
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
    resources: [{group: "", resources: [events]}, {group: events.k8s.io, resources: [events]}]
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
    assert verdicts["Events Deleted"] is Verdict.BLIND  # events of both APIs at None
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
    # GCE drops core Events (rule 10) but logs events.k8s.io ones (not in its known_apis: rule 17).
    assert shipped_gce["Events Deleted"] is Verdict.PARTIAL
    # GCE logs ConfigMaps at Metadata (rule 14): the rule reading their data (off by default) is blind.
    assert shipped_gce["ConfigMap With Credentials Created Or Changed"] is Verdict.BLIND
    assert sum(v is Verdict.OK for v in shipped_gce.values()) == len(shipped_gce) - 2
    upstream_docs = {r.name: check_rule(r, docs).verdict for r in upstream.rules}
    assert upstream_docs["ClusterRole With Wildcard Created"] is Verdict.BLIND
    assert upstream_docs["Create/Modify Configmap With Private Credentials"] is Verdict.PARTIAL
    assert upstream_docs["Create Privileged Pod"] is Verdict.OK


def _verdict(tmp_path: Path, policy_text: str, rules_text: str, name: str) -> tuple[Verdict, tuple[str, ...]]:
    policy = tmp_path / "scoped-policy.yaml"
    policy.write_text(policy_text)
    rules = tmp_path / "scoped-rules.yaml"
    rules.write_text(rules_text)
    report = next(check_rule(r, load_policy(str(policy))) for r in load_rules([rules]).rules if r.name == name)
    return report.verdict, report.reasons


# liggitt/audit2rbac testdata/demo-policy.yaml (see ../shared/k8s/policies.md): four users only.
AUDIT2RBAC = """\
kind: Policy
apiVersion: audit.k8s.io/v1
rules:
- level: Metadata
  users: [system:admin, alice, bob, "system:serviceaccount:ns1:sa1"]
  omitStages: [RequestReceived, ResponseStarted, Panic]
"""


def test_policy_logging_some_users_makes_a_rule_partial(tmp_path: Path) -> None:
    """With audit2rbac's policy the shipped secrets-listing rule sees alice's and bob's lists: PARTIAL, not BLIND."""
    path = tmp_path / "audit2rbac.yaml"
    path.write_text(AUDIT2RBAC)
    rule = next(r for r in load_rules([REPO / "rules"]).rules if r.name == "Secrets Listed Cluster-Wide By Human")
    report = check_rule(rule, load_policy(str(path)))
    assert report.verdict is Verdict.PARTIAL
    assert report.reasons[0].startswith("sees only requests by alice, bob;")
    assert "someone@example.com" in report.reasons[0]
    assert "system:admin" not in report.reasons[0]  # not a person: the rule cannot match it


EXEC_RULE = """\
- rule: Exec By Human
  desc: d
  condition: >
    ka.stage = ResponseStarted and ka.target.resource = pods and ka.target.subresource = exec
    and not ka.user.name startswith "system:"
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: Exec By CI
  desc: d
  condition: >
    ka.target.resource = pods and ka.target.subresource = exec and ka.user.name = "system:serviceaccount:ci:bot"
  output: o
  priority: NOTICE
  source: k8s_audit
- rule: Exec By Admins
  desc: d
  condition: ka.target.subresource = exec and ka.user.groups intersects (system:masters)
  output: o
  priority: NOTICE
  source: k8s_audit
"""


@pytest.mark.parametrize(("scope", "rule", "verdict"), [
    ("userGroups: [developers]", "Exec By Human", Verdict.PARTIAL),  # a member of developers is a person
    ("userGroups: [developers]", "Exec By CI", Verdict.BLIND),  # the one account it names is not logged
    ("userGroups: [system:masters]", "Exec By Admins", Verdict.OK),  # all it can match is logged
    ("userGroups: [developers]", "Exec By Admins", Verdict.BLIND),
    ('users: ["system:serviceaccount:ns1:sa1"]', "Exec By Human", Verdict.BLIND),  # a logged SA is no person
    ('userGroups: ["system:serviceaccounts:ci"]', "Exec By CI", Verdict.OK),
])
def test_policy_scoped_to_users_or_groups(tmp_path: Path, scope: str, rule: str, verdict: Verdict) -> None:
    """A rule is BLIND only when no identity it can match is logged at the stage it needs."""
    policy = f"apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n    {scope}\n"
    assert _verdict(tmp_path, policy, EXEC_RULE, rule)[0] is verdict


def test_policy_scoped_to_a_namespace(tmp_path: Path) -> None:
    """A rule on namespaced objects logged only in kube-system is PARTIAL and names the namespaces it misses."""
    policy = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n"
              "    namespaces: [kube-system]\n")
    verdict, reasons = _verdict(tmp_path, policy, RULES, "Any Secret Read")
    assert verdict is Verdict.PARTIAL
    assert "nothing it needs is logged in namespace default" in reasons


def test_both_event_apis(tmp_path: Path) -> None:
    """Core Events dropped while events.k8s.io is logged: PARTIAL, naming the API that is dropped."""
    policy = ("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: None\n"
              "    resources: [{group: \"\", resources: [events]}]\n  - level: Metadata\n")
    verdict, reasons = _verdict(tmp_path, policy, RULES, "Events Deleted")
    assert verdict is Verdict.PARTIAL
    assert any(r.startswith("delete events in default by ") for r in reasons)
    assert not any("events.events.k8s.io" in r for r in reasons)
    dropped_new = policy.replace('group: ""', "group: events.k8s.io")
    verdict, reasons = _verdict(tmp_path, dropped_new, RULES, "Events Deleted")
    assert verdict is Verdict.PARTIAL
    assert any(r.startswith("delete events.events.k8s.io in default") for r in reasons)


@pytest.mark.parametrize(("content", "message"), [
    (gzip.compress(POLICY.encode()), "cannot read audit policy: it is gzip-compressed"),
    (b"\xff\xfekind: Policy\n", "cannot read audit policy: not UTF-8 text (byte 0xff at offset 0)"),
])
def test_unreadable_policy_is_one_line(tmp_path: Path, content: bytes, message: str) -> None:
    """A gzipped or non-UTF-8 policy file is one error line naming the file, exit 2, no traceback."""
    path = tmp_path / "policy.yaml.gz"
    path.write_bytes(content)
    cmd = [sys.executable, "-m", "detector", "policy-check", "--policy", str(path)]
    result = subprocess.run(cmd, capture_output=True, text=True, check=False, cwd=REPO)
    assert result.returncode == 2
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(f"detector: {path}: {message}")
