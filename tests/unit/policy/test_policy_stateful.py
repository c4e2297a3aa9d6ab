"""`detector policy-check` on stateful rules: a stateful rule needs what its base condition
needs, so it is judged exactly as the same rule without its correlation block."""

from __future__ import annotations

from pathlib import Path

from detector.policy.audit import load_policy
from detector.policy.check import Verdict, check_rule
from detector.rules.loader import load_rules

REPO = Path(__file__).resolve().parents[3]

POLICY = """\
apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: [RequestReceived]
rules:
  - level: None
    resources: [{group: "", resources: [secrets]}]
  - level: Metadata
"""

RULES = """\
- rule: Secret Reads Spread
  desc: secrets read in many namespaces
  condition: ka.target.resource = secrets and ka.verb = get
  output: "%agg.distinct namespaces"
  priority: WARNING
  source: k8s_audit
  correlation: {type: distinct, group_by: [ka.user.name], field: ka.target.namespace, window: 10m, threshold: 5}
- rule: Forbidden Burst
  desc: many 403s
  condition: ka.response.code = 403
  output: "%agg.count"
  priority: WARNING
  source: k8s_audit
  correlation: {type: count, group_by: [ka.user.name], window: 5m, threshold: 20}
"""


def test_stateful_rules_inherit_their_base_conditions_needs(tmp_path: Path) -> None:
    """Secrets are not logged: the spread rule is BLIND, as its base condition would be; the
    burst rule (any resource) is OK; with the block removed, the verdicts are the same."""
    (tmp_path / "policy.yaml").write_text(POLICY)
    (tmp_path / "rules.yaml").write_text(RULES)
    plain = RULES.replace('"%agg.distinct namespaces"', "x").replace('"%agg.count"', "x")
    plain = "\n".join(line for line in plain.splitlines() if "correlation:" not in line) + "\n"
    (tmp_path / "plain.yaml").write_text(plain)
    policy = load_policy(str(tmp_path / "policy.yaml"))
    stateful = load_rules([tmp_path / "rules.yaml"])
    verdicts = {r.name: check_rule(r, policy).verdict for r in stateful.rules}
    assert verdicts["Secret Reads Spread"] is Verdict.BLIND
    assert verdicts["Forbidden Burst"] is Verdict.OK  # any resource: seen where logged
    without = load_rules([tmp_path / "plain.yaml"])
    assert check_rule(without.rules[0], policy).verdict is verdicts["Secret Reads Spread"]


def test_the_shipped_stateful_rules_are_judged(tmp_path: Path) -> None:
    """Every shipped stateful rule gets a verdict under a Metadata-everywhere policy; the ones
    that read request bodies (the grant's subjects) are not OK at Metadata."""
    (tmp_path / "policy.yaml").write_text("apiVersion: audit.k8s.io/v1\nkind: Policy\nrules:\n  - level: Metadata\n")
    policy = load_policy(str(tmp_path / "policy.yaml"))
    ruleset = load_rules([REPO / "rules"])
    reports = {r.name: check_rule(r, policy) for r in ruleset.rules if r.correlation is not None}
    assert len(reports) == 10
    assert reports["Forbidden Burst By User"].verdict is Verdict.OK
    assert reports["RBAC Grant Then Exec Or Workload Change By Grantee"].verdict is not Verdict.BLIND
