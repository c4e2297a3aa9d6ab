"""Markers of the deployment tests (registered here so that --strict-markers accepts them)."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "slow: builds and installs the package into a fresh virtualenv (~10-60 s)")
