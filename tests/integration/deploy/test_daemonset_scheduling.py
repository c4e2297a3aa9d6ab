"""The DaemonSet as `kubectl kustomize` renders it schedules on the control-plane nodes of
kubeadm, k3s and RKE2 (and old `master`-labelled ones), and on no worker.

The node labels and taints are those each distribution sets: kubeadm labels
`node-role.kubernetes.io/control-plane: ""` (and `master: ""` before 1.24) and taints
`control-plane:NoSchedule` (`master:NoSchedule` before 1.25); k3s and RKE2 servers carry
`control-plane: "true"`, `master: "true"` (and RKE2 `etcd: "true"`), untainted by default,
`CriticalAddonsOnly=true:NoExecute` when dedicated, and RKE2's split roles taint
`control-plane=true:NoSchedule` and `etcd=true:NoExecute`. The scheduler's rules are those of
k8s.io/component-helpers/scheduling/corev1 (nodeaffinity: terms ORed, expressions ANDed;
taints: every NoSchedule/NoExecute taint tolerated).
"""

from __future__ import annotations

import subprocess
from typing import Any

import pytest
import yaml

from tests.integration.deploy.support import KUBE, find_tool

ROLE = "node-role.kubernetes.io/"
BASE = {"kubernetes.io/os": "linux", "kubernetes.io/arch": "amd64"}
Taint = tuple[str, str, str]  # key, value, effect

CONTROL_PLANES: dict[str, tuple[dict[str, str], list[Taint]]] = {
    "kubeadm 1.25+": ({f"{ROLE}control-plane": ""}, [(f"{ROLE}control-plane", "", "NoSchedule")]),
    "kubeadm 1.20-1.23": ({f"{ROLE}control-plane": "", f"{ROLE}master": ""}, [(f"{ROLE}master", "", "NoSchedule")]),
    "kubeadm 1.24": ({f"{ROLE}control-plane": ""},
                     [(f"{ROLE}control-plane", "", "NoSchedule"), (f"{ROLE}master", "", "NoSchedule")]),
    "old master label only": ({f"{ROLE}master": ""}, [(f"{ROLE}master", "", "NoSchedule")]),
    "k3s server": ({f"{ROLE}control-plane": "true", f"{ROLE}master": "true"}, []),
    "k3s dedicated server": ({f"{ROLE}control-plane": "true", f"{ROLE}master": "true"},
                             [("CriticalAddonsOnly", "true", "NoExecute")]),
    "RKE2 server": ({f"{ROLE}control-plane": "true", f"{ROLE}etcd": "true", f"{ROLE}master": "true"}, []),
    "RKE2 control-plane only": ({f"{ROLE}control-plane": "true", f"{ROLE}master": "true"},
                                [(f"{ROLE}control-plane", "true", "NoSchedule")]),
    "RKE2 control-plane + etcd, split roles": (
        {f"{ROLE}control-plane": "true", f"{ROLE}etcd": "true", f"{ROLE}master": "true"},
        [(f"{ROLE}control-plane", "true", "NoSchedule"), (f"{ROLE}etcd", "true", "NoExecute")]),
}
WORKERS: dict[str, dict[str, str]] = {
    "unlabelled worker": {},
    "RKE2 worker": {f"{ROLE}worker": "true"},
    "RKE2 etcd-only node": {f"{ROLE}etcd": "true"},
    "worker with a look-alike label of another prefix": {
        "node-role.kubernetes.io/worker": "", "example.com/control-plane": "true"},
}


@pytest.fixture(scope="module")
def rendered_pod_spec() -> dict[str, Any]:
    """The DaemonSet's pod spec from `kubectl kustomize deploy/kubernetes`."""
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it carries kustomize)")
    result = subprocess.run([kubectl, "kustomize", str(KUBE)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    (daemonset,) = [d for d in yaml.safe_load_all(result.stdout)
                    if d and d["kind"] == "DaemonSet" and d["metadata"]["name"] == "detector"]
    spec: dict[str, Any] = daemonset["spec"]["template"]["spec"]
    return spec


def _expression_matches(expression: dict[str, Any], labels: dict[str, str]) -> bool:
    key, op, values = expression["key"], expression["operator"], expression.get("values", [])
    match op:
        case "Exists":
            return key in labels
        case "DoesNotExist":
            return key not in labels
        case "In":
            return key in labels and labels[key] in values
        case "NotIn":
            return key not in labels or labels[key] not in values
        case "Gt" | "Lt":
            if key not in labels:
                return False
            value, bound = int(labels[key]), int(values[0])
            return value > bound if op == "Gt" else value < bound
        case _:
            raise AssertionError(f"unknown operator {op}")


def schedulable(spec: dict[str, Any], labels: dict[str, str], taints: list[Taint]) -> bool:
    """Whether the scheduler may place the pod on a node with these labels and taints."""
    if any(labels.get(k) != v for k, v in spec.get("nodeSelector", {}).items()):
        return False
    required = spec.get("affinity", {}).get("nodeAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution")
    if required is not None and not any(
            all(_expression_matches(e, labels) for e in term.get("matchExpressions", []))
            for term in required["nodeSelectorTerms"]):
        return False
    return all(_tolerated(taint, spec.get("tolerations", [])) for taint in taints
               if taint[2] in ("NoSchedule", "NoExecute"))


def _tolerated(taint: Taint, tolerations: list[dict[str, Any]]) -> bool:
    key, value, effect = taint
    for toleration in tolerations:
        if toleration.get("effect") not in (None, "", effect):
            continue
        if toleration.get("key") not in (None, "", key):
            continue
        if toleration.get("operator", "Equal") == "Exists" or toleration.get("value", "") == value:
            return True
    return False


@pytest.mark.parametrize("node", list(CONTROL_PLANES))
def test_schedules_on_control_plane_nodes(rendered_pod_spec: dict[str, Any], node: str) -> None:
    """Every distribution's control-plane node labels and taints admit the rendered pod."""
    labels, taints = CONTROL_PLANES[node]
    assert schedulable(rendered_pod_spec, {**BASE, **labels}, taints)


@pytest.mark.parametrize("node", list(WORKERS))
def test_does_not_schedule_on_workers(rendered_pod_spec: dict[str, Any], node: str) -> None:
    """A node without either role label gets no pod, tainted or not."""
    assert not schedulable(rendered_pod_spec, {**BASE, **WORKERS[node]}, [])


def test_the_evaluator_tells_the_old_node_selector_apart() -> None:
    """The evaluator is not trivially true: the old nodeSelector misses k3s and RKE2, and a NoSchedule
    toleration alone does not admit RKE2's etcd NoExecute taint."""
    old = {"nodeSelector": {f"{ROLE}control-plane": ""},
           "tolerations": [{"key": f"{ROLE}control-plane", "operator": "Exists", "effect": "NoSchedule"}]}
    assert schedulable(old, {**BASE, **CONTROL_PLANES["kubeadm 1.25+"][0]}, CONTROL_PLANES["kubeadm 1.25+"][1])
    assert not schedulable(old, {**BASE, **CONTROL_PLANES["k3s server"][0]}, [])
    labels, taints = CONTROL_PLANES["RKE2 control-plane + etcd, split roles"]
    assert not schedulable({"tolerations": old["tolerations"]}, labels, taints)
