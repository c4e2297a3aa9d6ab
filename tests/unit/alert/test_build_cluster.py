"""The alert's ka.cluster.name: the event's cluster (from its envelope) first, then the configured one."""

from __future__ import annotations

from detector.alert.build import AlertBuilder
from detector.alert.settings import ThrottleSettings
from detector.alert.throttle import Throttle
from tests.support.alertkit import make_match


def test_event_cluster_wins_over_configured() -> None:
    """An event that names its cluster keeps it; one that does not gets cluster_name."""
    named = make_match()
    named.event.cluster = "gke-eu-1"
    assert AlertBuilder("h", "configured")(named).output_fields["ka.cluster.name"] == "gke-eu-1"
    assert AlertBuilder("h", "configured")(make_match()).output_fields["ka.cluster.name"] == "configured"
    assert AlertBuilder("h")(named).output_fields["ka.cluster.name"] == "gke-eu-1"


def test_throttle_keys_by_cluster() -> None:
    """With ka.cluster.name in the key, the same alert from two clusters is two windows, not a repeat."""
    throttle = Throttle(ThrottleSettings(window_seconds=60, key_fields=("rule", "ka.cluster.name")))
    alerts = []
    for n, cluster in enumerate(("eks-a", "gke-b", "eks-a")):
        match = make_match(auditID=f"00000000-0000-4000-8000-{n:012d}")
        match.event.cluster = cluster
        alerts.append(AlertBuilder("h")(match))
    passed, _ = throttle.admit(alerts, 1000.0)
    assert [a.output_fields["ka.cluster.name"] for a in passed] == ["eks-a", "gke-b"]
