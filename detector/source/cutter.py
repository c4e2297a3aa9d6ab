"""Cut the blocks read from a finite input into complete lines: the hot path of `detector scan`.

A line is complete once its newline has arrived; the line in progress is held between blocks
(never more than the limit: an over-long line is reported once and skipped). The usual block
(no CR, too short to hold an over-long line) stays whole, as a `Block` that only knows where
its lines end, so the parser can decode all of them in one call; anything else is cut into
`Lines`, checked line by line. `replay` (files, gzip, stdin) and `stream` (a followed pipe) use it.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass

from detector.errors import BadInput, Location
from detector.source.partial import PartialLine

OnBad = Callable[[BadInput], None]


@dataclass(frozen=True, slots=True)
class Lines:
    """Complete lines of a block that had to be cut and checked one by one (it had a CR, or
    could hold an over-long line), in order, without their newline (nor a CR before it).
    Over-long lines are reported and left out; blank lines are kept, for the parser to report."""

    lines: list[bytes]
    path: str  # display name: the file path, or "<stdin>"
    linenos: Sequence[int]  # the 1-based line number of each line


class Block:
    """Complete lines of one block read, left in the block: the hot path of `detector scan`.

    Cutting a block into one bytes object per line cost ~0.4 us a line (an allocation and a
    copy each); here the reader only notes where each line ends, and the parser decodes all
    lines at once (`parse.audit.parse_block`). Line `i` is cut out only when someone asks.
    `shaped` says that every line starts with `{` and ends with `}`: only then can a decode of
    the whole block be matched line for line (see parse_block). `lines`/`linenos` give the
    same view as `Lines`, for readers that go line by line."""

    __slots__ = ("data", "ends", "first", "path", "shaped", "start")

    def __init__(self, data: bytes, start: int, ends: list[int], path: str, first: int, *, shaped: bool) -> None:
        self.data = data
        self.start = start  # offset of the first line
        self.ends = ends  # offset of each line's newline; never empty
        self.path = path
        self.first = first  # line number of the first line
        self.shaped = shaped

    @property
    def lines(self) -> list[bytes]:
        return self.data[self.start:self.ends[-1]].split(b"\n")

    @property
    def linenos(self) -> range:
        return range(self.first, self.first + len(self.ends))

    def line(self, index: int) -> bytes:
        """Line `index` (0-based within the block), without its newline."""
        begin = self.ends[index - 1] + 1 if index else self.start
        return self.data[begin:self.ends[index]]

    def view(self) -> memoryview:
        """All the lines with their newlines, without a copy."""
        return memoryview(self.data)[self.start:self.ends[-1] + 1]


def _line_ends(data: bytes, start: int, last: int) -> tuple[list[int], bool]:
    """The newline offsets of the lines from `start` through the newline at `last`, and
    whether every one of them starts with `{` and ends with `}`. A loop over memchr-based
    `find` costs about half of `split`, and `bytes.count` is a byte-by-byte loop slower still."""
    find = data.find
    ends: list[int] = []
    append = ends.append
    shaped = True
    pos = start
    while pos <= last:
        end = find(b"\n", pos)
        if shaped and (data[pos] != 0x7B or data[end - 1] != 0x7D):  # "{" ... "}"
            shaped = False
        append(end)
        pos = end + 1
    return ends, shaped


class LineCutter:
    """Cuts the blocks of one input into a `Block` or `Lines` each: holds the line in progress
    (never more than `limit` bytes of it), reports each over-long line once, in line order, and
    trims a CR before the newline. The finite reader (`source.replay`) and the stdin follower
    (`source.stream`) share it."""

    def __init__(self, name: str, limit: int, on_bad: OnBad) -> None:
        self.name = name
        self.lineno = 0  # complete lines so far
        self._limit = limit
        self._on_bad = on_bad
        self._partial = PartialLine(limit)

    def cut(self, block: bytes) -> Iterator[Lines | Block]:
        """The lines `block` completes. This is the hot loop, so it works per block: the lines
        of a block without CRs that cannot hold an over-long line (the usual case) stay in it,
        as one `Block`; otherwise they are cut and checked one by one."""
        if len(block) > self._limit or block.find(b"\r") >= 0:  # find is a memchr
            yield from self._cut_checked(block)
            return
        last = block.rfind(b"\n")
        if last < 0:
            if self._partial.add(block):
                self._on_bad(_too_long(self.name, self.lineno + 1, self._limit))
            return
        start = 0
        if self._partial.pending:  # the block's first line ends the one in progress
            start = block.find(b"\n") + 1
            self.lineno += 1
            if (first := self._partial.complete(block[:start - 1])) is not None:
                # Held pieces plus this one may pass the limit, and a CR may end the held part.
                yield from _checked([first], self.name, self.lineno, self._limit, self._on_bad)
        if start <= last:
            ends, shaped = _line_ends(block, start, last)
            first_lineno = self.lineno + 1
            self.lineno += len(ends)
            yield Block(block, start, ends, self.name, first_lineno, shaped=shaped)
        if self._partial.add(block[last + 1:]):
            self._on_bad(_too_long(self.name, self.lineno + 1, self._limit))

    def _cut_checked(self, block: bytes) -> Iterator[Lines]:
        """`cut` for a block with a CR, or large enough to hold an over-long line."""
        name, limit = self.name, self._limit
        pieces = block.split(b"\n")
        tail = pieces.pop()
        if pieces:
            first = self._partial.complete(pieces[0])
            start = self.lineno + 1
            self.lineno += len(pieces)
            if first is None:  # the end of an over-long line, reported already
                del pieces[0]
                start += 1
            else:
                pieces[0] = first
            if pieces:
                yield from _checked(pieces, name, start, limit, self._on_bad)
        if self._partial.add(tail):
            self._on_bad(_too_long(name, self.lineno + 1, limit))

    def rest(self) -> bytes:
        """At the end of the input: a final line without its newline (b"" if none)."""
        return self._partial.rest()


def _checked(pieces: list[bytes], name: str, start: int, limit: int, on_bad: OnBad) -> Iterator[Lines]:
    """The lines of a block with an over-long line or CRs, line by line; each over-long line is
    reported between the lines before it and those after it, so reports stay in line order."""
    lines: list[bytes] = []
    linenos: list[int] = []
    for lineno, piece in enumerate(pieces, start):
        if len(piece) > limit:
            if lines:
                yield Lines(lines, name, linenos)
                lines, linenos = [], []
            on_bad(_too_long(name, lineno, limit))
            continue
        lines.append(piece[:-1] if piece[-1:] == b"\r" else piece)
        linenos.append(lineno)
    if lines:
        yield Lines(lines, name, linenos)


def _too_long(name: str, lineno: int, limit: int) -> BadInput:
    return BadInput("line_too_long", f"line longer than {limit} bytes (skipped)", Location(name, lineno))
