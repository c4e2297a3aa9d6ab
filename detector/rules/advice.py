"""Help for rule authors beyond the error itself: a list used where one value goes, where a
macro the loaded files lack is defined in the shipped rules, and near names for unknown fields."""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator, Mapping
from functools import cache
from importlib.resources import files
from pathlib import Path

from detector.errors import Location
from detector.parse.fields import FIELDS
from detector.rules.ast import And, Check, Node, Not, Or, check_text, field_text
from detector.rules.diagnostics import Diagnostic, did_you_mean
from detector.rules.reader import read_items

LIST_OPS = ("in", "intersects", "pmatch")
_MODIFIABLE = ("contains", "icontains", "startswith", "endswith", "glob", "iglob", "regex")
_UNKNOWN_FIELD = re.compile(r"unknown field (?:in )?'%?([^']+)'")


def shipped_rules_dir() -> Path:
    """The rules bundled with the package (the repo's top-level rules/)."""
    return Path(str(files("detector.shipped_rules")))


def checks(node: Node) -> Iterator[Check]:
    """Every check of a tree (macros not expanded)."""
    match node:
        case And(items) | Or(items):
            for item in items:
                yield from checks(item)
        case Not(item):
            yield from checks(item)
        case Check():
            yield node
        case _:
            return


def list_misuses(node: Node, lists: Mapping[str, list[str]]) -> Iterator[tuple[Check, str, str]]:
    """(check, list name, advice) for each check whose one value is a list's name: Falco
    replaces the name by the items as text, which for `=` works with one item only."""
    for check in checks(node):
        if isinstance(check.rhs, str) and check.rhs in lists and check.op not in LIST_OPS:
            yield check, check.rhs, _list_advice(check, check.rhs)


def _list_advice(check: Check, name: str) -> str:
    lhs = field_text(check.lhs)
    if check.op in ("=", "=="):
        return f"write '{lhs} in ({name})'"
    if check.op == "!=":
        return f"write 'not {lhs} in ({name})'"
    if check.op in _MODIFIABLE and check.modifier is None:
        return f"write '{lhs} {check.op} oneof ({name})'"
    return f"a list goes in parentheses after in, intersects or pmatch: '{lhs} in ({name})'"


def list_misuse_message(check: Check, name: str, items: list[str], advice: str) -> str:
    written = check_text(check)
    if len(items) == 1:
        return (f"list '{name}' is the value of '{check.op}' in '{written}': it is replaced by its one item, so "
                f"this compares with {items[0]!r} only, and stops parsing once the list has two items; {advice}")
    return f"list '{name}' ({len(items)} items) cannot be the value of '{check.op}' in '{written}'; {advice}"


def field_hint(message: str) -> str:
    """`; did you mean ...?` for an `unknown field 'x'` message (of a condition or an output)."""
    found = _UNKNOWN_FIELD.search(message)
    return did_you_mean(found.group(1), FIELDS) if found else ""


def shipped_macro_home(name: str, loaded: Iterable[Path]) -> Location | None:
    """Where the shipped rules define macro `name`, when those files were not loaded."""
    done = {_resolved(p) for p in loaded}
    for path, macros in _shipped_macros().items():
        if _resolved(path) not in done and name in macros:
            return macros[name]
    return None


@cache
def _shipped_macros() -> dict[Path, dict[str, Location]]:
    found: dict[Path, dict[str, Location]] = {}
    directory = shipped_rules_dir()
    if not directory.is_dir():
        return found
    for path in sorted(directory.glob("*.yaml")):
        if path.name.endswith(".tests.yaml"):
            continue
        ignored: list[Diagnostic] = []
        found[path] = {item.name: item.where() for item in read_items(path, ignored)
                       if item.kind == "macro" and item.name}
    return found


def _resolved(path: Path) -> Path:
    try:
        return path.resolve()
    except OSError:
        return path
