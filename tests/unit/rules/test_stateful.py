"""Stateful rules through the loader and the ruleset: syntax errors at file:line, aggregate
alerts from `evaluate`, out-of-order input, state export/load/adopt, and what a ruleset with
stateful rules still does for stateless ones."""

from __future__ import annotations

import gc
import random
import tracemalloc
from pathlib import Path
from typing import Any

import msgspec
import orjson
import pytest

from detector.parse.audit import event_from_dict, parse_line
from detector.rules.diagnostics import Code
from detector.rules.lastevent import reduced_line
from detector.rules.loader import check_rules, load_rules
from detector.rules.ruleset import people_only
from detector.rules.stateful import STATE_PREFIX
from detector.rules.windows import bucket_of

BURST = """\
- macro: forbidden
  condition: ka.response.code = 403
- rule: Burst
  desc: three 403s by one user in a minute
  condition: forbidden and ka.user.name exists
  output: "%agg.count by %agg.key (%agg.first..%agg.last) last=%ka.verb ids=%agg.audit_ids"
  priority: WARNING
  source: k8s_audit
  correlation: {type: count, group_by: [ka.user.name], window: 1m, threshold: 3, lateness: 30s}
- rule: Plain
  desc: every 403
  condition: forbidden
  output: plain %ka.user.name
  priority: NOTICE
  source: k8s_audit
"""


def event(second: float, user: str = "alice", code: int = 403, **extra: Any) -> Any:
    minute, sec = divmod(second, 60)
    body = {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": f"{user}-{second}",
            "stage": "ResponseComplete", "verb": "get", "user": {"username": user},
            "objectRef": {"resource": "secrets", "namespace": "ns"},
            "responseStatus": {"code": code},
            "stageTimestamp": f"2026-11-22T10:{int(minute):02d}:{sec:09.6f}Z", **extra}
    return event_from_dict(body)


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(text)
    return path


def test_a_burst_alerts_once_with_its_aggregate_and_stateless_rules_still_alert(tmp_path: Path) -> None:
    """Three 403s within a minute: one aggregate alert (on the third), beside every plain one."""
    ruleset = load_rules([write(tmp_path, BURST)])
    outputs = [[m.output for m in ruleset.evaluate(event(s))] for s in (0, 10, 20, 30)]
    assert outputs[:2] == [["plain alice"], ["plain alice"]]
    assert "plain alice" in outputs[2]
    burst = [o for o in outputs[2] if o.startswith("3 by")]
    assert burst == ["3 by alice (2026-11-22T10:00:00.000000Z..2026-11-22T10:00:20.000000Z) last=get "
                     "ids=(alice-0,alice-10,alice-20)"]
    assert outputs[3] == ["plain alice"]  # consumed: re-armed, a new window needs three more


def test_out_of_order_events_within_lateness_count_and_later_ones_are_dropped(tmp_path: Path) -> None:
    """Events arriving late but within the lateness complete a window; older ones are dropped."""
    ruleset = load_rules([write(tmp_path, BURST)])
    rule = ruleset.stateful_rules["Burst"]
    fired = [m for s in (50, 40, 45) for m in ruleset.evaluate(event(s)) if m.rule == "Burst"]
    assert [m.output_fields["agg.count"] for m in fired] == ["3"]
    assert ruleset.evaluate(event(100, user="bob"))
    assert not [m for m in ruleset.evaluate(event(5, user="bob")) if m.rule == "Burst"]
    assert rule.window.counters.late == 1


