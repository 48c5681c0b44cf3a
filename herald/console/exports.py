"""Exports of the delivery ledger and of SendGrid's events, as CSV or Parquet, streamed.

Rows come off a server-side cursor (``stream_results``; on SQLite the driver's cursor is
lazy anyway) ``chunk_rows`` at a time and are written before the next chunk is read: CSV
with the ``csv`` module, Parquet through ``pyarrow.parquet.ParquetWriter`` with one row
group per chunk and an explicit schema. Only a chunk ever sits in memory, so a million rows
export in the memory of ten thousand.

A file is written beside its target under a temporary name (readable by its owner only) and
renamed over the target once complete: a failed export leaves no half file, and a target
that existed stays as it was.

What is exported:

- **deliveries**: the ledger rows of one campaign, joined to their contact for the address;
  ``kind`` is the phase a message belongs to (``sunset`` for the sunset notices, whose
  ledger names are ``sunset-t30@2027-09-30``; ``thank_you``; ``deadline_extended``).
  The date range is on ``planned_at``, which never changes: exporting the same days again
  gives the same rows (each row's ``updated_at`` is exported for incremental readers).
- **events**: SendGrid's events of one campaign (linked to one of its ledger rows, or
  carrying its ``herald_key`` when no ledger row is theirs, as a leadership report's do),
  with the linked row's message and kind; the date range is on ``occurred_at``.

Timestamps are UTC: ISO 8601 with ``+00:00`` in CSV, ``timestamp[us, UTC]`` in Parquet. In
CSV an empty field is a null (and an empty string), booleans are ``true``/``false``; values
are written as stored (nothing is escaped for spreadsheets).
"""

from __future__ import annotations

import csv
import json
import os
import tempfile
from collections.abc import Callable, Generator, Iterable, Iterator, Sequence
from contextlib import closing, contextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from enum import StrEnum
from pathlib import Path
from typing import Any, Final, Literal, TextIO

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Select,
    and_,
    case,
    literal,
    null,
    or_,
    select,
)

from herald.config import DEADLINE_EXTENDED, PHASES, THANK_YOU, MessageKind
from herald.delivery.calendar import EXTENDED_PREFIX, THANK_YOU_MESSAGE, is_notice
from herald.models import CONTACT, DELIVERY, EMAIL_EVENT, DeliveryState, as_utc

CHUNK_ROWS: Final = 10_000  # rows per round trip and per Parquet row group

# The kinds of message a ledger row can be (a phase, or what Herald sends besides them).
EXPORT_KINDS: Final[tuple[MessageKind, ...]] = (*PHASES, THANK_YOU, DEADLINE_EXTENDED)
BROADCAST_PHASES: Final = tuple(phase for phase in PHASES if phase != "sunset")
# SendGrid's event types (its Event Webhook reference).
EVENT_TYPES: Final = (
    "processed",
    "dropped",
    "delivered",
    "deferred",
    "bounce",
    "open",
    "click",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "group_resubscribe",
)


class ExportFormat(StrEnum):
    """What an export writes."""

    CSV = "csv"
    PARQUET = "parquet"


ColumnType = Literal["int64", "string", "bool", "timestamp", "json"]
"""A column's type in the file: ``json`` is a string holding a JSON document."""


@dataclass(frozen=True)
class Column:
    """One column of an export: its name and type in the file, and its SQL."""

    name: str
    type: ColumnType
    sql: ColumnElement[Any]


# --------------------------------------------------------------------------- filters


class BadFilter(ValueError):
    """A filter value that names nothing (the message says what is allowed)."""


def parse_kind(value: str) -> MessageKind:
    """A ``--phase`` value: a phase, ``thank_you`` or ``deadline_extended``."""
    for kind in EXPORT_KINDS:
        if value == kind:
            return kind
    raise BadFilter(f"{value!r} is not a phase (one of {', '.join(EXPORT_KINDS)})")


def parse_state(value: str) -> DeliveryState:
    """A ``--state`` value: a delivery state."""
    try:
        return DeliveryState(value)
    except ValueError:
        allowed = ", ".join(state.value for state in DeliveryState)
        raise BadFilter(f"{value!r} is not a delivery state (one of {allowed})") from None


def parse_event_type(value: str) -> str:
    """An ``--event`` value: one of SendGrid's event types."""
    if value not in EVENT_TYPES:
        raise BadFilter(f"{value!r} is not a SendGrid event (one of {', '.join(EVENT_TYPES)})")
    return value


