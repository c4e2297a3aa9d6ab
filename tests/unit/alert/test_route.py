"""Tests for detector.alert.route: routes as data."""

from __future__ import annotations

import msgspec

from detector.alert.model import Alert
from detector.alert.route import Route, Router
from detector.alert.settings import RouteSettings
from detector.rules.model import Priority
from tests.support.alertkit import make_alert, make_match


def test_min_priority() -> None:
    """An output with min_priority warning takes warning and worse, not notice."""
    route = Route(RouteSettings(min_priority=Priority.WARNING))
    assert route.selects(make_alert(priority=Priority.CRITICAL))
    assert route.selects(make_alert(priority=Priority.WARNING))
    assert not route.selects(make_alert(priority=Priority.NOTICE))


def test_rule_globs() -> None:
    """Rules must match an include glob and no exclude glob (case-sensitive fnmatch)."""
    route = Route(RouteSettings(include_rules=("Attach*", "Create Privileged Pod"), exclude_rules=("*Test*",)))
    assert route.selects(make_alert(rule="Attach/Exec Pod"))
    assert route.selects(make_alert(rule="Create Privileged Pod"))
    assert not route.selects(make_alert(rule="attach/exec pod"))
    assert not route.selects(make_alert(rule="Attach Test Pod"))
    assert not route.selects(make_alert(rule="Other"))
    assert not Route(RouteSettings(include_rules=())).selects(make_alert())


def test_tags() -> None:
    """include_tags needs one matching tag; exclude_tags refuses any matching tag."""
    route = Route(RouteSettings(include_tags=("k8s", "mitre_*"), exclude_tags=("noisy",)))
    assert route.selects(make_alert(tags=("mitre_execution",)))
    assert not route.selects(make_alert(tags=("k8s", "noisy")))
    assert not route.selects(make_alert(tags=()))
    assert Route(RouteSettings(exclude_tags=("noisy",))).selects(make_alert(tags=()))


def test_router_keeps_config_order() -> None:
    """outputs_for lists the selecting outputs in configuration order."""
    router = Router({"b": RouteSettings(), "a": RouteSettings(min_priority=Priority.CRITICAL), "c": RouteSettings()})
    assert router.outputs_for(make_alert(priority=Priority.WARNING)) == ["b", "c"]
    assert router.outputs_for(make_alert(priority=Priority.EMERGENCY)) == ["b", "a", "c"]
    assert router.outputs == ["b", "a", "c"]


def test_clusters_route_on_the_alerts_cluster() -> None:
    """include_clusters / exclude_clusters glob ka.cluster.name; an alert without a cluster
    only matches a pattern that matches the empty name."""
    def alert(cluster: str | None) -> Alert:
        base = make_alert()
        fields = {**base.output_fields, **({"ka.cluster.name": cluster} if cluster else {})}
        return msgspec.structs.replace(base, output_fields=fields)

    prod = Route(RouteSettings(include_clusters=("prod-*",), exclude_clusters=("prod-test",)))
    assert prod.selects(alert("prod-eu"))
    assert not prod.selects(alert("prod-test"))
    assert not prod.selects(alert("staging"))
    assert not prod.selects(alert(None))
    assert Route(RouteSettings(include_clusters=("*",))).selects(alert(None))
    assert Route(RouteSettings(exclude_clusters=("staging",))).selects(alert(None))
    router = Router({"prod": RouteSettings(include_clusters=("prod-*",)), "all": RouteSettings()})
    assert router.outputs_for(alert("staging")) == ["all"]
    assert router.outputs_for(alert("prod-us")) == ["prod", "all"]


def test_may_take_a_match_agrees_with_the_routes_of_its_alert() -> None:
    """may_take is False exactly when no route can select the match's alert, whatever its
    event; routes by cluster are left to the built alert (True)."""
    router = Router({"page": RouteSettings(min_priority=Priority.CRITICAL),
                     "audit": RouteSettings(include_tags=("audit",), exclude_rules=("Noisy*",)),
                     "prod": RouteSettings(min_priority=Priority.ERROR, include_clusters=("prod",))})
    cases = [("Exec", Priority.CRITICAL, ()), ("Exec", Priority.WARNING, ()), ("Exec", Priority.WARNING, ("audit",)),
             ("Noisy rule", Priority.WARNING, ("audit",)), ("Exec", Priority.ERROR, ())]
    for rule, priority, tags in cases:
        match = make_match(rule, priority, tags=tags)
        alert = make_alert(rule=rule, priority=priority, tags=tags, cluster="dev")
        assert router.may_take(match) == (priority <= Priority.ERROR or bool(router.outputs_for(alert))), rule
        if not router.may_take(match):
            assert router.outputs_for(alert) == []
    assert not router.may_take(make_match("Exec", Priority.WARNING))
    assert router.may_take(make_match("Exec", Priority.ERROR))  # "prod" decides on the cluster later
