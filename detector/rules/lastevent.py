"""An absence key's last event, as its state keeps it: who did what to which object when
(never the request URI, bodies or annotations: state is stored unredacted, and they may carry
tokens and Secret data), in ~35 bytes, so that 100,000 keys fit in 20 MB.

`reduced_line` is that event as a line (what the alert is made from, and what is stored with
the checkpoint): its envelope's cluster, a newline, and the reduced JSON. `LastEvents` keeps
the same fields compact and gives back exactly that line: the fields events share (cluster,
apiVersion, level, stage, verb, userAgent, objectRef's resource, subresource, namespace and
apiGroup) as one index into a bounded table of those seen, and the object's name as an index
into another; a UUID auditID in 16 bytes; the user as a mark when it is the key; source
addresses in 4 or 16 bytes each; the stage time as a mark when the key's time gives it back.
"""

from __future__ import annotations

import functools
import math
import socket
import time
from typing import Any, Generic, TypeVar

import msgspec
import orjson

from detector.event import AuditEvent
from detector.rules.windows import uuid_bytes, uuid_text

MAX_SHAPES = 1024  # shared field tuples a window keeps; past it, a sample holds its own
MAX_NAMES = 4096  # object names a window keeps; past it, a sample holds its own
_API_VERSION = "audit.k8s.io/v1"
_LAST_SECOND = 253402300800  # 10000-01-01: later years have five digits
# cluster, apiVersion, level, stage, verb, userAgent, and objectRef's resource, subresource, namespace, apiGroup
Shape = tuple[Any, ...]
T = TypeVar("T")


def reduced_line(event: AuditEvent) -> bytes:
    """The line an absence key's last event is kept as."""
    return _line(_shape(event), event.auditID, event.user.username, event.sourceIPs, event.objectRef.name,
                 event.stageTimestamp)


def _shape(event: AuditEvent) -> Shape:
    ref = event.objectRef
    return (event.cluster, event.apiVersion or _API_VERSION, event.level, event.stage, event.verb, event.userAgent,
            ref.resource, ref.subresource, ref.namespace, ref.apiGroup)


def _line(shape: Shape, audit_id: Any, user: Any, ips: Any, name: Any, stamp: Any) -> bytes:  # noqa: PLR0917
    cluster, api_version, level, stage, verb, agent, resource, subresource, namespace, group = shape
    body = {"kind": "Event", "apiVersion": api_version, "level": level, "auditID": audit_id, "stage": stage,
            "verb": verb, "user": {"username": user} if user else None, "sourceIPs": ips, "userAgent": agent,
            "objectRef": {k: v for k, v in (("resource", resource), ("subresource", subresource),
                                            ("namespace", namespace), ("name", name), ("apiGroup", group))
                          if v is not None},
            "stageTimestamp": stamp}
    return (cluster or "").encode() + b"\n" + orjson.dumps({k: v for k, v in body.items() if v is not None})


