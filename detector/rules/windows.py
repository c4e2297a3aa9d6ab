"""Per-key window state on event time: the state machines of stateful rules.

Nothing here knows events or rules: a window is fed (key, time, record) and answers with
`Fired` aggregates. Time is seconds (the event's stageTimestamp). Common semantics:

- the *watermark* of a rule is the newest time it accepted minus its lateness; an event
  older than the watermark is dropped (`late`), so state below it can be forgotten;
- after an alert, the key's events up to the end of the alerted window (or sequence) are
  consumed: they never count again (alert once per window and key, then re-arm);
- after each accepted event, every window that now qualifies fires, earliest end first.

State is bounded: at most `max_keys` keys (the least recently fed is evicted) and
`max_values` events (or values) per key (the oldest go), each eviction counted. Records of
events are packed `bytes` (time, step mask, auditID, value), and a key with one event holds
that record alone, not a list; an absence key is one msgpack record with its last event in it
(Samples). 100,000 keys of one event each take 16-19 MB (bench/stateful.py --only memory).

tests/unit/rules/test_windows_reference.py holds a tiny reference implementation of each
window type (no pruning, no bounds, no packing) that these must agree with.
"""

from __future__ import annotations

import math
import struct
import zlib
from bisect import bisect_left, bisect_right
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, Protocol

import msgspec

NEVER = -math.inf
BUCKETS = 16  # state is stored per bucket of keys, so a commit writes only the buckets that changed
SAMPLE = 10  # auditIDs and distinct values an alert shows at most
_HEAD = struct.Struct("<dBB")  # time, step mask, auditID length (255: a UUID packed in 16 bytes)
_HEAD_UUID = struct.Struct("<dBB16s")  # _HEAD and a UUID's 16 bytes: a record in one call
_time_of = struct.Struct("<d").unpack_from  # a record's (time,): rec_time without a Python call
_UUID_MARK = 255


def bucket_of(key: str) -> int:
    return zlib.crc32(key.encode("utf-8", "surrogatepass")) % BUCKETS


def pack(t: float, audit_id: str, value: str = "", mask: int = 0) -> bytes:
    """One event as a record: compact, so that many keys stay small."""
    raw = uuid_bytes(audit_id)
    if raw is not None:
        rec = _HEAD_UUID.pack(t, mask, _UUID_MARK, raw)
        return rec + value.encode("utf-8", "surrogatepass") if value else rec
    aid = audit_id.encode("utf-8", "surrogatepass")[:254]
    return _HEAD.pack(t, mask, len(aid)) + aid + value.encode("utf-8", "surrogatepass")


def uuid_bytes(audit_id: str) -> bytes | None:
    """A canonical UUID's 16 bytes (uuid_text gives the text back exactly), else None."""
    if (len(audit_id) == 36 and audit_id[8] == audit_id[13] == audit_id[18] == audit_id[23] == "-"
            and audit_id.islower()):
        # Dashes in place, lowercase, 32 hex digits.
        try:
            raw = bytes.fromhex(audit_id.replace("-", ""))
        except ValueError:
            return None
        if len(raw) == 16 and " " not in audit_id:
            return raw
    return None


def uuid_text(raw: bytes) -> str:
    h = raw.hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


def rec_time(rec: bytes) -> float:
    return _HEAD.unpack_from(rec)[0]  # type: ignore[no-any-return]


def rec_mask(rec: bytes) -> int:
    return rec[8]


def _aid_end(rec: bytes) -> int:
    size = rec[9]
    return 10 + (16 if size == _UUID_MARK else size)


def rec_aid(rec: bytes) -> str:
    size = rec[9]
    if size == _UUID_MARK:
        return uuid_text(rec[10:26])
    return rec[10:10 + size].decode("utf-8", "surrogatepass")


def rec_value(rec: bytes) -> str:
    return rec[_aid_end(rec):].decode("utf-8", "surrogatepass")


