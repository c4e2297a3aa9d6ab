"""Run rule tests against a compiled ruleset: the real parser, the real compiled predicate,
the real output renderer. Nothing is mocked."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from detector.engine import diagnose_line
from detector.errors import BadInput, DetectorError
from detector.event import AuditEvent
from detector.parse.audit import event_from_dict, parse_document, parse_line
from detector.rules.index import event_key
from detector.rules.ruleset import Ruleset
from detector.ruletest.spec import RuleTest
from detector.source.replay import read_records


@dataclass
class TestResult:
    """Outcome of one test, with every rendered alert of the rule under test."""

    test: RuleTest
    passed: bool
    problems: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)


def load_events(source: dict[str, Any] | Path) -> list[AuditEvent]:
    """Events of one test entry; any bad input is an error naming the fixture and line."""
    if isinstance(source, dict):
        return [event_from_dict(source)]
    errors: list[BadInput] = []
    events: list[AuditEvent] = []
    for record in read_records(str(source), errors.append, diagnose=diagnose_line):
        parsed = parse_document(record.data) if record.is_document else [parse_line(record.data)]
        for item in parsed:
            if isinstance(item, BadInput):
                errors.append(item)
            elif isinstance(item, list):
                events += item
            else:
                events.append(item)
    real = [e for e in errors if e.reason != "blank_line"]
    if real:
        raise DetectorError(f"{source}: {real[0].location or ''} {real[0].reason}: {real[0].message}")
    return events


def run_test(test: RuleTest, ruleset: Ruleset) -> TestResult:
    """Evaluate the test's events with its rule (independently of rule_matching)."""
    rule = ruleset.rule(test.rule)
    if rule is None:
        return TestResult(test, False, [f"no rule named {test.rule!r} is loaded"])
    result = TestResult(test, True)
    try:
        events = [event for source in test.events for event in load_events(source)]
    except (BadInput, DetectorError) as exc:
        return TestResult(test, False, [f"cannot load events: {exc}"])
    for number, event in enumerate(events, start=1):
        try:
            output = rule.match(event).output if rule.predicate(event) else None
        except Exception as exc:  # an event the rule fails on fails the test, and ends nothing
            result.problems.append(f"event {number}: the rule failed: {type(exc).__name__}: {exc}")
            continue
        if output is not None:
            result.outputs.append(output)
            if rule.enabled and rule in ruleset.active and rule not in ruleset.candidates(event_key(event)):
                result.problems.append("internal: the rule index skipped a matching event")
    _judge(result)
    return result


def _judge(result: TestResult) -> None:
    expect, fired = result.test.expect, len(result.outputs)
    if expect.fires and fired == 0:
        result.problems.append("expected the rule to fire, it did not")
    if not expect.fires and fired:
        result.problems.append(f"expected no alert, got {fired}")
    if expect.count is not None and fired != expect.count:
        result.problems.append(f"expected {expect.count} alert(s), got {fired}")
    for text in expect.output_contains:
        if not any(text in output for output in result.outputs):
            result.problems.append(f"no alert output contains {text!r}")
    result.passed = not result.problems
