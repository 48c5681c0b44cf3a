"""Batch telemetry files: read, validate against the source's data contract, load.

One file is one batch. Its rows are read as text (CSV with a header, UTF-8 with or without
BOM, or JSON lines with the same keys), each with its 1-based line number and its raw text,
and typed into helper columns (``<column>__ts`` and ``__date``, naive UTC; ``__int``, ``__num``,
``<key>__duplicate_of``, ``row__error``) that the suite in ``config/expectations/<source>.json``
checks. Then:

- a batch-level failure (a missing column, a row count far off the recent batches, or more
  bad rows than ``contracts.max_bad_row_share``) rejects the file: nothing is loaded or
  quarantined, the raw file is kept under ``<var_dir>/telemetry/rejected/<source>/`` and
  :class:`BatchRejected` names the source, the check and the column;
- otherwise rows failing a row-level expectation go to ``quarantine`` with their line, raw
  text and failed checks, and the rest is upserted (one ``INSERT ... ON CONFLICT DO UPDATE``
  per chunk, touching only rows whose values changed: loading a file twice changes nothing).

Either way the batch gets one ``telemetry_batch`` row. Adoption at or above
``adoption.migrated_at_pct`` marks the account migrated (on its earliest such day); adoption
between 0 and that marks a not-started account in progress.
"""

from __future__ import annotations

import csv
import io
import json
import math
import re
import shutil
import statistics
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, NoReturn

from sqlalchemy import (
    Connection,
    Engine,
    Table,
    and_,
    case,
    exists,
    func,
    insert,
    or_,
    select,
    update,
)

from herald.addresses import BadAddress, canonical_email
from herald.config import SOURCES, HeraldConfig
from herald.db import dialect_insert
from herald.models import (
    ACCOUNT,
    CONTACT,
    QUARANTINE,
    TELEMETRY_BATCH,
    AdoptionEvent,
    MigrationSource,
    MigrationState,
    PerformanceReport,
    SatisfactionResponse,
    SupportTicket,
    table,
    utcnow,
)
from herald.settings import get_settings
from herald.telemetry.contracts import (
    LINE,
    RowFailure,
    base_column,
    check_suite,
    load_suite,
    run_suite,
)

if TYPE_CHECKING:
    import pandas as pd  # type: ignore[import-untyped]


ROW_ERROR = "row__error"
FILE_FORMAT_CHECK = "file_format"
BAD_ROW_SHARE_CHECK = "max_bad_row_share"
SUFFIXES = (".csv", ".jsonl", ".ndjson")
CHUNK_ROWS = 1_000
FIRST_QUARANTINED = 10

Kind = Literal["text", "email", "flag", "int", "number", "date", "timestamp"]
HELPER_SUFFIX: dict[str, str] = {"int": "int", "number": "num", "date": "date", "timestamp": "ts"}
FLAGS = {"yes": True, "true": True, "no": False, "false": False}

_INTEGER = re.compile(r"^[+-]?\d{1,15}$")
_NUMBER = re.compile(r"^[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d{1,3})?$")
_DAY = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_SURROGATE = re.compile("[\udc80-\udcff]")


# --------------------------------------------------------------------------- formats


@dataclass(frozen=True)
class Column:
    """A column of a source's file format."""

    name: str
    kind: Kind = "text"
    required: bool = True

    @property
    def helper(self) -> str | None:
        """The typed helper column the suite checks, if the kind has one."""
        suffix = HELPER_SUFFIX.get(self.kind)
        return f"{self.name}__{suffix}" if suffix else None


@dataclass(frozen=True)
class SourceFormat:
    """A batch source: its columns, the key unique within a file, and where rows go."""

    source: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    model: Any

    @property
    def names(self) -> list[str]:
        """Column names, in file order."""
        return [column.name for column in self.columns]

    @property
    def duplicate_helper(self) -> str:
        """The helper column holding the line a row's key was first used on."""
        return f"{self.key[-1]}__duplicate_of"


