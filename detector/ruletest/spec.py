"""Rule tests as written: `*.tests.yaml` beside a rules file, or `tests:` inside a rule.

    tests:
      - name: human creates privileged pod
        rule: Privileged Container By Human   # implied for tests written inside a rule
        events:                               # inline Event objects, or paths of fixture files
          - ../tests/fixtures/events/pod_privileged_human.json
        expect: {fires: true, count: 1, output_contains: ["user=alice"]}

Test files are ordinary YAML (SafeLoader with its normal types, bounded as rules files are), so
inline events keep their booleans and numbers.
"""

from __future__ import annotations

import glob
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from detector.errors import Location, RuleLoadError
from detector.rules.correlation import parse_duration
from detector.rules.yamlload import MAX_TESTS_FILE_BYTES, LineNode, YamlError, line_tree, load_typed, read_capped


@dataclass(frozen=True, slots=True)
class Expectation:
    fires: bool
    count: int | None
    output_contains: tuple[str, ...]
    # Output fields some alert must carry with these values (stateful rules: `agg.count: "40"`).
    output_fields: tuple[tuple[str, Any], ...] = ()


@dataclass(frozen=True, slots=True)
class Series:
    """`{repeat: N, every: 10s, event: <inline or path>, vary: {json.path: [values...]}}`: the
    event N times, its stageTimestamp moved on by `every` each time, its auditID suffixed with
    the number, and each `vary` path cycling through its values (for stateful rules)."""

    event: dict[str, Any] | Path
    repeat: int
    every: float
    vary: tuple[tuple[str, tuple[Any, ...]], ...]


@dataclass(frozen=True, slots=True)
class RuleTest:
    """One test: which rule, which events, what must happen."""

    name: str
    rule: str
    events: tuple[dict[str, Any] | Path | Series, ...]
    expect: Expectation
    location: Location
    # Stateful rules: after the events, the wall clock moves on this many seconds with no event
    # (absence rules fire on a log that stopped).
    then_silence: float | None = None


def test_files_for(rule_paths: list[str]) -> list[Path]:
    """`*.tests.yaml` in rules directories, or `<name>.tests.yaml` beside rules files."""
    found: list[Path] = []
    for raw in rule_paths:
        path = Path(raw)
        if path.is_dir():
            found += sorted(path.glob("*.tests.yaml")) + sorted(path.glob("*.tests.yml"))
        else:
            sibling = path.with_name(path.name.rsplit(".", 1)[0] + ".tests.yaml")
            if sibling.is_file():
                found.append(sibling)
    return found


def expected_test_files(rule_paths: list[str]) -> str:
    """What `test_files_for` looked for, and files nearby that look meant but do not pair."""
    wanted: list[str] = []
    near: list[str] = []
    for raw in rule_paths:
        path = Path(raw)
        if path.is_dir():
            wanted.append(str(path / "*.tests.yaml"))
            continue
        stem = path.name.rsplit(".", 1)[0]
        wanted.append(str(path.with_name(stem + ".tests.yaml")))
        near += [str(p) for p in sorted(path.parent.glob(f"{glob.escape(stem)}*.tests.y*ml"))
                 if p.name != stem + ".tests.yaml"]
    text = (f"expected tests in {' or '.join(wanted)} (a rules file X.yaml pairs with X.tests.yaml), or "
            "under a rule's 'tests:' key, or files given with --tests")
    if near:
        text += f"; {', '.join(near)} is not paired with the rules: rename it, or pass it with --tests"
    return text


def load_test_file(path: Path) -> list[RuleTest]:
    """All tests of one tests file."""
    data, lines = _load_yaml(path)
    entries = data.get("tests") if isinstance(data, dict) else data
    if not isinstance(entries, list):
        raise RuleLoadError("a tests file must hold a 'tests' sequence", Location(str(path)))
    entry_lines = (lines.keys.get("tests") if lines is not None and isinstance(data, dict) else lines)
    return [_test(entry, path, None, n, _item_line(entry_lines, n)) for n, entry in enumerate(entries, start=1)]


def embedded_tests(rules_file: Path) -> list[RuleTest]:
    """Tests written under a rule's `tests:` key (re-read with types kept)."""
    data, lines = _load_yaml(rules_file)
    tests: list[RuleTest] = []
    for position, item in enumerate(data if isinstance(data, list) else [], start=1):
        if isinstance(item, dict) and isinstance(item.get("tests"), list) and "rule" in item:
            item_lines = _item(lines, position)
            entry_lines = item_lines.keys.get("tests") if item_lines is not None else None
            tests += [_test(e, rules_file, str(item["rule"]), n, _item_line(entry_lines, n))
                      for n, e in enumerate(item["tests"], start=1)]
    return tests


