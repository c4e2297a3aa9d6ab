"""A key flood against a stateful rule stays bounded, and its evictions and late events reach
detector run's metrics."""

from __future__ import annotations

from pathlib import Path

from prometheus_client.exposition import generate_latest

from detector.metrics import Metrics
from detector.parse.audit import event_from_dict
from detector.rules.loader import load_rules

RULE = """\
- rule: Burst
  desc: 403s per source address
  condition: ka.response.code = 403
  output: "%agg.count from %agg.key"
  priority: WARNING
  source: k8s_audit
  correlation: {type: count, group_by: [ka.client.ip], window: 5m, threshold: 50, max_keys: 160, lateness: 0s}
"""


def forbidden(n: int, second: int) -> object:
    return event_from_dict({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": f"id-{n}", "stage": "ResponseComplete",
        "verb": "get", "user": {"username": "x"}, "sourceIPs": [f"10.{n >> 16 & 255}.{n >> 8 & 255}.{n & 255}"],
        "objectRef": {"resource": "pods"}, "responseStatus": {"code": 403},
        "stageTimestamp": f"2026-11-22T10:{second // 60:02d}:{second % 60:02d}.000000Z"})


def test_a_key_flood_is_bounded_and_counted_in_metrics(tmp_path: Path) -> None:
    """20,000 addresses, 160 keys allowed: the state holds at most 160, the rest are evictions;
    an event older than the watermark counts as late."""
    (tmp_path / "rules.yaml").write_text(RULE)
    ruleset = load_rules([tmp_path / "rules.yaml"])
    for n in range(20_000):
        ruleset.evaluate(forbidden(n, 60 + n // 1000))  # type: ignore[arg-type]
    ruleset.evaluate(forbidden(1, 0))  # type: ignore[arg-type]
    metrics = Metrics()
    metrics.stateful(ruleset.stateful.counters())
    metrics.stateful(ruleset.stateful.counters())  # totals, not increments: counted once
    text = generate_latest(metrics.registry).decode()
    assert "detector_stateful_keys 160.0" in text
    assert 'detector_stateful_evictions_total{what="keys"} 19840.0' in text
    assert 'detector_stateful_dropped_events_total{reason="late"} 1.0' in text