FORMATS: dict[str, SourceFormat] = {
    "adoption": SourceFormat(
        "adoption",
        (
            Column("account_external_id"),
            Column("observed_on", "date"),
            Column("adoption_pct", "number"),
        ),
        key=("account_external_id", "observed_on"),
        model=AdoptionEvent,
    ),
    "support": SourceFormat(
        "support",
        (
            Column("ticket_id"),
            Column("account_external_id"),
            Column("opened_at", "timestamp"),
            Column("closed_at", "timestamp", required=False),
            Column("category"),
            Column("satisfaction", "int", required=False),
        ),
        key=("ticket_id",),
        model=SupportTicket,
    ),
    "survey": SourceFormat(
        "survey",
        (
            Column("response_id"),
            Column("account_external_id"),
            Column("contact_email", "email", required=False),
            Column("responded_at", "timestamp"),
            Column("csat", "int"),
            Column("performance_improved", "flag", required=False),
            Column("comment", required=False),
        ),
        key=("response_id",),
        model=SatisfactionResponse,
    ),
    "performance": SourceFormat(
        "performance",
        (
            Column("report_id"),
            Column("account_external_id"),
            Column("reported_at", "timestamp"),
            Column("legacy_import_ms", "number"),
            Column("new_import_ms", "number"),
            Column("legacy_memory_mb", "number"),
            Column("new_memory_mb", "number"),
        ),
        key=("report_id",),
        model=PerformanceReport,
    ),
}
assert set(FORMATS) == set(SOURCES)


# --------------------------------------------------------------------------- results


@dataclass(frozen=True)
class QuarantinedRow:
    """A row that failed its contract: its line, first failed check, every failure, raw text."""

    line: int
    check: str
    detail: str
    raw: str


@dataclass
class IngestResult:
    """What became of one file."""

    batch_id: str
    source: str
    file: str
    status: Literal["loaded", "rejected"]
    rows: int = 0
    loaded: int = 0
    changed: int = 0
    quarantined: int = 0
    failed_check: str | None = None
    failed_column: str | None = None
    detail: str | None = None
    data_docs: Path | None = None
    kept_file: Path | None = None
    accounts_migrated: int = 0
    accounts_in_progress: int = 0
    first_quarantined: list[QuarantinedRow] = field(default_factory=list)

    @property
    def rejected(self) -> bool:
        """Whether the whole batch was rejected."""
        return self.status == "rejected"

    @property
    def message(self) -> str:
        """One line: what happened (the rejection reason, or the counts)."""
        if self.rejected:
            return f"{self.source} batch rejected: {self.failed_check}: {self.detail}"
        return (
            f"{self.source} batch loaded: {self.loaded} of {self.rows} rows "
            f"({self.changed} new or changed), {self.quarantined} quarantined"
        )


class BatchRejected(Exception):
    """A batch failed its data contract as a whole; nothing of it was loaded."""

    def __init__(self, result: IngestResult) -> None:
        self.result = result
        super().__init__(result.message)


class BatchesRejected(Exception):
    """Some files of a run were rejected (each is named with its check and column)."""

    def __init__(self, results: Sequence[IngestResult], total: int) -> None:
        self.results = list(results)
        lines = "\n".join(f"  {result.file}: {result.message}" for result in self.results)
        super().__init__(f"{len(self.results)} of {total} telemetry batch(es) rejected:\n{lines}")


# --------------------------------------------------------------------------- reading


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
    """Read a CSV (.csv) or JSON lines (.jsonl, .ndjson) file; every value as text."""
    suffix = path.suffix.lower()
    if suffix not in SUFFIXES:
        raise UnreadableFile(f"unsupported file type {suffix or '(none)'!r} (use .csv or .jsonl)")
    # utf-8-sig drops a BOM; surrogateescape keeps bytes that are not UTF-8 so the row they
    # are on can be quarantined with its line number instead of failing the whole file.
    text = path.read_bytes().decode("utf-8-sig", errors="surrogateescape")
    lines = io.StringIO(text, newline="").readlines()
    if suffix == ".csv":
        return _read_csv(lines)
    return _read_jsonl(lines)


def _raw(lines: Sequence[str]) -> str:
    """The record's text exactly as in the file, without its final line ending."""
    text = "".join(lines)
    if text.endswith("\r\n"):
        text = text[:-2]
    elif text.endswith(("\n", "\r")):
        text = text[:-1]
    return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")


