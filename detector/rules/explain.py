"""Why a rule did or did not match an event: the expanded condition with every clause's
truth value and the field values it looked at."""

from __future__ import annotations

from detector.event import AuditEvent
from detector.parse.fieldspec import FieldOptions
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or, Transform, check_text, field_text, to_text
from detector.rules.compiler import CompileError, Compiler
from detector.rules.output import format_value


def explain(node: Node, event: AuditEvent, options: FieldOptions | None = None) -> list[str]:
    """Lines of an indented tree: `[true]`/`[false]` then the clause and the values seen."""
    compiler = Compiler(options or FieldOptions())
    lines: list[str] = []
    _walk(node, event, compiler, 0, lines)
    return lines


def _walk(node: Node, event: AuditEvent, compiler: Compiler, depth: int, lines: list[str]) -> bool:
    pad = "  " * depth
    match node:
        case And(items) | Or(items):
            header = len(lines)
            lines.append("")
            results = [_walk(item, event, compiler, depth + 1, lines) for item in items]
            value = all(results) if isinstance(node, And) else any(results)
            lines[header] = f"{pad}[{_word(value)}] {'and' if isinstance(node, And) else 'or'}"
            return value
        case Not(item):
            header = len(lines)
            lines.append("")
            value = not _walk(item, event, compiler, depth + 1, lines)
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
