"""Cloud and webhook envelopes (parse.envelopes, parse.gke) decoded by parse_line / parse_document."""

from __future__ import annotations

import base64
import gzip
from pathlib import Path
from typing import Any

import orjson
import pytest

from detector.errors import BadInput
from detector.event import AuditEvent
from detector.parse.audit import line_parser, parse_document, parse_line
from detector.parse.envelopes import Envelope, decode_body
from detector.parse.fields import FIELDS
from detector.parse.fieldspec import FieldOptions

FIXTURES = Path(__file__).resolve().parents[2] / "fixtures" / "envelopes"


def events_of(data: bytes, envelope: Envelope = Envelope.AUTO) -> tuple[list[AuditEvent], list[BadInput]]:
    """The events of one line, and what was reported about it."""
    bad: list[BadInput] = []
    parsed = line_parser(envelope)(data, bad.append)
    return (parsed if isinstance(parsed, list) else [parsed]), bad


def field(event: AuditEvent, name: str) -> Any:
    return FIELDS[name].build(None, FieldOptions())(event)


def lines(name: str) -> list[bytes]:
    return (FIXTURES / name).read_bytes().splitlines()


def test_eks_cloudwatch_record_yields_its_events_with_the_cluster() -> None:
    """A CloudWatch Logs subscription record gives each logEvent's event; the cluster is the log group's."""
    events, bad = events_of(lines("eks_cloudwatch.json")[0])
    assert not bad and [e.auditID for e in events] == [
        "e68db4af-2de6-5cb5-ba4b-85bc5f3e2613", "3b24b64e-b7f9-588f-9405-60e3de6eb252"]
    assert {e.cluster for e in events} == {"prod-eks"} and field(events[1], "ka.cluster.name") == "prod-eks"
    message = orjson.loads(lines("eks_cloudwatch.json")[0])["logEvents"][0]["message"]
    assert events[0].line() == message.encode()  # the event's bytes are the message as the API server wrote it


def test_eks_base64_gzip_lines_and_control_message() -> None:
    """base64 of gzip is decoded; a CONTROL_MESSAGE gives nothing and is not reported."""
    control, data = lines("eks_cloudwatch.b64")
    assert events_of(control) == ([], [])
    events, bad = events_of(data)
    assert len(events) == 2 and not bad


def test_firehose_request_with_two_records() -> None:
    """Each Firehose record (base64 gzip CloudWatch data) is decoded; both records' events come out."""
    events, bad = events_of(lines("eks_firehose.json")[0])
    assert not bad and len(events) == 3 and {e.cluster for e in events} == {"prod-eks"}


def test_bad_records_are_reported_with_their_place_and_the_rest_kept() -> None:
    """A bad record names the request id and record index; the good records' events are kept."""
    request = orjson.loads(lines("eks_firehose.json")[0])
    request["records"].insert(1, {"data": "not base64!"})
    cw = orjson.loads(gzip.decompress(base64.b64decode(request["records"][0]["data"])))
    cw["logEvents"][1]["message"] = "{not json"
    request["records"][0]["data"] = base64.b64encode(gzip.compress(orjson.dumps(cw))).decode()
    events, bad = events_of(orjson.dumps(request))
    assert len(events) == 2
    assert [(b.reason, b.message.split(":")[0]) for b in bad] == [
        ("invalid_json", f"request {request['requestId']} record 1"),
        ("bad_envelope", f"request {request['requestId']} record 2")]
    assert "logEvent 2 (id " in bad[0].message


def test_gke_entries_map_to_faithful_events() -> None:
    """methodName/resourceName give verb, objectRef and subresource; status gives the code (7 -> 403)."""
    exec_line, secret_line, other = lines("gke_logentries.jsonl")
    [exec_event], _ = events_of(exec_line)
    ref = exec_event.objectRef
    assert (exec_event.verb, ref.resource, ref.subresource) == ("create", "pods", "exec")
    assert (exec_event.objectRef.namespace, exec_event.objectRef.name) == ("payments", "ledger-0")
    assert exec_event.responseStatus is not None and exec_event.responseStatus.code == 101
    assert exec_event.auditID == "8d0e6a0a-3c5b-4f07-9d55-1a2b3c4d5e6f" and exec_event.cluster == "gke-eu-1"
    assert exec_event.stageTimestamp == "2025-05-14T09:20:30.061534Z"  # timestamp, not receiveTimestamp
    assert field(exec_event, "ka.auth.decision") == "allow" and field(exec_event, "ka.user.name") == "alice@example.com"
    assert list(field(exec_event, "ka.sourceips")) == ["203.0.113.24"] and field(exec_event, "ka.uri") == (
        "/api/v1/namespaces/payments/pods/ledger-0/exec")
    [secret], _ = events_of(secret_line)
    assert field(secret, "ka.response.code") == "403" and field(secret, "ka.auth.decision") == "forbid"
    assert field(secret, "ka.verb") == "get" and field(secret, "ka.target.resource") == "secrets"
    assert field(secret, "ka.user.groups") is None  # GKE does not carry groups: not invented
    with pytest.raises(BadInput) as skipped:
        parse_line(other)
    assert skipped.value.reason == "skipped_entry"


