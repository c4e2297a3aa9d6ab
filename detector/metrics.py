"""Prometheus metrics and the /healthz, /readyz endpoints of `detector run`.

One registry per process (not the global one, so tests can run several), served by
detector/httpd.py's bounded responder on one daemon thread.
"""

from __future__ import annotations

import json
import time
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector

from detector.httpd import DEFAULT_LIMITS, BoundedHTTPServer, Limits, Response, Route
from detector.rules.model import Match, Priority
from detector.version import package_version


class Metrics:
    """Every metric `detector run` exports, plus the health state behind the probes.

    Names carry their unit as a suffix (`_bytes`, `_seconds`; counters `_total`), and no counter
    has a `_created` twin. Beside detector's own series: `process_*` (memory, CPU, file
    descriptors), `python_info` and `python_gc_*`, and `detector_build_info{version}`."""

    def __init__(self) -> None:
        disable_created_metrics()  # type: ignore[no-untyped-call]  # process-wide: `_created` doubles every counter
        r = self.registry = CollectorRegistry()
        ProcessCollector(registry=r)
        PlatformCollector(registry=r)
        GCCollector(registry=r)
        Gauge("detector_build_info", "Always 1; the detector version running", ["version"],
              registry=r).labels(package_version()).set(1)
        self.lines = Counter("detector_lines_read", "Complete lines read from the audit log", registry=r)
        self.events = Counter("detector_events", "Audit events evaluated", registry=r)
        self.bad_lines = Counter("detector_bad_lines", "Lines skipped, by reason", ["reason"], registry=r)
        self.lag_bytes = Gauge("detector_lag_bytes", "Bytes written to the log but not read yet", registry=r)
        self.lag_seconds = Gauge("detector_lag_seconds", "Now minus the stageTimestamp of the last event",
                                 registry=r)
        self.rotations = Counter("detector_rotations", "Log rotations followed", registry=r)
        self.gaps_possible = Counter("detector_gaps_possible", "Times whole log files may have been deleted before "
                                     "they were read, by reason", ["reason"], registry=r)
        self.watch_overflows = Counter("detector_watch_overflows", "inotify queue overflows (events dropped by the "
                                       "kernel; the log and its backups are looked at again)", registry=r)
        self.bytes_lost = Counter("detector_lost_bytes", "Log bytes lost before they could be read", registry=r)
        self.data_losses = Counter("detector_data_loss_events", "Times log data was lost (size known or not)",
                                   registry=r)
        self.matches = Counter("detector_rule_matches", "Rule matches, by rule, priority, source and tags (the "
                               "rule's tags sorted, comma-separated)", ["rule", "priority", "source", "tags"],
                               registry=r)
        self._match_counters: dict[tuple[str, Priority, str, tuple[str, ...]], Counter] = {}
        self.evaluation = Histogram("detector_evaluation_seconds", "Time to parse and evaluate one batch of lines",
                                    registry=r, buckets=(0.0005, 0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1, 5))
        self.alerts = Counter("detector_alerts", "Alert deliveries, by output and result "
                              "(sent, failed, retried, dead_lettered, dropped, suppressed)",
                              ["output", "result"], registry=r)
        self.outbox_depth = Gauge("detector_outbox_pending", "Alerts waiting in the outbox", registry=r)
        self.outbox_dead = Gauge("detector_outbox_dead_letters", "Alerts in the dead-letter table", registry=r)
        self.outbox_oldest = Gauge("detector_outbox_oldest_seconds", "Age of the oldest pending alert", registry=r)
        self.checkpoint_age = Gauge("detector_checkpoint_age_seconds", "Seconds since the last checkpoint",
                                    registry=r)
        self.rules_loaded = Gauge("detector_rules_loaded", "Rules active in the running ruleset", registry=r)
        self.reloads = Counter("detector_rule_reloads", "Rule reloads, by result", ["result"], registry=r)
        self.state_write_failures = Counter("detector_state_write_failures", "Failed attempts to store alerts and "
                                            "the checkpoint in state_dir (full, read-only, broken)", registry=r)
        self.heartbeat = time.monotonic()
        self.state_writable = True
        self.ready = False
        self.input_open = False
        # Stateful rules (rules/stateful.py): their state's size and what its bounds cost.
        self.stateful_keys = Gauge("detector_stateful_keys", "Keys held in the windows of stateful rules",
                                   registry=r)
        self.stateful_evictions = Counter("detector_stateful_evictions", "Keys and values evicted from the windows "
                                          "of stateful rules past max_keys / max_values, by what", ["what"],
                                          registry=r)
        self.stateful_dropped = Counter("detector_stateful_dropped_events", "Events stateful rules did not count, by "
                                        "reason (late: older than the watermark; untimed: no usable stageTimestamp)",
                                        ["reason"], registry=r)
        self._stateful_totals: dict[str, int] = {}

    def count_match(self, match: Match) -> None:
        """One match of a rule. The labels are the rule's own (its name, priority, source and
        tags), so there are as many series as rules, whatever the events."""
        key = (match.rule, match.priority, match.source, match.tags)
        counter = self._match_counters.get(key)
        if counter is None:
            counter = self._match_counters[key] = self.matches.labels(
                match.rule, match.priority.label, match.source, ",".join(sorted(set(match.tags))))
        counter.inc()

    def stateful(self, totals: dict[str, int]) -> None:
        """The totals of StatefulState.counters(): counters move by what grew since last time
        (a reload starts new rules from zero: nothing is subtracted)."""
        self.stateful_keys.set(totals.get("keys", 0))
        for name, counter in (("evicted_keys", self.stateful_evictions.labels("keys")),
                              ("evicted_values", self.stateful_evictions.labels("values")),
                              ("late", self.stateful_dropped.labels("late")),
                              ("untimed", self.stateful_dropped.labels("untimed"))):
            grown = totals.get(name, 0) - self._stateful_totals.get(name, 0)
            if grown > 0:
                counter.inc(grown)
        self._stateful_totals = dict(totals)

    def beat(self) -> None:
        """The main loop is alive."""
        self.heartbeat = time.monotonic()

    def health(self, stale_after: float) -> tuple[bool, dict[str, Any]]:
        age = time.monotonic() - self.heartbeat
        return age < stale_after, {"loop_age_seconds": round(age, 3)}

    def readiness(self) -> tuple[bool, dict[str, Any]]:
        ok = self.ready and self.input_open and self.state_writable
        return ok, {"rules_loaded": self.ready, "input_open": self.input_open, "state_writable": self.state_writable}