@dataclass(frozen=True)
class Filters:
    """Which rows an export takes: always one campaign; each other filter left empty takes
    everything, a filter with several values takes any of them, and filters combine.

    ``since`` and ``until`` are UTC calendar days, both included.
    """

    campaign: str
    kinds: tuple[MessageKind, ...] = ()
    messages: tuple[str, ...] = ()
    states: tuple[DeliveryState, ...] = ()  # deliveries only
    events: tuple[str, ...] = ()  # events only
    since: date | None = None
    until: date | None = None

    def __post_init__(self) -> None:
        if self.since and self.until and self.since > self.until:
            raise BadFilter(
                f"since {self.since.isoformat()} is after until {self.until.isoformat()}"
            )


def message_kind(message: ColumnElement[str]) -> ColumnElement[Any]:
    """SQL: the kind of a ledger message (its phase; NULL for a name Herald does not make)."""
    return case(
        (message.in_(BROADCAST_PHASES), message),
        (_of_kind(message, "sunset"), literal("sunset")),
        (_of_kind(message, THANK_YOU), literal(THANK_YOU)),
        (_of_kind(message, DEADLINE_EXTENDED), literal(DEADLINE_EXTENDED)),
        else_=null(),
    )


def _of_kind(message: ColumnElement[str], kind: MessageKind) -> ColumnElement[bool]:
    """SQL: the ledger message is of ``kind`` (``sunset``: the phase and its notices)."""
    if kind == "sunset":
        return or_(message == "sunset", is_notice(message))
    if kind == THANK_YOU:
        return message == THANK_YOU_MESSAGE
    if kind == DEADLINE_EXTENDED:
        return message.like(f"{EXTENDED_PREFIX}@%")
    return message == kind


def _day_range(moment: ColumnElement[Any], filters: Filters) -> list[ColumnElement[bool]]:
    """SQL: ``moment`` falls on the filter's days (UTC, both ends included)."""
    conditions: list[ColumnElement[bool]] = []
    if filters.since is not None:
        conditions.append(moment >= datetime.combine(filters.since, time(), UTC))
    if filters.until is not None:
        end = datetime.combine(filters.until + timedelta(days=1), time(), UTC)
        conditions.append(moment < end)
    return conditions


def _message_filter(message: ColumnElement[str], filters: Filters) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if filters.kinds:
        conditions.append(or_(*(_of_kind(message, kind) for kind in filters.kinds)))
    if filters.messages:
        conditions.append(message.in_(filters.messages))
    return conditions


# --------------------------------------------------------------------------- queries

_d, _c, _e = DELIVERY.c, CONTACT.c, EMAIL_EVENT.c

DELIVERY_COLUMNS: Final = (
    Column("id", "int64", _d.id),
    Column("campaign", "string", _d.campaign),
    Column("message", "string", _d.message),
    Column("kind", "string", message_kind(_d.message)),
    Column("segment", "string", _d.segment),
    Column("role", "string", _d.role),
    Column("locale", "string", _d.locale),
    Column("timezone", "string", _d.timezone),
    Column("contact_id", "int64", _d.contact_id),
    Column("email", "string", _c.email),
    Column("state", "string", _d.state),
    Column("critical", "bool", _d.critical),
    Column("batch_id", "string", _d.batch_id),
    Column("provider_message_id", "string", _d.provider_message_id),
    Column("attempts", "int64", _d.attempts),
    Column("error", "string", _d.error),
    Column("not_before", "timestamp", _d.not_before),
    Column("not_after", "timestamp", _d.not_after),
    Column("planned_at", "timestamp", _d.planned_at),
    Column("claimed_at", "timestamp", _d.claimed_at),
    Column("sent_at", "timestamp", _d.sent_at),
    Column("updated_at", "timestamp", _d.updated_at),
)

EVENT_COLUMNS: Final = (
    Column("id", "int64", _e.id),
    Column("sg_event_id", "string", _e.sg_event_id),
    Column("event", "string", _e.event),
    Column("email", "string", _e.email),
    Column("occurred_at", "timestamp", _e.occurred_at),
    Column("received_at", "timestamp", _e.received_at),
    Column("delivery_id", "int64", _e.delivery_id),
    Column("message", "string", _d.message),
    Column("kind", "string", message_kind(_d.message)),
    Column("sg_message_id", "string", _e.sg_message_id),
    Column("herald_key", "string", _e.herald_key),
    Column("raw", "json", _e.raw),
)


def deliveries_query(filters: Filters) -> Select[Any]:
    """The ledger rows ``filters`` take, in id order."""
    conditions = [
        _d.campaign == filters.campaign,
        *_message_filter(_d.message, filters),
        *_day_range(_d.planned_at, filters),
    ]
    if filters.states:
        conditions.append(_d.state.in_([state.value for state in filters.states]))
    return (
        select(*(column.sql.label(column.name) for column in DELIVERY_COLUMNS))
        .select_from(DELIVERY.join(CONTACT, CONTACT.c.id == _d.contact_id))
        .where(*conditions)
        .order_by(_d.id)
    )


