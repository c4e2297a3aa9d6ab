"""Fixtures shared by the integration tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.support.gobuild import build_golumberjack, missing_prerequisite


@pytest.fixture(scope="session")
def golumberjack(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """tests/support/golumberjack built once per run (the real lumberjack.v2 behind a pipe), or a
    skip saying what to install."""
    reason = missing_prerequisite()
    if reason is not None:
        pytest.skip(reason)
    return build_golumberjack(tmp_path_factory.mktemp("golumberjack"))
