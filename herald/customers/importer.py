"""Customer import: accounts and contacts from CSV, upserted idempotently, bad rows rejected.

The files are streamed in blocks of lines (:meth:`herald.tabular.CsvReader.blocks`): a run
of lines without a quote is split at its commas and checked in bulk
(:class:`herald.customers.rows.PlainChecks`), anything else record by record with the full
checks, which word every reason. The good rows are staged in chunks into a temporary table
through the driver (``COPY`` on Postgres, one prepared INSERT on SQLite), as the values
only: a row's text is read again from the file only if SQL rejects it. Checks that need
the whole file or the database (duplicates, unknown accounts) then run as SQL over the
staging table, and one ``INSERT ... SELECT ... ON CONFLICT DO UPDATE`` per table upserts
what is left, touching only rows whose values changed. Every rejected row goes to the
rejects file with its file, line and reason. The whole import is one transaction: it lands
completely or not at all. The contacts file is read and checked ahead, in a second thread,
while the connection runs the accounts' duplicate check and upsert (:class:`_Spool`); the
duplicate check itself runs only where the staged keys' hashes say a key may be repeated
(:class:`_Keys`). On Postgres, a first load (an empty table) is a plain insert without the
table's secondary indexes, unique constraints and foreign keys, which are made again, built
and validated, before the commit (:func:`_first_load`).

**Unchanged rows.** Each account and contact keeps ``import_digest``, a 64-bit digest of
the CSV line that last wrote it (BLAKE2b salted with the file's header and
:data:`CHECKS_VERSION`). A line whose digest is a stored row's is that row exactly as last
imported, so it is neither checked nor staged: it counts as unchanged. It still takes part
in the duplicate check: a line that is a stored row's twice in the file, or whose row's key
another line of the file also has, is read again in a second pass and goes through the
checks like any other, so the duplicates are rejected as before. A line that is new or
changed is checked, staged and upserted, and its row takes its digest (also when its values
turn out equal). The risk of 64 bits: a changed line is taken for unchanged only if its
digest equals one of the N stored ones, N / 2**64 per line (5e-14 with a million rows;
a whole file of a million changed lines, 5e-8).

Which source wins an account's migration state: telemetry. A re-import records the CRM's
state in ``crm_migration_state`` / ``crm_migrated_on`` and changes ``migration_state`` only
for accounts whose state no adoption telemetry has set (``migration_source`` says which).
"""

from __future__ import annotations

import csv
import gc
import hashlib
import json
import pickle
import sys
import tempfile
from array import array
from bisect import bisect_left
from collections.abc import Generator, Iterable, Iterator, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from threading import Event
from typing import Any, Protocol

from sqlalchemy import (
    JSON,
    BigInteger,
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
    exists,
    func,
    insert,
    literal,
    null,
    or_,
    select,
    text,
    true,
    update,
)
from sqlalchemy.dialects.postgresql import JSONB

from herald.customers.rows import (
    ACCOUNT_FILE,
    CONTACT_FILE,
    CheckedRow,
    CustomerFile,
    Header,
    PlainChecks,
    PlainRow,
    check_record,
    plain_fields,
    raw_record,
    read_header,
    records,
    staged_row,
)
from herald.db import dialect_insert
from herald.models import ACCOUNT, CONTACT, MigrationSource, utcnow
from herald.tabular import (
    ByteCounter,
    CsvReader,
    CsvRecord,
    PlainLines,
    open_text,
    without_ending,
)


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
        Column("digest", BigInteger),
        Column("external_id", String(100), nullable=False),
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
        Column("digest", BigInteger),
        Column("account_external_id", String(100), nullable=False),
        Column("email", String(320), nullable=False),
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
        Column("raw", Text),  # NULL: the line's, read again when the rejects are written
        prefixes=temporary,
    )
    return accounts, contacts, rejects


# --------------------------------------------------------------------------- the import

