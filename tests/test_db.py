"""herald.db's SQL helpers, on both databases."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import (
    Column,
    Date,
    DateTime,
    Integer,
    MetaData,
    Table,
    func,
    insert,
    select,
)

from herald.db import get_engine, shared_snapshot, stored
from tests.support.environment import Database

_META = MetaData()
MOMENTS = Table(
    "herald_test_moments",
    _META,
    Column("id", Integer, primary_key=True, autoincrement=False),
    Column("at", DateTime(timezone=True)),
    Column("day", Date),
)
CUTOFF = datetime(2027, 4, 12, tzinfo=UTC)


@pytest.fixture
def moments(db: Database) -> Iterator[Database]:
    """Rows on both sides of CUTOFF (to the microsecond), on it, and without a value."""
    just = timedelta(microseconds=1)
    values = [
        (1, CUTOFF - timedelta(days=400), date(2026, 3, 8)),
        (2, CUTOFF - just, date(2027, 4, 11)),
        (3, CUTOFF, date(2027, 4, 12)),
        (4, CUTOFF + just, date(2027, 4, 13)),
        (5, None, None),
        (6, CUTOFF - timedelta(hours=5), date(2027, 4, 10)),
    ]
    _META.create_all(db.engine)
    try:
        with db.engine.begin() as conn:
            conn.execute(
                insert(MOMENTS), [{"id": i, "at": at, "day": day} for i, at, day in values]
            )
        yield db
    finally:
        _META.drop_all(db.engine)


def _ids(db: Database, condition: object) -> list[int]:
    with db.engine.connect() as conn:
        return list(
            conn.execute(select(MOMENTS.c.id).where(condition).order_by(MOMENTS.c.id)).scalars()
        )


class TestStored:
    def test_it_selects_the_rows_the_column_selects(self, moments: Database) -> None:
        """Times and days compared through stored() select exactly what the column selects."""
        at, day = MOMENTS.c.at, MOMENTS.c.day
        assert _ids(moments, stored(at) < CUTOFF) == _ids(moments, at < CUTOFF) == [1, 2, 6]
        assert _ids(moments, stored(at) >= CUTOFF) == _ids(moments, at >= CUTOFF) == [3, 4]
        assert _ids(moments, stored(day) <= date(2027, 4, 11)) == [1, 2, 6]
        assert _ids(moments, day <= date(2027, 4, 11)) == [1, 2, 6]

    def test_its_values_read_as_the_columns(self, moments: Database) -> None:
        """Selected, it gives the column's values as the column's type gives them."""
        with moments.engine.connect() as conn:
            row = conn.execute(
                select(stored(MOMENTS.c.at), stored(MOMENTS.c.day)).where(MOMENTS.c.id == 2)
            ).one()
        assert row[0].replace(tzinfo=UTC) == CUTOFF - timedelta(microseconds=1)
        assert row[1] == date(2027, 4, 11)

    def test_on_sqlite_it_drops_the_affinity_and_nowhere_else(self, db: Database) -> None:
        """SQLite compares the stored text as text (unary plus); Postgres reads the column."""
        sql = str(select(MOMENTS.c.id).where(stored(MOMENTS.c.at) < CUTOFF).compile(db.engine))
        column = "herald_test_moments.at <"
        assert ("+" + column in sql) is (db.backend == "sqlite")
        assert column in sql


class TestSharedSnapshot:
    """SQLite connections that read one snapshot (the metrics count their parts on them)."""

    def test_every_connection_reads_one_snapshot_and_a_later_write_in_none(
        self, tmp_path: Path
    ) -> None:
        engine = get_engine(f"sqlite:///{tmp_path / 'snapshot.db'}")
        _META.create_all(engine)
        table = MOMENTS
        with engine.begin() as conn:
            conn.execute(insert(table).values(id=1))
        count = select(func.count()).select_from(table)
        with shared_snapshot(engine, 3) as conns:
            assert len({id(conn.connection.dbapi_connection) for conn in conns}) == 3
            assert [conn.execute(count).scalar() for conn in conns] == [1, 1, 1]
            # The write lock taken for the snapshots is let go: a writer commits at once...
            with engine.begin() as conn:
                conn.execute(insert(table).values(id=2))
            # ...and none of them sees it.
            assert [conn.execute(count).scalar() for conn in conns] == [1, 1, 1]
        with engine.connect() as conn:
            assert conn.execute(count).scalar() == 2
        with shared_snapshot(engine, 2) as conns:
            assert [conn.execute(count).scalar() for conn in conns] == [2, 2]

    def test_an_in_memory_database_gets_one_connection(self) -> None:
        engine = get_engine("sqlite://")
        with shared_snapshot(engine, 4) as conns:
            assert len(conns) == 1
            assert conns[0].exec_driver_sql("SELECT 1").scalar() == 1
