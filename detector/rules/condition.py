"""Parser for Falco's condition language (libsinsp filter grammar, libs 0.25).

Follows the grammar in ../shared/falco/grammar.md: keywords are lower-case, word operators
need a blank after them, `=`-family operators do not, list operators are matched by prefix,
bare strings stop at blanks, parentheses, quotes, `=` and `,`.
"""

from __future__ import annotations

import re

from detector.errors import ConditionSyntaxError
from detector.rules.ast import And, Check, FieldExpr, FieldRef, MacroRef, Node, Not, Or, Transform

_BLANKS = " \t\b\r\n"
_FIELD_NAME = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*(?:\.[a-zA-Z]+[a-zA-Z0-9_]*)+")
_IDENTIFIER = re.compile(r"[a-zA-Z]+[a-zA-Z0-9_]*")
# re.ASCII: the grammar's [:space:] is ASCII whitespace only (a no-break space is part of a value).
_FIELD_ARG_BARE = re.compile(r"[^\]\[\"'\s]+", re.ASCII)
_BARE_STR = re.compile(r"[^()\"'\s=,]+", re.ASCII)
_NUMBER = re.compile(r"0[xX][0-9a-fA-F]+|[+\-]?[0-9]+\.?[0-9]*(?:[eE][+\-][0-9]+)?")
_TRANSFORMER = re.compile(r"(tolower|toupper|b64|basename|len|join|concat|getopt)\(")
_VAL = re.compile(r"val\(")
_NOT = re.compile(r"not(?:[ \t\b\r\n]+|(?=\())")

UNARY_OPS = ("exists",)
NUM_OPS = ("<=", "<", ">=", ">")
SYMBOL_STR_OPS = ("==", "=", "!=")
WORD_STR_OPS = ("glob", "iglob", "contains", "icontains", "bcontains", "startswith", "bstartswith",
                "endswith", "regex")
LIST_OPS = ("intersects", "in", "pmatch")
MODIFIERS = ("oneof", "anyof", "allof")
ALL_OPS = (*UNARY_OPS, *NUM_OPS, *SYMBOL_STR_OPS, *WORD_STR_OPS, *LIST_OPS)

# Operands (checks, groups, macro names) in one condition text: parsing and compiling cost
# ~90 us each, so this keeps one condition under two seconds.
MAX_OPERANDS = 20_000


class TooLarge(Exception):
    """A condition past a size bound, as written or once its lists or macros are expanded."""


_ESCAPES = {"b": "\b", "f": "\f", "n": "\n", "r": "\r", "t": "\t", "\\": "\\", "/": "/", " ": "\\"}


def parse_condition(text: str) -> Node:
    """Parse a whole condition; raises ConditionSyntaxError with a 1-based column."""
    parser = _Parser(text)
    try:
        return parser.parse()
    except RecursionError:
        # Python's stack runs out before Falco's depth limit of 1000 groups.
        raise ConditionSyntaxError("condition nested too deeply", column=parser.pos + 1) from None


def parse_field_expr(text: str) -> FieldExpr:
    """Parse a lone field or transformer expression (exception `fields` entries)."""
    parser = _Parser(text)
    expr = parser.field_expr()
    parser.skip_blanks()
    if parser.pos != len(text):
        parser.fail(f"unexpected text after field '{text[: parser.pos]}'")
    return expr