# Part of every row digest: a release that changes what a row's values are (a check, a
# normalisation, a column) changes this, and the next import then compares every row in full.
CHECKS_VERSION = "herald-import-1"


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
    for kind, path in files:
        results[kind.name].file = str(path)
    stage_accounts, stage_contacts, stage_rejects = _staging_tables()
    stages = {"accounts": stage_accounts, "contacts": stage_contacts}
    meta = stage_rejects.metadata
    read = {
        results[kind.name].part: _File(
            path=path, header=headers[kind.name], kind=kind, stage=stages[kind.name]
        )
        for kind, path in files
    }
    with (
        engine.begin() as conn,
        _bulk_work(conn),
        ThreadPoolExecutor(1, thread_name_prefix="herald-import") as ahead,
    ):
        # Counts of inserted/updated/rejected rows come from rowcount, which SQLAlchemy only
        # keeps for INSERT when asked.
        conn.execution_options(preserve_rowcount=True)
        # SQLite runs DDL outside the transaction: a failed import may have left these behind.
        meta.drop_all(conn)
        meta.create_all(conn)
        stored = {part: _StoredDigests.load(conn, file.kind.target) for part, file in read.items()}
        stop = Event()
        spooled: dict[int, Future[_Spool]] = {}
        try:
            for index, (part, file) in enumerate(read.items()):
                result = results[file.kind.name]
                tables = _Tables(conn, stage=file.stage, rejects=stage_rejects)
                if part in spooled:
                    spooled[part].result().drain(tables)
                else:
                    _stage(
                        tables,
                        file=file,
                        stored=stored[part],
                        result=result,
                        chunk_rows=chunk_rows,
                        progress=progress,
                    )
                if index == 0:
                    # The contacts are read and checked ahead, into a spool, while the
                    # connection runs the accounts' long statements (the duplicate check,
                    # the upsert), each of which leaves the interpreter to this thread. Not
                    # sooner: beside the staging's many short calls into the driver, each
                    # of those calls would wait for the interpreter.
                    spooled = {
                        later: ahead.submit(
                            _stage_ahead,
                            ahead_file,
                            stored=stored[later],
                            result=results[ahead_file.kind.name],
                            chunk_rows=chunk_rows,
                            progress=progress,
                            stop=stop,
                        )
                        for later, ahead_file in list(read.items())[1:]
                    }
                _write_file(
                    conn,
                    file=file,
                    stored=stored[part],
                    rejects=stage_rejects,
                    result=result,
                    chunk_rows=chunk_rows,
                )
        finally:
            stop.set()
            for future in spooled.values():  # a spool left if the import failed before it
                if not future.cancel() and future.exception() is None:
                    future.result().close()  # (a drained one is closed already)
        rejects_path, first = _write_rejects(
            conn, rejects=stage_rejects, files=read, directory=rejects_dir, keep=keep_rejects
        )
        meta.drop_all(conn)
    return ImportResult(
        accounts=results["accounts"],
        contacts=results["contacts"],
        rejects_path=rejects_path,
        first_rejects=first,
    )


def _write_file(
    conn: Connection,
    *,
    file: _File,
    stored: _StoredDigests,
    rejects: Table,
    result: FileResult,
    chunk_rows: int,
) -> None:
    """One staged file: checked against itself and the database, upserted."""
    kind, stage = file.kind, file.stage
    if kind is CONTACTS:
        _resolve_accounts(conn, stage, rejects, result)
    if stored.skipped:
        _stage_again(
            conn, file=file, stored=stored, rejects=rejects, result=result, chunk_rows=chunk_rows
        )
        if kind is CONTACTS:
            _resolve_accounts(conn, stage, rejects, result)
    if file.keys.maybe_repeated:
        _reject_duplicates(conn, stage=stage, rejects=rejects, result=result, key=kind.key)
    _upsert(
        conn,
        target=kind.target,
        stage=stage,
        key=kind.key,
        columns=list(kind.columns),
        result=result,
    )
    result.unchanged += stored.skipped


def _stage_ahead(
    file: _File,
    *,
    stored: _StoredDigests,
    result: FileResult,
    chunk_rows: int,
    progress: ByteCounter | None,
    stop: Event,
) -> _Spool:
    """A file's first staging pass into a spool, off the import's thread."""
    spool = _Spool()
    try:
        _stage(
            spool,
            file=file,
            stored=stored,
            result=result,
            chunk_rows=chunk_rows,
            progress=progress,
            stop=stop,
        )
    except BaseException:
        spool.close()
        raise
    return spool


# SQLite's page cache for the import's connection, in KiB (the default is 2 MB): the
# upserts maintain indexes of million-row tables, which a small cache reads again and
# again (1M + 1M rows: 28.7 s with 2 MB, 19.0 s with 32 MB, no better with 128 MB). Pages
# are taken only as needed, and the size is put back when the import ends.
SQLITE_CACHE_KIB = 65_536


