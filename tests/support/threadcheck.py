"""An autouse fixture body that fails a test which leaves threads running (watchdog's idea)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator


def no_leaked_threads(grace: float = 5.0) -> Iterator[None]:
    """Yield; then wait up to `grace` seconds for threads started during the test to end."""
    before = set(threading.enumerate())
    yield
    deadline = time.monotonic() + grace
    while True:
        leaked = [t for t in threading.enumerate() if t not in before and t.is_alive()]
        if not leaked:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"threads left running: {sorted(t.name for t in leaked)}")
        time.sleep(0.01)
