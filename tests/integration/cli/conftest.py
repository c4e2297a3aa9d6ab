"""Helpers to run the real `detector` CLI as a subprocess."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]


def run_detector(*args: str, stdin: bytes | None = None, cwd: Path | None = None,
                 timeout: float = 60, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    """Run `python -m detector ARGS` and capture text output."""
    return subprocess.run(
        [sys.executable, "-m", "detector", *args], input=stdin.decode() if stdin is not None else None,
        capture_output=True, text=True, timeout=timeout, cwd=cwd or REPO, check=False, env=env,
    )


@pytest.fixture
def detector() -> Callable[..., subprocess.CompletedProcess[str]]:
    return run_detector
