"""Building blocks for field extraction: Falco's JSON-to-text rule and its array walk.

A field value is `None` (absent), a `str`, or a non-empty `tuple[str, ...]` (list fields).
"""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import parse_qsl, urlsplit

import msgspec

from detector.event import AuditEvent, json_bytes
from detector.redact import mask_argv, mask_secrets

Value = str | tuple[str, ...] | None
MISSING: Any = object()
_BAD_ESCAPE = re.compile(r"%(?![0-9A-Fa-f]{2})")


def as_text(value: Any) -> str:
    """Falco's rule: strings as their text, any other JSON value as compact JSON."""
    if type(value) is str:
        return value
    return json_bytes(value).decode()


def text_map(value: Any) -> dict[str, str]:
    """A JSON object (annotations) as text keys and `as_text` values; {} if it is not an object."""
    return {str(k): as_text(v) for k, v in value.items()} if isinstance(value, dict) else {}


def texts(values: list[Any]) -> Value:
    """A list field's value: empty means absent."""
    return tuple(as_text(v) for v in values) if values else None


def get_path(root: Any, keys: tuple[str, ...]) -> Any:
    """The value at a key path through objects, or MISSING."""
    value = root
    for key in keys:
        if type(value) is not dict:
            return MISSING
        value = value.get(key, MISSING)
        if value is MISSING:
            return MISSING
    return value


def request_value(event: AuditEvent, *keys: str) -> Any:
    """`requestObject.<keys>` or MISSING; parses the body only when the line has one."""
    if event.parsed_body is None and b'"requestObject"' not in event.line():
        return MISSING
    request = event.request_object()
    return MISSING if request is msgspec.UNSET else get_path(request, keys)


def walk_values(root: Any, keys: tuple[str, ...], index: int | None) -> list[Any] | None:
    """Falco's getValuesRecursive: fan out over arrays met *between* keys.

    An element lacking the rest of the path contributes None. `index` restricts the first
    array met to that element; out of range gives None (absent).
    """
    out: list[Any] = []

    def walk(value: Any, depth: int, idx: int | None) -> bool:
        if depth == len(keys):
            out.append(value)
            return True
        if type(value) is list:
            if idx is not None:
                return idx < len(value) and walk(value[idx], depth, None)
            return all(walk(item, depth, None) for item in value)
        if type(value) is not dict or keys[depth] not in value:
            out.append(None)
            return True
        return walk(value[keys[depth]], depth + 1, idx)

    return out if walk(root, 0, index) else None


def image_repository(image: str) -> str:
    """The repository part of an image reference: digest and tag removed, registry port kept.

    Upstream splits at the first ':' and so turns `registry:5000/app:1` into `registry`.
    """
    name = image.split("@", 1)[0]
    colon = name.rfind(":")
    if colon > name.rfind("/"):
        name = name[:colon]
    return name


def query_values(uri: str | None, key: str) -> list[str] | None:
    """All values of a query parameter, decoded; None when absent or unparsable (as Go)."""
    if not uri:
        return None
    query = urlsplit(uri).query
    if ";" in query or _BAD_ESCAPE.search(uri):  # Go's url.Parse/ParseQuery reject both
        return None
    values = [v for k, v in parse_qsl(query, keep_blank_values=True) if k == key]
    return values or None


# --- an exec's command, masked once per event ------------------------------------------------------
# Kept in the event's cache (`AuditEvent.cache`) under keys no field name can take (they start with
# NUL): the field ka.exec.command and the alert's redaction both need the masked command, and
# masking it is the dearest step of an exec's alert.
EXEC_ARGV = "\x00exec.argv"
MASK_MEMO = "\x00mask.memo"


def exec_argv(ev: AuditEvent) -> tuple[list[str], list[str]] | None:
    """The `command=` parameters of the event's request URI (decoded), and the same with their
    credentials masked (`mask_argv`); None when there are none. Computed once per event."""
    cache = ev.cache
    if cache is None:
        cache = ev.cache = {}
    elif EXEC_ARGV in cache:
        found: tuple[list[str], list[str]] | None = cache[EXEC_ARGV]
        return found
    uri = ev.requestURI
    # A key decodes to `command` only if it is written so or percent-encoded.
    args = query_values(uri, "command") if uri and ("command" in uri or "%" in uri) else None
    found = cache[EXEC_ARGV] = (args, mask_argv(args)) if args else None
    return found


