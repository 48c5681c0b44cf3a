"""The validation frame of a batch: its rows as the data contract sees them, typed.

Values are text, stripped, empty as null; each typed column of the source's format gets a
helper column the suite checks (``<column>__ts`` and ``__date``, naive UTC; ``__int``,
``__num``), plus ``<key>__duplicate_of`` (the line a row's key was first used on) and
``row__error`` (why the record could not be read). The typed values come back too: they are
what gets loaded.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime
from typing import TYPE_CHECKING, Any

from herald.addresses import BadAddress, canonical_email
from herald.telemetry.batch_file import FileContent, Record
from herald.telemetry.contracts import LINE
from herald.telemetry.sources import FLAGS, Kind, SourceFormat

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]

ROW_ERROR = "row__error"
"""The frame column saying why a record could not be read (null when it could)."""

_INTEGER = re.compile(r"^[+-]?\d{1,15}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")


def text_values(records: Sequence[Record], name: str, *, lower: bool = False) -> list[str | None]:
    """Column ``name`` as the suite sees it: trimmed, empty as null, lower-cased if asked."""
    texts: list[str | None] = []
    for record in records:
        value = record.values.get(name, "").strip()
        texts.append((value.lower() if lower else value) or None)
    return texts


def frame_start(records: Sequence[Record]) -> dict[str, Any]:
    """The columns every validation frame starts with: the line and the read error."""
    import pandas as pd

    return {
        LINE: pd.Series([r.line for r in records], dtype="int64"),
        ROW_ERROR: pd.Series([r.error for r in records], dtype=object),
    }


def _parse(kind: Kind, text: str | None) -> Any:
    """The typed value of ``text`` (None when empty or not parseable)."""
    if text is None:
        return None
    if kind == "int":
        return int(text) if _INTEGER.match(text) else None
    if kind == "number":
        return float(text) if _NUMBER.match(text) else None
    if kind == "date":
        if not _DAY.match(text):
            return None
        try:
            return date.fromisoformat(text)
        except ValueError:
            return None
    if kind == "timestamp":
        try:
            moment = datetime.fromisoformat(text)
        except ValueError:
            return None
        return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    if kind == "flag":
        return FLAGS.get(text.lower())
    if kind == "email":  # the stored form, so it finds the contact (A-label domains)
        try:
            return canonical_email(text)
        except BadAddress:
            return text.lower()
    return text


@dataclass
class Typed:
    """A file's rows as the validation frame sees them, and their typed values for loading."""

    frame: pd.DataFrame
    values: dict[int, dict[str, Any]]  # line -> column -> typed value


def build_frame(source: SourceFormat, content: FileContent) -> Typed:
    """The validation frame: text columns (stripped, empty as null) plus typed helpers."""
    import pandas as pd

    present = set(content.columns)
    records = content.records
    frame_data = frame_start(records)
    typed: dict[int, dict[str, Any]] = {r.line: {} for r in records}
    for column in source.columns:
        if column.name not in present:
            continue  # the column-set check reports it
        texts = text_values(records, column.name, lower=column.kind == "flag")
        frame_data[column.name] = pd.Series(texts, dtype=object)
        parsed = [_parse(column.kind, text) for text in texts]
        for record, value in zip(records, parsed, strict=True):
            typed[record.line][column.name] = value
        helper = column.helper or ""
        if column.kind in ("int", "number"):
            frame_data[helper] = pd.Series(parsed, dtype="float64")
        elif column.kind == "date":
            moments = [datetime(d.year, d.month, d.day) if d else None for d in parsed]
            frame_data[helper] = pd.Series(moments, dtype="datetime64[us]")
        elif column.kind == "timestamp":
            # Naive UTC: GX's pandas metrics drop time zones with a deprecation warning.
            moments = [m.replace(tzinfo=None) if m else None for m in parsed]
            frame_data[helper] = pd.Series(moments, dtype="datetime64[us]")
    for name in content.columns:
        if name not in frame_data and name not in source.names:
            # Not part of the format: kept as text so the column-set check can name it.
            frame_data[name] = pd.Series(text_values(records, name), dtype=object)
    if all(name in frame_data for name in source.key):
        first: dict[tuple[Any, ...], int] = {}
        duplicate_of: list[float | None] = []
        for record in records:
            key = tuple(typed[record.line].get(name) for name in source.key)
            if record.error is not None or any(part is None for part in key):
                duplicate_of.append(None)
                continue
            earlier = first.setdefault(key, record.line)
            duplicate_of.append(float(earlier) if earlier != record.line else None)
        frame_data[source.duplicate_helper] = pd.Series(duplicate_of, dtype="float64")
    return Typed(frame=pd.DataFrame(frame_data), values=typed)
