"""Customer import: accounts and contacts from CSV, upserted idempotently, bad rows rejected.

The files are streamed, never loaded whole: each row is checked on its own (format, e-mail,
role, timezone, encoding) and the good ones are staged in chunks into a temporary table
(``COPY`` on Postgres). Checks that need the whole file or the database (duplicates, unknown
accounts) then run as SQL over the staging table, and one ``INSERT ... SELECT ... ON CONFLICT
DO UPDATE`` per table upserts what is left, touching only rows whose values changed. Every
rejected row goes to the rejects file with its file, line and reason. The whole import is one
transaction: it lands completely or not at all.

Values that may reach a mail header follow :mod:`herald.addresses`: in names (and
attribute values) a line break or tab becomes a space, any other control character or a
bidirectional override rejects the row; identifiers, tier, region and industry take no
control or line-breaking character at all. E-mail addresses are stored in their canonical
ASCII form (an internationalised domain as its A-label); a non-ASCII local part is rejected.

Which source wins an account's migration state: telemetry. A re-import records the CRM's
state in ``crm_migration_state`` / ``crm_migrated_on`` and changes ``migration_state`` only
for accounts whose state no adoption telemetry has set (``migration_source`` says which).
"""

from __future__ import annotations

import csv
import io
import json
import re
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any, BinaryIO
from zoneinfo import available_timezones

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

from herald.addresses import (
    BadAddress,
    UnsafeText,
    canonical_email,
    clean_text,
    describe,
    unsafe_char,
)
from herald.db import dialect_insert
from herald.errors import HeraldError
from herald.models import (
    ACCOUNT,
    CONTACT,
    AccountLifecycle,
    ContactRole,
    MigrationSource,
    MigrationState,
    utcnow,
)

ATTRIBUTE_PREFIX = "attr."
ACCOUNT_REQUIRED = ("external_id", "name", "tier", "region")
ACCOUNT_OPTIONAL = ("industry", "lifecycle", "migration_state", "migrated_on")
CONTACT_REQUIRED = ("account_external_id", "email")
CONTACT_OPTIONAL = ("name", "role", "timezone", "locale")

