"""Envelopes around audit events: what a cloud or the webhook receiver wraps them in.

- EKS: CloudWatch Logs subscription data (`{messageType, owner, logGroup, logStream,
  subscriptionFilters, logEvents: [{id, timestamp, message}]}`; gzip and base64 or not; also
  inside a Lambda `{"awslogs": {"data"}}` event) and the Amazon Data Firehose HTTP endpoint
  request (`{requestId, timestamp, records: [{data}]}`, each record base64 of such data).
- GKE: a Cloud Logging LogEntry of a k8s.io AuditLog (see parse.gke), alone or in a Pub/Sub
  push body (`{message: {data, attributes, messageId, publishTime}, subscription}`).
- AKS: diagnostic-settings records (`{records: [{time, resourceId, category, properties:
  {log}}]}`, or one record per line as in a storage account's blobs).
- The webhook and kafka inputs' spool line (`{"detectorSpool": "v1", ...}`, see docs/clouds.md);
  a Kafka record in it (endpoint `record`) may be any of the above, or Events.

This module only unwraps: it yields `Inner` pieces (an audit event's JSON text, or an Event
mapped from a LogEntry, with its cluster and where it sat) and the `BadInput` of each record
that is unusable; parse.audit turns the pieces into events. Nothing here runs for a line that
decodes as an audit event: parse.audit calls it only when that fails.
"""

from __future__ import annotations

import base64
import binascii
import gzip
import json
import re
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import msgspec
import orjson

from detector.errors import BadInput
from detector.event import TooDeep, decode_bounded, json_bytes
from detector.parse import gke


class Envelope(StrEnum):
    """Which envelopes to look for: `auto` (any, and the spool line), `none` (plain audit
    events only), or one cloud's (its records only; anything else is bad input)."""

    AUTO = "auto"
    NONE = "none"
    EKS = "eks"
    GKE = "gke"
    AKS = "aks"


@dataclass(frozen=True, slots=True)
class Inner:
    """One audit event inside an envelope: its JSON text as the producer wrote it (bytes), or
    the Event mapped from another format (a dict); its cluster; where it sat, for reports."""

    data: bytes | dict[str, Any]
    cluster: str | None
    where: str
    item: bool = False  # an EventList item of the webhook: it carries no `kind` of its own


Piece = Inner | BadInput
SPOOL_PREFIX = b'{"detectorSpool"'
SPOOL_VERSION = "v1"
AKS_AUDIT_CATEGORIES = frozenset({"kube-audit", "kube-audit-admin"})
_EKS_LOG_GROUP = re.compile(r"^/aws/eks/([^/]+)/cluster$")
_AKS_CLUSTER = re.compile(r"/providers/microsoft\.containerservice/managedclusters/([^/]+)", re.IGNORECASE)
_GZIP_MAGIC = b"\x1f\x8b"


def unwrap_value(value: Any, envelope: Envelope = Envelope.AUTO, where: str = "") -> list[Piece] | None:
    """The pieces of a parsed JSON value that is an envelope `envelope` allows; None if it is
    none (the caller then treats it as what it is, e.g. not an audit event)."""
    if not isinstance(value, dict):
        return None
    kind = _kind_of(value)
    if kind is None or (envelope is not Envelope.AUTO and kind not in _CLOUD_KINDS.get(envelope, ())):
        return None
    return list(_UNWRAP[kind](value, where))


def unwrap_text(data: bytes, envelope: Envelope = Envelope.AUTO) -> list[Piece] | None:
    """The pieces of a line that is no JSON but base64 (of gzip) of an envelope, as CloudWatch
    Logs delivers subscription data; None if it is not that."""
    if envelope is Envelope.NONE:
        return None
    try:
        decoded = base64.b64decode(data.strip(), validate=True)
    except (binascii.Error, ValueError):
        return None
    try:
        values = _json_values(_gunzip(decoded))
    except BadInput:
        return None
    pieces: list[Piece] = []
    for value in values:
        got = unwrap_value(value, envelope)
        if got is None:
            return None
        pieces += got
    return pieces