def _read_csv(lines: list[str]) -> FileContent:
    reader = csv.reader(iter(lines), strict=True)
    try:
        header = next(reader)
    except StopIteration:
        return FileContent([], [])
    except csv.Error as error:
        raise UnreadableFile(f"line 1: unreadable header: {error}") from None
    columns = [name.strip().lower() for name in header]
    seen: set[str] = set()
    for name in columns:
        if _SURROGATE.search(name):
            raise UnreadableFile("the header is not valid UTF-8")
        if name in seen:
            raise UnreadableFile(f"column {name!r} appears twice in the header", name)
        seen.add(name)
    records: list[Record] = []
    while True:
        start = reader.line_num + 1
        try:
            fields = next(reader)
        except StopIteration:
            break
        except csv.Error as error:
            records.append(
                Record(start, _raw(lines[start - 1 : reader.line_num]), {}, f"bad CSV: {error}")
            )
            continue
        raw = _raw(lines[start - 1 : reader.line_num])
        if not fields or (len(fields) == 1 and not fields[0].strip()):
            continue  # a blank line is not a row
        if len(fields) != len(columns):
            problem = f"expected {len(columns)} fields, found {len(fields)}"
            records.append(Record(start, raw, {}, problem))
            continue
        values = dict(zip(columns, fields, strict=True))
        records.append(Record(start, raw, values, _encoding_error(values)))
    return FileContent(columns, records)


def _read_jsonl(lines: list[str]) -> FileContent:
    columns: dict[str, None] = {}
    records: list[Record] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        raw = _raw([line])
        try:
            data = json.loads(line)
        except ValueError as error:
            records.append(Record(number, raw, {}, f"not valid JSON: {error}"))
            continue
        if not isinstance(data, dict):
            records.append(Record(number, raw, {}, "not a JSON object"))
            continue
        values: dict[str, str] = {}
        error_text: str | None = None
        for key, value in data.items():
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
        records.append(Record(number, raw, values, error_text or _encoding_error(values)))
    return FileContent(list(columns), records)


def _encoding_error(values: dict[str, str]) -> str | None:
    for name, value in values.items():
        if _SURROGATE.search(value):
            return f"{name}: bytes that are not UTF-8"
    return None


# --------------------------------------------------------------------------- typing


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
    frame_data: dict[str, Any] = {LINE: pd.Series([r.line for r in records], dtype="int64")}
    frame_data[ROW_ERROR] = pd.Series([r.error for r in records], dtype=object)
    typed: dict[int, dict[str, Any]] = {r.line: {} for r in records}
    for column in source.columns:
        if column.name not in present:
            continue  # the column-set check reports it
        texts: list[str | None] = []
        for record in records:
            value = record.values.get(column.name, "").strip()
            if column.kind == "flag":
                value = value.lower()
            texts.append(value or None)
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
            texts = [record.values.get(name, "").strip() or None for record in records]
            frame_data[name] = pd.Series(texts, dtype=object)
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


# --------------------------------------------------------------------------- ingest