@dataclass(frozen=True, slots=True)
class Fired:
    """What an alert of a stateful rule carries about its window."""

    key: str
    count: int
    first: float
    last: float
    distinct: int = 0
    values: tuple[str, ...] = ()  # a sample of the distinct values (SAMPLE at most)
    audit_ids: tuple[str, ...] = ()  # a sample of contributing auditIDs (SAMPLE at most)
    window: float = 0.0  # seconds the window spans
    start: float = 0.0  # absence: the silent window's start


def aggregate(key: str, recs: list[bytes], window: float) -> Fired:
    """The aggregate of the events of a fired window (recs sorted by time)."""
    values: dict[str, None] = {}
    for rec in recs:
        values[rec_value(rec)] = None
    ids = [rec_aid(r) for r in (recs if len(recs) <= SAMPLE else recs[: SAMPLE // 2] + recs[-SAMPLE // 2:])]
    shown = tuple(v for v in values if v)[:SAMPLE]
    return Fired(key, len(recs), rec_time(recs[0]), rec_time(recs[-1]), len([v for v in values if v]), shown,
                 tuple(ids), window)


@dataclass
class Counters:
    """What bounded state cost: events dropped late, keys and values evicted."""

    late: int = 0
    evicted_keys: int = 0
    evicted_values: int = 0


class Window:
    """Interface shared by the window types."""

    counters: Counters
    max_t: float
    dirty: set[int]

    def export(self, bucket: int) -> bytes | None:
        raise NotImplementedError

    def export_meta(self) -> bytes:
        raise NotImplementedError

    def load(self, bucket: int, data: bytes) -> None:
        raise NotImplementedError

    def load_meta(self, data: bytes) -> None:
        raise NotImplementedError

    def keys(self) -> int:
        raise NotImplementedError

    def describe(self, key: str) -> list[str]:
        raise NotImplementedError


class _Keyed(Window):
    """Keys in buckets of dicts, kept in feed order (the first is the least recently fed)."""

    def __init__(self, lateness: float, max_keys: int) -> None:
        self.lateness = lateness
        self.max_keys = max_keys
        self.per_bucket = max(1, -(-max_keys // BUCKETS))
        self.state: list[dict[str, Any]] = [{} for _ in range(BUCKETS)]
        self.rearm: list[dict[str, float]] = [{} for _ in range(BUCKETS)]
        self.max_t = NEVER
        self.counters = Counters()
        self.dirty: set[int] = set()
        self._sweep_at = NEVER
        self._next_sweep = 0

    def keys(self) -> int:
        return sum(map(len, self.state))

    def accept(self, t: float) -> bool:
        """False for an event older than the watermark; else the newest time moves on."""
        if t < self.max_t - self.lateness:
            self.counters.late += 1
            return False
        self.max_t = max(self.max_t, t)
        return True

    def room(self, bucket: int) -> None:
        """Evict the least recently fed keys of a full bucket."""
        state = self.state[bucket]
        while len(state) >= self.per_bucket:
            key = next(iter(state))
            del state[key]
            self.rearm[bucket].pop(key, None)
            self.counters.evicted_keys += 1

    def sweep(self, horizon: float) -> None:
        """Forget keys whose newest data is older than `horizon` (at most once per 1/16 horizon)."""
        raise NotImplementedError

    def export(self, bucket: int) -> bytes | None:
        state, rearm = self.state[bucket], self.rearm[bucket]
        if not state and not rearm:
            return None
        return msgspec.msgpack.encode({"s": state, "r": rearm})

    def export_meta(self) -> bytes:
        return msgspec.msgpack.encode({"m": self.max_t})

    def load(self, bucket: int, data: bytes) -> None:
        loaded = msgspec.msgpack.decode(data)
        self.state[bucket] = dict(loaded["s"])
        self.rearm[bucket] = {k: float(v) for k, v in loaded["r"].items()}

    def load_meta(self, data: bytes) -> None:
        self.max_t = float(msgspec.msgpack.decode(data)["m"])


class EventWindows(_Keyed):
    """count, distinct and sequence: the key's recent events (records sorted by time)."""

    def __init__(self, kind: str, span: float, threshold: int, lateness: float, max_keys: int,  # noqa: PLR0917
                 max_values: int, steps: int = 0) -> None:
        super().__init__(lateness, max_keys)
        self.kind = kind  # "count" | "distinct" | "ordered" | "unordered"
        self.counting = kind in ("count", "distinct")  # a window (u - span, u]; a sequence's includes u - span
        self.span = span
        self.threshold = threshold
        self.max_values = max_values
        self.full = (1 << steps) - 1
        # The fewest events a qualifying window holds (an ordered sequence: one per step).
        self.fewest = steps if kind == "ordered" else threshold

    def feed(self, key: str, bucket: int, t: float, rec: bytes) -> list[Fired]:
        """Add one event of `key`; the windows it makes fire."""
        max_t = self.max_t  # accept(), inline
        if t < max_t - self.lateness:
            self.counters.late += 1
            return []
        if t > max_t:
            self.max_t = t
        rearm = self.rearm[bucket].get(key)
        if rearm is not None and t <= rearm:
            return []
        state = self.state[bucket]
        self.dirty.add(bucket)
        held = state.pop(key, None)
        if held is None:
            self.room(bucket)
            if self.threshold > 1 and self.counting:
                state[key] = rec  # one event: no window of two or more can fire yet
                if self.max_t - self.lateness - self.span >= self._sweep_at:
                    self._maybe_sweep()
                return []
            recs = [rec]
        else:
            recs = [held] if type(held) is bytes else held
            if t >= _time_of(recs[-1])[0]:
                recs.append(rec)
            else:
                recs.insert(bisect_right(recs, (t,), key=_time_of), rec)
            if len(recs) > self.max_values or _time_of(recs[0])[0] <= self.max_t - self.lateness - self.span:
                self._prune(recs)  # the oldest may be gone
        fired = self._fire(key, bucket, recs, t) if len(recs) >= self.fewest else []
        if recs:
            state[key] = recs[0] if len(recs) == 1 else recs
        if self.max_t - self.lateness - self.span >= self._sweep_at:
            self._maybe_sweep()
        return fired

    def expire(self, key: str, bucket: int, t: float) -> None:
        """An expiry event: the key's events up to `t` no longer count."""
        if not self.accept(t):
            return
        self.dirty.add(bucket)
        rearm = self.rearm[bucket]
        rearm[key] = max(rearm.get(key, NEVER), t)
        held = self.state[bucket].pop(key, None)
        if held is not None:
            recs = [r for r in ([held] if type(held) is bytes else held) if rec_time(r) > t]
            if recs:
                self.state[bucket][key] = recs[0] if len(recs) == 1 else recs

    def _prune(self, recs: list[bytes]) -> None:
        """Drop what can no longer be in a window with a future event, and past max_values."""
        horizon = self.max_t - self.lateness - self.span
        cut = 0
        if self.counting:
            while cut < len(recs) and _time_of(recs[cut])[0] <= horizon:
                cut += 1
        else:
            while cut < len(recs) and _time_of(recs[cut])[0] < horizon:
                cut += 1
        over = len(recs) - cut - self.max_values
        if over > 0:
            self.counters.evicted_values += over
            cut += over
        if cut:
            del recs[:cut]

    def _fire(self, key: str, bucket: int, recs: list[bytes], since: float) -> list[Fired]:
        """Fire every qualifying window; windows ending before `since` (the new event's time)
        were judged before and are only looked at again after an alert consumed events."""
        fired: list[Fired] = []
        while recs:
            found = self._qualifying(recs, since)
            since = NEVER
            if found is None:
                return fired
            chosen, end = found
            fired.append(aggregate(key, chosen, self.span))
            self.rearm[bucket][key] = end
            cut = bisect_right(recs, (end,), key=_time_of)
            del recs[:cut]
        return fired

    def _qualifying(self, recs: list[bytes], since: float) -> tuple[list[bytes], float] | None:
        """The events of the earliest qualifying window and where it ends, or None."""
        if self.kind == "ordered":
            return self._ordered(recs)
        if self.kind == "unordered":
            return self._unordered(recs)
        if self.kind == "count":
            if len(recs) < self.threshold:
                return None
            last = _time_of(recs[-1])[0]
            if since >= last:  # in order: only the window ending at the newest event is new
                lo = bisect_right(recs, (last - self.span,), key=_time_of)
                return (recs[lo:], last) if len(recs) - lo >= self.threshold else None
        # The windows (u - span, u] ending at each event from `since` on (those before were
        # judged before), at the last event of each time u (the window ending at u holds them all).
        end, lo = len(recs), -1
        j = bisect_left(recs, (since,), key=_time_of)
        while j < end:
            u = _time_of(recs[j])[0]
            if j + 1 < end and _time_of(recs[j + 1])[0] == u:
                j += 1
                continue
            if lo < 0:
                lo = bisect_right(recs, (u - self.span,), key=_time_of)
            while _time_of(recs[lo])[0] <= u - self.span:
                lo += 1
            if j + 1 - lo >= self.threshold:  # events enough (for distinct, then distinct values enough)
                window = recs[lo:j + 1]
                if self.kind == "count" or len(
                        {r[10 + (16 if r[9] == _UUID_MARK else r[9]):] for r in window}) >= self.threshold:
                    return window, u  # (rec_value's bytes, inline)
            j += 1
        return None

    def _ordered(self, recs: list[bytes]) -> tuple[list[bytes], float] | None:
        steps = self.full.bit_length()
        if len(recs) < steps:
            return None  # each event of an ordered sequence is one of its steps
        for i, first in enumerate(recs):
            if not first[8] & 1:
                continue
            start, chosen, step, j = _time_of(first)[0], [first], 1, i + 1
            while step < steps and j < len(recs):
                rec = recs[j]
                if _time_of(rec)[0] - start > self.span:
                    break
                if rec[8] >> step & 1:
                    chosen.append(rec)
                    step += 1
                j += 1
            if step == steps:
                return chosen, _time_of(chosen[-1])[0]
        return None

    def _unordered(self, recs: list[bytes]) -> tuple[list[bytes], float] | None:
        for i, first in enumerate(recs):
            start, union = _time_of(first)[0], 0
            for j in range(i, len(recs)):
                rec = recs[j]
                if _time_of(rec)[0] - start > self.span:
                    break
                union |= rec[8]
                if union == self.full:
                    return recs[i:j + 1], _time_of(rec)[0]
        return None

    def _maybe_sweep(self) -> None:
        """One bucket swept each time the horizon moves on by 1/16 of the span: every key is
        looked at once per span, a little at a time."""
        horizon = self.max_t - self.lateness - self.span
        if horizon < self._sweep_at:
            return
        self._sweep_at = horizon + max(self.span / BUCKETS, 1.0)
        self._next_sweep = (self._next_sweep + 1) % BUCKETS
        self.sweep(horizon, (self._next_sweep,))

    def sweep(self, horizon: float, buckets: Iterable[int] = range(BUCKETS)) -> None:
        """Forget keys whose newest event is past the horizon, and re-arm marks below it."""
        for bucket in buckets:
            state, rearm = self.state[bucket], self.rearm[bucket]
            if self.counting:  # _gone(), inline
                stale = [k for k, held in state.items()
                         if _time_of(held if type(held) is bytes else held[-1])[0] <= horizon]
            else:
                stale = [k for k, held in state.items()
                         if _time_of(held if type(held) is bytes else held[-1])[0] < horizon]
            old = [k for k, end in rearm.items() if end < horizon]
            for key in stale:
                del state[key]
            for key in old:
                del rearm[key]
            if stale or old:
                self.dirty.add(bucket)

    def held(self, key: str) -> list[bytes]:
        held = self.state[bucket_of(key)].get(key)
        return [] if held is None else [held] if type(held) is bytes else list(held)

    def describe(self, key: str) -> list[str]:
        recs = self.held(key)
        rearm = self.rearm[bucket_of(key)].get(key)
        lines = [f"key {key!r}: {len(recs)} event(s) held, watermark {_stamp(self.max_t - self.lateness)}"
                 + (f", consumed up to {_stamp(rearm)}" if rearm is not None else "")]
        for rec in recs:
            value, mask = rec_value(rec), rec_mask(rec)
            lines.append(f"  {_stamp(rec_time(rec))} auditID={rec_aid(rec)}" + (f" value={value!r}" if value else "")
                         + (f" steps={mask:b}" if mask else ""))
        return lines


class NewTerms(_Keyed):
    """new_term: per key, each value with the newest time it was seen."""

    def __init__(self, history: float, learning: float, lateness: float, max_keys: int, max_values: int) -> None:
        super().__init__(lateness, max_keys)
        self.history = history
        self.learning = learning
        self.max_values = max_values
        self.start: float | None = None  # the time of the first event: learning ends `learning` after it

    def feed(self, key: str, bucket: int, t: float, value: str, audit_id: str) -> list[Fired]:
        max_t = self.max_t  # accept(), inline
        if t < max_t - self.lateness:
            self.counters.late += 1
            return []
        if t > max_t:
            self.max_t = max_t = t
        start = self.start
        if start is None:
            start = self.start = t
        state = self.state[bucket]
        self.dirty.add(bucket)
        held = state.pop(key, None)
        seen: dict[str, float]
        if type(held) is dict:  # several values (a key seen again, most often)
            seen = held
        elif held is None:
            self.room(bucket)
            seen = {}
        else:
            seen = _seen(held)
        last = seen.pop(value, None)
        seen[value] = t if last is None or t > last else last
        if len(seen) > self.max_values:
            del seen[next(iter(seen))]
            self.counters.evicted_values += 1
        # A key with one value (most, in a flood of new keys) holds it packed: 8 bytes of time
        # and the value in one bytes object, not a dict.
        state[key] = seen if len(seen) > 1 else _TIME.pack(seen[value]) + value.encode("utf-8", "surrogatepass")
        if max_t - self.lateness - self.history >= self._sweep_at:
            horizon = max_t - self.lateness - self.history
            self._sweep_at = horizon + max(self.history / 16, 1.0)
            self.sweep(horizon)
        if (last is not None and last >= t - self.history) or t < start + self.learning:
            return []  # known, or still learning
        return [Fired(key, 1, t, t, 1, (value,), (audit_id,), self.history)]

    def sweep(self, horizon: float) -> None:
        for bucket in range(BUCKETS):
            state, changed = self.state[bucket], False
            for key in list(state):
                seen = state[key] = _seen(state[key])
                for value in [v for v, last in seen.items() if last < horizon]:
                    del seen[value]
                    changed = True
                if not seen:
                    del state[key]
            if changed:
                self.dirty.add(bucket)

    def export_meta(self) -> bytes:
        return msgspec.msgpack.encode({"m": self.max_t, "start": self.start})

    def load_meta(self, data: bytes) -> None:
        meta = msgspec.msgpack.decode(data)
        self.max_t, self.start = float(meta["m"]), meta.get("start")

    def load(self, bucket: int, data: bytes) -> None:
        loaded = msgspec.msgpack.decode(data)
        self.state[bucket] = {k: v if type(v) is bytes else dict(v) for k, v in loaded["s"].items()}

    def describe(self, key: str) -> list[str]:
        held = self.state[bucket_of(key)].get(key)
        seen = _seen(held) if held is not None else {}
        learning = "" if self.start is None else f", learning until {_stamp(self.start + self.learning)}"
        lines = [f"key {key!r}: {len(seen)} known value(s){learning}"]
        lines += [f"  {value!r} last seen {_stamp(last)}" for value, last in seen.items()]
        return lines


_TIME = struct.Struct("<d")


def _seen(held: bytes | dict[str, float]) -> dict[str, float]:
    """A new_term key's values with their newest time (one value is held packed)."""
    if type(held) is bytes:
        return {held[8:].decode("utf-8", "surrogatepass"): _TIME.unpack_from(held)[0]}
    return held  # type: ignore[return-value]


class Samples(Protocol):
    """How an absence window keeps a key's last event (what the key's alert shows): as a
    msgpack value made from what the window was fed, and back as that event's line."""

    def encode(self, last: Any, key: str, t: float) -> bytes:
        """The sample of `last`, the event of `key` at `t` (one msgpack value)."""

    def line(self, sample: bytes, key: str, t: float) -> bytes:
        """The line a sample stands for (what is stored with the checkpoint)."""

    def from_line(self, line: bytes, key: str, t: float) -> bytes:
        """The sample of a stored line."""


class RawSamples:
    """A last event kept as the bytes it was fed (a window used alone, as in tests)."""

    def encode(self, last: Any, key: str, t: float) -> bytes:
        return msgspec.msgpack.encode(bytes(last))

    def line(self, sample: bytes, key: str, t: float) -> bytes:
        return msgspec.msgpack.decode(sample, type=bytes)

    def from_line(self, line: bytes, key: str, t: float) -> bytes:
        return msgspec.msgpack.encode(line)


# An absence key's state, one msgpack record of ~50 bytes (100,000 keys fit in 20 MB): the
# time of its last event, its first window (as windows before that time's), whether it is
# silent (alerted), its counts per open window (flat: window after the first, count, ...) and
# its last event (a Samples value, embedded as is).
_SILENCE = msgspec.msgpack.Decoder(tuple[float, int, bool, list[int], msgspec.Raw])
_Held = tuple[float, int, bool, dict[int, int], msgspec.Raw]


class Silences(_Keyed):
    """absence: tumbling windows of `window` seconds (aligned to the epoch); a key with fewer
    than `threshold` events in a closed window is silent, alerted once until it is heard again.
    A key's state: the time of its last event, its first window index, the silent flag, counts
    per open window and its last event (a sample made by `samples`), packed in one record."""

    def __init__(self, window: float, threshold: int, lateness: float, max_keys: int,
                 samples: Samples | None = None) -> None:
        super().__init__(lateness, max_keys)
        self.window = window
        self.threshold = threshold
        self.closed = -math.inf  # windows with an index below this are closed
        self.heard: dict[int, int] = {}  # per open window: keys that reached the threshold in it
        self.samples: Samples = RawSamples() if samples is None else samples

    def _open(self, rec: bytes) -> _Held:
        """A key's record unpacked: (last time, first window, silent, counts, sample)."""
        t, before, silent, flat, sample = _SILENCE.decode(rec)
        first = self._index(t) - before
        return t, first, silent, {first + flat[i]: flat[i + 1] for i in range(0, len(flat), 2)}, sample

    def _pack(self, t: float, first: int, silent: bool, counts: dict[int, int], sample: msgspec.Raw) -> bytes:
        flat = [n for index, count in counts.items() for n in (index - first, count)]
        # A copy: msgspec leaves its output ~40% over-allocated, which 100,000 keys would keep.
        return bytes(memoryview(msgspec.msgpack.encode((t, self._index(t) - first, silent, flat, sample))))

    def _index(self, t: float) -> int:
        return math.floor(t / self.window) if math.isfinite(t) else 0

    def feed(self, key: str, bucket: int, t: float, last: Any) -> list[Fired]:
        if not self.accept(t):
            return []
        index = math.floor(t / self.window)
        if index < self.closed:
            self.counters.late += 1
            return []
        state = self.state[bucket]
        self.dirty.add(bucket)
        rec = state.get(key)
        counts: dict[int, int]
        sample: msgspec.Raw | None
        if rec is None:
            held_t, first, silent, counts, sample = t, index, False, {}, None
        else:
            held_t, first, silent, counts, sample = self._open(rec)
        if sample is None or t >= held_t:  # the newest event is the one an alert shows (made first: it may raise)
            held_t, sample = t, msgspec.Raw(self.samples.encode(last, key, t))
        if rec is None:
            self.room(bucket)
        count = counts[index] = counts.get(index, 0) + 1
        if count == self.threshold:
            self.heard[index] = self.heard.get(index, 0) + 1
        state[key] = self._pack(held_t, min(first, index), silent, counts, sample)
        if self.closed != -math.inf and self.max_t - self.lateness < (self.closed + 1) * self.window:
            return []  # no window can close yet
        return self.advance(self.max_t - self.lateness)

    def all_heard(self, index: int) -> bool:
        """Every key tracked has reached the threshold in window `index`."""
        return self.heard.get(index, 0) >= self.keys()

    def advance(self, watermark: float) -> list[Fired]:
        """Close every window that ends at or before `watermark`; the silences found."""
        if watermark == NEVER:
            return []
        until = math.floor(watermark / self.window)
        if self.closed == -math.inf:
            self.closed = min((self._open(r)[1] for s in self.state for r in s.values()), default=until)
        if until <= self.closed:
            return []
        fired: list[Fired] = []
        begin = int(self.closed)
        for bucket in range(BUCKETS):
            state = self.state[bucket]
            for key, rec in state.items():
                t, first, silent, counts, sample = self._open(rec)
                found, now_silent = self._judge(key, first, silent, counts, begin, until)
                fired += found
                if now_silent is not silent or min(counts, default=until) < until:
                    for index in [i for i in counts if i < until]:
                        del counts[index]
                    state[key] = self._pack(t, first, now_silent, counts, sample)
            if state:
                self.dirty.add(bucket)
        self.closed = until
        self.heard = {i: n for i, n in self.heard.items() if i >= until}
        return fired

    def _judge(self, key: str, first: int, silent: bool, counts: dict[int, int],  # noqa: PLR0917
               begin: int, until: int) -> tuple[list[Fired], bool]:
        """The silences of a key in windows begin..until-1, and whether it is silent after them."""
        fired: list[Fired] = []
        window = max(begin, first)
        busy = sorted(i for i, n in counts.items() if window <= i < until and n >= self.threshold)
        for index in [*busy, until]:
            if index > window and not silent:
                fired.append(Fired(key, counts.get(window, 0), window * self.window, (window + 1) * self.window,
                                   window=self.window, start=window * self.window))
                silent = True
            if index < until:
                silent = False
                window = index + 1
        return fired, silent

    def last_line(self, key: str) -> bytes:
        rec = self.state[bucket_of(key)].get(key)
        if rec is None:
            return b""
        t, _first, _silent, _counts, sample = self._open(rec)
        return self.samples.line(bytes(sample), key, t)

    def export(self, bucket: int) -> bytes | None:
        """The bucket as stored since absence was written: per key [first window, silent,
        [[window, count], ...], last line, last time]."""
        state = self.state[bucket]
        if not state:
            return None
        out = {}
        for key, rec in state.items():
            t, first, silent, counts, sample = self._open(rec)
            out[key] = [first, silent, list(counts.items()), self.samples.line(bytes(sample), key, t), t]
        return msgspec.msgpack.encode({"s": out, "r": {}})

    def load(self, bucket: int, data: bytes) -> None:
        loaded = msgspec.msgpack.decode(data)
        state = self.state[bucket] = {}
        for key, held in loaded["s"].items():
            t, counts = float(held[4]), {int(i): n for i, n in held[2]}
            sample = msgspec.Raw(self.samples.from_line(held[3], key, t))
            state[key] = self._pack(t, held[0], held[1], counts, sample)
            for index, count in counts.items():
                if count >= self.threshold:
                    self.heard[index] = self.heard.get(index, 0) + 1

    def export_meta(self) -> bytes:
        return msgspec.msgpack.encode({"m": self.max_t, "closed": None if self.closed == -math.inf else self.closed})

    def load_meta(self, data: bytes) -> None:
        meta = msgspec.msgpack.decode(data)
        self.max_t = float(meta["m"])
        self.closed = -math.inf if meta.get("closed") is None else meta["closed"]

    def describe(self, key: str) -> list[str]:
        rec = self.state[bucket_of(key)].get(key)
        if rec is None:
            return [f"key {key!r}: not seen"]
        t, _first, silent, counts, _sample = self._open(rec)
        shown = ", ".join(f"{_stamp(i * self.window)}: {n}" for i, n in sorted(counts.items()))
        return [f"key {key!r}: {'silent (alerted)' if silent else 'heard'}, last event {_stamp(t)}, "
                f"open windows: {shown or 'none'}"]


def _stamp(t: float | None) -> str:
    if t is None or not math.isfinite(t):
        return "-"
    import datetime  # noqa: PLC0415 - only for explanations

    return datetime.datetime.fromtimestamp(t, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def stamp(t: float) -> str:
    """A time as the audit log writes it (UTC, microseconds)."""
    return _stamp(t)


def iter_buckets() -> Iterator[int]:
    return iter(range(BUCKETS))
