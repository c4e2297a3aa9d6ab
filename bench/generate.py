#!/usr/bin/env python3
"""Deterministic generator of realistic Kubernetes audit logs for the detector benchmark.

Writes N ``audit.k8s.io/v1`` Event objects as compact JSON lines, keys in Go struct order and with
Go's HTML escaping of ``&``, ``<``, ``>`` (``\\u0026``...), as ``kube-apiserver --audit-log-path``
writes them.
The same ``--seed`` and ``--events`` always give a byte-identical file.

Approximate mix (share of lines): ~80% get/list/watch by system users (nodes, controllers, scheduler,
in-cluster service accounts), ~8% lease get/update, ~7% writes with ``requestObject`` (pods, bindings,
status patches, configmaps, secrets, deployments, services, RBAC, deletes), ~2% exec/attach/portforward,
~1% anonymous / 401 / 403 / non-resource URLs.  Multi-stage requests (watches, exec, a few
RequestReceived) share one auditID across their stage lines; ``stageTimestamp`` strictly increases.

    python bench/generate.py --events 1000000 --out /tmp/audit.log [--seed 1] [--stats]
"""

from __future__ import annotations

import argparse
import base64
import bisect
import heapq
import itertools
import math
import random
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, TypeVar
from urllib.parse import quote

import orjson

JSON = dict[str, Any]
T = TypeVar("T")

K8S_VERSION = "v1.29.4"
K8S_COMMIT = "55019c8"
START_US = 1_735_725_600 * 1_000_000  # 2025-01-01T10:00:00Z
MEAN_GAP_US = 2_000  # ~500 lines/s: a busy mid-size cluster
RAND_ALPHABET = "bcdfghjklmnpqrstvwxz2456789"  # k8s.io/apimachinery/pkg/util/rand
RR, RS, RC = "RequestReceived", "ResponseStarted", "ResponseComplete"
P_REQUEST_RECEIVED = 0.05  # most policies omit the RequestReceived stage; some do not

OK_200: JSON = {"metadata": {}, "code": 200}
CREATED_201: JSON = {"metadata": {}, "code": 201}
SWITCHING_101: JSON = {"metadata": {}, "code": 101}
UNAUTHORIZED_401: JSON = {
    "metadata": {},
    "status": "Failure",
    "message": "Unauthorized",
    "reason": "Unauthorized",
    "code": 401,
}
NODE_GROUPS = ["system:nodes", "system:authenticated"]
NO_USER: JSON = {}
ANONYMOUS: JSON = {"username": "system:anonymous", "groups": ["system:unauthenticated"]}
PUBLIC_INFO_REASON = (
    'RBAC: allowed by ClusterRoleBinding "system:public-info-viewer" of ClusterRole '
    '"system:public-info-viewer" to Group "system:unauthenticated"'
)


def component_agent(component: str, suffix: str = "") -> str:
    agent = f"{component}/{K8S_VERSION} (linux/amd64) kubernetes/{K8S_COMMIT}"
    return f"{agent}/{suffix}" if suffix else agent


KUBELET_AGENT = component_agent("kubelet")
KUBECTL_AGENTS = (
    "kubectl/v1.29.3 (linux/amd64) kubernetes/6813625",
    "kubectl/v1.30.1 (darwin/arm64) kubernetes/6911225",
    "kubectl/v1.28.7 (windows/amd64) kubernetes/c8dcb00",
)


# --------------------------------------------------------------------------------------------- time


@lru_cache(maxsize=16_384)
def _second(sec: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(sec))


def micro_time(us: int) -> str:
    """metav1.MicroTime: RFC3339 with 6 fractional digits, always UTC 'Z'."""
    sec, frac = divmod(us, 1_000_000)
    return f"{_second(sec)}.{frac:06d}Z"


