"""An absence key's last event kept compact (detector/rules/lastevent.py): whatever the event,
the sample gives back exactly the reduced line the alert is made from and the checkpoint
stores; stored lines load compact; and a key's whole state stays small."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import msgspec
import orjson
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from detector.event import AuditEvent
from detector.rules.lastevent import LastEvents, reduced_line
from detector.rules.windows import Silences, bucket_of
from tests.unit.eventkit import DROP, event_dict, event_from, make_event

SETTINGS = settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])

texts = st.one_of(st.none(), st.sampled_from(["", "get", "pods", "kube-system", "ns-ü", "a\"b\\c"]),
                  st.text(max_size=12))
audit_ids = st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()), st.text(min_size=1, max_size=40))
addresses = st.sampled_from(["10.0.0.7", "203.0.113.250", "010.0.0.7", "1.2.3", "2001:db8::1", "2001:DB8::1",
                             "::ffff:10.0.0.1", "fe80::1%eth0", "not an address", ""])
microseconds = st.integers(min_value=0, max_value=4_102_444_799_999_999)  # to 2099-12-31


def _stamp(micros: int, style: str) -> str:
    """A stage time written as the API server does ("micro"), or otherwise."""
    seconds, fraction = divmod(micros, 1_000_000)
    base = datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return {"micro": f"{base}.{fraction:06d}Z", "nano": f"{base}.{fraction:06d}123Z",
            "whole": f"{base}Z", "offset": f"{base}.{fraction:06d}+00:00",
            "lower": f"{base}.{fraction:06d}z"}[style]


@st.composite
def events(draw: st.DrawFn) -> tuple[AuditEvent, str]:
    """A real-shaped event with any of the fields absent, odd or shared, and a key."""
    ref = {k: v for k, v in (("resource", draw(texts)), ("subresource", draw(texts)), ("namespace", draw(texts)),
                             ("name", draw(texts)), ("apiGroup", draw(texts))) if v is not None}
    user = draw(texts)
    body = event_dict(
        apiVersion=draw(st.one_of(st.just(DROP), st.sampled_from(["audit.k8s.io/v1", "audit.k8s.io/v1beta1"]))),
        level=draw(st.one_of(st.just(DROP), texts)), auditID=draw(audit_ids),
        stage=draw(st.one_of(st.just(DROP), texts)), verb=draw(st.one_of(st.just(DROP), texts)),
        user={"username": user} if user is not None else {},
        sourceIPs=draw(st.one_of(st.just(DROP), st.lists(addresses, max_size=3))),
        userAgent=draw(st.one_of(st.just(DROP), texts)), objectRef=ref,
        stageTimestamp=_stamp(draw(microseconds), draw(st.sampled_from(["micro", "micro", "nano", "whole", "offset",
                                                                        "lower"]))))
    event = event_from(body)
    event.cluster = draw(st.one_of(st.none(), st.sampled_from(["", "prod-eu"])))
    key = draw(st.one_of(st.just(user or "<NA>"), st.sampled_from(["prod-eu", "alice"])))
    return event, key


def _time(event: AuditEvent) -> float:
    assert event.time is not None
    return event.time.timestamp()


@SETTINGS
@given(st.lists(events(), min_size=1, max_size=6), st.sampled_from([1, 2, 1024]))
def test_a_sample_gives_back_the_reduced_line_exactly(found: list[tuple[AuditEvent, str]], table: int) -> None:
    """Whatever the fields (absent, empty, odd, shared or not, tables full or not), the sample's
    line is byte for byte the reduced line of the event (what the alert and its id are made from)."""
    samples = LastEvents(max_shapes=table, max_names=table)
    kept = [(samples.encode(event, key, _time(event)), event, key) for event, key in found]
    for sample, event, key in kept:
        assert samples.line(sample, key, _time(event)) == reduced_line(event)


@SETTINGS
@given(events())
def test_a_stored_line_loads_compact_and_gives_itself_back(found: tuple[AuditEvent, str]) -> None:
    """A reduced line from the checkpoint becomes a compact sample that gives the same line back."""
    event, key = found
    line, t = reduced_line(event), _time(event)
    samples = LastEvents()
    sample = samples.from_line(line, key, t)
    assert samples.line(sample, key, t) == line
    assert type(msgspec.msgpack.decode(sample)) is list  # compact, not the line kept as it is


def test_a_line_stored_before_events_were_reduced_is_kept_as_it_is() -> None:
    """A whole event line (what was stored before absence kept only who/what/when) stays that line."""
    event = make_event(annotations={"authorization.k8s.io/decision": "allow"})
    line = b"prod-eu\n" + orjson.dumps(event_dict(annotations={"authorization.k8s.io/decision": "allow"}))
    samples = LastEvents()
    sample = samples.from_line(line, "prod-eu", _time(event))
    assert msgspec.msgpack.decode(sample) == line
    assert samples.line(sample, "prod-eu", _time(event)) == line


def test_a_typical_key_is_held_in_under_fifty_bytes() -> None:
    """An absence key whose last event is an ordinary request (UUID auditID, an IPv4 address,
    microsecond time) is one record of under 50 bytes: 100,000 keys fit in 20 MB."""
    window = Silences(300.0, 1, 60.0, max_keys=1000, samples=LastEvents())
    records: list[Any] = []
    for n in range(50):
        user = f"user-{n:06d}@example.com"
        event = make_event(auditID=f"{n:08x}-7d3c-4b8e-9a1f-5e2d6c4b3a21", user={"username": user},
                           sourceIPs=[f"10.0.0.{n}"], objectRef={"resource": "secrets", "namespace": "team-1",
                                                                 "name": f"db-credentials-{n}"})
        window.feed(user, bucket_of(user), _time(event), event)
        records.append(window.state[bucket_of(user)][user])
    assert max(map(len, records)) < 50
