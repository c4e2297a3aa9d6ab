"""Cut blocks of a followed file into complete lines, each with the position just after it.

A line is only complete once its newline has arrived: the unterminated tail of a block is
held (never more than `limit` bytes of it) until the rest comes. A line longer than `limit`
is reported once and skipped up to its newline without ever being held whole.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from detector.errors import BadInput, Location
from detector.source.openfile import OpenFile
from detector.source.partial import PartialLine
from detector.source.position import Position

OnBad = Callable[[BadInput], None]


@dataclass(frozen=True, slots=True)
class Line:
    """One complete line and the position just after it (checkpoint that once it is handled)."""

    data: bytes  # without "\n" (and without a trailing "\r")
    path: str  # the file it came from: the live path, or the backup's name once rotated
    lineno: int | None  # 1-based; None when reading began mid-file (resume, start at the end)
    position: Position


# Frozen dataclasses are built through object.__setattr__ once per field; the line loop sets
# the slots through their descriptors instead (as replay.py does), which halves that cost.
_new = object.__new__
_line: Any = Line
_pos: Any = Position
_set_data, _set_path, _set_lineno, _set_position = (
    _line.data.__set__, _line.path.__set__, _line.lineno.__set__, _line.position.__set__)
_set_identity, _set_offset, _set_pos_path, _set_complete = (
    _pos.identity.__set__, _pos.offset.__set__, _pos.path.__set__, _pos.complete.__set__)


class LineSplitter:
    """The line in progress of the current file, and the loop that cuts blocks into lines."""

    __slots__ = ("_limit", "_on_bad", "_partial")

    def __init__(self, limit: int, on_bad: OnBad) -> None:
        self._limit = limit
        self._on_bad = on_bad
        self._partial = PartialLine(limit)

    def skip_current_line(self) -> None:
        """The next bytes finish a line that began before reading started: drop them silently."""
        self._partial.skip()

    def drop(self) -> int:
        """Forget the line in progress (its file ended); return how many bytes of it were held."""
        return self._partial.drop()

    def split(self, f: OpenFile, data: bytes, out: list[Line]) -> None:
        """Append the lines completed by `data` (just read from `f`) to `out`; keep the rest."""
        base, data = f.consume(data)
        pieces = data.split(b"\n")
        tail = pieces.pop()
        if pieces:
            self._lines(f, pieces, base, out)
        self._keep(f, tail)

    def _lines(self, f: OpenFile, pieces: list[bytes], base: int, out: list[Line]) -> None:
        """The hot loop: per line a length check, a CR check, a blank check and two objects."""
        limit, path, lineno, ident = self._limit, f.path, f.lineno, f.identity()
        raw_len = len(pieces[0])
        first = self._partial.complete(pieces[0])
        if first is None:  # the end of a skipped line
            if lineno is not None:
                lineno += 1
            end = base + raw_len + 1
            del pieces[0]
        else:
            end = base + raw_len - len(first)  # adding len(first) + 1 below lands after the raw piece
            pieces[0] = first
        for piece in pieces:
            end += len(piece) + 1
            if lineno is not None:
                lineno += 1
            if len(piece) > limit:
                self._on_bad(too_long(path, lineno, limit))
                continue
            data = piece[:-1] if piece.endswith(b"\r") else piece
            if not data or data.isspace():
                self._on_bad(BadInput("blank_line", "blank line (skipped)", Location(path, lineno)))
                continue
            pos = _new(Position)
            _set_identity(pos, ident)
            _set_offset(pos, end)
            _set_pos_path(pos, path)
            _set_complete(pos, False)
            line = _new(Line)
            _set_data(line, data)
            _set_path(line, path)
            _set_lineno(line, lineno)
            _set_position(line, pos)
            out.append(line)
        f.lineno = lineno

    def _keep(self, f: OpenFile, tail: bytes) -> None:
        """Hold the start of a line until its newline; past the limit, report it and skip the rest."""
        if self._partial.add(tail):
            self._on_bad(too_long(f.path, None if f.lineno is None else f.lineno + 1, self._limit))


def too_long(path: str, lineno: int | None, limit: int) -> BadInput:
    return BadInput("line_too_long", f"line longer than {limit} bytes (skipped)", Location(path, lineno))
