"""Stable codes for every problem a rules file can have, and the diagnostic value itself."""

from __future__ import annotations

import difflib
import enum
from collections.abc import Iterable
from dataclasses import dataclass

from detector.errors import Location


class Severity(enum.Enum):
    ERROR = "error"
    WARNING = "warning"


class Code(enum.Enum):
    """Each member: (stable code, severity, one-line summary)."""

    YAML_INVALID = ("E001", Severity.ERROR, "the file is not valid YAML")
    NOT_A_SEQUENCE = ("E002", Severity.ERROR, "a rules document must be a sequence of items")
    ITEM_NOT_MAPPING = ("E003", Severity.ERROR, "each item must be a mapping")
    MISSING_KEY = ("E004", Severity.ERROR, "a required key is missing or empty")
    BAD_VALUE = ("E005", Severity.ERROR, "a key has a value of the wrong type")
    INVALID_PRIORITY = ("E006", Severity.ERROR, "priority is not one of Falco's priorities")
    ENGINE_VERSION = ("E007", Severity.ERROR, "required_engine_version is invalid or too new")
    PLUGIN_VERSIONS = ("E008", Severity.ERROR, "required_plugin_versions is malformed")
    CONDITION_SYNTAX = ("E010", Severity.ERROR, "the condition does not parse")
    UNDEFINED_MACRO = ("E011", Severity.ERROR, "the condition uses a macro that is not defined")
    MACRO_LOOP = ("E012", Severity.ERROR, "macros refer to each other in a loop")
    UNKNOWN_FIELD = ("E013", Severity.ERROR, "the field does not exist")
    BAD_OPERATOR = ("E014", Severity.ERROR, "the operator cannot be used with this field")
    BAD_FIELD_ARG = ("E015", Severity.ERROR, "the field argument is missing, unexpected or invalid")
    BAD_OPERAND = ("E016", Severity.ERROR, "a value cannot be used with the operator (regex, address...)")
    BAD_OUTPUT = ("E017", Severity.ERROR, "the output template is invalid")
    NO_TARGET = ("E020", Severity.ERROR, "append/override/enabled names an item that does not exist")
    BAD_OVERRIDE = ("E021", Severity.ERROR, "the override/append item is invalid")
    BAD_EXCEPTION = ("E022", Severity.ERROR, "an exception is invalid")
    SOURCE_CHANGED = ("E023", Severity.ERROR, "a rule was redefined with a different source")
    UNREADABLE = ("E024", Severity.ERROR, "the rules file cannot be read")
    NO_RULES_FILES = ("E025", Severity.ERROR, "no rules file was found")
    TOO_LARGE = ("E026", Severity.ERROR, "a file, its aliases or a condition exceed a size bound")
    BAD_CORRELATION = ("E027", Severity.ERROR, "a rule's correlation block (stateful detection) is invalid")
    UNKNOWN_KEY = ("W101", Severity.WARNING, "an unknown key is ignored")
    UNKNOWN_ITEM = ("W102", Severity.WARNING, "an unknown top-level item is ignored")
    OTHER_SOURCE = ("W103", Severity.WARNING, "rules for another event source are skipped")
    DEPRECATED = ("W104", Severity.WARNING, "a deprecated construct is used")
    UNUSED = ("W105", Severity.WARNING, "a macro or list is never used")
    INVALID_NAME = ("W106", Severity.WARNING, "a list or macro name cannot be referenced")
    NA_CHECK = ("W107", Severity.WARNING, "comparing a field to <NA> never matches")
    DUPLICATE_EXCEPTION = ("W108", Severity.WARNING, "an exception is defined twice")
    EMPTY_EXCEPTION = ("W109", Severity.WARNING, "an exception has no values")
    PLUGIN_UNKNOWN = ("W110", Severity.WARNING, "a required plugin is not emulated by detector")
    FIELD_AS_VALUE = ("W111", Severity.WARNING, "a value looks like a field but is compared as a string")
    LIST_AS_VALUE = ("W112", Severity.WARNING, "a list name is the value of an operator that takes one value")

    @property
    def code(self) -> str:
        return self.value[0]

    @property
    def severity(self) -> Severity:
        return self.value[1]

    @property
    def summary(self) -> str:
        return self.value[2]


@dataclass(frozen=True, slots=True)
class Diagnostic:
    """One problem, where it is, and what it is."""

    code: Code
    message: str
    location: Location

    @property
    def is_error(self) -> bool:
        return self.code.severity is Severity.ERROR

    def __str__(self) -> str:
        return f"{self.location}: {self.code.severity.value} {self.code.code}: {self.message}"


def suggestions(name: str, candidates: Iterable[str], limit: int = 3) -> list[str]:
    """The candidates closest to `name` (a misspelling, or the same name in another case)."""
    pool = sorted(set(candidates))
    same_case = [c for c in pool if c.lower() == name.lower() and c != name]
    by_lower: dict[str, str] = {}
    for candidate in pool:
        by_lower.setdefault(candidate.lower(), candidate)
    close = difflib.get_close_matches(name.lower(), list(by_lower), n=limit, cutoff=0.8)
    found = same_case + [by_lower[c] for c in close if by_lower[c] not in same_case and by_lower[c] != name]
    return found[:limit]


def did_you_mean(name: str, candidates: Iterable[str]) -> str:
    """`; did you mean 'x'?` (or 'x' or 'y'), or "" when nothing is close."""
    found = suggestions(name, candidates)
    if not found:
        return ""
    return "; did you mean " + " or ".join(f"'{c}'" for c in found) + "?"