_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INTEGER = re.compile(r"^[+-]?\d{1,15}$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_LOCALE = re.compile(r"^([a-zA-Z]{2,3})(?:[-_]([a-zA-Z]{2}|\d{3}))?$")
_SURROGATE = re.compile("[\udc80-\udcff]")

ProgressCallback = Callable[[int], None]


class ImportError_(HeraldError):
    """The import cannot start (a file is missing, or its header is wrong); nothing changed."""


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


# --------------------------------------------------------------------------- reading


class _CountingReader(io.RawIOBase):
    """A raw reader that reports how many bytes have been read (for the progress bar)."""

    def __init__(self, raw: BinaryIO, on_bytes: ProgressCallback | None) -> None:
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


@dataclass(frozen=True)
class _Header:
    columns: list[str]
    attributes: dict[int, str]  # column index -> attribute key


def _open_text(path: Path, on_bytes: ProgressCallback | None) -> io.TextIOWrapper:
    raw = _CountingReader(path.open("rb", buffering=0), on_bytes)
    # utf-8-sig drops a BOM; surrogateescape keeps undecodable bytes so the row can be
    # rejected with its line number instead of failing the whole file.
    return io.TextIOWrapper(
        io.BufferedReader(raw, buffer_size=1 << 20),
        encoding="utf-8-sig",
        errors="surrogateescape",
        newline="",
    )


def _read_header(
    path: Path, required: tuple[str, ...], optional: tuple[str, ...], *, attributes_allowed: bool
) -> _Header:
    if not path.is_file():
        raise ImportError_(f"{path}: file not found")
    with path.open("rb") as probe:
        start = probe.read(4)
    if start.startswith((b"\xff\xfe", b"\xfe\xff")) or b"\x00" in start:
        raise ImportError_(
            f"{path}:1: the file is UTF-16 or binary, not text in UTF-8: save it as CSV UTF-8"
        )
    with _open_text(path, None) as handle:
        try:
            header = next(csv.reader(handle))
        except StopIteration:
            raise ImportError_(f"{path}: the file is empty (expected a header line)") from None
        except csv.Error as error:
            raise ImportError_(f"{path}:1: unreadable header: {error}") from None
    columns = [name.strip().lower() for name in header]
    problems: list[str] = []
    attributes: dict[int, str] = {}
    seen: set[str] = set()
    for index, name in enumerate(columns):
        if _SURROGATE.search(name):
            problems.append(f"column {index + 1} is not valid UTF-8")
            continue
        if name in seen:
            problems.append(f"column {name!r} appears twice")
        seen.add(name)
        if attributes_allowed and name.startswith(ATTRIBUTE_PREFIX):
            key = header[index].strip()[len(ATTRIBUTE_PREFIX) :]
            if not _ATTRIBUTE_KEY.match(key):
                problems.append(f"attribute column {name!r}: name must be letters, digits and '_'")
            attributes[index] = key
        elif name not in required and name not in optional:
            hint = f" or '{ATTRIBUTE_PREFIX}NAME' for an attribute" if attributes_allowed else ""
            known = ", ".join((*required, *optional))
            problems.append(f"unknown column {name!r} (expected {known}{hint})")
    missing = [name for name in required if name not in columns]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if problems:
        raise ImportError_(f"{path}:1: bad header: " + "; ".join(problems))
    return _Header(columns=columns, attributes=attributes)


class _Lines:
    """The physical lines of a file for ``csv.reader``, numbered; the lines of a record that
    failed can be put back, all but its first, so one stray quote costs one line, not the
    rest of the file."""

    def __init__(self, handle: io.TextIOWrapper) -> None:
        self._handle = handle
        self._back: deque[str] = deque()
        self._taken: list[str] = []
        self.next_line = 1  # the number of the line the next record starts on

    def __iter__(self) -> _Lines:
        return self

    def __next__(self) -> str:
        line = self._back.popleft() if self._back else next(self._handle)
        self._taken.append(line)
        return line

    def record_done(self) -> int:
        """Close the record just read; the line it started on."""
        first = self.next_line
        self.next_line += len(self._taken)
        self._taken = []
        return first

    def put_back_all_but_first(self) -> int:
        """The record just read failed: reread its lines after the first. How many."""
        rest = self._taken[1:]
        self._back.extendleft(reversed(rest))
        self._taken = self._taken[:1]
        return len(rest)


def _rows(
    path: Path, header: _Header, on_bytes: ProgressCallback | None
) -> Iterator[tuple[int, list[str] | None, str]]:
    """Yield (line, fields or None, error) for every non-blank data row; line is 1-based.

    A record that fails and spans several lines (a quote opened and never closed where it
    should be) is reported on its first line, and the lines after it are read again.
    """
    with _open_text(path, on_bytes) as handle:
        lines = _Lines(handle)
        reader = csv.reader(lines, strict=True)
        next(reader)  # header, checked already
        lines.record_done()
        width = len(header.columns)
        while True:
            try:
                fields: list[str] | None = next(reader)
                error = ""
            except StopIteration:
                return
            except csv.Error as problem:
                fields, error = None, f"malformed CSV: {problem}"
            if fields is not None:
                if not fields or (len(fields) == 1 and not fields[0].strip()):
                    lines.record_done()
                    continue  # a blank line is not a row
                if len(fields) != width:
                    error = f"expected {width} fields, found {len(fields)}"
            if error:
                reread = lines.put_back_all_but_first()
                line = lines.record_done()
                if reread:
                    error += f" (a quote opened on line {line} is not closed on it)"
                    fields = None
                yield line, fields, error
                continue
            yield lines.record_done(), fields, ""


_RAW_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
    if chr(code) not in "\t\n\r"
}


def _raw(fields: list[str] | None) -> str:
    """The row as CSV text for the rejects file: undecodable bytes and control characters
    written as escapes (a NUL cannot be stored in Postgres text, nor read in a report)."""
    if fields is None:
        return ""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(fields)
    text = buffer.getvalue().rstrip("\r\n").encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_RAW_ESCAPES)


# --------------------------------------------------------------------------- row checks


class _RowError(ValueError):
    pass


