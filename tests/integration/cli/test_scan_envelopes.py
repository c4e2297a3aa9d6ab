"""`detector scan` on cloud envelope files (tests/fixtures/envelopes), run as a real process."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from subprocess import CompletedProcess

import orjson
import pytest

Run = Callable[..., CompletedProcess[str]]
FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "envelopes"
RULES = """\
- rule: Forbidden Request
  desc: the API server answered 403
  condition: ka.response.code = 403
  output: forbidden %ka.verb %ka.target.resource by %ka.user.name in %ka.cluster.name
  priority: WARNING
  source: k8s_audit
- rule: Exec Stream Opened
  desc: an exec stream into a pod was opened
  condition: ka.target.subresource = exec and ka.response.code = 101
  output: exec into %ka.target.namespace/%ka.target.name by %ka.user.name
  priority: NOTICE
  source: k8s_audit
"""


@pytest.fixture
def rules(tmp_path: Path) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(RULES)
    return path


def scan(detector: Run, rules: Path, name: str) -> tuple[list[tuple[str, str]], str, list[str]]:
    """(rule, ka.cluster.name) of each alert, the stderr, and the alert ids."""
    result = detector("scan", "--rules", str(rules), str(FIXTURES / name))
    assert result.returncode == 0, result.stderr
    alerts = [orjson.loads(x) for x in result.stdout.splitlines()]
    pairs = [(a["rule"], a["output_fields"]["ka.cluster.name"]) for a in alerts]
    return pairs, result.stderr, [a["id"] for a in alerts]


@pytest.mark.parametrize(("name", "expected"), [
    ("eks_cloudwatch.json", [("Exec Stream Opened", "prod-eks"), ("Forbidden Request", "prod-eks")]),
    ("eks_cloudwatch.json.gz", [("Exec Stream Opened", "prod-eks"), ("Forbidden Request", "prod-eks")]),
    ("eks_cloudwatch.b64", [("Exec Stream Opened", "prod-eks"), ("Forbidden Request", "prod-eks")]),
    ("eks_firehose.json", [("Exec Stream Opened", "prod-eks"), ("Forbidden Request", "prod-eks"),
                           ("Exec Stream Opened", "prod-eks")]),
    ("gke_logentries.jsonl", [("Exec Stream Opened", "gke-eu-1"), ("Forbidden Request", "gke-eu-1")]),
    ("gke_pubsub.json", [("Forbidden Request", "gke-eu-1")]),
    ("aks_records.json", [("Exec Stream Opened", "aks-weu-1"), ("Forbidden Request", "aks-weu-1")]),
])
def test_scan_each_cloud_fixture(detector: Run, rules: Path, name: str, expected: list[tuple[str, str]]) -> None:
    """Each cloud's envelope is recognised without flags; alerts carry the envelope's cluster."""
    got, _, ids = scan(detector, rules, name)
    assert got == expected
    assert scan(detector, rules, name)[2] == ids  # the same envelope read twice: the same alert ids


def test_scan_reports_skipped_and_bad_records_at_their_place(detector: Run, rules: Path) -> None:
    """AKS: another category is reported skipped, a bad inner event at file:line with its record index."""
    _, stderr, _ = scan(detector, rules, "aks_records.json")
    path = FIXTURES / "aks_records.json"
    assert f"{path}:1: missing_timestamp: record 3: event has no stageTimestamp" in stderr
    assert f"{path}:1: skipped_category: AKS records of other categories skipped: kube-apiserver=1" in stderr
    assert "events=2 bad_lines=2" in stderr


def test_scan_spool_lines(detector: Run, rules: Path) -> None:
    """Spool lines: the webhook path's cluster wins, else the envelope's; a bad item is named by request and index."""
    got, stderr, ids = scan(detector, rules, "spool.jsonl")
    assert got == [("Exec Stream Opened", "edge-1"), ("Forbidden Request", "edge-1"),
                   ("Exec Stream Opened", "prod-eks"), ("Forbidden Request", "prod-eks"),
                   ("Exec Stream Opened", "prod-eks"), ("Forbidden Request", "gke-eu-1")]
    assert f"{FIXTURES / 'spool.jsonl'}:1: not_audit_event: request req-1 item 3:" in stderr
    firehose = scan(detector, rules, "eks_firehose.json")[2]
    assert ids[2:5] == firehose  # a Firehose batch gives the same ids spooled or read from a file
    assert len(set(ids)) == len(ids)


def test_envelope_override_reads_only_that_cloud(detector: Run, rules: Path) -> None:
    """`--envelope eks` reads the EKS file as auto does; `--envelope gke` or `none` read nothing
    of it and report each line instead of guessing."""
    path = str(FIXTURES / "eks_cloudwatch.json")
    forced = detector("scan", "--envelope", "eks", "--rules", str(rules), path)
    assert forced.returncode == 0, forced.stderr
    assert sorted(orjson.loads(x)["rule"] for x in forced.stdout.splitlines()) == [
        "Exec Stream Opened", "Forbidden Request"]
    for other in ("gke", "none"):
        result = detector("scan", "--envelope", other, "--rules", str(rules), path)
        assert result.returncode == 0 and result.stdout == "", (other, result.stderr)
        assert "eks_cloudwatch.json" in result.stderr, result.stderr  # reported at its file, not silent
    assert detector("scan", "--envelope", "azure", path).returncode == 2
