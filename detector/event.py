"""The audit event as the rest of detector sees it.

Only the "hot" fields that almost every rule or index touches are decoded eagerly, into typed,
slotted structs (msgspec skips everything else without building objects, which is what makes
the hot path fast). The full JSON body -- requestObject, responseObject, anything a JSON pointer
or JMESPath may reach -- is parsed lazily, once, on first use, from the original line.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from typing import Any, TypeVar

import msgspec
import orjson

_T = TypeVar("_T")
# Nesting msgspec may build from a line on demand. It builds objects on the C stack; under the
# recursion limit the rules loader sets for deep conditions (20,000), a line nested ~19,000
# deep crashed the process (C stack overflow) instead of raising RecursionError.
DECODE_DEPTH_LIMIT = 4_000


class TooDeep(ValueError):
    """JSON nested deeper than detector decodes into objects."""


def decode_bounded(decode: Callable[[Any], _T], data: Any) -> _T:
    """`decode(data)` with the recursion limit at DECODE_DEPTH_LIMIT (whatever the process's):
    deeper JSON raises TooDeep. (The limit is per process; only the evaluating thread decodes
    events.)"""
    limit = sys.getrecursionlimit()
    sys.setrecursionlimit(DECODE_DEPTH_LIMIT)
    try:
        return decode(data)
    except RecursionError:
        raise TooDeep(f"JSON nested deeper than {DECODE_DEPTH_LIMIT:,} levels") from None
    finally:
        sys.setrecursionlimit(limit)


def json_bytes(value: Any) -> bytes:
    """`value` as compact JSON: orjson, or msgspec where orjson gives up (nesting past 255
    levels, integers beyond 64 bits), both valid in what a line held."""
    try:
        return orjson.dumps(value)
    except TypeError:
        return decode_bounded(msgspec.json.encode, value)


class UserInfo(msgspec.Struct, gc=False):
    """`user` / `impersonatedUser` of an audit event."""

    username: str | None = None
    # Kept as JSON until a rule or an output reads them (parse.fields decodes them): most
    # events are never asked, and a list of strings cost ~0.1 us of every event's decode.
    groups: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)


class ObjectRef(msgspec.Struct, gc=False):
    """`objectRef`: what the request was about."""

    resource: str | None = None
    namespace: str | None = None
    name: str | None = None
    subresource: str | None = None
    apiGroup: str | None = None  # noqa: N815 - the JSON key


class ResponseStatus(msgspec.Struct, gc=False):
    """`responseStatus`: only the parts rules read."""

    code: int | str | None = None  # a number as the API server writes it; text if a producer differs
    reason: str | None = None


class EventMeta(msgspec.Struct, gc=False):
    """`metadata` of a v1beta1 event: only its creation time (the stage time, in seconds)."""

    creationTimestamp: str | None = None  # noqa: N815


class RequestPart(msgspec.Struct, gc=False):
    """Only the `requestObject` of an event (UNSET when it has none)."""

    requestObject: Any = msgspec.UNSET  # noqa: N815


_REQUEST_PART = msgspec.json.Decoder(RequestPart)


class AuditEvent(msgspec.Struct, gc=False):
    """One audit.k8s.io Event (v1 or v1beta1); attribute names are the JSON keys.

    `user` and `objectRef` are always present (empty when the JSON has none) so that the hot
    fields are plain attribute paths. The trailing fields are ours, never meant to be read from
    JSON (we overwrite them after decoding): the original bytes (or where to find them), the
    lazily parsed body, the parsed stage time, a per-event cache of extracted field values and
    the cluster named by the event's envelope.
    """

    kind: str | None = None
    apiVersion: str | None = None  # noqa: N815
    level: str | None = None
    auditID: str | None = None  # noqa: N815
    stage: str | None = None
    requestURI: str | None = None  # noqa: N815
    verb: str | None = None
    user: UserInfo = msgspec.field(default_factory=UserInfo)
    impersonatedUser: UserInfo | None = None  # noqa: N815
    sourceIPs: list[str] | None = None  # noqa: N815
    userAgent: str | None = None  # noqa: N815
    objectRef: ObjectRef = msgspec.field(default_factory=ObjectRef)  # noqa: N815
    responseStatus: ResponseStatus | None = None  # noqa: N815
    stageTimestamp: str | None = None  # noqa: N815
    # Kept as JSON until a rule or an output reads one (parse.fields decodes it): most events
    # never need them, and decoding the map cost ~0.2 us an event.
    annotations: msgspec.Raw = msgspec.field(default_factory=msgspec.Raw)
    # v1beta1 (and v1 lines relabelled from it) may lack stageTimestamp: parse.audit falls back
    # to these and fills stageTimestamp in.
    metadata: EventMeta | None = None
    timestamp: str | None = None
    raw: bytes = msgspec.field(default=b"", name="__detector_raw__")  # read it with line()
    # Events decoded a block at a time get their line cut out of the block only if asked:
    # `origin` is any object whose `line(position)` gives it (source.cutter.Block).
    origin: Any = msgspec.field(default=None, name="__detector_origin__")
    position: int = msgspec.field(default=0, name="__detector_position__")
    parsed_body: Any = msgspec.field(default=None, name="__detector_body__")
    request_part: RequestPart | None = msgspec.field(default=None, name="__detector_request__")
    time: datetime | None = msgspec.field(default=None, name="__detector_time__")
    cache: dict[str, Any] | None = msgspec.field(default=None, name="__detector_cache__")
    annotation_values: dict[str, str] | None = msgspec.field(default=None, name="__detector_annotations__")
    # The cluster the event came from, when its envelope says (an EKS log group, GKE resource
    # labels, an AKS resourceId, the webhook's URL path); None for a plain audit line.
    cluster: str | None = msgspec.field(default=None, name="__detector_cluster__")

    def line(self) -> bytes:
        """The event's JSON text as read (for an event built from a dict: its JSON)."""
        if not self.raw and self.origin is not None:
            self.raw = self.origin.line(self.position)
            self.origin = None  # the block need not outlive the events that still need it
        return self.raw

    def request_object(self) -> Any:
        """`requestObject`, decoded on first use without the rest of the event (UNSET if the
        event has none). Most rules that look into a body look only here, and at the
        RequestResponse level skipping `responseObject` halves the work (~20 us for a role)."""
        if self.parsed_body is not None:
            return self.parsed_body.get("requestObject", msgspec.UNSET)
        if self.request_part is None:
            self.request_part = decode_bounded(_REQUEST_PART.decode, self.line())
        return self.request_part.requestObject

    def body(self) -> dict[str, Any]:
        """The whole event as a dict, parsed on first use and kept."""
        if self.parsed_body is None:
            line = self.line()
            try:
                self.parsed_body = orjson.loads(line)
            except orjson.JSONDecodeError:
                # orjson stops at 1,024 levels of nesting, valid JSON a request object may
                # carry: a rule or the redaction reading such an event must not fail on it.
                # msgspec goes deeper (up to decode_bounded's limit).
                self.parsed_body = decode_bounded(msgspec.json.decode, line)
        body: dict[str, Any] = self.parsed_body
        return body
