"""Falco's pre-compilation text work: lists inside lists, list names substituted into
condition text, exceptions turned into condition text, and macro expansion on the tree."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from detector.errors import ConditionSyntaxError
from detector.rules.ast import And, Check, MacroRef, Node, Not, Or
from detector.rules.collector import LIST_COMPS, is_modifier_op
from detector.rules.condition import TooLarge
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


# Bounds on what lists and macros make of a condition: Falco's textual list substitution and
# macro inlining are exponential in the worst case (lists naming later lists, macros using a
# macro twice, 30 deep), so a few hundred bytes could ask for 10^9 nodes.
MAX_CONDITION_CHARS = 1 << 20  # one condition's text, lists substituted
_SUBSTITUTION_WORK = 64 << 20  # characters scanned substituting one condition's lists


def substitute_lists(condition: str, lists: Mapping[str, list[str]], used: set[str] | None = None,
                     limit: int = MAX_CONDITION_CHARS) -> str:
    """Falco's resolve_list, for every list in definition order: textual replacement of each
    delimited occurrence of a list name by its quoted items. Raises TooLarge past `limit`
    characters (or when the lists ask for too much scanning)."""
    words = set(_split_words(condition))  # every delimited word the text may hold (a superset)
    work = 0
    for name, items in lists.items():
        if name in words or (_split_words(name) != [name] and name in condition):
            work += len(condition)
            if work > _SUBSTITUTION_WORK:
                raise TooLarge(f"its lists ask for too much substitution (past {_SUBSTITUTION_WORK:,} characters "
                               "scanned)")
            sub = ", ".join(quote_item(item) for item in items)
            condition = _substitute_one(condition, name, sub, used, limit)
            words.update(_split_words(sub))
    return condition


def _split_words(text: str) -> list[str]:
    return text.translate(_TO_BLANK).split()


_TO_BLANK = str.maketrans(dict.fromkeys(_DELIMS, " "))


def _substitute_one(text: str, name: str, sub: str, used: set[str] | None, limit: int) -> str:
    """One list, in time linear in the text: `out` holds the result up to `pos` in `text`."""
    out: list[str] = []
    size = pos = 0
    start = text.find(name)
    while start != -1:
        end = start + len(name)
        before = text[start - 1] if start > pos else out[-1][-1] if out else None
        if (before is None or before in _DELIMS) and (end >= len(text) or text[end] in _DELIMS):
            if start > pos:
                out.append(text[pos:start])
            _strip_tail(out, _BLANKS)
            while end < len(text) and text[end] in _BLANKS:
                end += 1
            if not sub:
                if out and out[-1].endswith(","):
                    _strip_tail(out, ",", once=True)
                elif end < len(text) and text[end] == ",":
                    end += 1
            pieces = [" "] if out else []
            out += [*pieces, sub, " "] if sub else [*pieces, " "]
            size += len(sub) + 2 + start - pos
            pos = end
            if size + len(text) - pos > limit:
                raise TooLarge(f"list '{name}' makes it longer than {limit:,} characters")
            if used is not None:
                used.add(name)
            start = text.find(name, pos)
        else:
            start = text.find(name, start + 1)
    if not out:
        return text
    out.append(text[pos:])
    return "".join(out)


def _strip_tail(out: list[str], chars: str, once: bool = False) -> None:
    """Remove trailing `chars` (or one of them) from the text `out` holds."""
    while out:
        last = out[-1][:-1] if once else out[-1].rstrip(chars)
        if last:
            out[-1] = last
            return
        out.pop()
        if once:
            return


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


Size = tuple[int, int, int]  # nodes (checks, and/or/not), listed values, depth


def measure_macros(macros: Mapping[str, Node]) -> dict[str, Size]:
    """The expanded size and depth of every macro, without expanding any: each is measured once,
    after the macros it uses (a macro in a reference loop is left out; expansion reports it)."""
    uses = {name: macro_names(node) & macros.keys() for name, node in macros.items()}
    users: dict[str, list[str]] = {name: [] for name in macros}
    for name, used in uses.items():
        for other in used:
            users[other].append(name)
    waiting = {name: len(used) for name, used in uses.items()}
    ready = [name for name, count in waiting.items() if count == 0]
    sizes: dict[str, Size] = {}
    while ready:
        name = ready.pop()
        sizes[name] = measure(macros[name], sizes)
        for user in users[name]:
            waiting[user] -= 1
            if waiting[user] == 0:
                ready.append(user)
    return sizes


def measure(node: Node, macro_sizes: Mapping[str, Size]) -> Size:
    """What `node` will be once its macros are expanded: nodes, listed values, depth."""
    match node:
        case MacroRef(name):
            return macro_sizes.get(name, (1, 0, 1))
        case And(items) | Or(items):
            measured = [measure(item, macro_sizes) for item in items]
            return (1 + sum(nodes for nodes, _, _ in measured), sum(values for _, values, _ in measured),
                    1 + max((depth for _, _, depth in measured), default=0))
        case Not(item):
            nodes, values, depth = measure(item, macro_sizes)
            return nodes + 1, values, depth + 1
        case Check(_, _, rhs):
            return 1, len(rhs) if isinstance(rhs, tuple) else 0, 1
        case _:
            raise TypeError(f"unknown condition node {node!r}")
