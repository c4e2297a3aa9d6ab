"""Fixtures of the alert-stage unit tests."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.support.threadcheck import no_leaked_threads


@pytest.fixture(autouse=True)
def _no_leaked_threads() -> Iterator[None]:
    """Every test stops the threads it starts."""
    yield from no_leaked_threads()