def events_query(filters: Filters) -> Select[Any]:
    """The events ``filters`` take, in id order."""
    of_campaign = or_(
        _d.campaign == filters.campaign,
        and_(
            _e.delivery_id.is_(None),
            _e.herald_key.startswith(f"{filters.campaign}/", autoescape=True),
        ),
    )
    conditions = [
        of_campaign,
        *_message_filter(_d.message, filters),
        *_day_range(_e.occurred_at, filters),
    ]
    if filters.events:
        conditions.append(_e.event.in_(filters.events))
    return (
        select(*(column.sql.label(column.name) for column in EVENT_COLUMNS))
        .select_from(EMAIL_EVENT.outerjoin(DELIVERY, _d.id == _e.delivery_id))
        .where(*conditions)
        .order_by(_e.id)
    )


Chunk = Sequence[Sequence[Any]]


def stream(
    conn: Connection, query: Select[Any], *, chunk_rows: int
) -> Generator[Chunk, None, None]:
    """The query's rows, ``chunk_rows`` at a time, off a server-side cursor."""
    result = conn.execution_options(stream_results=True, yield_per=chunk_rows).execute(query)
    try:
        yield from result.partitions()
    finally:
        result.close()


# --------------------------------------------------------------------------- writers


def _json_text(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, sort_keys=True)


def _csv_value(kind: ColumnType) -> Callable[[Any], str] | None:
    """How a non-null value of a column of ``kind`` is written in CSV (None: as it is)."""
    if kind == "timestamp":
        return lambda moment: as_utc(moment).isoformat(timespec="microseconds")
    if kind == "bool":
        return lambda flag: "true" if flag else "false"
    if kind == "json":
        return _json_text
    return None


def write_csv(chunks: Iterable[Chunk], *, columns: Sequence[Column], out: TextIO) -> int:
    """Write a header and the rows to ``out``; the rows written."""
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow([column.name for column in columns])
    convert = [
        (index, how)
        for index, column in enumerate(columns)
        if (how := _csv_value(column.type)) is not None
    ]
    rows = 0
    for chunk in chunks:
        for row in chunk:
            values = list(row)
            for index, how in convert:
                value = values[index]
                if value is not None:
                    values[index] = how(value)
            writer.writerow(values)
        rows += len(chunk)
    return rows


def arrow_schema(columns: Sequence[Column]) -> Any:
    """The Parquet schema of ``columns`` (``pyarrow.Schema``)."""
    import pyarrow as pa

    types = {
        "int64": pa.int64(),
        "string": pa.string(),
        "json": pa.string(),
        "bool": pa.bool_(),
        "timestamp": pa.timestamp("us", tz="UTC"),
    }
    return pa.schema([pa.field(column.name, types[column.type]) for column in columns])


_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_NAIVE_EPOCH = datetime(1970, 1, 1)
_MICROSECOND = timedelta(microseconds=1)
_MAX_OFFSET = 2**31 - 1  # a string column's bytes in one chunk (Arrow's int32 offsets)


def _micros(moment: datetime) -> int:
    """Microseconds since the epoch, UTC (a naive moment, as SQLite returns them, is UTC)."""
    epoch = _NAIVE_EPOCH if moment.tzinfo is None else _EPOCH
    return (moment - epoch) // _MICROSECOND