def ingest_file(
    engine: Engine,
    config: HeraldConfig,
    source: str,
    path: Path,
    *,
    var_dir: Path | None = None,
    now: datetime | None = None,
) -> IngestResult:
    """Validate one file of ``source`` against its contract and load it, or reject it whole.

    Returns the result of a loaded batch; raises :class:`BatchRejected` (carrying the
    result) for a rejected one. Either way one ``telemetry_batch`` row records it.
    A suite file that is invalid raises ContractError; a missing file FileNotFoundError.
    """
    if source not in FORMATS:
        raise ValueError(f"unknown telemetry source {source!r} (one of {', '.join(FORMATS)})")
    if not path.is_file():
        raise FileNotFoundError(f"{path}: file not found")
    spec = FORMATS[source]
    contracts = config.telemetry.contracts
    var_dir = var_dir if var_dir is not None else get_settings().var_dir
    now = now or utcnow()
    suite = load_suite(config.directory, source)
    check_suite(suite)
    result = IngestResult(
        batch_id=str(uuid.uuid4()), source=source, file=str(path), status="loaded"
    )

    try:
        content = read_file(path)
    except UnreadableFile as error:
        result.failed_check, result.failed_column = FILE_FORMAT_CHECK, error.column
        result.detail = error.detail
        _reject(engine, result, path, var_dir)
    result.rows = len(content.records)
    typed = build_frame(spec, content)

    with engine.connect() as conn:
        ids = _distinct(v.get("account_external_id") for v in typed.values.values())
        accounts = _lookup(conn, ACCOUNT.c.external_id, ACCOUNT.c.id, ids)
        history = _recent_rows(conn, source, contracts.row_count.recent_batches)
    parameters: dict[str, Any] = {
        "known_accounts": sorted(accounts),
        # the helper columns are naive UTC (see build_frame)
        "now": (now if now.tzinfo is None else now.astimezone(UTC).replace(tzinfo=None)),
    }
    median = statistics.median(history) if history else None
    if median is not None:
        parameters["min_rows"] = int(contracts.row_count.min_ratio * median)
        parameters["max_rows"] = math.ceil(contracts.row_count.max_ratio * median)

    report = run_suite(typed.frame, suite, parameters, gx_root=var_dir)
    result.data_docs = report.data_docs

    if report.batch_failures:
        failure = report.batch_failures[0]
        result.failed_check, result.failed_column = failure.type, failure.column
        result.detail = failure.detail
        if failure.type == "expect_table_row_count_to_be_between" and median is not None:
            result.detail += (
                f": {contracts.row_count.min_ratio:g}x to {contracts.row_count.max_ratio:g}x the "
                f"median {median:g} of the last {len(history)} loaded batch(es)"
            )
        others = [f"{f.check}: {f.detail}" for f in report.batch_failures[1:]]
        if others:
            result.detail += "; also " + "; ".join(others)
        _reject(engine, result, path, var_dir)

    failures = dict(report.row_failures)
    for record in content.records:
        if record.line not in failures:
            problem = _unloadable(spec, typed.values[record.line], accounts)
            if problem is not None:
                failures[record.line] = [problem]
    bad = len(failures)
    if result.rows and bad / result.rows > contracts.max_bad_row_share:
        counts: dict[str, int] = {}
        columns: dict[str, str | None] = {}
        for line_failures in failures.values():
            for row_failure in line_failures:
                counts[row_failure.check] = counts.get(row_failure.check, 0) + 1
                columns[row_failure.check] = row_failure.column
        top = max(counts, key=lambda check: counts[check])
        result.failed_check = BAD_ROW_SHARE_CHECK
        result.failed_column = base_column(columns[top] or "") or None
        result.detail = (
            f"{bad} of {result.rows} rows ({bad / result.rows:.1%}) failed row checks, more "
            f"than {contracts.max_bad_row_share:.0%}; most failed {top} "
            f"({counts[top]} rows) on column '{result.failed_column}'"
        )
        _reject(engine, result, path, var_dir)

    records = {record.line: record for record in content.records}
    quarantined = [
        QuarantinedRow(
            line=line,
            check=failures[line][0].check,
            detail=_describe(failures[line], records[line], typed.values[line]),
            raw=records[line].raw,
        )
        for line in sorted(failures)
    ]
    good = [record.line for record in content.records if record.line not in failures]
    with engine.begin() as conn:
        rows = [_row(spec, typed.values[line], accounts) for line in good]
        if source == "survey":
            emails = _distinct(typed.values[line].get("contact_email") for line in good)
            contacts = _lookup(conn, CONTACT.c.email, CONTACT.c.id, emails)
            for row, line in zip(rows, good, strict=True):
                email = typed.values[line].get("contact_email")
                row["contact_id"] = contacts.get(email) if email else None
        result.changed = _upsert(conn, spec, rows, result.batch_id)
        if source == "adoption":
            touched = sorted({int(row["account_id"]) for row in rows})
            threshold = config.telemetry.adoption.migrated_at_pct
            result.accounts_migrated, result.accounts_in_progress = apply_adoption(
                conn, touched, threshold
            )
        _quarantine(conn, source, result.batch_id, quarantined)
        result.loaded = len(rows)
        result.quarantined = len(quarantined)
        result.first_quarantined = quarantined[:FIRST_QUARANTINED]
        notes = [f"{result.changed} row(s) new or changed"]
        notes.extend(f"skipped {item}" for item in report.skipped)
        result.detail = "; ".join(notes)
        _record_batch(conn, result)
    return result