class MetricsServer:
    """Serves /metrics, /healthz and /readyz on `host:port` until `close()`, within `limits`
    (detector/httpd.py: one thread, bounded connections, timeouts, GET and HEAD only)."""

    def __init__(self, metrics: Metrics, listen: str, stale_after: float = 30.0,
                 limits: Limits = DEFAULT_LIMITS) -> None:
        host, port = parse_listen(listen)
        self._server = BoundedHTTPServer(host, port, _routes(metrics, stale_after), limits, name="detector-metrics")

    @property
    def port(self) -> int:
        return self._server.port

    def close(self) -> None:
        self._server.close()


def parse_listen(listen: str) -> tuple[str, int]:
    """`host:port`, `[v6]:port` or `:port` (all addresses); ValueError with a clear message."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not 0 < int(port) < 65536:
        raise ValueError(f"expected host:port, [ipv6]:port or :port, got {listen!r}")
    return host.strip("[]") or "0.0.0.0", int(port)  # an empty host: the operator asked for all addresses


def _routes(metrics: Metrics, stale_after: float) -> Route:
    def route(path: str) -> Response:
        if path == "/metrics":
            return Response(200, generate_latest(metrics.registry), CONTENT_TYPE_LATEST)
        if path in ("/healthz", "/readyz"):
            ok, detail = metrics.health(stale_after) if path == "/healthz" else metrics.readiness()
            body = json.dumps({"status": "ok" if ok else "fail", **detail}).encode()
            return Response(200 if ok else 503, body, "application/json")
        return Response(404, b"not found\n")

    return route