class LastEvents:
    """The samples of one absence window (windows.Samples): [shape, auditID, user, sourceIPs,
    name, stage time] as msgpack, the shape and the name indexes into this window's tables
    (or the values themselves once a table is full)."""

    def __init__(self, max_shapes: int = MAX_SHAPES, max_names: int = MAX_NAMES) -> None:
        self._shapes = _Table[Shape](max_shapes)
        self._names = _Table[str](max_names)

    def encode(self, last: Any, key: str, t: float) -> bytes:
        event: AuditEvent = last
        return self._pack(_shape(event), event.auditID, event.user.username, event.sourceIPs, event.objectRef.name,
                          event.stageTimestamp, key, t)

    def _pack(self, shape: Shape, audit_id: Any, user: Any, ips: Any, name: Any, stamp: Any,  # noqa: PLR0917
              key: str, t: float) -> bytes:
        aid = uuid_bytes(audit_id) if type(audit_id) is str else None
        if stamp is None:
            stamp = False  # the event had none
        elif type(stamp) is str and 0 <= t < _LAST_SECOND and stamp == _stamp_of(t):
            stamp = None  # the key's time gives it back
        return msgspec.msgpack.encode([
            self._shapes.find(shape), audit_id if aid is None else aid,
            True if user and user == key else user or None, _pack_ips(ips),
            self._names.find(name) if type(name) is str else name, stamp])

    def line(self, sample: bytes, key: str, t: float) -> bytes:
        value = msgspec.msgpack.decode(sample)
        if type(value) is bytes:  # a stored line kept as it was
            return value
        shape, aid, user, ips, name, stamp = value
        return _line(tuple(shape) if type(shape) is list else self._shapes.items[shape],
                     uuid_text(aid) if type(aid) is bytes else aid, key if user is True else user,
                     _unpack_ips(ips), self._names.items[name] if type(name) is int else name,
                     _stamp_of(t) if stamp is None else None if stamp is False else stamp)

    def from_line(self, line: bytes, key: str, t: float) -> bytes:
        """The sample of a stored line: compact when it gives the line back exactly, else the
        line itself (one written before events were reduced)."""
        try:
            cluster, _, text = line.partition(b"\n")
            body = orjson.loads(text)
            ref = body.get("objectRef", {})
            shape = (cluster.decode() or None, body.get("apiVersion"), body.get("level"), body.get("stage"),
                     body.get("verb"), body.get("userAgent"), ref.get("resource"), ref.get("subresource"),
                     ref.get("namespace"), ref.get("apiGroup"))
            sample = self._pack(shape, body.get("auditID"), (body.get("user") or {}).get("username"),
                                body.get("sourceIPs"), ref.get("name"), body.get("stageTimestamp"), key, t)
            if self.line(sample, key, t) == line:
                return sample
        except (ValueError, TypeError, AttributeError, orjson.JSONDecodeError):
            pass
        return msgspec.msgpack.encode(line)


class _Table(Generic[T]):
    """Values many samples share, each kept once: a sample holds its index (at most `size`)."""

    def __init__(self, size: int) -> None:
        self.size = size
        self.index: dict[T, int] = {}
        self.items: list[T] = []

    def find(self, value: T) -> int | T:
        """The value's index, or the value itself when the table is full."""
        found = self.index.get(value)
        if found is None:
            if len(self.items) >= self.size:
                return value
            found = self.index[value] = len(self.items)
            self.items.append(value)
        return found


def _pack_ips(ips: Any) -> Any:
    """Addresses as written the usual way, each in 4 or 16 bytes (one: not in a list)."""
    if type(ips) is not list:
        return ips
    packed = [_pack_ip(ip) for ip in ips]
    return packed[0] if len(packed) == 1 and type(packed[0]) is bytes else packed


def _pack_ip(ip: Any) -> Any:
    family = socket.AF_INET6 if type(ip) is str and ":" in ip else socket.AF_INET
    try:
        raw = socket.inet_pton(family, ip)
    except (OSError, TypeError, ValueError):
        return ip
    return raw if socket.inet_ntop(family, raw) == ip else ip


def _unpack_ips(ips: Any) -> Any:
    if type(ips) is bytes:
        return [_unpack_ip(ips)]
    return [_unpack_ip(ip) if type(ip) is bytes else ip for ip in ips] if type(ips) is list else ips


def _unpack_ip(raw: bytes) -> str:
    return socket.inet_ntop(socket.AF_INET6 if len(raw) == 16 else socket.AF_INET, raw)


def _stamp_of(t: float) -> str:
    """A time as the audit log writes it (UTC, microseconds), `0 <= t < _LAST_SECOND`."""
    second = math.floor(t)
    micros = round((t - second) * 1e6)
    return f"{_second_text(second + micros // 1_000_000)}.{micros % 1_000_000:06d}Z"


@functools.lru_cache(maxsize=64)
def _second_text(second: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
