"""Read finite inputs for `detector scan`: files, gzip files and stdin, as lines or one document.

Line-mode input comes as the complete lines of each block read, a `Block` or `Lines` (see
`source.cutter`; `read_records` gives them one `Record` per line instead). When the input is
a JSON array or a pretty-printed object, it is one `Record` holding the whole input as one
document. Memory stays bounded whatever the input: the input is read in blocks, and a line
longer than `max_line_bytes` is reported and skipped without ever being held whole. Problems
with one line are reported through `on_bad` and reading goes on; only an input that cannot
be opened at all raises (`SourceError`).

This layer knows nothing about JSON beyond sniffing the first byte to choose the mode.
"""

from __future__ import annotations

import gzip
import io
import re
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, NoReturn

from detector.errors import BadInput, Location, SourceError
from detector.source.cutter import Block, LineCutter, Lines

OnBad = Callable[[BadInput], None]
Diagnose = Callable[[bytes], str | None]  # why a final line may be cut short; None: it is whole

STDIN_NAME = "<stdin>"
_BLOCK_BYTES = 1 << 17  # measured: as fast as 1 MiB on plain files, faster through gzip (its buffer size)
_GZIP_MAGIC = b"\x1f\x8b"
_NON_SPACE = re.compile(rb"[^ \t\r\n]")  # JSON whitespace, as the parser will see it
_READ_ERRORS = (OSError, EOFError, zlib.error)  # gzip reports corruption with all three


@dataclass(frozen=True, slots=True)
class Record:
    """One unit of input: a complete line (without its newline) or a whole JSON document."""

    data: bytes
    path: str  # display name: the file path, or "<stdin>"
    lineno: int  # 1-based line number where the record starts
    is_document: bool  # True: data is a whole JSON document, to be parsed as one


# Building a frozen dataclass goes through object.__setattr__ once per field (~0.5 us); the
# line loop sets the slots through their descriptors instead (~0.25 us; 30% of the per-line
# cost). A field added to Record must be set there too (the tests compare with Record(...)).
_new = object.__new__
_slot: Any = Record
_set_data, _set_path, _set_lineno, _set_document = (
    _slot.data.__set__, _slot.path.__set__, _slot.lineno.__set__, _slot.is_document.__set__)


def read_records(
    path: str,
    on_bad: OnBad,
    max_line_bytes: int = 1 << 20,
    *,
    diagnose: Diagnose | None = None,
    max_document_bytes: int = 1 << 30,
) -> Iterator[Record]:
    """`read_input`, one record per line (blank lines are reported here, and skipped)."""
    for item in read_input(path, on_bad, max_line_bytes, diagnose=diagnose, max_document_bytes=max_document_bytes):
        if isinstance(item, Record):
            yield item
            continue
        name = item.path
        for line, lineno in zip(item.lines, item.linenos, strict=True):
            if not line.strip():
                on_bad(BadInput("blank_line", "blank line (skipped)", Location(name, lineno)))
                continue
            record = _new(Record)
            _set_data(record, line)
            _set_path(record, name)
            _set_lineno(record, lineno)
            _set_document(record, False)
            yield record


def read_input(
    path: str,
    on_bad: OnBad,
    max_line_bytes: int = 1 << 20,
    *,
    diagnose: Diagnose | None = None,
    max_document_bytes: int = 1 << 30,
) -> Iterator[Lines | Block | Record]:
    """Yield the content of `path` ("-" for stdin; gzip is detected by name or magic bytes).

    The input is lines (a `Block` or `Lines` per block read), unless the first non-space byte is
    `[`, or a `{` whose line does not end with `}`: then the whole input is one document
    `Record`, of at most `max_document_bytes`.
    The input is opened on first iteration; if it cannot be opened, `SourceError` is raised.
    Every other problem (over-long or torn final line, corrupt gzip, oversized document)
    goes to `on_bad` as a `BadInput` with its location, and reading goes on where it can.
    A final line without its newline is judged by `diagnose` (the parser's, as this layer knows
    no JSON): None means it is whole, and it is yielded as the last `Lines`; otherwise it is
    reported as `unterminated_line`, with `diagnose`'s reason. Without `diagnose` it is
    always reported.
    """
    name = STDIN_NAME if path == "-" else path
    stream = _open(path)
    try:
        head, rest = _sniff(_blocks(stream, path.endswith(".gz")), max_line_bytes)
        start = _document_start(head, max_line_bytes)
        if start is None:
            blocks = _chain(head, rest)
            yield from _read_lines(
                blocks, name=name, on_bad=on_bad, limit=max_line_bytes, diagnose=diagnose)
        else:
            lineno = head.count(b"\n", 0, start) + 1
            yield from _read_document(head, rest, Location(name, lineno), on_bad, max_document_bytes)
    finally:
        if path != "-":
            stream.close()


class _ReadError(Exception):
    """Reading the input failed part-way; only `_blocks` raises it."""


def _open(path: str) -> io.BufferedIOBase:
    if path == "-":
        if sys.stdin is None or not isinstance(sys.stdin.buffer, io.BufferedIOBase):
            raise SourceError("standard input is not available as bytes", Location(STDIN_NAME))
        return sys.stdin.buffer
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SourceError(f"cannot open: {exc.strerror or exc}", Location(path)) from None


