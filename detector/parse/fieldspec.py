"""The contract of a field: name, type, list-ness, argument, and an extractor factory."""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass
from operator import attrgetter
from typing import Any

from detector.event import AuditEvent
from detector.parse.extract import Value

Extractor = Callable[[AuditEvent], Value]


class FieldType(enum.Enum):
    """How comparison operators treat a field's values."""

    STRING = "string"
    IPADDR = "ipaddr"  # `=`/`in` against CIDR networks test membership


class ArgKind(enum.Enum):
    """What may stand in `field[arg]`."""

    NONE = "none"
    KEY = "key (required)"
    INDEX = "index (optional)"


@dataclass(frozen=True, slots=True)
class FieldOptions:
    """Settings that shape extraction, fixed when rules are compiled."""

    trusted_proxies: int = 0


@dataclass(frozen=True, slots=True)
class FieldSpec:
    """One field: its contract and a factory of extractors for a given argument."""

    name: str
    desc: str
    build: Callable[[Any, FieldOptions], Extractor]
    is_list: bool = False
    arg: ArgKind = ArgKind.NONE
    type: FieldType = FieldType.STRING
    index_key: str | None = None  # the cheap key rules can be bucketed on
    cheap: bool = False  # reads only the eagerly decoded hot fields: no cache, evaluated first


# Extractors that are plain attribute paths of AuditEvent; the compiler may inline them.
_ATTRIBUTE_PATHS: dict[Any, str] = {}


def attribute(path: str) -> Extractor:
    """An extractor reading `event.<path>` (a C-level attrgetter the compiler can inline)."""
    getter: Extractor = attrgetter(path)
    _ATTRIBUTE_PATHS[getter] = path
    return getter


# Extractors whose `exists` has a cheaper test than computing the value (see `presence_of`).
_PRESENCE: dict[Any, Extractor] = {}


def with_presence(extractor: Extractor, presence: Extractor) -> Extractor:
    """Declare that `presence(ev) is not None` exactly when `extractor(ev) is not None`."""
    _PRESENCE[extractor] = presence
    return extractor


def presence_of(extractor: Extractor) -> Extractor | None:
    """The cheaper existence test of `extractor`, if one was declared."""
    return _PRESENCE.get(extractor)


def attribute_path(extractor: Extractor) -> str | None:
    """The attribute path of an extractor made by `attribute`, else None."""
    return _ATTRIBUTE_PATHS.get(extractor) if isinstance(extractor, attrgetter) else None


def const(fn: Extractor) -> Callable[[Any, FieldOptions], Extractor]:
    """A factory for a field that takes no argument."""
    return lambda _arg, _opts: fn
