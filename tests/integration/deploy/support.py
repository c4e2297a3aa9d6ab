"""Shared helpers of the deployment tests: paths, YAML loading, finding external tools."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

REPO = Path(__file__).resolve().parents[3]
DEPLOY = REPO / "deploy"
KUBE = DEPLOY / "kubernetes"
SYSTEMD = DEPLOY / "systemd"

# The keys of `detector run`'s configuration file (config.yaml), as the run contract lists them.
CONFIG_KEYS = frozenset({
    "file", "state_dir", "start_at", "rules", "rule_matching", "min_priority", "trusted_proxies",
    "internal_networks", "max_line_bytes", "watch", "poll_interval", "log_format", "log_level",
    "cluster_name", "outputs", "throttle", "outbox", "metrics", "input",
})

# Where the image puts the shipped rules (a link into the installed package; see Dockerfile).
IMAGE_SHIPPED_RULES = "/opt/detector/rules"


def load_yaml(path: Path) -> Any:
    """One YAML document."""
    return yaml.safe_load(path.read_text(encoding="utf-8"))


def load_documents(path: Path) -> list[Any]:
    """Every non-empty document of a YAML file."""
    return [doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc is not None]


def find_tool(name: str) -> str | None:
    """An executable installed beside the running interpreter (the venv) or on PATH."""
    beside = Path(sys.executable).parent / name
    if beside.is_file():
        return str(beside)
    return shutil.which(name)


def assert_hardened_pod(pod: dict[str, Any]) -> dict[str, Any]:
    """Non-root, no privilege escalation, read-only root, every capability dropped, no service
    account token; returns the pod's one container."""
    (container,) = pod["containers"]
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True and pod["automountServiceAccountToken"] is False
    assert security["allowPrivilegeEscalation"] is False and security["readOnlyRootFilesystem"] is True
    assert security["capabilities"]["drop"] == ["ALL"]
    return dict(container)


def kustomize(directory: Path) -> str:
    """`kubectl kustomize DIRECTORY` rendered offline (the test skips without kubectl)."""
    kubectl = find_tool("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed")
    done = subprocess.run([kubectl, "kustomize", str(directory)], capture_output=True, text=True, check=False,
                          timeout=60)
    assert done.returncode == 0, done.stderr
    return done.stdout
