"""Turn one input line (or one JSON document) into audit events.

The hot path is a single typed msgspec decode. Anything unusual -- a producer that writes a
number where a string belongs, an EventList or a JSON array on one line -- takes a slower,
lenient path that mirrors what Falco's k8saudit plugin accepts. Only there, for what is no
audit event, are cloud and webhook envelopes looked for (parse.envelopes): an ordinary line
pays nothing for them.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

import msgspec

from detector.errors import BadInput
from detector.event import AuditEvent, json_bytes
from detector.parse.envelopes import (
    SPOOL_PREFIX,
    SPOOL_VERSION,
    Envelope,
    Inner,
    Piece,
    loads_json,
    spool_items,
    unwrap_spool,
    unwrap_text,
    unwrap_value,
)
from detector.parse.extract import text_map

OnBad = Callable[[BadInput], None]
LineParser = Callable[[bytes, OnBad | None], "AuditEvent | list[AuditEvent]"]
_AUTO, _NONE = Envelope.AUTO, Envelope.NONE

_DECODER = msgspec.json.Decoder(AuditEvent)
# parse_block holds every event of a block at once: ~110 real events in a 128 KiB block, but
# 40,000 of `{}` (~30 MB). Past this many lines, a block goes line by line and memory stays flat.
MAX_BLOCK_LINES = 2048
_fromisoformat = datetime.fromisoformat
NOT_AN_EVENT = "data not recognized as a k8s audit event"
TOO_DEEP = "invalid JSON: nested too deeply"

_STR_KEYS = (
    "kind", "apiVersion", "level", "auditID", "stage", "requestURI", "verb", "userAgent",
    "stageTimestamp", "timestamp",
)
_USER_KEYS = ("user", "impersonatedUser")


def parse_line(line: bytes, on_bad: OnBad | None = None, envelope: Envelope = _AUTO) -> AuditEvent | list[AuditEvent]:
    """Decode one line; a line holding an EventList, an array or an envelope (with `envelope`
    AUTO, the default: any cloud's, or a webhook spool line; NONE: none) yields a list of events.

    In such a list, an unusable item goes to `on_bad` and the others are kept; the line is an
    error only when no item is usable (with `on_bad`, an envelope's every bad record goes there
    and the list may be empty: a CONTROL_MESSAGE, or only skipped records)."""
    try:
        event = _DECODER.decode(line)
    except msgspec.ValidationError:
        return _parse_lenient(line, on_bad, envelope)
    except msgspec.DecodeError as exc:
        if not line.strip():
            raise BadInput("blank_line", "blank line (skipped)") from None
        if envelope is _AUTO and (pieces := unwrap_text(line)) is not None:  # base64 (of gzip) data
            return _events_of(pieces, on_bad)
        raise BadInput("invalid_json", f"invalid JSON: {_short(exc)}") from None
    except RecursionError:  # msgspec recurses even to skip a value: thousands of nested arrays
        raise BadInput("invalid_json", TOO_DEEP) from None
    if event.kind != "Event":
        return _parse_lenient(line, on_bad, envelope)
    event.raw = line
    # The usual event, checked inline: the acceptance test of parse_timestamp, copied because
    # the call (via _check_event) cost ~0.2 us a line, 4% of a scan. It only ever accepts what
    # parse_timestamp accepts; anything else goes through _check_event and its reasons.
    text = event.stageTimestamp
    if event.auditID is not None and text is not None and len(text) >= 20 and text[10] in "Tt":
        try:
            event.time = _fromisoformat(text)
        except ValueError:
            pass
        else:
            if event.time.tzinfo is not None:
                return event
    _check_event(event)
    return event


class LineBlock(Protocol):
    """Complete lines left in one buffer (source.cutter.Block)."""

    ends: list[int]

    def view(self) -> memoryview: ...

    def line(self, index: int) -> bytes: ...


def parse_block(block: LineBlock) -> list[AuditEvent | None] | None:
    """Decode every line of `block` at once: one call into msgspec instead of one per line,
    and no bytes object per line (an event's line is cut out of the block if it needs it).

    Item i is line i's event, or None where that line needs `parse_line` (not an Event, no
    auditID, a stage time to look at closer). None for the whole block when it does not
    decode line for line: the caller then reads it line by line. The caller must only pass
    blocks whose every line starts with "{" and ends with "}": msgspec reads the buffer as
    whitespace-separated values, and with that shape, success plus one value per line means
    value i is line i (a newline inside a value would sit between a "}" and a "{", which no
    JSON container allows, so each newline is between values, and each line starts one)."""
    if len(block.ends) > MAX_BLOCK_LINES:
        return None
    try:
        events: list[Any] = _DECODER.decode_lines(block.view())  # AuditEvent, or None once set below
    except (msgspec.DecodeError, RecursionError):  # DecodeError includes ValidationError
        return None
    if len(events) != len(block.ends):
        return None
    fromisoformat = _fromisoformat
    for index, event in enumerate(events):
        event.origin = block
        event.position = index
        # The acceptance test of parse_line's inline check, for the same reason.
        text = event.stageTimestamp
        if event.kind == "Event" and event.auditID is not None and text is not None and len(text) >= 20 and (
                text[10] in "Tt"):
            try:
                event.time = fromisoformat(text)
            except ValueError:
                pass
            else:
                if event.time.tzinfo is not None:
                    continue
        events[index] = None
    return events


def parse_document(data: bytes, envelope: Envelope = _AUTO) -> list[AuditEvent | BadInput]:
    """Decode a whole JSON document: an Event, an EventList, an envelope (see parse_line), or
    an array of those. With a cloud's `envelope`, only that cloud's envelopes are events."""
    if envelope in _CLOUDS:
        return _forced_document(loads_json(data, "invalid JSON document"), envelope)
    return list(_walk(loads_json(data, "invalid JSON document"), envelope))


def line_parser(envelope: Envelope = _AUTO) -> LineParser:
    """The line decoder for an `--envelope` choice: parse_line itself for AUTO (detection) and
    NONE (plain audit events only); for one cloud's, a decoder that reads nothing else. The
    fast block decode (parse_block) is only for AUTO and NONE."""
    def parse(line: bytes, on_bad: OnBad | None = None) -> AuditEvent | list[AuditEvent]:
        if envelope in _CLOUDS:
            return _parse_forced(line, on_bad, envelope)
        return parse_line(line, on_bad, envelope)

    return parse


_CLOUDS = frozenset({Envelope.EKS, Envelope.GKE, Envelope.AKS})


def _parse_forced(line: bytes, on_bad: OnBad | None, envelope: Envelope) -> list[AuditEvent]:
    """A line that must be one of `envelope`'s records (JSON, or base64 of gzip of JSON)."""
    if not line.strip():
        raise BadInput("blank_line", "blank line (skipped)")
    try:
        value = loads_json(line, "invalid JSON")
    except BadInput:
        pieces = unwrap_text(line, envelope)
        if pieces is None:
            raise
    else:
        pieces = unwrap_value(value, envelope)
        if pieces is None:
            raise BadInput("bad_envelope", f"not a {envelope.value} audit envelope") from None
    return _events_of(pieces, on_bad)


def _forced_document(value: Any, envelope: Envelope) -> list[AuditEvent | BadInput]:
    results: list[AuditEvent | BadInput] = []
    for item in value if isinstance(value, list) else [value]:
        pieces = unwrap_value(item, envelope)
        if pieces is None:
            results.append(BadInput("bad_envelope", f"not a {envelope.value} audit envelope"))
        else:
            results += _piece_results(pieces)
    return results


def _parse_lenient(line: bytes, on_bad: OnBad | None, envelope: Envelope = _AUTO) -> AuditEvent | list[AuditEvent]:
    if envelope is _AUTO and line.startswith(SPOOL_PREFIX):  # the webhook or kafka input's spool
        return _spool_events(line, on_bad)
    value = loads_json(line, "invalid JSON")
    if isinstance(value, dict) and value.get("kind") == "Event":
        return event_from_dict(value)
    if not isinstance(value, dict | list):
        raise BadInput("not_object", f"{NOT_AN_EVENT}: a JSON {type(value).__name__}, not an object")
    results = list(_walk(value, envelope))
    events = [item for item in results if isinstance(item, AuditEvent)]
    errors = [item for item in results if isinstance(item, BadInput)]
    if errors and not events:
        # A new exception, not errors[0]: raising an object this frame still holds (in
        # `errors`) would tie frame and exception into a cycle that only the garbage collector
        # frees, keeping the caller's frames, and the block of lines they hold, alive till then.
        raise BadInput(errors[0].reason, errors[0].message, errors[0].location)
    if on_bad is not None:
        for error in errors:
            on_bad(error)
    return events


def _walk(value: Any, envelope: Envelope = _AUTO) -> Any:
    """Yield events (or the error for each unusable item) of an Event/EventList/envelope/array value."""
    if isinstance(value, list):
        for item in value:
            yield from _walk(item, envelope)
        return
    kind = value.get("kind") if isinstance(value, dict) else None
    if kind == "EventList" and isinstance(value.get("items"), list):
        # The API server's webhook backend sends items without their own `kind`.
        for item in value["items"]:
            yield from _walk({**item, "kind": "Event"} if isinstance(item, dict) and "kind" not in item else item,
                             _NONE)
    elif kind == "Event":
        try:
            yield event_from_dict(value)
        except BadInput as exc:
            yield exc
    elif envelope is _AUTO and kind is None and (pieces := unwrap_value(value)) is not None:
        yield from _piece_results(pieces)
    else:
        yield BadInput("not_audit_event", f"{NOT_AN_EVENT} (kind={_show(kind)})")


class _TypedEventList(msgspec.Struct, gc=False):
    kind: str | None = None
    items: list[AuditEvent] | None = None


class _TypedSpool(msgspec.Struct, gc=False):
    """A spool line whose body is an EventList (a webhook request, a run of Kafka records), its
    items decoded as events in the same call. Any other spool line does not decode as this."""

    detectorSpool: str  # noqa: N815 - the JSON keys
    endpoint: str
    body: _TypedEventList
    cluster: str | None = None
    requestId: str | None = None  # noqa: N815


_TYPED_SPOOL = msgspec.json.Decoder(_TypedSpool)


class _SpoolItemLines:
    """The `origin` of the events of one spool line's EventList: item i's bytes as written (what
    an alert id hashes), cut out of the line on the first ask."""

    __slots__ = ("_items", "_line")

    def __init__(self, line: bytes) -> None:
        self._line = line
        self._items: list[msgspec.Raw] | None = None

    def line(self, index: int) -> bytes:
        if self._items is None:
            self._items = spool_items(self._line)
        return bytes(self._items[index])


def _spool_events(line: bytes, on_bad: OnBad | None) -> list[AuditEvent]:
    """The events of a spool line. An EventList body (the usual case: a webhook batch, a run of
    Kafka Event records) is decoded in one call, its items' bytes kept in the line until asked
    for, as parse_block does for a file; anything else (another endpoint, an oddly typed item,
    a single Event) goes through parse.envelopes piece by piece, with the same results."""
    try:
        spool = _TYPED_SPOOL.decode(line)
    except (msgspec.DecodeError, RecursionError):  # DecodeError includes ValidationError
        return _events_of(unwrap_spool(line), on_bad)
    items = spool.body.items
    if spool.endpoint != "audit" or spool.detectorSpool != SPOOL_VERSION or spool.body.kind != "EventList" or (
            items is None):
        return _events_of(unwrap_spool(line), on_bad)
    where = f"request {spool.requestId}" if spool.requestId else "request"
    origin, cluster, fromisoformat = _SpoolItemLines(line), spool.cluster, _fromisoformat
    events: list[AuditEvent] = []
    errors: list[BadInput] = []
    for index, event in enumerate(items):
        if event.kind is None:  # the API server's webhook backend sends items without their own
            event.kind = "Event"
        event.raw, event.origin, event.position, event.cluster = b"", origin, index, cluster
        # The acceptance test of parse_line's inline check, for the same reason.
        text = event.stageTimestamp
        if event.kind == "Event" and event.auditID is not None and text is not None and len(text) >= 20 and (
                text[10] in "Tt"):
            try:
                event.time = fromisoformat(text)
            except ValueError:
                pass
            else:
                if event.time.tzinfo is not None:
                    events.append(event)
                    continue
        try:
            _check_event(event)
        except BadInput as exc:
            errors.append(BadInput(exc.reason, f"{where} item {index + 1}: {exc.message}"))
            continue
        events.append(event)
    return _reported(events, errors, on_bad)


def _events_of(pieces: list[Piece], on_bad: OnBad | None) -> list[AuditEvent]:
    """The events of an envelope's pieces. Each bad record goes to `on_bad`; without one, the
    first is raised when no event is usable (as for an EventList line)."""
    events: list[AuditEvent] = []
    errors: list[BadInput] = []
    for result in _piece_results(pieces):
        (events if isinstance(result, AuditEvent) else errors).append(result)  # type: ignore[arg-type]
    return _reported(events, errors, on_bad)


def _reported(events: list[AuditEvent], errors: list[BadInput], on_bad: OnBad | None) -> list[AuditEvent]:
    if on_bad is None:
        if errors and not events:
            raise BadInput(errors[0].reason, errors[0].message)  # a new one: see _parse_lenient
        return events
    for error in errors:
        on_bad(error)
    return events


def _piece_results(pieces: list[Piece]) -> list[AuditEvent | BadInput]:
    """Each piece's events (with its cluster), or its error naming where it sat."""
    results: list[AuditEvent | BadInput] = []
    for piece in pieces:
        if isinstance(piece, BadInput):
            results.append(piece)
            continue
        errors: list[BadInput] = []
        try:
            events = _inner_events(piece, errors.append)
        except BadInput as exc:
            errors.append(exc)
            events = []
        for event in events:
            event.cluster = piece.cluster
        results += events
        results += [BadInput(e.reason, f"{piece.where}: {e.message}") for e in errors]
    return results


def _inner_events(piece: Inner, on_bad: OnBad) -> list[AuditEvent]:
    """The event(s) of one piece: a mapped Event, an audit event's text, or an EventList item
    (no `kind` of its own; its bytes as sent are the event's)."""
    data = piece.data
    if isinstance(data, dict):
        return [event_from_dict(data)]
    if not piece.item:
        result = parse_line(data, on_bad, _NONE)
        return result if isinstance(result, list) else [result]
    try:
        event = _DECODER.decode(data)
    except (msgspec.DecodeError, RecursionError):  # oddly typed: the lenient way, `kind` added
        value = loads_json(data, "invalid JSON")
        if isinstance(value, dict) and "kind" not in value:
            value = {**value, "kind": "Event"}
        return [event_from_dict(value)] if isinstance(value, dict) else [_not_object(value)]
    if event.kind is None:
        event.kind = "Event"
    event.raw = data
    _check_event(event)
    return [event]


def _not_object(value: Any) -> AuditEvent:
    raise BadInput("not_object", f"{NOT_AN_EVENT}: a JSON {type(value).__name__}, not an object")


def event_from_dict(value: dict[str, Any]) -> AuditEvent:
    """Build an event from an already parsed dict, coercing oddly typed hot fields to text."""
    event = msgspec.convert(_coerce(value), AuditEvent)
    _set_groups(event, value)
    event.annotation_values = text_map(value.get("annotations"))
    event.raw = json_bytes(value)
    event.parsed_body = value
    _check_event(event)
    return event


def _check_event(event: AuditEvent) -> None:
    if event.kind != "Event":
        raise BadInput("not_audit_event", f"{NOT_AN_EVENT} (kind={_show(event.kind)})")
    if event.auditID is None:
        raise BadInput("not_audit_event", f"{NOT_AN_EVENT} (no auditID)")
    if event.stageTimestamp is None:
        event.stageTimestamp = _older_timestamp(event)
    event.time = parse_timestamp(event.stageTimestamp)


def _older_timestamp(event: AuditEvent) -> str | None:
    """The stage time of an event without `stageTimestamp` (before k8s 1.9, and v1 lines
    relabelled from v1beta1): `metadata.creationTimestamp` (the stage time in seconds), else
    `timestamp` (when the request was received), as the API server's v1beta1 conversion does."""
    meta = event.metadata
    if meta is not None and meta.creationTimestamp is not None:
        return meta.creationTimestamp
    return event.timestamp


def parse_timestamp(text: str | None) -> datetime:
    """Parse an RFC 3339 timestamp with a zone, as the API server writes it."""
    if text is None:
        raise BadInput("missing_timestamp", "event has no stageTimestamp")
    if len(text) < 20 or text[10] not in "Tt":
        raise BadInput("bad_timestamp", f"stageTimestamp {text!r} is not RFC 3339")
    try:
        # RFC 3339 allows a lowercase "t" and "z", which fromisoformat refuses.
        parsed = datetime.fromisoformat(text.upper() if text.isascii() else text)
    except ValueError:
        raise BadInput("bad_timestamp", f"stageTimestamp {text!r} is not RFC 3339") from None
    if parsed.tzinfo is None:
        raise BadInput("bad_timestamp", f"stageTimestamp {text!r} has no time zone")
    return parsed


def _coerce(value: dict[str, Any]) -> dict[str, Any]:
    """Keep only hot keys, with the types the typed decoder expects (Falco reads any JSON
    value of a string field as its JSON text)."""
    out: dict[str, Any] = {k: _text(value[k]) for k in _STR_KEYS if value.get(k) is not None}
    for key in _USER_KEYS:
        user = value.get(key)
        if isinstance(user, dict):
            out[key] = {"username": _opt_text(user.get("username"))}  # groups: _set_groups
    ref = value.get("objectRef")
    if isinstance(ref, dict):
        out["objectRef"] = {k: _text(v) for k, v in ref.items()
                            if k in ("resource", "namespace", "name", "subresource", "apiGroup")
                            and v is not None}
    status = value.get("responseStatus")
    if isinstance(status, dict):
        code = status.get("code")
        out["responseStatus"] = {"code": code if type(code) is int else _opt_text(code),
                                 "reason": _opt_text(status.get("reason"))}
    out["sourceIPs"] = _text_list(value.get("sourceIPs"))
    meta = value.get("metadata")
    if isinstance(meta, dict) and meta.get("creationTimestamp") is not None:
        out["metadata"] = {"creationTimestamp": _text(meta["creationTimestamp"])}
    return out  # annotations: event_from_dict sets annotation_values


def _set_groups(event: AuditEvent, value: dict[str, Any]) -> None:
    """The users' groups as the JSON the typed decoder would keep (convert cannot make Raw)."""
    for user, key in ((event.user, "user"), (event.impersonatedUser, "impersonatedUser")):
        data = value.get(key)
        if user is not None and isinstance(data, dict) and data.get("groups") is not None:
            user.groups = msgspec.Raw(json_bytes(data["groups"]))


def _text(value: Any) -> str:
    if isinstance(value, str):
        return value
    return json_bytes(value).decode()


def _opt_text(value: Any) -> str | None:
    return None if value is None else _text(value)


def _text_list(value: Any) -> list[str] | None:
    if not isinstance(value, list):
        return None
    return [_text(v) for v in value]


def _show(kind: Any) -> str:
    return json_bytes(kind).decode()[:200] if kind is not None else "missing"


def _short(exc: Exception) -> str:
    return str(exc).splitlines()[0][:200]
