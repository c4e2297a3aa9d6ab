"""Run rule tests against a compiled ruleset: the real parser, the real compiled predicate,
the real output renderer. Nothing is mocked."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, timedelta
from pathlib import Path
from typing import Any

import orjson

from detector.engine import diagnose_line
from detector.errors import BadInput, DetectorError
from detector.event import AuditEvent
from detector.parse.audit import event_from_dict, parse_document, parse_line, parse_timestamp
from detector.rules.diagnostics import Code, did_you_mean
from detector.rules.index import event_key
from detector.rules.model import FieldValue, Match
from detector.rules.ruleset import Ruleset
from detector.rules.stateful import StatefulRule
from detector.ruletest.spec import RuleTest, Series
from detector.source.replay import read_records


@dataclass
class TestResult:
    """Outcome of one test, with every rendered alert of the rule under test."""

    test: RuleTest
    passed: bool
    problems: list[str] = field(default_factory=list)
    outputs: list[str] = field(default_factory=list)
    fields: list[dict[str, FieldValue]] = field(default_factory=list)  # of each alert (stateful rules)


def load_events(source: dict[str, Any] | Path | Series) -> list[AuditEvent]:
    """Events of one test entry; any bad input is an error naming the fixture and line."""
    if isinstance(source, Series):
        return series_events(source)
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


def series_events(series: Series) -> list[AuditEvent]:
    """The events of a `repeat:` entry (see ruletest.spec.Series)."""
    if isinstance(series.event, dict):
        base = series.event
    else:
        loaded = load_events(series.event)
        if not loaded:
            raise DetectorError(f"{series.event}: no event to repeat")
        base = loaded[0].body()
    events = []
    for number in range(series.repeat):
        body = orjson.loads(orjson.dumps(base))
        for dotted, values in series.vary:  # a varied stageTimestamp is where the series starts
            _set_path(body, dotted, values[number % len(values)])
        stamp = body.get("stageTimestamp")
        start = parse_timestamp(stamp if isinstance(stamp, str) else None).astimezone(UTC)
        moment = start + timedelta(seconds=series.every * number)
        body["stageTimestamp"] = moment.strftime("%Y-%m-%dT%H:%M:%S.%fZ")
        body["auditID"] = f"{body.get('auditID', 'event')}-{number}"
        events.append(event_from_dict(body))
    return events


def _set_path(body: dict[str, Any], dotted: str, value: Any) -> None:
    """Set `a.b.c` in the body; `\\.` is a dot inside a key (`annotations.authorization\\.k8s\\.io/reason`)."""
    *parents, last = [part.replace("\x00", ".") for part in dotted.replace("\\.", "\x00").split(".")]
    node = body
    for part in parents:
        node = node.setdefault(part, {})
    node[last] = value


def run_test(test: RuleTest, ruleset: Ruleset) -> TestResult:
    """Evaluate the test's events with its rule (independently of rule_matching)."""
    rule = ruleset.rule(test.rule)
    if rule is None:
        return TestResult(test, False, [missing_rule(ruleset, test.rule)])
    result = TestResult(test, True)
    try:
        events = [event for source in test.events for event in load_events(source)]
    except (BadInput, DetectorError) as exc:
        return TestResult(test, False, [f"cannot load events: {exc}"])
    stateful = ruleset.stateful_rules.get(test.rule)
    if stateful is not None:
        return _run_stateful(test, ruleset, stateful.fresh(), events, result)
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


def _run_stateful(test: RuleTest, ruleset: Ruleset, rule: StatefulRule, events: list[AuditEvent],
                  result: TestResult) -> TestResult:
    """A stateful rule's test: the events in order through the base condition into a fresh
    window state; the aggregate alerts are what is judged."""
    matches: list[Match] = []
    for number, event in enumerate(events, start=1):
        try:
            selected = rule.rule.predicate(event)
        except Exception as exc:  # an event the rule fails on fails the test, and ends nothing
            result.problems.append(f"event {number}: the rule failed: {type(exc).__name__}: {exc}")
            continue
        if selected:
            if rule.rule.enabled and rule.rule in ruleset.active and rule.rule not in ruleset.candidates(
                    event_key(event)):
                result.problems.append("internal: the rule index skipped a matching event")
            matches += rule.feed(event) or ()
    if test.then_silence is not None:
        matches += rule.tick(rule.wall_at_max + test.then_silence)
    result.outputs = [m.output for m in matches]
    result.fields = [m.output_fields for m in matches]
    _judge(result)
    return result


def missing_rule(ruleset: Ruleset, name: str) -> str:
    """Why no rule `name` is loaded: skipped (with where and why), or a near name, or not defined."""
    for diagnostic in ruleset.diagnostics:
        if diagnostic.location.item == name and diagnostic.code is Code.OTHER_SOURCE:
            return f"rule {name!r} is defined ({diagnostic.location}) but not loaded: {diagnostic.message}"
    return f"no rule named {name!r} is loaded" + did_you_mean(name, [r.name for r in ruleset.rules])


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
    if expect.output_fields and not any(_has_fields(fields, expect.output_fields) for fields in result.fields):
        wanted = ", ".join(f"{k}={v!r}" for k, v in expect.output_fields)
        result.problems.append(f"no alert has output fields {wanted}")
    result.passed = not result.problems


def _has_fields(fields: dict[str, FieldValue], wanted: tuple[tuple[str, Any], ...]) -> bool:
    for name, value in wanted:
        have = fields.get(name)
        expected = [str(v) for v in value] if isinstance(value, list) else str(value)
        if have != expected:
            return False
    return True
