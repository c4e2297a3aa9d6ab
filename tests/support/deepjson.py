"""Deeply nested JSON, written as bytes (past the depth a JSON library would build)."""

from __future__ import annotations


def nested_object(depth: int) -> bytes:
    """`{"a":{"a":...1...}}`, `depth` objects deep."""
    return b'{"a":' * depth + b"1" + b"}" * depth


def with_request_object(line: bytes, request: bytes) -> bytes:
    """The JSON object `line` (no newline) with the raw JSON `request` as its `requestObject`."""
    return line[:-1] + b',"requestObject":' + request + b"}"
