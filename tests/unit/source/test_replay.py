"""Tests for detector.source.replay: finite files, gzip and stdin read as records."""

from __future__ import annotations

import dataclasses
import gzip
import io
import sys
import tracemalloc
from pathlib import Path

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from detector.errors import BadInput, Location, SourceError
from detector.source.cutter import Block, Lines
from detector.source.replay import Record, read_input, read_records

Reports = list[tuple[str, int | None]]


def scan(path: Path | str, **options: object) -> tuple[list[Record], list[BadInput]]:
    """Read every record of `path`, collecting the reports."""
    bad: list[BadInput] = []
    records = list(read_records(str(path), bad.append, **options))  # type: ignore[arg-type]
    return records, bad


def write(tmp_path: Path, data: bytes, name: str = "audit.log") -> Path:
    """Write `data` to a file named `name` under tmp_path."""
    path = tmp_path / name
    path.write_bytes(data)
    return path


def lines_of(records: list[Record]) -> list[tuple[bytes, int]]:
    """The data and line number of each record."""
    return [(r.data, r.lineno) for r in records]


def reasons(bad: list[BadInput]) -> Reports:
    """The reason and line of each report."""
    return [(b.reason, b.location.line if b.location else None) for b in bad]


class Pipe(io.RawIOBase):
    """A byte source that, like a pipe, gives at most the next of `sizes` bytes per read."""

    def __init__(self, data: bytes, sizes: list[int]) -> None:
        self._data = memoryview(data)
        self._sizes = sizes
        self._reads = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: memoryview) -> int:  # type: ignore[override]
        size = min(len(buffer), len(self._data), self._sizes[self._reads % len(self._sizes)])
        self._reads += 1
        buffer[:size] = self._data[:size]
        self._data = self._data[size:]
        return size


class FakeStdin:
    """Stands in for sys.stdin: only `.buffer` is read."""

    def __init__(self, buffer: io.BufferedIOBase) -> None:
        self.buffer = buffer


