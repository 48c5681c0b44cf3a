"""The shared reader of CSV and JSON lines files: physical line numbers, BOM, stray quotes."""

from __future__ import annotations

import io
from pathlib import Path

from hypothesis import given, settings
from hypothesis import strategies as st

from herald.tabular import (
    CsvReader,
    CsvRecord,
    json_lines,
    open_text,
    raw_text,
    undecodable,
    utf16_or_binary,
)


def write(tmp_path: Path, data: bytes, name: str = "f.csv") -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


class TestCsv:
    def test_bom_is_dropped_and_records_carry_their_first_physical_line(
        self, tmp_path: Path
    ) -> None:
        """The header is line 1; a quoted field over two lines moves the next row down."""
        path = write(tmp_path, b'\xef\xbb\xbfa,b\r\n1,"x\r\ny"\r\n\r\n2,z\r\n')
        with open_text(path) as handle:
            reader = CsvReader(handle)
            assert reader.header() == ["a", "b"]
            records = list(reader.records(2))
        assert [(r.line, r.fields) for r in records] == [(2, ["1", "x\r\ny"]), (5, ["2", "z"])]
        assert raw_text(records[0].lines) == '1,"x\r\ny"'

    def test_a_stray_quote_costs_one_line_when_failed_records_are_reread(
        self, tmp_path: Path
    ) -> None:
        path = write(tmp_path, b'a,b\n1,"open\n2,two\n3,three\n')
        with open_text(path) as handle:
            reader = CsvReader(handle, reread_failed=True)
            reader.header()
            records = list(reader.records(2))
        first, *rest = records
        assert (first.line, first.fields, first.reread) == (2, None, True)
        assert first.malformed == "unexpected end of data"
        assert [(r.line, r.fields) for r in rest] == [(3, ["2", "two"]), (4, ["3", "three"])]

    def test_without_rereading_a_failed_record_keeps_all_its_lines(self, tmp_path: Path) -> None:
        path = write(tmp_path, b'a,b\n1,"open\n2,two\n')
        with open_text(path) as handle:
            reader = CsvReader(handle)
            reader.header()
            [record] = list(reader.records(2))
        assert (record.line, record.lines, record.reread) == (2, ('1,"open\n', "2,two\n"), False)

    def test_wrong_width_and_undecodable_bytes_are_reported_not_raised(
        self, tmp_path: Path
    ) -> None:
        path = write(tmp_path, b"a,b\n1\n\xe9,2\n")
        with open_text(path) as handle:
            reader = CsvReader(handle)
            reader.header()
            short, latin = list(reader.records(2))
        assert (short.line, short.wrong_width) == (2, "expected 2 fields, found 1")
        assert latin.fields is not None and undecodable(latin.fields[0])
        assert raw_text(latin.lines) == "\\xe9,2"

    def test_an_empty_file_has_no_header(self, tmp_path: Path) -> None:
        with open_text(write(tmp_path, b"")) as handle:
            assert CsvReader(handle).header() is None

    def test_bytes_read_are_counted(self, tmp_path: Path) -> None:
        counted: list[int] = []
        with open_text(write(tmp_path, b"a\n1\n"), on_bytes=counted.append) as handle:
            list(handle)
        assert sum(counted) == 4

    def test_utf16_and_binary_files_are_told_apart_from_utf8(self, tmp_path: Path) -> None:
        assert utf16_or_binary(write(tmp_path, "a,b\n".encode("utf-16"), "u.csv"))
        assert utf16_or_binary(write(tmp_path, b"a\x00b", "z.csv"))
        assert not utf16_or_binary(write(tmp_path, b"\xef\xbb\xbfa,b\n", "s.csv"))


def test_json_lines_skip_blank_lines_and_keep_line_numbers(tmp_path: Path) -> None:
    path = write(tmp_path, b'{"a": 1}\n\n{"a": \n[1]\n', "f.jsonl")
    with open_text(path) as handle:
        items = list(json_lines(handle))
    assert [(i.line, i.value) for i in items] == [(1, {"a": 1}), (3, None), (4, [1])]
    assert items[1].error is not None and items[1].error.startswith("Expecting value")


class TestPlainLinesSplit:
    @settings(max_examples=600, deadline=None)
    @given(
        st.lists(
            st.text(alphabet=',"ab \t\r\n\x00é\u2028', max_size=12),
            max_size=8,
        ),
        st.integers(min_value=1, max_value=3),
        st.booleans(),
        st.booleans(),
        st.sampled_from(["", "\n"]),
    )
    def test_reads_every_file_as_the_csv_module_does(
        self, chunks: list[str], width: int, strict: bool, reread: bool, newline: str
    ) -> None:
        """Lines split at their commas give the same records (lines, fields, failures) as
        the csv module reading every line, whatever the quotes and line breaks (lines ended
        at CR, LF or CRLF as open_text reads them, or at LF only)."""
        data = "h\n" + "".join(chunks)

        def read(split_plain: bool) -> list[CsvRecord]:
            lines = io.StringIO(data, newline=newline)
            reader = CsvReader(lines, strict=strict, reread_failed=reread, split_plain=split_plain)
            reader.header()
            return list(reader.records(width))

        assert read(True) == read(False)

    @settings(max_examples=600, deadline=None)
    @given(
        st.lists(
            st.text(alphabet=',"ab \t\r\n\x00é\u2028', max_size=12),
            max_size=12,
        ),
        st.integers(min_value=1, max_value=3),
        st.booleans(),
        st.sampled_from(["", "\n"]),
        st.integers(min_value=1, max_value=4),
    )
    def test_blocks_read_what_records_read(
        self, chunks: list[str], width: int, reread: bool, newline: str, size: int
    ) -> None:
        """Blocks of quote-free lines, each line split at its commas (blank ones dropped),
        and the records between them, are the records read one by one: same lines, fields
        and failures, in the same order, whatever the block size."""
        data = "h\n" + "".join(chunks)

        def reader() -> CsvReader:
            read = CsvReader(io.StringIO(data, newline=newline), reread_failed=reread)
            read.header()
            return read

        def key(record: CsvRecord) -> tuple[object, ...]:
            return (record.line, record.fields, record.malformed, record.wrong_width)

        from_blocks: list[tuple[object, ...]] = []
        for block in reader().blocks(width, size=size):
            if isinstance(block, CsvRecord):
                from_blocks.append(key(block))
                continue
            for at, text in enumerate(block.texts):
                fields = text.split(",")
                if len(fields) == 1 and not fields[0].strip():
                    continue
                wrong = (
                    None
                    if len(fields) == width
                    else f"expected {width} fields, found {len(fields)}"
                )
                from_blocks.append((block.first + at, fields, None, wrong))
        assert from_blocks == [key(record) for record in reader().records(width)]