class _Parser:
    def __init__(self, text: str) -> None:
        self.text = text
        self.pos = 0
        self.depth = 0
        self.operands = 0

    # -- plumbing -------------------------------------------------------------------------
    def fail(self, message: str) -> None:
        raise ConditionSyntaxError(message, column=self.pos + 1)

    def skip_blanks(self) -> None:
        text, pos = self.text, self.pos
        while pos < len(text) and text[pos] in _BLANKS:
            pos += 1
        self.pos = pos

    def peek(self, literal: str) -> bool:
        return self.text.startswith(literal, self.pos)

    def match(self, pattern: re.Pattern[str]) -> str | None:
        found = pattern.match(self.text, self.pos)
        if found is None:
            return None
        self.pos = found.end()
        return found.group(0)

    def expect(self, literal: str, what: str) -> None:
        if not self.peek(literal):
            self.fail(f"expected {what}")
        self.pos += len(literal)

    def keyword(self, word: str) -> bool:
        """Consume `word` if it is followed by a blank or '(' (grammar: 'and' AndExprTail)."""
        if not self.peek(word):
            return False
        after = self.pos + len(word)
        if after < len(self.text) and self.text[after] in _BLANKS + "(":
            self.pos = after
            return True
        return False

    # -- grammar --------------------------------------------------------------------------
    def parse(self) -> Node:
        self.skip_blanks()
        if self.pos == len(self.text):
            self.fail("empty condition")
        node = self.or_expr()
        self.skip_blanks()
        if self.pos != len(self.text):
            self.fail(f"unexpected token after '{self.text[: self.pos].strip()[-40:]}', expecting 'or', 'and'")
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while True:
            self.skip_blanks()
            if not self.keyword("or"):
                break
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while True:
            self.skip_blanks()
            if not self.keyword("and"):
                break
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        self.skip_blanks()
        negations = 0
        while self.match(_NOT) is not None:
            negations += 1
            self.skip_blanks()
        self.depth += negations  # each `not` nests as a group does (and recursion follows it)
        if self.depth > 1000:
            self.fail("condition nested too deeply")
        node = self.check()
        self.depth -= negations
        for _ in range(negations):
            node = Not(node)
        return node

    def check(self) -> Node:
        self.operands += 1
        if self.operands > MAX_OPERANDS:
            raise TooLarge(f"more than {MAX_OPERANDS:,} checks, groups and macros in one condition")
        self.skip_blanks()
        start = self.pos
        if self.peek("("):
            return self.group()
        if _TRANSFORMER.match(self.text, self.pos) or _FIELD_NAME.match(self.text, self.pos):
            lhs = self.field_expr()
            return self.condition(lhs, start)
        name = self.match(_IDENTIFIER)
        if name is not None:
            return MacroRef(name, pos=start)
        if self.pos == len(self.text):
            self.fail("unexpected end of condition, expecting a field, a macro or '('")
        self.fail(f"unexpected character {self.text[self.pos]!r}, expecting a field, a macro or '('")
        raise AssertionError("unreachable")

    def group(self) -> Node:
        self.depth += 1
        if self.depth > 1000:
            self.fail("condition nested too deeply")
        self.pos += 1
        node = self.or_expr()
        self.skip_blanks()
        self.expect(")", "')'")
        self.depth -= 1
        return node

    def field_expr(self) -> FieldExpr:
        start = self.pos
        func = self.match(_TRANSFORMER)
        if func is not None:
            return self.transformer(func[:-1], start)
        name = self.match(_FIELD_NAME)
        if name is None:
            self.fail("expected a field name")
            raise AssertionError("unreachable")
        arg = None
        if self.peek("["):
            self.pos += 1
            arg = self.field_arg()
            self.expect("]", "']' after field argument")
        return FieldRef(name, arg, pos=start)

    def field_arg(self) -> str:
        if self.peek('"') or self.peek("'"):
            return self.quoted()
        arg = self.match(_FIELD_ARG_BARE)
        if arg is None:
            self.fail("expected a field argument")
            raise AssertionError("unreachable")
        return arg

    def transformer(self, func: str, start: int) -> Transform:
        args: list[FieldExpr | str] = []
        self.skip_blanks()
        while not self.peek(")"):
            if args:
                self.expect(",", "',' or ')' in transformer arguments")
                self.skip_blanks()
            if _TRANSFORMER.match(self.text, self.pos) or _FIELD_NAME.match(self.text, self.pos):
                args.append(self.field_expr())
            else:
                args.append(self.str_value())
            self.skip_blanks()
        self.pos += 1
        return Transform(func, tuple(args), pos=start)

    def condition(self, lhs: FieldExpr, start: int) -> Check:
        self.skip_blanks()
        if self.keyword_op("exists"):
            return Check(lhs, "exists", pos=start)
        for op in NUM_OPS:
            if self.peek(op):
                self.pos += len(op)
                return Check(lhs, op, self.num_value(), pos=start)
        for op in SYMBOL_STR_OPS:
            if self.peek(op):
                self.pos += len(op)
                return self.str_condition(lhs, op, start)
        for op in WORD_STR_OPS:
            if self.keyword(op):
                return self.str_condition(lhs, op, start)
        for op in LIST_OPS:
            if self.peek(op):
                self.pos += len(op)
                return Check(lhs, op, self.list_value(), pos=start)
        self.fail(f"expected an operator after field '{self.text[start:self.pos].strip()}'")
        raise AssertionError("unreachable")

    def keyword_op(self, word: str) -> bool:
        if not self.peek(word):
            return False
        after = self.pos + len(word)
        if after < len(self.text) and (self.text[after].isalnum() or self.text[after] == "_"):
            return False
        self.pos = after
        return True

    def str_condition(self, lhs: FieldExpr, op: str, start: int) -> Check:
        self.skip_blanks()
        for modifier in MODIFIERS:
            if self.keyword(modifier):
                return Check(lhs, op, self.list_value(), modifier=modifier, pos=start)
        rhs = self.field_rhs()
        if rhs is not None:
            return Check(lhs, op, rhs, pos=start)
        return Check(lhs, op, self.str_value(), pos=start)

    def num_value(self) -> str | FieldExpr:
        self.skip_blanks()
        rhs = self.field_rhs()
        if rhs is not None:
            return rhs
        number = self.match(_NUMBER)
        if number is None:
            self.fail("expected a number")
            raise AssertionError("unreachable")
        return number

    def field_rhs(self) -> FieldExpr | None:
        """`val(field)` or a transformer expression on the right-hand side."""
        start = self.pos
        if self.match(_VAL) is not None:
            self.skip_blanks()
            inner = self.field_expr()
            self.skip_blanks()
            self.expect(")", "')' after val(")
            return Transform("val", (inner,), pos=start)
        if _TRANSFORMER.match(self.text, self.pos):
            return self.field_expr()
        return None

    def list_value(self) -> tuple[str, ...] | FieldExpr:
        self.skip_blanks()
        rhs = self.field_rhs()
        if rhs is not None:
            return rhs
        if not self.peek("("):
            name = self.match(_IDENTIFIER)
            if name is None:
                self.fail("expected a list of values in '(' ')'")
                raise AssertionError("unreachable")
            return (name,)
        self.pos += 1
        values: list[str] = []
        self.skip_blanks()
        while not self.peek(")"):
            if values:
                self.expect(",", "',' or ')' in list")
                self.skip_blanks()
            values.append(self.str_value())
            self.skip_blanks()
        self.pos += 1
        return tuple(values)

    def str_value(self) -> str:
        self.skip_blanks()
        if self.peek('"') or self.peek("'"):
            return self.quoted()
        value = self.match(_BARE_STR)
        if value is None:
            where = "end of condition" if self.pos >= len(self.text) else repr(self.text[self.pos])
            self.fail(f"expected a value, found {where}")
            raise AssertionError("unreachable")
        return value

    def quoted(self) -> str:
        quote_char = self.text[self.pos]
        start = self.pos
        end = self.pos + 1
        while True:
            end = self.text.find(quote_char, end)
            if end == -1:
                self.fail("unterminated quoted string")
            if self.text[end - 1] != "\\":
                break
            end += 1
        self.pos = end + 1
        return _unescape(self.text[start + 1 : end], quote_char, start)


def _unescape(body: str, quote_char: str, start: int) -> str:
    if "\\" not in body:
        return body
    out: list[str] = []
    i = 0
    while i < len(body):
        char = body[i]
        if char != "\\":
            out.append(char)
            i += 1
            continue
        nxt = body[i + 1] if i + 1 < len(body) else ""
        if nxt == quote_char:
            out.append(quote_char)
        elif nxt in _ESCAPES and nxt:
            out.append(_ESCAPES[nxt])
        else:
            raise ConditionSyntaxError(f"unsupported string escape sequence '\\{nxt}'", column=start + i + 2)
        i += 2
    return "".join(out)
