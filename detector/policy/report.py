"""Printing `detector policy-check` results."""

from __future__ import annotations

from detector.policy.audit import load_policy
from detector.policy.check import RuleReport, Verdict, check_ruleset
from detector.rules.ruleset import Ruleset

MAX_REASONS = 4


def print_report(ruleset: Ruleset, policy_path: str, strict: bool) -> int:
    """Print one line per rule (reasons under the blind ones); exit 1 under --strict if blind."""
    policy = load_policy(policy_path)
    reports = check_ruleset(ruleset.rules, policy)
    for report in reports:
        _print(report)
    counts = {verdict: sum(1 for r in reports if r.verdict is verdict) for verdict in Verdict}
    print(f"{len(reports)} rules: {counts[Verdict.OK]} ok, {counts[Verdict.PARTIAL]} partial, "
          f"{counts[Verdict.BLIND]} blind (policy {policy_path})")
    blind = any(r.verdict is Verdict.BLIND and r.enabled for r in reports)
    return 1 if strict and blind else 0


def _print(report: RuleReport) -> None:
    suffix = "" if report.enabled else "  (disabled)"
    print(f"{report.verdict.value:<8} {report.rule}{suffix}")
    for reason in report.reasons[:MAX_REASONS]:
        print(f"         - {reason}")
    if len(report.reasons) > MAX_REASONS:
        print(f"         - ... and {len(report.reasons) - MAX_REASONS} more")
