"""Routes as data: which outputs an alert goes to.

A route is compiled once from `RouteSettings` (globs to one regex each); selecting is then a
priority comparison and at most four regex tests per output.
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Iterable, Mapping

from detector.alert.build import CLUSTER_FIELD
from detector.alert.model import Alert
from detector.alert.settings import RouteSettings
from detector.rules.model import Match

_RULE_CACHE = 4096


class Route:
    """A compiled `RouteSettings`."""

    __slots__ = ("_exclude_clusters", "_exclude_rules", "_exclude_tags", "_include_clusters", "_include_rules",
                 "_include_tags", "_max_level")

    def __init__(self, settings: RouteSettings) -> None:
        self._max_level = int(settings.min_priority)
        self._include_rules = _globs(settings.include_rules)
        self._exclude_rules = _globs(settings.exclude_rules)
        self._include_tags = _globs(settings.include_tags)
        self._exclude_tags = _globs(settings.exclude_tags)
        self._include_clusters = _globs(settings.include_clusters)
        self._exclude_clusters = _globs(settings.exclude_clusters)

    def selects(self, alert: Alert) -> bool:
        """True when the alert is severe enough, its rule is included and not excluded, its
        tags include one of `include_tags` (if any) and none of `exclude_tags`, and its cluster
        (`ka.cluster.name`: the event's, else the configured one) is included and not excluded."""
        if not self.selects_rule(alert.rule, alert.priority_level, alert.tags):
            return False
        if self._include_clusters is None and self._exclude_clusters is None:
            return True
        cluster = alert.output_fields.get(CLUSTER_FIELD)
        cluster = cluster if isinstance(cluster, str) else ""  # no cluster: matches only a pattern like "" or "*"
        if self._include_clusters is not None and not self._include_clusters.match(cluster):
            return False
        return self._exclude_clusters is None or not self._exclude_clusters.match(cluster)

    def selects_rule(self, rule: str, level: int, tags: tuple[str, ...]) -> bool:
        """The part of `selects` that depends on the rule alone (name, priority, tags)."""
        if level > self._max_level:
            return False
        if self._include_rules is None or not self._include_rules.match(rule):
            return False
        if self._exclude_rules is not None and self._exclude_rules.match(rule):
            return False
        if self._include_tags is not None and not any(self._include_tags.match(t) for t in tags):
            return False
        return self._exclude_tags is None or not any(self._exclude_tags.match(t) for t in tags)


class Router:
    """Output name -> route; `outputs_for(alert)` in configuration order."""

    def __init__(self, routes: Mapping[str, RouteSettings]) -> None:
        self._routes = [(name, Route(settings)) for name, settings in routes.items()]
        self._rules: dict[tuple[str, int, tuple[str, ...]], bool] = {}  # may_take per (rule, priority, tags)

    @property
    def outputs(self) -> list[str]:
        return [name for name, _ in self._routes]

    def outputs_for(self, alert: Alert) -> list[str]:
        return [name for name, route in self._routes if route.selects(alert)]

    def may_take(self, match: Match) -> bool:
        """False when no output can take `match`'s alert whatever its event: no route selects
        its rule (name, priority, tags). Routes by cluster are decided on the built alert."""
        key = (match.rule, match.priority, match.tags)
        known = self._rules.get(key)
        if known is None:
            if len(self._rules) >= _RULE_CACHE:
                self._rules.clear()  # rule sets are small; only a reload could get here
            known = self._rules[key] = any(
                route.selects_rule(match.rule, int(match.priority), match.tags) for _, route in self._routes)
        return known


def _globs(patterns: Iterable[str]) -> re.Pattern[str] | None:
    """One anchored regex matching any of the (case-sensitive) fnmatch patterns, or None."""
    parts = [fnmatch.translate(p) for p in patterns]
    return re.compile("|".join(parts)) if parts else None
