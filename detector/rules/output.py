"""Output templates: `%field`, `%field[arg]`, `%tolower(field)`, optional `%<width>`.

Like Falco, the token is the longest prefix after `%` that names a known field, so
`%ka.target.name/%ka.target.resource` and `(user=%ka.user.name)` work. Missing values print
`<NA>`; list values print `(a,b)` capped at 1023 bytes. Templates only ever look values up
in the field table: they cannot run code or reach Python attributes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from detector.errors import ConditionSyntaxError
from detector.event import AuditEvent
from detector.parse.extract import Value
from detector.parse.fields import FIELDS
from detector.rules.ast import FieldExpr, FieldRef
from detector.rules.compiler import BoundField, CompileError, Compiler
from detector.rules.condition import parse_field_expr
from detector.rules.diagnostics import Code
from detector.rules.model import FieldValue, OutputRenderer

NA = "<NA>"
_LIST_LIMIT = 1023
_NAME = re.compile(r"[a-zA-Z][a-zA-Z0-9_.]*")
_TRANSFORMER = re.compile(r"(tolower|toupper|b64|basename|len)\(")
_WIDTH = re.compile(r"\d+")


@dataclass(frozen=True, slots=True)
class _Token:
    text: str
    field: BoundField
    width: int | None


class OutputTemplate(OutputRenderer):
    """A compiled template: literal pieces and field tokens."""

    def __init__(self, text: str, parts: list[str | _Token]) -> None:
        self.text = text
        self._parts = parts
        self._tokens = [p for p in parts if isinstance(p, _Token)]

    def render(self, event: AuditEvent) -> tuple[str, dict[str, FieldValue]]:
        out: list[str] = []
        fields: dict[str, FieldValue] = {}
        for part in self._parts:
            if isinstance(part, str):
                out.append(part)
                continue
            value = part.field.get(event)
            fields[part.text] = list(value) if isinstance(value, tuple) else value
            shown = format_value(value)
            if part.width is not None:
                shown = shown[: part.width].ljust(part.width)
            out.append(shown)
        return "".join(out), fields

    @property
    def field_names(self) -> list[str]:
        return [t.text for t in self._tokens]


def format_value(value: Value) -> str:
    """A value as Falco prints it."""
    if value is None:
        return NA
    if isinstance(value, tuple):
        joined = "(" + ",".join(value) + ")"
        return joined if len(joined.encode()) <= _LIST_LIMIT else joined.encode()[:_LIST_LIMIT].decode(errors="ignore")
    return value


def compile_output(text: str, compiler: Compiler) -> OutputTemplate:
    """Compile a template; raises CompileError (code BAD_OUTPUT) naming the bad token."""
    parts: list[str | _Token] = []
    literal: list[str] = []
    pos = 0
    while pos < len(text):
        char = text[pos]
        if char != "%":
            literal.append(char)
            pos += 1
            continue
        token, pos = _token(text, pos + 1, compiler)
        if literal:
            parts.append("".join(literal))
            literal = []
        parts.append(token)
    if literal:
        parts.append("".join(literal))
    return OutputTemplate(text, parts)


def _token(text: str, pos: int, compiler: Compiler) -> tuple[_Token, int]:
    width = None
    found = _WIDTH.match(text, pos)
    if found:
        width, pos = int(found.group(0)), found.end()
    expr, end = _field_at(text, pos)
    try:
        bound = compiler.bind(expr)
    except CompileError as exc:
        raise CompileError(exc.code, f"invalid output token at column {pos}: {exc.message}", pos) from None
    return _Token(text[pos:end], bound, width), end


def _field_at(text: str, pos: int) -> tuple[FieldExpr, int]:
    if _TRANSFORMER.match(text, pos):
        depth, end = 0, pos
        while end < len(text):
            depth += {"(": 1, ")": -1}.get(text[end], 0)
            end += 1
            if depth == 0 and text[end - 1] == ")":
                break
        try:
            expr = parse_field_expr(text[pos:end])
        except ConditionSyntaxError as exc:
            raise _bad(pos, exc.message) from None
        return expr, end
    found = _NAME.match(text, pos)
    if found is None:
        raise _bad(pos, "'%' must be followed by a field name")
    name = found.group(0)
    while name and name not in FIELDS:
        name = name[:-1]
    if not name:
        raise _bad(pos, f"unknown field in '%{found.group(0)}'")
    end = pos + len(name)
    if text.startswith("[", end):
        close = _argument_end(text, end + 1)
        if close == -1:
            raise _bad(end, "unterminated field argument")
        arg = text[end + 1 : close]
        if len(arg) >= 2 and arg[0] == arg[-1] and arg[0] in "\"'":
            arg = arg[1:-1]
        return FieldRef(name, arg, pos=pos), close + 1
    return FieldRef(name, None, pos=pos), end


def _argument_end(text: str, start: int) -> int:
    """Index of the `]` closing a field argument; a quoted argument may contain `]`."""
    if start < len(text) and text[start] in "\"'":
        quote_end = text.find(text[start], start + 1)
        return -1 if quote_end == -1 else text.find("]", quote_end)
    return text.find("]", start)


def _bad(pos: int, message: str) -> CompileError:
    return CompileError(Code.BAD_OUTPUT, f"invalid output token at column {pos}: {message}", pos)


