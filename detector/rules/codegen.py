"""Rule conditions as generated Python functions: the fast path of evaluation.

Nested closures cost a Python call per node. For the common checks (equality, sets, prefixes,
existence) we instead generate one function per rule, `def rule(ev): return <expression>`,
where attribute paths of the event are read directly. The generated text contains only
identifiers we create and attribute paths from our own field table: every constant, set and
extractor is passed in through the function's namespace, never written into the source, so
no rule text can inject code. Anything else falls back to the closure compiler.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from detector.event import AuditEvent, ResponseStatus
from detector.parse.fieldspec import FieldType, attribute_path, presence_of
from detector.rules import operators
from detector.rules.ast import And, Check, FieldRef, Node, Not, Or
from detector.rules.compiler import BoundField, Compiler, flatten, looks_like_ip
from detector.rules.model import Match, Predicate

_STRING_METHODS = {"startswith": "startswith", "endswith": "endswith"}
_SOURCE = EXPRESSION = "__detector_expression__"  # on a generated predicate: (expression text, namespace)
_PARTS = "__detector_conjuncts__"  # on a generated predicate: the items of its top-level `and`, as text
_NAME = re.compile(r"\b(_[a-z]+\d+)\b")  # the identifiers _Generator creates (locals: _v1, _v2...)
Evaluator = Callable[[AuditEvent], "list[Match] | None"]
_NO_STATUS = ResponseStatus()  # the status of an event without one (no code)


class _Generator:
    def __init__(self, compiler: Compiler) -> None:
        self.compiler = compiler
        self.namespace: dict[str, Any] = {}
        self.count = 0
        self.locals = 0
        # Field text -> the local holding its value: set by an earlier check of the same `and`
        # (which ran, or this one would not run), so a later check need not extract it again.
        self.known: dict[str, str] = {}
        self.extracted: tuple[str, str] | None = None  # (field text, local) the last check bound first
        self.top = False  # the next `and` is the whole expression: its items are kept in `parts`
        self.parts: list[str] = []

    def local(self) -> str:
        self.locals += 1
        return f"_v{self.locals}"

    def bind(self, value: Any, prefix: str) -> str:
        self.count += 1
        name = f"_{prefix}{self.count}"
        self.namespace[name] = value
        return name

    def expr(self, node: Node) -> str:
        match node:
            case And(items):
                return self.conjunction(self.compiler.ordered(flatten(And, items)))
            case Or(items):
                parts = [self.scoped(i) for i in self.compiler.ordered(flatten(Or, items))]
                return "(" + " or ".join(parts) + ")"
            case Not(item):
                return f"(not {self.scoped(item)})"
            case Check():
                return self.check(node)
            case _:
                return f"{self.bind(self.compiler.compile(node), 'p')}(ev)"

    def conjunction(self, items: list[Node]) -> str:
        """`a and b and ...`: a value extracted first thing by a check (or a negated check) is
        reused by the checks after it."""
        outer, top = dict(self.known), self.top
        self.top = False
        parts = []
        for item in items:
            self.extracted = None
            parts.append(self.expr(item))
            simple = isinstance(item, Check) or (isinstance(item, Not) and isinstance(item.item, Check))
            if simple and self.extracted is not None:
                text, local = self.extracted
                self.known[text] = local
        self.known = outer
        if top:
            self.parts = parts
        return "(" + " and ".join(parts) + ")"

    def scoped(self, node: Node) -> str:
        """`node` where what it extracts is not known to run (a branch of `or`, under `not`)."""
        outer = dict(self.known)
        try:
            return self.expr(node)
        finally:
            self.known = outer

    def value(self, bound: BoundField) -> str:
        """Source for a field's value; the first evaluation also keeps it in a local."""
        path = attribute_path(bound.get)
        if path is not None:
            return f"ev.{path}"  # an attribute load costs less than a local's bookkeeping
        text = bound.text
        if text in self.known:
            return self.known[text]
        local = self.local()
        self.extracted = (text, local)
        return f"({local} := {self.bind(bound.get, 'g')}(ev))"

    def check(self, check: Check) -> str:
        inline = self.inline(check) if isinstance(check.lhs, FieldRef) and check.modifier is None else None
        if inline is not None:
            return inline
        self.extracted = None
        return f"{self.bind(self.compiler.check(check), 'p')}(ev)"

    def inline(self, check: Check) -> str | None:  # noqa: PLR0912 - one branch per operator family
        """Source for a simple check, or None to use its closure."""
        bound = self.compiler.bind(check.lhs)
        if check.op == "exists":
            self.compiler.check(check)
            present = presence_of(bound.get)
            if present is None:
                return f"({self.value(bound)} is not None)"
            return f"({self.bind(present, 'g')}(ev) is not None)"  # a cheaper test than the value
        if bound.type is FieldType.IPADDR and not bound.is_list:
            return self.address_in(check, bound)
        if bound.text == "ka.response.code" and check.modifier is None:
            return self.response_code(check)
        if bound.numeric or bound.type is FieldType.IPADDR:
            return None
        get = self.value(bound)
        op, rhs = check.op, check.rhs
        self.compiler.check(check)  # type checks and warnings exactly as the closure path
        value = self.local()
        if bound.is_list and isinstance(rhs, tuple) and op in ("in", "intersects"):
            members = self.bind(frozenset(rhs), "s")
            test = f"{members}.issuperset({value})" if op == "in" else f"not {members}.isdisjoint({value})"
            return f"(({value} := {get}) is not None and {test})"
        if bound.is_list:
            return None
        if isinstance(rhs, tuple) and op in ("in", "intersects"):
            return f"({get} in {self.bind(frozenset(rhs), 's')})"
        if not isinstance(rhs, str):
            return None
        constant = self.bind(rhs, "c")
        if op in ("=", "=="):
            return f"({get} == {constant})"
        if op == "!=":
            return f"(({value} := {get}) is not None and {value} != {constant})"
        if op in _STRING_METHODS:
            return f"(({value} := {get}) is not None and {value}.{_STRING_METHODS[op]}({constant}))"
        if op == "contains":
            return f"(({value} := {get}) is not None and {constant} in {value})"
        return None

    def response_code(self, check: Check) -> str | None:
        """`ka.response.code = 403` / `in (401, 403)` / `!= 200` on the decoded status itself (the
        field's text is str(code): the code as a number, or as text when a producer wrote it so)."""
        op, rhs = check.op, check.rhs
        constants = (rhs,) if isinstance(rhs, str) else rhs if isinstance(rhs, tuple) else None
        if constants is None or op not in ("=", "==", "!=", "in", "intersects") or (
                isinstance(rhs, tuple) and op in ("=", "==", "!=")):
            return None
        self.compiler.check(check)
        codes: set[int | str] = set(constants)
        codes.update(int(c) for c in constants if c.isascii() and c.isdigit() and str(int(c)) == c)
        members = self.bind(frozenset(codes), "s")
        if op == "!=":
            status = self.local()
            return (f"(({status} := ev.responseStatus) is not None and {status}.code is not None"
                    f" and {status}.code not in {members})")
        # An event without a status is read as one without a code, and no code (None) is in a
        # set of constants: fewer steps than testing for None twice, on most events.
        return f"((ev.responseStatus or {self.bind(_NO_STATUS, 'c')}).code in {members})"

    def address_in(self, check: Check, bound: BoundField) -> str | None:
        """An address field against a list of addresses and networks (the closure's memoised
        test, without the closure's call)."""
        rhs = check.rhs
        if check.op not in ("in", "intersects") or not isinstance(rhs, tuple) or not rhs or not all(
                looks_like_ip(v) for v in rhs):
            return None
        self.compiler.check(check)
        member = self.bind(operators.ip_set_test(rhs), "m")
        value = self.local()
        return f"(({value} := {self.value(bound)}) is not None and {member}({value}))"


