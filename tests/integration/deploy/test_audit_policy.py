"""deploy/kubernetes/audit-policy.yaml: a valid audit.k8s.io/v1 Policy that logs what the
shipped rules read, never secret bodies, and keeps the stages the rules alert on.

kubernetes-validate has no schema for audit.k8s.io (the API server reads the file, it is not
served), so the structure is checked here against the fields and validation rules of
apiserver's pkg/apis/audit/v1/types.go and validation.go, and the policy is evaluated with the
first-match semantics of pkg/audit/policy/checker.go.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml

from tests.integration.deploy.support import KUBE, REPO, load_yaml

POLICY = KUBE / "audit-policy.yaml"
SHARED_POLICIES = REPO.parent / "shared" / "k8s" / "policies"

LEVELS = ("None", "Metadata", "Request", "RequestResponse")
STAGES = ("RequestReceived", "ResponseStarted", "ResponseComplete", "Panic")
POLICY_KEYS = {"apiVersion", "kind", "metadata", "omitStages", "omitManagedFields", "rules"}
RULE_KEYS = {"level", "users", "userGroups", "verbs", "resources", "namespaces", "nonResourceURLs", "omitStages",
             "omitManagedFields"}
GROUP_RESOURCES_KEYS = {"group", "resources", "resourceNames"}
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


# -- structure (validation.go) ---------------------------------------------------------------
def policy_problems(policy: Any) -> list[str]:
    """Every way `policy` breaks the audit.k8s.io/v1 Policy schema or its validation rules."""
    if not isinstance(policy, dict):
        return ["a Policy must be a mapping"]
    problems = [f"unknown field {key!r}" for key in sorted(set(policy) - POLICY_KEYS)]
    if policy.get("apiVersion") != "audit.k8s.io/v1":
        problems.append("apiVersion must be audit.k8s.io/v1 (the only version since Kubernetes 1.24)")
    if policy.get("kind") != "Policy":
        problems.append("kind must be Policy")
    problems += _stage_problems(policy.get("omitStages"), "omitStages")
    if not isinstance(policy.get("omitManagedFields", False), bool):
        problems.append("omitManagedFields must be a boolean")
    rules = policy.get("rules")
    if not isinstance(rules, list) or not rules:
        return [*problems, "rules must be a non-empty list"]
    for number, rule in enumerate(rules, start=1):
        problems += [f"rule {number}: {p}" for p in _rule_problems(rule)]
    return problems


def _rule_problems(rule: Any) -> list[str]:
    if not isinstance(rule, dict):
        return ["must be a mapping"]
    problems = [f"unknown field {key!r}" for key in sorted(set(rule) - RULE_KEYS)]
    if rule.get("level") not in LEVELS:
        problems.append(f"level must be one of {', '.join(LEVELS)}")
    for key in ("users", "userGroups", "verbs", "namespaces", "nonResourceURLs"):
        if key in rule and not _strings(rule[key], allow_empty=key == "namespaces"):
            problems.append(f"{key} must be a list of strings")
    if rule.get("nonResourceURLs") and (rule.get("resources") or rule.get("namespaces")):
        problems.append("nonResourceURLs cannot be combined with resources or namespaces")
    for url in rule.get("nonResourceURLs") or []:
        if not str(url).startswith("/") or "*" in str(url)[:-1]:
            problems.append(f"nonResourceURL {url!r} must start with '/' and may end with '*' only")
    for entry in rule.get("resources") or []:
        problems += _group_resources_problems(entry)
    problems += _stage_problems(rule.get("omitStages"), "omitStages")
    if not isinstance(rule.get("omitManagedFields", False), bool):
        problems.append("omitManagedFields must be a boolean")
    return problems


def _group_resources_problems(entry: Any) -> list[str]:
    if not isinstance(entry, dict):
        return ["each resources entry must be a mapping"]
    problems = [f"unknown field {key!r} in resources" for key in sorted(set(entry) - GROUP_RESOURCES_KEYS)]
    group = entry.get("group", "")
    if not isinstance(group, str) or (group not in ("", "*") and not DNS_SUBDOMAIN.fullmatch(group)):
        problems.append(f"group {group!r} must be '', '*' or an API group name without version")
    for key in ("resources", "resourceNames"):
        if key in entry and not _strings(entry[key]):
            problems.append(f"{key} must be a list of strings")
    if entry.get("resourceNames") and not entry.get("resources"):
        problems.append("resourceNames needs resources")
    return problems


def _stage_problems(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if not _strings(value):
        return [f"{key} must be a list of stages"]
    return [f"{key}: unknown stage {stage!r}" for stage in value if stage not in STAGES]


def _strings(value: Any, allow_empty: bool = False) -> bool:
    return isinstance(value, list) and all(isinstance(v, str) and (v or allow_empty) for v in value)


# -- matching (checker.go) -------------------------------------------------------------------
@dataclass(frozen=True, slots=True)
class Request:
    """What the policy looks at: the authenticated user and the request's attributes."""

    user: str = ""
    groups: tuple[str, ...] = ()
    verb: str = "get"
    group: str | None = ""  # API group; None for a non-resource URL
    resource: str = ""
    subresource: str = ""
    namespace: str = ""
    name: str = ""
    path: str = ""


