"""The database: one engine per URL, SQLite tuned for bulk work, schema through Alembic."""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from functools import cache
from itertools import pairwise
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    create_engine,
    event,
    func,
    select,
    text,
)
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement

if TYPE_CHECKING:
    from alembic.config import Config

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration (tests/test_migrations.py keeps it equal to Alembic's head): a
# database already there is used as it is, without loading Alembic and every migration.
HEAD = "0017"


@cache
def get_engine(url: str) -> Engine:
    """The process-wide engine for ``url`` (SQLite gets WAL, foreign keys and a busy timeout)."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        if parsed.database and parsed.database != ":memory:":
            Path(parsed.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"timeout": 30})
        event.listen(engine, "connect", _sqlite_pragmas)
        return engine
    return create_engine(url, pool_pre_ping=True)


def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
    cursor = dbapi_connection.cursor()
    # WAL lets readers (the report, a preview) run while a flow writes.
    cursor.execute("PRAGMA journal_mode=WAL")
    cursor.execute("PRAGMA synchronous=NORMAL")
    cursor.execute("PRAGMA foreign_keys=ON")
    cursor.execute("PRAGMA busy_timeout=30000")
    cursor.close()


# How many parts a bulk computation is split into to run side by side (each on a connection
# of its own; the database works without Python's GIL): one per core this process may use,
# at most 4.
SIDE_BY_SIDE = max(1, min(4, len(os.sched_getaffinity(0))))

# Below and above every integer key: the first and last bound of :func:`id_spans`.
_LOWEST, _HIGHEST = -(2**63), 2**63 - 1


def id_spans(
    conn: Connection, key: ColumnElement[int], count: int, *, at_least: int = 0
) -> list[tuple[int, int]]:
    """Up to ``count`` spans (first, last) of the integer ``key``'s values that cover every
    value it has now, each holding about as many rows (fewer spans when there are fewer
    rows); one span of every value when the table has fewer than ``at_least`` rows (or
    none). The spans end at the lowest and highest value (a bound the key's type holds)."""
    if count < 2:
        return [(_LOWEST, _HIGHEST)]
    total, lowest, highest = conn.execute(
        select(func.count(key), func.min(key), func.max(key))
    ).one()
    if total == 0 or total < at_least:
        return [(_LOWEST, _HIGHEST)]
    offsets = sorted({total * k // count for k in range(1, count)} - {0})
    starts = [
        conn.execute(select(key).order_by(key).offset(offset).limit(1)).scalar_one()
        for offset in offsets
    ]
    bounds = [lowest, *starts, highest + 1]
    return [(low, high - 1) for low, high in pairwise(bounds)]


@contextmanager
def shared_snapshot(engine: Engine, count: int) -> Iterator[list[Connection]]:
    """``count`` connections to a SQLite database, each in a read transaction that sees the
    same snapshot of it, rolled back at the end (to be used by one thread each).

    In WAL mode a read transaction sees the database as of its first read. The snapshots
    are taken while another connection holds the write lock (``BEGIN IMMEDIATE``), so that
    no writer commits between the first and the last; the lock is let go at once. Without
    WAL (an in-memory database), one connection."""
    with ExitStack() as stack:
        conns = [stack.enter_context(engine.connect())]
        mode = conns[0].exec_driver_sql("PRAGMA journal_mode").scalar()
        if count > 1 and str(mode).lower() == "wal":
            conns += [stack.enter_context(engine.connect()) for _ in range(count - 1)]
            with engine.connect() as gate:
                gate.exec_driver_sql("BEGIN IMMEDIATE")
                try:
                    _begin_reading(conns)
                finally:
                    gate.exec_driver_sql("ROLLBACK")
        else:
            _begin_reading(conns)
        try:
            yield conns
        finally:
            for conn in conns:
                conn.rollback()


def _begin_reading(conns: list[Connection]) -> None:
    """Each connection in a read transaction, its snapshot taken (by a first read)."""
    for conn in conns:
        conn.exec_driver_sql("BEGIN")
        conn.exec_driver_sql("SELECT count(*) FROM sqlite_master").scalar()


def alembic_config(url: str) -> Config:
    """An Alembic config for ``url`` that needs no alembic.ini on disk."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    # ConfigParser interpolation would read '%' in a password as a directive.
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def upgrade(url: str, revision: str = "head") -> None:
    """Bring the schema at ``url`` up to ``revision`` (idempotent)."""
    from alembic import command

    command.upgrade(alembic_config(url), revision)


def downgrade(url: str, revision: str) -> None:
    """Take the schema at ``url`` down to ``revision``."""
    from alembic import command

    command.downgrade(alembic_config(url), revision)


def dialect_insert(dialect_name: str) -> Any:
    """The dialect's ``insert`` construct, which has ON CONFLICT (``on_conflict_do_*``)."""
    if dialect_name == "postgresql":
        from sqlalchemy.dialects.postgresql import insert as pg_insert

        return pg_insert
    if dialect_name == "sqlite":
        from sqlalchemy.dialects.sqlite import insert as sqlite_insert

        return sqlite_insert
    raise NotImplementedError(f"Herald supports SQLite and PostgreSQL, not {dialect_name}")


# A statement that changes this many ledger rows refreshes the planner's statistics after it.
BULK_ROWS = 10_000


class stored(FunctionElement[Any]):
    """A column as its values are stored, to compare them with a value of the same kind: on
    SQLite without the affinity of its declared type (``+column``), elsewhere the column.

    SQLite gives a DATE or DATETIME column NUMERIC affinity, and a comparison of such a
    column with a text value (Herald's times are stored as ISO text) applies it to that
    value on every row compared: an attempt to read it as a number, which fails, and the
    two are compared as text. Without the affinity they are compared as text at once, with
    the same result for every row (NULL included). Measured with callgrind at 1M events,
    the metrics' per-delivery stage makes seven such comparisons a row: 6% of its
    instructions went to those attempts (``sqlite3AtoF``). On SQLite the comparison then
    uses no index of the column: for the rows a query reads anyway, not for a look-up."""

    inherit_cache = True
    name = "stored"

    def __init__(self, column: ColumnElement[Any]) -> None:
        super().__init__(column)
        self.type = column.type  # bound and read as the column is (SQLite: text to datetime)


@compiles(stored)
def _stored(element: stored, compiler: SQLCompiler, **kw: Any) -> str:
    return compiler.process(element.clauses, **kw)


@compiles(stored, "sqlite")
def _stored_sqlite(element: stored, compiler: SQLCompiler, **kw: Any) -> str:
    return "+" + compiler.process(element.clauses, **kw)


def refresh_statistics(bind: Engine | Connection, changed: int, *tables: str) -> bool:
    """ANALYZE ``tables`` on Postgres when ``changed`` rows (at least ``BULK_ROWS``) were just
    written to them; nothing on SQLite, whose planner keeps no value statistics. True when it
    analyzed. ``bind`` is the connection of the transaction that wrote them, or an engine (a
    transaction of its own is then opened only to analyze).

    Autovacuum analyzes a table a minute or more after a bulk write, and until then the
    planner plans every query with the old distribution. After a plan (every row
    ``planned``) or a send (every row ``accepted``), that turned each query looking for the
    few rows in the other state into a scan of the whole ledger: a finished 1M phase's rerun
    claimed nothing in 0.46 s, and settled nothing in three statements of 0.15 s each.
    """
    if changed < BULK_ROWS or bind.dialect.name != "postgresql":
        return False
    statement = f"ANALYZE {', '.join(tables)}"
    if isinstance(bind, Connection):
        bind.exec_driver_sql(statement)
    else:
        with bind.begin() as conn:
            conn.exec_driver_sql(statement)
    return True


_migrated: set[str] = set()
_migrating = threading.Lock()


def prepare_database(url: str) -> Engine:
    """The engine of the database at ``url``, migrated to the current schema the first time
    this process asks for it, and never again: a schema change lands before a process's
    work, never in the middle of a send (and costs one Alembic run per process, not one per
    call)."""
    with _migrating:
        if url not in _migrated:
            if _revision(url) != HEAD:
                upgrade(url)
            _migrated.add(url)
    return get_engine(url)


def _revision(url: str) -> str | None:
    """The schema revision the database at ``url`` is at (None: none yet, or unreadable)."""
    try:
        with get_engine(url).connect() as conn:
            found = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError:
        return None
    return str(found) if found is not None else None
