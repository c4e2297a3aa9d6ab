"""What a real `detector run` exports on /metrics agrees with docs/operations.md and the Grafana dashboard."""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families

from detector.kafkarun import KafkaMetrics
from detector.live import InputObserver
from detector.metrics import Metrics
from detector.version import package_version
from tests.integration.live.harness import REPO, Detector, event_line, wait_for
from tests.integration.live.test_run_metrics_listener import free_port, get

DASHBOARD = REPO / "deploy" / "grafana" / "detector.json"
SUFFIXES = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count"),
            "info": ("_info",)}
PROMQL_WORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "and", "or", "unless", "bool",
                "offset", "le", "inf", "nan"}
TAGGED = """\
- rule: Pod Read
  desc: every get of a pod
  condition: ka.verb = get and ka.target.resource = pods
  output: pod read %ka.target.name
  priority: CRITICAL
  source: k8s_audit
  tags: [k8s, T1552, access]
"""


def series_names(text: str) -> set[str]:
    """The names a query can use for every family in an exposition, also families without samples yet."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(sample.name for sample in family.samples)
    return names


def documented_names(text: str) -> set[str]:
    """detector_* families as the docs table names them: counters with `_total`, others by their name."""
    return {family.name + ("_total" if family.type == "counter" else "")
            for family in text_string_to_metric_families(text) if family.name.startswith("detector_")}


def registry_text(metrics: Metrics) -> str:
    from prometheus_client.exposition import generate_latest  # noqa: PLC0415

    return generate_latest(metrics.registry).decode()


def input_only(names: Callable[[str], set[str]], observer: Callable[[Metrics, Any], object]) -> set[str]:
    """The names (as `names` reads an exposition) that only a run with one input registers."""
    metrics = Metrics()
    plain = names(registry_text(metrics))
    observer(metrics, lambda name, fields: None)
    return names(registry_text(metrics)) - plain


INPUTS = {"webhook": InputObserver, "kafka": KafkaMetrics}  # input type -> what registers its metrics


def documented() -> dict[str, set[str]]:
    """docs/operations.md's metrics tables: detector's own series ("") and those of each input."""
    doc = (REPO / "docs" / "operations.md").read_text()
    section = doc.split("## Metrics and alerting", 1)[1].split("\n## ", 1)[0]
    parts = re.split(r"^With the ([a-z]+) input", section, flags=re.M)
    pattern = re.compile(r"^\| `(detector_[a-z_]+)(?:\{[^}]*\})?` \|", re.M)
    tables = {"": set(pattern.findall(parts[0]))}
    tables.update((name, set(pattern.findall(text))) for name, text in zip(parts[1::2], parts[2::2], strict=True))
    return tables


def queries(node: Any) -> Iterator[str]:
    """Every PromQL expression of the dashboard: panel targets and template variable queries."""
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("expr", "definition") and isinstance(value, str):
                yield value
            else:
                yield from queries(value)
    elif isinstance(node, list):
        for item in node:
            yield from queries(item)


def metric_names(query: str) -> set[str]:
    """The metric names a PromQL (or Grafana label_values) query reads."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', query)  # label values
    text = re.sub(r"\{[^}]*\}", "", text)  # matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges
    text = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text)
    text = re.sub(r"label_values\(([a-zA-Z_:][\w:]*)\s*,\s*\w+\)", r"\1", text)  # Grafana's: metric, label
    text = re.sub(r"\$\w+", "", text)
    names = {m.group(1) for m in re.finditer(r"\b([a-zA-Z_:][\w:]*)\b(?!\s*\()", text)}
    return {n for n in names if n.lower() not in PROMQL_WORDS}


@pytest.fixture(scope="module")
def exported(tmp_path_factory: pytest.TempPathFactory) -> str:
    """/metrics of a real `detector run` that has evaluated events and matched a tagged rule."""
    port = free_port()
    detector = Detector(tmp_path_factory.mktemp("run"), rules=TAGGED, metrics={"listen": f"127.0.0.1:{port}"})
    detector.start()
    try:
        detector.wait_started()
        with detector.log.open("ab") as log:
            log.write(b"".join(event_line(n) for n in range(5)) + b"not json\n")
        wait_for(lambda: detector.delivered() >= 5, 30, "5 alerts")
        wait_for(lambda: b"detector_bad_lines_total{" in get(port, "/metrics")[1], 10, "the bad line counted")
        text = get(port, "/metrics")[1].decode()
    finally:
        code, _ = detector.terminate()
    assert code == 0
    return text


def test_matches_carry_rule_priority_source_and_sorted_tags(exported: str) -> None:
    """A match is counted with the rule's name, priority as alerts print it, source and its tags sorted."""
    assert ('detector_rule_matches_total{priority="Critical",rule="Pod Read",source="k8s_audit",'
            'tags="T1552,access,k8s"} 5.0') in exported


def test_process_python_and_build_info_series_no_created(exported: str) -> None:
    """process_* and python_* collectors and detector_build_info{version} are exported; no `_created` series."""
    names = series_names(exported)
    for name in ("process_resident_memory_bytes", "process_cpu_seconds_total", "process_open_fds",
                 "python_info", "python_gc_collections_total"):
        assert name in names, name
    assert f'detector_build_info{{version="{package_version()}"}} 1.0' in exported
    assert not [line for line in exported.splitlines() if "_created" in line.split(" ")[0]]
    assert "detector_lost_bytes_total" in names and "detector_bytes_lost_total" not in names


def test_docs_table_lists_exactly_the_exported_series(exported: str) -> None:
    """docs/operations.md lists every detector_* series a run exports, and nothing else."""
    tables = documented()
    assert tables.pop("") == documented_names(exported)
    assert tables == {name: input_only(documented_names, observer) for name, observer in INPUTS.items()}


def test_every_dashboard_query_reads_exported_metrics(exported: str) -> None:
    """Each metric name in each query of deploy/grafana/detector.json is one detector exports."""
    dashboard = json.loads(DASHBOARD.read_text())
    known = series_names(exported).union(*(input_only(series_names, observer) for observer in INPUTS.values()))
    found = list(queries(dashboard))
    assert len(found) >= 20
    used = set()
    for query in found:
        names = metric_names(query)
        assert names, query
        assert names <= known, (query, names - known)
        used |= names
    for needed in ("detector_events_total", "detector_lag_seconds", "detector_rule_matches_total",
                   "detector_alerts_total", "detector_outbox_pending", "detector_lost_bytes_total",
                   "detector_data_loss_events_total", "detector_rule_reloads_total"):
        assert needed in used, needed


def test_metric_names_resolves_promql() -> None:
    """The query reader finds metric names, not functions, labels, label values or Grafana variables."""
    assert metric_names('histogram_quantile(0.99, sum by (le) (rate(a_bucket{job=~"$job"}[$__rate_interval])))') \
        == {"a_bucket"}
    assert metric_names('label_values(detector_build_info{job=~"$job"}, instance)') == {"detector_build_info"}
    assert metric_names("topk(10, sum by (rule) (rate(x_total[5m]))) / on (rule) y") == {"x_total", "y"}