def decide(policy: dict[str, Any], request: Request) -> tuple[str, frozenset[str], bool]:
    """(level, omitted stages, omit managed fields) of the first matching rule; level None if none matches."""
    omit = frozenset(policy.get("omitStages") or ())
    managed = bool(policy.get("omitManagedFields", False))
    for rule in policy["rules"]:
        if _matches(rule, request):
            return (rule["level"], omit | frozenset(rule.get("omitStages") or ()),
                    bool(rule.get("omitManagedFields", managed)))
    return "None", omit, managed


def _matches(rule: dict[str, Any], r: Request) -> bool:
    if rule.get("users") and r.user not in rule["users"]:
        return False
    if rule.get("userGroups") and not set(rule["userGroups"]) & set(r.groups):
        return False
    if rule.get("verbs") and r.verb not in rule["verbs"]:
        return False
    if rule.get("namespaces") or rule.get("resources"):
        return r.group is not None and _resource_matches(rule, r)
    if rule.get("nonResourceURLs"):
        return r.group is None and any(_url_matches(spec, r.path) for spec in rule["nonResourceURLs"])
    return True


def _resource_matches(rule: dict[str, Any], r: Request) -> bool:
    if rule.get("namespaces") and r.namespace not in rule["namespaces"]:
        return False
    if not rule.get("resources"):
        return True
    combined = f"{r.resource}/{r.subresource}" if r.subresource else r.resource
    for entry in rule["resources"]:
        if entry.get("group", "") not in (r.group, "*"):
            continue
        if not entry.get("resources"):
            return True
        if entry.get("resourceNames") and r.name not in entry["resourceNames"]:
            continue
        for spec in entry["resources"]:
            if spec in (combined, "*") or (spec.endswith("/*") and spec[:-2] == r.resource):
                return True
            if r.subresource and spec.startswith("*/") and spec[2:] == r.subresource:
                return True
    return False


def _url_matches(spec: str, path: str) -> bool:
    return spec in ("*", path) or (spec.endswith("*") and path.startswith(spec[:-1]))


def request_of(event: dict[str, Any]) -> Request:
    """The policy's view of the request behind an audit event."""
    user = event.get("user") or {}
    common = {"user": user.get("username", ""), "groups": tuple(user.get("groups") or ()), "verb": event["verb"]}
    ref = event.get("objectRef")
    if ref is None:
        return Request(**common, group=None, path=event.get("requestURI", "").split("?", 1)[0])
    return Request(**common, group=ref.get("apiGroup", ""), resource=ref.get("resource", ""),
                   subresource=ref.get("subresource", ""), namespace=ref.get("namespace", ""),
                   name=ref.get("name", ""))


