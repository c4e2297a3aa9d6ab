"""detector.live's rule reloads run on a thread of their own and never end the run."""

from __future__ import annotations

import threading

from detector.live import _RulesLoad
from detector.rules.ruleset import Ruleset


def test_a_reload_that_raises_anything_is_reported_not_raised() -> None:
    def broken() -> Ruleset:
        raise MemoryError("a loader bug or a limit we did not foresee")

    load = _RulesLoad(broken, "file_changed")
    assert load.done.wait(5)
    assert load.ruleset is None and isinstance(load.error, MemoryError)


def test_the_load_runs_beside_the_caller() -> None:
    """The caller is not blocked while rules load: it can go on evaluating with the old ones."""
    release = threading.Event()
    loaded: list[Ruleset] = []

    def slow() -> Ruleset:
        assert release.wait(5)
        ruleset = Ruleset([])
        loaded.append(ruleset)
        return ruleset

    load = _RulesLoad(slow, "signal")
    assert not load.done.is_set()  # returned at once: the load is still waiting
    release.set()
    assert load.done.wait(5)
    assert load.ruleset is loaded[0] and load.error is None