def _reject(engine: Engine, result: IngestResult, path: Path, var_dir: Path) -> NoReturn:
    result.status = "rejected"
    result.loaded = result.quarantined = 0
    kept = var_dir / "telemetry" / "rejected" / result.source / f"{result.batch_id}-{path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, kept)
    result.kept_file = kept
    with engine.begin() as conn:
        _record_batch(conn, result)
    raise BatchRejected(result)


def _record_batch(conn: Connection, result: IngestResult) -> None:
    detail = result.detail
    if result.kept_file is not None:
        detail = f"{detail} (raw file kept as {result.kept_file})"
    conn.execute(
        insert(TELEMETRY_BATCH).values(
            id=result.batch_id,
            source=result.source,
            file=result.file[:1000],
            received_at=utcnow(),
            status=result.status,
            rows=result.rows,
            loaded=result.loaded,
            quarantined=result.quarantined,
            failed_check=(result.failed_check or None) and result.failed_check[:200],
            failed_column=(result.failed_column or None) and result.failed_column[:200],
            detail=detail,
            data_docs=str(result.data_docs)[:1000] if result.data_docs else None,
        )
    )


def _distinct(values: Iterable[Any]) -> list[Any]:
    return sorted({value for value in values if value is not None})


def _chunks(items: Sequence[Any], size: int = CHUNK_ROWS) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


def _lookup(conn: Connection, key: Any, value: Any, keys: Sequence[Any]) -> dict[Any, int]:
    found: dict[Any, int] = {}
    for chunk in _chunks(keys):
        found.update({k: int(v) for k, v in conn.execute(select(key, value).where(key.in_(chunk)))})
    return found


def _recent_rows(conn: Connection, source: str, count: int) -> list[int]:
    return [
        int(rows)
        for rows in conn.execute(
            select(TELEMETRY_BATCH.c.rows)
            .where(TELEMETRY_BATCH.c.source == source, TELEMETRY_BATCH.c.status == "loaded")
            .order_by(TELEMETRY_BATCH.c.received_at.desc())
            .limit(count)
        ).scalars()
    ]


def _unloadable(
    spec: SourceFormat, values: dict[str, Any], accounts: dict[str, int]
) -> RowFailure | None:
    """A safety net under the suite: a row that cannot be stored is never loaded."""
    for column in spec.columns:
        if column.required and values.get(column.name) is None:
            return RowFailure(f"required({column.name})", column.name, None)
    if values.get("account_external_id") not in accounts:
        return RowFailure("known_account(account_external_id)", "account_external_id", None)
    return None


def _describe(failures: list[RowFailure], record: Record, values: dict[str, Any]) -> str:
    parts: list[str] = []
    for failure in failures:
        column = failure.column or ""
        if column == ROW_ERROR:
            parts.append(f"{failure.check}: {record.error}")
            continue
        shown = _show(failure.value)
        text = f"{failure.check}: {column}={shown}" if column else failure.check
        base = base_column(column)
        if base != column and base in values:
            text += f" ({base}={record.values.get(base, '')!r})"
        parts.append(text)
    return "; ".join(parts)


def _show(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, datetime | date):
        return value.isoformat()
    return repr(value)


# --------------------------------------------------------------------------- loading


def _row(spec: SourceFormat, values: dict[str, Any], accounts: dict[str, int]) -> dict[str, Any]:
    account_id = accounts[values["account_external_id"]]
    if spec.source == "adoption":
        return {
            "account_id": account_id,
            "observed_on": values["observed_on"],
            "adoption_pct": values["adoption_pct"],
        }
    if spec.source == "support":
        return {
            "ticket_id": values["ticket_id"],
            "account_id": account_id,
            "opened_at": values["opened_at"],
            "closed_at": values.get("closed_at"),
            "category": values["category"],
            "satisfaction": values.get("satisfaction"),
        }
    if spec.source == "survey":
        return {
            "response_id": values["response_id"],
            "account_id": account_id,
            "responded_at": values["responded_at"],
            "csat": values["csat"],
            "performance_improved": values.get("performance_improved"),
            "comment": values.get("comment"),
        }
    return {
        "report_id": values["report_id"],
        "account_id": account_id,
        "reported_at": values["reported_at"],
        "legacy_import_ms": values["legacy_import_ms"],
        "new_import_ms": values["new_import_ms"],
        "legacy_memory_mb": values["legacy_memory_mb"],
        "new_memory_mb": values["new_memory_mb"],
    }


