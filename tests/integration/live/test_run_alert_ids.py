"""`detector run` delivers every distinct event, whatever auditIDs clients choose (issue 13).

kube-apiserver takes an event's auditID from the client's `Audit-ID` request header. With alert
ids made of (rule, auditID, stage), a client that reused one header had every later exec dropped
by the outbox as a repeat of its first: a detection bypass.
"""

from __future__ import annotations

from pathlib import Path

import orjson

from tests.integration.live.harness import Detector, wait_for

EXEC_RULE = """\
- rule: Exec Into Pod
  desc: any exec
  condition: ka.target.subresource = exec and ka.verb = create
  output: exec into %ka.target.name by %ka.user.name (%ka.uri)
  priority: WARNING
  source: k8s_audit
"""


def exec_line(n: int, pod: str = "web") -> bytes:
    """An exec whose auditID the client chose (`Audit-ID: 1`), as every one of them carries."""
    return orjson.dumps({
        "kind": "Event", "apiVersion": "audit.k8s.io/v1", "level": "Request", "auditID": "1",
        "stage": "ResponseStarted", "verb": "create",
        "requestURI": f"/api/v1/namespaces/default/pods/{pod}/exec?command=sh&command=-c&command=step{n}",
        "user": {"username": "mallory", "groups": ["system:authenticated"]}, "sourceIPs": ["203.0.113.9"],
        "objectRef": {"resource": "pods", "subresource": "exec", "namespace": "default", "name": pod,
                      "apiVersion": "v1"},
        "requestReceivedTimestamp": f"2026-11-22T10:00:{n:02d}.000000Z",
        "stageTimestamp": f"2026-11-22T10:00:{n:02d}.000100Z",
    }) + b"\n"


def test_reused_audit_id_still_delivers_every_exec(tmp_path: Path) -> None:
    """Five execs sharing one auditID give five alerts with five ids; a byte-identical repeat of
    a line is still dropped, as a repeat after a crash would be."""
    detector = Detector(tmp_path, EXEC_RULE)
    detector.start()
    detector.wait_started()
    with detector.log.open("ab") as log:
        log.write(b"".join(exec_line(n, pod=f"web-{n % 2}") for n in range(5)))
    wait_for(lambda: detector.delivered() >= 5, 30, "an alert for each of the five execs")
    with detector.log.open("ab") as log:
        log.write(exec_line(0, pod="web-0") + exec_line(5))  # a true repeat, then a new exec
    wait_for(lambda: detector.delivered() >= 6, 30, "the sixth exec")
    assert detector.terminate()[0] == 0
    alerts = [orjson.loads(x) for x in detector.alerts.read_bytes().splitlines()]
    assert len(alerts) == 6
    assert {a["audit_id"] for a in alerts} == {"1"}
    assert len({a["id"] for a in alerts}) == 6
    assert [a["output"].rsplit("step", 1)[1].rstrip(")") for a in alerts] == ["0", "1", "2", "3", "4", "5"]
