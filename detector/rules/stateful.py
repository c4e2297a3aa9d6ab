"""Stateful rules: the base condition's matches fed to per-key windows (windows.py), and the
aggregate alerts they make.

The ruleset runs a stateful rule's base condition like any other rule's (indexed, generated),
but a match goes to `StatefulRule.feed` instead of becoming an alert; only a window that fires
makes a Match, whose output template may use the aggregate (`%agg.count`, `%agg.distinct`,
`%agg.values`, `%agg.first`, `%agg.last`, `%agg.audit_ids`, `%agg.key`, `%agg.window`), also
put in `output_fields` under those names.

`StatefulState` holds every stateful rule of a ruleset: it exports what changed since the last
export (per rule and bucket of keys, under `rules.state.<digest>.<bucket>`), loads it back,
takes over the state of unchanged rules on a reload (the digest covers the rule's name,
condition, exceptions and correlation block), and closes absence windows on the wall clock.
"""

from __future__ import annotations

import hashlib
import math
import re
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from detector.errors import BadInput
from detector.event import AuditEvent
from detector.parse.audit import event_from_dict, parse_line
from detector.parse.extract import Value
from detector.rules.codegen import fuse_steps
from detector.rules.correlation import CorrelationSpec, Kind
from detector.rules.lastevent import LastEvents
from detector.rules.model import SOURCE, CompiledRule, FieldValue, Match, Predicate
from detector.rules.output import NA, OutputTemplate, format_value
from detector.rules.windows import (
    BUCKETS,
    EventWindows,
    Fired,
    NewTerms,
    Silences,
    Window,
    bucket_of,
    pack,
    stamp,
)

STATE_PREFIX = "rules.state."
AGGREGATES = ("count", "distinct", "values", "first", "last", "audit_ids", "key", "window")
_AGG_TOKEN = re.compile(r"%agg\.(" + "|".join(AGGREGATES) + r")\b")
_MARK = "\x00agg{}\x00"
_SEP = "\x1f"  # between the values of a key of several fields
Extractor = Callable[[AuditEvent], Value]


def split_output(text: str) -> tuple[str, tuple[str, ...]]:
    """The template with `%agg.x` tokens replaced by marks (compiled as usual), and their names."""
    names: list[str] = []

    def mark(found: re.Match[str]) -> str:
        names.append(found.group(1))
        return _MARK.format(len(names) - 1)

    return _AGG_TOKEN.sub(mark, text), tuple(names)


def rule_digest(name: str, condition: str, exceptions: str, spec: CorrelationSpec) -> str:
    """Identity of a stateful rule's state: changes when what it counts changes."""
    text = "\x00".join((name, condition, exceptions, spec.canonical()))
    return hashlib.sha256(text.encode()).hexdigest()[:16]


@dataclass(frozen=True, slots=True)
class Step:
    """A compiled sequence step: when an event is this step, and its key."""

    name: str
    predicate: Predicate
    keys: tuple[Extractor, ...] | None


_NEVER_TIME = datetime.min.replace(tzinfo=UTC)


def _text(value: Value) -> str:
    if value is None:
        return NA
    return value if type(value) is str else format_value(value)


