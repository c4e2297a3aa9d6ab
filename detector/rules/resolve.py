"""Falco's pre-compilation text work: lists inside lists, list names substituted into
condition text, exceptions turned into condition text, and macro expansion on the tree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from detector.errors import ConditionSyntaxError
from detector.rules.ast import And, Check, MacroRef, Node, Not, Or
from detector.rules.collector import LIST_COMPS, is_modifier_op
from detector.rules.model import ExceptionInfo, ListInfo

_BLANKS = " \t\n\r"
_DELIMS = _BLANKS + "(),="


def expand_lists(lists: Mapping[str, ListInfo]) -> dict[str, list[str]]:
    """Final items of every list: an item naming an earlier-visible list becomes that list's raw
    items (one level only, as Falco's compile_list_infos)."""
    expanded: dict[str, list[str]] = {}
    for info in lists.values():
        items: list[str] = []
        for item in info.items:
            other = lists.get(item)
            if other is not None and other.index < info.visibility:
                items.extend(other.items)
            else:
                items.append(item)
        expanded[info.name] = items
    return expanded


def quote_item(item: str) -> str:
    """Falco's quote_item: items with a space get double quotes, nothing else is escaped."""
    if " " in item and not item.startswith(('"', "'")):
        return f'"{item}"'
    return item


def substitute_lists(condition: str, lists: Mapping[str, list[str]], used: set[str] | None = None) -> str:
    """Falco's resolve_list, for every list in definition order: textual replacement of each
    delimited occurrence of a list name by its quoted items."""
    for name, items in lists.items():
        if name in condition:
            condition = _substitute_one(condition, name, items, used)
    return condition


def _substitute_one(text: str, name: str, items: list[str], used: set[str] | None) -> str:
    start = text.find(name)
    while start != -1:
        end = start + len(name)
        if (start == 0 or text[start - 1] in _DELIMS) and (end >= len(text) or text[end] in _DELIMS):
            while start > 0 and text[start - 1] in _BLANKS:
                start -= 1
            while end < len(text) and text[end] in _BLANKS:
                end += 1
            sub = ", ".join(quote_item(item) for item in items)
            if not sub:
                if start > 0 and text[start - 1] == ",":
                    start -= 1
                elif end < len(text) and text[end] == ",":
                    end += 1
            prefix = text[:start] + " " if start > 0 else ""
            text = prefix + sub + " " + text[end:]
            start = len(prefix) + len(sub)
            if used is not None:
                used.add(name)
        start = text.find(name, start + 1)
    return text


def exception_condition(exceptions: Iterable[ExceptionInfo]) -> str:
    """The text Falco appends for a rule's exceptions (build_rule_exception_infos)."""
    text = ""
    for info in exceptions:
        clause = _exception_clause(info)
        if clause:
            text += " and not " + clause
    return text


def _exception_clause(info: ExceptionInfo) -> str:
    if isinstance(info.fields, str):
        comp = str(info.comps or "in").strip()
        for value in info.values:
            if isinstance(value, list | dict):
                raise ConditionSyntaxError(f"exception {info.name!r}: expected values array to contain a list "
                                           "of strings")
        if not info.values:
            return ""
        values = ", ".join(quote_item(str(v)) for v in info.values)
        return f"({info.fields} {comp} ({values}))"
    fields = list(info.fields or [])
    comps = [str(c).strip() for c in (info.comps or [])]
    tuples = []
    for value in info.values:
        if not isinstance(value, list) or len(value) != len(fields):
            raise ConditionSyntaxError(f"exception {info.name!r}: fields and values lists must have equal length")
        parts = [f" {f} {c} {_exception_value(v, c)}" for f, c, v in zip(fields, comps, value, strict=True)]
        tuples.append("(" + " and ".join(parts) + ")")
    return "(" + " or ".join(tuples) + ")" if tuples else ""


def _exception_value(value: Any, comp: str) -> str:
    if isinstance(value, list):
        return "(" + ", ".join(quote_item(str(v)) for v in value) + ")"
    text = "" if value is None else str(value)
    if comp in LIST_COMPS or is_modifier_op(comp):
        return text if text.startswith("(") else f"({text})"
    return quote_item(text)


class MacroError(Exception):
    """A macro reference that cannot be resolved; `loop` tells a cycle from an unknown name."""

    def __init__(self, name: str, loop: bool) -> None:
        super().__init__(name)
        self.name = name
        self.loop = loop


def expand_macros(node: Node, macros: Mapping[str, Node], visible: Mapping[str, Any] | None = None,
                  stack: tuple[str, ...] = ()) -> Node:
    """Replace every MacroRef by the (recursively expanded) macro tree."""
    match node:
        case MacroRef(name):
            if name in stack:
                raise MacroError(name, loop=True)
            if name not in macros or (visible is not None and name not in visible):
                raise MacroError(name, loop=False)
            return expand_macros(macros[name], macros, None, (*stack, name))
        case And(items):
            return And(tuple(expand_macros(i, macros, visible, stack) for i in items))
        case Or(items):
            return Or(tuple(expand_macros(i, macros, visible, stack) for i in items))
        case Not(item):
            return Not(expand_macros(item, macros, visible, stack))
        case Check():
            return node
        case _:
            raise TypeError(f"unknown condition node {node!r}")


def macro_names(node: Node) -> set[str]:
    """Names of the macros a tree refers to directly."""
    match node:
        case MacroRef(name):
            return {name}
        case And(items) | Or(items):
            return set().union(*(macro_names(i) for i in items))
        case Not(item):
            return macro_names(item)
        case _:
            return set()