def _item(lines: LineNode | None, number: int) -> LineNode | None:
    if lines is None or not 0 < number <= len(lines.items):
        return None
    return lines.items[number - 1]


def _item_line(lines: LineNode | None, number: int) -> int | None:
    item = _item(lines, number)
    return item.line if item is not None else None


def _load_yaml(path: Path) -> tuple[Any, LineNode | None]:
    try:
        text = read_capped(path, MAX_TESTS_FILE_BYTES, "the tests file")
        return load_typed(text, str(path)), line_tree(text)
    except (OSError, UnicodeDecodeError) as exc:
        raise RuleLoadError(f"cannot read tests file: {exc}", Location(str(path))) from None
    except YamlError as exc:
        raise RuleLoadError(exc.message, exc.location) from None


def _test(entry: Any, path: Path, rule: str | None, number: int, line: int | None = None) -> RuleTest:
    where = Location(str(path), line, item=f"test #{number}")
    if not isinstance(entry, dict):
        raise RuleLoadError("each test must be a mapping", where)
    name = str(entry.get("name") or f"test #{number}")
    where = Location(str(path), line, item=name)
    rule_name = entry.get("rule", rule)
    if not isinstance(rule_name, str) or not rule_name:
        raise RuleLoadError("test needs 'rule' (the rule's name)", where)
    events = entry.get("events")
    if not isinstance(events, list) or not events:
        raise RuleLoadError("test needs a non-empty 'events' sequence", where)
    resolved: list[dict[str, Any] | Path | Series] = []
    for event in events:
        if isinstance(event, str):
            resolved.append((path.parent / event).resolve())
        elif isinstance(event, dict) and "repeat" in event:
            resolved.append(_series(event, path, where))
        elif isinstance(event, dict):
            resolved.append(event)
        else:
            raise RuleLoadError("each event is an inline mapping or a fixture path", where)
    silence = None
    if "then_silence" in entry:
        silence = parse_duration(entry["then_silence"])
        if silence is None:
            raise RuleLoadError("'then_silence' must be a duration such as 10m", where)
    return RuleTest(name, rule_name, tuple(resolved), _expectation(entry.get("expect"), where), where, silence)


def _series(entry: dict[str, Any], path: Path, where: Location) -> Series:
    repeat, every, event = entry.get("repeat"), parse_duration(entry.get("every", 0)), entry.get("event")
    if isinstance(repeat, bool) or not isinstance(repeat, int) or not 1 <= repeat <= 100_000:
        raise RuleLoadError("'repeat' must be an integer from 1 to 100,000", where)
    if every is None:
        raise RuleLoadError("'every' must be a duration such as 5s", where)
    if isinstance(event, str):
        event = (path.parent / event).resolve()
    elif not isinstance(event, dict):
        raise RuleLoadError("a repeated event needs 'event' (inline or a fixture path)", where)
    vary = entry.get("vary") or {}
    if not isinstance(vary, dict) or not all(isinstance(v, list) and v for v in vary.values()):
        raise RuleLoadError("'vary' maps dotted JSON paths to non-empty lists of values", where)
    return Series(event, repeat, every, tuple((str(k), tuple(v)) for k, v in vary.items()))


def _expectation(value: Any, where: Location) -> Expectation:
    if not isinstance(value, dict) or not isinstance(value.get("fires"), bool):
        raise RuleLoadError("test needs 'expect' with 'fires: true|false'", where)
    count = value.get("count")
    if count is not None and (not isinstance(count, int) or isinstance(count, bool) or count < 0):
        raise RuleLoadError("'expect.count' must be a non-negative integer", where)
    contains = value.get("output_contains") or []
    if isinstance(contains, str):
        contains = [contains]
    if not isinstance(contains, list):
        raise RuleLoadError("'expect.output_contains' must be a string or a list of strings", where)
    fields = value.get("output_fields") or {}
    if not isinstance(fields, dict):
        raise RuleLoadError("'expect.output_fields' must map field names to values", where)
    return Expectation(value["fires"], count, tuple(str(c) for c in contains), tuple(fields.items()))
