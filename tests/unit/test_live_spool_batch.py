"""detector.live sizes a batch of spool lines by their bytes: a spool line can be one webhook
request or one kafka record holding an EventList of thousands of events."""

from __future__ import annotations

from dataclasses import dataclass

from detector.live import SPOOL_BATCH_BYTES, spool_batch


@dataclass
class Line:
    data: bytes


def test_a_batch_is_about_a_mebibyte_of_lines_like_the_last() -> None:
    small, big = [Line(b"x" * 10_000)] * 5, [Line(b"x" * 500_000)] * 2
    assert spool_batch(small, 100, 8) == 100  # ~10 KB lines: the cap
    assert spool_batch(big, 100, 8) == SPOOL_BATCH_BYTES // 500_000  # 2 lines, ~1 MB
    assert spool_batch([Line(b"x" * 50_000_000)], 100, 8) == 1  # never less than one line
    assert spool_batch([], 100, 8) == 8  # nothing read: as it was
    assert spool_batch([Line(b"")], 2_000, 8) == 2_000