def as_logged(event: dict[str, Any], policy: dict[str, Any]) -> dict[str, Any] | None:
    """`event` as the API server would write it under `policy` (None: not written at all)."""
    level, omitted, omit_managed = decide(policy, request_of(event))
    if level == "None" or event.get("stage") in omitted:
        return None
    logged = {**event, "level": level}
    if LEVELS.index(level) < LEVELS.index("Request"):
        logged.pop("requestObject", None)
    if LEVELS.index(level) < LEVELS.index("RequestResponse"):
        logged.pop("responseObject", None)
    for key in ("requestObject", "responseObject"):
        body = logged.get(key)
        if omit_managed and isinstance(body, dict) and isinstance(body.get("metadata"), dict):
            logged[key] = {**body, "metadata": {k: v for k, v in body["metadata"].items() if k != "managedFields"}}
    return logged


# -- the policy ------------------------------------------------------------------------------
def policy() -> dict[str, Any]:
    data = load_yaml(POLICY)
    assert isinstance(data, dict)
    return data


def test_policy_is_a_valid_audit_v1_policy() -> None:
    """The shipped policy has only known fields and passes the API server's validation rules."""
    assert policy_problems(policy()) == []


@pytest.mark.parametrize("broken, problem", [
    ({"level": "Everything"}, "level must be one of"),
    ({"level": "Metadata", "resources": [{"group": "rbac.authorization.k8s.io/v1"}]}, "without version"),
    ({"level": "Metadata", "nonResourceURLs": ["/healthz*"], "namespaces": ["a"]}, "cannot be combined"),
    ({"level": "Metadata", "resources": [{"group": "", "resourceNames": ["x"]}]}, "resourceNames needs resources"),
    ({"level": "Metadata", "omitStages": ["ResponseDone"]}, "unknown stage"),
    ({"level": "Metadata", "verb": ["get"]}, "unknown field 'verb'"),
    ({"level": "Metadata", "nonResourceURLs": ["healthz"]}, "must start with '/'"),
])
def test_structure_check_rejects_what_the_api_server_rejects(broken: dict[str, Any], problem: str) -> None:
    """The hand-written check finds the mistakes validation.go refuses (or strict decoding warns about)."""
    problems = policy_problems({"apiVersion": "audit.k8s.io/v1", "kind": "Policy", "rules": [broken]})
    assert any(problem in p for p in problems), problems


def test_structure_check_accepts_real_world_policies() -> None:
    """The policies of the Kubernetes docs, kube-up/GCE, Falco and audit2rbac pass the check."""
    files = sorted(SHARED_POLICIES.glob("*.yaml"))
    if not files:
        pytest.skip(f"reference policies not found in {SHARED_POLICIES}")
    for path in files:
        assert policy_problems(load_yaml(path)) == [], path.name


def test_stages_the_rules_alert_on_are_kept() -> None:
    """RequestReceived is omitted policy-wide; no rule omits ResponseStarted, ResponseComplete or Panic."""
    data = policy()
    assert data["omitStages"] == ["RequestReceived"]
    for number, rule in enumerate(data["rules"], start=1):
        assert not set(rule.get("omitStages") or ()) - {"RequestReceived"}, f"rule {number}"


ALICE = {"user": "alice", "groups": ("developers", "system:authenticated")}
NODE = {"user": "system:node:cp-1", "groups": ("system:nodes", "system:authenticated")}
ANONYMOUS = {"user": "system:anonymous", "groups": ("system:unauthenticated",)}
REPLICASET_CONTROLLER = {"user": "system:serviceaccount:kube-system:replicaset-controller",
                         "groups": ("system:serviceaccounts", "system:serviceaccounts:kube-system",
                                    "system:authenticated")}

