"""deploy/kubernetes: valid Kubernetes objects, hardened, consistent with one another and with
the configuration contract of `detector run`."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path, PurePosixPath
from types import ModuleType
from typing import Any

import pytest
import yaml

from tests.integration.deploy.support import (
    CONFIG_KEYS,
    IMAGE_SHIPPED_RULES,
    KUBE,
    REPO,
    find_tool,
    load_documents,
    load_yaml,
)

# Files of deploy/kubernetes that are not cluster objects.
NOT_RESOURCES = {
    "kustomization.yaml",
    "audit-policy.yaml",  # the API server's --audit-policy-file
}
OUTPUT_SECRETS = {"SLACK_WEBHOOK_URL", "SIEM_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"}
RBAC_KINDS = {"Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding", "PriorityClass"}
OLDEST_KUBERNETES = "1.28"


def kustomization() -> dict[str, Any]:
    data = load_yaml(KUBE / "kustomization.yaml")
    assert isinstance(data, dict)
    return data


def resources() -> list[dict[str, Any]]:
    """The objects of every file kustomization.yaml lists under `resources`."""
    return [doc for name in kustomization()["resources"] for doc in load_documents(KUBE / name)]


def generated_configmaps() -> list[dict[str, Any]]:
    """The ConfigMaps kustomize generates (before it appends the content hash to the name)."""
    k = kustomization()
    maps = []
    for generator in k.get("configMapGenerator", []):
        data = {PurePosixPath(f).name: (KUBE / f).read_text(encoding="utf-8") for f in generator["files"]}
        maps.append({"apiVersion": "v1", "kind": "ConfigMap",
                     "metadata": {"name": generator["name"], "namespace": k["namespace"]}, "data": data})
    return maps


def daemonset() -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == "DaemonSet"]
    return found


def pod_spec() -> dict[str, Any]:
    spec: dict[str, Any] = daemonset()["spec"]["template"]["spec"]
    return spec


def container() -> dict[str, Any]:
    (only,) = pod_spec()["containers"]
    return dict(only)


def volume(name: str) -> dict[str, Any]:
    (found,) = [v for v in pod_spec()["volumes"] if v["name"] == name]
    return dict(found)


def mount_of(volume_name: str) -> dict[str, Any]:
    (found,) = [m for m in container()["volumeMounts"] if m["name"] == volume_name]
    return dict(found)


def config() -> dict[str, Any]:
    data = load_yaml(KUBE / "config" / "config.yaml")
    assert isinstance(data, dict)
    return data


def configmap_volume(generator_name: str) -> str:
    """The volume of the pod that mounts the generated ConfigMap `generator_name`."""
    (name,) = [v["name"] for v in pod_spec()["volumes"] if v.get("configMap", {}).get("name") == generator_name]
    return str(name)


# -- kustomize consistency -------------------------------------------------------------------
def test_every_manifest_file_is_listed_in_the_kustomization() -> None:
    """Each YAML file under deploy/kubernetes is a listed resource, a generator input, or named as not a resource."""
    k = kustomization()
    listed = list(k["resources"]) + [f for g in k.get("configMapGenerator", []) for f in g["files"]]
    assert len(listed) == len(set(listed)), "a file is listed twice"
    missing = [name for name in listed if not (KUBE / name).is_file()]
    assert not missing, f"kustomization.yaml lists files that do not exist: {missing}"
    own = [d for d in KUBE.iterdir() if (d / "kustomization.yaml").is_file()]  # e.g. webhook/: applied on its own
    present = {p.relative_to(KUBE).as_posix() for p in KUBE.rglob("*")
               if p.suffix in (".yaml", ".yml") and not any(d in p.parents for d in own)}
    unlisted = sorted(present - set(listed) - NOT_RESOURCES)
    assert not unlisted, f"not in kustomization.yaml (kubectl apply -k would skip them): {unlisted}"
    assert not NOT_RESOURCES & set(k["resources"]), "the audit policy is the API server's file, not a cluster object"


def test_namespaced_objects_use_the_kustomization_namespace() -> None:
    """Every namespaced object names the namespace that kustomization.yaml sets and namespace.yaml creates."""
    k = kustomization()
    objects = resources()
    (ns,) = [o for o in objects if o["kind"] == "Namespace"]
    assert ns["metadata"]["name"] == k["namespace"]
    for obj in objects:
        if obj["kind"] not in CLUSTER_SCOPED:
            assert obj["metadata"].get("namespace") == k["namespace"], obj["metadata"]["name"]


def test_references_between_objects_resolve() -> None:
    """The DaemonSet's service account, ConfigMaps and image name exist in the kustomization."""
    k = kustomization()
    accounts = {o["metadata"]["name"] for o in resources() if o["kind"] == "ServiceAccount"}
    assert pod_spec()["serviceAccountName"] in accounts
    generated = {g["name"] for g in k["configMapGenerator"]}
    used = {v["configMap"]["name"] for v in pod_spec()["volumes"] if "configMap" in v}
    assert used == generated
    image_names = {i["name"] for i in k.get("images", [])}
    assert container()["image"].split(":")[0] in image_names


