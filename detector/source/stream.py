"""Follow a stream (`detector run --file -`: standard input) as lines arrive, until it ends.

A pipe has no name to reopen, no identity and no position to return to: nothing rotates,
and nothing can be checkpointed or resumed. So this reader is far simpler than the file
follower: it never blocks (a `select` says whether bytes are waiting), holds the line in
progress until its newline (at most `max_line_bytes` of it), and reports an over-long line
once and skips it, as every other reader does.
"""

from __future__ import annotations

import os
import select
from collections.abc import Callable
from dataclasses import dataclass

from detector.errors import BadInput, Location
from detector.source.cutter import LineCutter
from detector.source.replay import STDIN_NAME, Diagnose, final_line

OnBad = Callable[[BadInput], None]

_BLOCK_BYTES = 1 << 16  # a pipe holds 64 KiB


@dataclass(frozen=True, slots=True)
class StreamLine:
    """One complete line of the stream, without its newline (nor a CR before it)."""

    data: bytes
    path: str
    lineno: int  # 1-based


class StreamFollower:
    """Complete lines of the file descriptor `fd` as they arrive; `ended` once it is closed."""

    def __init__(self, fd: int, *, on_bad: OnBad, max_line_bytes: int = 1 << 20, name: str = STDIN_NAME,
                 diagnose: Diagnose | None = None) -> None:
        """`diagnose` judges a final line without its newline once the stream has ended, as in
        `replay.read_input`: whole lines are returned, others reported."""
        self._fd = fd
        self._on_bad = on_bad
        self._diagnose = diagnose
        self._cutter = LineCutter(name, max_line_bytes, on_bad)
        self._ready: list[StreamLine] = []
        self._eof = False

    @property
    def ended(self) -> bool:
        """The writer closed the stream and every line was returned."""
        return self._eof and not self._ready

    def wait(self, timeout: float) -> None:
        """Until bytes (or the end) are waiting, at most `timeout` seconds."""
        if not self._eof:
            select.select([self._fd], [], [], timeout)

    def read(self, max_lines: int = 10_000) -> list[StreamLine]:
        """The complete lines available now, up to `max_lines`, in order. Never blocks."""
        while len(self._ready) < max_lines and not self._eof and self._readable():
            try:
                data = os.read(self._fd, _BLOCK_BYTES)
            except OSError as exc:
                self._end(f"read failed: {exc.strerror or exc}")
                break
            if data:
                self._split(data)
            else:
                self._end(None)
        out, self._ready = self._ready[:max_lines], self._ready[max_lines:]
        return out

    def _readable(self) -> bool:
        try:
            return bool(select.select([self._fd], [], [], 0)[0])
        except (OSError, ValueError) as exc:  # closed or invalid descriptor: the stream is over
            self._end(f"cannot read: {exc}")
            return False

    def _split(self, data: bytes) -> None:
        for batch in self._cutter.cut(data):
            self._ready += (StreamLine(line, batch.path, n) for line, n in zip(batch.lines, batch.linenos, strict=True))

    def _end(self, error: str | None) -> None:
        """The stream is over: a final line without its newline is returned if `diagnose` finds
        it whole, else reported and skipped as possibly cut short (as `detector scan` does).
        After a read error, it is cut short for sure."""
        self._eof = True
        where = Location(self._cutter.name, self._cutter.lineno + 1)
        if error is not None:
            self._on_bad(BadInput("unreadable", error, where))
        if (rest := self._cutter.rest()).strip():
            # After a read error the line is cut short for sure: no diagnosis.
            line = final_line(rest, where, self._on_bad, self._diagnose if error is None else None)
            if line is not None:
                self._ready.append(StreamLine(line, where.path, self._cutter.lineno + 1))