def generate(node: Node, compiler: Compiler) -> Predicate:
    """One generated function for `node`; the closure compiler if generation is not possible."""
    generator = _Generator(compiler)
    generator.top = isinstance(node, And)
    try:
        # No bool(): every part is a comparison or a test, and only the truth is used.
        text = generator.expr(node)
        code = compile(f"def rule(ev):\n    return {text}\n", "<detector rule>", "exec")
    except (SyntaxError, RecursionError, MemoryError):
        return compiler.compile(node)
    namespace = dict(generator.namespace)
    exec(code, namespace)  # safe: the source holds only our identifiers (see the module docstring)
    predicate: Predicate = namespace["rule"]
    setattr(predicate, _SOURCE, (text, generator.namespace))
    setattr(predicate, _PARTS, tuple(generator.parts) or (text,))
    return predicate


def always(_ev: AuditEvent) -> bool:
    """The predicate of a rule the index decides alone (nothing left to test)."""
    return True


setattr(always, _SOURCE, ("True", {}))


def fuse(rules: Sequence[tuple[Predicate, Callable[[AuditEvent], Match]]], *, first: bool) -> Evaluator:
    """One generated function for a set of candidate rules (predicate, match), in order:
    the matches of an event, or None. Each generated predicate's expression is inlined (its
    identifiers renamed apart), others are called: a Python call per rule and the loop over
    them were ~0.3 us of every event's evaluation. With `first`, it stops at the first match."""
    namespace: dict[str, Any] = {}
    lines = ["def run(ev):", "    found = None", *_rule_lines(rules, namespace, first=first, keep="")]
    return _compiled(lines, namespace)


