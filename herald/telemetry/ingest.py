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

import math
import shutil
import statistics
import uuid
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal, NoReturn

from sqlalchemy import Connection, Engine, insert, or_, select

from herald.config import HeraldConfig
from herald.db import dialect_insert
from herald.models import ACCOUNT, CONTACT, QUARANTINE, TELEMETRY_BATCH, utcnow
from herald.settings import get_settings
from herald.telemetry.adoption import apply_adoption
from herald.telemetry.batch_file import Record, UnreadableFile, read_file
from herald.telemetry.contracts import RowFailure, base_column, check_suite, load_suite, run_suite
from herald.telemetry.sources import FORMATS, SourceFormat
from herald.telemetry.validation_frame import ROW_ERROR, build_frame

FILE_FORMAT_CHECK = "file_format"
BAD_ROW_SHARE_CHECK = "max_bad_row_share"
CHUNK_ROWS = 1_000
FIRST_QUARANTINED = 10


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


# --------------------------------------------------------------------------- ingest


def ingest_file(
    engine: Engine,
    *,
    config: HeraldConfig,
    source: str,
    path: Path,
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
        _reject(engine, result=result, path=path, var_dir=var_dir)
    result.rows = len(content.records)
    typed = build_frame(spec, content)

    with engine.connect() as conn:
        ids = _distinct(v.get("account_external_id") for v in typed.values.values())
        accounts = _lookup(conn, key=ACCOUNT.c.external_id, value=ACCOUNT.c.id, keys=ids)
        history = _recent_rows(conn, source=source, count=contracts.row_count.recent_batches)
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
        _reject(engine, result=result, path=path, var_dir=var_dir)

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
        _reject(engine, result=result, path=path, var_dir=var_dir)

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
            contacts = _lookup(conn, key=CONTACT.c.email, value=CONTACT.c.id, keys=emails)
            for row, line in zip(rows, good, strict=True):
                email = typed.values[line].get("contact_email")
                row["contact_id"] = contacts.get(email) if email else None
        result.changed = _upsert(conn, spec=spec, rows=rows, batch=result.batch_id)
        if source == "adoption":
            touched = sorted({int(row["account_id"]) for row in rows})
            threshold = config.telemetry.adoption.migrated_at_pct
            result.accounts_migrated, result.accounts_in_progress = apply_adoption(
                conn, accounts=touched, threshold=threshold
            )
        _quarantine(conn, source=source, batch=result.batch_id, rows=quarantined)
        result.loaded = len(rows)
        result.quarantined = len(quarantined)
        result.first_quarantined = quarantined[:FIRST_QUARANTINED]
        notes = [f"{result.changed} row(s) new or changed"]
        notes.extend(f"skipped {item}" for item in report.skipped)
        result.detail = "; ".join(notes)
        _record_batch(conn, result=result)
    return result


def _reject(engine: Engine, *, result: IngestResult, path: Path, var_dir: Path) -> NoReturn:
    result.status = "rejected"
    result.loaded = result.quarantined = 0
    kept = var_dir / "telemetry" / "rejected" / result.source / f"{result.batch_id}-{path.name}"
    kept.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy2(path, kept)
    result.kept_file = kept
    with engine.begin() as conn:
        _record_batch(conn, result=result)
    raise BatchRejected(result)


def _record_batch(conn: Connection, *, result: IngestResult) -> None:
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


def _lookup(conn: Connection, *, key: Any, value: Any, keys: Sequence[Any]) -> dict[Any, int]:
    found: dict[Any, int] = {}
    for chunk in _chunks(keys):
        found.update({k: int(v) for k, v in conn.execute(select(key, value).where(key.in_(chunk)))})
    return found


def _recent_rows(conn: Connection, *, source: str, count: int) -> list[int]:
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


# Columns of a file that are not columns of its table: they are looked up as ids instead.
_LOOKED_UP = ("account_external_id", "contact_email")


def _row(spec: SourceFormat, values: dict[str, Any], accounts: dict[str, int]) -> dict[str, Any]:
    """The table row of a good file row: its typed values, the account as its id (a survey's
    contact id is added by the caller)."""
    row: dict[str, Any] = {"account_id": accounts[values["account_external_id"]]}
    for column in spec.columns:
        if column.name not in _LOOKED_UP:
            row[column.name] = values.get(column.name)
    return row


def _conflict_key(spec: SourceFormat) -> list[str]:
    if spec.source == "adoption":
        return ["account_id", "observed_on"]
    return list(spec.key)


def _upsert(conn: Connection, *, spec: SourceFormat, rows: list[dict[str, Any]], batch: str) -> int:
    """Insert new rows, update changed ones, leave equal ones alone; return rows written."""
    if not rows:
        return 0
    target = spec.table
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


def _quarantine(conn: Connection, *, source: str, batch: str, rows: list[QuarantinedRow]) -> None:
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
