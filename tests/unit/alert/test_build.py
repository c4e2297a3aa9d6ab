"""Tests for detector.alert.build: enrichment with key fields and the cluster name."""

from __future__ import annotations

from detector.alert.build import AlertBuilder
from tests.support.alertkit import make_match


def test_key_fields_and_cluster_are_added() -> None:
    """Fields the template did not render are filled from the event; the cluster from config."""
    match = make_match(fields={"ka.user.name": "rendered-user"}, objectRef={
        "resource": "pods", "subresource": "exec", "namespace": "prod", "name": "web-1"})
    alert = AlertBuilder("host-1", "prod-eu")(match)
    fields = alert.output_fields
    assert fields["ka.user.name"] == "rendered-user"  # the template's value wins
    assert fields["ka.verb"] == "create" and fields["ka.target.resource"] == "pods"
    assert fields["ka.target.subresource"] == "exec" and fields["ka.target.name"] == "web-1"
    assert fields["ka.target.namespace"] == "prod" and fields["ka.sourceips"] == ["10.0.0.7"]
    assert fields["ka.useragent"] == "kubectl/v1.29.0" and fields["ka.cluster.name"] == "prod-eu"
    assert alert.hostname == "host-1" and alert.to_dict()["output_fields"] is fields


def test_no_cluster_and_absent_values() -> None:
    """Without a cluster name nothing is invented; absent event values are not added."""
    alert = AlertBuilder("h")(make_match(userAgent=None, sourceIPs=None))
    assert "ka.cluster.name" not in alert.output_fields
    assert "ka.useragent" not in alert.output_fields and "ka.sourceips" not in alert.output_fields
