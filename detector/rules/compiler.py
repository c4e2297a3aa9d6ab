"""Condition trees -> Python closures, with Falco's type rules checked at load time.

Every check becomes one small closure over a field extractor and a prepared constant (a
frozenset, a compiled regex, a CIDR table), so evaluating an event does no parsing and
little branching.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from operator import attrgetter

from detector.errors import ConditionSyntaxError
from detector.event import AuditEvent
from detector.parse.extract import Value
from detector.parse.fields import FIELDS
from detector.parse.fieldspec import ArgKind, Extractor, FieldOptions, FieldSpec, FieldType, presence_of
from detector.rules import operators
from detector.rules.ast import And, Check, FieldExpr, FieldRef, MacroRef, Node, Not, Or, Transform, field_text
from detector.rules.diagnostics import Code
from detector.rules.model import Predicate

LIST_FIELD_OPS = ("in", "intersects", "exists")
BYTE_OPS = ("bcontains", "bstartswith")
NUM_OPS = ("<", "<=", ">", ">=")


class CompileError(Exception):
    """A check that cannot be compiled; `pos` is its offset in the condition text."""

    def __init__(self, code: Code, message: str, pos: int = 0) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.pos = pos


@dataclass(frozen=True, slots=True)
class BoundField:
    """A field expression bound to an extractor, with the type facts operators need."""

    get: Extractor
    is_list: bool
    type: FieldType
    numeric: bool
    text: str


@dataclass
class Compiler:
    """Compiles trees for one ruleset; collects warnings as (code, message) pairs."""

    options: FieldOptions = field(default_factory=FieldOptions)
    warnings: list[tuple[Code, str]] = field(default_factory=list)
    _fields: dict[str, BoundField] = field(default_factory=dict)

    def compile(self, node: Node) -> Predicate:
        """A predicate for `node`. Nested and/or are flattened and cheap checks run first:
        checks have no side effects, so the order does not change the result."""
        match node:
            case And(items):
                return all_of([self.compile(i) for i in self.ordered(flatten(And, items))])
            case Or(items):
                return any_of([self.compile(i) for i in self.ordered(flatten(Or, items))])
            case Not(item):
                inner = self.compile(item)
                return lambda ev: not inner(ev)
            case Check():
                return self.check(node)
            case MacroRef(name, pos):
                raise CompileError(Code.UNDEFINED_MACRO, f"undefined macro '{name}' used in filter", pos)
            case _:
                raise TypeError(f"unknown condition node {node!r}")

    def ordered(self, items: list[Node]) -> list[Node]:
        """Children in evaluation order: cheap checks first (stable otherwise)."""
        return sorted(items, key=self.cost)

    def cost(self, node: Node) -> int:
        """0 when the node reads only eagerly decoded fields, 1 when it may parse the body."""
        match node:
            case And(items) | Or(items):
                return max(self.cost(i) for i in items)
            case Not(item):
                return self.cost(item)
            case Check(FieldRef(name), _, rhs) if not isinstance(rhs, FieldRef | Transform):
                spec = FIELDS.get(name)
                return 0 if spec is not None and spec.cheap else 1
            case _:
                return 1

    # -- fields ---------------------------------------------------------------------------
    def bind(self, expr: FieldExpr) -> BoundField:
        """Bind a field (or transformer) expression; shared per text so caches are shared."""
        text = field_text(expr)
        bound = self._fields.get(text)
        if bound is None:
            bound = self._fields[text] = self._bind(expr)
        return bound

    def _bind(self, expr: FieldExpr) -> BoundField:
        if isinstance(expr, FieldRef):
            spec = FIELDS.get(expr.name)
            if spec is None:
                raise CompileError(Code.UNKNOWN_FIELD, f"unknown field '{expr.name}'", expr.pos)
            get = self._extractor(spec, expr)
            return BoundField(get, spec.is_list, spec.type, False, field_text(expr))
        return self._bind_transform(expr)

    def _extractor(self, spec: FieldSpec, expr: FieldRef) -> Extractor:
        arg = expr.arg
        if spec.arg is ArgKind.NONE and arg is not None:
            raise CompileError(Code.BAD_FIELD_ARG, f"field '{spec.name}' does not allow nor require an argument",
                               expr.pos)
        if spec.arg is ArgKind.KEY and arg is None:
            raise CompileError(Code.BAD_FIELD_ARG, f"field '{spec.name}' requires an argument", expr.pos)
        if spec.arg is ArgKind.INDEX and arg is not None and not _is_index(arg):
            raise CompileError(Code.BAD_FIELD_ARG, f"field '{spec.name}': index argument {arg!r} must be a "
                               "non-negative integer", expr.pos)
        try:
            get = spec.build(arg, self.options)
        except ConditionSyntaxError as exc:
            raise CompileError(Code.BAD_FIELD_ARG, exc.message, expr.pos) from None
        return get if spec.cheap or isinstance(get, attrgetter) else cached(get, field_text(expr))

    def _bind_transform(self, expr: Transform) -> BoundField:
        if len(expr.args) != 1 or isinstance(expr.args[0], str):
            raise CompileError(Code.CONDITION_SYNTAX, f"transformer '{expr.func}' takes one field", expr.pos)
        if expr.func == "val":
            raise CompileError(Code.CONDITION_SYNTAX, "val() can only be used on the right-hand side", expr.pos)
        inner = self.bind(expr.args[0])
        if expr.func == "len":
            return BoundField(_length(inner.get), False, FieldType.STRING, True, field_text(expr))
        try:
            fn = operators.transform(expr.func)
        except ConditionSyntaxError as exc:
            raise CompileError(Code.CONDITION_SYNTAX, exc.message, expr.pos) from None
        return BoundField(_mapped(inner.get, fn), inner.is_list, inner.type, False, field_text(expr))

    # -- checks ---------------------------------------------------------------------------
    def check(self, check: Check) -> Predicate:
        lhs = self.bind(check.lhs)
        op, rhs, get = check.op, check.rhs, lhs.get
        if op == "exists":
            present = presence_of(get) or get
            return lambda ev: present(ev) is not None
        if op in BYTE_OPS:
            raise CompileError(Code.BAD_OPERATOR, f"'{op}' operator not supported for string filters", check.pos)
        if lhs.is_list and op not in LIST_FIELD_OPS:
            raise CompileError(Code.BAD_OPERATOR, f"'{op}' operator not supported list filters "
                               f"('{lhs.text}' is a list field: use in, intersects or exists)", check.pos)
        self._warn_na(lhs, op, rhs)
        try:
            if isinstance(rhs, FieldRef | Transform):
                return self._field_rhs(lhs, op, rhs, check.pos)
            if check.modifier is not None:
                return _modifier(get, op, check.modifier, rhs if isinstance(rhs, tuple) else ())
            if isinstance(rhs, tuple):
                return _list_check(lhs, op, rhs)
            assert rhs is not None
            return _scalar_check(lhs, op, rhs)
        except ConditionSyntaxError as exc:
            raise CompileError(Code.BAD_OPERAND, exc.message, check.pos) from None

    def _field_rhs(self, lhs: BoundField, op: str, rhs: FieldExpr, pos: int) -> Predicate:
        if op in ("pmatch", "regex"):
            raise CompileError(Code.BAD_OPERATOR, f"'{op}' does not accept a field on its right-hand side", pos)
        inner = rhs.args[0] if isinstance(rhs, Transform) and rhs.func == "val" else rhs
        if isinstance(inner, str):
            raise CompileError(Code.CONDITION_SYNTAX, "val() takes a field", pos)
        other = self.bind(inner)
        get, rget = lhs.get, other.get

        def check(ev: AuditEvent) -> bool:
            value, against = get(ev), rget(ev)
            if value is None or against is None:
                return False
            values = against if isinstance(against, tuple) else (against,)
            if op in ("in", "intersects"):
                mine = value if isinstance(value, tuple) else (value,)
                return (any if op == "intersects" else all)(v in values for v in mine)
            test = operators.string_test(op, values[0])
            return isinstance(value, str) and test(value)

        return check

    def _warn_na(self, lhs: BoundField, op: str, rhs: object) -> None:
        values = rhs if isinstance(rhs, tuple) else (rhs,)
        if op in ("=", "==", "!=", "in", "intersects", "pmatch") and "<NA>" in values:
            self.warnings.append((Code.NA_CHECK, f"'{lhs.text} {op} <NA>': absent fields are never equal to "
                                  "<NA> (they make every comparison false); use 'exists'"))


def flatten(kind: type[And] | type[Or], items: tuple[Node, ...]) -> list[Node]:
    """The children of nested and/or of the same kind, as one list."""
    out: list[Node] = []
    for item in items:
        if isinstance(item, kind):
            out += flatten(kind, item.items)
        else:
            out.append(item)
    return out


def _is_index(arg: str) -> bool:
    return arg.isdigit() and (arg == "0" or not arg.startswith("0"))


def cached(get: Extractor, key: str) -> Extractor:
    """Extract at most once per event (Falco caches per check; we share across checks)."""

    def extract(ev: AuditEvent) -> Value:
        cache = ev.cache
        if cache is None:
            cache = ev.cache = {}
        elif key in cache:
            value: Value = cache[key]
            return value
        value = cache[key] = get(ev)
        return value

    return extract


def _length(get: Extractor) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        value = get(ev)
        return None if value is None else str(len(value))

    return extract


def _mapped(get: Extractor, fn: Callable[[str], str | None]) -> Extractor:
    def extract(ev: AuditEvent) -> Value:
        value = get(ev)
        if value is None:
            return None
        if isinstance(value, tuple):
            out = tuple(v for v in map(fn, value) if v is not None)
            return out or None
        return fn(value)

    return extract


def _scalar_check(lhs: BoundField, op: str, rhs: str) -> Predicate:
    get = lhs.get
    if lhs.numeric and op in (*NUM_OPS, "=", "==", "!="):
        return _numeric_check(get, op, rhs)
    if lhs.type is FieldType.IPADDR and op in ("=", "==", "!=") and looks_like_ip(rhs):
        member = operators.ip_set_test([rhs])
        if op == "!=":
            return lambda ev: (v := get(ev)) is not None and not member(v)  # type: ignore[arg-type]
        return lambda ev: (v := get(ev)) is not None and member(v)  # type: ignore[arg-type]
    if op in ("=", "=="):
        return lambda ev: get(ev) == rhs
    test = operators.string_test(op, rhs)
    return lambda ev: (v := get(ev)) is not None and test(v)  # type: ignore[arg-type]


def _numeric_check(get: Extractor, op: str, rhs: str) -> Predicate:
    try:
        number = float(int(rhs, 0)) if rhs.lower().startswith("0x") else float(rhs)
    except ValueError:
        raise ConditionSyntaxError(f"{rhs!r} is not a number") from None
    compare: Callable[[float], bool] = {
        "<": lambda v: v < number, "<=": lambda v: v <= number, ">": lambda v: v > number,
        ">=": lambda v: v >= number, "=": lambda v: v == number, "==": lambda v: v == number,
        "!=": lambda v: v != number,
    }[op]
    return lambda ev: (v := get(ev)) is not None and compare(float(v))  # type: ignore[arg-type]


def _list_check(lhs: BoundField, op: str, values: tuple[str, ...]) -> Predicate:
    get = lhs.get
    if op == "pmatch":
        test = operators.pmatch_test(values)
        return lambda ev: (v := get(ev)) is not None and test(v)  # type: ignore[arg-type]
    if lhs.type is FieldType.IPADDR and values and all(looks_like_ip(v) for v in values):
        member = operators.ip_set_test(values)
        if lhs.is_list:
            every = op == "in"
            return lambda ev: (v := get(ev)) is not None and (all if every else any)(map(member, v))
        return lambda ev: (v := get(ev)) is not None and member(v)  # type: ignore[arg-type]
    members = frozenset(values)
    if lhs.is_list:
        if op == "in":
            return lambda ev: (v := get(ev)) is not None and members.issuperset(v)
        return lambda ev: (v := get(ev)) is not None and not members.isdisjoint(v)
    if op in ("in", "intersects"):
        return lambda ev: get(ev) in members
    # A string operator with a parenthesised list only comes with a modifier.
    raise ConditionSyntaxError(f"operator '{op}' does not take a list")


def _modifier(get: Extractor, op: str, modifier: str, values: Sequence[str]) -> Predicate:
    tests = [operators.string_test(op, v) for v in values]
    total = len(tests)

    def check(ev: AuditEvent) -> bool:
        value = get(ev)
        if not isinstance(value, str):
            return False
        hits = sum(1 for t in tests if t(value))
        return hits == 1 if modifier == "oneof" else hits >= 1 if modifier == "anyof" else hits == total

    return check


def looks_like_ip(value: str) -> bool:
    return bool(value) and (value[0].isdigit() or ":" in value) and all(
        c in "0123456789abcdefABCDEF.:/[]" for c in value)


def all_of(predicates: list[Predicate]) -> Predicate:
    """Short-circuit conjunction, unrolled for the common small sizes."""
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda ev: a(ev) and b(ev)
    if len(predicates) == 3:
        a, b, c = predicates
        return lambda ev: a(ev) and b(ev) and c(ev)
    preds = tuple(predicates)

    def conjunction(ev: AuditEvent) -> bool:
        for predicate in preds:  # noqa: SIM110 - a plain loop beats all(<genexpr>) on the hot path
            if not predicate(ev):
                return False
        return True

    return conjunction


def any_of(predicates: list[Predicate]) -> Predicate:
    """Short-circuit disjunction, unrolled for the common small sizes."""
    if len(predicates) == 1:
        return predicates[0]
    if len(predicates) == 2:
        a, b = predicates
        return lambda ev: a(ev) or b(ev)
    preds = tuple(predicates)

    def disjunction(ev: AuditEvent) -> bool:
        for predicate in preds:  # noqa: SIM110 - a plain loop beats any(<genexpr>) on the hot path
            if predicate(ev):
                return True
        return False

    return disjunction
