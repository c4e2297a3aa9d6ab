"""jevt.rawtime's fast spelling agrees with the exact nanosecond arithmetic."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from hypothesis import given
from hypothesis import strategies as st

from detector.event import AuditEvent
from detector.parse.audit import parse_line
from detector.parse.extract import epoch_nanos
from detector.parse.fields import FIELDS
from detector.parse.fieldspec import FieldOptions

RAWTIME = FIELDS["jevt.rawtime"].build(None, FieldOptions())


@given(st.datetimes(min_value=datetime(1960, 1, 1), max_value=datetime(2100, 1, 1)),
       st.sampled_from(["{}.{:06d}Z", "{}Z", "{}.{:06d}123Z", "{}.{:06d}+02:00"]))
def test_rawtime_equals_epoch_nanoseconds(moment: datetime, form: str) -> None:
    """For any moment and any RFC 3339 spelling, rawtime is the exact nanosecond count as text."""
    base = moment.replace(tzinfo=UTC)
    if form.endswith("+02:00"):
        base = base.astimezone(UTC) + timedelta(hours=2)
    text = form.format(base.strftime("%Y-%m-%dT%H:%M:%S"), base.microsecond)
    event = parse_line(orjson.dumps({"kind": "Event", "auditID": "a", "stageTimestamp": text}))
    assert isinstance(event, AuditEvent) and event.time is not None
    assert RAWTIME(event) == str(epoch_nanos(text, event.time))
    assert int(str(RAWTIME(event))) // 1000 == round(event.time.timestamp() * 1_000_000)