def unwrap_spool(line: bytes) -> list[Piece]:
    """The pieces of one spool line the webhook receiver wrote (one accepted HTTP request).
    The spool's cluster (from the URL path) wins over the envelope's."""
    try:
        spool = _SPOOL.decode(line)
    except (msgspec.DecodeError, RecursionError):
        return [BadInput("bad_envelope", "spool line is not a detectorSpool object")]
    where = f"request {spool.requestId}" if spool.requestId else "request"
    if spool.detectorSpool != SPOOL_VERSION:
        return [BadInput("bad_envelope", f"{where}: unknown detectorSpool version {spool.detectorSpool!r}")]
    return decode_body(spool.endpoint, spool.body, spool.cluster, where)


def decode_body(endpoint: str, body: bytes | memoryview | msgspec.Raw, cluster: str | None,
                where: str = "request") -> list[Piece]:
    """The pieces of one spooled body: a webhook request's, `audit` (an EventList or an Event),
    `firehose` (a Firehose HTTP endpoint request) or `pubsub` (a Pub/Sub push body); or a Kafka
    record's, `record` (see `_record`). `cluster`, when set, is every event's; else the envelope's."""
    if endpoint == "audit":
        return _audit_body(body, cluster, where)
    if endpoint == "record":
        return _with_cluster(_record(bytes(body), where), cluster)
    if endpoint not in ("firehose", "pubsub"):
        return [BadInput("bad_envelope", f"{where}: unknown endpoint {endpoint!r}")]
    try:
        value = loads_json(bytes(body))
    except BadInput as exc:
        return [BadInput(exc.reason, f"{where}: {exc.message}")]
    kind = _kind_of(value) if isinstance(value, dict) else None
    if kind != endpoint:
        return [BadInput("bad_envelope", f"{where}: body is not a {endpoint} request")]
    return _with_cluster(list(_UNWRAP[kind](value, f"{where}: ")), cluster)


def spool_items(line: bytes) -> list[msgspec.Raw]:
    """The items of the EventList in a spool line's body, each as written (parse.audit decodes
    the items of such a line in one call, and cuts an item's bytes out only when asked)."""
    items = _EVENT_LIST.decode(_SPOOL.decode(line).body).items
    return items if items is not None else []


def _with_cluster(pieces: list[Piece], cluster: str | None) -> list[Piece]:
    if cluster is None:
        return pieces
    return [replace(p, cluster=cluster) if isinstance(p, Inner) else p for p in pieces]


def _record(data: bytes, where: str) -> list[Piece]:
    """One Kafka record as its producer wrote it: any envelope (AKS diagnostic records as Event
    Hubs holds them, CloudWatch Logs data, a LogEntry, a Pub/Sub message, ...), else an Event,
    an EventList or an array of them, which parse.audit reads (or reports as no audit event)."""
    try:
        value = loads_json(data)
    except BadInput as exc:
        return [BadInput(exc.reason, f"{where}: {exc.message}")]
    pieces = unwrap_value(value, Envelope.AUTO, f"{where}: ")
    return pieces if pieces is not None else [Inner(data, None, where)]


class _Spool(msgspec.Struct):
    detectorSpool: str  # noqa: N815 - the JSON keys
    endpoint: str
    body: msgspec.Raw
    cluster: str | None = None
    requestId: str | None = None  # noqa: N815
    received: str | None = None


class _EventList(msgspec.Struct):
    kind: str | None = None
    items: list[msgspec.Raw] | None = None


_SPOOL = msgspec.json.Decoder(_Spool)
_EVENT_LIST = msgspec.json.Decoder(_EventList)


def _audit_body(body: bytes | memoryview | msgspec.Raw, cluster: str | None, where: str) -> list[Piece]:
    """An EventList's items keep the bytes the API server sent (stable alert ids on a retry)."""
    try:
        head = _EVENT_LIST.decode(body)
    except (msgspec.DecodeError, RecursionError):
        return [Inner(bytes(body), cluster, where)]  # parse.audit reports what it is
    if head.kind != "EventList" or head.items is None:
        return [Inner(bytes(body), cluster, where)]
    return [Inner(bytes(item), cluster, f"{where} item {index}", item=True)
            for index, item in enumerate(head.items, start=1)]