def test_manifests_validate_against_the_kubernetes_schemas(kubernetes_validate: ModuleType) -> None:
    """Every object, generated ConfigMaps included, passes the strict schema of the oldest and newest Kubernetes."""
    versions = (OLDEST_KUBERNETES, kubernetes_validate.latest_version())
    failures = []
    for obj in resources() + generated_configmaps():
        for version in versions:
            try:
                kubernetes_validate.validate(obj, version, strict=True)
            except kubernetes_validate.ValidationError as exc:
                where = "/".join(str(p) for p in exc.absolute_path)
                failures.append(f"{obj['kind']}/{obj['metadata']['name']} (k8s {version}) at {where}: {exc.message}")
    assert not failures, "\n".join(failures)


def test_schema_check_rejects_a_misspelled_field(kubernetes_validate: ModuleType) -> None:
    """The strict schemas catch a typo that kubectl would only warn about (so the check above has teeth)."""
    broken = daemonset()
    broken["spec"]["template"]["spec"]["containers"][0]["securityContext"]["readOnlyRootFS"] = True
    with pytest.raises(kubernetes_validate.ValidationError, match="readOnlyRootFS"):
        kubernetes_validate.validate(broken, OLDEST_KUBERNETES, strict=True)


@pytest.fixture(scope="module")
def kubernetes_validate() -> ModuleType:
    return pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed: pip install kubernetes-validate (dev dependency)")