def _text(
    value: str, column: str, *, limit: int, required: bool, display: bool = False
) -> str | None:
    """A text field, trimmed. ``display`` (names): line breaks become spaces and other
    controls reject the row; otherwise any control or line-breaking character rejects it."""
    if display:
        try:
            value = clean_text(value, column)
        except UnsafeText as error:
            raise _RowError(str(error)) from None
    else:
        value = value.strip()
        if (char := unsafe_char(value)) is not None:
            raise _RowError(f"{column} contains {describe(char)}")
    if not value:
        if required:
            raise _RowError(f"{column} is empty")
        return None
    if len(value) > limit:
        raise _RowError(f"{column} is longer than {limit} characters")
    return value


def _choice(value: str, column: str, allowed: type[Any], default: Any) -> str:
    value = value.strip().lower()
    if not value:
        return str(default.value)
    names = [member.value for member in allowed]
    if value not in names:
        raise _RowError(f"unknown {column} {value!r} (expected one of {', '.join(names)})")
    return value


def _attribute(value: str, column: str) -> bool | int | float | str | None:
    try:
        value = clean_text(value, column)
    except UnsafeText as error:
        raise _RowError(str(error)) from None
    if not value:
        return None
    lowered = value.lower()
    if lowered in {"true", "yes"}:
        return True
    if lowered in {"false", "no"}:
        return False
    if _INTEGER.match(value):
        return int(value)
    if _DECIMAL.match(value):
        return float(value)
    return value


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _account_row(line: int, fields: list[str], header: _Header) -> dict[str, Any]:
    values = dict(zip(header.columns, fields, strict=True))
    state = _choice(
        values.get("migration_state", ""),
        "migration_state",
        MigrationState,
        MigrationState.NOT_STARTED,
    )
    migrated_on: date | None = None
    if raw_date := values.get("migrated_on", "").strip():
        try:
            migrated_on = date.fromisoformat(raw_date)
        except ValueError:
            raise _RowError(f"migrated_on {raw_date!r} is not a date (YYYY-MM-DD)") from None
    if state == MigrationState.MIGRATED and migrated_on is None:
        raise _RowError("migration_state is migrated but migrated_on is empty")
    if state != MigrationState.MIGRATED and migrated_on is not None:
        raise _RowError(f"migrated_on is set but migration_state is {state}")
    attributes = {
        key: parsed
        for index, key in sorted(header.attributes.items(), key=lambda item: item[1])
        if (parsed := _attribute(fields[index], f"{ATTRIBUTE_PREFIX}{key}")) is not None
    }
    return {
        "line": line,
        "external_id": _text(values["external_id"], "external_id", limit=100, required=True),
        "name": _text(values["name"], "name", limit=300, required=True, display=True),
        "tier": (_text(values["tier"], "tier", limit=50, required=True) or "").lower(),
        "region": (_text(values["region"], "region", limit=50, required=True) or "").lower(),
        "industry": (
            _text(values.get("industry", ""), "industry", limit=100, required=False) or ""
        ).lower()
        or None,
        "lifecycle": _choice(
            values.get("lifecycle", ""), "lifecycle", AccountLifecycle, AccountLifecycle.ACTIVE
        ),
        "crm_migration_state": state,
        "crm_migrated_on": migrated_on,
        "attributes": attributes,
    }


def normalize_email(value: str) -> str:
    """The canonical form of an e-mail address (see :func:`herald.addresses.canonical_email`),
    or ValueError (BadAddress) saying why there is none."""
    return canonical_email(value)


