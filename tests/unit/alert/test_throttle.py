"""Tests for detector.alert.throttle: windows keyed by fields, summaries, persistence."""

from __future__ import annotations

from detector.alert.model import Alert
from detector.alert.settings import ThrottleOverride, ThrottleSettings
from detector.alert.throttle import STATE_PREFIX, Throttle
from tests.support.alertkit import make_alert

KEY = ("rule", "ka.user.name", "ka.target.namespace")


def alice(n: int, namespace: str = "default", rule: str = "Exec") -> Alert:
    """Alert `n` of alice in `namespace`."""
    return make_alert(n, rule=rule, objectRef={"resource": "pods", "namespace": namespace})


def test_repeats_are_suppressed_then_summarised() -> None:
    """The first alert passes, repeats in the window are counted, the summary reports them."""
    throttle = Throttle(ThrottleSettings(60, KEY))
    first, *repeats = [alice(n) for n in range(4)]
    passed, _ = throttle.admit([first, *repeats], now=1000.0)
    assert passed == [first]
    assert throttle.expire(now=1059.0) == ([], {})
    summaries, changes = throttle.expire(now=1060.0)
    (summary,) = summaries
    assert summary.rule == "Exec" and summary.priority == first.priority
    assert summary.tags == (*first.tags, "detector_summary")
    assert summary.message.startswith("3 similar alerts suppressed in a 60s window (")
    assert "ka.user.name=alice" in summary.message and "ka.target.namespace=default" in summary.message
    assert summary.output_fields["detector.suppressed"] == 3
    assert summary.output_fields["detector.window_start"].startswith("1970-01-01T00:16:40")
    assert list(changes.values()) == [None]  # the window is forgotten


def test_keys_separate_windows() -> None:
    """Another namespace or rule is another key: not suppressed."""
    throttle = Throttle(ThrottleSettings(60, KEY))
    alerts = [alice(0), alice(1, namespace="prod"), alice(2, rule="Other"), alice(3)]
    passed, _ = throttle.admit(alerts, now=0.0)
    assert passed == alerts[:3]


def test_a_later_alert_closes_the_window_first() -> None:
    """After the window, the next alert of the key is preceded by the summary of the last window."""
    throttle = Throttle(ThrottleSettings(10, KEY))
    throttle.admit([alice(0), alice(1)], now=0.0)
    passed, _ = throttle.admit([alice(2)], now=10.5)
    assert [a.rule for a in passed] == ["Exec", "Exec"] and passed[0].output_fields["detector.suppressed"] == 1
    assert passed[1] == alice(2)


def test_quiet_windows_close_silently_and_off_means_off() -> None:
    """A window without repeats yields no summary; window 0 passes everything."""
    throttle = Throttle(ThrottleSettings(10, KEY))
    throttle.admit([alice(0)], now=0.0)
    assert throttle.expire(now=11.0)[0] == []
    off = Throttle(ThrottleSettings(0, KEY))
    assert not off.enabled
    assert off.admit([alice(0), alice(1)], now=0.0) == ([alice(0), alice(1)], {})


def test_overrides_per_rule() -> None:
    """The first override whose glob matches the rule sets its window and key."""
    settings = ThrottleSettings(0, KEY, (ThrottleOverride(("Ex*",), 30, ("rule",)),))
    throttle = Throttle(settings)
    passed, _ = throttle.admit([alice(0), alice(1, namespace="prod"), alice(2, rule="Other"),
                                alice(3, rule="Other")], now=0.0)
    assert [a.rule for a in passed] == ["Exec", "Other", "Other"]


def test_windows_survive_a_restart() -> None:
    """State changes loaded into a new throttle resume the window and its count, and the
    summary has the same id as the one the first process would have sent."""
    first = Throttle(ThrottleSettings(60, KEY))
    _, changes = first.admit([alice(0), alice(1)], now=0.0)
    stored = {k: v for k, v in changes.items() if v is not None}
    assert all(k.startswith(STATE_PREFIX) for k in stored)
    second = Throttle(ThrottleSettings(60, KEY))
    second.load(stored)
    assert second.admit([alice(2)], now=30.0)[0] == []
    (summary,), _ = second.expire(now=61.0)
    (expected,), _ = first.expire(now=61.0)
    assert summary.output_fields["detector.suppressed"] == 2 and summary.id == expected.id


def test_summaries_are_told_apart_from_detections() -> None:
    """A summary keeps rule, priority and source (routes still take it) but carries the
    `detector_summary` tag, `detector.summary: true`, no audit_id, and the window's end as its
    `time` and `evt.time`, to the nanosecond, with nine fractional digits everywhere."""
    throttle = Throttle(ThrottleSettings(60, KEY))
    first = make_alert(0, rule="Exec", tags=("k8s", "mitre_execution"))
    throttle.admit([first, make_alert(1, rule="Exec", tags=("k8s", "mitre_execution"))], now=1000.1)
    (summary,), _ = throttle.expire(now=2000.0)
    assert (summary.rule, summary.priority, summary.source) == (first.rule, first.priority, first.source)
    assert summary.tags == ("detector_summary", "k8s", "mitre_execution") and "detector_summary" not in first.tags
    assert summary.output_fields["detector.summary"] is True and "detector.summary" not in first.output_fields
    assert summary.audit_id == "" and first.audit_id != ""
    assert summary.output_fields["evt.time"] == 1_060_100_000_000
    assert summary.time == "1970-01-01T00:17:40.100000000Z" == summary.output_fields["detector.window_end"]
    assert summary.output_fields["detector.window_start"] == "1970-01-01T00:16:40.100000000Z"
    assert summary.output.split(": ", 1)[0].endswith(":40.100000000")
    assert "(1970-01-01T00:16:40.100000000Z to 1970-01-01T00:17:40.100000000Z;" in summary.message
