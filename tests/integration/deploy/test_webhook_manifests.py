"""deploy/kubernetes/webhook: the webhook receiver's Deployment and Service are valid, hardened,
and agree with their configuration, which `detector run`'s own loader accepts."""

from __future__ import annotations

from typing import Any

from tests.integration.deploy.support import (
    CONFIG_KEYS,
    KUBE,
    assert_hardened_pod,
    kustomize,
    load_documents,
    load_yaml,
)

WEBHOOK = KUBE / "webhook"


def objects() -> dict[str, dict[str, Any]]:
    kustomization = load_yaml(WEBHOOK / "kustomization.yaml")
    return {doc["kind"]: doc for name in kustomization["resources"] for doc in load_documents(WEBHOOK / name)}


def test_config_loads_and_uses_known_keys() -> None:
    """config.yaml holds only run keys (plus input) and loads with a TLS, mTLS and token webhook input."""
    from detector.config import load_config  # noqa: PLC0415

    data = load_yaml(WEBHOOK / "config" / "config.yaml")
    assert set(data) - CONFIG_KEYS <= {"input"}
    config = load_config(str(WEBHOOK / "config" / "config.yaml"))
    assert config.input.type == "webhook" and config.input.client_ca_file and config.input.token_file


def test_deployment_and_service_agree_with_the_config() -> None:
    """Two replicas; the Service targets the webhook port the config listens on; TLS and token files are
    mounted from Secrets where the config reads them; state_dir is a volume; probes on the metrics port."""
    found = objects()
    deployment, service = found["Deployment"], found["Service"]
    config = load_yaml(WEBHOOK / "config" / "config.yaml")
    assert deployment["spec"]["replicas"] == 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["webhook"]) == config["input"]["listen"].rsplit(":", 1)[1]
    assert str(ports["metrics"]) == config["metrics"]["listen"].rsplit(":", 1)[1]
    assert service["spec"]["ports"][0]["targetPort"] == "webhook"
    assert service["spec"]["selector"] == deployment["spec"]["selector"]["matchLabels"]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    for key in ("tls_cert_file", "tls_key_file", "client_ca_file", "token_file"):
        directory = config["input"][key].rsplit("/", 1)[0]
        volume = next(v for v in pod["volumes"] if v["name"] == mounts[directory])
        assert "secret" in volume, key
    assert mounts[config["state_dir"]] == "state"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"


def test_the_pod_is_hardened() -> None:
    """Non-root, no privilege escalation, read-only root, every capability dropped, no service account token."""
    pod = objects()["Deployment"]["spec"]["template"]["spec"]
    container = assert_hardened_pod(pod)
    assert "limits" in container["resources"]


def test_kustomize_builds() -> None:
    """`kubectl kustomize` renders the directory offline (when kubectl is installed)."""
    rendered = kustomize(WEBHOOK)
    assert "kind: Deployment" in rendered and "detector-webhook-config-" in rendered