def scan_stdin(buffer: io.BufferedIOBase, **options: object) -> tuple[list[Record], list[BadInput]]:
    """Read "-" with sys.stdin replaced by one whose buffer is `buffer`."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", FakeStdin(buffer))
        return scan("-", **options)


# -- line mode -----------------------------------------------------------------------------------


def test_lines_are_yielded_without_newline_with_line_numbers(tmp_path: Path) -> None:
    """Each complete line becomes a record holding its bytes, its 1-based line and the path."""
    path = write(tmp_path, b'{"a":1}\n{"b":2}\n{"c":3}\n')
    records, bad = scan(path)
    assert records == [Record(b'{"a":1}', str(path), 1, False), Record(b'{"b":2}', str(path), 2, False),
                       Record(b'{"c":3}', str(path), 3, False)]
    assert bad == []


def test_records_are_frozen_values() -> None:
    """A record built by the reader is an ordinary frozen Record (fast construction changes nothing)."""
    record = Record(b"x", "p", 1, False)
    with pytest.raises(dataclasses.FrozenInstanceError):
        record.lineno = 2  # type: ignore[misc]
    assert record == Record(b"x", "p", 1, False)
    assert repr(record) == "Record(data=b'x', path='p', lineno=1, is_document=False)"


def test_crlf_line_endings_are_stripped(tmp_path: Path) -> None:
    """A CRLF line is yielded without its CR as well as its LF."""
    records, bad = scan(write(tmp_path, b"one\r\ntwo\r\n"))
    assert lines_of(records) == [(b"one", 1), (b"two", 2)]
    assert bad == []


def test_blank_lines_are_reported_and_counted(tmp_path: Path) -> None:
    """Whitespace-only lines are reported as blank_line, not yielded, and still count as lines."""
    records, bad = scan(write(tmp_path, b"a\n\n \t\n\r\nb\n"))
    assert lines_of(records) == [(b"a", 1), (b"b", 5)]
    assert reasons(bad) == [("blank_line", 2), ("blank_line", 3), ("blank_line", 4)]
    assert str(bad[0]) == f"{tmp_path / 'audit.log'}:2: blank line (skipped)"


def test_over_long_line_is_reported_once_and_the_next_line_is_intact(tmp_path: Path) -> None:
    """A line over max_line_bytes is reported once with its line, and the lines after it are read."""
    records, bad = scan(write(tmp_path, b"short\n" + b"x" * 250 + b"\nafter\n"), max_line_bytes=100)
    assert lines_of(records) == [(b"short", 1), (b"after", 3)]
    assert reasons(bad) == [("line_too_long", 2)]
    assert bad[0].message == "line longer than 100 bytes (skipped)"


def test_line_of_exactly_the_limit_is_kept(tmp_path: Path) -> None:
    """A line of exactly max_line_bytes bytes is a record; one byte more is too long."""
    records, bad = scan(write(tmp_path, b"y" * 100 + b"\n" + b"z" * 101 + b"\n"), max_line_bytes=100)
    assert lines_of(records) == [(b"y" * 100, 1)]
    assert reasons(bad) == [("line_too_long", 2)]


def test_two_megabyte_line_is_reported_with_the_default_limit(tmp_path: Path) -> None:
    """With the default 1 MiB limit a 2 MB line spanning several read blocks is reported once."""
    records, bad = scan(write(tmp_path, b"first\n" + b"q" * 2_000_000 + b"\nlast\n"))
    assert lines_of(records) == [(b"first", 1), (b"last", 3)]
    assert reasons(bad) == [("line_too_long", 2)]
    assert bad[0].message == f"line longer than {1 << 20} bytes (skipped)"


def test_memory_stays_bounded_on_a_huge_line(tmp_path: Path) -> None:
    """Reading a 32 MiB line never holds it: peak allocation stays a few MiB."""
    path = write(tmp_path, b"h" * (32 << 20) + b"\nok\n")
    tracemalloc.start()
    try:
        records, bad = scan(path)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert lines_of(records) == [(b"ok", 2)]
    assert reasons(bad) == [("line_too_long", 1)]
    assert peak < 8 << 20


def test_final_line_without_newline_is_reported_with_the_diagnosis(tmp_path: Path) -> None:
    """An unterminated last line is not yielded; the report carries what `diagnose` says about it."""
    seen: list[bytes] = []

    def diagnose(data: bytes) -> str:
        seen.append(data)
        return "data not recognized as a k8s audit event"

    records, bad = scan(write(tmp_path, b"a\n{partial"), diagnose=diagnose)
    assert lines_of(records) == [(b"a", 1)]
    assert reasons(bad) == [("unterminated_line", 2)]
    assert bad[0].message == ("final line has no newline (skipped: it may be incomplete); "
                              "data not recognized as a k8s audit event")
    assert seen == [b"{partial"]


def test_final_line_without_newline_and_without_diagnosis(tmp_path: Path) -> None:
    """Without `diagnose` (this layer cannot tell a whole line), the report is the bare message."""
    _, bad = scan(write(tmp_path, b"a\nb"))
    assert [b.message for b in bad] == ["final line has no newline (skipped: it may be incomplete)"]


@pytest.mark.parametrize("gz", [False, True])
def test_final_line_without_newline_is_read_when_diagnose_finds_it_whole(tmp_path: Path, gz: bool) -> None:
    """A finished input's last line without its newline (as `json.dump` writes) is a record when
    `diagnose` has nothing against it: gzip or not, after other lines or alone, CR removed."""
    for data, expected in ((b"a\nb", [(b"a", 1), (b"b", 2)]), (b'{"kind":"Event"}', [(b'{"kind":"Event"}', 1)]),
                           (b"a\nb\r", [(b"a", 1), (b"b", 2)])):
        path = write(tmp_path, gzip.compress(data) if gz else data, "audit.log.gz" if gz else "audit.log")
        records, bad = scan(path, diagnose=lambda _data: None)
        assert (lines_of(records), bad) == (expected, [])


def test_single_object_without_newline_is_an_unterminated_line(tmp_path: Path) -> None:
    """A lone one-line object with no newline stays in line mode: reported when `diagnose` finds
    it incomplete."""
    records, bad = scan(write(tmp_path, b'{"kind":"Event"}'), diagnose=lambda _data: "looks fine")
    assert records == []
    assert reasons(bad) == [("unterminated_line", 1)]
    assert bad[0].message.endswith("; looks fine")


def test_over_long_final_line_without_newline_is_reported_once(tmp_path: Path) -> None:
    """An unterminated last line over the limit is reported as too long only."""
    _, bad = scan(write(tmp_path, b"a\n" + b"x" * 300), max_line_bytes=100)
    assert reasons(bad) == [("line_too_long", 2)]


def test_binary_garbage_is_yielded_as_bytes(tmp_path: Path) -> None:
    """Non-UTF-8 bytes are not this layer's business: the line is yielded for the parser to reject."""
    records, bad = scan(write(tmp_path, b"\xff\xfe\x00garbage\n"))
    assert lines_of(records) == [(b"\xff\xfe\x00garbage", 1)]
    assert bad == []


