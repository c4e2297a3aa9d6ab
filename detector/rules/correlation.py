"""The `correlation:` block of a rule as written, checked: what makes a rule stateful.

A rule keeps Falco's shape (its `condition` selects the events); the optional block says what
to do with the selected events over time. Each problem is a Diagnostic (E027) at the line of
the key at fault, and the rule is not loaded. docs/stateful.md has the syntax and the Sigma
mapping.

    correlation:
      type: count | distinct | new_term | sequence | absence
      group_by: [ka.user.name]          # the key; missing values count as "<NA>"
      window: 5m                        # count, distinct, absence
      threshold: 40                     # count/distinct: at least; absence: fewer than
      field: ka.target.namespace        # distinct (one field)
      fields: [ka.client.ip]            # new_term (a value or a tuple of fields)
      history: 30d                      # new_term: how long a value stays known
      learning: 7d                      # new_term: no alert before the rule saw this much time
      ordered: true                     # sequence: steps in order (temporal_ordered) or not (temporal)
      span: 10m                         # sequence: first to last step
      steps:                            # sequence: each a condition or another rule's name
        - {name: grant, condition: ..., group_by: [...]}
        - {name: use, rule: Exec Into Pod}
      expire: <condition>               # sequence: an event that cancels partial sequences of its key
      lateness: 30s                     # events older than the newest minus this are dropped
      max_keys: 10000                   # bounds of the rule's state (evictions are counted)
      max_values: 1000
"""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass
from typing import Any

from detector.errors import Location
from detector.rules.diagnostics import Code, Diagnostic
from detector.rules.yamlload import YamlMap, parse_bool

DEFAULT_LATENESS = 30.0
DEFAULT_MAX_KEYS = 10_000
DEFAULT_MAX_VALUES = 1_000
MAX_KEYS_LIMIT = 1_000_000
MAX_VALUES_LIMIT = 100_000
MAX_STEPS = 8  # a step mask is one byte
_DURATION = re.compile(r"\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d|w)?\s*")
_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, None: 1.0}


class Kind(enum.Enum):
    """The window types, with the Sigma correlation type each stands for."""

    COUNT = "count"  # Sigma event_count (gte)
    DISTINCT = "distinct"  # Sigma value_count (gte)
    NEW_TERM = "new_term"  # no Sigma type: Elastic's new_terms
    SEQUENCE = "sequence"  # Sigma temporal_ordered (ordered) / temporal
    ABSENCE = "absence"  # Sigma event_count (lt), closed by event time or wall clock


_KEYS: dict[Kind, set[str]] = {
    Kind.COUNT: {"window", "threshold"},
    Kind.DISTINCT: {"window", "threshold", "field"},
    Kind.NEW_TERM: {"fields", "history", "learning"},
    Kind.SEQUENCE: {"ordered", "span", "steps", "expire"},
    Kind.ABSENCE: {"window", "threshold"},
}
_COMMON = {"type", "group_by", "lateness", "max_keys", "max_values"}
_REQUIRED: dict[Kind, tuple[str, ...]] = {
    Kind.COUNT: ("window", "threshold"), Kind.DISTINCT: ("window", "threshold", "field"),
    Kind.NEW_TERM: ("fields", "history"), Kind.SEQUENCE: ("span", "steps"), Kind.ABSENCE: ("window",),
}


@dataclass(frozen=True, slots=True)
class StepSpec:
    """One step of a sequence: a condition or another rule's name, optionally its own key."""

    name: str
    condition: str | None
    rule: str | None
    group_by: tuple[str, ...] | None
    location: Location