def exec_command(ev: AuditEvent) -> str | None:
    """The event's exec command: its arguments joined by spaces with credentials masked (as
    `mask_command`), once per event. Noted in the event's `mask_memo` as masked: masking it again
    changes nothing."""
    found = exec_argv(ev)
    if found is None:
        return None
    command = mask_secrets(" ".join(found[1]))
    mask_memo(ev)[command] = command
    return command


def mask_memo(ev: AuditEvent) -> dict[str, str]:
    """Texts of this event already masked, each with what `mask_secrets` makes of it: the alerts
    of one event (one per rule it matched) print many of the same values."""
    cache = ev.cache
    if cache is None:
        cache = ev.cache = {}
    memo: dict[str, str] | None = cache.get(MASK_MEMO)
    if memo is None:
        memo = cache[MASK_MEMO] = {}
    return memo


def json_pointer(root: Any, pointer: str) -> Any:
    """RFC 6901 lookup as the json plugin does it; MISSING when not found."""
    if pointer == "":
        return root
    value = root
    tokens = pointer[1:].split("/") if pointer.startswith("/") else pointer.split("/")
    for raw in tokens:
        token = raw.replace("~1", "/").replace("~0", "~")
        if type(value) is dict:
            value = value.get(token, MISSING)
        elif type(value) is list and token.isdigit():
            position = int(token)
            value = value[position] if position < len(value) else MISSING
        else:
            return MISSING
        if value is MISSING:
            return MISSING
    return value


def epoch_nanos(timestamp: str, parsed: datetime) -> int:
    """Nanoseconds since the epoch, keeping all fraction digits of the RFC 3339 text.

    Audit logs carry long runs of timestamps within one second, so the whole-second part is
    memoised on its text; the API server's own form (`...:SS.ffffffZ`) takes a short path.
    """
    if len(timestamp) == 27 and timestamp[26] == "Z" and timestamp[19] == ".":
        return epoch_seconds(timestamp[:19], parsed) * 1_000_000_000 + int(timestamp[20:26]) * 1000
    found = _FRACTION.match(timestamp, 19)
    digits, zone = ("", 19) if found is None else (found.group(1), found.end())
    seconds = epoch_seconds(timestamp[:19] + timestamp[zone:], parsed)
    return seconds * 1_000_000_000 + int((digits + "000000000")[:9])


# Time fields and alerts hold a time as a signed 64-bit count of nanoseconds (Falco's, and what
# orjson and msgspec encode): 1677-09-21T00:12:43.145224192Z to 2262-04-11T23:47:16.854775807Z.
NANOS_MIN = -(1 << 63)
NANOS_MAX = (1 << 63) - 1


def clamped_nanos(timestamp: str, parsed: datetime) -> int:
    """`epoch_nanos`, clamped to the range a time field or an alert holds (RFC 3339 allows years
    0001 to 9999, and a zone offset may move them past either end)."""
    return min(max(epoch_nanos(timestamp, parsed), NANOS_MIN), NANOS_MAX)


_FRACTION = re.compile(r"\.(\d*)")
_SECONDS: dict[str, int] = {}
# Events come in time order, so a few minutes of seconds are plenty. A bigger memo keeps
# growing by one entry a second for as long (4,096: over an hour of a live run), and such
# entries pin allocator pools: RSS creeps up with them (see docs/performance.md, soak).
_SECONDS_KEPT = 256


def epoch_seconds(key: str, parsed: datetime) -> int:
    """Whole seconds since the epoch of `parsed`, memoised on `key` (its text up to the seconds
    plus its zone)."""
    seconds = _SECONDS.get(key)
    if seconds is None:
        seconds = round(parsed.timestamp() - parsed.microsecond / 1_000_000)
        if len(_SECONDS) >= _SECONDS_KEPT:
            _SECONDS.clear()
        _SECONDS[key] = seconds
    return seconds