def fuse_selecting(selecting: Sequence[tuple[Predicate, Any, bool]],
                   rules: Sequence[tuple[Predicate, Callable[[AuditEvent], Match]]], *, first: bool) -> Evaluator:
    """`fuse` for a key with stateful candidates: their base conditions first, each true one
    adding its second item to `found` (the rule to feed: no side effect), those of rules about
    people (third item) under one test that the user is not system:*; then the stateless rules
    as in `fuse` (with `first`, the selected stateful rules are kept). Consecutive base
    conditions that begin with the same test (`ka.response.code = 403 and ...` of the two
    forbidden-burst rules) make that test once: most events fail it. With rules about people,
    the user name is read once, into a local every rule then reads it from."""
    namespace: dict[str, Any] = {}
    lines = ["def run(ev):", "    found = None"]
    tests = [(_Test.of(predicate, f"_q{n}", item), only) for n, (predicate, item, only) in enumerate(selecting)]
    people = [test for test, only in tests if only]
    if people:
        lines.append("    _un = ev.user.username")
    lines += _selecting_lines([test for test, only in tests if not only], namespace, "    ")
    if people:
        # `not _un.startswith("system:")` as comparisons: a method call, its arguments parsed,
        # cost more than the rest of this line, on nearly every event.
        lines.append("    if not ('system:' <= (_un or '') < 'system;'):")
        lines += _selecting_lines(people, namespace, "        ")
    lines += _rule_lines(rules, namespace, first=first, keep="*(found or ()), ")
    if people:
        lines = lines[:3] + [_USER_NAME.sub("_un", line) for line in lines[3:]]
    return _compiled(lines, namespace)


_USER_NAME = re.compile(r"\bev\.user\.username\b")  # ka.user.name, as generated expressions read it


@dataclass(frozen=True, slots=True)
class _Test:
    """A selecting rule's base condition as fuse_selecting writes it: the items of its `and`
    (None: a predicate that was not generated, called), their namespace and the prefix of
    its names in the fused function, and the item a true one adds to `found`."""

    parts: tuple[str, ...] | None
    names: dict[str, Any]
    prefix: str
    predicate: Predicate
    item: Any

    @classmethod
    def of(cls, predicate: Predicate, prefix: str, item: Any) -> _Test:
        source: tuple[str, dict[str, Any]] | None = getattr(predicate, _SOURCE, None)
        if source is None:
            return cls(None, {}, prefix, predicate, item)
        return cls(getattr(predicate, _PARTS, (source[0],)), source[1], prefix, predicate, item)

    def rest(self) -> _Test:
        assert self.parts is not None
        return _Test(self.parts[1:], self.names, self.prefix, self.predicate, self.item)

    def starts_like(self, other: _Test) -> bool:
        """Both have more than one item and the same first: the same text over equal values."""
        if self.parts is None or other.parts is None or len(self.parts) < 2 or len(other.parts) < 2 or (
                self.parts[0] != other.parts[0]):
            return False
        used = set(_NAME.findall(self.parts[0]))
        mine, theirs = used & self.names.keys(), used & other.names.keys()
        return mine == theirs and all(_same(self.names[n], other.names[n]) for n in mine)


