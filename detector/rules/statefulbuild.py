"""Compile a rule's `correlation:` block (checked by correlation.py) into a StatefulRule:
key and value extractors, sequence steps, the expiry condition. Every problem is an E027
diagnostic at the rule's file:line, and the rule is not loaded."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping

from detector.errors import ConditionSyntaxError, Location
from detector.rules.ast import Node
from detector.rules.codegen import generate
from detector.rules.compiler import CompileError, Compiler
from detector.rules.condition import parse_field_expr
from detector.rules.correlation import Kind, StepSpec, parse_correlation
from detector.rules.diagnostics import Code
from detector.rules.model import CompiledRule, Predicate, RuleInfo
from detector.rules.output import OutputTemplate
from detector.rules.stateful import Extractor, StatefulRule, Step, rule_digest, split_output

ConditionCompiler = Callable[[str, Location], Node | None]
Report = Callable[[Code, str, Location], None]


class _Invalid(Exception):
    """A problem already reported."""


class StatefulBuilder:
    def __init__(self, compiler: Compiler, condition: ConditionCompiler, rules: Mapping[str, CompiledRule],
                 report: Report) -> None:
        self.compiler = compiler
        self.condition = condition
        self.rules = rules
        self.report = report

    def build(self, rule: CompiledRule, info: RuleInfo) -> StatefulRule | None:
        where = Location(info.location.path, info.location.line, info.location.column, info.name)
        spec, problems = parse_correlation(info.correlation, where)
        for problem in problems:
            self.report(problem.code, problem.message, problem.location)
        if spec is None:
            return None
        at = spec.location or where
        try:
            keys = self._fields(spec.group_by, at)
            values = self._fields(spec.fields, at)
            steps = tuple(self._step(step) for step in spec.steps)
            expire = self._predicate(spec.expire, at, "expire") if spec.expire else None
        except _Invalid:
            return None
        if spec.kind is not Kind.ABSENCE and not isinstance(rule.output, OutputTemplate):
            return None
        exceptions = repr([(e.name, e.fields, e.comps, e.values) for e in info.exceptions])
        digest = rule_digest(info.name, info.condition, exceptions, spec)
        compiled = dataclasses.replace(rule, correlation=spec)
        assert isinstance(rule.output, OutputTemplate)
        return StatefulRule(compiled, spec, digest, keys, values, steps, expire, rule.output,
                            split_output(info.output)[1])

    def _fields(self, names: tuple[str, ...], where: Location) -> tuple[Extractor, ...]:
        out = []
        for name in names:
            try:
                out.append(self.compiler.bind(parse_field_expr(name)).get)
            except (ConditionSyntaxError, CompileError) as exc:
                self.report(Code.BAD_CORRELATION, f"correlation: field {name!r}: {exc.message}", where)
                raise _Invalid from None
        return tuple(out)

    def _predicate(self, text: str, where: Location, what: str) -> Predicate:
        before = len(self.compiler.warnings)
        node = self.condition(text, where)
        if node is None:
            raise _Invalid
        try:
            predicate = generate(node, self.compiler)
        except CompileError as exc:
            self.report(exc.code, f"correlation {what}: {exc.message}", where)
            raise _Invalid from None
        for code, message in self.compiler.warnings[before:]:
            self.report(code, f"correlation {what}: {message}", where)
        return predicate

    def _step(self, step: StepSpec) -> Step:
        keys = self._fields(step.group_by, step.location) if step.group_by is not None else None
        if step.rule is not None:
            target = self.rules.get(step.rule)
            if target is None:
                self.report(Code.BAD_CORRELATION, f"correlation: step {step.name!r} names rule {step.rule!r}, "
                            "which is not loaded", step.location)
                raise _Invalid
            return Step(step.name, target.predicate, keys)
        assert step.condition is not None
        return Step(step.name, self._predicate(step.condition, step.location, f"step {step.name!r}"), keys)
