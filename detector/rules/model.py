"""Rules as written (collected, mergeable) and rules as compiled (ready to evaluate).

The two are different types on purpose: the evaluator never sees condition text and the
loader never sees predicates.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import msgspec

from detector.errors import Location
from detector.event import AuditEvent
from detector.rules.ast import Node

SOURCE = "k8s_audit"


class Priority(enum.IntEnum):
    """Falco's priorities; lower is more severe."""

    EMERGENCY = 0
    ALERT = 1
    CRITICAL = 2
    ERROR = 3
    WARNING = 4
    NOTICE = 5
    INFORMATIONAL = 6
    DEBUG = 7

    @property
    def label(self) -> str:
        """The word Falco prints (`Warning`, `Informational`...)."""
        return self.name.capitalize()

    @classmethod
    def parse(cls, text: str) -> Priority | None:
        """Case-insensitive; `info` is accepted for `informational`."""
        name = text.strip().upper()
        if name == "INFO":
            name = "INFORMATIONAL"
        return cls.__members__.get(name)


# -- as written ----------------------------------------------------------------------------
@dataclass(slots=True)
class ListInfo:
    name: str
    items: list[str]
    index: int
    visibility: int
    location: Location


@dataclass(slots=True)
class MacroInfo:
    name: str
    condition: str
    index: int
    visibility: int
    location: Location
    condition_location: Location


@dataclass(slots=True)
class ExceptionInfo:
    name: str
    fields: str | list[str] | None
    comps: str | list[str] | None
    values: list[Any]
    location: Location


@dataclass(slots=True)
class RuleInfo:
    name: str
    condition: str
    output: str
    desc: str
    priority: Priority
    source: str | None
    enabled: bool
    tags: set[str]
    exceptions: list[ExceptionInfo]
    index: int
    visibility: int
    location: Location
    condition_location: Location
    output_location: Location
    skip_if_unknown_filter: bool = False
    tests: list[Any] = field(default_factory=list)
    correlation: Any = None  # the `correlation:` mapping as written (a YamlMap), if any


# -- as compiled -----------------------------------------------------------------------------
Predicate = Callable[[AuditEvent], bool]
FieldValue = str | list[str] | None


class Match(msgspec.Struct, frozen=True, gc=False):
    """A rule that matched an event, with its output rendered: what the alert stage receives.

    (A frozen Struct, not a dataclass: one is built per match, on the hot path.)"""

    rule: str
    priority: Priority
    tags: tuple[str, ...]
    source: str
    output: str
    output_fields: dict[str, FieldValue]
    event: AuditEvent


class OutputRenderer:
    """Interface of a compiled output template (see rules/output.py)."""

    text: str

    def render(self, event: AuditEvent) -> tuple[str, dict[str, FieldValue]]:
        raise NotImplementedError


@dataclass(frozen=True, slots=True)
class CompiledRule:
    """A rule ready to run: predicate, output renderer and index constraints."""

    name: str
    desc: str
    priority: Priority
    tags: tuple[str, ...]
    enabled: bool
    predicate: Predicate
    output: OutputRenderer
    condition: Node
    constraints: Mapping[str, frozenset[str | None]]
    location: Location
    tests: tuple[Any, ...] = ()
    # The predicate minus what the rule index already checked: only valid for candidates.
    fast_predicate: Predicate | None = None
    # A stateful rule's checked `correlation:` block (rules/correlation.py): its matches feed
    # windows (rules/stateful.py) instead of alerting.
    correlation: Any = None
    # For `test-rule --explain`: the condition before its macros were expanded (MacroRef nodes
    # kept) and the macros of the load, so the explanation can name each macro.
    written_condition: Node | None = None
    macros: Mapping[str, Node] = field(default_factory=dict)

    def match(self, event: AuditEvent) -> Match:
        text, fields = self.output.render(event)
        return Match(self.name, self.priority, self.tags, SOURCE, text, fields, event)
