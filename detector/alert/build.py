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

from detector.alert.model import Alert, alert_from_match, time_in_range
from detector.alert.redact import redact_alert
from detector.errors import BadInput
from detector.event import AuditEvent
from detector.rules.model import Match

CLUSTER_FIELD = "ka.cluster.name"
_KEY_FIELDS: dict[str, Callable[[AuditEvent], str | list[str] | None]] = {
    "ka.user.name": lambda e: e.user.username,
    "ka.verb": lambda e: e.verb,
    "ka.target.resource": lambda e: e.objectRef.resource,
    "ka.target.subresource": lambda e: e.objectRef.subresource,
    "ka.target.namespace": lambda e: e.objectRef.namespace,
    "ka.target.name": lambda e: e.objectRef.name,
    "ka.sourceips": lambda e: list(e.sourceIPs) if e.sourceIPs else None,
    "ka.useragent": lambda e: e.userAgent,
}


class AlertBuilder:
    """Builds delivery-ready alerts for one detector instance (its host; the cluster when the
    event does not name its own)."""

    def __init__(self, hostname: str | None = None, cluster_name: str | None = None) -> None:
        self.hostname = hostname or socket.gethostname()
        self.cluster_name = cluster_name

    def __call__(self, match: Match) -> Alert:
        alert = alert_from_match(match, self.hostname)
        fields = alert.output_fields
        for name, extract in _KEY_FIELDS.items():
            if fields.get(name) is None:
                value = extract(match.event)
                if value is not None:
                    fields[name] = value
        if fields.get(CLUSTER_FIELD) is None:
            cluster = match.event.cluster or self.cluster_name
            if cluster is not None:
                fields[CLUSTER_FIELD] = cluster
        return redact_alert(alert, match.event)


def build_alerts(
        build: AlertBuilder, matches: Iterable[Match], on_error: Callable[[BadInput], None] | None) -> list[Alert]:
    """The alerts of `matches`. One that cannot be built is reported to `on_error` and skipped
    (raised without one): no event may stop scan or the daemon, and no alert goes out that
    skipped redaction. Alerts whose time had to be clamped (see alert.model.time_in_range) go
    out, and are reported once, naming their rules."""
    alerts, clamped = [], []
    for match in matches:
        if on_error is not None and not time_in_range(match.event):
            clamped.append(match)
        try:
            alerts.append(build(match))
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
