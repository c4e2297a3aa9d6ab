"""The condition syntax tree: what a parsed Falco condition is made of.

Nodes are frozen values; `pos` (0-based offset in the condition text) is for messages only
and takes no part in equality.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field


@dataclass(frozen=True, slots=True)
class FieldRef:
    """`name` or `name[arg]`."""

    name: str
    arg: str | None = None
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class Transform:
    """`tolower(x)`, `len(x)`, ... (or `val(x)` on a right-hand side)."""

    func: str
    args: tuple[FieldExpr | str, ...]
    pos: int = field(default=0, compare=False)


FieldExpr = FieldRef | Transform


@dataclass(frozen=True, slots=True)
class Check:
    """`lhs op rhs`; rhs is None for `exists`, a str, a tuple for list values, or a field."""

    lhs: FieldExpr
    op: str
    rhs: str | tuple[str, ...] | FieldExpr | None = None
    modifier: str | None = None  # oneof / anyof / allof
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class MacroRef:
    """A bare identifier: a macro to be expanded before compilation."""

    name: str
    pos: int = field(default=0, compare=False)


@dataclass(frozen=True, slots=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True, slots=True)
class Not:
    item: Node


Node = And | Or | Not | Check | MacroRef


# What the parser reads as a bare value / a bare field argument (grammar.md §1, POSIX [:space:]);
# a backspace is also excluded from values because the lexer skips it as a blank before a value.
_BARE_VALUE = re.compile(r"[^()\"'\s=,\b]+", re.ASCII)
_BARE_ARG = re.compile(r"[^\]\[\"'\s]+", re.ASCII)
_MODIFIER_WORDS = ("oneof", "anyof", "allof")  # bare, these would be read as operator modifiers


def quote(value: str) -> str:
    """A string value as it can be written back into a condition."""
    if _BARE_VALUE.fullmatch(value) and value not in _MODIFIER_WORDS:
        return value
    return _quoted(value)


def _quoted(value: str) -> str:
    body = value.replace("\\", "\\\\").replace('"', '\\"')
    if body.endswith("\\"):
        # A quote right after a backslash does not close the string (grammar.md §2.1), so a
        # trailing backslash is written as `\ `, which unescapes to a backslash too.
        body = body[:-2] + "\\ "
    return f'"{body}"'


def field_text(expr: FieldExpr | str) -> str:
    """A field expression written as in a condition."""
    if isinstance(expr, str):
        return quote(expr)
    if isinstance(expr, FieldRef):
        if expr.arg is None:
            return expr.name
        return f"{expr.name}[{expr.arg if _BARE_ARG.fullmatch(expr.arg) else _quoted(expr.arg)}]"
    return f"{expr.func}({', '.join(field_text(a) for a in expr.args)})"


def to_text(node: Node) -> str:
    """A node written back as condition text (fully parenthesised where it matters)."""
    match node:
        case And(items):
            return " and ".join(_grouped(item) for item in items)
        case Or(items):
            return " or ".join(_grouped(item) for item in items)
        case Not(item):
            return f"not {_grouped(item)}"
        case MacroRef(name):
            return name
        case Check():
            return check_text(node)
        case _:
            raise TypeError(f"unknown condition node {node!r}")


def check_text(check: Check) -> str:
    """One comparison written back as condition text."""
    lhs = field_text(check.lhs)
    if check.rhs is None:
        return f"{lhs} {check.op}"
    op = check.op if check.modifier is None else f"{check.op} {check.modifier}"
    if isinstance(check.rhs, tuple):
        return f"{lhs} {op} ({', '.join(quote(v) for v in check.rhs)})"
    if isinstance(check.rhs, str):
        return f"{lhs} {op} {quote(check.rhs)}"
    rhs = field_text(check.rhs)
    return f"{lhs} {op} {rhs if isinstance(check.rhs, Transform) else f'val({rhs})'}"


def _grouped(node: Node) -> str:
    return f"({to_text(node)})" if isinstance(node, And | Or) else to_text(node)