@pytest.mark.parametrize(("code", "http"), [(None, 200), (0, 200), (7, 403), (16, 401), (5, 404), (6, 409),
                                            (3, 400), (8, 429), (13, 500), (14, 503)])
def test_gke_status_codes_map_to_http(code: int | None, http: int) -> None:
    """google.rpc codes become the HTTP code the API server answered; no status is OK."""
    entry = orjson.loads(lines("gke_logentries.jsonl")[1])
    entry["protoPayload"].pop("status")
    if code is not None:
        entry["protoPayload"]["status"] = {"code": code}
    [event], _ = events_of(orjson.dumps(entry))
    assert event.responseStatus is not None and event.responseStatus.code == http


def test_gke_resource_names() -> None:
    """Cluster-scoped, grouped and namespace objects are read from resourceName as kube-apiserver does."""
    entry = orjson.loads(lines("gke_logentries.jsonl")[1])
    for name, ref in [
        ("rbac.authorization.k8s.io/v1/clusterrolebindings/admin",
         {"resource": "clusterrolebindings", "name": "admin", "apiGroup": "rbac.authorization.k8s.io"}),
        ("core/v1/namespaces/prod", {"resource": "namespaces", "namespace": "prod", "name": "prod"}),
        ("core/v1/namespaces/prod/finalize", {"resource": "namespaces", "namespace": "prod", "name": "prod",
                                              "subresource": "finalize"}),
        ("apps/v1/namespaces/prod/deployments", {"resource": "deployments", "namespace": "prod", "apiGroup": "apps"}),
    ]:
        entry["protoPayload"]["resourceName"] = name
        [event], _ = events_of(orjson.dumps(entry))
        got = {k: v for k, v in event.body()["objectRef"].items() if k != "apiVersion"}
        assert got == ref, name


def test_pubsub_push_body() -> None:
    """A Pub/Sub push body's base64 data (a LogEntry) is decoded; the message id names its place."""
    events, bad = events_of(lines("gke_pubsub.json")[0])
    assert not bad and [e.cluster for e in events] == ["gke-eu-1"]
    assert events[0].responseStatus is not None and events[0].responseStatus.code == 403


def test_aks_records_skip_other_categories_and_report_bad_ones() -> None:
    """kube-audit and kube-audit-admin records are events; other categories are reported skipped, counted."""
    events, bad = events_of(lines("aks_records.json")[0])
    assert len(events) == 2 and {e.cluster for e in events} == {"aks-weu-1"}
    assert sorted((b.reason, b.message) for b in bad) == [
        ("missing_timestamp", "record 3: event has no stageTimestamp"),
        ("skipped_category", "AKS records of other categories skipped: kube-apiserver=1")]


def test_spool_lines() -> None:
    """Spool lines: EventList items without kind are events (bytes as sent), the URL's cluster wins."""
    audit, firehose, pubsub = lines("spool.jsonl")
    events, bad = events_of(audit)
    assert [e.cluster for e in events] == ["edge-1", "edge-1"] and events[0].kind == "Event"
    body = orjson.loads(audit)["body"]
    assert events[0].line() == orjson.dumps(body["items"][0])
    assert [(b.reason, b.message.split(":")[0]) for b in bad] == [("not_audit_event", "request req-1 item 3")]
    events, bad = events_of(firehose)
    assert len(events) == 3 and {e.cluster for e in events} == {"prod-eks"} and not bad
    spooled = orjson.loads(pubsub)
    spooled["cluster"] = "from-path"
    events, bad = events_of(orjson.dumps(spooled))
    assert [e.cluster for e in events] == ["from-path"] and not bad


