"""The rules pipeline: files -> items -> collection -> compiled Ruleset, with diagnostics."""

from __future__ import annotations

import re
import sys
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from detector.errors import ConditionSyntaxError, Location, RuleLoadError
from detector.parse.fieldspec import FieldOptions
from detector.rules.advice import field_hint, list_misuse_message, list_misuses, shipped_macro_home, shipped_rules_dir
from detector.rules.ast import Node
from detector.rules.codegen import always, generate
from detector.rules.collector import Collection, Collector
from detector.rules.compiler import CompileError, Compiler
from detector.rules.condition import TooLarge, parse_condition, parse_field_expr
from detector.rules.diagnostics import Code, Diagnostic, did_you_mean
from detector.rules.index import constraints, without_implied
from detector.rules.model import SOURCE, CompiledRule, ExceptionInfo, ListInfo, MacroInfo, Priority, RuleInfo
from detector.rules.output import compile_output
from detector.rules.reader import read_items
from detector.rules.resolve import (
    MAX_CONDITION_CHARS,
    MacroError,
    exception_condition,
    expand_lists,
    expand_macros,
    macro_names,
    measure,
    measure_macros,
    substitute_lists,
)
from detector.rules.ruleset import RuleMatching, Ruleset
from detector.rules.stateful import StatefulRule, split_output
from detector.rules.statefulbuild import StatefulBuilder

_WORD = re.compile(r"[^\s(),=\"']+")
_BARE_LIST = re.compile(r"\b(in|intersects|pmatch)\s+([^\s(),=\"']+)")  # `in bots`: a list without parentheses


@dataclass(frozen=True, slots=True)
class LoadOptions:
    """How rules are compiled and which of them run."""

    fields: FieldOptions = field(default_factory=FieldOptions)
    matching: RuleMatching = RuleMatching.ALL
    min_priority: Priority = Priority.DEBUG
    # Lists whose items the configuration replaces after every file is loaded (for example
    # `detector_internal_networks` from the `internal_networks` setting).
    list_overrides: Mapping[str, tuple[str, ...]] = field(default_factory=dict)


def rule_files(paths: Iterable[str | Path]) -> list[Path]:
    """Files to load, in order: a directory contributes its *.yaml/*.yml (not *.tests.yaml), sorted."""
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            files += sorted(p for p in path.iterdir() if p.suffix in (".yaml", ".yml")
                            and not p.name.endswith((".tests.yaml", ".tests.yml")) and p.is_file())
        else:
            files.append(path)
    return files


# Falco accepts conditions nested 1000 deep; the parser and compiler recurse per level.
RECURSION_LIMIT = 20_000

# What one load may compile, macros expanded: a few seconds of work and ~100 MB at most. A node
# is a check or an and/or/not; Falco's k8s audit rules come to 16 nodes at most, 394 in all.
MAX_RULE_NODES = 20_000
MAX_LOAD_NODES = 100_000
MAX_LOAD_VALUES = 2_000_000  # values of `in (...)` lists, each a string of its own once compiled
MAX_RULE_DEPTH = 2_000  # macros nest conditions (each at most 1,000 deep) into one another
MAX_LOAD_CHARS = 8 << 20  # condition text parsed in one load, lists substituted


def check_rules(paths: Iterable[str | Path], options: LoadOptions | None = None) -> tuple[Ruleset, list[Diagnostic]]:
    """Load and compile everything, collecting every diagnostic (the ruleset holds what compiled)."""
    sys.setrecursionlimit(max(sys.getrecursionlimit(), RECURSION_LIMIT))
    options = options or LoadOptions()
    collector = Collector()
    files = rule_files(paths)
    if not files:
        collector.collection.diagnostics.append(
            Diagnostic(Code.NO_RULES_FILES, "no rules files given or found", Location("<rules>")))
    for path in files:
        for item in read_items(path, collector.collection.diagnostics):
            collector.add(item)
    collection = collector.collection
    _override_lists(collection, options.list_overrides)
    build = _Build(collection, options, files)
    compiled = build.run()
    stateful = build.stateful(compiled)
    diagnostics = collection.diagnostics
    return Ruleset(compiled, diagnostics, options.matching, options.min_priority, stateful), diagnostics


def load_rules(paths: Iterable[str | Path], options: LoadOptions | None = None) -> Ruleset:
    """Load and compile; raise RuleLoadError (carrying every error) if anything is wrong."""
    ruleset, diagnostics = check_rules(paths, options)
    errors = [d for d in diagnostics if d.is_error]
    if errors:
        first = errors[0]
        more = f" (and {len(errors) - 1} more errors)" if len(errors) > 1 else ""
        error = RuleLoadError(f"error {first.code.code}: {first.message}{more}", first.location)
        error.diagnostics = errors  # type: ignore[attr-defined]
        raise error
    return ruleset


