"""A first load on Postgres: rows go in without the table's indexes and keys, which come back.

Into an empty ``account`` or ``contact`` table, the import drops the table's secondary
indexes, unique constraints and foreign keys, inserts, and makes them again, built and
validated in one pass each (the load the PostgreSQL manual recommends;
``importer._first_load`` says why only then). These tests hold that every index and key
comes back as it was, that they are only dropped for a first load, that a unique constraint
another table's key refers to stays, and that an import that fails half-way leaves them in
place, with nothing imported.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from sqlalchemy import Connection, Table, text
from sqlalchemy.exc import IntegrityError

from herald.customers import importer
from tests.support.csvfiles import (
    ACCOUNT_HEADER,
    CONTACT_HEADER,
    account,
    contact,
    run_import,
    write_csv,
)
from tests.support.environment import Database, statements

ON_POSTGRES = pytest.mark.parametrize(
    "db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def foreign_keys(db: Database) -> list[tuple[str, str, bool]]:
    """``contact``'s foreign keys: name, definition, validated."""
    rows = db.rows(
        "SELECT conname, pg_get_constraintdef(oid), convalidated FROM pg_constraint"
        " WHERE conrelid = 'contact'::regclass AND contype = 'f' ORDER BY conname"
    )
    return [(str(name), str(definition), bool(valid)) for name, definition, valid in rows]


def schema(db: Database) -> list[tuple[str, ...]]:
    """Every constraint and index of ``account`` and ``contact``, as Postgres describes it."""
    constraints = db.rows(
        "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid), convalidated::text"
        " FROM pg_constraint WHERE conrelid IN ('account'::regclass, 'contact'::regclass)"
        " ORDER BY 1, 2"
    )
    indexes = db.rows(
        "SELECT tablename, indexname, indexdef FROM pg_indexes"
        " WHERE tablename IN ('account', 'contact') ORDER BY 1, 2"
    )
    return [tuple(map(str, row)) for row in [*constraints, *indexes]]


def files(tmp_path: Path, first: int, count: int) -> tuple[Path, Path]:
    accounts = write_csv(
        tmp_path / f"accounts-{first}.csv",
        ACCOUNT_HEADER,
        [account(n) for n in range(first, first + count)],
    )
    contacts = write_csv(
        tmp_path / f"contacts-{first}.csv",
        CONTACT_HEADER,
        [contact(n, n) for n in range(first, first + count)],
    )
    return accounts, contacts


@ON_POSTGRES
def test_a_first_load_drops_the_key_and_adds_it_back_as_it_was(
    db: Database, tmp_path: Path
) -> None:
    before = foreign_keys(db)
    assert [name for name, _, _ in before] == ["contact_account_id_fkey"]

    with statements(db.engine) as seen:
        result = run_import(db, tmp_path, *files(tmp_path, 1, 50))

    assert result.contacts.inserted == 50 and result.rejected == 0
    assert any("DROP CONSTRAINT" in s for s in seen)
    assert foreign_keys(db) == before  # same name and definition, validated
    orphans = db.rows(
        "SELECT c.id FROM contact c LEFT JOIN account a ON a.id = c.account_id WHERE a.id IS NULL"
    )
    assert orphans == []

    # The table has rows now: the next import keeps its key in place.
    with statements(db.engine) as seen:
        again = run_import(db, tmp_path, *files(tmp_path, 51, 20))
    assert again.contacts.inserted == 20
    assert not any("CONSTRAINT" in s for s in seen)
    assert foreign_keys(db) == before


@ON_POSTGRES
def test_a_first_load_makes_every_index_and_unique_constraint_again(
    db: Database, tmp_path: Path
) -> None:
    before = schema(db)
    names = {row[1] for row in before}
    assert {"uq_account_external_id", "uq_contact_email", "ix_contact_account_role"} <= names

    with statements(db.engine) as seen:
        result = run_import(db, tmp_path, *files(tmp_path, 1, 40))

    assert result.accounts.inserted == result.contacts.inserted == 40
    dropped = [s for s in seen if s.startswith(("DROP INDEX", "ALTER TABLE")) and "DROP" in s]
    for name in ("uq_account_external_id", "uq_contact_email", "ix_account_lifecycle_migration"):
        assert any(name in s for s in dropped), name
    assert not any("_pkey" in s for s in dropped)  # the primary keys stay
    assert schema(db) == before
    # The unique constraints are enforced again: a second row with a stored key is refused.
    with pytest.raises(IntegrityError, match="uq_contact_email"), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contact (account_id, email, role, locale, created_at, updated_at)"
                " SELECT account_id, email, role, locale, now(), now() FROM contact LIMIT 1"
            )
        )

    with statements(db.engine) as seen:
        again = run_import(db, tmp_path, *files(tmp_path, 41, 10))
    assert again.accounts.inserted == again.contacts.inserted == 10
    assert not any(s.startswith("DROP INDEX") or "CONSTRAINT" in s for s in seen)
    assert schema(db) == before


@ON_POSTGRES
def test_a_unique_constraint_another_table_refers_to_stays(db: Database, tmp_path: Path) -> None:
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "CREATE TABLE herald_test_referrer (email VARCHAR(320) REFERENCES contact (email))"
            )
        )
    try:
        before = schema(db)
        with statements(db.engine) as seen:
            result = run_import(db, tmp_path, *files(tmp_path, 1, 20))
        assert result.contacts.inserted == 20 and result.rejected == 0
        assert not any("DROP CONSTRAINT uq_contact_email" in s for s in seen)
        assert any("DROP CONSTRAINT uq_account_external_id" in s for s in seen)
        assert schema(db) == before
    finally:
        with db.engine.begin() as conn:
            conn.execute(text("DROP TABLE herald_test_referrer"))


@ON_POSTGRES
def test_an_import_that_fails_mid_load_leaves_the_key_and_no_contact(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    before = foreign_keys(db)
    real = importer._first_load

    @contextmanager
    def failing(conn: Connection, target: Table) -> Iterator[bool]:
        with real(conn, target) as first:
            yield first
            if target.name == "contact":
                raise RuntimeError("stopped with the key dropped")

    monkeypatch.setattr(importer, "_first_load", failing)
    every = schema(db)
    with pytest.raises(RuntimeError, match="key dropped"):
        run_import(db, tmp_path, *files(tmp_path, 1, 30))

    assert foreign_keys(db) == before
    assert schema(db) == every
    assert db.count("contact") == 0 and db.count("account") == 0


@ON_POSTGRES
def test_the_key_still_refuses_an_orphan_after_a_first_load(db: Database, tmp_path: Path) -> None:
    """Added back, the key is enforced again: a contact of no account is refused."""
    run_import(db, tmp_path, *files(tmp_path, 1, 10))
    with pytest.raises(IntegrityError, match="contact_account_id_fkey"), db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO contact (account_id, email, role, locale, created_at, updated_at)"
                " VALUES (987654, 'orphan@example.com', 'technical', 'en', now(), now())"
            )
        )
