"""Each window type against a tiny reference implementation: random streams of events with
random timestamps (out of order) and lateness must give the same alerts.

The references keep every accepted event and judge every window after each event: no
pruning, no bounds, no packed records."""

from __future__ import annotations

import itertools
import math
from collections import defaultdict
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.rules.windows import (
    BUCKETS,
    SAMPLE,
    EventWindows,
    NewTerms,
    Silences,
    bucket_of,
    pack,
    rec_aid,
    rec_mask,
    rec_time,
    rec_value,
)

Event = tuple[str, float, str, int]  # key, time, value, step mask (0: an expiry event)
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])

keys = st.sampled_from(["alice", "bob", "carol"])
times = st.integers(min_value=0, max_value=120).map(float)
values = st.sampled_from(["a", "b", "c", "d", "e"])


def _aid(index: int) -> str:
    return f"{index:08x}-0000-4000-8000-000000000000" if index % 2 else f"id-{index}"


def _summary(key: str, chosen: list[tuple[float, str, str]]) -> tuple[Any, ...]:
    ids = [c[2] for c in chosen]
    if len(ids) > SAMPLE:
        ids = ids[: SAMPLE // 2] + ids[-SAMPLE // 2:]
    return key, len(chosen), chosen[0][0], chosen[-1][0], tuple(ids)


# -- references -------------------------------------------------------------------------------
def reference_events(events: list[Event], kind: str, span: float, threshold: int, lateness: float,  # noqa: PLR0917
                     steps: int = 0) -> list[tuple[int, tuple[Any, ...]]]:
    """count / distinct / ordered / unordered, judged from scratch after every event."""
    max_t = -math.inf
    held: dict[str, list[tuple[float, str, str, int]]] = defaultdict(list)
    rearm: dict[str, float] = {}
    out = []
    full = (1 << steps) - 1
    for index, (key, t, value, mask) in enumerate(events):
        if t < max_t - lateness:
            continue
        max_t = max(max_t, t)
        if kind in ("ordered", "unordered") and mask == 0:  # expiry
            rearm[key] = max(rearm.get(key, -math.inf), t)
            continue
        if t <= rearm.get(key, -math.inf):
            continue
        held[key].append((t, value, _aid(index), mask))
        while True:
            evs = sorted((e for e in held[key] if e[0] > rearm.get(key, -math.inf)), key=lambda e: e[0])
            found = _find(evs, kind, span, threshold, steps, full)
            if found is None:
                break
            chosen, end = found
            out.append((index, _summary(key, [(c[0], c[1], c[2]) for c in chosen])))
            rearm[key] = end
    return out


def _find(evs: list[tuple[float, str, str, int]], kind: str, span: float, threshold: int, steps: int,  # noqa: PLR0917
          full: int) -> tuple[list[Any], float] | None:
    if kind in ("count", "distinct"):
        for u in sorted({e[0] for e in evs}):
            window = [e for e in evs if u - span < e[0] <= u]
            size = len(window) if kind == "count" else len({e[1] for e in window})
            if size >= threshold:
                return window, u
        return None
    if kind == "ordered":
        for combo in itertools.combinations(range(len(evs)), steps):
            chosen = [evs[i] for i in combo]
            if all(c[3] >> n & 1 for n, c in enumerate(chosen)) and chosen[-1][0] - chosen[0][0] <= span:
                return chosen, chosen[-1][0]
        return None
    for i in range(len(evs)):
        union = 0
        for j in range(i, len(evs)):
            if evs[j][0] - evs[i][0] > span:
                break
            union |= evs[j][3]
            if union == full:
                return evs[i:j + 1], evs[j][0]
    return None


def reference_new_terms(events: list[Event], history: float, learning: float,
                        lateness: float) -> list[tuple[int, tuple[Any, ...]]]:
    max_t, start = -math.inf, None
    seen: dict[tuple[str, str], float] = {}
    out = []
    for index, (key, t, value, _mask) in enumerate(events):
        if t < max_t - lateness:
            continue
        max_t = max(max_t, t)
        start = t if start is None else start
        last = seen.get((key, value))
        known = last is not None and last >= t - history
        seen[(key, value)] = t if last is None else max(last, t)
        if not known and t >= start + learning:
            out.append((index, (key, 1, t, t, (_aid(index),))))
    return out


def reference_silences(events: list[Event], window: float, threshold: int,
                       lateness: float) -> list[tuple[int, tuple[Any, ...]]]:
    max_t, closed = -math.inf, None
    times_of: dict[str, list[float]] = defaultdict(list)
    since: dict[str, int] = {}
    silent: dict[str, bool] = defaultdict(bool)
    out = []
    for index, (key, t, _value, _mask) in enumerate(events):
        if t < max_t - lateness:
            continue
        if closed is not None and math.floor(t / window) < closed:
            continue
        max_t = max(max_t, t)
        times_of[key].append(t)
        since[key] = min(since.get(key, math.floor(t / window)), math.floor(t / window))
        closed = since[key] if closed is None else closed
        until = math.floor((max_t - lateness) / window)
        for c in range(closed, until):
            for k, seen in times_of.items():
                if since[k] > c:
                    continue
                n = sum(1 for x in seen if math.floor(x / window) == c)
                if n < threshold:
                    if not silent[k]:
                        out.append((index, (k, n, c * window, (c + 1) * window)))
                        silent[k] = True
                else:
                    silent[k] = False
        closed = max(closed, until)
    return out


# -- the real ones ---------------------------------------------------------------------------
def real_events(events: list[Event], kind: str, span: float, threshold: int, lateness: float,  # noqa: PLR0917
                steps: int = 0) -> list[tuple[int, tuple[Any, ...]]]:
    windows = EventWindows(kind, span, threshold, lateness, max_keys=10_000, max_values=10_000, steps=steps)
    out = []
    for index, (key, t, value, mask) in enumerate(events):
        if kind in ("ordered", "unordered") and mask == 0:
            windows.expire(key, bucket_of(key), t)
            continue
        for fired in windows.feed(key, bucket_of(key), t, pack(t, _aid(index), value, mask)):
            out.append((index, (fired.key, fired.count, fired.first, fired.last, fired.audit_ids)))
    return out


def real_new_terms(events: list[Event], history: float, learning: float,
                   lateness: float) -> list[tuple[int, tuple[Any, ...]]]:
    terms = NewTerms(history, learning, lateness, max_keys=10_000, max_values=10_000)
    out = []
    for index, (key, t, value, _mask) in enumerate(events):
        for fired in terms.feed(key, bucket_of(key), t, value, _aid(index)):
            out.append((index, (fired.key, 1, fired.first, fired.last, fired.audit_ids)))
    return out


def real_silences(events: list[Event], window: float, threshold: int,
                  lateness: float) -> list[tuple[int, tuple[Any, ...]]]:
    silences = Silences(window, threshold, lateness, max_keys=10_000)
    out = []
    for index, (key, t, _value, _mask) in enumerate(events):
        for fired in silences.feed(key, bucket_of(key), t, b"line"):
            out.append((index, (fired.key, fired.count, fired.first, fired.last)))
    return out


# -- the properties ----------------------------------------------------------------------------
event_lists = st.lists(st.tuples(keys, times, values, st.integers(min_value=1, max_value=7)), max_size=40)


@SETTINGS
@given(event_lists, st.sampled_from(["count", "distinct"]), st.integers(5, 60).map(float), st.integers(1, 5),
       st.integers(0, 40).map(float))
def test_count_and_distinct_agree_with_the_reference(events: list[Event], kind: str, span: float, threshold: int,
                                                     lateness: float) -> None:
    """count and distinct windows fire exactly where the reference does, with the same aggregate."""
    assert real_events(events, kind, span, threshold, lateness) == reference_events(
        events, kind, span, threshold, lateness)


sequence_events = st.lists(st.tuples(keys, times, values, st.integers(min_value=0, max_value=7)), max_size=25)


@SETTINGS
@given(sequence_events, st.booleans(), st.integers(0, 60).map(float), st.integers(2, 3),
       st.integers(0, 40).map(float))
def test_sequences_agree_with_the_reference(events: list[Event], ordered: bool, span: float, steps: int,
                                            lateness: float) -> None:
    """Ordered and unordered sequences (with expiry events) fire where the reference does."""
    full = (1 << steps) - 1
    trimmed = [(k, t, v, m & full) for k, t, v, m in events]
    kind = "ordered" if ordered else "unordered"
    assert real_events(trimmed, kind, span, 1, lateness, steps) == reference_events(
        trimmed, kind, span, 1, lateness, steps)


@SETTINGS
@given(event_lists, st.integers(1, 80).map(float), st.integers(0, 60).map(float), st.integers(0, 40).map(float))
def test_new_terms_agree_with_the_reference(events: list[Event], history: float, learning: float,
                                            lateness: float) -> None:
    """New terms fire where the reference does, after the learning period only."""
    assert real_new_terms(events, history, learning, lateness) == reference_new_terms(
        events, history, learning, lateness)


@SETTINGS
@given(event_lists, st.integers(5, 40).map(float), st.integers(1, 3), st.integers(0, 40).map(float))
def test_silences_agree_with_the_reference(events: list[Event], window: float, threshold: int,
                                           lateness: float) -> None:
    """Absence fires for the same keys and windows as the reference."""
    assert sorted(real_silences(events, window, threshold, lateness)) == sorted(
        reference_silences(events, window, threshold, lateness))


def test_records_round_trip() -> None:
    """A packed record gives back its time, auditID (UUID or not), value and step mask."""
    for aid in ("0a1b2c3d-0000-4000-8000-00000000abcd", "not-a-uuid", "0A1B2C3D-0000-4000-8000-00000000ABCD", ""):
        rec = pack(1234.5, aid, "välue", 5)
        assert (rec_time(rec), rec_aid(rec), rec_value(rec), rec_mask(rec)) == (1234.5, aid, "välue", 5)
    assert len(pack(1.0, "0a1b2c3d-0000-4000-8000-00000000abcd")) == 26


def test_a_key_flood_evicts_the_least_recent_keys_and_counts_them() -> None:
    """Past max_keys, the least recently fed keys go, each eviction counted; state stays bounded."""
    windows = EventWindows("count", 60.0, 3, 0.0, max_keys=160, max_values=10)
    for n in range(10_000):
        key = f"user{n}"
        windows.feed(key, bucket_of(key), 1000.0, pack(1000.0, f"id{n}"))
    assert windows.keys() <= 160
    assert windows.counters.evicted_keys >= 10_000 - 160
    assert all(len(s) <= 160 // BUCKETS for s in windows.state)


def test_values_past_max_values_are_evicted_and_counted() -> None:
    """A key holds at most max_values events; older ones go and are counted."""
    windows = EventWindows("count", 1000.0, 50, 0.0, max_keys=10, max_values=5)
    for n in range(20):
        windows.feed("k", bucket_of("k"), float(n), pack(float(n), f"id{n}"))
    assert len(windows.held("k")) == 5
    assert windows.counters.evicted_values == 15


def test_late_events_are_dropped_and_counted() -> None:
    """An event older than the newest minus the lateness does not count."""
    windows = EventWindows("count", 100.0, 2, 10.0, max_keys=10, max_values=10)
    windows.feed("k", bucket_of("k"), 100.0, pack(100.0, "a"))
    assert windows.feed("k", bucket_of("k"), 80.0, pack(80.0, "b")) == []
    assert windows.counters.late == 1
    assert len(windows.feed("k", bucket_of("k"), 95.0, pack(95.0, "c"))) == 1


def test_state_survives_export_and_load() -> None:
    """Exported buckets and meta load into a fresh window that then fires as the original would."""
    first = EventWindows("count", 100.0, 3, 10.0, max_keys=100, max_values=100)
    for n, key in enumerate(["a", "b", "a"]):
        first.feed(key, bucket_of(key), float(n), pack(float(n), f"id{n}"))
    second = EventWindows("count", 100.0, 3, 10.0, max_keys=100, max_values=100)
    for bucket in range(BUCKETS):
        data = first.export(bucket)
        if data is not None:
            second.load(bucket, data)
    second.load_meta(first.export_meta())
    fired = second.feed("a", bucket_of("a"), 5.0, pack(5.0, "id5"))
    assert [(f.key, f.count, f.audit_ids) for f in fired] == [("a", 3, ("id0", "id2", "id5"))]
