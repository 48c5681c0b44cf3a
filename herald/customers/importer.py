"""Customer import: accounts and contacts from CSV, upserted idempotently, bad rows rejected.

The files are streamed and each row checked on its own (:mod:`herald.customers.rows`); the
good ones are staged in chunks into a temporary table (``COPY`` on Postgres). Checks that
need the whole file or the database (duplicates, unknown accounts) then run as SQL over the
staging table, and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table upserts
what is left, touching only rows whose values changed. Every rejected row goes to the
rejects file with its file, line and reason. The whole import is one transaction: it lands
completely or not at all.

Which source wins an account's migration state: telemetry. A re-import records the CRM's
state in ``crm_migration_state`` / ``crm_migrated_on`` and changes ``migration_state`` only
for accounts whose state no adoption telemetry has set (``migration_source`` says which).
"""

from __future__ import annotations

import csv
import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import (
    JSON,
    Column,
    Connection,
    Date,
    Engine,
    Integer,
    MetaData,
    String,
    Table,
    Text,
    and_,
    case,
    cast,
    delete,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from herald.customers.rows import (
    ACCOUNT_FILE,
    CONTACT_FILE,
    CustomerFile,
    Header,
    checked_rows,
    read_header,
)
from herald.db import dialect_insert
from herald.models import ACCOUNT, CONTACT, MigrationSource, utcnow
from herald.tabular import ByteCounter


@dataclass
class FileResult:
    """What happened to one file's rows."""

    file: str
    part: int
    rows: int = 0
    inserted: int = 0
    updated: int = 0
    unchanged: int = 0
    rejected: int = 0

    @property
    def imported(self) -> int:
        """Rows that are now in the database (new, changed or already equal)."""
        return self.inserted + self.updated + self.unchanged


@dataclass(frozen=True)
class Reject:
    """A row that was not imported, and why."""

    file: str
    line: int
    reason: str
    raw: str


@dataclass
class ImportResult:
    """The outcome of one import command."""

    accounts: FileResult
    contacts: FileResult
    rejects_path: Path | None
    first_rejects: list[Reject] = field(default_factory=list)

    @property
    def rejected(self) -> int:
        """Rejected rows over both files."""
        return self.accounts.rejected + self.contacts.rejected


# --------------------------------------------------------------------------- staging tables


def _json_type() -> Any:
    return JSON().with_variant(JSONB(), "postgresql")


def _staging_tables() -> tuple[Table, Table, Table]:
    meta = MetaData()
    temporary = ["TEMPORARY"]
    accounts = Table(
        "herald_stage_account",
        meta,
        Column("line", Integer, primary_key=True),
        Column("raw", Text, nullable=False),
        Column("external_id", String(100), nullable=False, index=True),
        Column("name", String(300), nullable=False),
        Column("tier", String(50), nullable=False),
        Column("region", String(50), nullable=False),
        Column("industry", String(100)),
        Column("lifecycle", String(16), nullable=False),
        Column("crm_migration_state", String(16), nullable=False),
        Column("crm_migrated_on", Date),
        Column("attributes", _json_type(), nullable=False),
        prefixes=temporary,
    )
    contacts = Table(
        "herald_stage_contact",
        meta,
        Column("line", Integer, primary_key=True),
        Column("raw", Text, nullable=False),
        Column("account_external_id", String(100), nullable=False),
        Column("account_id", Integer),
        Column("email", String(320), nullable=False, index=True),
        Column("name", String(300)),
        Column("role", String(16), nullable=False),
        Column("timezone", String(64)),
        Column("locale", String(16), nullable=False),
        prefixes=temporary,
    )
    rejects = Table(
        "herald_stage_reject",
        meta,
        Column("id", Integer, primary_key=True, autoincrement=True),
        Column("part", Integer, nullable=False),  # 0 accounts, 1 contacts: report order
        Column("file", String(500), nullable=False),
        Column("line", Integer, nullable=False),
        Column("reason", Text, nullable=False),
        Column("raw", Text, nullable=False),
        prefixes=temporary,
    )
    return accounts, contacts, rejects


# --------------------------------------------------------------------------- the import


@dataclass(frozen=True)
class _Kind:
    """How one kind of customer file is read, staged and upserted."""

    file: CustomerFile
    target: Table
    key: str
    columns: tuple[str, ...]

    @property
    def name(self) -> str:
        """``accounts`` or ``contacts``."""
        return self.file.name


ACCOUNTS = _Kind(
    file=ACCOUNT_FILE,
    target=ACCOUNT,
    key="external_id",
    columns=(
        "external_id",
        "name",
        "tier",
        "region",
        "industry",
        "lifecycle",
        "crm_migration_state",
        "crm_migrated_on",
        "attributes",
    ),
)
CONTACTS = _Kind(
    file=CONTACT_FILE,
    target=CONTACT,
    key="email",
    columns=("email", "account_id", "name", "role", "timezone", "locale"),
)


def import_customers(
    *,
    engine: Engine,
    accounts_csv: Path | None,
    contacts_csv: Path | None,
    rejects_dir: Path,
    chunk_rows: int = 20_000,
    progress: ByteCounter | None = None,
    keep_rejects: int = 20,
) -> ImportResult:
    """Upsert accounts then contacts; reject bad rows with file, line and reason.

    Headers of both files are checked before anything is written (``ImportError_``).
    ``progress`` receives byte counts as the files are read.
    """
    files = [
        (kind, path)
        for kind, path in ((ACCOUNTS, accounts_csv), (CONTACTS, contacts_csv))
        if path is not None
    ]
    headers = {kind.name: read_header(path, kind.file) for kind, path in files}
    results = {
        kind.name: FileResult(file="", part=part) for part, kind in enumerate((ACCOUNTS, CONTACTS))
    }
    stage_accounts, stage_contacts, stage_rejects = _staging_tables()
    stages = {"accounts": stage_accounts, "contacts": stage_contacts}
    meta = stage_rejects.metadata
    with engine.begin() as conn:
        # Counts of inserted/updated/rejected rows come from rowcount, which SQLAlchemy only
        # keeps for INSERT when asked.
        conn.execution_options(preserve_rowcount=True)
        # SQLite runs DDL outside the transaction: a failed import may have left these behind.
        meta.drop_all(conn)
        meta.create_all(conn)
        for kind, path in files:
            result, stage = results[kind.name], stages[kind.name]
            result.file = str(path)
            _stage(
                conn,
                path=path,
                header=headers[kind.name],
                kind=kind.file,
                stage=stage,
                rejects=stage_rejects,
                result=result,
                chunk_rows=chunk_rows,
                progress=progress,
            )
            if kind is CONTACTS:
                _resolve_accounts(conn, stage, stage_rejects, result)
            _reject_duplicates(
                conn, stage=stage, rejects=stage_rejects, result=result, key=kind.key
            )
            _upsert(
                conn,
                target=kind.target,
                stage=stage,
                key=kind.key,
                columns=list(kind.columns),
                result=result,
            )
        rejects_path, first = _write_rejects(
            conn, rejects=stage_rejects, directory=rejects_dir, keep=keep_rejects
        )
        meta.drop_all(conn)
    return ImportResult(
        accounts=results["accounts"],
        contacts=results["contacts"],
        rejects_path=rejects_path,
        first_rejects=first,
    )


def _stage(
    conn: Connection,
    *,
    path: Path,
    header: Header,
    kind: CustomerFile,
    stage: Table,
    rejects: Table,
    result: FileResult,
    chunk_rows: int,
    progress: ByteCounter | None,
) -> None:
    """Stage the file's good rows and keep its rejected ones, a chunk at a time."""
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    name = str(path)
    for row in checked_rows(path, header, kind, on_bytes=progress):
        result.rows += 1
        if row.values is not None:
            good.append(row.values)
        else:
            bad.append(
                {
                    "part": result.part,
                    "file": name,
                    "line": row.line,
                    "reason": row.reason,
                    "raw": row.raw,
                }
            )
        if len(good) >= chunk_rows:
            _bulk_insert(conn, stage=stage, rows=good)
            good.clear()
        if len(bad) >= chunk_rows:
            conn.execute(insert(rejects), bad)
            bad.clear()
    if good:
        _bulk_insert(conn, stage=stage, rows=good)
    if bad:
        conn.execute(insert(rejects), bad)
    result.rejected += conn.execute(select(func.count()).where(rejects.c.file == name)).scalar_one()


def _bulk_insert(conn: Connection, *, stage: Table, rows: list[dict[str, Any]]) -> None:
    if conn.dialect.name != "postgresql":
        conn.execute(insert(stage), rows)
        return
    # COPY is Postgres's bulk path: several times faster than a multi-row INSERT.
    columns = [column.name for column in stage.columns if column.name in rows[0]]
    json_columns = {c.name for c in stage.columns if isinstance(c.type, JSON)}
    driver = conn.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {stage.name} ({', '.join(columns)}) FROM STDIN") as copy,
    ):
        for row in rows:
            copy.write_row(
                [
                    json.dumps(row[c], sort_keys=True) if c in json_columns else row[c]
                    for c in columns
                ]
            )