@contextmanager
def _bulk_work(conn: Connection) -> Iterator[None]:
    """While the import runs: a larger SQLite page cache on its connection (the staging
    tables' temporary database gained nothing from one), and no cyclic garbage collection:
    the import makes millions of small containers (fields, staged rows) and no cycles, and
    each collection would walk every live object of the process (16% of the import's time
    at 200k + 200k rows). Both are put back after."""
    sqlite = conn.dialect.name == "sqlite"
    caches: dict[str, int] = {}
    if sqlite:
        caches["main"] = conn.exec_driver_sql("PRAGMA main.cache_size").scalar_one()
        conn.exec_driver_sql(f"PRAGMA main.cache_size = -{SQLITE_CACHE_KIB}")
    collecting = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if collecting:
            gc.enable()
        for schema, pages in caches.items():
            conn.exec_driver_sql(f"PRAGMA {schema}.cache_size = {pages:d}")


@dataclass(frozen=True)
class _File:
    """One customer file being imported: where it is, its header, what it holds, where it
    is staged, and the salt of each of its lines' digests."""

    path: Path
    header: Header
    kind: _Kind
    stage: Table
    salt: bytes = field(init=False, repr=False, compare=False)
    keys: _Keys = field(init=False, repr=False, compare=False)  # of the rows staged

    def __post_init__(self) -> None:
        object.__setattr__(self, "keys", _Keys(self.stage, self.kind.key))
        # The digest covers what makes a line's values: the checks' version, the kind of
        # file and its header (the columns' order and the attributes' keys as written).
        what = [CHECKS_VERSION, self.kind.name, self.header.columns, self.header.by_key]
        salt = hashlib.blake2b(json.dumps(what).encode(), digest_size=16).digest()
        object.__setattr__(self, "salt", salt)

    def digests(self, texts: Sequence[str]) -> array[int]:
        """The digests of records' texts (as in the file, without the final line ending):
        BLAKE2b-64 salted with the header, as signed little-endian 64-bit integers."""
        salt, blake2b = self.salt, hashlib.blake2b
        digests = array("q")
        digests.frombytes(
            b"".join(
                [
                    blake2b(
                        text.encode("utf-8", "surrogateescape"), digest_size=8, salt=salt
                    ).digest()
                    for text in texts
                ]
            )
        )
        if sys.byteorder == "big":
            digests.byteswap()
        return digests

    def blocks(self, progress: ByteCounter | None = None) -> Iterator[PlainLines | CsvRecord]:
        """The file's data records: runs of quote-free lines whole, other records one by one."""
        with open_text(self.path, on_bytes=progress) as handle:
            reader = CsvReader(handle, reread_failed=True)
            reader.header()  # checked already
            yield from reader.blocks(len(self.header.columns))


_first = itemgetter(0)


class _StoredDigests:
    """The digests stored in a table (sorted), and which of them this file's lines match.

    A match is looked up with one bisection over the few digests that share its top 16
    bits (a table of where each such range starts), not over a million."""

    _BUCKETS = 1 << 16

    def __init__(self, digests: array[int]) -> None:
        self._digests = digests
        self._first_line = array("q", bytes(8 * len(digests)))  # 0: no line matched yet
        self.again: set[int] = set()  # matched rows whose lines go through the checks after all
        self.skipped = 0  # lines matched and not (yet) read again
        self._starts = array(
            "q",
            [bisect_left(digests, (bucket << 48) - (1 << 63)) for bucket in range(self._BUCKETS)],
        )
        self._starts.append(len(digests))

    def __len__(self) -> int:
        return len(self._digests)

    @classmethod
    def load(cls, conn: Connection, target: Table) -> _StoredDigests:
        """The digests stored in ``target``, streamed in order through the driver (a million
        of them are 8 MB here, not a million objects)."""
        digests: array[int] = array("q")
        driver: Any = conn.connection.driver_connection
        # A named cursor is a server-side one on Postgres: the rows come in batches.
        named = {"name": "herald_import_digests"} if conn.dialect.name == "postgresql" else {}
        cursor = driver.cursor(**named)
        try:
            cursor.execute(
                f"SELECT import_digest FROM {target.name} "
                "WHERE import_digest IS NOT NULL ORDER BY import_digest"
            )
            while batch := cursor.fetchmany(50_000):
                digests.extend(map(_first, batch))
        finally:
            cursor.close()
        return cls(digests)

    def index(self, digest: int) -> int:
        """Where ``digest`` is among the stored digests, -1 if it is not."""
        bucket = (digest >> 48) + (1 << 15)
        end = self._starts[bucket + 1]
        at = bisect_left(self._digests, digest, self._starts[bucket], end)
        return at if at < end and self._digests[at] == digest else -1

    def unmatched(self, first: int, digests: Sequence[int]) -> list[int]:
        """Of consecutive lines (the first on line ``first``) with these digests, the
        positions of those that are not a stored row as last imported. The others are
        skipped; a second line of the same row marks the row to be read again."""
        left: list[int] = []
        stored, starts, first_line = self._digests, self._starts, self._first_line
        for position, digest in enumerate(digests):
            bucket = (digest >> 48) + 32768
            end = starts[bucket + 1]
            at = bisect_left(stored, digest, starts[bucket], end)
            if at == end or stored[at] != digest:
                left.append(position)
            elif first_line[at]:
                self.again.add(at)
                self.skipped += 1
            else:
                first_line[at] = first + position
                self.skipped += 1
        return left

    def matched(self, digest: int) -> int:
        """The index of a stored digest some line of the file matched, -1 if none did."""
        at = self.index(digest)
        return at if at >= 0 and self._first_line[at] else -1