@dataclass(frozen=True, slots=True)
class CorrelationSpec:
    """A checked `correlation:` block (durations in seconds)."""

    kind: Kind
    group_by: tuple[str, ...]
    window: float = 0.0
    threshold: int = 1
    fields: tuple[str, ...] = ()  # distinct: one; new_term: one or more
    history: float = 0.0
    learning: float = 0.0
    ordered: bool = True
    span: float = 0.0
    steps: tuple[StepSpec, ...] = ()
    expire: str | None = None
    lateness: float = DEFAULT_LATENESS
    max_keys: int = DEFAULT_MAX_KEYS
    max_values: int = DEFAULT_MAX_VALUES
    location: Location | None = None

    def canonical(self) -> str:
        """The block as text that changes whenever its meaning does (for the state's identity)."""
        steps = ";".join(f"{s.name}|{s.condition}|{s.rule}|{s.group_by}" for s in self.steps)
        return (f"{self.kind.value}|{self.group_by}|{self.window}|{self.threshold}|{self.fields}|{self.history}|"
                f"{self.learning}|{self.ordered}|{self.span}|{steps}|{self.expire}|{self.lateness}")


def parse_duration(value: Any) -> float | None:
    """`90`, `90s`, `5m`, `1.5h`, `7d`, `2w`, `500ms` in seconds; None when not a duration."""
    if isinstance(value, bool):
        return None
    if isinstance(value, int | float):
        return float(value) if value >= 0 else None
    if not isinstance(value, str):
        return None
    found = _DURATION.fullmatch(value)
    if found is None:
        return None
    return float(found.group(1)) * _UNITS[found.group(2)]


class _Reader:
    """Reads one block, collecting every problem."""

    def __init__(self, block: YamlMap, where: Location) -> None:
        self.block = block
        self.where = where
        self.problems: list[Diagnostic] = []

    def at(self, key: str | None) -> Location:
        line, column = self.block.key_lines.get(key, (self.block.line, self.block.column)) if key else (
            self.block.line, self.block.column)
        return Location(self.where.path, line or self.where.line, column, self.where.item)

    def bad(self, key: str | None, message: str) -> None:
        self.problems.append(Diagnostic(Code.BAD_CORRELATION, f"correlation: {message}", self.at(key)))

    def duration(self, key: str, positive: bool = True) -> float:
        value = parse_duration(self.block.get(key))
        if value is None or (positive and value <= 0):
            self.bad(key, f"'{key}' must be a duration such as 90s, 5m, 1h or 7d (got {self.block.get(key)!r})")
            return 0.0
        return value

    def count(self, key: str, low: int, high: int, default: int) -> int:
        if key not in self.block:
            return default
        value = self.block[key]
        number = int(value) if isinstance(value, str) and value.isdigit() else value
        if isinstance(number, bool) or not isinstance(number, int) or not low <= number <= high:
            self.bad(key, f"'{key}' must be an integer from {low:,} to {high:,} (got {value!r})")
            return default
        return number

    def names(self, key: str, value: Any) -> tuple[str, ...]:
        items = [value] if isinstance(value, str) else value
        if not isinstance(items, list) or not items or not all(isinstance(i, str) and i.strip() for i in items):
            self.bad(key, f"'{key}' must be a field name or a non-empty sequence of field names")
            return ()
        return tuple(i.strip() for i in items)


def parse_correlation(block: Any, where: Location) -> tuple[CorrelationSpec | None, list[Diagnostic]]:
    """The checked block, or None with every problem (E027 at the line of each key)."""
    if not isinstance(block, YamlMap):
        return None, [Diagnostic(Code.BAD_CORRELATION, "correlation: must be a mapping", where)]
    reader = _Reader(block, where)
    try:
        kind = Kind(block.get("type"))
    except ValueError:
        reader.bad("type", f"'type' must be one of {', '.join(k.value for k in Kind)} (got {block.get('type')!r})")
        return None, reader.problems
    for key in sorted(set(block) - _COMMON - _KEYS[kind]):
        reader.bad(key, f"unknown key '{key}' for type {kind.value}")
    for key in _REQUIRED[kind]:
        if key not in block:
            reader.bad(None, f"type {kind.value} needs '{key}'")
    if reader.problems:
        return None, reader.problems
    spec = _read(reader, kind)
    return (None if reader.problems else spec), reader.problems


