"""No `detector run` child outlives its test, whatever the outcome."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.integration.live.harness import STARTED


@pytest.fixture(autouse=True)
def _reap_detectors() -> Iterator[None]:
    yield
    while STARTED:
        proc = STARTED.pop()
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