class StatefulRule:
    """One stateful rule: its compiled parts and its window state."""

    def __init__(self, rule: CompiledRule, spec: CorrelationSpec, digest: str, keys: Sequence[Extractor],  # noqa: PLR0917
                 values: Sequence[Extractor], steps: Sequence[Step], expire: Predicate | None,
                 output: OutputTemplate, aggregates: tuple[str, ...]) -> None:
        self.rule = rule
        self.name = rule.name
        self.spec = spec
        self.digest = digest
        self.keys = tuple(keys)
        self.values = tuple(values)
        self.steps = tuple(steps)
        self.expire = expire
        self.output = output
        self.aggregates = aggregates
        self.untimed = 0  # events without a usable stageTimestamp
        self.skip_until = _NEVER_TIME  # absence: events before this change nothing
        self._buckets: dict[str, int] = {}
        self.wall_at_max = time.time()  # when the newest event time last moved (absence on the wall clock)
        self.window = self._new_window()
        # Decided once, for every event fed: what the window's type is fed, and the key's one
        # field (None: several fields, or none) and the value's.
        self._feed = _FEEDS.get(spec.kind, StatefulRule._feed_events)
        self._key1 = self.keys[0] if len(self.keys) == 1 else None
        self._value1 = self.values[0] if len(self.values) == 1 else None
        # A sequence whose steps all have the rule's key: the steps an event is, in one call.
        self._steps_mask = fuse_steps([s.predicate for s in self.steps]) if self.steps and all(
            s.keys is None for s in self.steps) else None

    def fresh(self) -> StatefulRule:
        """The same rule with empty state (a rule test starts from nothing)."""
        return StatefulRule(self.rule, self.spec, self.digest, self.keys, self.values, self.steps, self.expire,
                            self.output, self.aggregates)

    def _new_window(self) -> Window:
        s = self.spec
        if s.kind is Kind.NEW_TERM:
            return NewTerms(s.history, s.learning, s.lateness, s.max_keys, s.max_values)
        if s.kind is Kind.ABSENCE:
            return Silences(s.window, s.threshold, s.lateness, s.max_keys, samples=LastEvents())
        if s.kind is Kind.SEQUENCE:
            return EventWindows("ordered" if s.ordered else "unordered", s.span, 1, s.lateness, s.max_keys,
                                s.max_values, steps=len(s.steps))
        return EventWindows(s.kind.value, s.window, s.threshold, s.lateness, s.max_keys, s.max_values)

    def key_of(self, event: AuditEvent, keys: tuple[Extractor, ...] | None = None) -> str:
        extractors = self.keys if keys is None else keys
        if len(extractors) == 1:
            value = extractors[0](event)
            return value if type(value) is str else _text(value)
        parts = []
        for get in extractors:
            value = get(event)
            parts.append(value if type(value) is str else _text(value))
        return _SEP.join(parts)

    def value_of(self, event: AuditEvent) -> str:
        if len(self.values) == 1:
            value = self.values[0](event)
            return value if type(value) is str else _text(value)
        return _SEP.join([_text(get(event)) for get in self.values])

    def bucket(self, key: str) -> int:
        """bucket_of, remembered for the keys seen lately (a key comes back many times)."""
        buckets = self._buckets
        found = buckets.get(key)
        if found is None:
            if len(buckets) >= 4096:
                buckets.clear()
            found = buckets[key] = bucket_of(key)
        return found

    def feed(self, event: AuditEvent) -> list[Match] | None:
        """An event the base condition selected; the alerts of the windows it makes fire.
        Never raises: an event whose key cannot be read is counted and skipped."""
        stamp_ = event.time
        if stamp_ is None:
            self.untimed += 1
            return None
        if stamp_ < self.skip_until:  # absence: this window is settled already
            return None
        try:
            fired = self._feed(self, event, stamp_.timestamp())
        except Exception:  # a field that fails on this event: the event does not count
            self.untimed += 1
            return None
        return [self._match(event, f) for f in fired] if fired else None

    # What each window type is fed (StatefulRule._feed, decided once): the key and the bucket
    # read inline, as the rules fed most are fed on every event of a person.
    def _feed_events(self, event: AuditEvent, t: float) -> list[Fired]:
        get = self._key1
        if get is None:
            key = self.key_of(event)
        else:
            found = get(event)
            key = found if type(found) is str else _text(found)
        value = ""
        if (get := self._value1) is not None:
            found = get(event)
            value = found if type(found) is str else _text(found)
        elif self.values:
            value = self.value_of(event)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self.bucket(key)
        window: EventWindows = self.window  # type: ignore[assignment]  # (count or distinct)
        return window.feed(key, bucket, t, pack(t, event.auditID or "", value))

    def _feed_term(self, event: AuditEvent, t: float) -> list[Fired]:
        get = self._key1
        if get is None:
            key = self.key_of(event)
        else:
            found = get(event)
            key = found if type(found) is str else _text(found)
        get = self._value1
        if get is None:
            value = self.value_of(event)
        else:
            found = get(event)
            value = found if type(found) is str else _text(found)
        bucket = self._buckets.get(key)
        if bucket is None:
            bucket = self.bucket(key)
        window: NewTerms = self.window  # type: ignore[assignment]  # (new_term)
        return window.feed(key, bucket, t, value, event.auditID or "")

    def _feed_silence(self, event: AuditEvent, t: float) -> list[Fired]:
        window = self.window
        assert type(window) is Silences
        key = self.key_of(event)
        before = window.max_t
        fired = window.feed(key, self.bucket(key), t, event)
        if window.max_t > before:
            self.wall_at_max = time.time()
        if window.all_heard(math.floor(t / window.window)):
            # Every key has been heard enough in this window: the rest of it changes nothing
            # that can alert, so its events are not looked at (see docs/stateful.md).
            self.skip_until = datetime.fromtimestamp((math.floor(t / window.window) + 1) * window.window, UTC)
        return fired

    def _feed_steps(self, event: AuditEvent, t: float) -> list[Fired]:
        window: EventWindows = self.window  # type: ignore[assignment]  # (a sequence)
        if self.expire is not None and self.expire(event):
            key = self.key_of(event)
            window.expire(key, bucket_of(key), t)
            return []
        if self._steps_mask is None:
            return self._steps_of_keys(window, event, t)
        mask = self._steps_mask(event)
        if not mask:
            return []
        if self._key1 is None:  # one key (of several fields, or none)
            key = self.key_of(event)
            bucket = self._buckets.get(key)
            if bucket is None:
                bucket = self.bucket(key)
            return window.feed(key, bucket, t, pack(t, event.auditID or "", "", mask))
        fired: list[Fired] = []
        for key in self._step_keys(event, None):
            fired += window.feed(key, self.bucket(key), t, pack(t, event.auditID or "", "", mask))
        return fired

    def _steps_of_keys(self, window: EventWindows, event: AuditEvent, t: float) -> list[Fired]:
        """A sequence with steps of their own keys: each key fed the steps it is in."""
        masks: dict[str, int] = {}
        own: list[str] | None = None  # the rule's keys, read once for the steps without their own
        for position, step in enumerate(self.steps):
            if step.predicate(event):
                if step.keys is not None:
                    keys = self._step_keys(event, step.keys)
                elif own is None:
                    keys = own = self._step_keys(event, None)
                else:
                    keys = own
                for key in keys:
                    masks[key] = masks.get(key, 0) | 1 << position
        fired = []
        for key, mask in masks.items():
            fired += window.feed(key, self.bucket(key), t, pack(t, event.auditID or "", "", mask))
        return fired

    def _step_keys(self, event: AuditEvent, keys: tuple[Extractor, ...] | None) -> list[str]:
        """A step's keys: one, or one per value when its key is one list field (the user names
        a role binding grants to)."""
        extractors = self.keys if keys is None else keys
        if len(extractors) == 1:
            value = extractors[0](event)
            if type(value) is tuple:
                return list(dict.fromkeys(value)) or [NA]
        return [self.key_of(event, keys)]

    def tick(self, now: float) -> list[Match]:
        """Absence on the wall clock: the newest event time moved on by the time since it came."""
        window = self.window
        if type(window) is not Silences or window.max_t == -float("inf"):
            return []
        watermark = window.max_t + max(0.0, now - self.wall_at_max) - window.lateness
        return [self._silence_match(f) for f in window.advance(watermark)]

    def _match(self, event: AuditEvent, fired: Fired) -> Match:
        if type(self.window) is Silences:
            return self._silence_match(fired)
        return self.render(event, fired)

    def _silence_match(self, fired: Fired) -> Match:
        """A silent key's alert: about its last event (so the template's fields show the key)."""
        assert type(self.window) is Silences
        cluster, _, line = self.window.last_line(fired.key).partition(b"\n")
        self.skip_until = _NEVER_TIME
        event: AuditEvent | None = None
        try:
            parsed = parse_line(line) if line else None
            event = parsed if isinstance(parsed, AuditEvent) else None
        except BadInput:
            event = None
        if event is None:
            event = event_from_dict({"kind": "Event", "apiVersion": "audit.k8s.io/v1", "stage": "ResponseComplete",
                                     "auditID": f"silence:{self.digest}:{fired.key}:{fired.start}",
                                     "stageTimestamp": stamp(fired.last)})
        if cluster:
            event.cluster = cluster.decode("utf-8", "replace")
        return self.render(event, fired)

    def render(self, event: AuditEvent, fired: Fired) -> Match:
        text, fields = self.output.render(event)
        values = aggregate_fields(fired, self.spec.kind)
        for position, name in enumerate(self.aggregates):
            shown = values[f"agg.{name}"]
            text = text.replace(_MARK.format(position), shown if isinstance(shown, str) else
                                "(" + ",".join(shown or ()) + ")")
        fields.update(values)
        rule = self.rule
        return Match(rule.name, rule.priority, rule.tags, SOURCE, text, fields, event)

    def describe(self, key: str) -> list[str]:
        return self.window.describe(key)


