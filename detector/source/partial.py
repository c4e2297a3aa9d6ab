"""The unfinished line at the end of the bytes read so far, for every reader of lines.

A line is complete only once its newline has arrived. Until then its start is held here,
never more than `limit` bytes: a line that grows past the limit is dropped at once and its
remaining bytes are skipped up to its newline, so an over-long line is never held whole.
"""

from __future__ import annotations


class PartialLine:
    """The line in progress: held pieces, their size, and whether we are skipping to a newline."""

    __slots__ = ("_limit", "_parts", "_size", "_skipping")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._parts: list[bytes] = []
        self._size = 0
        self._skipping = False  # inside an over-long line, or a line begun before reading started

    def add(self, tail: bytes) -> bool:
        """Keep `tail` (a line start without its newline); True when that makes the line over-long."""
        if self._skipping or not tail:
            return False
        self._parts.append(tail)
        self._size += len(tail)
        if self._size <= self._limit:
            return False
        self._parts.clear()
        self._size = 0
        self._skipping = True
        return True

    @property
    def pending(self) -> bool:
        """A line is in progress (held, or being skipped): the next newline ends it."""
        return self._skipping or bool(self._parts)

    def complete(self, piece: bytes) -> bytes | None:
        """The whole line that `piece` (up to a newline) ends, or None if it was being skipped."""
        if self._skipping:
            self._skipping = False
            return None
        if not self._parts:
            return piece
        line = b"".join([*self._parts, piece])
        self._parts.clear()
        self._size = 0
        return line

    def skip(self) -> None:
        """The next bytes finish a line that is not ours (it began before we started): drop them."""
        self._skipping = True

    def drop(self) -> int:
        """Forget the line in progress (its file ended); return how many bytes of it were held."""
        size = self._size
        self._parts.clear()
        self._size = 0
        self._skipping = False
        return size

    def rest(self) -> bytes:
        """What is held: at the end of input, a final line without its newline (or b"")."""
        return b"".join(self._parts)
