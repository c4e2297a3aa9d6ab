"""From a rule match to the alert that is stored and delivered: enriched, then redacted.

Enrichment adds the key fields every output shows (and throttle keys may use) when the rule's
template did not already render them, under their field names: `ka.user.name`, `ka.verb`,
`ka.target.resource`, `ka.target.subresource`, `ka.target.namespace`, `ka.target.name`,
`ka.sourceips`, `ka.useragent`, plus `ka.cluster.name`: the event's cluster (named by its
envelope: an EKS log group, GKE resource labels, an AKS resourceId, the webhook's URL path), else
the configured `cluster_name`. Routes and throttle keys read them from there. They travel in
`output_fields`, which Falco consumers treat as an open map (falcosidekick adds its
`customfields` there too).
"""

from __future__ import annotations

import socket
from collections.abc import Callable, Iterable

from detector.alert.model import Alert, alert_from_match, event_nanos
from detector.alert.redact import redact_alert
from detector.errors import BadInput
from detector.parse.extract import NANOS_MAX, NANOS_MIN
from detector.rules.model import Match

CLUSTER_FIELD = "ka.cluster.name"
# The key fields, in the order they are added (the order of output_fields in the JSON); their
# values are read inline in AlertBuilder.__call__, once per alert.
KEY_FIELDS = ("ka.user.name", "ka.verb", "ka.target.resource", "ka.target.subresource", "ka.target.namespace",
              "ka.target.name", "ka.sourceips", "ka.useragent")


class AlertBuilder:
    """Builds delivery-ready alerts for one detector instance (its host; the cluster when the
    event does not name its own)."""

    def __init__(self, hostname: str | None = None, cluster_name: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self.cluster_name = cluster_name

    def __call__(self, match: Match, nanos: int | None = None) -> Alert:
        """The alert of `match`; `nanos` is its event's `event_nanos`, when the caller has it."""
        event = match.event
        alert = alert_from_match(match, self.hostname, nanos)
        fields = alert.output_fields
        get = fields.get
        # One statement per key field (was a loop over a dict of lambdas: ~half the cost).
        user, ref = event.user, event.objectRef
        if get("ka.user.name") is None and (value := user.username) is not None:
            fields["ka.user.name"] = value
        if get("ka.verb") is None and (value := event.verb) is not None:
            fields["ka.verb"] = value
        if get("ka.target.resource") is None and (value := ref.resource) is not None:
            fields["ka.target.resource"] = value
        if get("ka.target.subresource") is None and (value := ref.subresource) is not None:
            fields["ka.target.subresource"] = value
        if get("ka.target.namespace") is None and (value := ref.namespace) is not None:
            fields["ka.target.namespace"] = value
        if get("ka.target.name") is None and (value := ref.name) is not None:
            fields["ka.target.name"] = value
        if get("ka.sourceips") is None and event.sourceIPs:
            fields["ka.sourceips"] = list(event.sourceIPs)
        if get("ka.useragent") is None and (value := event.userAgent) is not None:
            fields["ka.useragent"] = value
        if get(CLUSTER_FIELD) is None:
            cluster = event.cluster or self.cluster_name
            if cluster is not None:
                fields[CLUSTER_FIELD] = cluster
        return redact_alert(alert, event)


def build_alerts(
        build: AlertBuilder, matches: Iterable[Match], on_error: Callable[[BadInput], None] | None,
        wanted: Callable[[Match], bool] | None = None) -> list[Alert]:
    """The alerts of `matches` (of those `wanted` says some output takes, if given). One that
    cannot be built is reported to `on_error` and skipped (raised without one): no event may
    stop scan or the daemon, and no alert goes out that skipped redaction. Alerts whose time had
    to be clamped (see alert.model.time_in_range) go out, and are reported once, naming their rules."""
    alerts, clamped = [], []
    for match in matches:
        if wanted is not None and not wanted(match):
            continue
        nanos = event_nanos(match.event)  # once: the range check and the alert's time
        if on_error is not None and not NANOS_MIN <= nanos <= NANOS_MAX:
            clamped.append(match)
        try:
            alerts.append(build(match, nanos))
        except Exception as exc:
            if on_error is None:
                raise
            on_error(BadInput("alert_error", f"alert of rule {match.rule!r} not built: {type(exc).__name__}: {exc}"))
    if clamped and on_error is not None:
        on_error(_clamped(clamped))
    return alerts


def _clamped(matches: list[Match]) -> BadInput:
    """The report of alerts sent with their time clamped (one per event, naming its rules)."""
    rules = ", ".join(repr(match.rule) for match in matches)
    which = f"the alert of rule {rules} carries" if len(matches) == 1 else f"the alerts of rules {rules} carry"
    stamp = matches[0].event.stageTimestamp
    return BadInput("time_out_of_range", f"stageTimestamp {stamp!r} is outside what an alert's evt.time holds "
                    f"(1677-09-21 to 2262-04-11): {which} the nearest time")