def test_decode_body_is_what_the_receiver_calls() -> None:
    """decode_body takes a request body as the receiver got it; a retry decodes to the same bytes."""
    body = (FIXTURES / "eks_firehose.json").read_bytes()
    first = decode_body("firehose", body, "c1", "request r")
    again = decode_body("firehose", body, "c1", "request r")
    assert first == again and len(first) == 3 and all(getattr(p, "cluster", None) == "c1" for p in first)
    [bad] = decode_body("pubsub", body, None, "request r")
    assert isinstance(bad, BadInput) and bad.reason == "bad_envelope"


def test_eventlist_items_without_kind_are_events() -> None:
    """The API server's EventList items carry no kind/apiVersion: they are accepted."""
    item = {k: v for k, v in orjson.loads(lines("eks_cloudwatch.json")[0])["logEvents"][0].items()}
    event = orjson.loads(item["message"])
    del event["kind"], event["apiVersion"]
    events, bad = events_of(orjson.dumps({"kind": "EventList", "apiVersion": "audit.k8s.io/v1", "items": [event]}))
    assert len(events) == 1 and not bad


def test_documents_and_forced_envelopes() -> None:
    """A JSON array of LogEntries is a document; --envelope eks refuses a GKE entry, none refuses envelopes."""
    entries = [orjson.loads(x) for x in lines("gke_logentries.jsonl")[:2]]
    results = parse_document(orjson.dumps(entries, option=orjson.OPT_INDENT_2))
    assert [type(r) for r in results] == [AuditEvent, AuditEvent]
    [refused] = parse_document(orjson.dumps(entries[0]), Envelope.EKS)
    assert isinstance(refused, BadInput) and refused.reason == "bad_envelope"
    with pytest.raises(BadInput):
        events_of(lines("gke_logentries.jsonl")[0], Envelope.EKS)
    with pytest.raises(BadInput):
        events_of(lines("eks_cloudwatch.json")[0], Envelope.NONE)
    assert len(events_of(lines("eks_cloudwatch.b64")[1], Envelope.EKS)[0]) == 2


def test_same_envelope_read_twice_gives_the_same_bytes() -> None:
    """Envelope-decoded events have stable bytes (stable alert ids); distinct records differ."""
    first, _ = events_of(lines("gke_logentries.jsonl")[1])
    again, _ = events_of(lines("gke_logentries.jsonl")[1])
    other, _ = events_of(lines("gke_logentries.jsonl")[0])
    assert first[0].line() == again[0].line() != other[0].line()


# -- a spool line's EventList decoded in one call, and a Kafka record of any kind --------------------------
def spool(body: bytes, endpoint: str = "audit", cluster: str | None = "c1", request: str = "r") -> bytes:
    return (b'{"detectorSpool":"v1","cluster":' + orjson.dumps(cluster) + b',"endpoint":"' + endpoint.encode()
            + b'","requestId":"' + request.encode() + b'","received":"now","body":' + body + b"}")


def item(n: int, **extra: Any) -> dict[str, Any]:
    return {"kind": "Event", "apiVersion": "audit.k8s.io/v1", "auditID": f"id-{n}", "stage": "ResponseComplete",
            "verb": "get", "stageTimestamp": f"2026-11-22T10:00:0{n}.000000Z", **extra}


def described(data: bytes) -> tuple[list[tuple[Any, ...]], list[tuple[str, str]]]:
    events, bad = events_of(data)
    return ([(e.auditID, e.kind, e.cluster, e.time, e.line()) for e in events],
            [(b.reason, b.message) for b in bad])