def arrow_array(values: Sequence[Any], kind: ColumnType) -> Any:
    """One column of a chunk as an Arrow array of ``kind`` (``pyarrow.Array``), built from
    its buffers.

    ``pyarrow.array`` would do the same from the Python values, but its first call imports
    pandas (to ask whether the values are a pandas object), which costs an export some
    60 MB of memory for nothing.
    """
    import numpy as np
    import pyarrow as pa

    count = len(values)
    present = [value is not None for value in values]
    nulls = count - sum(present)
    validity = (
        None
        if nulls == 0
        else pa.py_buffer(np.packbits(np.array(present, dtype=np.bool_), bitorder="little"))
    )
    if kind in ("string", "json"):
        text = (
            values if kind == "string" else [None if v is None else _json_text(v) for v in values]
        )
        encoded = [b"" if value is None else value.encode("utf-8") for value in text]
        sizes = np.fromiter((len(item) for item in encoded), dtype=np.int64, count=count)
        ends = np.cumsum(sizes)
        if count and ends[-1] > _MAX_OFFSET:
            raise ValueError("a text column of one chunk is over 2 GiB: use fewer rows per chunk")
        offsets = np.zeros(count + 1, dtype=np.int32)
        offsets[1:] = ends
        buffers = [validity, pa.py_buffer(offsets), pa.py_buffer(b"".join(encoded))]
        return pa.Array.from_buffers(pa.string(), count, buffers, null_count=nulls)
    if kind == "bool":
        bits = np.packbits(np.array([bool(v) for v in values], dtype=np.bool_), bitorder="little")
        return pa.Array.from_buffers(
            pa.bool_(), count, [validity, pa.py_buffer(bits)], null_count=nulls
        )
    if kind == "int64":
        data = np.fromiter((0 if v is None else v for v in values), dtype=np.int64, count=count)
        arrow_type = pa.int64()
    else:
        data = np.fromiter(
            (0 if v is None else _micros(v) for v in values), dtype=np.int64, count=count
        )
        arrow_type = pa.timestamp("us", tz="UTC")
    return pa.Array.from_buffers(
        arrow_type, count, [validity, pa.py_buffer(data)], null_count=nulls
    )


def write_parquet(
    chunks: Iterable[Chunk], *, columns: Sequence[Column], path: Path
) -> tuple[int, int]:
    """Write the rows to ``path``, one row group per chunk; (rows, row groups) written."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    schema = arrow_schema(columns)
    rows = groups = 0
    with pq.ParquetWriter(str(path), schema) as writer:
        for chunk in chunks:
            transposed = zip(*chunk, strict=True)
            arrays = [
                arrow_array(values, column.type)
                for values, column in zip(transposed, columns, strict=True)
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=schema))
            rows += len(chunk)
            groups += 1
    return rows, groups


@contextmanager
def replaced_at_the_end(target: Path) -> Iterator[Path]:
    """A temporary file beside ``target`` (mode 0600), renamed over it if the block
    succeeds and removed if it does not."""
    handle, name = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.", suffix=".part")
    os.close(handle)
    part = Path(name)
    try:
        yield part
        os.replace(part, target)
    except BaseException:
        part.unlink(missing_ok=True)
        raise


# --------------------------------------------------------------------------- exports


@dataclass(frozen=True)
class Exported:
    """What an export wrote: rows, where (None: the stream it was given), and Parquet row
    groups (0 for CSV)."""

    rows: int
    path: Path | None
    format: ExportFormat
    row_groups: int = 0


def export_deliveries(
    *,
    engine: Engine,
    filters: Filters,
    format: ExportFormat,
    output: Path | TextIO,
    chunk_rows: int = CHUNK_ROWS,
) -> Exported:
    """Export the ledger rows ``filters`` take to ``output`` (a file, or a text stream for
    CSV)."""
    return _export(
        engine=engine,
        query=deliveries_query(filters),
        columns=DELIVERY_COLUMNS,
        format=format,
        output=output,
        chunk_rows=chunk_rows,
    )


def export_events(
    *,
    engine: Engine,
    filters: Filters,
    format: ExportFormat,
    output: Path | TextIO,
    chunk_rows: int = CHUNK_ROWS,
) -> Exported:
    """Export the events ``filters`` take to ``output`` (a file, or a text stream for CSV)."""
    return _export(
        engine=engine,
        query=events_query(filters),
        columns=EVENT_COLUMNS,
        format=format,
        output=output,
        chunk_rows=chunk_rows,
    )


def _export(
    *,
    engine: Engine,
    query: Select[Any],
    columns: Sequence[Column],
    format: ExportFormat,
    output: Path | TextIO,
    chunk_rows: int,
) -> Exported:
    if chunk_rows < 1:
        raise ValueError(f"chunk_rows must be at least 1, not {chunk_rows}")
    # A writer that fails mid-way (a full disk, a closed pipe) still closes the server-side
    # cursor at once, not whenever the suspended generator is collected.
    with engine.connect() as conn, closing(stream(conn, query, chunk_rows=chunk_rows)) as chunks:
        if not isinstance(output, Path):
            if format is not ExportFormat.CSV:
                raise ValueError("only CSV can be written to a stream")
            rows = write_csv(chunks, columns=columns, out=output)
            return Exported(rows, None, format)
        with replaced_at_the_end(output) as part:
            if format is ExportFormat.CSV:
                with part.open("w", encoding="utf-8", newline="") as out:
                    rows = write_csv(chunks, columns=columns, out=out)
                groups = 0
            else:
                rows, groups = write_parquet(chunks, columns=columns, path=part)
        return Exported(rows, output, format, groups)
