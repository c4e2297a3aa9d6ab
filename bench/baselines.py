#!/usr/bin/env python3
"""Reference workers for bench/run.py (rows a-c): read an audit log, print the number of events.

    python bench/baselines.py lines   FILE   # a: iterate the file in binary, count lines
    python bench/baselines.py orjson  FILE   # b: full orjson.loads of every line (the parse-only floor)
    python bench/baselines.py msgspec FILE   # c: typed msgspec decode of only the hot fields

Each mode is a tight loop with no per-event work beyond the parse, so that run.py can compare the
detector's end-to-end throughput against them.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path

import msgspec
import orjson


class User(msgspec.Struct, gc=False):
    username: str = ""
    groups: list[str] = msgspec.field(default_factory=list)


class ObjectRef(msgspec.Struct, gc=False):
    resource: str = ""
    namespace: str = ""
    name: str = ""
    subresource: str = ""
    api_group: str = msgspec.field(default="", name="apiGroup")


class ResponseStatus(msgspec.Struct, gc=False):
    code: int = 0


class HotEvent(msgspec.Struct, gc=False):
    """The fields rules look at most; everything else (requestObject, ...) is skipped unparsed."""

    kind: str = ""
    api_version: str = msgspec.field(default="", name="apiVersion")
    level: str = ""
    audit_id: str = msgspec.field(default="", name="auditID")
    stage: str = ""
    request_uri: str = msgspec.field(default="", name="requestURI")
    verb: str = ""
    user: User = msgspec.field(default_factory=User)
    source_ips: list[str] = msgspec.field(default_factory=list, name="sourceIPs")
    user_agent: str = msgspec.field(default="", name="userAgent")
    object_ref: ObjectRef | None = msgspec.field(default=None, name="objectRef")
    response_status: ResponseStatus | None = msgspec.field(default=None, name="responseStatus")
    stage_timestamp: str = msgspec.field(default="", name="stageTimestamp")
    annotations: dict[str, str] = msgspec.field(default_factory=dict)


def count_lines(path: Path) -> int:
    n = 0
    with path.open("rb") as fh:
        for _ in fh:
            n += 1
    return n


def orjson_loads(path: Path) -> int:
    loads = orjson.loads
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            loads(line)
            n += 1
    return n


def msgspec_hot(path: Path) -> int:
    decode = msgspec.json.Decoder(HotEvent).decode
    n = 0
    with path.open("rb") as fh:
        for line in fh:
            decode(line)
            n += 1
    return n


MODES: dict[str, Callable[[Path], int]] = {
    "lines": count_lines,
    "orjson": orjson_loads,
    "msgspec": msgspec_hot,
}


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] not in MODES:
        print(f"usage: baselines.py {{{','.join(MODES)}}} FILE", file=sys.stderr)
        return 2
    print(MODES[argv[0]](Path(argv[1])))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