def _contact_row(line: int, fields: list[str], header: _Header) -> dict[str, Any]:
    values = dict(zip(header.columns, fields, strict=True))
    raw_email = values["email"].strip()
    if not raw_email:
        raise _RowError("email is empty")
    try:
        email = canonical_email(raw_email)
    except BadAddress as error:
        shown = (
            raw_email.encode("unicode_escape").decode("ascii")
            if unsafe_char(raw_email)
            else raw_email
        )
        raise _RowError(f"invalid e-mail {shown!r}: {error}") from None
    timezone = values.get("timezone", "").strip() or None
    if timezone is not None and timezone not in _timezones():
        raise _RowError(f"unknown timezone {timezone!r} (expected an IANA name like Europe/Paris)")
    locale = "en"
    if raw_locale := values.get("locale", "").strip():
        match = _LOCALE.match(raw_locale)
        if not match:
            raise _RowError(f"locale {raw_locale!r} is not a language tag like en or pt-BR")
        language, region = match.groups()
        locale = language.lower() + (f"-{region.upper()}" if region else "")
    return {
        "line": line,
        "account_external_id": _text(
            values["account_external_id"], "account_external_id", limit=100, required=True
        ),
        "email": email,
        "name": _text(values.get("name", ""), "name", limit=300, required=False, display=True),
        "role": _choice(values.get("role", ""), "role", ContactRole, ContactRole.OTHER),
        "timezone": timezone,
        "locale": locale,
    }


# --------------------------------------------------------------------------- the import


@dataclass(frozen=True)
class _Kind:
    """How one kind of customer file is checked, staged and upserted."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    attributes_allowed: bool
    check: Callable[[int, list[str], _Header], dict[str, Any]]
    target: Table
    key: str
    columns: tuple[str, ...]


ACCOUNTS = _Kind(
    name="accounts",
    required=ACCOUNT_REQUIRED,
    optional=ACCOUNT_OPTIONAL,
    attributes_allowed=True,
    check=_account_row,
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
    name="contacts",
    required=CONTACT_REQUIRED,
    optional=CONTACT_OPTIONAL,
    attributes_allowed=False,
    check=_contact_row,
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
    progress: ProgressCallback | None = None,
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
    headers = {
        kind.name: _read_header(
            path, kind.required, kind.optional, attributes_allowed=kind.attributes_allowed
        )
        for kind, path in files
    }
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
                path,
                headers[kind.name],
                kind.check,
                stage,
                stage_rejects,
                result,
                chunk_rows,
                progress,
            )
            if kind is CONTACTS:
                _resolve_accounts(conn, stage, stage_rejects, result)
            _reject_duplicates(conn, stage, stage_rejects, result, kind.key)
            _upsert(conn, kind.target, stage, kind.key, list(kind.columns), result)
        rejects_path, first = _write_rejects(conn, stage_rejects, rejects_dir, keep_rejects)
        meta.drop_all(conn)
    return ImportResult(
        accounts=results["accounts"],
        contacts=results["contacts"],
        rejects_path=rejects_path,
        first_rejects=first,
    )


def _stage(
    conn: Connection,
    path: Path,
    header: _Header,
    check: Callable[[int, list[str], _Header], dict[str, Any]],
    stage: Table,
    rejects: Table,
    result: FileResult,
    chunk_rows: int,
    progress: ProgressCallback | None,
) -> None:
    good: list[dict[str, Any]] = []
    bad: list[dict[str, Any]] = []
    name = str(path)
    for line, fields, error in _rows(path, header, progress):
        result.rows += 1
        raw = _raw(fields)
        if not error and fields is not None:
            if any(_SURROGATE.search(value) for value in fields):
                error = "not valid UTF-8 (the file must be UTF-8, with or without BOM)"
            else:
                try:
                    row = check(line, fields, header)
                except _RowError as problem:
                    error = str(problem)
                else:
                    row["raw"] = raw
                    good.append(row)
        if error:
            bad.append(
                {"part": result.part, "file": name, "line": line, "reason": error, "raw": raw}
            )
        if len(good) >= chunk_rows:
            _bulk_insert(conn, stage, good)
            good.clear()
        if len(bad) >= chunk_rows:
            conn.execute(insert(rejects), bad)
            bad.clear()
    if good:
        _bulk_insert(conn, stage, good)
    if bad:
        conn.execute(insert(rejects), bad)
    result.rejected += conn.execute(select(func.count()).where(rejects.c.file == name)).scalar_one()


def _bulk_insert(conn: Connection, stage: Table, rows: list[dict[str, Any]]) -> None:
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
    conn: Connection, stage: Table, rejects: Table, result: FileResult, key: str
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
    conn: Connection, target: Table, stage: Table, key: str, columns: list[str], result: FileResult
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
    conn: Connection, rejects: Table, directory: Path, keep: int
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
