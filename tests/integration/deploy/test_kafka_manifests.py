"""deploy/kubernetes/kafka: the consumer-group Deployment is valid, hardened, and agrees with its
configurations (SCRAM over TLS, and Event Hubs), which `detector run`'s own loader accepts."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from tests.integration.deploy.support import (
    CONFIG_KEYS,
    KUBE,
    assert_hardened_pod,
    kustomize,
    load_documents,
    load_yaml,
)

KAFKA = KUBE / "kafka"


def objects() -> dict[str, dict[str, Any]]:
    kustomization = load_yaml(KAFKA / "kustomization.yaml")
    return {doc["kind"]: doc for name in kustomization["resources"] for doc in load_documents(KAFKA / name)}


def secrets_at(tmp_path: Path, config: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The config with its /run/secrets/detector files present under tmp_path (the loader checks them)."""
    text = config.read_text()
    (tmp_path / "secrets").mkdir()
    for name in ("password", "ca.crt", "connection-string"):
        (tmp_path / "secrets" / name).write_text("x")
    copy = tmp_path / "config.yaml"
    copy.write_text(text.replace("/run/secrets/detector", str(tmp_path / "secrets")))
    return copy


@pytest.mark.parametrize("name", ["config.yaml", "config-eventhubs.yaml"])
def test_configs_load(tmp_path: Path, name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Both configs hold only run keys and load as a kafka input with their security settings."""
    from detector.config import load_config  # noqa: PLC0415

    path = KAFKA / "config" / name
    assert set(load_yaml(path)) - CONFIG_KEYS <= {"input"}
    config = load_config(str(secrets_at(tmp_path, path, monkeypatch)))
    assert config.input.type == "kafka" and config.input.kafka is not None
    assert config.input.kafka.security.protocol == "sasl_ssl"


def test_deployment_agrees_with_the_config() -> None:
    """Replicas >= 2 in one group; the secrets directory is a Secret; state_dir a volume; probes on metrics."""
    deployment = objects()["Deployment"]
    config = load_yaml(KAFKA / "config" / "config.yaml")
    assert deployment["spec"]["replicas"] >= 2
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert str(ports["metrics"]) == config["metrics"]["listen"].rsplit(":", 1)[1]
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    directory = config["input"]["security"]["password_file"].rsplit("/", 1)[0]
    assert "secret" in next(v for v in pod["volumes"] if v["name"] == mounts[directory])
    assert mounts[config["state_dir"]] == "state"
    assert container["readinessProbe"]["httpGet"]["path"] == "/readyz"
    assert pod["terminationGracePeriodSeconds"] >= 25  # drain, commit, 10 s of delivery, leave the group


def test_the_pod_is_hardened() -> None:
    """Non-root, no privilege escalation, read-only root, every capability dropped, no service account token."""
    pod = objects()["Deployment"]["spec"]["template"]["spec"]
    assert_hardened_pod(pod)


def test_kustomize_builds() -> None:
    """`kubectl kustomize` renders the directory offline (when kubectl is installed)."""
    rendered = kustomize(KAFKA)
    assert "kind: Deployment" in rendered and "detector-kafka-config-" in rendered
