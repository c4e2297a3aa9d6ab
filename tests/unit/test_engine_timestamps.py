"""Whatever an event's timestamp, the engine goes on: no line ends a scan (issue 13).

A `stageTimestamp` the API server never writes (year 0001, a zone offset of a day, 20 fraction
digits, a number, nothing) is either evaluated, its alerts carrying a time every encoder
holds, or reported at its file:line; the next line's alerts come out either way.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from detector.alert.format import to_json_line, to_text_line
from detector.alert.model import Alert
from detector.engine import Engine
from detector.errors import BadInput
from detector.event import json_bytes
from detector.parse.extract import NANOS_MAX, NANOS_MIN
from detector.rules.loader import load_rules
from detector.rules.ruleset import Ruleset
from detector.source.replay import read_input
from tests.unit.eventkit import DROP, event_dict

# Every time field in a condition and in an output: evaluating one must not fail on any time.
RULES = """
- rule: Any Create
  desc: every create, with every time field in its output
  condition: ka.verb = create and jevt.rawtime exists and evt.time != x and evt.time.iso8601 != x
  output: "at %evt.time %evt.time.iso8601 %evt.datetime %jevt.rawtime by %ka.user.name"
  priority: WARNING
  source: k8s_audit
"""

_DIGITS = st.text(alphabet="0123456789", min_size=1, max_size=4)
_ZONES = st.one_of(
    st.sampled_from(["Z", "z", "", "+00:00", "-00:00", "+23:59", "-23:59", "+24:00", "+99:99", "+0100", " Z"]),
    st.builds(lambda sign, h, m: f"{sign}{h:02d}:{m:02d}",
              st.sampled_from("+-"), st.integers(0, 30), st.integers(0, 70)))
_FRACTIONS = st.one_of(st.just(""), st.text(alphabet="0123456789", max_size=22).map(lambda d: "." + d),
                       st.just(",5"), st.just(".١٢٣"))
_RFC3339_LIKE = st.builds(
    lambda y, mo, d, sep, h, mi, s, frac, zone: f"{y:0>4}-{mo:0>2}-{d:0>2}{sep}{h:0>2}:{mi:0>2}:{s:0>2}{frac}{zone}",
    st.one_of(st.sampled_from(["0001", "1677", "1678", "1970", "2262", "9999", "0000", "١٩٧٠"]), _DIGITS),
    st.one_of(st.sampled_from(["01", "12", "13", "00"]), _DIGITS),
    st.one_of(st.sampled_from(["01", "28", "29", "31", "32"]), _DIGITS),
    st.sampled_from(["T", "t", " ", "_"]),
    st.one_of(st.sampled_from(["00", "23", "24"]), _DIGITS),
    st.sampled_from(["00", "59", "60"]),
    st.sampled_from(["00", "59", "60", "61"]),
    _FRACTIONS, _ZONES)
_TIMESTAMPS = st.one_of(
    _RFC3339_LIKE, st.text(max_size=40),
    st.none(), st.integers(), st.floats(allow_nan=False), st.booleans(), st.lists(st.integers(), max_size=2),
    st.just(DROP))
_GOOD = orjson.dumps(event_dict(auditID="good", stageTimestamp="2024-05-01T12:00:00.5Z"))


@pytest.fixture(scope="module")
def ruleset(tmp_path_factory: pytest.TempPathFactory) -> Ruleset:
    rules = tmp_path_factory.mktemp("rules") / "rules.yaml"
    rules.write_text(RULES)
    return load_rules([rules])


def _scan(path: Path, ruleset: Ruleset) -> tuple[list[Alert], list[BadInput]]:
    alerts: list[Alert] = []
    bad: list[BadInput] = []
    engine = Engine(ruleset, alerts.append, bad.append, hostname="h")
    engine.run(read_input(str(path), bad.append))
    return alerts, bad


def _encodable(alert: Alert) -> None:
    """The alert goes through every encoder a sink or the outbox uses."""
    orjson.dumps(alert.to_dict())
    orjson.dumps({name: getattr(alert, name) for name in alert.__struct_fields__})
    msgspec.json.encode(alert)
    msgspec.msgpack.encode(alert)
    to_json_line(alert)
    to_text_line(alert)
    nanos = alert.output_fields["evt.time"]  # the template's text where it renders %evt.time
    assert isinstance(nanos, str) or NANOS_MIN <= nanos <= NANOS_MAX


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(stamp=_TIMESTAMPS, received=_TIMESTAMPS)
@example(stamp="0001-01-01T00:00:00Z", received=DROP)
@example(stamp="9999-12-31T23:59:59.999999999-23:59", received=DROP)
@example(stamp="0001-01-01T00:00:00+23:59", received=DROP)
@example(stamp="2262-04-11T23:47:16.854775808Z", received=DROP)
@example(stamp="1677-09-21T00:12:43.145224191Z", received=DROP)
@example(stamp="2024-05-01T23:59:60Z", received=DROP)
@example(stamp="2024-05-01T24:00:00Z", received=DROP)
@example(stamp="2024-05-01T12:00:00.12345678901234567890Z", received=DROP)
@example(stamp="2024-05-01t12:00:00z", received=DROP)
@example(stamp="2024-05-01T12:00:00", received=DROP)
@example(stamp="", received=DROP)
@example(stamp=DROP, received="0001-01-01T00:00:00Z")
def test_any_stage_timestamp_is_evaluated_or_reported_and_the_next_line_goes_on(
        tmp_path: Path, ruleset: Ruleset, stamp: Any, received: Any) -> None:
    """Line 1 has the odd time: it alerts (encodable) or is reported at file:1; line 2 alerts."""
    odd = json_bytes(event_dict(stageTimestamp=stamp, timestamp=received, auditID="odd"))
    path = tmp_path / "audit.log"
    path.write_bytes(odd + b"\n" + _GOOD + b"\n")
    alerts, bad = _scan(path, ruleset)
    for alert in alerts:
        _encodable(alert)
    assert [a.audit_id for a in alerts if a.audit_id == "good"] == ["good"]
    assert all(b.location is not None and (b.location.path, b.location.line) == (str(path), 1) for b in bad)
    assert any(a.audit_id == "odd" for a in alerts) or bad  # evaluated, or reported
    # The time fields never fail a rule: an event is rejected for its time, or fully evaluated.
    assert {b.reason for b in bad} <= {"bad_timestamp", "missing_timestamp", "time_out_of_range"}


def test_year_0001_alerts_with_the_earliest_time_and_a_report(tmp_path: Path) -> None:
    """The issue's line: clamped to evt.time's range (not a TypeError in the encoder), reported;
    the time fields of its output show the same clamped time."""
    path = tmp_path / "audit.log"
    odd = orjson.dumps(event_dict(stageTimestamp="0001-01-01T00:00:00Z", auditID="odd"))
    path.write_bytes(odd + b"\n" + _GOOD + b"\n")
    rules = path.with_name("rules.yaml")
    rules.write_text(RULES)
    alerts, bad = _scan(path, load_rules([rules]))
    assert [a.audit_id for a in alerts] == ["odd", "good"]
    assert alerts[0].time.startswith("1677-09-21T00:12:43") and " 1677-09-21T00:12:43.145224192Z " in alerts[0].message
    assert [(b.reason, str(b.location)) for b in bad] == [("time_out_of_range", f"{path}:1")]
    assert "'Any Create'" in bad[0].message