def test_empty_file_yields_nothing(tmp_path: Path) -> None:
    """An empty file gives no record and no report."""
    assert scan(write(tmp_path, b"")) == ([], [])


# -- opening --------------------------------------------------------------------------------------


def test_missing_file_raises_source_error(tmp_path: Path) -> None:
    """A file that cannot be opened raises SourceError naming the path and the OS reason."""
    missing = tmp_path / "nope.log"
    with pytest.raises(SourceError) as caught:
        scan(missing)
    assert caught.value.location == Location(str(missing))
    assert str(caught.value) == f"{missing}: cannot open: No such file or directory"


def test_directory_raises_source_error(tmp_path: Path) -> None:
    """A directory is not a readable input."""
    with pytest.raises(SourceError, match="Is a directory"):
        scan(tmp_path)


def test_stdin_is_read_with_its_display_name() -> None:
    """"-" reads sys.stdin.buffer, names records "<stdin>" and leaves stdin open."""
    buffer = io.BytesIO(b"one\n\ntwo\n")
    records, bad = scan_stdin(buffer)
    assert records == [Record(b"one", "<stdin>", 1, False), Record(b"two", "<stdin>", 3, False)]
    assert [str(b) for b in bad] == ["<stdin>:2: blank line (skipped)"]
    assert not buffer.closed


def test_gzip_on_stdin_is_detected_by_its_magic_bytes() -> None:
    """Compressed bytes piped to stdin are decompressed, even arriving in small reads."""
    pipe = io.BufferedReader(Pipe(gzip.compress(b"one\ntwo\n"), [1, 3, 5]))
    records, bad = scan_stdin(pipe)
    assert lines_of(records) == [(b"one", 1), (b"two", 2)]
    assert bad == []


def test_stdin_without_a_byte_buffer_raises_source_error() -> None:
    """When there is no usable standard input, reading "-" raises SourceError."""
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", None)
        with pytest.raises(SourceError, match="standard input"):
            scan("-")


# -- gzip -----------------------------------------------------------------------------------------


def test_gz_file_is_decompressed(tmp_path: Path) -> None:
    """A .gz file is read through gzip, with line numbers of the decompressed text."""
    path = write(tmp_path, gzip.compress(b"a\n\nb\n"), "audit.log.gz")
    records, bad = scan(path)
    assert lines_of(records) == [(b"a", 1), (b"b", 3)]
    assert reasons(bad) == [("blank_line", 2)]


def test_gzip_is_detected_without_the_gz_suffix(tmp_path: Path) -> None:
    """A rotated file compressed under another name is recognised by its magic bytes."""
    records, _ = scan(write(tmp_path, gzip.compress(b"a\nb\n"), "audit-2024-01-01.log"))
    assert lines_of(records) == [(b"a", 1), (b"b", 2)]


def test_concatenated_gzip_members_are_read_in_full(tmp_path: Path) -> None:
    """A gzip file made of several members (cat a.gz b.gz) reads as one text."""
    records, _ = scan(write(tmp_path, gzip.compress(b"a\n") + gzip.compress(b"b\n"), "x.gz"))
    assert lines_of(records) == [(b"a", 1), (b"b", 2)]