EXPECTED_LEVELS = [
    # Bodies the rules read.
    (Request(**ALICE, verb="create", resource="pods", namespace="default"), "Request"),
    (Request(**ALICE, verb="patch", resource="pods", subresource="ephemeralcontainers", namespace="a"), "Request"),
    (Request(**ALICE, verb="create", group="apps", resource="deployments", namespace="a"), "Request"),
    (Request(**ALICE, verb="update", group="apps", resource="daemonsets", namespace="kube-system"), "Request"),
    (Request(**ALICE, verb="create", group="batch", resource="cronjobs", namespace="a"), "Request"),
    (Request(**ALICE, verb="patch", resource="services", namespace="a"), "Request"),
    (Request(**ALICE, verb="create", group="rbac.authorization.k8s.io", resource="clusterrolebindings"), "Request"),
    (Request(**ALICE, verb="update", group="rbac.authorization.k8s.io", resource="roles", namespace="a"), "Request"),
    (Request(**ALICE, verb="update", group="certificates.k8s.io", resource="certificatesigningrequests",
             subresource="approval", name="csr-1"), "Request"),
    (Request(**ALICE, verb="create", group="admissionregistration.k8s.io",
             resource="mutatingwebhookconfigurations"), "Request"),
    (Request(**ALICE, verb="create", resource="serviceaccounts", subresource="token", namespace="a"), "Request"),
    # Metadata: enough for the rule, or sensitive.
    (Request(**ALICE, verb="create", resource="pods", subresource="exec", namespace="a"), "Metadata"),
    (Request(**ALICE, verb="get", resource="pods", subresource="portforward", namespace="a"), "Metadata"),
    (Request(**ALICE, verb="list", resource="secrets"), "Metadata"),
    (Request(**ALICE, verb="create", resource="secrets", namespace="a"), "Metadata"),
    (Request(**ALICE, verb="update", resource="configmaps", namespace="kube-system", name="coredns"), "Metadata"),
    (Request(**ALICE, verb="create", group="authentication.k8s.io", resource="tokenreviews"), "Metadata"),
    (Request(**ALICE, verb="deletecollection", resource="events", namespace="a"), "Metadata"),
    (Request(**ALICE, verb="delete", group="events.k8s.io", resource="events", namespace="a", name="e"), "Metadata"),
    (Request(**ANONYMOUS, verb="create", resource="events", namespace="a"), "Metadata"),
    (Request(**ANONYMOUS, verb="get", group=None, path="/api"), "Metadata"),
    (Request(**ANONYMOUS, verb="get", group=None, path="/healthzfoo"), "Metadata"),
    (Request(verb="get", group=None, path="/api/v1/secrets"), "Metadata"),  # failed authentication: no user
    (Request(**REPLICASET_CONTROLLER, verb="create", resource="pods", namespace="a"), "Metadata"),
    (Request(**NODE, verb="patch", resource="pods", subresource="status", namespace="a"), "Metadata"),
    # Dropped: high volume, read by no rule.
    (Request(**NODE, verb="update", group="coordination.k8s.io", resource="leases", namespace="kube-node-lease",
             name="cp-1"), "None"),
    (Request(**NODE, verb="get", resource="nodes", name="cp-1"), "None"),
    (Request(**ALICE, verb="create", resource="events", namespace="a"), "None"),
    (Request(**ALICE, verb="get", group=None, path="/apis/apps/v1"), "None"),
    (Request(**ANONYMOUS, verb="get", group=None, path="/healthz"), "None"),
    (Request(**ANONYMOUS, verb="get", group=None, path="/readyz/etcd"), "None"),
]


@pytest.mark.parametrize("request_, level", EXPECTED_LEVELS, ids=lambda v: v if isinstance(v, str) else None)
def test_policy_levels(request_: Request, level: str) -> None:
    """Each kind of request gets the level the rules need, and no more."""
    assert decide(policy(), request_)[0] == level


def test_sensitive_bodies_are_never_logged() -> None:
    """Secrets, ConfigMaps and TokenReviews stay at Metadata (or below) for every verb and user."""
    verbs = ("get", "list", "watch", "create", "update", "patch", "delete", "deletecollection")
    sensitive = (("", "secrets"), ("", "configmaps"), ("authentication.k8s.io", "tokenreviews"))
    data = policy()
    for who in (ALICE, NODE, ANONYMOUS, REPLICASET_CONTROLLER, {}):
        for verb in verbs:
            for group, resource in sensitive:
                req = Request(**who, verb=verb, group=group, resource=resource, namespace="kube-system")
                level = decide(data, req)[0]
                assert LEVELS.index(level) <= LEVELS.index("Metadata"), req