def _read(reader: _Reader, kind: Kind) -> CorrelationSpec:
    block = reader.block
    group_by = reader.names("group_by", block["group_by"]) if "group_by" in block else ()
    values: dict[str, Any] = {}
    if kind in (Kind.COUNT, Kind.DISTINCT, Kind.ABSENCE):
        values["window"] = reader.duration("window")
        values["threshold"] = reader.count("threshold", 1, MAX_VALUES_LIMIT, 1)
    if kind is Kind.DISTINCT:
        fields = reader.names("field", block["field"])
        if len(fields) != 1:
            reader.bad("field", "'field' names one field (distinct values of it are counted)")
        values["fields"] = fields
    if kind is Kind.NEW_TERM:
        values["fields"] = reader.names("fields", block["fields"])
        values["history"] = reader.duration("history")
        values["learning"] = reader.duration("learning", positive=False) if "learning" in block else 0.0
    if kind is Kind.SEQUENCE:
        ordered = parse_bool(block.get("ordered", "true"))
        if ordered is None:
            reader.bad("ordered", "'ordered' must be a boolean")
        values["ordered"] = bool(ordered)
        values["span"] = reader.duration("span")
        values["steps"] = _steps(reader, block["steps"], len(group_by))
        expire = block.get("expire")
        if expire is not None and (not isinstance(expire, str) or not expire.strip()):
            reader.bad("expire", "'expire' must be a condition")
        values["expire"] = expire.strip() if isinstance(expire, str) else None
    lateness = reader.duration("lateness", positive=False) if "lateness" in block else DEFAULT_LATENESS
    max_values = reader.count("max_values", 1, MAX_VALUES_LIMIT, DEFAULT_MAX_VALUES)
    if kind in (Kind.COUNT, Kind.DISTINCT) and values.get("threshold", 1) > max_values:
        reader.bad("threshold", f"'threshold' ({values['threshold']}) cannot exceed max_values ({max_values})")
    return CorrelationSpec(kind=kind, group_by=group_by, lateness=lateness,
                           max_keys=reader.count("max_keys", 1, MAX_KEYS_LIMIT, DEFAULT_MAX_KEYS),
                           max_values=max_values, location=reader.at(None), **values)


def _steps(reader: _Reader, value: Any, key_width: int) -> tuple[StepSpec, ...]:
    if not isinstance(value, list) or not 2 <= len(value) <= MAX_STEPS:
        reader.bad("steps", f"'steps' must be a sequence of 2 to {MAX_STEPS} steps")
        return ()
    steps: list[StepSpec] = []
    for number, entry in enumerate(value, start=1):
        where = _step_location(reader, entry)
        if not isinstance(entry, dict):
            reader.problems.append(Diagnostic(Code.BAD_CORRELATION, f"correlation: step #{number} must be a "
                                              "mapping with 'condition' or 'rule'", where))
            continue
        name = str(entry.get("name") or f"step{number}")
        condition, rule = entry.get("condition"), entry.get("rule")
        unknown = set(entry) - {"name", "condition", "rule", "group_by"}
        problem = None
        if unknown:
            problem = f"unknown key(s) {', '.join(sorted(unknown))}"
        elif (condition is None) == (rule is None):
            problem = "needs exactly one of 'condition' and 'rule'"
        elif not isinstance(condition if condition is not None else rule, str):
            problem = "'condition' and 'rule' must be strings"
        group_by = None
        if problem is None and "group_by" in entry:
            group_by = reader.names("steps", entry["group_by"])
            if len(group_by) != key_width:
                problem = f"its group_by has {len(group_by)} field(s), the rule's has {key_width}"
        if problem is not None:
            reader.problems.append(Diagnostic(Code.BAD_CORRELATION, f"correlation: step {name!r}: {problem}", where))
            continue
        steps.append(StepSpec(name, condition, rule, group_by, where))
    if len({s.name for s in steps}) != len(steps):
        reader.bad("steps", "step names must be unique")
    return tuple(steps)


def _step_location(reader: _Reader, entry: Any) -> Location:
    if isinstance(entry, YamlMap):
        return Location(reader.where.path, entry.line, entry.column, reader.where.item)
    return reader.at("steps")