def test_shuffled_streams_within_lateness_alert_only_valid_windows_each_event_once(tmp_path: Path) -> None:
    """Reordered within the lateness, nothing is dropped; every alert is a real window (three
    events of its key within a minute) and no event counts in two alerts. (Which window fires
    depends on arrival: alerts come when a window completes, not after the lateness.)"""
    ordered = [event(s, user=random.Random(s).choice(["a", "b"])) for s in range(0, 300, 7)]
    text = BURST.replace("lateness: 30s", "lateness: 2m")
    for seed in range(5):
        jitter = random.Random(seed)
        shuffled = sorted(ordered, key=lambda e: e.time.timestamp() + jitter.uniform(0, 20))
        ruleset = load_rules([write(tmp_path, text)])
        fired = [m for e in shuffled for m in ruleset.evaluate(e) if m.rule == "Burst"]
        assert fired and ruleset.stateful_rules["Burst"].window.counters.late == 0
        used: list[str] = []
        for match in fired:
            ids = match.output_fields["agg.audit_ids"]
            assert isinstance(ids, list) and len(ids) >= 3
            assert {i.split("-")[0] for i in ids} == {match.output_fields["agg.key"]}
            seconds = sorted(float(i.split("-")[1]) for i in ids)
            assert seconds[-1] - seconds[0] < 60
            used += ids
        assert len(used) == len(set(used))


@pytest.mark.parametrize(("block", "message"), [
    ("{type: counting, window: 1m}", "'type' must be one of"),
    ("{type: count, window: 1m}", "type count needs 'threshold'"),
    ("{type: count, window: soon, threshold: 3}", "'window' must be a duration"),
    ("{type: count, window: 1m, threshold: 3, group_by: [ka.nope]}", "unknown field"),
    ("{type: distinct, window: 1m, threshold: 3, field: [a, b]}", "'field' names one field"),
    ("{type: sequence, span: 1m, steps: [{condition: ka.verb = get}]}", "'steps' must be a sequence of 2"),
    ("{type: sequence, span: 1m, steps: [{condition: ka.verb = get}, {rule: Nope}]}", "names rule 'Nope'"),
    ("{type: sequence, span: 1m, steps: [{condition: ka.verb = get}, {condition: ka.verb = ((}]}", "E010"),
    ("{type: count, window: 1m, threshold: 3, colour: red}", "unknown key 'colour'"),
])
def test_invalid_blocks_are_errors_at_the_rules_file_line(tmp_path: Path, block: str, message: str) -> None:
    """Each problem of a correlation block is reported at the rule's file:line, and the rule is not loaded."""
    text = BURST.replace("{type: count, group_by: [ka.user.name], window: 1m, threshold: 3, lateness: 30s}", block)
    path = write(tmp_path, text)
    ruleset, diagnostics = check_rules([path])
    errors = [d for d in diagnostics if d.is_error]
    assert errors, "expected an error"
    shown = "\n".join(f"{d.code.code} {d}" for d in errors)
    assert message in shown
    assert all(d.location.path == str(path) and d.location.line for d in errors)
    assert any(d.code is Code.BAD_CORRELATION or d.code is Code.CONDITION_SYNTAX for d in errors)
    assert ruleset.rule("Burst") is None and ruleset.rule("Plain") is not None


def test_a_file_without_correlation_loads_as_before(tmp_path: Path) -> None:
    """Without correlation blocks, no stateful state and the plain evaluator."""
    plain_only = BURST.split("- rule: Burst", maxsplit=1)[0] + "- rule: Plain" + BURST.split("- rule: Plain")[1]
    ruleset = load_rules([write(tmp_path, plain_only)])
    assert not ruleset.stateful
    assert ruleset.evaluate.__qualname__.startswith("Ruleset._evaluate_function")


def test_state_exported_and_loaded_resumes_the_window(tmp_path: Path) -> None:
    """Two events, export, a new ruleset loads the state: the third event alerts."""
    first = load_rules([write(tmp_path, BURST)])
    for s in (0, 10):
        first.evaluate(event(s))
    stored = {k: v for k, v in first.stateful.changes().items() if v is not None}
    assert stored and all(k.startswith(STATE_PREFIX) for k in stored)
    assert first.stateful.changes() == {}  # only what changed since the last export
    second = load_rules([write(tmp_path, BURST)])
    assert second.stateful.load(stored) == 1
    assert [m.output_fields["agg.count"] for m in second.evaluate(event(20)) if m.rule == "Burst"] == ["3"]