# -- end to end: the shipped rule tests, on events as this policy would log them ---------------
def rule_tests() -> list[tuple[Path, dict[str, Any]]]:
    """Every test of the shipped stateless rules' *.tests.yaml files, with the file it comes
    from. The stateful rules' tests (rules/stateful-rules.tests.yaml) give generated event
    sequences judged on the aggregate; policy-check covers their base conditions' needs."""
    found = []
    for path in sorted((REPO / "rules").glob("[0-9]*.tests.yaml")):
        data = load_yaml(path)
        entries = data.get("tests") if isinstance(data, dict) else data
        found += [(path, entry) for entry in entries]
    return found


def disabled_rules() -> set[str]:
    """The shipped rules that are off by default."""
    data = [item for path in sorted((REPO / "rules").glob("[0-9]*.yaml")) if ".tests." not in path.name
            for item in load_yaml(path) or []]
    return {item["rule"] for item in data if "rule" in item and item.get("enabled") is False}


def load_events(spec: Any, base: Path) -> list[dict[str, Any]]:
    """The events of one `events:` item: an inline event or a fixture file (JSON lines, array or EventList)."""
    if isinstance(spec, dict):
        return [spec]
    text = (base / spec).read_text(encoding="utf-8")
    try:
        whole = json.loads(text)
    except json.JSONDecodeError:
        return [json.loads(line) for line in text.splitlines() if line.strip()]
    if isinstance(whole, dict) and whole.get("kind") == "EventList":
        return list(whole.get("items") or [])
    return whole if isinstance(whole, list) else [whole]


def test_shipped_rule_tests_pass_on_events_logged_under_this_policy(tmp_path: Path) -> None:
    """Every shipped rule test still passes when its events are cut to what the policy logs (level, stages)."""
    data = policy()
    degraded, dropped = [], []
    disabled = disabled_rules()
    for path, test in rule_tests():
        if test["rule"] in disabled:
            continue  # off by default because this policy does not log what it reads (its desc says why)
        events = [e for spec in test["events"] for e in load_events(spec, path.parent)]
        logged = [e for e in (as_logged(event, data) for event in events) if e is not None]
        if not logged:
            if test["expect"].get("fires"):
                dropped.append(f"{path.name}: {test['name']}")
            continue  # a near miss the policy does not even log cannot fire
        degraded.append({**test, "events": logged})
    assert not dropped, f"the policy drops every event of tests that must fire: {dropped}"
    tests_file = tmp_path / "policy.tests.yaml"
    tests_file.write_text(yaml.safe_dump({"tests": degraded}, sort_keys=False), encoding="utf-8")
    result = subprocess.run(
        [sys.executable, "-m", "detector", "test-rule", "--rules", str(REPO / "rules"), "--tests", str(tests_file)],
        capture_output=True, text=True, timeout=120, check=False)
    failed = [line for line in result.stdout.splitlines() if "FAIL" in line]
    assert result.returncode == 0, "\n".join(failed) or result.stdout + result.stderr
    assert len(degraded) > 50


def test_policy_check_finds_no_blind_rule() -> None:
    """`detector policy-check --strict` (where it exists) reports no shipped rule blind under this policy."""
    help_text = subprocess.run([sys.executable, "-m", "detector", "--help"], capture_output=True, text=True,
                               timeout=60, check=False).stdout
    if "policy-check" not in help_text:
        pytest.skip("this detector has no policy-check command")
    result = subprocess.run([sys.executable, "-m", "detector", "policy-check", "--strict", "--policy", str(POLICY)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr
    blind = [line for line in result.stdout.splitlines() if line.startswith("BLIND")]
    assert all(line.endswith("(disabled)") for line in blind), blind
    assert len(blind) == len(disabled_rules())
