"""Why a rule did or did not match an event: the condition with every clause's truth value and
the field values it looked at, each macro shown by name above the clauses it stands for."""

from __future__ import annotations

from collections.abc import Mapping

from detector.event import AuditEvent
from detector.parse.fieldspec import FieldOptions
from detector.rules.ast import (
    And,
    Check,
    FieldRef,
    MacroRef,
    Node,
    Not,
    Or,
    Transform,
    check_text,
    field_text,
    to_text,
)
from detector.rules.compiler import CompileError, Compiler
from detector.rules.output import format_value


def explain(node: Node, event: AuditEvent, options: FieldOptions | None = None,
            macros: Mapping[str, Node] | None = None) -> list[str]:
    """Lines of an indented tree: `[true]`/`[false]` then the clause and the values seen. With
    `macros`, `node` may refer to them: each shows as `macro NAME` above its own clauses."""
    walker = _Walker(Compiler(options or FieldOptions()), macros or {}, event)
    walker.walk(node, 0)
    return walker.lines


class _Walker:
    def __init__(self, compiler: Compiler, macros: Mapping[str, Node], event: AuditEvent) -> None:
        self.compiler, self.macros, self.event = compiler, macros, event
        self.lines: list[str] = []

    def walk(self, node: Node, depth: int) -> bool:
        return _walk(node, self, depth)


def _walk(node: Node, walker: _Walker, depth: int) -> bool:
    pad, lines, event, compiler = "  " * depth, walker.lines, walker.event, walker.compiler
    match node:
        case MacroRef(name) if name in walker.macros:
            header = len(lines)
            lines.append("")
            value = walker.walk(walker.macros[name], depth + 1)
            lines[header] = f"{pad}[{_word(value)}] macro {name}"
            return value
        case And(items) | Or(items):
            header = len(lines)
            lines.append("")
            results = [walker.walk(item, depth + 1) for item in items]
            value = all(results) if isinstance(node, And) else any(results)
            lines[header] = f"{pad}[{_word(value)}] {'and' if isinstance(node, And) else 'or'}"
            return value
        case Not(item):
            header = len(lines)
            lines.append("")
            value = not walker.walk(item, depth + 1)
            lines[header] = f"{pad}[{_word(value)}] not"
            return value
        case Check():
            return _check(node, event, compiler, pad, lines)
        case _:
            lines.append(f"{pad}[?] {to_text(node)}")
            return False


def _check(check: Check, event: AuditEvent, compiler: Compiler, pad: str, lines: list[str]) -> bool:
    try:
        value = bool(compiler.check(check)(event))
        seen = [f"{_field(check.lhs)}={format_value(compiler.bind(check.lhs).get(event))}"]
        if isinstance(check.rhs, FieldRef | Transform):
            inner = check.rhs.args[0] if isinstance(check.rhs, Transform) and check.rhs.func == "val" else check.rhs
            if not isinstance(inner, str):
                seen.append(f"{_field(inner)}={format_value(compiler.bind(inner).get(event))}")
    except CompileError as exc:
        lines.append(f"{pad}[error] {check_text(check)}  ({exc.message})")
        return False
    lines.append(f"{pad}[{_word(value)}] {check_text(check)}    <- {', '.join(seen)}")
    return value


def _field(expr: FieldRef | Transform) -> str:
    return field_text(expr)


def _word(value: bool) -> str:
    return "true " if value else "false"