def rfc3339(us: int) -> str:
    """metav1.Time: RFC3339 seconds."""
    return _second(us // 1_000_000) + "Z"


def go_duration(us: int) -> str:
    if us >= 1_000_000:
        return f"{us / 1_000_000:.9g}s"
    return f"{us / 1_000:.6g}ms"


# ------------------------------------------------------------------------------------ world model


@dataclass(frozen=True, slots=True)
class RT:
    """An API resource type."""

    resource: str
    group: str
    version: str
    namespaced: bool

    def path(self, namespace: str | None, name: str | None = None, sub: str | None = None) -> str:
        parts = ["/api/v1" if not self.group else f"/apis/{self.group}/{self.version}"]
        if namespace and self.namespaced:
            parts.append(f"/namespaces/{namespace}")
        parts.append(f"/{self.resource}")
        if name:
            parts.append(f"/{name}")
        if sub:
            parts.append(f"/{sub}")
        return "".join(parts)

    def ref(
        self,
        namespace: str | None,
        name: str | None = None,
        sub: str | None = None,
        uid: str | None = None,
        rv: str | None = None,
    ) -> JSON:
        """objectRef with keys in Go struct order."""
        ref: JSON = {"resource": self.resource}
        if namespace and self.namespaced:
            ref["namespace"] = namespace
        if name:
            ref["name"] = name
        if uid:
            ref["uid"] = uid
        if self.group:
            ref["apiGroup"] = self.group
        ref["apiVersion"] = self.version
        if rv:
            ref["resourceVersion"] = rv
        if sub:
            ref["subresource"] = sub
        return ref


PODS = RT("pods", "", "v1", True)
NODES = RT("nodes", "", "v1", False)
NAMESPACES = RT("namespaces", "", "v1", False)
CONFIGMAPS = RT("configmaps", "", "v1", True)
SECRETS = RT("secrets", "", "v1", True)
SERVICES = RT("services", "", "v1", True)
ENDPOINTS = RT("endpoints", "", "v1", True)
SERVICEACCOUNTS = RT("serviceaccounts", "", "v1", True)
PVCS = RT("persistentvolumeclaims", "", "v1", True)
PVS = RT("persistentvolumes", "", "v1", False)
ENDPOINTSLICES = RT("endpointslices", "discovery.k8s.io", "v1", True)
DEPLOYMENTS = RT("deployments", "apps", "v1", True)
REPLICASETS = RT("replicasets", "apps", "v1", True)
DAEMONSETS = RT("daemonsets", "apps", "v1", True)
STATEFULSETS = RT("statefulsets", "apps", "v1", True)
JOBS = RT("jobs", "batch", "v1", True)
CRONJOBS = RT("cronjobs", "batch", "v1", True)
LEASES = RT("leases", "coordination.k8s.io", "v1", True)
CSINODES = RT("csinodes", "storage.k8s.io", "v1", False)
RUNTIMECLASSES = RT("runtimeclasses", "node.k8s.io", "v1", False)
INGRESSES = RT("ingresses", "networking.k8s.io", "v1", True)
PDBS = RT("poddisruptionbudgets", "policy", "v1", True)
HPAS = RT("horizontalpodautoscalers", "autoscaling", "v2", True)
ROLES = RT("roles", "rbac.authorization.k8s.io", "v1", True)
ROLEBINDINGS = RT("rolebindings", "rbac.authorization.k8s.io", "v1", True)
CLUSTERROLES = RT("clusterroles", "rbac.authorization.k8s.io", "v1", False)
CLUSTERROLEBINDINGS = RT("clusterrolebindings", "rbac.authorization.k8s.io", "v1", False)

APPS: dict[str, tuple[str, ...]] = {
    "default": ("nginx", "echo-server"),
    "web": ("frontend", "api-gateway", "checkout", "cart"),
    "payments": ("payments-api", "ledger", "fraud-scorer"),
    "data": ("kafka", "etl-runner", "redis"),
    "monitoring": ("prometheus", "grafana", "alertmanager", "kube-state-metrics"),
    "ingress-nginx": ("ingress-nginx-controller",),
    "cert-manager": ("cert-manager", "cert-manager-webhook"),
    "argocd": ("argocd-server", "argocd-repo-server"),
    "kube-system": ("coredns", "metrics-server", "ebs-csi-controller"),
}
PUBLIC_IMAGES = {
    "nginx": "nginx:1.25.4",
    "redis": "redis:7.2.4-alpine",
    "kafka": "bitnami/kafka:3.7.0",
    "coredns": "registry.k8s.io/coredns/coredns:v1.11.1",
    "metrics-server": "registry.k8s.io/metrics-server/metrics-server:v0.7.1",
    "prometheus": "quay.io/prometheus/prometheus:v2.51.1",
    "grafana": "grafana/grafana:10.4.1",
    "alertmanager": "quay.io/prometheus/alertmanager:v0.27.0",
}
SIDECARS = ("istio-proxy", "fluent-bit", "config-reloader")
ALL_NAMESPACES = (*APPS, "kube-public", "kube-node-lease", "ci", "flux-system")


@dataclass(frozen=True, slots=True)
class Node:
    name: str
    ip: str
    uid: str
    lease_uid: str


@dataclass(frozen=True, slots=True)
class Pod:
    namespace: str
    app: str
    name: str
    uid: str
    containers: tuple[str, ...]
    image: str
    node: Node
    ip: str


@dataclass(frozen=True, slots=True)
class Actor:
    """An authenticated client: user info, where it connects from, what it reads."""

    user: JSON
    ips: tuple[list[str], ...]
    agents: tuple[str, ...]
    allow: JSON  # annotations of an allowed request
    reads: tuple[RT, ...] = ()
    node: Node | None = None

    @property
    def name(self) -> str:
        return str(self.user.get("username", ""))


def allow_annotations(reason: str) -> JSON:
    return {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": reason}


FORBID: JSON = {"authorization.k8s.io/decision": "forbid", "authorization.k8s.io/reason": ""}


def rbac_reason(
    binding: str,
    role: str,
    subject: str,
    *,
    binding_kind: str = "ClusterRoleBinding",
    role_kind: str = "ClusterRole",
    subject_kind: str = "ServiceAccount",
) -> str:
    return (
        f'RBAC: allowed by {binding_kind} "{binding}" of {role_kind} "{role}" to {subject_kind} "{subject}"'
    )


@dataclass(slots=True)
class Request:
    """Stage-independent part of one audited request."""

    category: str
    level: str
    audit_id: str
    uri: str
    verb: str
    actor_user: JSON
    source_ips: list[str] | None
    user_agent: str | None
    object_ref: JSON | None
    status: JSON
    annotations: JSON | None
    request_object: Any = None
    response_object: Any = None
    received: str = ""


def render(req: Request, stage: str, stage_ts: str) -> JSON:
    """Build the Event dict in Go struct key order."""
    ev: JSON = {
        "kind": "Event",
        "apiVersion": "audit.k8s.io/v1",
        "level": req.level,
        "auditID": req.audit_id,
        "stage": stage,
        "requestURI": req.uri,
        "verb": req.verb,
        "user": req.actor_user,
    }
    if req.source_ips:
        ev["sourceIPs"] = req.source_ips
    if req.user_agent:
        ev["userAgent"] = req.user_agent
    if req.object_ref is not None:
        ev["objectRef"] = req.object_ref
    if stage != RR:
        ev["responseStatus"] = req.status
        if req.request_object is not None:
            ev["requestObject"] = req.request_object
        if req.response_object is not None and stage == RC:
            ev["responseObject"] = req.response_object
    ev["requestReceivedTimestamp"] = req.received
    ev["stageTimestamp"] = stage_ts
    if req.annotations and stage != RR:
        ev["annotations"] = req.annotations
    return ev


# A plan lists (stage, microseconds after requestReceived); its first entry is written "now".
Plan = list[tuple[str, int]]
Built = tuple[Request, Plan]

UUID_CLEAR = ~((0xF000 << 64) | (0xC000 << 48))
UUID_SET = (0x4000 << 64) | (0x8000 << 48)


class World:
    """Seeded random state plus the cluster inventory (nodes, pods, actors, name pools)."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.now = START_US
        self.rv = 48_210_377
        self.nodes = [self._node(i) for i in range(40)]
        self.pods = self._pods()
        self.apps = [(ns, app) for ns, names in APPS.items() for app in names]
        self.names = self._name_pools()
        self.blobs = [self._pem_blob(self.rng.randint(900, 1300)) for _ in range(16)]

    # -- random helpers
    def uuid(self) -> str:
        h = f"{(self.rng.getrandbits(128) & UUID_CLEAR) | UUID_SET:032x}"
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"

    def suffix(self, n: int) -> str:
        return "".join(self.rng.choices(RAND_ALPHABET, k=n))

    def hexstr(self, n: int) -> str:
        return f"{self.rng.getrandbits(4 * n):0{n}x}"

    def next_rv(self) -> str:
        self.rv += self.rng.randint(1, 40)
        return str(self.rv)

    def latency(self, median_us: float = 2_500.0, sigma: float = 1.0) -> int:
        return max(80, int(self.rng.lognormvariate(math.log(median_us), sigma)))

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.rng.random() * len(seq))]

    def _pem_blob(self, size: int) -> str:
        body = base64.b64encode(self.rng.randbytes(size)).decode()
        lines = "\n".join(body[i : i + 64] for i in range(0, len(body), 64))
        pem = f"-----BEGIN CERTIFICATE-----\n{lines}\n-----END CERTIFICATE-----\n"
        return base64.b64encode(pem.encode()).decode()

    # -- inventory
    def _node(self, i: int) -> Node:
        a, b = self.rng.randint(0, 63), self.rng.randint(2, 254)
        return Node(f"ip-10-0-{a}-{b}.eu-west-1.compute.internal", f"10.0.{a}.{b}", self.uuid(), self.uuid())

    def _pods(self) -> list[Pod]:
        pods: list[Pod] = []
        for ns, apps in APPS.items():
            for app in apps:
                pods.extend(self._app_pods(ns, app))
        return pods

    def _app_pods(self, ns: str, app: str) -> list[Pod]:
        rs = f"{app}-{self.suffix(10)}"
        extra = self.rng.choice(((), (), (SIDECARS[0],), (SIDECARS[1], SIDECARS[2])))
        image = PUBLIC_IMAGES.get(app, f"registry.example.com/{ns}/{app}:1.{self.rng.randint(0, 30)}.2")
        pods = []
        for _ in range(self.rng.randint(1, 8)):
            node = self.rng.choice(self.nodes)
            ip = f"10.244.{self.rng.randint(0, 63)}.{self.rng.randint(2, 254)}"
            pods.append(Pod(ns, app, f"{rs}-{self.suffix(5)}", self.uuid(), (app, *extra), image, node, ip))
        return pods

    def _name_pools(self) -> dict[str, list[tuple[str | None, str]]]:
        apps = [(ns, app) for ns, names in APPS.items() for app in names]
        pools: dict[str, list[tuple[str | None, str]]] = {
            "pods": [(p.namespace, p.name) for p in self.pods],
            "nodes": [(None, n.name) for n in self.nodes],
            "csinodes": [(None, n.name) for n in self.nodes],
            "namespaces": [(None, ns) for ns in ALL_NAMESPACES],
            "configmaps": [(ns, n) for ns, a in apps for n in ("kube-root-ca.crt", f"{a}-config")],
            "secrets": [
                (ns, n)
                for ns, a in apps
                for n in (f"{a}-tls", f"{a}-credentials", f"sh.helm.release.v1.{a}.v3")
            ],
            "endpointslices": [(ns, f"{a}-{self.suffix(5)}") for ns, a in apps],
            "replicasets": [(p.namespace, p.name.rsplit("-", 1)[0]) for p in self.pods],
            "persistentvolumes": [(None, f"pvc-{self.uuid()}") for _ in range(20)],
            "runtimeclasses": [(None, "runc"), (None, "gvisor")],
        }
        pools["default"] = list(apps)
        return pools

    def object_name(self, rt: RT) -> tuple[str | None, str]:
        return self.pick(self.names.get(rt.resource) or self.names["default"])

    def pod_in(self, namespace: str) -> Pod:
        """A pod of `namespace` (any pod if the namespace runs none), e.g. to bind a service account token."""
        local = [p for p in self.pods if p.namespace == namespace]
        return self.rng.choice(local or self.pods)

    def namespace(self) -> str:
        return self.pick(ALL_NAMESPACES)


# ------------------------------------------------------------------------------------------ actors


def make_actors(w: World) -> dict[str, list[Actor]]:
    return {
        "nodes": [node_actor(n) for n in w.nodes],
        "controllers": controller_actors(w),
        "components": component_actors(),
        "pod_sas": pod_sa_actors(w),
        "humans": human_actors(w),
        "automation": automation_actors(w),
    }


def node_actor(node: Node) -> Actor:
    user = {"username": f"system:node:{node.name}", "groups": NODE_GROUPS}
    return Actor(
        user,
        ([node.ip],),
        (KUBELET_AGENT,),
        allow_annotations(""),
        (PODS, NODES, CONFIGMAPS, SECRETS, SERVICES, CSINODES, RUNTIMECLASSES),
        node,
    )


CONTROL_PLANE_IPS = (["172.18.0.2"], ["172.18.0.3"], ["172.18.0.4"], ["::1"])
CONTROLLERS: dict[str, tuple[RT, ...]] = {
    "replicaset-controller": (REPLICASETS, PODS),
    "deployment-controller": (DEPLOYMENTS, REPLICASETS, PODS),
    "endpointslice-controller": (ENDPOINTSLICES, SERVICES, PODS),
    "endpoint-controller": (ENDPOINTS, SERVICES, PODS),
    "daemon-set-controller": (DAEMONSETS, PODS, NODES),
    "job-controller": (JOBS, PODS),
    "cronjob-controller": (CRONJOBS, JOBS),
    "namespace-controller": (NAMESPACES,),
    "generic-garbage-collector": (PODS, REPLICASETS, CONFIGMAPS, SECRETS, JOBS),
    "horizontal-pod-autoscaler": (HPAS, DEPLOYMENTS, PODS),
    "persistent-volume-binder": (PVCS, PVS),
    "statefulset-controller": (STATEFULSETS, PODS, PVCS),
    "disruption-controller": (PDBS, PODS, DEPLOYMENTS),
    "root-ca-cert-publisher": (CONFIGMAPS, NAMESPACES),
    "service-account-controller": (SERVICEACCOUNTS, NAMESPACES),
}


def sa_user(w: World, ns: str, name: str, pod: Pod | None = None) -> JSON:
    extra: dict[str, list[str]] = {"authentication.kubernetes.io/credential-id": [f"JTI={w.uuid()}"]}
    if pod is not None:
        extra = {
            "authentication.kubernetes.io/credential-id": [f"JTI={w.uuid()}"],
            "authentication.kubernetes.io/node-name": [pod.node.name],
            "authentication.kubernetes.io/node-uid": [w.uuid()],
            "authentication.kubernetes.io/pod-name": [pod.name],
            "authentication.kubernetes.io/pod-uid": [pod.uid],
        }
    return {
        "username": f"system:serviceaccount:{ns}:{name}",
        "uid": w.uuid(),
        "groups": ["system:serviceaccounts", f"system:serviceaccounts:{ns}", "system:authenticated"],
        "extra": extra,
    }


def controller_actors(w: World) -> list[Actor]:
    actors = []
    for name, reads in CONTROLLERS.items():
        role = f"system:controller:{name}"
        reason = rbac_reason(role, role, f"{name}/kube-system")
        agent = component_agent("kube-controller-manager", f"system:serviceaccount:kube-system:{name}")
        actors.append(
            Actor(
                sa_user(w, "kube-system", name), CONTROL_PLANE_IPS, (agent,), allow_annotations(reason), reads
            )
        )
    return actors


def component_actors() -> list[Actor]:
    kcm = "system:kube-controller-manager"
    sched = "system:kube-scheduler"
    return [
        Actor(
            {"username": kcm, "groups": ["system:authenticated"]},
            CONTROL_PLANE_IPS,
            (
                component_agent("kube-controller-manager", "shared-informers"),
                component_agent("kube-controller-manager", "tokens-controller"),
            ),
            allow_annotations(rbac_reason(kcm, kcm, kcm, subject_kind="User")),
            (
                PODS,
                NODES,
                SECRETS,
                SERVICEACCOUNTS,
                NAMESPACES,
                DEPLOYMENTS,
                REPLICASETS,
                DAEMONSETS,
                STATEFULSETS,
                JOBS,
                PVCS,
                ENDPOINTSLICES,
                LEASES,
            ),
        ),
        Actor(
            {"username": sched, "groups": ["system:authenticated"]},
            CONTROL_PLANE_IPS,
            (component_agent("kube-scheduler", "scheduler"),),
            allow_annotations(rbac_reason(sched, sched, sched, subject_kind="User")),
            (PODS, NODES, PVCS, PVS, CSINODES, STATEFULSETS, REPLICASETS, SERVICES, PDBS, NAMESPACES),
        ),
    ]


POD_SAS: tuple[tuple[str, str, str, tuple[RT, ...]], ...] = (
    (
        "kube-system",
        "coredns",
        "coredns/v0.0.0 (linux/amd64) kubernetes/$Format",
        (ENDPOINTSLICES, SERVICES, NAMESPACES),
    ),
    ("kube-system", "kube-proxy", component_agent("kube-proxy"), (SERVICES, ENDPOINTSLICES, NODES)),
    (
        "kube-system",
        "metrics-server",
        "metrics-server/v0.7.1 (linux/amd64) kubernetes/$Format",
        (NODES, PODS),
    ),
    (
        "monitoring",
        "kube-state-metrics",
        "kube-state-metrics/v2.12.0 (linux/amd64) kubernetes/$Format",
        (PODS, DEPLOYMENTS, NODES, SERVICES, JOBS, CRONJOBS, PVCS, SECRETS, CONFIGMAPS, NAMESPACES),
    ),
    ("monitoring", "prometheus-k8s", "Prometheus/2.51.1", (PODS, SERVICES, ENDPOINTS, ENDPOINTSLICES)),
    (
        "ingress-nginx",
        "ingress-nginx",
        "nginx-ingress-controller/v1.10.0 (linux/amd64) ingress-nginx/71f78d49f0a4",
        (INGRESSES, SERVICES, ENDPOINTSLICES, SECRETS, CONFIGMAPS),
    ),
    (
        "cert-manager",
        "cert-manager",
        "cert-manager-controller/v1.14.4 (linux/amd64) cert-manager/f5a2a0ba",
        (SECRETS, INGRESSES, CONFIGMAPS),
    ),
)


def pod_sa_actors(w: World) -> list[Actor]:
    actors = []
    for ns, name, agent, reads in POD_SAS:
        pod = w.pod_in(ns)
        reason = rbac_reason(name, name, f"{name}/{ns}")
        actors.append(
            Actor(
                sa_user(w, ns, name, pod),
                ([pod.ip], [pod.node.ip]),
                (agent,),
                allow_annotations(reason),
                reads,
            )
        )
    return actors


HUMAN_WRITE_SCALE = 0.1

HUMAN_IPS = (
    ["192.168.10.23"],
    ["192.168.10.57"],
    ["10.8.0.14"],
    ["172.20.4.9"],
    ["203.0.113.17", "10.0.0.4"],
    ["198.51.100.42"],
    ["2001:db8:85a3::8a2e:370:7334"],
    ["198.51.100.7", "172.31.52.37"],
)


def human_actors(w: World) -> list[Actor]:
    admin_reason = rbac_reason(
        "kubeadm:cluster-admins", "cluster-admin", "kubeadm:cluster-admins", subject_kind="Group"
    )
    return [
        Actor(
            {"username": "alice@example.com", "groups": ["platform-admins", "system:authenticated"]},
            HUMAN_IPS[:3],
            KUBECTL_AGENTS,
            allow_annotations(
                rbac_reason("platform-admins", "cluster-admin", "platform-admins", subject_kind="Group")
            ),
        ),
        Actor(
            {"username": "bob", "groups": ["developers", "system:authenticated"]},
            HUMAN_IPS[2:6],
            KUBECTL_AGENTS[1:],
            allow_annotations(
                rbac_reason(
                    "developers-edit/web",
                    "edit",
                    "developers",
                    binding_kind="RoleBinding",
                    subject_kind="Group",
                )
            ),
        ),
        Actor(
            {"username": "carol@example.com", "groups": ["sre", "system:authenticated"]},
            HUMAN_IPS[4:],
            (*KUBECTL_AGENTS, "k9s/v0.32.4 (darwin/arm64) kubernetes/$Format"),
            allow_annotations(rbac_reason("sre-admin", "admin", "sre", subject_kind="Group")),
        ),
        Actor(
            {
                "username": "kubernetes-admin",
                "groups": ["kubeadm:cluster-admins", "system:authenticated"],
                "extra": {"authentication.kubernetes.io/credential-id": [f"X509SHA256={w.hexstr(64)}"]},
            },
            (["192.168.10.5"], ["172.18.0.2"]),
            KUBECTL_AGENTS[:1],
            allow_annotations(admin_reason),
        ),
    ]


def automation_actors(w: World) -> list[Actor]:
    specs = (
        (
            "argocd",
            "argocd-application-controller",
            "argocd-application-controller/v0.0.0 (linux/amd64) kubernetes/$Format",
            "cluster-admin",
        ),
        (
            "flux-system",
            "kustomize-controller",
            "kustomize-controller/v1.2.2 (linux/amd64) flux",
            "cluster-admin",
        ),
        ("ci", "deployer", "Helm/3.14.2", "edit"),
    )
    actors = []
    for ns, name, agent, role in specs:
        pod = w.pod_in(ns)
        reason = rbac_reason(f"{name}-binding", role, f"{name}/{ns}")
        actors.append(Actor(sa_user(w, ns, name, pod), ([pod.ip],), (agent,), allow_annotations(reason)))
    return actors


# ------------------------------------------------------------------------------------------ bodies


def fields_v1(obj: Any) -> JSON:
    """A managedFields fieldsV1 set shaped like the object (used as realistic padding)."""
    out: JSON = {}
    for key, value in obj.items():
        if isinstance(value, dict) and value:
            out[f"f:{key}"] = {".": {}, **fields_v1(value)}
        elif isinstance(value, list) and value and isinstance(value[0], dict) and "name" in value[0]:
            out[f"f:{key}"] = {f'k:{{"name":"{v["name"]}"}}': {".": {}, **fields_v1(v)} for v in value}
        else:
            out[f"f:{key}"] = {}
    return out


def managed_fields(obj: JSON, manager: str, api_version: str, ts: str, operation: str = "Update") -> JSON:
    tracked = {k: v for k, v in obj.items() if k not in ("kind", "apiVersion", "status")}
    meta = tracked.get("metadata", {})
    tracked["metadata"] = {k: v for k, v in meta.items() if k in ("labels", "annotations")}
    return {
        "manager": manager,
        "operation": operation,
        "apiVersion": api_version,
        "time": ts,
        "fieldsType": "FieldsV1",
        "fieldsV1": fields_v1(tracked),
    }


def last_applied(obj: JSON) -> str:
    return orjson.dumps(obj).decode() + "\n"


RESTRICTED_CTX: JSON = {
    "allowPrivilegeEscalation": False,
    "capabilities": {"drop": ["ALL"]},
    "runAsNonRoot": True,
    "runAsUser": 10001,
    "readOnlyRootFilesystem": True,
    "seccompProfile": {"type": "RuntimeDefault"},
}
SENSITIVE_HOST_PATHS = (
    "/var/run/docker.sock",
    "/run/containerd/containerd.sock",
    "/etc",
    "/proc",
    "/",
    "/root",
    "/var/lib/kubelet",
)
BENIGN_HOST_PATHS = ("/var/log", "/sys/fs/cgroup", "/etc/ssl/certs")


def container_spec(w: World, name: str, image: str, mounts: list[JSON], risk: str) -> JSON:
    c: JSON = {"name": name, "image": image}
    if w.rng.random() < 0.4:
        c["args"] = [f"--port={w.rng.choice((8080, 9090, 3000))}", "--log-level=info"]
    c["ports"] = [{"name": "http", "containerPort": w.rng.choice((80, 8080, 9090)), "protocol": "TCP"}]
    c["env"] = [
        {"name": "LOG_LEVEL", "value": "info"},
        {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
    ]
    c["resources"] = {
        "limits": {"cpu": "500m", "memory": "512Mi"},
        "requests": {"cpu": "100m", "memory": "128Mi"},
    }
    if mounts:
        c["volumeMounts"] = mounts
    c["terminationMessagePath"] = "/dev/termination-log"
    c["terminationMessagePolicy"] = "File"
    c["imagePullPolicy"] = w.rng.choice(("IfNotPresent", "Always"))
    c["securityContext"] = security_context(w, risk)
    return c


def security_context(w: World, risk: str) -> JSON:
    if risk == "privileged":
        return {"privileged": True}
    if risk == "caps":
        return {"capabilities": {"add": ["NET_ADMIN", "SYS_ADMIN"]}, "runAsUser": 0}
    return RESTRICTED_CTX if w.rng.random() < 0.6 else {}


def pod_volumes(w: World, app: str, risk: str) -> tuple[list[JSON], list[JSON]]:
    """Return (volumes, mounts of the first container)."""
    vols: list[JSON] = [{"name": "config", "configMap": {"name": f"{app}-config", "defaultMode": 420}}]
    mounts: list[JSON] = [{"name": "config", "readOnly": True, "mountPath": "/etc/app"}]
    if w.rng.random() < 0.5:
        vols.append({"name": "tls", "secret": {"secretName": f"{app}-tls", "defaultMode": 420}})
        mounts.append({"name": "tls", "readOnly": True, "mountPath": "/etc/tls"})
    if w.rng.random() < 0.3:
        vols.append({"name": "cache", "emptyDir": {"sizeLimit": "1Gi"}})
        mounts.append({"name": "cache", "mountPath": "/cache"})
    if risk == "hostpath" or w.rng.random() < 0.05:
        path = w.pick(SENSITIVE_HOST_PATHS if risk == "hostpath" else BENIGN_HOST_PATHS)
        vols.append({"name": "host", "hostPath": {"path": path, "type": ""}})
        mounts.append({"name": "host", "mountPath": f"/host{path.rstrip('/')}"})
    return vols, mounts


def pod_spec(w: World, pod: Pod, risk: str, n_containers: int) -> JSON:
    vols, mounts = pod_volumes(w, pod.app, risk)
    names = (pod.containers + SIDECARS)[:n_containers]
    containers = [
        container_spec(
            w,
            n,
            pod.image if i == 0 else f"docker.io/library/{n}:1.6",
            mounts if i == 0 else [],
            risk if i == n_containers - 1 else "",
        )
        for i, n in enumerate(names)
    ]
    spec: JSON = {
        "volumes": vols,
        "containers": containers,
        "restartPolicy": "Always",
        "terminationGracePeriodSeconds": 30,
        "dnsPolicy": "ClusterFirst",
        "serviceAccountName": pod.app,
    }
    if risk == "hostnetwork":
        spec["hostNetwork"] = True
        spec["hostPID"] = w.rng.random() < 0.3
    spec["securityContext"] = {"fsGroup": 2000} if w.rng.random() < 0.5 else {}
    spec["schedulerName"] = "default-scheduler"
    return spec


def pod_object(w: World, pod: Pod, risk: str, by_controller: bool) -> JSON:
    rs = pod.name.rsplit("-", 1)[0]
    meta: JSON
    if by_controller:
        meta = {
            "generateName": f"{rs}-",
            "namespace": pod.namespace,
            "creationTimestamp": None,
            "labels": {"app": pod.app, "pod-template-hash": rs.rsplit("-", 1)[1]},
            "ownerReferences": [
                {
                    "apiVersion": "apps/v1",
                    "kind": "ReplicaSet",
                    "name": rs,
                    "uid": w.uuid(),
                    "controller": True,
                    "blockOwnerDeletion": True,
                }
            ],
        }
    else:
        meta = {
            "name": pod.name,
            "namespace": pod.namespace,
            "creationTimestamp": None,
            "labels": {"run": pod.app},
        }
    n = 1 + int(w.rng.random() ** 2 * 3)
    return {
        "kind": "Pod",
        "apiVersion": "v1",
        "metadata": meta,
        "spec": pod_spec(w, pod, risk, min(n, 3)),
        "status": {},
    }


def persisted(w: World, obj: JSON, manager: str, group_version: str) -> JSON:
    """The object as the API server returns it (uid, resourceVersion, managedFields)."""
    ts = rfc3339(w.now)
    meta = dict(obj["metadata"])
    meta.pop("creationTimestamp", None)
    meta.update(
        {
            "uid": w.uuid(),
            "resourceVersion": w.next_rv(),
            "creationTimestamp": ts,
            "managedFields": [managed_fields(obj, manager, group_version, ts)],
        }
    )
    return {**obj, "metadata": meta}


# ----------------------------------------------------------------------------------------- builders


class Builders:
    """One method per request family; each returns (Request, Plan)."""

    def __init__(self, w: World) -> None:
        self.w = w
        self.actors = make_actors(w)
        self.exec_queries = [exec_query(cmd) for cmd in EXEC_COMMANDS]

    # -- shared helpers
    def request(
        self,
        actor: Actor,
        uri: str,
        verb: str,
        ref: JSON | None,
        status: JSON,
        *,
        level: str = "Metadata",
        annotations: JSON | None = None,
    ) -> Request:
        w = self.w
        return Request(
            "",
            level,
            w.uuid(),
            uri,
            verb,
            actor.user,
            w.pick(actor.ips),
            w.pick(actor.agents),
            ref,
            status,
            actor.allow if annotations is None else annotations,
        )

    def simple_plan(self, latency: int) -> Plan:
        if self.w.rng.random() < P_REQUEST_RECEIVED:
            return [(RR, 0), (RC, latency)]
        return [(RC, latency)]

    def long_running_plan(self, started: int, duration: int) -> Plan:
        if self.w.rng.random() < P_REQUEST_RECEIVED:
            return [(RR, 0), (RS, started), (RC, started + duration)]
        return [(RS, started), (RC, started + duration)]

    # -- reads (~80%)
    def read(self) -> Built:
        w = self.w
        r = w.rng.random()
        group = (
            "nodes"
            if r < 0.40
            else "controllers"
            if r < 0.64
            else "components"
            if r < 0.79
            else "pod_sas"
            if r < 0.995
            else "humans"
        )
        actor: Actor = w.pick(self.actors[group])
        rt: RT = w.pick(actor.reads) if actor.reads else w.pick((PODS, DEPLOYMENTS, SERVICES, CONFIGMAPS))
        v = w.rng.random()
        if v < 0.55:
            return self.read_get(actor, rt)
        if v < 0.88:
            return self.read_list(actor, rt)
        return self.read_watch(actor, rt)

    def read_get(self, actor: Actor, rt: RT) -> Built:
        w = self.w
        if actor.node is not None and rt in (NODES, CSINODES):
            ns, name = None, actor.node.name
        else:
            ns, name = w.object_name(rt)
        uri = rt.path(ns, name)
        if actor.node is not None and rt is NODES:
            uri += "?resourceVersion=0&timeout=10s"
        req = self.request(actor, uri, "get", rt.ref(ns, name), OK_200)
        if rt is SECRETS and actor.node is None and w.rng.random() < 0.02:
            req.status = not_found(rt, name)
        return req, self.simple_plan(w.latency())

    def list_query(self, actor: Actor, rt: RT, ns: str | None) -> tuple[str, str | None]:
        w = self.w
        if actor.node is not None and rt in (CONFIGMAPS, SECRETS):
            _, name = w.object_name(rt)
            return f"?fieldSelector=metadata.name%3D{name}&resourceVersion={w.next_rv()}", name
        if actor.user.get("username", "").startswith("system:kube") or w.rng.random() < 0.5:
            return "?limit=500&resourceVersion=0", None
        app = w.pick(APPS.get(ns or "web", APPS["web"]))
        return f"?labelSelector=app%3D{app}&limit=500", None

    def read_list(self, actor: Actor, rt: RT) -> Built:
        w = self.w
        ns = w.namespace() if rt.namespaced and w.rng.random() < 0.5 else None
        query, name = self.list_query(actor, rt, ns)
        uri = rt.path(ns) + query
        latency = w.latency(8_000, 1.5)
        req = self.request(actor, uri, "list", rt.ref(ns, name), OK_200)
        if latency > 500_000:
            req.annotations = {**actor.allow, **latency_annotations(w, latency)}
        return req, self.simple_plan(latency)

    def read_watch(self, actor: Actor, rt: RT) -> Built:
        w = self.w
        ns = w.namespace() if rt.namespaced and w.rng.random() < 0.3 else None
        name = None
        selector = ""
        if actor.node is not None and rt in (CONFIGMAPS, SECRETS, NODES):
            ns, name = (None, actor.node.name) if rt is NODES else w.object_name(rt)
            selector = f"&fieldSelector=metadata.name%3D{name}"
        timeout = w.rng.randint(300, 599)
        uri = (
            f"{rt.path(ns)}?allowWatchBookmarks=true{selector}&resourceVersion={w.next_rv()}"
            f"&timeout={timeout // 60}m{timeout % 60}s&timeoutSeconds={timeout}&watch=true"
        )
        req = self.request(actor, uri, "watch", rt.ref(ns, name), OK_200)
        return req, self.long_running_plan(w.latency(400, 0.5), timeout * 1_000_000 + w.latency())

    # -- leases (~8%)
    def lease(self) -> Built:
        w = self.w
        if w.rng.random() < 0.85:
            return self.node_lease()
        return self.leader_lease()

    def node_lease(self) -> Built:
        w = self.w
        actor: Actor = w.pick(self.actors["nodes"])
        assert actor.node is not None
        node = actor.node
        rv = w.next_rv()
        ref = LEASES.ref("kube-node-lease", node.name, uid=node.lease_uid, rv=rv)
        uri = LEASES.path("kube-node-lease", node.name) + "?timeout=10s"
        req = self.request(actor, uri, "update", ref, OK_200)
        if w.rng.random() < 0.2:
            req.level = "Request"
            req.request_object = node_lease_object(w, node, rv)
        return req, self.simple_plan(w.latency(3_000, 0.6))

    def leader_lease(self) -> Built:
        w = self.w
        actor: Actor = w.pick(self.actors["components"])
        name = "kube-controller-manager" if "controller" in actor.name else "kube-scheduler"
        verb = "get" if w.rng.random() < 0.4 else "update"
        uri = LEASES.path("kube-system", name) + "?timeout=5s"
        status = OK_200 if verb == "get" or w.rng.random() > 0.03 else conflict(LEASES, name)
        rv = w.next_rv() if verb == "update" else None
        req = self.request(actor, uri, verb, LEASES.ref("kube-system", name, rv=rv), status)
        req.user_agent = component_agent(name, "leader-election")
        return req, self.simple_plan(w.latency(2_000, 0.6))

    # -- writes (~7%)
    def write(self) -> Built:
        w = self.w
        fn = WRITE_FAMILIES[bisect.bisect(WRITE_CUM, w.rng.random() * WRITE_CUM[-1])]
        req, plan = fn(self)
        fit_size(req)
        return req, plan

    def human_or_bot(self, p_human: float = 0.6) -> Actor:
        # In production clusters people issue well under 1% of API requests; controllers,
        # operators and CI automation do the writing. HUMAN_WRITE_SCALE keeps each call site's
        # relative preference while bringing the overall human share to that level.
        w = self.w
        human = w.rng.random() < p_human * HUMAN_WRITE_SCALE
        return w.pick(self.actors["humans"] if human else self.actors["automation"])

    def pod_create_controller(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        ctrl = self.actors["controllers"][0]  # replicaset-controller
        body = pod_object(w, pod, "" if w.rng.random() < 0.97 else "hostpath", by_controller=True)
        req = self.request(
            ctrl,
            PODS.path(pod.namespace),
            "create",
            PODS.ref(pod.namespace),
            CREATED_201,
            level="Request",
            annotations=pod_admission(w, ctrl, pod),
        )
        req.request_object = body
        return req, self.simple_plan(w.latency(9_000, 0.7))

    def pod_create_human(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        actor = self.human_or_bot(0.8)
        risk = w.pick(("", "", "", "", "privileged", "hostpath", "hostnetwork", "caps"))
        body = pod_object(w, pod, risk, by_controller=False)
        uri = PODS.path(pod.namespace) + "?fieldManager=kubectl-run"
        req = self.request(
            actor,
            uri,
            "create",
            PODS.ref(pod.namespace, pod.name),
            CREATED_201,
            level="RequestResponse",
            annotations=pod_admission(w, actor, pod, risk),
        )
        req.request_object = body
        req.response_object = persisted(w, body, "kubectl-run", "v1")
        return req, self.simple_plan(w.latency(12_000, 0.7))

    def pod_binding(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        sched = self.actors["components"][1]
        ref = PODS.ref(pod.namespace, pod.name, "binding", uid=pod.uid)
        req = self.request(
            sched, PODS.path(pod.namespace, pod.name, "binding"), "create", ref, CREATED_201, level="Request"
        )
        req.request_object = {
            "kind": "Binding",
            "apiVersion": "v1",
            "metadata": {
                "name": pod.name,
                "namespace": pod.namespace,
                "uid": pod.uid,
                "creationTimestamp": None,
            },
            "target": {"kind": "Node", "name": pod.node.name},
        }
        return req, self.simple_plan(w.latency(4_000, 0.6))

    def pod_status_patch(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        actor = self.actors["nodes"][w.nodes.index(pod.node)]
        ref = PODS.ref(pod.namespace, pod.name, "status", uid=pod.uid)
        req = self.request(
            actor, PODS.path(pod.namespace, pod.name, "status"), "patch", ref, OK_200, level="Request"
        )
        req.request_object = pod_status_patch(w, pod)
        return req, self.simple_plan(w.latency(5_000, 0.6))

    def token_request(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        actor = self.actors["nodes"][w.nodes.index(pod.node)]
        sub_ref = SERVICEACCOUNTS.ref(pod.namespace, pod.app, "token")
        req = self.request(
            actor,
            SERVICEACCOUNTS.path(pod.namespace, pod.app, "token"),
            "create",
            sub_ref,
            CREATED_201,
            level="Request",
        )
        req.request_object = {
            "kind": "TokenRequest",
            "apiVersion": "authentication.k8s.io/v1",
            "metadata": {"creationTimestamp": None},
            "spec": {
                "audiences": ["https://kubernetes.default.svc.cluster.local"],
                "expirationSeconds": 3607,
                "boundObjectRef": {"kind": "Pod", "apiVersion": "v1", "name": pod.name, "uid": pod.uid},
            },
            "status": {"token": "", "expirationTimestamp": None},
        }
        return req, self.simple_plan(w.latency(3_000, 0.6))

    def deployment_status(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        ctrl = self.actors["controllers"][1]  # deployment-controller
        body = deployment_object(w, pod, with_status=True)
        meta = body["metadata"]
        ref = DEPLOYMENTS.ref(pod.namespace, pod.app, "status", uid=meta["uid"], rv=meta["resourceVersion"])
        req = self.request(
            ctrl, DEPLOYMENTS.path(pod.namespace, pod.app, "status"), "update", ref, OK_200, level="Request"
        )
        req.request_object = body
        return req, self.simple_plan(w.latency(6_000, 0.6))

    def configmap_write(self) -> Built:
        w = self.w
        actor = self.human_or_bot(0.5)
        ns, app = w.pick(w.apps)
        name = f"{app}-config"
        body = configmap_object(w, ns, name, app)
        create = w.rng.random() < 0.5
        uri = CONFIGMAPS.path(ns) if create else CONFIGMAPS.path(ns, name)
        level = "RequestResponse" if w.rng.random() < 0.3 else "Request"
        req = self.request(
            actor,
            uri + "?fieldManager=kubectl-client-side-apply&fieldValidation=Strict",
            "create" if create else "patch" if w.rng.random() < 0.5 else "update",
            CONFIGMAPS.ref(ns, name),
            CREATED_201 if create else OK_200,
            level=level,
        )
        req.request_object = body
        if level == "RequestResponse":
            req.response_object = persisted(w, body, "kubectl-client-side-apply", "v1")
        return req, self.simple_plan(w.latency(7_000, 0.6))

    def secret_write(self) -> Built:
        w = self.w
        ns, app = w.pick(w.apps)
        tls = w.rng.random() < 0.4
        actor = self.actors["pod_sas"][6] if tls else self.human_or_bot(0.5)  # cert-manager for TLS
        name = f"{app}-tls" if tls else f"{app}-credentials"
        create = w.rng.random() < 0.4
        uri = SECRETS.path(ns) if create else SECRETS.path(ns, name)
        req = self.request(
            actor,
            uri,
            "create" if create else "update",
            SECRETS.ref(ns, name),
            CREATED_201 if create else OK_200,
            level=w.pick(("Metadata", "Request")),
        )
        if req.level == "Request":
            req.request_object = secret_object(w, ns, name, tls)
        return req, self.simple_plan(w.latency(6_000, 0.6))

    def deployment_write(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        actor = self.human_or_bot(0.5)
        r = w.rng.random()
        if r < 0.35:
            body: Any = deployment_object(w, pod, with_status=False)
            uri, verb, status = DEPLOYMENTS.path(pod.namespace), "create", CREATED_201
        elif r < 0.7:
            body = {
                "spec": {
                    "template": {
                        "metadata": {"annotations": {"kubectl.kubernetes.io/restartedAt": rfc3339(w.now)}}
                    }
                }
            }
            uri, verb, status = (
                DEPLOYMENTS.path(pod.namespace, pod.app) + "?fieldManager=kubectl-rollout",
                "patch",
                OK_200,
            )
        else:
            body = [
                {"op": "replace", "path": "/spec/replicas", "value": w.rng.randint(1, 6)},
                {"op": "replace", "path": "/spec/template/spec/containers/0/image", "value": pod.image},
            ]
            uri, verb, status = DEPLOYMENTS.path(pod.namespace, pod.app), "patch", OK_200
        req = self.request(actor, uri, verb, DEPLOYMENTS.ref(pod.namespace, pod.app), status, level="Request")
        req.request_object = body
        return req, self.simple_plan(w.latency(8_000, 0.6))

    def service_create(self) -> Built:
        w = self.w
        ns, app = w.pick(w.apps)
        actor = self.human_or_bot(0.5)
        svc_type = w.pick(("ClusterIP", "ClusterIP", "ClusterIP", "NodePort", "LoadBalancer"))
        body = service_object(w, ns, app, svc_type)
        req = self.request(
            actor,
            SERVICES.path(ns) + "?fieldManager=kubectl-client-side-apply",
            "create",
            SERVICES.ref(ns, app),
            CREATED_201,
            level="RequestResponse",
        )
        req.request_object = body
        req.response_object = persisted(w, body, "kubectl-client-side-apply", "v1")
        return req, self.simple_plan(w.latency(9_000, 0.6))

    def rbac_binding(self) -> Built:
        w = self.w
        actor = self.human_or_bot(0.6)
        cluster = w.rng.random() < 0.4
        ns = None if cluster else w.pick(tuple(APPS))
        rt = CLUSTERROLEBINDINGS if cluster else ROLEBINDINGS
        body = binding_object(w, ns, cluster)
        name = body["metadata"]["name"]
        req = self.request(
            actor, rt.path(ns), "create", rt.ref(ns, name), CREATED_201, level="RequestResponse"
        )
        req.request_object = body
        req.response_object = persisted(w, body, "kubectl-create", "rbac.authorization.k8s.io/v1")
        return req, self.simple_plan(w.latency(7_000, 0.6))

    def rbac_role(self) -> Built:
        w = self.w
        actor = self.human_or_bot(0.6)
        cluster = w.rng.random() < 0.4
        ns = None if cluster else w.pick(tuple(APPS))
        rt = CLUSTERROLES if cluster else ROLES
        body = role_object(w, ns, cluster)
        name = body["metadata"]["name"]
        req = self.request(
            actor, rt.path(ns), "create", rt.ref(ns, name), CREATED_201, level="RequestResponse"
        )
        req.request_object = body
        req.response_object = persisted(w, body, "kubectl-create", "rbac.authorization.k8s.io/v1")
        return req, self.simple_plan(w.latency(7_000, 0.6))

    def pod_delete(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        actor = w.pick(self.actors["humans"]) if w.rng.random() < 0.5 else self.actors["controllers"][0]
        req = self.request(
            actor,
            PODS.path(pod.namespace, pod.name),
            "delete",
            PODS.ref(pod.namespace, pod.name),
            OK_200,
            level="Request",
        )
        req.request_object = (
            {"kind": "DeleteOptions", "apiVersion": "meta.k8s.io/v1", "propagationPolicy": "Background"}
            if w.rng.random() < 0.7
            else {
                "kind": "DeleteOptions",
                "apiVersion": "meta.k8s.io/v1",
                "gracePeriodSeconds": 0,
                "preconditions": {"uid": pod.uid},
            }
        )
        return req, self.simple_plan(w.latency(9_000, 0.6))

    # -- exec / attach / portforward (~2%)
    def exec_like(self) -> Built:
        w = self.w
        pod: Pod = w.pick(w.pods)
        actor = self.human_or_bot(0.85)
        container = w.pick(pod.containers)
        r = w.rng.random()
        if r < 0.7:
            sub, query = (
                "exec",
                f"?{w.pick(self.exec_queries)}&container={container}&stdin=true&stdout=true&tty=true",
            )
        elif r < 0.85:
            sub, query = "attach", f"?container={container}&stderr=true&stdin=true&stdout=true&tty=true"
        else:
            sub, query = "portforward", w.pick(("", f"?ports={w.pick((8080, 5432, 6379, 9090))}"))
        verb = "create" if w.rng.random() < 0.75 else "get"  # websocket (kubectl >= 1.31) uses GET
        uri = PODS.path(pod.namespace, pod.name, sub) + query
        req = self.request(
            actor,
            uri,
            verb,
            PODS.ref(pod.namespace, pod.name, sub),
            SWITCHING_101,
            level="Metadata" if w.rng.random() < 0.7 else "Request",
        )
        duration = w.latency(20_000_000, 1.5)
        return req, self.long_running_plan(w.latency(30_000, 0.5), duration)

    # -- anonymous, unauthenticated, forbidden, non-resource (~1%)
    def anomaly(self) -> Built:
        r = self.w.rng.random()
        if r < 0.3:
            return self.unauthenticated()
        if r < 0.55:
            return self.anonymous_public()
        if r < 0.7:
            return self.forbidden(anonymous=True)
        if r < 0.85:
            return self.forbidden(anonymous=False)
        return self.non_resource()

    def unauthenticated(self) -> Built:
        """Failed authentication: empty user, a single ResponseStarted event, no annotations."""
        w = self.w
        uri, rt, ns, name = w.pick(PROBES)
        ref = rt.ref(ns, name) if rt is not None else None
        verb = "list" if rt is not None and name is None else "get"
        req = Request(
            "",
            "Metadata",
            w.uuid(),
            uri,
            verb,
            NO_USER,
            w.pick(PUBLIC_IPS),
            w.pick(SCANNER_AGENTS if rt is not None else BROWSER_AGENTS),
            ref,
            UNAUTHORIZED_401,
            None,
        )
        return req, [(RS, w.latency(300, 0.4))]

    def anonymous_public(self) -> Built:
        w = self.w
        uri = w.pick(("/healthz", "/livez", "/readyz", "/version", "/readyz?verbose"))
        ips = w.pick((["10.0.0.4"], ["10.0.1.4"], w.pick(PUBLIC_IPS)))
        req = Request(
            "",
            "Metadata",
            w.uuid(),
            uri,
            "get",
            ANONYMOUS,
            ips,
            w.pick(("kube-probe/1.29", "ELB-HealthChecker/2.0", "curl/8.5.0")),
            None,
            OK_200,
            allow_annotations(PUBLIC_INFO_REASON),
        )
        return req, [(RC, w.latency(300, 0.5))]

    def forbidden(self, anonymous: bool) -> Built:
        w = self.w
        actor_user = (
            ANONYMOUS if anonymous else w.pick(self.actors["humans"][1:3] + self.actors["pod_sas"]).user
        )
        rt: RT = w.pick((SECRETS, SECRETS, PODS, CLUSTERROLEBINDINGS, CONFIGMAPS, NODES))
        ns = None if not rt.namespaced else w.pick(("kube-system", "default", "payments"))
        verb = w.pick(("list", "get", "create")) if rt is not CLUSTERROLEBINDINGS else "create"
        name = None if verb != "get" else w.object_name(rt)[1]
        status = forbidden_status(rt, ns, name, verb, str(actor_user["username"]))
        ips = w.pick(PUBLIC_IPS) if anonymous else w.pick(HUMAN_IPS)
        agent = w.pick(SCANNER_AGENTS) if anonymous else w.pick(KUBECTL_AGENTS)
        req = Request(
            "",
            "Metadata",
            w.uuid(),
            rt.path(ns, name),
            verb,
            actor_user,
            ips,
            agent,
            rt.ref(ns, name),
            status,
            FORBID,
        )
        return req, [(RC, w.latency(600, 0.5))]

    def non_resource(self) -> Built:
        w = self.w
        if w.rng.random() < 0.5:
            actor = self.actors["pod_sas"][4]  # prometheus
            uri = "/metrics"
        else:
            actor = w.pick(self.actors["humans"])
            uri = w.pick(
                (
                    "/api?timeout=32s",
                    "/apis?timeout=32s",
                    "/openapi/v2?timeout=32s",
                    "/version?timeout=32s",
                    "/openapi/v3/apis/apps/v1?hash=6E2B1CBF2F6B0D2B&timeout=32s",
                )
            )
        req = self.request(actor, uri, "get", None, OK_200)
        return req, [(RC, w.latency(5_000, 0.8))]


PROBES: tuple[tuple[str, RT | None, str | None, str | None], ...] = (
    ("/api/v1/namespaces/kube-system/secrets?limit=500", SECRETS, "kube-system", None),
    ("/api/v1/pods?limit=500", PODS, None, None),
    ("/api/v1/namespaces/default/pods?fieldSelector=status.phase%3DRunning&limit=500", PODS, "default", None),
    ("/apis/rbac.authorization.k8s.io/v1/clusterrolebindings?limit=500", CLUSTERROLEBINDINGS, None, None),
    ("/api/v1/namespaces/kube-system/configmaps/kubeadm-config", CONFIGMAPS, "kube-system", "kubeadm-config"),
    ("/version?timeout=32s", None, None, None),
    ("/.env", None, None, None),
    ("/HNAP1", None, None, None),
    ("/apis?timeout=32s", None, None, None),
)
PUBLIC_IPS = (
    ["203.0.113.45"],
    ["203.0.113.199"],
    ["198.51.100.23"],
    ["198.51.100.150", "10.0.0.4"],
    ["2001:db8:ffff::17"],
    ["192.0.2.88"],
)
SCANNER_AGENTS = ("curl/8.5.0", "python-requests/2.31.0", "Go-http-client/1.1", "kube-hunter")
BROWSER_AGENTS = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/120.0.0.0 Safari/537.36",
    "Mozilla/5.0 (compatible; CensysInspect/1.1; +https://about.censys.io/)",
    "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/119.0.0.0 Safari/537.36",
)
EXEC_COMMANDS: tuple[tuple[str, ...], ...] = (
    ("sh",),
    ("bash",),
    ("/bin/sh", "-c", "cat /etc/shadow"),
    ("sh", "-c", "env | grep -i key"),
    ("ls", "-la", "/var/run/secrets/kubernetes.io/serviceaccount"),
    ("cat", "/var/run/secrets/kubernetes.io/serviceaccount/token"),
    ("sh", "-c", "curl -s http://169.254.169.254/latest/meta-data/iam/security-credentials/"),
    ("python3", "manage.py", "migrate"),
    ("redis-cli", "info"),
    ("psql", "-U", "postgres", "-c", "select 1"),
    ("sh", "-c", "tail -n 100 /var/log/app.log"),
    ("date",),
    ("nslookup", "kubernetes.default"),
)


def exec_query(cmd: tuple[str, ...]) -> str:
    return "&".join(f"command={quote(part, safe='')}" for part in cmd)


# ------------------------------------------------------------------------------------- more bodies


def not_found(rt: RT, name: str) -> JSON:
    return {
        "metadata": {},
        "status": "Failure",
        "message": f'{rt.resource} "{name}" not found',
        "reason": "NotFound",
        "details": {"name": name, "kind": rt.resource},
        "code": 404,
    }


def conflict(rt: RT, name: str) -> JSON:
    group = f".{rt.group}" if rt.group else ""
    return {
        "metadata": {},
        "status": "Failure",
        "message": f'Operation cannot be fulfilled on {rt.resource}{group} "{name}": the object has been '
        "modified; please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": name, "group": rt.group, "kind": rt.resource},
        "code": 409,
    }


def forbidden_status(rt: RT, ns: str | None, name: str | None, verb: str, user: str) -> JSON:
    where = f' in the namespace "{ns}"' if ns else " at the cluster scope"
    subject = f'{rt.resource} "{name}"' if name else rt.resource
    msg = (
        f'{subject} is forbidden: User "{user}" cannot {verb} resource "{rt.resource}" in API group '
        f'"{rt.group}"{where}'
    )
    details: JSON = {"name": name, "kind": rt.resource} if name else {"kind": rt.resource}
    if rt.group:
        details["group"] = rt.group
    return {
        "metadata": {},
        "status": "Failure",
        "message": msg,
        "reason": "Forbidden",
        "details": details,
        "code": 403,
    }


def latency_annotations(w: World, total: int) -> JSON:
    etcd = int(total * w.rng.uniform(0.5, 0.9))
    return {
        "apiserver.latency.k8s.io/etcd": go_duration(etcd),
        "apiserver.latency.k8s.io/response-write": go_duration(w.rng.randint(5, 900)),
        "apiserver.latency.k8s.io/serialize-response-object": go_duration(int(total - etcd) // 2),
        "apiserver.latency.k8s.io/total": go_duration(total),
    }


RESTRICTED_NAMESPACES = ("web", "payments")


def pod_admission(w: World, actor: Actor, pod: Pod, risk: str = "") -> JSON:
    level = "restricted" if pod.namespace in RESTRICTED_NAMESPACES else "privileged"
    ann = {**actor.allow, "pod-security.kubernetes.io/enforce-policy": f"{level}:latest"}
    if risk and level == "privileged":
        ann["pod-security.kubernetes.io/audit-violations"] = (
            f'would violate PodSecurity "restricted:latest": allowPrivilegeEscalation != false (container '
            f'"{pod.containers[0]}" must set securityContext.allowPrivilegeEscalation=false), unrestricted '
            f'capabilities (container "{pod.containers[0]}" must set '
            'securityContext.capabilities.drop=["ALL"])'
        )
    if "istio-proxy" in pod.containers:
        ann["mutation.webhook.admission.k8s.io/round_0_index_0"] = (
            '{"configuration":"istio-sidecar-injector","webhook":"namespace.sidecar-injector.istio.io",'
            '"mutated":true}'
        )
    return ann


def node_lease_object(w: World, node: Node, rv: str) -> JSON:
    owner = {"apiVersion": "v1", "kind": "Node", "name": node.name, "uid": node.uid}
    return {
        "kind": "Lease",
        "apiVersion": "coordination.k8s.io/v1",
        "metadata": {
            "name": node.name,
            "namespace": "kube-node-lease",
            "uid": node.lease_uid,
            "resourceVersion": rv,
            "creationTimestamp": "2024-11-02T08:14:51Z",
            "ownerReferences": [owner],
        },
        "spec": {"holderIdentity": node.name, "leaseDurationSeconds": 40, "renewTime": micro_time(w.now)},
    }


POD_CONDITIONS = ("PodReadyToStartContainers", "Initialized", "Ready", "ContainersReady", "PodScheduled")


def pod_status_patch(w: World, pod: Pod) -> JSON:
    ts = rfc3339(w.now)
    statuses = [
        {
            "containerID": f"containerd://{w.hexstr(64)}",
            "image": pod.image,
            "imageID": f"{pod.image.split(':')[0]}@sha256:{w.hexstr(64)}",
            "lastState": {},
            "name": c,
            "ready": True,
            "restartCount": w.rng.choice((0, 0, 0, 1, 3)),
            "started": True,
            "state": {"running": {"startedAt": ts}},
        }
        for c in pod.containers
    ]
    return {
        "metadata": {"uid": pod.uid},
        "status": {
            "$setElementOrder/conditions": [{"type": t} for t in POD_CONDITIONS],
            "conditions": [
                {"lastTransitionTime": ts, "status": "True", "type": t} for t in ("Ready", "ContainersReady")
            ],
            "containerStatuses": statuses,
            "podIP": pod.ip,
            "podIPs": [{"ip": pod.ip}],
        },
    }


def deployment_object(w: World, pod: Pod, with_status: bool) -> JSON:
    replicas = w.rng.randint(1, 6)
    template = {
        "metadata": {"creationTimestamp": None, "labels": {"app": pod.app}},
        "spec": {
            "containers": [container_spec(w, pod.app, pod.image, [], "")],
            "restartPolicy": "Always",
            "terminationGracePeriodSeconds": 30,
            "dnsPolicy": "ClusterFirst",
            "securityContext": {},
            "schedulerName": "default-scheduler",
        },
    }
    labels = {
        "app": pod.app,
        "app.kubernetes.io/part-of": pod.namespace,
        "app.kubernetes.io/managed-by": "kubectl",
    }
    body: JSON = {
        "kind": "Deployment",
        "apiVersion": "apps/v1",
        "metadata": {"name": pod.app, "namespace": pod.namespace, "labels": labels},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": pod.app}},
            "template": template,
            "strategy": {
                "type": "RollingUpdate",
                "rollingUpdate": {"maxUnavailable": "25%", "maxSurge": "25%"},
            },
            "revisionHistoryLimit": 10,
            "progressDeadlineSeconds": 600,
        },
    }
    if not with_status:
        body["metadata"]["creationTimestamp"] = None
        return body
    body = persisted(w, body, "kubectl-client-side-apply", "apps/v1")
    body["metadata"]["generation"] = w.rng.randint(1, 40)
    body["status"] = deployment_status(w, replicas)
    return body


def deployment_status(w: World, replicas: int) -> JSON:
    ts = rfc3339(w.now)
    return {
        "observedGeneration": w.rng.randint(1, 40),
        "replicas": replicas,
        "updatedReplicas": replicas,
        "readyReplicas": replicas,
        "availableReplicas": replicas,
        "conditions": [
            {
                "type": "Available",
                "status": "True",
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
                "reason": "MinimumReplicasAvailable",
                "message": "Deployment has minimum availability.",
            },
            {
                "type": "Progressing",
                "status": "True",
                "lastUpdateTime": ts,
                "lastTransitionTime": ts,
                "reason": "NewReplicaSetAvailable",
                "message": "ReplicaSet has successfully progressed.",
            },
        ],
    }


APP_CONFIG = (
    "server:\n  port: 8080\n  shutdownTimeout: 30s\nlogging:\n  level: info\n  format: json\n"
    "database:\n  host: postgres.data.svc.cluster.local\n  pool: 20\nfeatures:\n  newCheckout: true\n"
)
SENSITIVE_CONFIG = "aws_access_key_id = AKIAIOSFODNN7EXAMPLE\naws_secret_access_key = wJalrXUtnFEMI/K7MDENG\n"


def configmap_object(w: World, ns: str, name: str, app: str) -> JSON:
    data = {
        "application.yaml": APP_CONFIG,
        "LOG_LEVEL": w.pick(("info", "debug", "warn")),
        "FEATURE_FLAGS": "checkout-v2,search-v3",
    }
    if w.rng.random() < 0.05:
        data["credentials.properties"] = SENSITIVE_CONFIG
    body: JSON = {
        "kind": "ConfigMap",
        "apiVersion": "v1",
        "metadata": {"name": name, "namespace": ns, "labels": {"app": app}},
        "data": data,
    }
    body["metadata"]["annotations"] = {"kubectl.kubernetes.io/last-applied-configuration": last_applied(body)}
    return body


def secret_object(w: World, ns: str, name: str, tls: bool) -> JSON:
    if tls:
        data = {"tls.crt": w.pick(w.blobs), "tls.key": w.pick(w.blobs)[:1600]}
        kind = "kubernetes.io/tls"
    else:
        data = {
            "username": base64.b64encode(b"app").decode(),
            "password": base64.b64encode(w.hexstr(24).encode()).decode(),
        }
        kind = "Opaque"
    return {
        "kind": "Secret",
        "apiVersion": "v1",
        "metadata": {
            "name": name,
            "namespace": ns,
            "creationTimestamp": None,
            "labels": {"app.kubernetes.io/name": name.rsplit("-", 1)[0]},
        },
        "data": data,
        "type": kind,
    }


def service_object(w: World, ns: str, app: str, svc_type: str) -> JSON:
    port: JSON = {"name": "http", "protocol": "TCP", "port": 80, "targetPort": 8080}
    if svc_type == "NodePort":
        port["nodePort"] = w.rng.randint(30000, 32767)
    spec: JSON = {"ports": [port], "selector": {"app": app}, "type": svc_type, "sessionAffinity": "None"}
    if svc_type != "ClusterIP":
        spec["externalTrafficPolicy"] = "Cluster"
    return {
        "kind": "Service",
        "apiVersion": "v1",
        "metadata": {"name": app, "namespace": ns, "creationTimestamp": None, "labels": {"app": app}},
        "spec": spec,
        "status": {"loadBalancer": {}},
    }


def binding_object(w: World, ns: str | None, cluster: bool) -> JSON:
    role = w.pick(("view", "edit", "admin", "cluster-admin", "pod-reader", "secret-reader"))
    subject = w.pick(
        (
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "bob"},
            {"kind": "Group", "apiGroup": "rbac.authorization.k8s.io", "name": "developers"},
            {"kind": "ServiceAccount", "name": "deployer", "namespace": "ci"},
            {"kind": "User", "apiGroup": "rbac.authorization.k8s.io", "name": "mallory@example.com"},
        )
    )
    name = f"{subject['name'].split('@')[0]}-{role}-{w.suffix(4)}"
    meta: JSON = {"name": name, "creationTimestamp": None}
    if not cluster:
        meta = {"name": name, "namespace": ns, "creationTimestamp": None}
    return {
        "kind": "ClusterRoleBinding" if cluster else "RoleBinding",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": meta,
        "subjects": [subject],
        "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role},
    }


ROLE_RULES: tuple[JSON, ...] = (
    {"verbs": ["get", "list", "watch"], "apiGroups": [""], "resources": ["pods", "pods/log"]},
    {"verbs": ["get", "list"], "apiGroups": [""], "resources": ["secrets"]},
    {"verbs": ["create"], "apiGroups": [""], "resources": ["pods/exec", "pods/attach"]},
    {"verbs": ["*"], "apiGroups": ["apps"], "resources": ["deployments", "replicasets"]},
    {
        "verbs": ["get", "list", "watch", "create", "update", "patch", "delete"],
        "apiGroups": [""],
        "resources": ["configmaps"],
    },
    {"verbs": ["*"], "apiGroups": ["*"], "resources": ["*"]},
    {"verbs": ["get"], "nonResourceURLs": ["/metrics", "/healthz"]},
)


def role_object(w: World, ns: str | None, cluster: bool) -> JSON:
    rules = w.rng.sample(ROLE_RULES[:-1] if not cluster else ROLE_RULES, k=w.rng.randint(1, 3))
    if not cluster:
        rules = [r for r in rules if "nonResourceURLs" not in r] or [ROLE_RULES[0]]
    name = f"{w.pick(('ci', 'ops', 'app', 'debug', 'reader'))}-{w.suffix(5)}"
    meta: JSON = {
        "name": name,
        "creationTimestamp": None,
        "labels": {"team": w.pick(("platform", "payments"))},
    }
    if not cluster:
        meta = {"name": name, "namespace": ns, "creationTimestamp": None, "labels": meta["labels"]}
    return {
        "kind": "ClusterRole" if cluster else "Role",
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "metadata": meta,
        "rules": rules,
    }


MAX_EVENT_BYTES = 5_000


def event_size(req: Request) -> int:
    ts = "2025-01-01T00:00:00.000000Z"
    received, req.received = req.received, ts
    size = len(go_json_line(render(req, RC, ts)))
    req.received = received
    return size


def fit_size(req: Request) -> None:
    """Keep an event <= 5 KB: drop the responseObject, then managedFields, then the requestObject."""
    if event_size(req) <= MAX_EVENT_BYTES:
        return
    if req.response_object is not None:
        req.response_object = None
        req.level = "Request"
        if event_size(req) <= MAX_EVENT_BYTES:
            return
    body = req.request_object
    if isinstance(body, dict) and "managedFields" in body.get("metadata", {}):
        meta = {k: v for k, v in body["metadata"].items() if k != "managedFields"}
        req.request_object = {**body, "metadata": meta}
        if event_size(req) <= MAX_EVENT_BYTES:
            return
    req.request_object = None
    req.level = "Metadata"


WRITE_WEIGHTS: tuple[tuple[Callable[[Builders], Built], float], ...] = (
    (Builders.pod_create_controller, 14),
    (Builders.pod_create_human, 6),
    (Builders.pod_binding, 10),
    (Builders.pod_status_patch, 16),
    (Builders.token_request, 8),
    (Builders.deployment_status, 6),
    (Builders.configmap_write, 10),
    (Builders.secret_write, 6),
    (Builders.deployment_write, 8),
    (Builders.service_create, 4),
    (Builders.rbac_binding, 4),
    (Builders.rbac_role, 4),
    (Builders.pod_delete, 4),
)
WRITE_FAMILIES = [fn for fn, _ in WRITE_WEIGHTS]
WRITE_CUM = list(itertools.accumulate(wt for _, wt in WRITE_WEIGHTS))

# Per-request weights, tuned so that the share of *lines* matches the target mix (watches and exec
# write 2-3 lines per request).
CATEGORY_WEIGHTS: tuple[tuple[Callable[[Builders], Built], float], ...] = (
    (Builders.read, 0.79),
    (Builders.lease, 0.085),
    (Builders.write, 0.076),
    (Builders.exec_like, 0.0115),
    (Builders.anomaly, 0.0115),
)
CATEGORY_FAMILIES = [fn for fn, _ in CATEGORY_WEIGHTS]
CATEGORY_NAMES = {fn: fn.__name__.removesuffix("_like") for fn in CATEGORY_FAMILIES}
CATEGORY_CUM = list(itertools.accumulate(wt for _, wt in CATEGORY_WEIGHTS))


# ------------------------------------------------------------------------------------------ stream


class AuditStream:
    """Yields Event dicts in stageTimestamp order; follow-up stages wait in a heap until due."""

    def __init__(self, seed: int) -> None:
        self.w = World(seed)
        self.builders = Builders(self.w)
        self.pending: list[tuple[int, int, Request, str]] = []
        self.seq = 0

    def __iter__(self) -> Iterator[tuple[Request, str, JSON]]:
        w, rng, pending = self.w, self.w.rng, self.pending
        gap = 1.0 / MEAN_GAP_US
        while True:
            w.now += 1 + int(rng.expovariate(gap))
            if pending and pending[0][0] <= w.now:
                _, _, req, stage = heapq.heappop(pending)
                yield req, stage, render(req, stage, micro_time(w.now))
            else:
                yield self.new_request()

    def new_request(self) -> tuple[Request, str, JSON]:
        w = self.w
        fn = CATEGORY_FAMILIES[bisect.bisect(CATEGORY_CUM, w.rng.random() * CATEGORY_CUM[-1])]
        req, plan = fn(self.builders)
        req.category = CATEGORY_NAMES[fn]
        first_stage, first_offset = plan[0]
        received = w.now - first_offset
        req.received = micro_time(received)
        for stage, offset in plan[1:]:
            self.seq += 1
            heapq.heappush(self.pending, (received + offset, self.seq, req, stage))
        return req, first_stage, render(req, first_stage, micro_time(w.now))


def go_json_line(event: JSON) -> bytes:
    """Compact JSON + newline with Go encoding/json's HTML escaping."""
    line = orjson.dumps(event, option=orjson.OPT_APPEND_NEWLINE)
    return line.replace(b"&", b"\\u0026").replace(b"<", b"\\u003c").replace(b">", b"\\u003e")


def generate(events: int, out: Path, seed: int, stats: Counter[str] | None = None) -> int:
    """Write `events` lines to `out`; return the number of bytes written."""
    out.parent.mkdir(parents=True, exist_ok=True)
    size = 0
    with out.open("wb", buffering=1 << 20) as fh:
        for req, stage, event in itertools.islice(AuditStream(seed), events):
            line = go_json_line(event)
            fh.write(line)
            size += len(line)
            if stats is not None:
                stats[f"category {req.category}"] += 1
                stats[f"stage {stage}"] += 1
                stats[f"level {req.level}"] += 1
                stats[f"size {min(len(line) // 500 * 500, 5000)}"] += 1
    return size


def print_stats(stats: Counter[str], events: int) -> None:
    for key in sorted(stats):
        print(f"  {key:<32} {stats[key]:>10,}  {100 * stats[key] / events:6.2f}%", file=sys.stderr)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--events", type=int, default=1_000_000, help="number of lines (default 1,000,000)")
    parser.add_argument("--out", type=Path, required=True, help="output path (JSON lines)")
    parser.add_argument("--seed", type=int, default=1, help="random seed (default 1)")
    parser.add_argument("--stats", action="store_true", help="print the category/stage/level/size mix")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stats: Counter[str] | None = Counter() if args.stats else None
    t0 = time.perf_counter()
    size = generate(args.events, args.out, args.seed, stats)
    elapsed = time.perf_counter() - t0
    print(
        f"wrote {args.events:,} events, {size / 1e6:,.1f} MB "
        f"(mean {size / max(args.events, 1):,.0f} B/event) to {args.out} in {elapsed:.1f} s",
        file=sys.stderr,
    )
    if stats is not None:
        print_stats(stats, args.events)
    return 0


if __name__ == "__main__":
    sys.exit(main())