class _Build:
    """One compilation of a collection."""

    def __init__(self, collection: Collection, options: LoadOptions, files: Sequence[Path] = ()) -> None:
        self.c = collection
        self.files = files
        self.compiler = Compiler(options.fields)
        self.lists = expand_lists(collection.lists)
        self.macros: dict[str, Node] = {}
        self.macro_sizes: dict[str, tuple[int, int, int]] = {}
        self.nodes = self.values = self.chars = 0  # compiled and parsed so far, against MAX_LOAD_*

    def report(self, code: Code, message: str, location: Location) -> None:
        self.c.diagnostics.append(Diagnostic(code, message, location))

    def run(self) -> list[CompiledRule]:
        for macro in self.c.macros.values():
            self._parse_macro(macro)
        for macro in self.c.macros.values():
            self._check_macro_refs(macro)
        self.macro_sizes = measure_macros(self.macros)
        compiled, skipped = [], Counter[tuple[str, str]]()
        for rule in self.c.rules.values():
            if not rule.source:
                self.report(Code.OTHER_SOURCE, f"rule '{rule.name}' has no 'source', so it is skipped: Falco reads "
                            f"such rules as syscall rules; add 'source: {SOURCE}' to evaluate it on audit events",
                            rule.location)
                continue
            if rule.source != SOURCE:
                skipped[(rule.location.path, rule.source)] += 1
                continue
            result = self._compile_rule(rule)
            if result is not None:
                compiled.append(result)
        self._report_skipped(skipped)
        self._report_unused()
        return compiled

    def stateful(self, compiled: list[CompiledRule]) -> list[StatefulRule]:
        """Compile the correlation blocks of the compiled rules (statefulbuild.py); a rule whose
        block is invalid is removed from `compiled`, with its diagnostics."""
        builder = StatefulBuilder(self.compiler, self._condition, {r.name: r for r in compiled}, self.report)
        out: list[StatefulRule] = []
        for rule in list(compiled):
            info = self.c.rules[rule.name]
            if info.correlation is None:
                continue
            built = builder.build(rule, info)
            if built is None:
                compiled.remove(rule)
            else:
                compiled[compiled.index(rule)] = built.rule
                out.append(built)
        return out

    def _condition(self, text: str, where: Location) -> Node | None:
        """A condition (a step's, an expiry's) parsed, lists substituted, macros expanded."""
        node = self._parse(text, where)
        if node is None or not self._within_bounds(node, where):
            return None
        try:
            return expand_macros(node, self.macros)
        except MacroError as exc:
            self._macro_error(exc, where)
            return None

    def _parse(self, text: str, location: Location, exceptions: Sequence[ExceptionInfo] = ()) -> Node | None:
        """The condition (with its exceptions' text) parsed, lists substituted. Errors quote the
        condition as written: lists and exceptions are blamed by name."""
        full = f"({text}){exception_condition(exceptions)}" if exceptions else text
        try:
            if len(full) > MAX_CONDITION_CHARS:
                raise TooLarge(f"longer than {MAX_CONDITION_CHARS:,} characters")
            written = parse_condition(text)  # first on the text as written, for exact columns
        except TooLarge as exc:
            self.report(Code.TOO_LARGE, f"condition too large: {exc}; not loaded", location)
            return None
        except ConditionSyntaxError as exc:
            self._syntax_error(text, exc, location)
            return None
        if not self._lists_fit(written, location):
            return None
        used: set[str] = set()
        try:
            substituted = substitute_lists(full, self.lists, used)
            self.chars += len(substituted)
            if self.chars > MAX_LOAD_CHARS:
                raise TooLarge(f"the conditions of this load pass {MAX_LOAD_CHARS >> 20} MiB with their lists")
            return parse_condition(substituted)
        except TooLarge as exc:
            self.report(Code.TOO_LARGE, f"condition too large: {exc}; not loaded", location)
        except ConditionSyntaxError as exc:
            self._substituted_error(text, exceptions, used, exc, location)
        return None

    def _syntax_error(self, text: str, exc: ConditionSyntaxError, location: Location) -> None:
        near = text[max((exc.column or 1) - 1, 0):][:40].strip()
        at = f" at condition column {exc.column} " + (f"(near '{near}')" if near else "(end of condition)")
        at = at if exc.column else ""
        word = _WORD.match(near)
        hint = ""
        if word and word.group(0) in self.lists:
            hint = f"; '{word.group(0)}' is a list: write it in parentheses, as in '... in ({word.group(0)})'"
        self.report(Code.CONDITION_SYNTAX, f"{exc.message}{at}{hint}", location)

    def _lists_fit(self, node: Node, location: Location) -> bool:
        """Warn of a list used as one value (works by accident with one item); refuse it with more."""
        fits = True
        for check, name, advice in list_misuses(node, self.lists):
            items = self.lists[name]
            code = Code.LIST_AS_VALUE if len(items) == 1 else Code.CONDITION_SYNTAX
            self.report(code, list_misuse_message(check, name, items, advice), location)
            fits = fits and len(items) == 1
        return fits

    def _substituted_error(self, text: str, exceptions: Sequence[ExceptionInfo], used: set[str],
                           exc: ConditionSyntaxError, location: Location) -> None:
        for info in exceptions:
            try:
                parse_condition(exception_condition([info]).removeprefix(" and not "))
            except ConditionSyntaxError as inner:
                self.report(Code.BAD_EXCEPTION, f"exception {info.name!r}: its fields, comps and values do not "
                            f"make a valid condition ({inner.message})", info.location)
                return
        names = ", ".join(f"'{n}'" for n in sorted(used)) or "(none)"
        bare = next((m for m in _BARE_LIST.finditer(text) if m.group(2) in used), None)
        hint = f"; write the list in parentheses: '{bare.group(1)} ({bare.group(2)})'" if bare else ""
        self.report(Code.CONDITION_SYNTAX, f"the condition parses as written, but not once list(s) {names} are "
                    f"replaced by their items (the parser says: {exc.message}){hint}", location)

    def _parse_macro(self, macro: MacroInfo) -> None:
        node = self._parse(macro.condition, _named(macro.condition_location, macro.name))
        if node is not None:
            self.macros[macro.name] = node

    def _check_macro_refs(self, macro: MacroInfo) -> None:
        node = self.macros.get(macro.name)
        for name in sorted(macro_names(node) if node is not None else ()):
            other = self.c.macros.get(name)
            if other is None or other.index >= macro.visibility:
                self.report(Code.UNDEFINED_MACRO, self._undefined_macro(name),
                            _named(macro.condition_location, macro.name))
                self.macros.pop(macro.name, None)

    def _compile_rule(self, rule: RuleInfo) -> CompiledRule | None:
        where = _named(rule.condition_location, rule.name)
        if not self._exception_fields_valid(rule):
            return None
        try:
            exception_condition(rule.exceptions)
        except ConditionSyntaxError as exc:
            self.report(Code.BAD_EXCEPTION, exc.message, where)
            return None
        node = self._parse(rule.condition, where, rule.exceptions)
        if node is None or not self._within_bounds(node, where):
            return None
        try:
            expanded = expand_macros(node, self.macros)
        except MacroError as exc:
            self._macro_error(exc, where)
            return None
        return self._finish(rule, node, expanded, where)

    def _within_bounds(self, node: Node, where: Location) -> bool:
        """Refuse a rule whose macros would expand past the bounds, before expanding them."""
        nodes, values, depth = measure(node, self.macro_sizes)
        self.nodes += nodes
        self.values += values
        if nodes > MAX_RULE_NODES or depth > MAX_RULE_DEPTH:
            self.report(Code.TOO_LARGE, f"condition too large with its macros expanded: {nodes:,} checks and "
                        f"and/or/not, {depth:,} deep (the limits are {MAX_RULE_NODES:,} and {MAX_RULE_DEPTH:,}); "
                        "not loaded", where)
            return False
        if self.nodes > MAX_LOAD_NODES or self.values > MAX_LOAD_VALUES:
            self.report(Code.TOO_LARGE, f"the rules compiled so far pass {MAX_LOAD_NODES:,} checks and and/or/not "
                        f"or {MAX_LOAD_VALUES:,} listed values with their macros expanded; not loaded", where)
            return False
        return True

    def _exception_fields_valid(self, rule: RuleInfo) -> bool:
        """Falco checks exception fields even when an exception has no values yet."""
        for info in rule.exceptions:
            names = [info.fields] if isinstance(info.fields, str) else list(info.fields or [])
            for name in names:
                try:
                    self.compiler.bind(parse_field_expr(str(name)))
                except (ConditionSyntaxError, CompileError) as exc:
                    self.report(Code.BAD_EXCEPTION, f"exception {info.name!r}: field {name!r}: {exc.message}"
                                + field_hint(exc.message), info.location)
                    return False
        return True

    def _finish(self, rule: RuleInfo, written: Node, expanded: Node, where: Location) -> CompiledRule | None:
        before = len(self.compiler.warnings)
        try:
            predicate = self.compiler.compile(expanded)
        except CompileError as exc:
            self._compile_failed(rule, exc, where)
            return None
        try:
            output = compile_output(split_output(rule.output)[0] if rule.correlation is not None else rule.output,
                                    self.compiler)
        except CompileError as exc:
            self._compile_failed(rule, exc, _named(rule.output_location, rule.name))
            return None
        for code, message in self.compiler.warnings[before:]:
            self.report(code, message, where)
        remaining = without_implied(expanded)
        return CompiledRule(
            name=rule.name, desc=rule.desc, priority=rule.priority, tags=tuple(sorted(rule.tags)),
            enabled=rule.enabled, predicate=predicate, output=output, condition=expanded,
            constraints=constraints(expanded), location=rule.location, tests=tuple(rule.tests),
            fast_predicate=always if remaining is None else generate(remaining, self.compiler),
            written_condition=written, macros=self.macros,
        )

    def _compile_failed(self, rule: RuleInfo, exc: CompileError, where: Location) -> None:
        if rule.skip_if_unknown_filter and exc.code in (Code.UNKNOWN_FIELD, Code.BAD_OUTPUT):
            self.report(Code.OTHER_SOURCE, f"rule skipped (skip-if-unknown-filter): {exc.message}", where)
        else:
            self.report(exc.code, exc.message + field_hint(exc.message), where)

    def _macro_error(self, exc: MacroError, where: Location) -> None:
        if exc.loop:
            self.report(Code.MACRO_LOOP, f"reference loop in macro '{exc.name}'", where)
        elif exc.name in self.c.macros:
            self.report(Code.UNDEFINED_MACRO, f"macro '{exc.name}' could not be compiled (see its error)", where)
        else:
            self.report(Code.UNDEFINED_MACRO, self._undefined_macro(exc.name), where)

    def _undefined_macro(self, name: str) -> str:
        """The message, with where the shipped rules define `name` or the names it may be a typo of."""
        message = f"undefined macro '{name}' used in filter"
        home = shipped_macro_home(name, self.files)
        if home is not None:
            return (f"{message}; '{name}' is defined in the shipped rules ({home.path}:{home.line}): add "
                    f"--with-shipped-rules, or list the shipped rules directory first (--rules {shipped_rules_dir()} "
                    "--rules ...)")
        return message + did_you_mean(name, self.c.macros)

    def _report_skipped(self, skipped: Counter[tuple[str, str]]) -> None:
        for (path, source), count in skipped.items():
            self.report(Code.OTHER_SOURCE, f"{count} rule(s) with source '{source}' skipped: detector evaluates "
                        f"'{SOURCE}' rules only", Location(path))

    def _report_unused(self) -> None:
        words: set[str] = set()
        texts = [r.condition for r in self.c.rules.values()] + [m.condition for m in self.c.macros.values()]
        for text in texts + self.c.written:
            words.update(_WORD.findall(text))
        for items in [info.items for info in self.c.lists.values()]:
            words.update(items)
        for rule in self.c.rules.values():
            for exc in rule.exceptions:
                words.update(_WORD.findall(str(exc.values)))
        for macro in self.c.macros.values():
            if macro.name not in words:
                self.report(Code.UNUSED, f"macro '{macro.name}' is not referred to by any rule or macro",
                            macro.location)
        for info in self.c.lists.values():
            if info.name not in words:
                self.report(Code.UNUSED, f"list '{info.name}' is not referred to by any rule, macro or list",
                            info.location)


def _override_lists(collection: Collection, overrides: Mapping[str, tuple[str, ...]]) -> None:
    for name, items in overrides.items():
        info = collection.lists.get(name)
        if info is None:
            collection.counter += 1
            collection.lists[name] = ListInfo(name, list(items), collection.counter, collection.counter,
                                              Location("<config>", item=name))
        else:
            info.items = list(items)


def _named(location: Location, name: str) -> Location:
    return Location(location.path, location.line, location.column, name)


def summary(diagnostics: Sequence[Diagnostic]) -> str:
    errors = sum(1 for d in diagnostics if d.is_error)
    return f"{errors} error(s), {len(diagnostics) - errors} warning(s)"
