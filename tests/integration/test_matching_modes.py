"""`rule_matching: first` vs `all` on the upstream ruleset, over random audit events.

Falco (format.md §6) evaluates rules in order of first definition; `first` stops at the first
match, `all` reports every match in that order. So for any event, `first` must be exactly the
head of `all`, and `all` must follow rule definition order. The ruleset is the upstream
k8saudit 0.18.0 file loaded after falco_rules.yaml 1.0.1, as both regression suites do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import orjson
import pytest
from hypothesis import HealthCheck, event, find, given, settings
from hypothesis import strategies as st

from detector.event import AuditEvent
from detector.parse.audit import parse_line
from detector.rules.loader import LoadOptions, load_rules
from detector.rules.ruleset import RuleMatching, Ruleset

SHARED = Path(__file__).resolve().parents[2].parent / "shared"
DATA = SHARED / "falco" / "data"
RULES_FILES = [
    DATA / "falcosecurity-rules@falco-rules-1.0.1" / "rules" / "falco_rules.yaml",
    DATA / "falcosecurity-plugins@0b3cbd8d84eba83877159cf3c9fdae1820084c26" / "plugins" / "k8saudit" / "rules"
    / "k8s_audit_rules.yaml",
]
if not all(path.is_file() for path in RULES_FILES):
    pytest.skip("../shared (Falco reference data) is absent: matching-mode properties not run",
                allow_module_level=True)

# Repeats weight the draw toward what the rules look for (creates of completed requests).
VERBS = ["create", "create", "create", "get", "list", "watch", "update", "patch", "delete", "deletecollection"]
RESOURCES = ["pods", "configmaps", "namespaces", "secrets", "clusterroles", "clusterrolebindings", "roles",
             "services", "deployments", "serviceaccounts"]
NAMESPACES = ["kube-system", "kube-public", "default", "foo"]
USERS = ["system:anonymous", "minikube-user", "system:serviceaccount:kube-system:x", "some-user", "admin",
         "system:kube-controller-manager"]
SENSITIVE_PATHS = ["/proc", "/var/run/docker.sock", "/etc", "/tmp", "/var/lib/kubelet", "/home/user"]


@pytest.fixture(scope="module")
def rulesets() -> tuple[Ruleset, Ruleset]:
    """The upstream ruleset compiled for `first` and for `all`."""
    first = load_rules(RULES_FILES, LoadOptions(matching=RuleMatching.FIRST))
    every = load_rules(RULES_FILES, LoadOptions(matching=RuleMatching.ALL))
    return first, every


def containers() -> st.SearchStrategy[list[dict[str, Any]]]:
    container = st.fixed_dictionaries(
        {"name": st.sampled_from(["c1", "c2"]), "image": st.sampled_from(["nginx", "apache", "nginx:1.25",
                                                                           "falcosecurity/falco:0.37"])},
        optional={"securityContext": st.fixed_dictionaries({}, optional={"privileged": st.booleans()})},
    )
    return st.lists(container, min_size=1, max_size=2)


def request_objects() -> st.SearchStrategy[dict[str, Any]]:
    """Request bodies touching every field family the rules read (pod spec, service, RBAC, configmap)."""
    volume = st.fixed_dictionaries({"name": st.just("v"),
                                    "hostPath": st.fixed_dictionaries({"path": st.sampled_from(SENSITIVE_PATHS)})})
    spec = st.fixed_dictionaries({}, optional={
        "containers": containers(),
        "initContainers": containers(),
        "volumes": st.lists(volume, max_size=2),
        "hostNetwork": st.booleans(),
        "hostPID": st.booleans(),
        "hostIPC": st.booleans(),
        "type": st.sampled_from(["NodePort", "ClusterIP", "LoadBalancer"]),
    })
    rule = st.fixed_dictionaries({
        "apiGroups": st.just([""]),
        "resources": st.lists(st.sampled_from(["pods", "pods/exec", "*", "secrets"]), min_size=1, max_size=2),
        "verbs": st.lists(st.sampled_from(["get", "list", "create", "delete", "*"]), min_size=1, max_size=2),
    })
    subject = st.fixed_dictionaries({"kind": st.sampled_from(["User", "ServiceAccount", "Group"]),
                                     "name": st.sampled_from(["alice", "default"]), "namespace": st.just("default")})
    data = st.dictionaries(st.sampled_from(["access.properties", "ui.properties"]),
                           st.sampled_from(["aws_access_key_id = X", "color=blue", "password=hunter2"]), max_size=2)
    return st.fixed_dictionaries({}, optional={
        "spec": spec,
        "rules": st.lists(rule, max_size=2),
        "subjects": st.lists(subject, max_size=2),
        "roleRef": st.fixed_dictionaries({"name": st.sampled_from(["cluster-admin", "view"])}),
        "data": data,
    })


@st.composite
def audit_events(draw: st.DrawFn) -> dict[str, Any]:
    """A real-shaped audit.k8s.io/v1 Event with the keys the upstream rules look at drawn at random."""
    resource = draw(st.sampled_from(RESOURCES))
    namespace = draw(st.sampled_from([*NAMESPACES, None]))
    object_ref: dict[str, Any] = {"resource": resource, "apiVersion": "v1"}
    if namespace is not None:
        object_ref["namespace"] = namespace
    name = draw(st.sampled_from([None, "foo", "system:coredns", "system:kube-aggregator", "coredns", "x"]))
    if name is not None:
        object_ref["name"] = name
    subresource = draw(st.sampled_from([None, None, "exec", "attach", "portforward", "ephemeralcontainers"]))
    if subresource is not None:
        object_ref["subresource"] = subresource
    body: dict[str, Any] = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": "RequestResponse",
        "auditID": str(draw(st.uuids())),
        "stage": draw(st.sampled_from(["ResponseComplete", "ResponseComplete", "ResponseStarted"])),
        "requestURI": draw(st.sampled_from(["/api/v1/namespaces", "/healthz", "/api/v1/pods?command=bash"])),
        "verb": draw(st.sampled_from(VERBS)),
        "user": {"username": draw(st.sampled_from(USERS)), "groups": ["system:authenticated"]},
        "sourceIPs": ["10.0.0.7"],
        "objectRef": object_ref,
        "responseStatus": {"metadata": {}, "code": draw(st.sampled_from([200, 201, 403, 404]))},
        "requestReceivedTimestamp": "2024-05-01T12:00:00.000000Z",
        "stageTimestamp": "2024-05-01T12:00:00.123456Z",
        "annotations": {"authorization.k8s.io/decision": draw(st.sampled_from(["allow", "forbid"])),
                        "authorization.k8s.io/reason": ""},
    }
    if draw(st.booleans()):
        body["requestObject"] = draw(request_objects())
    if draw(st.booleans()):
        body["responseObject"] = {"metadata": {"name": "obj-1"}}
    return body


def parse(body: dict[str, Any]) -> AuditEvent:
    """A fresh event (no extraction cache shared between the two rulesets)."""
    parsed = parse_line(orjson.dumps(body))
    assert isinstance(parsed, AuditEvent)
    return parsed


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(body=audit_events())
def test_first_is_head_of_all_in_rule_order(rulesets: tuple[Ruleset, Ruleset], body: dict[str, Any]) -> None:
    """`first` yields exactly the first `all` match, and `all` lists matches in rule definition order."""
    first, every = rulesets
    order = {name: position for position, name in enumerate(r.name for r in every.rules)}
    all_names = [m.rule for m in every.evaluate(parse(body))]
    first_names = [m.rule for m in first.evaluate(parse(body))]
    event(f"matches under all: {min(len(all_names), 3)}")
    assert first_names == all_names[:1]
    positions = [order[name] for name in all_names]
    assert positions == sorted(set(positions))


def test_both_modes_share_rule_order(rulesets: tuple[Ruleset, Ruleset]) -> None:
    """Both loads see the same rules in the same (first definition) order."""
    first, every = rulesets
    assert [r.name for r in first.rules] == [r.name for r in every.rules]
    assert len(every.rules) > 30


def test_generator_reaches_multiple_matches(rulesets: tuple[Ruleset, Ruleset]) -> None:
    """The event generator can produce events that several rules match, so the property has teeth."""
    _, every = rulesets
    found = find(audit_events(), lambda body: len(every.evaluate(parse(body))) >= 3,
                 settings=settings(max_examples=2000, deadline=None, database=None))
    assert len(every.evaluate(parse(found))) >= 3
