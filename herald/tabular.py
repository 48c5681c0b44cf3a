"""Reading CSV and JSON lines files as a stream of records numbered by physical line.

The customer import and the telemetry ingest read the same kind of file the same way: bytes
decoded as UTF-8 with or without a BOM, and bytes that are not UTF-8 kept as lone surrogates
(``surrogateescape``) so the record they sit on can be rejected with its line number instead
of the whole file failing. Each record carries the physical line it starts on (a quoted CSV
field may span lines; the header is line 1) and the lines it was read from. Records are
yielded one at a time (or, for a bulk reader, runs of quote-free lines a block at a time),
so a file of a million rows never sits in memory.

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
from itertools import islice
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

    def peek(self) -> str | None:
        """The line the next record starts on, not taken (None at the end of the file)."""
        if not self._back:
            line = next(self._handle, None)
            if line is None:
                return None
            self._back.append(line)
        return self._back[0]

    def take(self, count: int) -> list[str]:
        """Up to ``count`` lines, taken whole (outside any record: the caller numbers them)."""
        if self._back:
            taken = list(self._back)[:count]
            for _ in taken:
                self._back.popleft()
            return taken
        return list(islice(self._handle, count))

    def give_back(self, lines: list[str]) -> None:
        """Lines taken and not used: they are read again, first of all."""
        self._back.extendleft(reversed(lines))

    def has_back(self) -> bool:
        """Whether lines given back are still to be read."""
        return bool(self._back)

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
    records of their own. A line with no quote is split at its commas without the csv
    module, which reads it the same (``split_plain=False`` reads every line through the csv
    module: the reference tests/test_tabular.py holds the split to).
    """

    def __init__(
        self,
        handle: Iterable[str],
        *,
        strict: bool = True,
        reread_failed: bool = False,
        split_plain: bool = True,
    ) -> None:
        self._lines = _Lines(handle)
        self._reader = csv.reader(self._lines, strict=strict)
        self._reread_failed = reread_failed
        self._split_plain = split_plain

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
        while (record := self._record(width)) is not None:
            yield record

    def blocks(self, width: int, *, size: int = 4096) -> Iterator[PlainLines | CsvRecord]:
        """What :meth:`records` reads, with runs of quote-free lines given whole.

        Up to ``size`` lines are taken at a time. Without a quote among them, each is one
        record (or a blank line) and they come as one :class:`PlainLines`, for the caller to
        split and check in bulk; from the first line with a quote (or longer than the csv
        module's field limit) on, the lines go record by record until those taken are read.
        """
        source = self._lines
        limit = csv.field_size_limit()
        while True:
            lines = source.take(size)
            if not lines:
                return
            texts = self._plain_texts(lines, limit)
            if texts is not None:
                plain = len(lines)
            else:
                texts = [without_ending(line) for line in lines] if self._split_plain else []
                plain = next(
                    (at for at, text in enumerate(texts) if not _splittable(text, limit)),
                    len(texts),
                )
            if plain:
                yield PlainLines(first=source.next_line, texts=texts[:plain])
                source.next_line += plain
            if plain < len(lines):
                source.give_back(lines[plain:])
                while source.has_back():
                    if (record := self._record(width)) is None:
                        return
                    yield record

    def _plain_texts(self, lines: list[str], limit: int) -> list[str] | None:
        """The texts of lines that are all splittable and all end with the same line ending
        (LF or CRLF) and hold no other line break, None otherwise (then line by line)."""
        joined = "".join(lines)
        count = len(lines)
        if (
            not self._split_plain
            or '"' in joined
            or joined.count("\n") != count
            or (len(joined) > limit and max(map(len, lines)) > limit)
        ):
            return None
        returns = joined.count("\r")
        if not returns:
            return [line[:-1] for line in lines]
        if returns == count == joined.count("\r\n"):
            return [line[:-2] for line in lines]
        return None

    def _record(self, width: int) -> CsvRecord | None:
        """The next record but blank lines (None at the end of the file)."""
        source = self._lines
        limit = csv.field_size_limit()
        while True:
            malformed = wrong_width = None
            text = source.peek()
            if text is None:
                return None
            fields: list[str] | None
            text = without_ending(text)
            if self._split_plain and _splittable(text, limit):
                # A line without a quote (nor a line break inside it) is one record, its
                # fields the text between commas: what the csv module reads, without its
                # work per character.
                next(source)
                fields = text.split(",")
            else:
                try:
                    fields = next(self._reader)
                except StopIteration:
                    return None
                except csv.Error as problem:
                    fields, malformed = None, str(problem)
            if fields is not None:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    source.record_done()
                    continue  # a blank line is not a row
                if len(fields) != width:
                    wrong_width = f"expected {width} fields, found {len(fields)}"
            reread = False
            if (malformed or wrong_width) and self._reread_failed:
                reread = source.give_back_all_but_first()
            line, lines = source.record_done()
            return CsvRecord(
                line=line,
                lines=lines,
                fields=None if reread else fields,
                malformed=malformed,
                wrong_width=wrong_width,
                reread=reread,
            )


def without_ending(line: str) -> str:
    """A line (or a record's text) without its final line ending (CRLF, LF or CR)."""
    if line.endswith("\n"):
        return line[:-2] if line.endswith("\r\n") else line[:-1]
    return line[:-1] if line.endswith("\r") else line


def _splittable(text: str, limit: int) -> bool:
    """Whether a line's text (without its line ending) is one record whose fields are the
    text between its commas: no quote, no line break inside, no field over the limit."""
    return '"' not in text and "\r" not in text and "\n" not in text and len(text) <= limit


@dataclass(frozen=True)
class PlainLines:
    """Consecutive lines without a quote, each one record or a blank line: ``texts`` are
    the lines without their line endings, the first on line ``first`` (1-based). Each
    record's fields are its text split at its commas (what the csv module reads); a text
    that is blank (no comma, only white space) is no record."""

    first: int
    texts: list[str]


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