def _blocks(stream: io.BufferedIOBase, named_gz: bool) -> Iterator[bytes]:
    """Yield the (decompressed) bytes of `stream` in blocks; a failed read raises `_ReadError`."""
    first = _read(stream.read, 2)
    if named_gz or first.startswith(_GZIP_MAGIC):
        stream = gzip.GzipFile(fileobj=_Prepended(first, stream), mode="rb")
    elif first:
        yield first
    read1 = stream.read1  # returns what one read gives: a pipe never waits for a full block
    while block := _read(read1, _BLOCK_BYTES):
        yield block


def _read(read: Callable[[int], bytes], size: int) -> bytes:
    try:
        return read(size)
    except _READ_ERRORS as exc:
        raise _ReadError(f"{str(exc) or type(exc).__name__} (rest of the input skipped)") from exc


class _Prepended:
    """A read-only stream giving `head` back before the rest of `stream` (gzip needs its magic)."""

    def __init__(self, head: bytes, stream: io.BufferedIOBase) -> None:
        self._head = head
        self._stream = stream

    def read(self, size: int = -1, /) -> bytes:
        if not self._head:
            return self._stream.read(size)
        if size < 0:
            data, self._head = self._head + self._stream.read(), b""
            return data
        data, self._head = self._head[:size], self._head[size:]
        return data

    def seek(self, offset: int, /) -> NoReturn:
        raise io.UnsupportedOperation("seek")


def _sniff(blocks: Iterator[bytes], limit: int) -> tuple[bytes, Iterator[bytes]]:
    """Read ahead far enough to choose the mode; return what was read and the rest.

    Enough means: the line of the first non-space byte is complete, or that line (or the
    leading whitespace) is already longer than `limit` -- line mode then reports it. So the
    head stays bounded, and the choice never depends on how reads happen to split the input.
    A read failure is replayed to whoever reads the rest, after the head.
    """
    head = bytearray()
    try:
        for block in blocks:
            head += block
            if _sniffed_enough(head, limit):
                break
    except _ReadError as exc:
        return bytes(head), _fail(exc)
    return bytes(head), blocks


def _sniffed_enough(head: bytearray, limit: int) -> bool:
    found = _NON_SPACE.search(head, 0, limit + 1)
    if found is None:
        return len(head) > limit
    start = found.start()
    return head[start] != ord("{") or head.find(b"\n", start, start + limit + 1) >= 0 or (
        len(head) - start > limit)


def _fail(exc: _ReadError) -> Iterator[bytes]:
    yield from ()
    raise exc


def _document_start(head: bytes, limit: int) -> int | None:
    """Offset of the document if the input is one JSON document, else None (line mode).

    A document starts with `[`, or with a `{` whose line does not end with `}` (a
    pretty-printed Event or EventList). Only the first `limit` bytes of leading space and of
    the `{` line count: past that, line mode reports the over-long line. This keeps the head
    bounded and makes the choice the same however the reads split the input.
    """
    found = _NON_SPACE.search(head, 0, limit + 1)
    if found is None:
        return None
    start = found.start()
    if head[start] == ord("["):
        return start
    if head[start] != ord("{"):
        return None
    end = head.find(b"\n", start, start + limit + 1)
    if end < 0:
        end = len(head)
    if end - start > limit:
        return None
    return None if head[start:end].rstrip().endswith(b"}") else start


def _read_document(
    head: bytes, rest: Iterator[bytes], where: Location, on_bad: OnBad, max_bytes: int,
) -> Iterator[Record]:
    """Yield the whole input as one document record, unless it is too large or unreadable."""
    parts = [head]
    size = len(head)
    try:
        for block in rest:
            parts.append(block)
            size += len(block)
            if size > max_bytes:
                break
    except _ReadError as exc:
        on_bad(BadInput("unreadable", str(exc), where))
        return
    if size > max_bytes:
        on_bad(BadInput("document_too_large", f"document larger than {max_bytes} bytes (skipped)", where))
        return
    data = b"".join(parts)
    del parts  # hold the document once, not twice, while the consumer works on it
    yield Record(data, where.path, where.line or 1, True)


def _read_lines(
    blocks: Iterator[bytes], *, name: str, on_bad: OnBad, limit: int, diagnose: Diagnose | None,
) -> Iterator[Lines | Block]:
    """Yield the complete lines of each block; report over-long ones and a final unterminated one."""
    cutter = LineCutter(name, limit, on_bad)
    try:
        for block in blocks:
            yield from cutter.cut(block)
    except _ReadError as exc:
        on_bad(BadInput("unreadable", str(exc), Location(name, cutter.lineno + 1)))
        return
    if last := cutter.rest():
        lineno = cutter.lineno + 1
        if (whole := final_line(last, Location(name, lineno), on_bad, diagnose)) is not None:
            yield Lines([whole], name, [lineno])


def _chain(head: bytes, rest: Iterator[bytes]) -> Iterator[bytes]:
    if head:
        yield head
    yield from rest


def final_line(line: bytes, where: Location, on_bad: OnBad, diagnose: Diagnose | None) -> bytes | None:
    """The final line of a finished input, which lacks its newline (`json.dump` writes none
    after its one line), if it is whole: `diagnose` (the parser's: this layer knows no JSON)
    finds no reason to think it cut short. Otherwise it is reported and None returned: it may
    be a record cut short, so it is never read. Without `diagnose` it is always reported."""
    if not line.strip():
        on_bad(BadInput("blank_line", "blank line (skipped)", where))
        return None
    hint = diagnose(line) if diagnose is not None else None
    if diagnose is not None and hint is None:
        return line.removesuffix(b"\r")
    message = "final line has no newline (skipped: it may be incomplete)"
    if hint:
        message += f"; {hint}"
    on_bad(BadInput("unterminated_line", message, where))
    return None