def _kind_of(value: dict[str, Any]) -> str | None:
    if "detectorSpool" in value:
        return "spool"
    if "logEvents" in value and "messageType" in value:
        return "cloudwatch"
    if "records" in value:
        return "firehose" if "requestId" in value else "aks"
    if "protoPayload" in value:
        return "logentry"
    if "message" in value and "subscription" in value:
        return "pubsub"
    if isinstance(value.get("awslogs"), dict):
        return "awslogs"
    if "category" in value and "resourceId" in value and "properties" in value:
        return "aks_record"
    return None


def _cloudwatch(value: dict[str, Any], where: str) -> Iterator[Piece]:
    if value.get("messageType") == "CONTROL_MESSAGE":
        return  # CloudWatch Logs checks that the destination is reachable: no log events
    events = value.get("logEvents")
    if value.get("messageType") != "DATA_MESSAGE" or not isinstance(events, list):
        yield BadInput("bad_envelope", f"{where}CloudWatch Logs data without DATA_MESSAGE logEvents")
        return
    group = value.get("logGroup")
    match = _EKS_LOG_GROUP.match(group) if isinstance(group, str) else None
    cluster = match.group(1) if match else None
    for index, event in enumerate(events, start=1):
        message = event.get("message") if isinstance(event, dict) else None
        ident = event.get("id") if isinstance(event, dict) else None
        place = f"{where}logEvent {index}" + (f" (id {ident})" if ident is not None else "")
        if not isinstance(message, str):
            yield BadInput("bad_envelope", f"{place}: no message")
            continue
        yield Inner(message.encode(), cluster, place)


def _awslogs(value: dict[str, Any], where: str) -> Iterator[Piece]:
    yield from _data_pieces(value["awslogs"].get("data"), f"{where}awslogs", Envelope.EKS)


def _firehose(value: dict[str, Any], where: str) -> Iterator[Piece]:
    records = value["records"]
    request = value.get("requestId")
    where = f"{where}request {request} " if request and not where else where
    if not isinstance(records, list):
        yield BadInput("bad_envelope", f"{where}Firehose request without a records list")
        return
    for index, record in enumerate(records, start=1):
        data = record.get("data") if isinstance(record, dict) else None
        yield from _data_pieces(data, f"{where}record {index}", Envelope.AUTO)


def _pubsub(value: dict[str, Any], where: str) -> Iterator[Piece]:
    message = value["message"]
    data = message.get("data") if isinstance(message, dict) else None
    ident = message.get("messageId") if isinstance(message, dict) else None
    yield from _data_pieces(data, f"{where}message {ident}" if ident else f"{where}message", Envelope.AUTO)


def _data_pieces(data: Any, where: str, envelope: Envelope) -> Iterator[Piece]:
    """Base64 data (of gzip or not) holding envelopes or plain audit events."""
    try:
        if not isinstance(data, str):
            raise BadInput("bad_envelope", "no base64 data")
        try:
            raw = _gunzip(base64.b64decode(data, validate=True))
        except (binascii.Error, ValueError):
            raise BadInput("bad_envelope", "data is not base64") from None
        values = _json_values(raw)
    except BadInput as exc:
        yield BadInput(exc.reason, f"{where}: {exc.message}")
        return
    for value in values:
        pieces = unwrap_value(value, envelope, f"{where}: ")
        if pieces is not None:
            yield from pieces
        else:  # a plain audit event (or what parse.audit will report as not one)
            yield Inner(raw if len(values) == 1 else json_bytes(value), None, where)


def _logentry(value: dict[str, Any], where: str) -> Iterator[Piece]:
    place = f"{where}LogEntry {value.get('insertId')}" if value.get("insertId") else f"{where}LogEntry"
    if not gke.is_k8s_audit_entry(value):
        proto = value.get("protoPayload")
        service = proto.get("serviceName") if isinstance(proto, dict) else None
        yield BadInput("skipped_entry", f"{place}: not a k8s.io audit entry (serviceName {service!r}), skipped")
        return
    try:
        yield Inner(gke.event_from_entry(value), gke.entry_cluster(value), place)
    except BadInput as exc:
        yield BadInput(exc.reason, f"{place}: {exc.message}")


