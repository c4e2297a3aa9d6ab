"""The three modes of `detector test-rule`: tests (default), --explain, --replay."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from pathlib import Path

from detector.engine import Engine, diagnose_line
from detector.errors import BadInput, DetectorError, Location, RuleLoadError
from detector.event import AuditEvent
from detector.parse.fieldspec import FieldOptions
from detector.rules.explain import explain
from detector.rules.loader import rule_files
from detector.rules.model import CompiledRule
from detector.rules.ruleset import Ruleset
from detector.rules.stateful import StatefulRule
from detector.ruletest.runner import TestResult, load_events, missing_rule, run_test
from detector.ruletest.spec import RuleTest, embedded_tests, expected_test_files, load_test_file, test_files_for
from detector.source.replay import read_input

EXIT_OK, EXIT_FAILED, EXIT_USAGE = 0, 1, 2
MAX_BAD_SHOWN = 20  # bad lines of --replay printed one by one; the rest are counted


def run(args: argparse.Namespace, ruleset: Ruleset, rule_paths: list[str]) -> int:
    """`rule_paths`: the rules whose tests run (not the shipped rules loaded before them)."""
    if args.event and not args.explain:
        raise DetectorError("--event only feeds --explain RULE: add --explain with the rule's name")
    if args.explain:
        return explain_rule(ruleset, args.explain, args.event or [], FieldOptions(args.trusted_proxies))
    if args.replay:
        return replay(ruleset, args.replay)
    tests = collect_tests(args.tests, rule_paths)
    return run_tests(ruleset, tests, args.require_cases, {str(p) for p in rule_files(rule_paths)})


def collect_tests(test_paths: list[str] | None, rule_paths: list[str]) -> list[RuleTest]:
    """Every test to run; none at all is an error naming the files that were looked for."""
    files = [Path(p) for p in test_paths] if test_paths else test_files_for(rule_paths)
    tests = [t for f in files for t in load_test_file(f)]
    for rules_file in rule_files(rule_paths):
        tests += embedded_tests(rules_file)
    if not tests:
        if test_paths:
            raise DetectorError(f"no tests found: {', '.join(test_paths)} hold(s) no test (a tests file is "
                                "'tests:' followed by a sequence of tests)")
        raise DetectorError(f"no tests found: {expected_test_files(rule_paths)}")
    return tests


def run_tests(ruleset: Ruleset, tests: list[RuleTest], require_cases: bool, own: set[str] | None = None) -> int:
    """Run and print every test; `own` limits --require-cases to the rules of these files."""
    results = [run_test(test, ruleset) for test in tests]
    for result in results:
        _print_result(result)
    missing = _missing_cases(ruleset, tests, own) if require_cases else []
    for line in missing:
        print(f"FAIL  {line}")
    failed = sum(1 for r in results if not r.passed)
    print(f"{len(results) - failed} passed, {failed + len(missing)} failed", file=sys.stderr)
    return EXIT_FAILED if failed or missing else EXIT_OK


def _print_result(result: TestResult) -> None:
    test = result.test
    print(f"{'PASS' if result.passed else 'FAIL'}  {test.rule} :: {test.name}")
    for output in result.outputs:
        print(f"      alert: {output}")
    for problem in result.problems:
        print(f"      {problem}  [{test.location}]")


def _missing_cases(ruleset: Ruleset, tests: list[RuleTest], own: set[str] | None) -> list[str]:
    lines = []
    for rule in ruleset.rules:
        if not rule.enabled or (own is not None and rule.location.path not in own):
            continue
        kinds = {t.expect.fires for t in tests if t.rule == rule.name}
        for fires, word in ((True, "positive (fires: true)"), (False, "negative (fires: false)")):
            if fires not in kinds:
                lines.append(f"{rule.name} :: has no {word} test  [{rule.location}]")
    return lines


def explain_rule(ruleset: Ruleset, name: str, event_files: list[str], options: FieldOptions) -> int:
    rule = ruleset.rule(name)
    if rule is None:
        raise RuleLoadError(missing_rule(ruleset, name))
    if not event_files:
        raise DetectorError("--explain needs at least one --event FILE")
    # A stateful rule: the events, in order, feed one fresh window state, shown after each.
    stateful = ruleset.stateful_rules.get(name)
    window = stateful.fresh() if stateful is not None else None
    for path in event_files:
        for number, event in enumerate(load_events(Path(path)), start=1):
            where = Location(path, item=f"event {number}")
            try:
                _explain_event(rule, event, where, options, window)
            except Exception as exc:  # one event the rule fails on ends nothing
                print(f"{where}: {rule.name}: the rule failed: {type(exc).__name__}: {exc}")
    return EXIT_OK


def _explain_event(rule: CompiledRule, event: AuditEvent, where: Location, options: FieldOptions,
                   window: StatefulRule | None = None) -> None:
    matched = rule.predicate(event)
    print(f"{where}: {rule.name}: {'MATCH' if matched else 'no match'}"
          f" (auditID={event.auditID} verb={event.verb} resource={event.objectRef.resource} "
          f"stage={event.stage} stageTimestamp={event.stageTimestamp})")
    written = rule.written_condition
    for line in (explain(written, event, options, rule.macros) if written is not None
                 else explain(rule.condition, event, options)):
        print(f"  {line}")
    if not matched:
        return
    if window is None:
        print(f"  output: {rule.match(event).output}")
        return
    fired = window.feed(event) or []
    for key in _keys_of(window, event):
        for line in window.describe(key):
            print(f"  window: {line}")
    for match in fired:
        print(f"  ALERT: {match.output}")


def _keys_of(window: StatefulRule, event: AuditEvent) -> list[str]:
    """The keys an event feeds (a sequence step may have its own key)."""
    keys = {window.key_of(event)}
    keys.update(window.key_of(event, step.keys) for step in window.steps if step.keys is not None)
    return sorted(keys)


def replay(ruleset: Ruleset, paths: list[str]) -> int:
    counts: Counter[str] = Counter()
    shown: list[int] = [0]

    def bad_line(error: BadInput) -> None:  # the first few, then only the counts per reason
        shown[0] += 1
        if shown[0] <= MAX_BAD_SHOWN:
            print(f"{error.location or '<input>'}: {error.reason}: {error.message}", file=sys.stderr)

    engine = Engine(ruleset, lambda alert: counts.update([alert.rule]), bad_line)
    for path in paths:
        engine.run(read_input(path, engine.report_bad, diagnose=diagnose_line))
    stats = engine.stats
    reasons = ", ".join(f"{reason}={count}" for reason, count in sorted(stats.bad.items()))
    print(f"events: {stats.events}  bad lines: {sum(stats.bad.values())}" + (f" ({reasons})" if reasons else "")
          + f"  alerts: {sum(counts.values())}")
    width = max((len(r.name) for r in ruleset.rules), default=10)
    for rule in ruleset.rules:
        print(f"{counts.get(rule.name, 0):>8}  {rule.name:<{width}}{'' if rule in ruleset.active else '  (inactive)'}")
    return EXIT_OK