# -- placement and hardening -----------------------------------------------------------------
def test_daemonset_runs_on_every_control_plane_node() -> None:
    """Placed by node affinity on either role label (any value), tolerating both role taints with any effect;
    test_daemonset_scheduling.py evaluates it against real node label sets."""
    spec = pod_spec()
    assert "nodeSelector" not in spec
    terms = spec["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]["nodeSelectorTerms"]
    assert terms == [{"matchExpressions": [{"key": f"node-role.kubernetes.io/{role}", "operator": "Exists"}]}
                     for role in ("control-plane", "master")]
    tolerated = {(t["key"], t.get("operator"), t.get("effect")) for t in spec["tolerations"]}
    assert ("node-role.kubernetes.io/control-plane", "Exists", None) in tolerated
    assert ("node-role.kubernetes.io/master", "Exists", None) in tolerated
    assert "priorityClassName" not in spec, "README.md explains why no priority class is set"


def test_pod_and_container_are_hardened() -> None:
    """No token, no host namespaces, RuntimeDefault seccomp, read-only root, no escalation, no capability."""
    spec = pod_spec()
    assert spec["automountServiceAccountToken"] is False
    assert not spec.get("hostNetwork") and not spec.get("hostPID") and not spec.get("hostIPC")
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    sc = container()["securityContext"]
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc.get("privileged", False) is False
    assert sc["seccompProfile"] == {"type": "RuntimeDefault"}
    caps = sc["capabilities"]
    assert caps["drop"] == ["ALL"]
    assert not caps.get("add")
    assert sc.get("runAsNonRoot") is True or caps["drop"] == ["ALL"]


def test_service_account_has_no_token_and_no_rbac() -> None:
    """detector never calls the API: its account mounts no token and nothing binds a role to it."""
    objects = resources()
    (account,) = [o for o in objects if o["kind"] == "ServiceAccount"]
    assert account["automountServiceAccountToken"] is False
    assert not [o for o in objects if o["kind"] in RBAC_KINDS]


def test_audit_log_is_mounted_read_only_and_state_persists_on_the_host() -> None:
    """The audit directory is a read-only hostPath mount; the state directory a writable DirectoryOrCreate hostPath."""
    audit = volume("audit-log")["hostPath"]
    assert audit == {"path": "/var/log/kubernetes/audit", "type": "Directory"}
    assert mount_of("audit-log") == {"name": "audit-log", "mountPath": "/var/log/kubernetes/audit",
                                     "readOnly": True}
    state = volume("state")["hostPath"]
    assert state == {"path": "/var/lib/detector", "type": "DirectoryOrCreate"}
    assert mount_of("state")["mountPath"] == "/var/lib/detector"
    writable = {m["name"] for m in container()["volumeMounts"] if not m.get("readOnly")}
    assert writable == {"state", "tmp"}, "only the state directory and /tmp are writable"
    assert volume("tmp")["emptyDir"]["sizeLimit"]


def test_probes_and_resources() -> None:
    """Liveness on /healthz, readiness on /readyz, both on the metrics port; requests and limits set."""
    c = container()
    (port,) = c["ports"]
    assert (port["name"], port["containerPort"]) == ("metrics", 9477)
    for probe, path in (("startupProbe", "/healthz"), ("livenessProbe", "/healthz"), ("readinessProbe", "/readyz")):
        assert c[probe]["httpGet"] == {"path": path, "port": "metrics"}, probe
    assert c["resources"] == {"requests": {"cpu": "50m", "memory": "128Mi"},
                              "limits": {"cpu": "500m", "memory": "256Mi"}}
    assert pod_spec()["terminationGracePeriodSeconds"] > 5, "detector exits within 5 s of SIGTERM"


def test_secrets_are_optional_references_never_literals() -> None:
    """Output secrets come from optional secretKeyRefs and the HMAC key from an optional Secret volume."""
    env = {e["name"]: e for e in container()["env"]}
    for name in OUTPUT_SECRETS:
        assert "value" not in env[name], name
        assert env[name]["valueFrom"]["secretKeyRef"]["optional"] is True, name
    hmac = volume("hmac")["secret"]
    assert hmac["optional"] is True
    assert hmac["defaultMode"] == 0o400
    assert mount_of("hmac")["readOnly"] is True
    assert not [o for o in resources() if o["kind"] == "Secret"], "secrets are created by the operator, not shipped"


def test_readme_documents_every_secret_the_pod_references() -> None:
    """Each Secret name and key the DaemonSet reads appears in deploy/kubernetes/README.md."""
    readme = (KUBE / "README.md").read_text(encoding="utf-8")
    refs = [e["valueFrom"]["secretKeyRef"] for e in container()["env"] if "secretKeyRef" in e.get("valueFrom", {})]
    names = {r["name"] for r in refs} | {volume("hmac")["secret"]["secretName"]}
    keys = {r["key"] for r in refs}
    missing = sorted(word for word in names | keys if word not in readme)
    assert not missing, f"README.md does not mention: {missing}"


# -- configuration ---------------------------------------------------------------------------
def test_config_uses_only_known_keys_and_loads() -> None:
    """config.yaml is a YAML mapping of known keys that detector's own loaders accept without any secret set."""
    from detector.alert.settings import parse_delivery  # noqa: PLC0415 - the product's validators
    from detector.config import load_config  # noqa: PLC0415

    data = config()
    unknown = sorted(set(data) - CONFIG_KEYS)
    assert not unknown, f"keys outside the run contract: {unknown}"
    load_config(str(KUBE / "config" / "config.yaml"))
    parse_delivery(data, environ={})  # the default install starts before any Secret exists


def test_config_agrees_with_the_daemonset() -> None:
    """The config's log, state, rules and metrics settings match the pod's mounts and ports."""
    data, c = config(), container()
    assert str(PurePosixPath(data["file"]).parent) == mount_of("audit-log")["mountPath"]
    assert data["state_dir"] == mount_of("state")["mountPath"]
    rules_mount = mount_of(configmap_volume("detector-rules"))["mountPath"]
    assert data["rules"] == [IMAGE_SHIPPED_RULES, rules_mount]
    config_mount = mount_of(configmap_volume("detector-config"))
    assert c["args"] == ["--config", config_mount["mountPath"]]
    assert config_mount["subPath"] == "config.yaml"
    assert data["metrics"]["listen"].rsplit(":", 1)[1] == str(c["ports"][0]["containerPort"])


def test_extra_rules_validate_after_the_shipped_rules(tmp_path: Path) -> None:
    """The rules.d ConfigMap files load cleanly after the shipped rules, also through ConfigMap-style symlinks."""
    # A ConfigMap volume holds each key as a symlink into a hidden, timestamped directory.
    data_dir = tmp_path / "..2026_01_01_00_00_00.000000000"
    data_dir.mkdir()
    (tmp_path / "..data").symlink_to(data_dir.name)
    for source in (KUBE / "rules.d").iterdir():
        (data_dir / source.name).write_bytes(source.read_bytes())
        (tmp_path / source.name).symlink_to(f"..data/{source.name}")
    result = subprocess.run([sys.executable, "-m", "detector", "validate", "--strict", str(REPO / "rules"),
                             str(tmp_path)], capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def creation_event(obj: dict[str, Any]) -> dict[str, Any]:
    """The audit event of a person creating `obj` with kubectl, as deploy/kubernetes/audit-policy.yaml logs it."""
    group, _, _ = obj["apiVersion"].rpartition("/")
    return {
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": "0b8c5c8e-install",
        "stage": "ResponseComplete", "verb": "create",
        "requestURI": f"/apis/{obj['apiVersion']}/namespaces/detector/daemonsets",
        "user": {"username": "kubernetes-admin", "groups": ["kubeadm:cluster-admins", "system:authenticated"]},
        "sourceIPs": ["10.0.0.5"], "userAgent": "kubectl/v1.31.0 (linux/amd64) kubernetes/abcdef0",
        "objectRef": {"resource": "daemonsets", "namespace": "detector", "name": obj["metadata"]["name"],
                      "apiGroup": group, "apiVersion": "v1"},
        "responseStatus": {"metadata": {}, "code": 201}, "requestObject": obj,
        "requestReceivedTimestamp": "2026-11-30T10:00:00.000000Z", "stageTimestamp": "2026-11-30T10:00:00.100000Z",
        "annotations": {"authorization.k8s.io/decision": "allow", "authorization.k8s.io/reason": ""},
    }


def test_installing_the_daemonset_fires_no_shipped_rule(tmp_path: Path) -> None:
    """A person applying the default DaemonSet triggers none of the shipped rules (README.md says so)."""
    log = tmp_path / "audit.log"
    log.write_text(json.dumps(creation_event(daemonset())) + "\n", encoding="utf-8")
    result = subprocess.run([sys.executable, "-m", "detector", "scan", "--format", "json", str(log)],
                            capture_output=True, text=True, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    assert "fires none of the shipped rules" in (KUBE / "README.md").read_text(encoding="utf-8")


# -- network ---------------------------------------------------------------------------------
def network_policy() -> dict[str, Any]:
    (found,) = [r for r in resources() if r["kind"] == "NetworkPolicy"]
    return found


def test_network_policy_admits_only_the_monitoring_namespace_to_the_metrics_port() -> None:
    """The pods take connections only from namespace `monitoring`, only on the metrics port; egress stays open."""
    policy = network_policy()["spec"]
    labels = daemonset()["spec"]["template"]["metadata"]["labels"]
    assert policy["podSelector"]["matchLabels"].items() <= labels.items(), "the policy selects detector's pods"
    assert policy["policyTypes"] == ["Ingress"], "no Egress: alerts must still reach their outputs"
    (rule,) = policy["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "monitoring"}}}]
    (port,) = container()["ports"]
    assert rule["ports"] == [{"port": port["name"], "protocol": "TCP"}]
    annotations = daemonset()["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(port["containerPort"]), "Prometheus still scrapes that port"


def readme_network_policy_patch() -> str:
    """The overlay patch of README.md's section "Metrics and the NetworkPolicy"."""
    readme = (KUBE / "README.md").read_text(encoding="utf-8")
    section = readme.split("## 7. Metrics and the NetworkPolicy", 1)[1]
    return section.split("```yaml\n", 1)[1].split("```", 1)[0]


def test_readme_patch_of_the_network_policy_builds(tmp_path: Path) -> None:
    """The README's overlay patch builds with kustomize and replaces who may connect, nothing else."""
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (it carries kustomize)")
    overlay = tmp_path / "overlay"
    overlay.mkdir()
    base = os.path.relpath(KUBE, overlay)  # kustomize refuses an absolute path to a base
    (overlay / "kustomization.yaml").write_text(f"resources:\n  - {base}\n" + readme_network_policy_patch(),
                                                encoding="utf-8")
    result = subprocess.run([kubectl, "kustomize", str(overlay)], capture_output=True, text=True, timeout=60,
                            check=False)
    assert result.returncode == 0, result.stderr
    (built,) = [d for d in yaml.safe_load_all(result.stdout) if d and d["kind"] == "NetworkPolicy"]
    (rule,) = built["spec"]["ingress"]
    assert rule["from"] == [{"namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": "observability"}},
                             "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}}}]
    assert rule["ports"] == network_policy()["spec"]["ingress"][0]["ports"]