def test_truncated_gzip_is_reported_after_the_lines_before_it(tmp_path: Path) -> None:
    """A gzip file cut short yields the lines it holds, then reports unreadable instead of raising."""
    text = b"".join(b'{"n":%d,"pad":"%s"}\n' % (i, b"p" * (i % 97)) for i in range(20_000))
    compressed = gzip.compress(text)
    records, bad = scan(write(tmp_path, compressed[: len(compressed) // 2], "cut.gz"))
    assert 0 < len(records) < 20_000
    lines = text.split(b"\n")
    assert lines_of(records) == [(lines[i], i + 1) for i in range(len(records))]
    assert reasons(bad) == [("unreadable", len(records) + 1)]
    assert bad[0].message.endswith("(rest of the input skipped)")


def test_corrupt_gzip_is_reported_not_raised(tmp_path: Path) -> None:
    """Damaged compressed data mid-file is reported as unreadable and reading stops."""
    text = b"".join(b"line %d %s\n" % (i, b"abcdefghij"[: i % 11]) for i in range(50_000))
    compressed = bytearray(gzip.compress(text))
    middle = len(compressed) // 2
    compressed[middle:middle + 64] = b"\xff" * 64
    records, bad = scan(write(tmp_path, bytes(compressed), "bad.gz"))
    assert len(records) < 50_000
    assert [b.reason for b in bad] == ["unreadable"]


def test_gz_suffix_on_plain_text_is_reported(tmp_path: Path) -> None:
    """A .gz file that is not gzip is reported as unreadable, not read as text."""
    records, bad = scan(write(tmp_path, b"plain\n", "fake.gz"))
    assert records == []
    assert reasons(bad) == [("unreadable", 1)]
    assert "Not a gzipped file" in bad[0].message


# -- document mode --------------------------------------------------------------------------------


def test_json_array_is_one_document(tmp_path: Path) -> None:
    """Input starting with `[` is yielded whole as one document, at the line of the `[`."""
    data = b"\n\n  [\n" + b'{"kind":"Event"},\n' * 3 + b'{"kind":"Event"}]\n'
    path = write(tmp_path, data)
    records, bad = scan(path)
    assert records == [Record(data, str(path), 3, True)]
    assert bad == []


def test_pretty_printed_event_list_is_one_document(tmp_path: Path) -> None:
    """A `{` whose line does not close the object (kubectl -o json output) makes one document."""
    data = b'{\n  "kind": "EventList",\n  "items": [\n    {"kind": "Event"}\n  ]\n}\n'
    path = write(tmp_path, data, "list.json")
    records, bad = scan(path, max_line_bytes=10)
    assert records == [Record(data, str(path), 1, True)]
    assert bad == []


def test_compressed_document_is_one_document(tmp_path: Path) -> None:
    """Document mode is chosen on the decompressed bytes of a gzip file."""
    data = b'{\n  "kind": "EventList",\n  "items": []\n}\n'
    records, bad = scan(write(tmp_path, gzip.compress(data), "list.json.gz"))
    assert [(r.data, r.lineno, r.is_document) for r in records] == [(data, 1, True)]
    assert bad == []


def test_one_object_per_line_stays_in_line_mode(tmp_path: Path) -> None:
    """JSON lines whose first line closes its object are read line by line."""
    records, _ = scan(write(tmp_path, b' {"a":1} \n{"b":2}\n'))
    assert lines_of(records) == [(b' {"a":1} ', 1), (b'{"b":2}', 2)]
    assert not any(r.is_document for r in records)


def test_document_on_stdin_is_sniffed_without_seeking() -> None:
    """Document mode is chosen on a non-seekable stream that arrives a few bytes at a time."""
    data = b'  {\n "kind": "EventList",\n "items": []\n}'
    records, bad = scan_stdin(io.BufferedReader(Pipe(data, [2, 1, 7])))
    assert records == [Record(data, "<stdin>", 1, True)]
    assert bad == []


def test_oversized_document_is_reported_and_skipped(tmp_path: Path) -> None:
    """A document beyond max_document_bytes is reported at its start and nothing is yielded."""
    data = b"[\n" + b'{"kind":"Event"},\n' * 100 + b"{}]\n"
    records, bad = scan(write(tmp_path, data), max_document_bytes=1000)
    assert records == []
    assert reasons(bad) == [("document_too_large", 1)]
    assert bad[0].message == "document larger than 1000 bytes (skipped)"


def test_truncated_gzip_document_is_reported(tmp_path: Path) -> None:
    """A compressed document cut short is reported as unreadable at its start, not yielded."""
    data = b"[" + b",".join(b'{"kind":"Event","n":%d}' % i for i in range(50_000)) + b"]"
    compressed = gzip.compress(data)
    records, bad = scan(write(tmp_path, compressed[: len(compressed) // 2], "doc.json.gz"))
    assert records == []
    assert reasons(bad) == [("unreadable", 1)]


# -- property -------------------------------------------------------------------------------------

_BYTES = st.sampled_from([b"a", b"}", b" ", b"\t", b"\r", b"\x0b", b"\x00", b"\xff", b"\n", b"\n"])


def expected(data: bytes, limit: int) -> tuple[list[tuple[bytes, int]], Reports]:
    """A direct model of line mode: the records and the reports `data` should give."""
    *complete, last = data.split(b"\n")
    records: list[tuple[bytes, int]] = []
    reports: Reports = []
    for lineno, raw in enumerate(complete, 1):
        line = raw.removesuffix(b"\r")
        if len(raw) > limit:
            reports.append(("line_too_long", lineno))
        elif not line.strip():
            reports.append(("blank_line", lineno))
        else:
            records.append((line, lineno))
    if last:
        reason = ("line_too_long" if len(last) > limit else
                  "blank_line" if not last.strip() else "unterminated_line")
        reports.append((reason, len(complete) + 1))
    return records, reports


@given(
    data=st.lists(_BYTES, max_size=300).map(b"".join),
    limit=st.integers(1, 12),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=8),
)
def test_records_match_a_model_of_lines_under_any_read_split(
    data: bytes, limit: int, sizes: list[int],
) -> None:
    """Whatever the content and however reads split it, records and reports match the line model."""
    records, bad = scan_stdin(io.BufferedReader(Pipe(data, sizes)), max_line_bytes=limit)
    assert (lines_of(records), reasons(bad)) == expected(data, limit)


_JSONISH = st.sampled_from([b"{", b"}", b"[", b"]", b"a", b"\r", b"\n", b"\n", b" ", b" ", b" ", b" "])


@given(
    data=st.lists(_JSONISH, max_size=120).map(b"".join),
    limit=st.integers(1, 12),
    sizes=st.lists(st.integers(1, 20), min_size=1, max_size=8),
)
@example(data=b"\r{{\n", limit=1, sizes=[1])  # a `{` line only known to be over-long later
@example(data=b"     [\n", limit=3, sizes=[1])  # leading space longer than the limit
def test_mode_and_records_do_not_depend_on_how_reads_split_the_input(
    data: bytes, limit: int, sizes: list[int],
) -> None:
    """Document sniffing and line splitting give the same result for small reads as for one read."""
    whole = scan_stdin(io.BytesIO(data), max_line_bytes=limit)
    split = scan_stdin(io.BufferedReader(Pipe(data, sizes)), max_line_bytes=limit)
    assert (split[0], reasons(split[1])) == (whole[0], reasons(whole[1]))


def test_leading_whitespace_before_a_long_object_line_stays_in_line_mode() -> None:
    """An object line that only ends past the limit is not mistaken for a document by small reads."""
    data = b" " * 8 + b'{"kind":"Event"}\nnext\n'
    records, bad = scan_stdin(io.BufferedReader(Pipe(data, [3])), max_line_bytes=10)
    assert lines_of(records) == [(b"next", 2)]
    assert reasons(bad) == [("line_too_long", 1)]


def test_property_model_sees_what_the_reader_sees_on_a_file(tmp_path: Path) -> None:
    """The line model agrees with the reader on a real file with every kind of line at once."""
    data = b"ok\r\n\n" + b"x" * 20 + b"\n \r\nend\nx" + b"y" * 11 + b"\nlast"
    records, bad = scan(write(tmp_path, data), max_line_bytes=12)
    assert (lines_of(records), reasons(bad)) == expected(data, 12)


def test_read_input_batches_lines_per_block_and_keeps_blank_lines_for_the_parser(tmp_path: Path) -> None:
    """The scan hot path gets one `Lines` per block: numbered lines, CRs removed, blank lines kept
    (the parser reports them), over-long lines reported in line order and left out."""
    path = write(tmp_path, b'{"a":1}\r\n\n' + b"x" * 50 + b'\n{"b":2}\n')
    bad: list[BadInput] = []
    items = list(read_input(str(path), bad.append, max_line_bytes=20))
    assert all(isinstance(item, Lines) for item in items)
    got = [(line, lineno) for item in items for line, lineno in zip(item.lines, item.linenos, strict=True)]
    assert got == [(b'{"a":1}', 1), (b"", 2), (b'{"b":2}', 4)]
    assert [(b.reason, b.location) for b in bad] == [("line_too_long", Location(str(path), 3))]
    plain = write(tmp_path, b"".join(b'{"n":%d}\n' % i for i in range(1000)), "plain.log")
    batches = list(read_input(str(plain), bad.append))  # the sniffed head, then one block
    assert len(batches) <= 3
    assert all(isinstance(b, Lines | Block) for b in batches)
    assert [n for b in batches for n in b.linenos] == list(range(1, 1001))
    assert any(isinstance(b, Block) and b.shaped for b in batches)


def lines_read(path: Path, sizes: list[int], limit: int = 1 << 20) -> tuple[list[tuple[bytes, int]], Reports]:
    """Every line read_input gives (as `Lines` or `Block`) with its number, reading through a
    pipe that returns `sizes` bytes per read, and the reports."""
    bad: list[BadInput] = []
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(sys, "stdin", FakeStdin(io.BufferedReader(Pipe(path.read_bytes(), sizes))))
        items = list(read_input("-", bad.append, max_line_bytes=limit))
    got = []
    for item in items:
        assert isinstance(item, Lines | Block)
        got += zip(item.lines, item.linenos, strict=True)
        if isinstance(item, Block):  # line(i) and the whole-block view agree with lines
            assert [item.line(i) for i in range(len(item.ends))] == item.lines
            assert bytes(item.view()) == b"".join(line + b"\n" for line in item.lines)
    return got, reasons(bad)


def test_block_keeps_lines_in_place_and_says_whether_each_is_one_object(tmp_path: Path) -> None:
    """Lines stay in the block; `shaped` is true only when every line starts with { and ends with }."""
    objects = b'{"a":1}\n{"b":[2]}\n{}\n'
    assert lines_read(write(tmp_path, objects, "a.log"), [1 << 17]) == (
        [(b'{"a":1}', 1), (b'{"b":[2]}', 2), (b"{}", 3)], [])
    for odd in (b"\n", b" {}\n", b"{} \n", b"[1]\n", b'{"a":\n'):
        path = write(tmp_path, objects + odd + objects, "odd.log")
        bad: list[BadInput] = []
        [block] = [b for b in read_input(str(path), bad.append) if isinstance(b, Block)]
        assert not block.shaped, odd
    [block] = [b for b in read_input(str(write(tmp_path, objects, "b.log")), print) if isinstance(b, Block)]
    assert block.shaped


def test_lines_split_across_reads_are_joined_checked_and_numbered(tmp_path: Path) -> None:
    """Whatever the read sizes: a line completed by the next read is checked for its length
    and a CR held from the previous read, and numbering never skips or repeats."""
    data = b"".join(b'{"n":%d}\n' % i for i in range(300)) + b'{"long":"' + b"x" * 40 + b'"}\n{"z":1}\r\n{"end":1}\n'
    path = write(tmp_path, data, "split.log")
    want_lines = [(line.removesuffix(b"\r"), n) for n, line in enumerate(data.split(b"\n")[:-1], 1) if len(line) <= 30]
    cr, long = data.index(b"\r"), data.index(b'{"long"')
    # ... including reads that end right after the CR, and inside the long line
    for sizes in ([1 << 17], [7], [100, 3, 50], [20, 31], [cr + 1, 1 << 17], [long + 20, 1 << 17]):
        got, bad = lines_read(path, sizes, limit=30)
        assert got == want_lines, sizes
        assert bad == [("line_too_long", 301)], sizes