def _aks(value: dict[str, Any], where: str) -> Iterator[Piece]:
    records = value["records"]
    if not isinstance(records, list):
        yield BadInput("bad_envelope", f"{where}AKS records is not a list")
        return
    skipped: dict[str, int] = {}
    for index, record in enumerate(records, start=1):
        category = record.get("category") if isinstance(record, dict) else None
        if isinstance(record, dict) and category not in AKS_AUDIT_CATEGORIES:
            skipped[str(category)] = skipped.get(str(category), 0) + 1
            continue
        yield from _aks_record(record, f"{where}record {index}")
    if skipped:
        counts = ", ".join(f"{name}={count}" for name, count in sorted(skipped.items()))
        yield BadInput("skipped_category", f"{where}AKS records of other categories skipped: {counts}")


def _aks_one(value: dict[str, Any], where: str) -> Iterator[Piece]:
    if value.get("category") not in AKS_AUDIT_CATEGORIES:
        yield BadInput("skipped_category", f"{where}AKS record of category {value.get('category')!r} skipped")
        return
    yield from _aks_record(value, f"{where}AKS record")


def _aks_record(record: Any, where: str) -> Iterator[Piece]:
    props = record.get("properties") if isinstance(record, dict) else None
    log = props.get("log") if isinstance(props, dict) else None
    if not isinstance(log, str):
        yield BadInput("bad_envelope", f"{where}: no properties.log")
        return
    resource = record.get("resourceId")
    match = _AKS_CLUSTER.search(resource) if isinstance(resource, str) else None
    yield Inner(log.encode(), match.group(1) if match else None, where)


def _spool_value(value: dict[str, Any], where: str) -> Iterator[Piece]:
    """A spool line met as a parsed value (inside a JSON document or array)."""
    yield from unwrap_spool(json_bytes(value))


_UNWRAP: dict[str, Callable[[dict[str, Any], str], Iterator[Piece]]] = {
    "spool": _spool_value, "cloudwatch": _cloudwatch, "awslogs": _awslogs, "firehose": _firehose,
    "aks": _aks, "aks_record": _aks_one, "logentry": _logentry, "pubsub": _pubsub,
}
_CLOUD_KINDS = {
    Envelope.EKS: ("cloudwatch", "awslogs", "firehose"),
    Envelope.GKE: ("logentry", "pubsub"),
    Envelope.AKS: ("aks", "aks_record"),
}


def _gunzip(data: bytes) -> bytes:
    if not data.startswith(_GZIP_MAGIC):
        return data
    try:
        return gzip.decompress(data)
    except (OSError, EOFError, zlib.error) as exc:
        raise BadInput("bad_envelope", f"corrupt gzip data: {exc}") from None


def loads_json(data: bytes, what: str = "invalid JSON") -> Any:
    """The JSON value of `data`: orjson, or msgspec (bounded, see decode_bounded) for JSON
    nested past orjson's 1,024 levels; BadInput (`what`: orjson's reason) if neither can."""
    try:
        return orjson.loads(data)
    except orjson.JSONDecodeError as exc:
        reason = f"{what}: {exc}"
    try:
        return decode_bounded(msgspec.json.decode, data)
    except (msgspec.DecodeError, TooDeep):
        raise BadInput("invalid_json", reason) from None


def _json_values(data: bytes) -> list[Any]:
    """One JSON value, or several written one after another (whitespace or nothing between)."""
    try:
        return [loads_json(data)]
    except BadInput as first:
        error = first
    try:
        text, decoder, values, at = data.decode(), json.JSONDecoder(), [], 0
        while at < len(text):
            value, at = decoder.raw_decode(text, at)
            values.append(value)
            while at < len(text) and text[at] in " \t\r\n":
                at += 1
    except (UnicodeDecodeError, ValueError, RecursionError):
        raise BadInput(error.reason, error.message) from None
    return values