def test_a_spool_event_list_decoded_in_one_call_gives_what_item_by_item_gives() -> None:
    """The one-call decode of a spool line's EventList (the webhook's batches, a run of Kafka
    records) and the item-by-item way (which an oddly typed item forces on the whole line) give
    the same events, with the same bytes, cluster and time, and the same reports."""
    items = [orjson.dumps(item(1)),
             orjson.dumps({k: v for k, v in item(2).items() if k not in ("kind", "apiVersion")}),  # as the API server
             b'{ "kind": "Event",  "auditID": "id-3", "stageTimestamp": "2026-11-22t10:00:03z" }',  # spaces, lowercase
             orjson.dumps(item(4, stageTimestamp="yesterday")),
             orjson.dumps({k: v for k, v in item(5).items() if k != "auditID"}),
             orjson.dumps(item(6, kind="Foo")),
             orjson.dumps({k: v for k, v in item(7).items() if k != "stageTimestamp"}
                          | {"timestamp": "2026-11-22T10:00:07Z"})]  # v1beta1: the receive time
    line = spool(b'{"kind":"EventList","items":[' + b",".join(items) + b"]}")
    assert not any(e.raw for e in events_of(line)[0])  # one call: the bytes stay in the line until asked for
    fast = described(line)
    odd = orjson.dumps(item(8, verb=5))  # a number where text belongs: the typed decode of the line fails
    slow = described(spool(b'{"kind":"EventList","items":[' + b",".join([*items, odd]) + b"]}"))
    assert fast[0] == slow[0][:-1] and fast[1] == slow[1]
    assert [e[0] for e in fast[0]] == ["id-1", "id-2", "id-3", "id-7"]
    assert [e[4] for e in fast[0]] == [items[0], items[1], items[2], items[6]]  # each item's bytes as written
    assert {e[1:3] for e in fast[0]} == {("Event", "c1")}
    assert fast[1] == [("bad_timestamp", "request r item 4: stageTimestamp 'yesterday' is not RFC 3339"),
                       ("not_audit_event", "request r item 5: data not recognized as a k8s audit event (no auditID)"),
                       ("not_audit_event", 'request r item 6: data not recognized as a k8s audit event (kind="Foo")')]


def test_a_spool_line_of_only_bad_items_raises_its_first_report_without_a_handler() -> None:
    """As for an EventList line: with no one to report to, a line without a usable item is an error."""
    data = spool(b'{"kind":"EventList","items":[' + orjson.dumps(item(1, stageTimestamp=None)) + b"]}")
    with pytest.raises(BadInput, match="request r item 1: event has no stageTimestamp"):
        parse_line(data)


def test_spool_lines_that_are_no_event_list_take_the_piece_by_piece_way() -> None:
    """One Event as the body, an unknown version, an empty list: each read (or reported) as before."""
    [one], bad = events_of(spool(orjson.dumps(item(1)), cluster=None))
    assert one.auditID == "id-1" and one.cluster is None and not bad
    with pytest.raises(BadInput, match="unknown detectorSpool version 'v9'"):
        parse_line(spool(b'{"kind":"EventList","items":[]}').replace(b'"v1"', b'"v9"'))
    assert events_of(spool(b'{"kind":"EventList","items":[]}')) == ([], [])


def test_a_kafka_record_is_any_envelope_or_event_as_written() -> None:
    """The `record` endpoint: an envelope (AKS records, named by resourceId unless the record names
    its cluster), an Event in any key order, an EventList or an array; the bytes of a plain Event
    are the record's; what is no JSON or no event is reported naming the record."""
    sorted_event = orjson.dumps(item(1), option=orjson.OPT_SORT_KEYS)
    [event], bad = events_of(spool(sorted_event, "record", "k1", "t/0/5"))
    assert (event.auditID, event.cluster, event.line()) == ("id-1", "k1", sorted_event) and not bad
    aks = orjson.dumps({"records": [{"resourceId": "/x/providers/Microsoft.ContainerService/managedClusters/aks-1",
                                     "category": "kube-audit", "properties": {"log": orjson.dumps(item(2)).decode()}}]})
    assert [(e.auditID, e.cluster) for e in events_of(spool(aks, "record", None))[0]] == [("id-2", "aks-1")]
    assert [(e.auditID, e.cluster) for e in events_of(spool(aks, "record", "k1"))[0]] == [("id-2", "k1")]
    listed = orjson.dumps({"kind": "EventList", "items": [item(3), item(4)]})
    assert [e.auditID for e in events_of(spool(b"[" + listed + b"]", "record"))[0]] == ["id-3", "id-4"]
    [bad_json] = decode_body("record", b'{"a": tru}', None, "request t/1/9")
    assert isinstance(bad_json, BadInput) and bad_json.reason == "invalid_json"
    assert bad_json.message.startswith("request t/1/9: invalid JSON")
    with pytest.raises(BadInput, match=r"^request t/1/10: data not recognized as a k8s audit event \(kind=missing\)"):
        parse_line(spool(b'{"foo": 1}', "record", None, "t/1/10"))