def _reject_duplicates(
    conn: Connection, *, stage: Table, rejects: Table, result: FileResult, key: str
) -> None:
    """Reject every row whose key appears more than once in the file: the file contradicts
    itself, so none of them is imported (the stored row, if any, stays as it was)."""
    by_key = stage.c[key]
    counted = select(
        stage.c.line,
        stage.c.raw,
        by_key.label("key"),
        func.count().over(partition_by=by_key).label("copies"),
        func.min(stage.c.line).over(partition_by=by_key).label("first_line"),
        func.max(stage.c.line).over(partition_by=by_key).label("last_line"),
    ).subquery()
    duplicates = select(
        literal(result.part),
        literal(result.file),
        counted.c.line,
        literal(f"duplicate {key} ")
        + counted.c.key
        + literal(": ")
        + cast(counted.c.copies, String)
        + literal(" rows, lines ")
        + cast(counted.c.first_line, String)
        + literal(" to ")
        + cast(counted.c.last_line, String)
        + literal("; none imported"),
        counted.c.raw,
    ).where(counted.c.copies > 1)
    added = conn.execute(
        insert(rejects).from_select(["part", "file", "line", "reason", "raw"], duplicates)
    ).rowcount
    if added:
        conn.execute(
            delete(stage).where(
                stage.c.line.in_(select(rejects.c.line).where(rejects.c.file == result.file))
            )
        )
    result.rejected += added