def test_a_reload_keeps_unchanged_rules_state_and_deletes_removed_rules_state(tmp_path: Path) -> None:
    """adopt(): the same rule keeps its window; a changed block starts empty and its old keys are deleted."""
    old = load_rules([write(tmp_path, BURST)])
    for s in (0, 10):
        old.evaluate(event(s))
    written = old.stateful.changes()
    same = load_rules([write(tmp_path, BURST)])
    assert same.stateful.adopt(old.stateful) == (1, 0)
    assert [m.rule for m in same.evaluate(event(20))].count("Burst") == 1
    changed = load_rules([write(tmp_path, BURST.replace("threshold: 3", "threshold: 4"))])
    assert changed.stateful.adopt(same.stateful) == (0, 1)
    deletions = {k for k, v in changed.stateful.changes().items() if v is None}
    assert {k for k, v in written.items() if v is not None} <= deletions


def test_people_only_conditions_are_recognised() -> None:
    """The system:* partition applies only to conditions that exclude system users in every branch."""
    from detector.rules.condition import parse_condition  # noqa: PLC0415

    assert people_only(parse_condition('ka.verb = get and not ka.user.name startswith "system:"'))
    assert not people_only(parse_condition('ka.verb = get or not ka.user.name startswith "system:"'))
    assert not people_only(parse_condition("ka.verb = get"))


ABSENCE = """\
- rule: Silence
  desc: a cluster silent for a window
  condition: ka.auditid exists
  output: "silent %agg.key last=%ka.verb"
  priority: ERROR
  source: k8s_audit
  correlation: {type: absence, group_by: [ka.cluster.name], window: 1m, lateness: 0s}
"""


def test_absence_fires_once_per_silence_and_re_arms(tmp_path: Path) -> None:
    """A cluster heard, then silent while another logs: one alert; heard again then silent: another."""
    ruleset = load_rules([write(tmp_path, ABSENCE)])

    def feed(second: float, cluster: str) -> list[str]:
        return [m.output for m in ruleset.evaluate(event(second, annotations={"cluster_name": cluster}))]

    out = feed(0, "a") + feed(1, "b")
    for s in range(10, 200, 10):
        out += feed(s, "b")
    assert out == ["silent a last=get"]
    out = feed(200, "a") + feed(201, "b")
    for s in range(210, 400, 10):
        out += feed(s, "b")
    assert out == ["silent a last=get"]


def test_events_without_a_time_are_counted_by_the_rules_that_select_them_except_absence(tmp_path: Path) -> None:
    """An event without a usable time counts as untimed for a rule whose condition selects it,
    but the fused evaluator's gate of an absence rule (it compares the time) never selects it,
    whether the absence window is settled or not."""
    from detector.event import AuditEvent, ObjectRef, ResponseStatus, UserInfo  # noqa: PLC0415

    ruleset = load_rules([write(tmp_path, BURST + ABSENCE)])
    untimed = AuditEvent(kind="Event", auditID="u", stage="ResponseComplete", verb="get", user=UserInfo("alice"),
                         objectRef=ObjectRef(resource="secrets"), responseStatus=ResponseStatus(403))
    silence, burst = ruleset.stateful_rules["Silence"], ruleset.stateful_rules["Burst"]
    assert [m.rule for m in ruleset.evaluate(untimed)] == ["Plain"]
    assert (burst.untimed, silence.untimed) == (1, 0)
    ruleset.evaluate(event(0, annotations={"cluster_name": "a"}))  # heard: the window is settled
    assert [m.rule for m in ruleset.evaluate(untimed)] == ["Plain"]
    assert (burst.untimed, silence.untimed) == (2, 0)


def test_absence_on_the_wall_clock(tmp_path: Path) -> None:
    """With no event at all, tick() closes the window by the time elapsed since the last one."""
    ruleset = load_rules([write(tmp_path, ABSENCE)])
    ruleset.evaluate(event(0, annotations={"cluster_name": "a"}))
    rule = ruleset.stateful_rules["Silence"]
    assert ruleset.stateful.tick(rule.wall_at_max + 30) == []
    assert [m.output for m in ruleset.stateful.tick(rule.wall_at_max + 150)] == ["silent a last=get"]
    assert ruleset.stateful.tick(rule.wall_at_max + 300) == []