def _stage(
    outlet: _Outlet,
    *,
    file: _File,
    stored: _StoredDigests,
    result: FileResult,
    chunk_rows: int,
    progress: ByteCounter | None,
    again: bool = False,
    stop: Event | None = None,
) -> None:
    """Stage the file's good rows and keep its rejected ones, a chunk at a time, through
    ``outlet``; lines that are stored rows as last imported are only counted
    (``stored.skipped``). ``stop``, once set, ends it (:class:`_Stopped`) at the next block.

    ``again``: the second pass, which reads, checks and stages only the skipped lines whose
    rows take part in a duplicate (``stored.again``)."""
    header, kind = file.header, file.kind.file
    width = len(header.columns)
    assert kind.plain is not None
    plain = kind.plain(header)
    with _Stager(outlet, file=file, result=result, chunk_rows=chunk_rows) as stager:
        for block in file.blocks(None if again else progress):
            if stop is not None and stop.is_set():
                raise _Stopped
            if isinstance(block, CsvRecord):
                _stage_record(
                    block, file=file, plain=plain, stored=stored, stager=stager, again=again
                )
                continue
            texts, first = block.texts, block.first
            digests = file.digests(texts)
            positions: Sequence[int]
            if again:
                wanted = stored.again
                positions = [at for at, d in enumerate(digests) if stored.index(d) in wanted]
                stored.skipped -= len(positions)
            elif stored:
                positions = stored.unmatched(first, digests)
            else:
                positions = range(len(texts))  # a first import: nothing to skip
            if len(positions) == len(texts) and plain_fields(",".join(texts)):
                rows: Iterable[PlainRow] = zip(
                    range(first, first + len(texts)),
                    digests,
                    map(str.split, texts, _commas),
                    strict=True,
                )
                odd: list[PlainRow] = []
            else:
                rows, odd = [], []
                for at in positions:
                    row = (first + at, digests[at], texts[at].split(","))
                    (rows if plain_fields(texts[at]) else odd).append(row)
            blank = plain.blank
            staged, full = plain(rows)
            stager.add_staged(staged)
            full.extend(odd)
            if full:
                for line, digest, fields in full:
                    record = _plain_record(line, texts[line - first], fields, width)
                    if record is None:
                        plain.blank += 1
                        continue
                    if again and record.failed:
                        continue
                    stager.add(check_record(record, header, kind), digest)
            if not again:
                result.rows += len(texts) - (plain.blank - blank)
    result.rejected += stager.rejected


_commas = repeat(",")


def _plain_record(line: int, text: str, fields: list[str], width: int) -> CsvRecord | None:
    """The record of a quote-free line (None for a blank one), as CsvReader reads it."""
    if len(fields) == 1 and not fields[0].strip():
        return None
    wrong = None if len(fields) == width else f"expected {width} fields, found {len(fields)}"
    return CsvRecord(line=line, lines=(text,), fields=fields, wrong_width=wrong)


def _stage_record(
    record: CsvRecord,
    *,
    file: _File,
    plain: PlainChecks,
    stored: _StoredDigests,
    stager: _Stager,
    again: bool,
) -> None:
    """One record the csv module read (a quote in it): skipped, staged or rejected."""
    header, kind = file.header, file.kind.file
    if not again:
        stager.result.rows += 1
    if record.failed or record.fields is None:
        if not again:
            stager.add(check_record(record, header, kind), None)
        return
    [digest] = file.digests([without_ending("".join(record.lines))])
    if again:
        if stored.index(digest) not in stored.again:
            return
        stored.skipped -= 1
    elif stored and not stored.unmatched(record.line, [digest]):
        return
    if plain_fields(",".join(record.fields)):
        staged, _ = plain([(record.line, digest, list(record.fields))])
        if staged:
            stager.add_staged(staged)
            return
    stager.add(check_record(record, header, kind), digest)