def _resolve_accounts(conn: Connection, stage: Table, rejects: Table, result: FileResult) -> None:
    """Look up each contact's account id; reject contacts of accounts Herald does not know."""
    conn.execute(
        update(stage).values(
            account_id=select(ACCOUNT.c.id)
            .where(ACCOUNT.c.external_id == stage.c.account_external_id)
            .scalar_subquery()
        )
    )
    unknown = select(
        literal(result.part),
        literal(result.file),
        stage.c.line,
        literal("unknown account ") + stage.c.account_external_id,
        stage.c.raw,
    ).where(stage.c.account_id.is_(None))
    added = conn.execute(
        insert(rejects).from_select(["part", "file", "line", "reason", "raw"], unknown)
    ).rowcount
    if added:
        conn.execute(delete(stage).where(stage.c.account_id.is_(None)))
    result.rejected += added


def _upsert(
    conn: Connection,
    *,
    target: Table,
    stage: Table,
    key: str,
    columns: list[str],
    result: FileResult,
) -> None:
    staged = conn.execute(select(func.count()).select_from(stage)).scalar_one()
    existing = conn.execute(
        select(func.count()).select_from(stage.join(target, target.c[key] == stage.c[key]))
    ).scalar_one()
    now = utcnow()
    timestamp = target.c.updated_at.type
    # An account's migration state starts as the CRM's (see _migration_state for updates).
    derived = {"migration_state": "crm_migration_state", "migrated_on": "crm_migrated_on"}
    if target is not ACCOUNT:
        derived = {}
    source = select(
        *(stage.c[c] for c in columns),
        *(stage.c[c] for c in derived.values()),
        literal(now, timestamp),
        literal(now, timestamp),
    ).where(true())  # SQLite needs a WHERE to tell "SELECT ... ON CONFLICT" apart from a join
    statement = dialect_insert(conn.dialect.name)(target).from_select(
        [*columns, *derived, "created_at", "updated_at"], source
    )
    changed = or_(
        *(target.c[c].is_distinct_from(statement.excluded[c]) for c in columns if c != key)
    )
    updates: dict[str, Any] = {c: statement.excluded[c] for c in columns if c != key}
    if derived:
        states, changed_state = _migration_state(statement)
        updates.update(states)
        changed = or_(changed, changed_state)
    statement = statement.on_conflict_do_update(
        index_elements=[key],
        set_={**updates, "updated_at": now},
        where=changed,
    )
    written = conn.execute(statement).rowcount
    result.inserted = staged - existing
    result.updated = written - result.inserted
    result.unchanged = existing - result.updated


def _migration_state(statement: Any) -> tuple[dict[str, Any], Any]:
    """What a re-import sets of an account's migration state, and when that is a change:
    the CRM's state, unless adoption telemetry has set it (telemetry wins)."""
    crm_owned = ACCOUNT.c.migration_source != MigrationSource.TELEMETRY.value
    values = {
        "migration_state": case(
            (crm_owned, statement.excluded.crm_migration_state), else_=ACCOUNT.c.migration_state
        ),
        "migrated_on": case(
            (crm_owned, statement.excluded.crm_migrated_on), else_=ACCOUNT.c.migrated_on
        ),
    }
    differs = and_(
        crm_owned,
        or_(
            ACCOUNT.c.migration_state.is_distinct_from(statement.excluded.crm_migration_state),
            ACCOUNT.c.migrated_on.is_distinct_from(statement.excluded.crm_migrated_on),
        ),
    )
    return values, differs


def _write_rejects(
    conn: Connection, *, rejects: Table, directory: Path, keep: int
) -> tuple[Path | None, list[Reject]]:
    total = conn.execute(select(func.count()).select_from(rejects)).scalar_one()
    if not total:
        return None, []
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rejects-{utcnow():%Y%m%dT%H%M%S%fZ}.csv"
    first: list[Reject] = []
    rows = conn.execute(
        select(rejects.c.file, rejects.c.line, rejects.c.reason, rejects.c.raw)
        .order_by(rejects.c.part, rejects.c.line)
        .execution_options(yield_per=10_000)  # streamed: a million rejects stay on disk
    )
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "line", "reason", "row"])
        for file, line, reason, raw in rows:
            writer.writerow([file, line, reason, raw])
            if len(first) < keep:
                first.append(Reject(file=file, line=line, reason=reason, raw=raw))
    return path, first