def test_absence_state_stored_by_earlier_versions_loads_and_alerts_about_its_last_events(tmp_path: Path) -> None:
    """Absence buckets as stored so far (per key: first window, silent, [[window, count]], last
    line, last time) load after an upgrade and are stored back byte for byte; each silent key
    alerts about its stored line's event, a reduced one or a whole one written before events
    were reduced."""
    ruleset = load_rules([write(tmp_path, ABSENCE)])
    rule = ruleset.stateful_rules["Silence"]
    heard = event(0, annotations={"cluster_name": "b"}, verb="patch")
    assert heard.time is not None
    t = heard.time.timestamp()
    whole = event(0, annotations={"cluster_name": "a"}, verb="delete").line()  # the whole event, annotations too
    lines = {"a": b"\n" + whole, "b": reduced_line(heard)}
    buckets: dict[int, dict[str, list[Any]]] = {}
    for key, line in lines.items():
        buckets.setdefault(bucket_of(key), {})[key] = [int(t // 60), False, [[int(t // 60), 1]], line, t]
    stored = {f"{STATE_PREFIX}{rule.digest}.{b}": msgspec.msgpack.encode({"s": s, "r": {}}) for b, s in buckets.items()}
    stored[f"{STATE_PREFIX}{rule.digest}.m"] = msgspec.msgpack.encode({"m": t, "closed": None})
    assert ruleset.stateful.load(stored) == 1
    for bucket in buckets:
        assert rule.window.export(bucket) == stored[f"{STATE_PREFIX}{rule.digest}.{bucket}"]
    alerts = sorted(m.output for m in ruleset.stateful.tick(rule.wall_at_max + 150))
    assert alerts == ["silent a last=delete", "silent b last=patch"]


FLOOD_BLOCKS = {
    "count": "{type: count, group_by: [ka.user.name], window: 5m, threshold: 100, lateness: 1m",
    "distinct": "{type: distinct, group_by: [ka.user.name], field: ka.target.name, window: 10m, threshold: 10, "
                "lateness: 1m",
    "new_term": "{type: new_term, group_by: [ka.user.name], fields: [ka.client.ip], history: 30d, learning: 7d",
    "sequence": "{type: sequence, group_by: [ka.user.name], span: 30m, steps: [{condition: ka.verb = get}, "
                "{condition: ka.verb = delete}]",
    "absence": "{type: absence, group_by: [ka.user.name], window: 5m, lateness: 1m",
}


@pytest.mark.parametrize("kind", list(FLOOD_BLOCKS))
def test_a_flood_of_keys_costs_under_200_bytes_a_key(tmp_path: Path, kind: str) -> None:
    """Each window type holds a key of one ordinary event (with the auditID, values and last
    event its alert shows) in under 200 bytes, as the rule builds it from parsed lines: 100,000
    keys fit in 20 MB (bench/stateful.py measures 100,000)."""
    text = BURST.replace("condition: forbidden and ka.user.name exists", "condition: ka.verb in (get, delete)")
    text = text.replace("{type: count, group_by: [ka.user.name], window: 1m, threshold: 3, lateness: 30s}",
                        FLOOD_BLOCKS[kind] + ", max_keys: 20000}")
    ruleset = load_rules([write(tmp_path, text)])
    lines = [orjson.dumps(flood_body(n)) for n in range(10_000)]
    ruleset.evaluate(parse_line(orjson.dumps(flood_body(-1, second=-300))))  # heard a window before
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        for line in lines:
            ruleset.evaluate(parse_line(line))
        gc.collect()
        size = tracemalloc.get_traced_memory()[0] - before
    finally:
        tracemalloc.stop()
    assert ruleset.stateful_rules["Burst"].window.keys() == len(lines) + 1
    assert size / len(lines) < 200


def flood_body(n: int, second: float = 0.0) -> dict[str, Any]:
    """User n's one request (a new key for every rule keyed by user)."""
    return {**event(600 + second + n * 0.001).parsed_body, "auditID": f"{n % 2**32:08x}-7d3c-4b8e-9a1f-5e2d6c4b3a21",
            "user": {"username": f"user-{n:06d}@example.com"}, "sourceIPs": [f"10.0.{n >> 8 & 255}.{n & 255}"],
            "objectRef": {"resource": "secrets", "namespace": f"team-{n % 40}", "name": f"db-credentials-{n % 1000}"}}