def _same(a: Any, b: Any) -> bool:
    """The same value for a generated test: one object, or equal strings or sets of constants."""
    return a is b or (type(a) is type(b) and isinstance(a, str | frozenset) and a == b)


def _selecting_lines(tests: Sequence[_Test], namespace: dict[str, Any], pad: str) -> list[str]:
    """The lines testing `tests` in order, each true one adding its item to `found`; a run of
    tests that begin alike makes their first part once (nested, so again for what follows)."""
    lines: list[str] = []
    i = 0
    while i < len(tests):
        test, j = tests[i], i + 1
        while j < len(tests) and test.starts_like(tests[j]):
            j += 1
        if j > i + 1:
            assert test.parts is not None
            lines.append(f"{pad}if {_renamed(test.parts[0], test.names, test.prefix, namespace)}:")
            lines += _selecting_lines([t.rest() for t in tests[i:j]], namespace, pad + "    ")
        else:
            namespace[f"{test.prefix}item"] = test.item
            if test.parts is None:
                namespace[f"{test.prefix}call"] = test.predicate
                condition = f"{test.prefix}call(ev)"
            else:
                condition = _renamed("(" + " and ".join(test.parts) + ")", test.names, test.prefix, namespace)
            lines += [f"{pad}if {condition}:", f"{pad}    found = [*(found or ()), {test.prefix}item]"]
        i = j
    return lines


def fuse_steps(predicates: Sequence[Predicate]) -> Callable[[AuditEvent], int]:
    """One generated function for the steps of a sequence: the mask of those an event is (bit
    n: step n), testing them in order."""
    namespace: dict[str, Any] = {}
    lines = ["def run(ev):", "    mask = 0"]
    for position, predicate in enumerate(predicates):
        lines += [f"    if {_inlined(predicate, f'_s{position}', namespace)}:", f"        mask |= {1 << position}"]
    lines.append("    return mask")
    exec(compile("\n".join(lines) + "\n", "<detector steps>", "exec"), namespace)  # safe: as in generate()
    run: Callable[[AuditEvent], int] = namespace["run"]
    return run


def _rule_lines(rules: Sequence[tuple[Predicate, Callable[[AuditEvent], Match]]], namespace: dict[str, Any], *,
                first: bool, keep: str) -> list[str]:
    """The body lines testing `rules` in order, then `return found`; with `first`, the first
    match returns at once, after `keep` (what is already found and must be kept)."""
    lines = []
    for position, (predicate, match) in enumerate(rules):
        prefix = f"_r{position}"
        namespace[f"{prefix}match"] = match
        test = _inlined(predicate, prefix, namespace)
        if first:
            lines += [f"    if {test}:", f"        return [{keep}{prefix}match(ev)]"]
        else:
            lines += [f"    if {test}:", f"        found = [*(found or ()), {prefix}match(ev)]"]
    lines.append("    return found")
    return lines


def _compiled(lines: list[str], namespace: dict[str, Any]) -> Evaluator:
    exec(compile("\n".join(lines) + "\n", "<detector rules>", "exec"), namespace)  # safe: as in generate()
    run: Evaluator = namespace["run"]
    return run


def _inlined(predicate: Predicate, prefix: str, namespace: dict[str, Any]) -> str:
    """`predicate`'s expression with its names prefixed (and their values put in `namespace`),
    or a call of it when it was not generated."""
    source: tuple[str, dict[str, Any]] | None = getattr(predicate, _SOURCE, None)
    if source is None:
        namespace[f"{prefix}call"] = predicate
        return f"{prefix}call(ev)"
    text, names = source
    return _renamed(text, names, prefix, namespace)


def _renamed(text: str, names: dict[str, Any], prefix: str, namespace: dict[str, Any]) -> str:
    """`text` with the names of its namespace prefixed (their values put in `namespace`). Its
    locals keep their names: an expression assigns each local before it reads it, so the rules
    of one function share them, and a smaller frame is made and cleared for every event."""
    namespace.update({prefix + name: value for name, value in names.items()})
    return _NAME.sub(lambda found: prefix + found.group(1) if found.group(1) in names else found.group(1), text)