def _stage_again(
    conn: Connection,
    *,
    file: _File,
    stored: _StoredDigests,
    rejects: Table,
    result: FileResult,
    chunk_rows: int,
) -> None:
    """Read again, check and stage the skipped lines that take part in a duplicate: a row
    matched by two lines, or whose key a staged line also has."""
    stage, key = file.stage, file.kind.key
    target = file.kind.target
    rows = conn.execute(
        select(target.c.import_digest)
        .select_from(stage.join(target, target.c[key] == stage.c[key]))
        .where(target.c.import_digest.is_not(None)),
        execution_options={"yield_per": 50_000},
    )
    for digest in rows.scalars():
        if (at := stored.matched(digest)) >= 0:
            stored.again.add(at)
    if not stored.again:
        return
    # A line rejected now was good when last imported (a time zone gone from the system).
    _stage(
        _Tables(conn, stage=stage, rejects=rejects),
        file=file,
        stored=stored,
        result=result,
        chunk_rows=chunk_rows,
        progress=None,
        again=True,
    )


class _Outlet(Protocol):
    """Where staged rows and rejected ones go, a chunk at a time."""

    def good(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows the checks passed, as the staging table takes them."""

    def bad(self, rows: list[dict[str, Any]]) -> None:
        """Rejected rows, as the rejects table takes them."""


class _Tables:
    """The outlet into the staging and rejects tables, on the import's connection."""

    def __init__(self, conn: Connection, *, stage: Table, rejects: Table) -> None:
        self._conn, self._stage, self._rejects = conn, stage, rejects

    def good(self, rows: list[tuple[Any, ...]]) -> None:
        _bulk_insert(self._conn, stage=self._stage, rows=rows)

    def bad(self, rows: list[dict[str, Any]]) -> None:
        self._conn.execute(insert(self._rejects), rows)


class _Spool:
    """The outlet of a file staged while the connection is busy with another's work: its
    chunks are pickled into a temporary file (a million contacts: about 85 MB on disk, one
    chunk in memory) and written to the tables later (:meth:`drain`)."""

    def __init__(self) -> None:
        # Closed by drain() or close(), whichever comes first.
        self._file = tempfile.TemporaryFile(prefix="herald-import-")  # noqa: SIM115

    def good(self, rows: list[tuple[Any, ...]]) -> None:
        pickle.dump((True, rows), self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def bad(self, rows: list[dict[str, Any]]) -> None:
        pickle.dump((False, rows), self._file, protocol=pickle.HIGHEST_PROTOCOL)

    def drain(self, outlet: _Outlet) -> None:
        """Every chunk, in the order it came, into ``outlet``; the file is gone after."""
        with self._file as spooled:
            spooled.seek(0)
            while True:
                try:
                    good, rows = pickle.load(spooled)  # this process's own file
                except EOFError:
                    return
                (outlet.good if good else outlet.bad)(rows)

    def close(self) -> None:
        """Throw the chunks away."""
        self._file.close()


class _Stopped(Exception):
    """A file's staging ahead was told to stop: the import failed before it was needed."""


class _Keys:
    """Whether a file's staged rows may repeat a key, told from the rows as they are staged:
    the hashes of their keys (8 bytes a row). Fewer distinct hashes than rows staged: maybe
    (the SQL check then finds the rows, if any); as many: no key is there twice, and the
    SQL check, a grouping of the whole staging table (0.6 s for 1M contacts), is spared.
    Past :attr:`LIMIT` rows it stops keeping hashes and says maybe (counting the distinct
    ones takes a set of them for a moment, about 64 bytes each)."""

    LIMIT = 2_000_000

    def __init__(self, stage: Table, key: str) -> None:
        self._at = list(stage.columns).index(stage.c[key])
        self._hashes: array[int] | None = array("q")
        self._staged = 0

    def add(self, rows: list[tuple[Any, ...]]) -> None:
        """Staged rows, as the staging table takes them."""
        self._staged += len(rows)
        if self._hashes is None:
            return
        if self._staged > self.LIMIT:
            self._hashes = None
            return
        self._hashes.extend(map(hash, map(itemgetter(self._at), rows)))

    @property
    def maybe_repeated(self) -> bool:
        """Whether two staged rows may have the same key."""
        return self._hashes is None or len(set(self._hashes)) < self._staged


class _Stager:
    """Checked rows to the outlet, good (staged) or bad (rejected), in chunks."""

    def __init__(
        self, outlet: _Outlet, *, file: _File, result: FileResult, chunk_rows: int
    ) -> None:
        self._outlet, self._file = outlet, file
        self.result, self._chunk_rows = result, chunk_rows
        self._good: list[tuple[Any, ...]] = []
        self._bad: list[dict[str, Any]] = []
        self.rejected = 0

    def __enter__(self) -> _Stager:
        return self

    def __exit__(self, *exc: object) -> None:
        if exc[0] is None:
            self.flush()

    def add_staged(self, rows: list[tuple[Any, ...]]) -> None:
        """Rows the checks passed, as the staging table takes them."""
        self._good.extend(rows)
        if len(self._good) >= self._chunk_rows:
            self._flush_good()

    def add(self, row: CheckedRow, digest: int | None) -> None:
        """One row through the full check: staged, or rejected with its reason."""
        if row.values is not None:
            self.add_staged([staged_row(self._file.kind.name, row.values, digest)])
            return
        self.rejected += 1
        self._bad.append(
            {
                "part": self.result.part,
                "file": self.result.file,
                "line": row.line,
                "reason": row.reason,
                "raw": row.raw,
            }
        )
        if len(self._bad) >= self._chunk_rows:
            self._flush_bad()

    def flush(self) -> None:
        """Write what is pending."""
        self._flush_good()
        self._flush_bad()

    def _flush_good(self) -> None:
        if self._good:
            self._file.keys.add(self._good)
            self._outlet.good(self._good)
            self._good = []

    def _flush_bad(self) -> None:
        if self._bad:
            self._outlet.bad(self._bad)
            self._bad = []


def _bulk_insert(conn: Connection, *, stage: Table, rows: list[tuple[Any, ...]]) -> None:
    """Staged rows (every value as the table stores it: text, numbers, NULL) into the
    staging table through the driver: ``COPY`` on Postgres, one prepared INSERT run over
    every row on SQLite, without SQLAlchemy's work per row and per value."""
    columns = ", ".join(column.name for column in stage.columns)
    if conn.dialect.name != "postgresql":
        marks = ", ".join("?" * len(stage.columns))
        conn.exec_driver_sql(f"INSERT INTO {stage.name} ({columns}) VALUES ({marks})", rows)
        return
    # COPY is Postgres's bulk path: several times faster than a multi-row INSERT.
    driver = conn.connection.driver_connection
    assert driver is not None
    with (
        driver.cursor() as cursor,
        cursor.copy(f"COPY {stage.name} ({columns}) FROM STDIN") as copy,
    ):
        write = copy.write_row
        for row in rows:
            write(row)


def _reject_duplicates(
    conn: Connection, *, stage: Table, rejects: Table, result: FileResult, key: str
) -> None:
    """Reject every row whose key appears more than once in the file: the file contradicts
    itself, so none of them is imported (the stored row, if any, stays as it was). Run only
    where the staged rows' hashes say a key may be repeated (:class:`_Keys`)."""
    by_key = stage.c[key]
    # Hashes can collide: one pass over the key's values says whether any is repeated.
    twice = select(by_key).group_by(by_key).having(func.count() > 1).limit(1)
    if conn.execute(twice).first() is None:
        return
    counted = select(
        stage.c.line,
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
        null(),
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
    """Reject contacts of accounts Herald does not know (the upsert looks up the others)."""
    unknown = ~exists().where(ACCOUNT.c.external_id == stage.c.account_external_id)
    rejected = select(
        literal(result.part),
        literal(result.file),
        stage.c.line,
        literal("unknown account ") + stage.c.account_external_id,
        null(),
    ).where(unknown)
    added = conn.execute(
        insert(rejects).from_select(["part", "file", "line", "reason", "raw"], rejected)
    ).rowcount
    if added:
        conn.execute(delete(stage).where(unknown))
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
    if not staged:
        return
    with _first_load(conn, target) as first:
        existing = 0
        if not first:
            existing = conn.execute(
                select(func.count()).select_from(stage.join(target, target.c[key] == stage.c[key]))
            ).scalar_one()
        statement = _load(
            conn.dialect.name, target=target, stage=stage, key=key, columns=columns, first=first
        )
        written = conn.execute(statement).rowcount
    result.inserted = staged - existing
    result.updated = written - result.inserted
    result.unchanged = existing - result.updated
    if result.unchanged:
        # Rows whose values the file repeats under another line (its header or its text
        # changed, not its values) take that line's digest, so the next import skips it.
        conn.execute(
            update(target)
            .where(
                target.c[key] == stage.c[key],
                target.c.import_digest.is_distinct_from(stage.c.digest),
            )
            .values(import_digest=stage.c.digest)
        )


def _load(
    dialect: str, *, target: Table, stage: Table, key: str, columns: list[str], first: bool
) -> Any:
    """The ``INSERT ... SELECT`` of the staged rows into ``target``: a plain one on a
    first load (:func:`_first_load`), else an upsert that updates only rows whose values
    changed."""
    now = utcnow()
    timestamp = target.c.updated_at.type
    # An account's migration state starts as the CRM's (see _migration_state for updates).
    derived = {"migration_state": "crm_migration_state", "migrated_on": "crm_migrated_on"}
    if target is not ACCOUNT:
        derived = {}
    source = select(
        *(stage.c[c] if c != "account_id" else ACCOUNT.c.id for c in columns),
        *(stage.c[c] for c in derived.values()),
        stage.c.digest,
        literal(now, timestamp),
        literal(now, timestamp),
    ).where(true())  # SQLite needs a WHERE to tell "SELECT ... ON CONFLICT" apart from a join
    if target is CONTACT:  # each contact's account (every staged one is known by now)
        source = source.select_from(
            stage.join(ACCOUNT, ACCOUNT.c.external_id == stage.c.account_external_id)
        )
    into = [*columns, *derived, "import_digest", "created_at", "updated_at"]
    if first:  # no index to keep up but the primary key: the rows in any order
        return insert(target).from_select(into, source)
    if dialect == "postgresql":
        # In key order, the unique index takes each new key after the last (1M contacts:
        # 22 s instead of 31 s with the keys in file order, random in its index). SQLite,
        # whose page cache holds that index, only pays for the sort (2.6 s against 6.7 s).
        source = source.order_by(stage.c[key])
    statement = dialect_insert(dialect)(target).from_select(into, source)
    changed = or_(
        *(target.c[c].is_distinct_from(statement.excluded[c]) for c in columns if c != key)
    )
    updates: dict[str, Any] = {c: statement.excluded[c] for c in columns if c != key}
    if derived:
        states, changed_state = _migration_state(statement)
        updates.update(states)
        changed = or_(changed, changed_state)
    return statement.on_conflict_do_update(
        index_elements=[key],
        set_={**updates, "import_digest": statement.excluded.import_digest, "updated_at": now},
        where=changed,
    )


@dataclass(frozen=True)
class _Deferred:
    """What a first load takes off a table and puts back after it: how to drop it, how to
    make it again."""

    drop: str
    make: str


@contextmanager
def _first_load(conn: Connection, target: Table) -> Iterator[bool]:
    """On Postgres, while ``target`` is first loaded (empty, and owned by this role): its
    secondary indexes, unique constraints and foreign keys dropped for the load and made
    again after it, each built or validated in one pass. Yields whether it is such a load:
    then nothing can conflict (the table is empty, the staged keys are unique), and the
    load is a plain ``INSERT ... SELECT``.

    This is the load the PostgreSQL manual recommends ("Populating a Database"). Kept up row
    by row, the indexes of 1M new accounts cost 13 s of an 18 s insert on this machine
    (against 3.8 s to build them after it), and the foreign key of 1M new contacts took 9.2 s
    of a 17.5 s upsert (a key-share lock on every account row, one SPI query each), where
    one anti-join checks them all in 0.8 s. Only for a first load: dropping an index locks
    the table against every reader until the import commits, which an empty table's readers
    (none can find a contact in it) do not mind, and which a table in use would. The table
    is locked (``ACCESS EXCLUSIVE``) before it is found empty, so no row can come in
    between; the tables its keys refer to are locked against writes (``SHARE ROW
    EXCLUSIVE``, as adding a key back would), so none of their rows can go before the
    check. The primary key stays, and so does a unique constraint another table's key
    refers to. All of it is inside the import's transaction: an import that fails leaves
    the table as it was. Elsewhere (SQLite, a table with rows, a role that does not own
    it) the load is an upsert with every index and key in place.
    """
    has_rows = select(exists().select_from(target))
    if conn.dialect.name != "postgresql" or conn.execute(has_rows).scalar():
        yield False
        return
    preparer = conn.dialect.identifier_preparer
    table = preparer.quote(target.name)
    owned = conn.execute(
        text(
            "SELECT pg_has_role(current_user, relowner, 'USAGE') FROM pg_class"
            " WHERE oid = CAST(:table AS regclass)"
        ),
        {"table": target.name},
    ).scalar()
    if not owned:
        yield False
        return
    conn.exec_driver_sql(f"LOCK TABLE {table} IN ACCESS EXCLUSIVE MODE")
    if conn.execute(has_rows).scalar():  # rows came in before the lock
        yield False
        return
    referenced = conn.execute(
        text(
            "SELECT DISTINCT confrelid::regclass::text FROM pg_constraint"
            " WHERE conrelid = CAST(:table AS regclass) AND contype = 'f'"
        ),
        {"table": target.name},
    ).scalars()
    for other in sorted(referenced):
        conn.exec_driver_sql(f"LOCK TABLE {other} IN SHARE ROW EXCLUSIVE MODE")
    deferred = _deferred(conn, target.name)
    for item in deferred:
        conn.exec_driver_sql(item.drop)
    yield True
    # Index builds sort in memory up to this, on disk beyond (the server's default: 64 MB).
    conn.exec_driver_sql(f"SET LOCAL maintenance_work_mem = '{FIRST_LOAD_SORT_MEMORY}'")
    for item in reversed(deferred):
        conn.exec_driver_sql(item.make)


# maintenance_work_mem while a first load builds its indexes again (one at a time): 1M
# e-mail addresses sort in memory in it.
FIRST_LOAD_SORT_MEMORY = "256MB"


def _deferred(conn: Connection, table: str) -> list[_Deferred]:
    """What a first load of ``table`` drops, in the order it drops them: its foreign keys,
    its unique constraints no other table's key refers to, then its indexes that back no
    constraint (the primary key stays)."""
    quote = conn.dialect.identifier_preparer.quote
    on = f"ALTER TABLE {quote(table)}"
    constraints = conn.execute(
        text(
            "SELECT c.conname, pg_get_constraintdef(c.oid) FROM pg_constraint c"
            " WHERE c.conrelid = CAST(:table AS regclass) AND (c.contype = 'f'"
            "  OR (c.contype = 'u' AND NOT EXISTS (SELECT 1 FROM pg_constraint r"
            "   WHERE r.contype = 'f' AND r.conindid = c.conindid)))"
            " ORDER BY c.contype = 'u', c.conname"
        ),
        {"table": table},
    ).all()
    indexes = conn.execute(
        text(
            "SELECT x.indexrelid::regclass::text, pg_get_indexdef(x.indexrelid) FROM pg_index x"
            " WHERE x.indrelid = CAST(:table AS regclass) AND NOT EXISTS"
            " (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)"
            " ORDER BY 1"
        ),
        {"table": table},
    ).all()
    return [
        *(
            _Deferred(
                f"{on} DROP CONSTRAINT {quote(name)}",
                f"{on} ADD CONSTRAINT {quote(name)} {definition}",
            )
            for name, definition in constraints
        ),
        *(_Deferred(f"DROP INDEX {name}", definition) for name, definition in indexes),
    ]


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
    conn: Connection, *, rejects: Table, files: dict[int, _File], directory: Path, keep: int
) -> tuple[Path | None, list[Reject]]:
    """The rejects file, in file and line order; a reject without its text (one the SQL
    steps found: a duplicate, an unknown account) takes its record's, read again."""
    total = conn.execute(select(func.count()).select_from(rejects)).scalar_one()
    if not total:
        return None, []
    directory.mkdir(parents=True, exist_ok=True)
    path = directory / f"rejects-{utcnow():%Y%m%dT%H%M%S%fZ}.csv"
    first: list[Reject] = []
    rows = conn.execute(
        select(rejects.c.part, rejects.c.file, rejects.c.line, rejects.c.reason, rejects.c.raw)
        .order_by(rejects.c.part, rejects.c.line)
        .execution_options(yield_per=10_000)  # streamed: a million rejects stay on disk
    )
    reading: dict[int, Generator[CsvRecord, None, None]] = {}
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["file", "line", "reason", "row"])
        for part, file, line, reason, raw in rows:
            if raw is None:
                if part not in reading:
                    reading[part] = records(files[part].path, files[part].header)
                raw = next(raw_record(record) for record in reading[part] if record.line == line)
            writer.writerow([file, line, reason, raw])
            if len(first) < keep:
                first.append(Reject(file=file, line=line, reason=reason, raw=raw))
    for left in reading.values():
        left.close()
    return path, first
