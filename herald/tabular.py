"""Reading CSV and JSON lines files as a stream of records numbered by physical line.

The customer import and the telemetry ingest read the same kind of file the same way: bytes
decoded as UTF-8 with or without a BOM, and bytes that are not UTF-8 kept as lone surrogates
(``surrogateescape``) so the record they sit on can be rejected with its line number instead
of the whole file failing. Each record carries the physical line it starts on (a quoted CSV
field may span lines; the header is line 1) and the lines it was read from. Records are
yielded one at a time, so a file of a million rows never sits in memory.

What a bad record means (a rejected row, a quarantined one) and how it is worded is the
caller's: this module says only what was read and what went wrong reading it.
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

ByteCounter = Callable[[int], None]
"""Called with the number of bytes just read (for a progress bar)."""

_UNDECODABLE = re.compile("[\udc80-\udcff]")


def undecodable(text: str) -> bool:
    """Whether ``text`` holds bytes that were not UTF-8 (kept as lone surrogates)."""
    return _UNDECODABLE.search(text) is not None


class _CountingReader(io.RawIOBase):
    """A raw reader that reports how many bytes have been read."""

    def __init__(self, raw: BinaryIO, on_bytes: ByteCounter | None) -> None:
        self._raw = raw
        self._on_bytes = on_bytes

    def readable(self) -> bool:
        return True

    def close(self) -> None:
        self._raw.close()
        super().close()

    def readinto(self, buffer: Any) -> int:
        count = self._raw.readinto(buffer)  # type: ignore[attr-defined]
        if count and self._on_bytes is not None:
            self._on_bytes(count)
        return int(count or 0)


def open_text(path: Path, *, on_bytes: ByteCounter | None = None) -> io.TextIOWrapper:
    """``path`` as text: UTF-8 with its BOM dropped, undecodable bytes kept as lone
    surrogates, line endings as they are (``csv`` needs them; raw text keeps them)."""
    raw = _CountingReader(path.open("rb", buffering=0), on_bytes)
    return io.TextIOWrapper(
        io.BufferedReader(raw, buffer_size=1 << 20),
        encoding="utf-8-sig",
        errors="surrogateescape",
        newline="",
    )


def utf16_or_binary(path: Path) -> bool:
    """Whether the file starts like UTF-16 (its BOM) or binary (a NUL byte): read as UTF-8,
    every row of it would be garbage, so it is better refused whole."""
    with path.open("rb") as probe:
        start = probe.read(4)
    return start.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in start


def raw_text(lines: Sequence[str]) -> str:
    """A record's text exactly as in the file, without its final line ending; bytes that
    are not UTF-8 written as ``\\x..`` escapes (a lone surrogate cannot be stored)."""
    text = "".join(lines)
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith(("\n", "\r")):
        text = text[:-1]
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


# --------------------------------------------------------------------------- CSV


@dataclass(frozen=True)
class CsvRecord:
    """One record of a CSV file after its header.

    ``fields`` is None when the record could not be read as fields: ``malformed`` then says
    why in the ``csv`` module's words. ``wrong_width`` says the record has another number of
    fields than the header. ``reread`` is True when the record failed over several lines and
    the lines after its first were given back to be read again as records of their own (one
    stray quote then costs one line, not the rest of the file); ``lines`` then holds only
    the first.
    """

    line: int
    lines: tuple[str, ...]
    fields: list[str] | None
    malformed: str | None = None
    wrong_width: str | None = None
    reread: bool = False

    @property
    def failed(self) -> bool:
        """Whether the record is not a row of the file's width."""
        return self.malformed is not None or self.wrong_width is not None


class _Lines:
    """The physical lines of a file for ``csv.reader``, numbered; the lines of a record that
    failed can be given back, all but its first, to be read again."""

    def __init__(self, handle: Iterable[str]) -> None:
        self._handle = iter(handle)
        self._back: deque[str] = deque()
        self._taken: list[str] = []
        self.next_line = 1  # the number of the line the next record starts on

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._back.popleft() if self._back else next(self._handle)
        self._taken.append(line)
        return line

    def record_done(self) -> tuple[int, tuple[str, ...]]:
        """Close the record just read: the line it started on, and its lines."""
        first, taken = self.next_line, tuple(self._taken)
        self.next_line += len(taken)
        self._taken = []
        return first, taken

    def give_back_all_but_first(self) -> bool:
        """The record just read failed: read its lines after the first again. Whether any."""
        rest = self._taken[1:]
        self._back.extendleft(reversed(rest))
        self._taken = self._taken[:1]
        return bool(rest)


class CsvReader:
    """A CSV file read record by record: first its header, then its rows.

    ``strict`` (the default) makes a quote out of place an error instead of text. With
    ``reread_failed``, the lines after the first of a record that failed are read again as
    records of their own.
    """

    def __init__(
        self, handle: Iterable[str], *, strict: bool = True, reread_failed: bool = False
    ) -> None:
        self._lines = _Lines(handle)
        self._reader = csv.reader(self._lines, strict=strict)
        self._reread_failed = reread_failed

    def header(self) -> list[str] | None:
        """The first record as it is (None for an empty file); ``csv.Error`` if unreadable."""
        try:
            return next(self._reader)
        except StopIteration:
            return None
        finally:
            self._lines.record_done()

    def records(self, width: int) -> Iterator[CsvRecord]:
        """Every record after the header but blank lines, checked to have ``width`` fields."""
        while True:
            malformed = wrong_width = None
            try:
                fields: list[str] | None = next(self._reader)
            except StopIteration:
                return
            except csv.Error as problem:
                fields, malformed = None, str(problem)
            if fields is not None:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    self._lines.record_done()
                    continue  # a blank line is not a row
                if len(fields) != width:
                    wrong_width = f"expected {width} fields, found {len(fields)}"
            reread = False
            if (malformed or wrong_width) and self._reread_failed:
                reread = self._lines.give_back_all_but_first()
            line, lines = self._lines.record_done()
            yield CsvRecord(
                line=line,
                lines=lines,
                fields=None if reread else fields,
                malformed=malformed,
                wrong_width=wrong_width,
                reread=reread,
            )


def header_names(header: Sequence[str]) -> list[str]:
    """Column names as Herald compares them: trimmed, lower case."""
    return [name.strip().lower() for name in header]


# --------------------------------------------------------------------------- JSON lines


@dataclass(frozen=True)
class JsonLine:
    """One non-blank line of a JSON lines file: its value, or why it is not JSON."""

    line: int
    text: str
    value: Any = None
    error: str | None = None


def json_lines(handle: Iterable[str]) -> Iterator[JsonLine]:
    """Every non-blank line of a JSON lines file, parsed, with its 1-based line number."""
    for number, text in enumerate(handle, start=1):
        if not text.strip():
            continue
        try:
            value = json.loads(text)
        except ValueError as error:
            yield JsonLine(number, text, error=str(error))
            continue
        yield JsonLine(number, text, value)
