"""StreamFollower: lines of a pipe as they arrive, with the same line rules as every reader."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator

import pytest

from detector.errors import BadInput, Location
from detector.source.stream import STDIN_NAME, StreamFollower, StreamLine


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    read, write = os.pipe()
    yield read, write
    for fd in (read, write):
        with contextlib.suppress(OSError):  # a test may have closed it
            os.close(fd)


def test_lines_arrive_whole_whatever_the_writes(pipe: tuple[int, int]) -> None:
    """A line written in two halves is returned once, whole, after its newline; CRLF is trimmed;
    read() never blocks while nothing is waiting."""
    read, write = pipe
    bad: list[BadInput] = []
    stream = StreamFollower(read, on_bad=bad.append)
    assert stream.read() == []  # nothing written yet: returns at once
    os.write(write, b'{"a":1}\r\n{"b":')
    assert stream.read() == [StreamLine(b'{"a":1}', STDIN_NAME, 1)]
    os.write(write, b'2}\n\n')
    assert stream.read() == [StreamLine(b'{"b":2}', STDIN_NAME, 2), StreamLine(b"", STDIN_NAME, 3)]
    assert not stream.ended
    os.close(write)
    stream.wait(5)
    assert stream.read() == []
    assert stream.ended
    assert bad == []


def test_over_long_and_unterminated_lines_are_reported_and_skipped(pipe: tuple[int, int]) -> None:
    """An over-long line is reported once and the next line is intact; a final line without
    its newline is reported at the end, not returned (it may be cut short)."""
    read, write = pipe
    bad: list[BadInput] = []
    stream = StreamFollower(read, on_bad=bad.append, max_line_bytes=10)
    os.write(write, b"x" * 25)
    assert stream.read() == []
    os.write(write, b"x" * 5 + b'\n{"c":3}\n{"d"')
    os.close(write)
    got: list[StreamLine] = []
    while not stream.ended:
        stream.wait(5)
        got += stream.read()
    assert got == [StreamLine(b'{"c":3}', STDIN_NAME, 2)]
    assert [(b.reason, b.location) for b in bad] == [
        ("line_too_long", Location(STDIN_NAME, 1)), ("unterminated_line", Location(STDIN_NAME, 3))]


def test_a_whole_final_line_is_returned_when_the_stream_ends(pipe: tuple[int, int]) -> None:
    """At the end of a pipe, a last line without its newline is returned when `diagnose` finds it
    whole (`detector run --file -` fed by `json.dump`), and reported with its reason when not."""
    for last, diagnosis in ((b'{"d":4}', None), (b'{"d"', "invalid JSON")):
        read, write = os.pipe()
        bad: list[BadInput] = []
        stream = StreamFollower(read, on_bad=bad.append, diagnose=lambda _line, why=diagnosis: why)
        os.write(write, b'{"c":3}\n' + last)
        os.close(write)
        got: list[StreamLine] = []
        while not stream.ended:
            stream.wait(5)
            got += stream.read()
        os.close(read)
        whole = [StreamLine(last, STDIN_NAME, 2)] if diagnosis is None else []
        assert got == [StreamLine(b'{"c":3}', STDIN_NAME, 1), *whole]
        assert [(b.reason, b.location, b.message.endswith(f"; {diagnosis}")) for b in bad] == (
            [] if diagnosis is None else [("unterminated_line", Location(STDIN_NAME, 2), True)])


def test_max_lines_bounds_each_read(pipe: tuple[int, int]) -> None:
    read, write = pipe
    stream = StreamFollower(read, on_bad=lambda _b: None)
    os.write(write, b"".join(b'{"n":%d}\n' % i for i in range(25)))
    os.close(write)
    sizes = []
    while not stream.ended:
        batch = stream.read(10)
        sizes.append(len(batch))
        if not batch:
            stream.wait(5)
    assert [n for n in sizes if n] == [10, 10, 5]