_FEEDS: dict[Kind, Callable[[StatefulRule, AuditEvent, float], list[Fired]]] = {
    Kind.NEW_TERM: StatefulRule._feed_term, Kind.SEQUENCE: StatefulRule._feed_steps,
    Kind.ABSENCE: StatefulRule._feed_silence}


def aggregate_fields(fired: Fired, kind: Kind) -> dict[str, FieldValue]:
    """The aggregate as output fields (strings and lists of strings, as Falco's)."""
    key = fired.key.replace(_SEP, ", ")
    return {
        "agg.key": key, "agg.count": str(fired.count), "agg.distinct": str(fired.distinct),
        "agg.values": list(fired.values), "agg.first": stamp(fired.first), "agg.last": stamp(fired.last),
        "agg.audit_ids": list(fired.audit_ids), "agg.window": _seconds(fired.window), "agg.type": kind.value,
    }


def _seconds(value: float) -> str:
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if value >= size and value % size == 0:
            return f"{int(value // size)}{unit}"
    return f"{value:g}s"


class StatefulState:
    """The stateful rules of one ruleset: feeding, export/import, reload hand-over, ticks."""

    def __init__(self, rules: Iterable[StatefulRule]) -> None:
        self.rules = {r.digest: r for r in rules}
        self.stored: set[str] = set()  # state keys in the database (loaded or written)
        self._meta: dict[str, bytes] = {}  # last written meta per rule (written when it changes)
        # Each rule's state keys, made once: changes() runs at every commit.
        self._names = {d: [f"{STATE_PREFIX}{d}.{b}" for b in range(BUCKETS)] + [f"{STATE_PREFIX}{d}.m"]
                       for d in self.rules}
        self._live = {name for names in self._names.values() for name in names}
        self._doomed: set[str] = set()  # stored keys of no rule loaded: deleted at the next commit

    def __bool__(self) -> bool:
        return bool(self.rules)

    def changes(self) -> dict[str, bytes | None]:
        """State keys that changed since the last call (None: delete), for the next commit."""
        out: dict[str, bytes | None] = dict.fromkeys(self._doomed)
        self.stored -= self._doomed
        self._doomed = set()
        for digest, rule in self.rules.items():
            window = rule.window
            if not window.dirty:
                continue  # nothing fed or closed: neither buckets nor meta moved
            names = self._names[digest]
            for bucket in sorted(window.dirty):
                out[names[bucket]] = value = window.export(bucket)
                if value is None:
                    self.stored.discard(names[bucket])
                else:
                    self.stored.add(names[bucket])
            window.dirty.clear()
            meta = window.export_meta()
            if self._meta.get(digest) != meta:
                out[names[BUCKETS]] = self._meta[digest] = meta
                self.stored.add(names[BUCKETS])
        return out

    def load(self, items: Mapping[str, bytes]) -> int:
        """Load stored state (the keys under STATE_PREFIX); keys of rules not loaded are
        deleted at the next commit. Returns the number of rules whose state was found."""
        found: set[str] = set()
        for key, value in items.items():
            self.stored.add(key)
            digest, _, part = key[len(STATE_PREFIX):].partition(".")
            rule = self.rules.get(digest)
            if rule is None or key not in self._live:
                self._doomed.add(key)
                continue
            found.add(digest)
            if part == "m":
                rule.window.load_meta(value)
                self._meta[digest] = value
            elif part.isdigit() and int(part) < BUCKETS:
                rule.window.load(int(part), value)
        return len(found)

    def forget_stored(self, keys: Iterable[str]) -> None:
        """State in the database that must not be used (a fresh start): deleted at the next commit."""
        self.stored.update(keys)
        self._doomed.update(keys)

    def adopt(self, old: StatefulState) -> tuple[int, int]:
        """After a reload: keep the state of unchanged rules, drop that of the others.
        Returns (kept, dropped) rule counts."""
        kept = 0
        for digest, rule in self.rules.items():
            previous = old.rules.get(digest)
            if previous is not None:
                rule.window, rule.wall_at_max, rule.untimed = previous.window, previous.wall_at_max, previous.untimed
                kept += 1
        self.stored = set(old.stored)
        self._doomed = (old._doomed | old.stored) - self._live
        for digest in self.rules.keys() - old.rules.keys():  # a rule starting afresh replaces what it stored
            self._doomed |= self.stored & set(self._names[digest])
        self._meta = {d: m for d, m in old._meta.items() if d in self.rules}
        return kept, len(old.rules) - kept

    def tick(self, now: float | None = None) -> list[Match]:
        """Close absence windows on the wall clock (a log that stopped entirely)."""
        moment = time.time() if now is None else now
        return [m for rule in self.rules.values() for m in rule.tick(moment)]

    def counters(self) -> dict[str, int]:
        """Totals over the rules: late, evicted_keys, evicted_values, untimed, keys."""
        totals = {"late": 0, "evicted_keys": 0, "evicted_values": 0, "untimed": 0, "keys": 0}
        for rule in self.rules.values():
            c = rule.window.counters
            totals["late"] += c.late
            totals["evicted_keys"] += c.evicted_keys
            totals["evicted_values"] += c.evicted_values
            totals["untimed"] += rule.untimed
            totals["keys"] += rule.window.keys()
        return totals
