"""A telemetry batch file read as text records: CSV with a header, or JSON lines.

Every value is kept as text, each record with its 1-based line number, its raw text as in
the file, and what made it unreadable (if anything): the validation frame types the values
and the data contract decides what a bad record costs. A file that cannot be read as rows at
all (its type, its header) is :class:`UnreadableFile`, and its batch is rejected whole.
"""

from __future__ import annotations

import csv
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from herald.tabular import CsvReader, header_names, json_lines, open_text, raw_text, undecodable

SUFFIXES = (".csv", ".jsonl", ".ndjson")


@dataclass
class Record:
    """One row of the file, as text."""

    line: int
    raw: str
    values: dict[str, str]
    error: str | None = None


@dataclass
class FileContent:
    """The columns a file has and its rows."""

    columns: list[str]
    records: list[Record]


class UnreadableFile(Exception):
    """The file cannot be read as rows at all (type, header): its batch is rejected whole."""

    def __init__(self, detail: str, column: str | None = None) -> None:
        super().__init__(detail)
        self.detail = detail
        self.column = column


def read_file(path: Path) -> FileContent:
    """Read a CSV (.csv) or JSON lines (.jsonl, .ndjson) file; every value as text.

    The file is read as a stream; its records are kept, since a batch is validated whole.
    """
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'!r} (use .csv or .jsonl)")
    with open_text(path) as handle:
        if suffix == ".csv":
            return _read_csv(handle)
        return _read_jsonl(handle)


def _read_csv(handle: Iterable[str]) -> FileContent:
    reader = CsvReader(handle)
    try:
        header = reader.header()
    except csv.Error as error:
        raise UnreadableFile(f"line 1: unreadable header: {error}") from None
    if header is None:
        return FileContent([], [])
    columns = header_names(header)
    seen: set[str] = set()
    for name in columns:
        if undecodable(name):
            raise UnreadableFile("the header is not valid UTF-8")
        if name in seen:
            raise UnreadableFile(f"column {name!r} appears twice in the header", name)
        seen.add(name)
    records: list[Record] = []
    for record in reader.records(len(columns)):
        raw = raw_text(record.lines)
        if record.malformed is not None:
            records.append(Record(record.line, raw, {}, f"bad CSV: {record.malformed}"))
        elif record.wrong_width is not None or record.fields is None:
            records.append(Record(record.line, raw, {}, record.wrong_width))
        else:
            values = dict(zip(columns, record.fields, strict=True))
            records.append(Record(record.line, raw, values, _encoding_error(values)))
    return FileContent(columns, records)


def _read_jsonl(handle: Iterable[str]) -> FileContent:
    columns: dict[str, None] = {}
    records: list[Record] = []
    for item in json_lines(handle):
        raw = raw_text([item.text])
        if item.error is not None:
            records.append(Record(item.line, raw, {}, f"not valid JSON: {item.error}"))
            continue
        if not isinstance(item.value, dict):
            records.append(Record(item.line, raw, {}, "not a JSON object"))
            continue
        values: dict[str, str] = {}
        error_text: str | None = None
        for key, value in item.value.items():
            name = str(key).strip().lower()
            columns.setdefault(name, None)
            if isinstance(value, dict | list):
                error_text = f"value of {name!r} is not a single value"
            elif value is None:
                values[name] = ""
            elif isinstance(value, bool):
                values[name] = "true" if value else "false"
            else:
                values[name] = str(value)
        records.append(Record(item.line, raw, values, error_text or _encoding_error(values)))
    return FileContent(list(columns), records)


def _encoding_error(values: dict[str, str]) -> str | None:
    for name, value in values.items():
        if undecodable(value):
            return f"{name}: bytes that are not UTF-8"
    return None