def _conflict_key(spec: SourceFormat) -> list[str]:
    if spec.source == "adoption":
        return ["account_id", "observed_on"]
    return list(spec.key)


def _upsert(conn: Connection, spec: SourceFormat, rows: list[dict[str, Any]], batch: str) -> int:
    """Insert new rows, update changed ones, leave equal ones alone; return rows written."""
    if not rows:
        return 0
    target: Table = table(spec.model)
    key = _conflict_key(spec)
    values = [column for column in rows[0] if column not in key]
    now = utcnow()
    written = 0
    for chunk in _chunks(rows):
        extra: dict[str, Any] = {"batch_id": batch}
        if spec.source == "adoption":
            extra["received_at"] = now
        statement = dialect_insert(conn.dialect.name)(target).values(
            [{**row, **extra} for row in chunk]
        )
        changed = or_(*(target.c[c].is_distinct_from(statement.excluded[c]) for c in values))
        statement = statement.on_conflict_do_update(
            index_elements=key,
            set_={c: statement.excluded[c] for c in [*values, *extra]},
            where=changed,
        )
        # SQLAlchemy keeps an INSERT's rowcount only when asked.
        statement = statement.execution_options(preserve_rowcount=True)
        written += int(conn.execute(statement).rowcount or 0)
    return written


def apply_adoption(conn: Connection, accounts: Sequence[int], threshold: float) -> tuple[int, int]:
    """Move these accounts' migration state forward from their stored adoption events (at
    ``threshold`` percent an account is migrated, on the first such day); the accounts
    telemetry has seen become telemetry's. Returns (newly migrated, newly in progress)."""
    events = table(AdoptionEvent)
    first_day = (
        select(func.min(events.c.observed_on))
        .where(events.c.account_id == ACCOUNT.c.id, events.c.adoption_pct >= threshold)
        .scalar_subquery()
    )
    progressing = exists().where(
        events.c.account_id == ACCOUNT.c.id,
        events.c.adoption_pct > 0,
        events.c.adoption_pct < threshold,
    )
    seen = exists().where(events.c.account_id == ACCOUNT.c.id, events.c.adoption_pct > 0)
    telemetry = MigrationSource.TELEMETRY.value
    migrated = in_progress = 0
    now = utcnow()
    for chunk in _chunks(list(accounts)):
        is_migrated = ACCOUNT.c.migration_state == MigrationState.MIGRATED.value
        keep_day = and_(
            is_migrated, ACCOUNT.c.migrated_on.is_not(None), ACCOUNT.c.migrated_on <= first_day
        )
        migrated += int(
            conn.execute(
                update(ACCOUNT)
                .where(ACCOUNT.c.id.in_(chunk), first_day.is_not(None), ~keep_day)
                .values(
                    migration_state=MigrationState.MIGRATED.value,
                    migrated_on=case((keep_day, ACCOUNT.c.migrated_on), else_=first_day),
                    migration_source=telemetry,
                    updated_at=now,
                )
            ).rowcount
            or 0
        )
        in_progress += int(
            conn.execute(
                update(ACCOUNT)
                .where(
                    ACCOUNT.c.id.in_(chunk),
                    ACCOUNT.c.migration_state == MigrationState.NOT_STARTED.value,
                    progressing,
                )
                .values(
                    migration_state=MigrationState.IN_PROGRESS.value,
                    migration_source=telemetry,
                    updated_at=now,
                )
            ).rowcount
            or 0
        )
        conn.execute(
            update(ACCOUNT)
            .where(ACCOUNT.c.id.in_(chunk), ACCOUNT.c.migration_source != telemetry, seen)
            .values(migration_source=telemetry, updated_at=now)
        )
    return migrated, in_progress


def _quarantine(conn: Connection, source: str, batch: str, rows: list[QuarantinedRow]) -> None:
    now = utcnow()
    for chunk in _chunks(rows):
        conn.execute(
            insert(QUARANTINE).values(
                [
                    {
                        "source": source,
                        "batch_id": batch,
                        "line": row.line,
                        "raw": row.raw,
                        "failed_check": row.check[:200],
                        "detail": row.detail,
                        "created_at": now,
                    }
                    for row in chunk
                ]
            )
        )
