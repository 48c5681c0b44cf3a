"""A re-import skips the lines that are stored rows as last imported, and nothing else changes.

Each account and contact keeps the digest of the line that last wrote it; a line with that
digest is neither checked nor staged. These tests pin what must stay as it was without the
skip: the counts, duplicates rejected whole (also when one copy is an unchanged line), a
changed row updated, a row whose line changed but whose values did not left alone (and
skipped the next time), on both databases.
"""

from __future__ import annotations

from pathlib import Path

from sqlalchemy import select, update

from herald.models import ACCOUNT, CONTACT
from tests.support.csvfiles import (
    ACCOUNT_HEADER,
    CONTACT_HEADER,
    account,
    contact,
    read_rejects,
    run_import,
    write_csv,
)
from tests.support.environment import Database

CHUNK = 7  # several chunks even for these small files


def stored(db: Database) -> dict[str, tuple[object, ...]]:
    """Every contact by address: its values, digest and timestamps."""
    with db.engine.connect() as conn:
        rows = conn.execute(select(CONTACT).order_by(CONTACT.c.email)).all()
    return {row.email: tuple(row) for row in rows}


def base(tmp_path: Path) -> tuple[Path, list[list[str]]]:
    accounts = write_csv(tmp_path / "accounts.csv", ACCOUNT_HEADER, [account(n) for n in (1, 2)])
    return accounts, [contact(n, 1 + n % 2) for n in range(1, 21)]


class TestUnchangedLines:
    def test_unchanged_lines_are_counted_unchanged_and_nothing_is_written(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A second import of the same files counts every row unchanged, writes nothing, and
        every row carries the digest of its line."""
        accounts, rows = base(tmp_path)
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)
        run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        before = stored(db)

        again = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)

        assert (again.contacts.rows, again.contacts.unchanged, again.contacts.updated) == (
            20,
            20,
            0,
        )
        assert (again.accounts.unchanged, again.rejected) == (2, 0)
        assert stored(db) == before
        assert all(row[-3] is not None for row in before.values())  # import_digest

    def test_an_unchanged_line_twice_in_the_file_is_rejected_as_a_duplicate(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A stored row's line repeated in the file makes both copies duplicates, as on the
        first import: none imported, the stored row as it was."""
        accounts, rows = base(tmp_path)
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)
        run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        before = stored(db)
        write_csv(contacts, CONTACT_HEADER, [*rows, rows[4]])

        again = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)

        assert (again.contacts.rejected, again.contacts.unchanged) == (2, 19)
        rejects = read_rejects(again.rejects_path)
        assert [(r["line"], r["reason"]) for r in rejects] == [
            (line, "duplicate email person5@customer2.com: 2 rows, lines 6 to 22; none imported")
            for line in ("6", "22")
        ]
        assert rejects[0]["row"] == ",".join(rows[4])
        assert stored(db) == before

    def test_an_unchanged_line_and_a_changed_one_with_its_key_are_both_rejected(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A changed line whose key is also an unchanged line's makes both duplicates."""
        accounts, rows = base(tmp_path)
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)
        run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        before = stored(db)
        changed = contact(5, 2, email="PERSON5@Customer2.com", name="Someone Else")
        write_csv(contacts, CONTACT_HEADER, [*rows, changed])

        again = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)

        assert (again.contacts.rejected, again.contacts.updated, again.contacts.unchanged) == (
            2,
            0,
            19,
        )
        reasons = {r["line"]: r["reason"] for r in read_rejects(again.rejects_path)}
        assert set(reasons) == {"6", "22"}
        assert stored(db) == before

    def test_a_changed_line_is_updated_and_takes_its_new_digest(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A changed row is updated; the next import skips it like the others."""
        accounts, rows = base(tmp_path)
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)
        run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        rows[2] = contact(3, 2, role="technical", name="Renamed")
        write_csv(contacts, CONTACT_HEADER, rows)

        changed = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        after = stored(db)
        third = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)

        assert (changed.contacts.updated, changed.contacts.unchanged) == (1, 19)
        assert after["person3@customer2.com"][3:5] == ("Renamed", "technical")
        assert (third.contacts.updated, third.contacts.unchanged) == (0, 20)
        assert stored(db) == after

    def test_a_line_written_differently_with_the_same_values_changes_only_its_digest(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Columns in another order (so every line differs) update nothing and count every
        row unchanged; the rows take the new lines' digests, so the next import skips them."""
        accounts, rows = base(tmp_path)
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)
        run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        before = stored(db)
        order = list(reversed(range(len(CONTACT_HEADER))))
        write_csv(
            contacts,
            [CONTACT_HEADER[i] for i in order],
            [[row[i] for i in order] for row in rows],
        )

        reordered = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)
        after = stored(db)
        third = run_import(db, tmp_path, accounts, contacts, chunk_rows=CHUNK)

        assert (reordered.contacts.updated, reordered.contacts.unchanged) == (0, 20)
        assert {k: v[:-3] + v[-2:] for k, v in after.items()} == {
            k: v[:-3] + v[-2:] for k, v in before.items()
        }
        assert all(after[k][-3] != before[k][-3] for k in before)
        assert (third.contacts.updated, third.contacts.unchanged) == (0, 20)

    def test_a_row_whose_digest_was_cleared_is_compared_in_full(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A row another writer changed (clearing its digest, as models.IMPORT_DIGEST asks)
        is compared in full on the next import and set back to the file's values."""
        accounts = base(tmp_path)[0]
        run_import(db, tmp_path, accounts, chunk_rows=CHUNK)
        with db.engine.begin() as conn:
            conn.execute(
                update(ACCOUNT)
                .where(ACCOUNT.c.external_id == "A00001")
                .values(tier="changed elsewhere", import_digest=None)
            )

        again = run_import(db, tmp_path, accounts, chunk_rows=CHUNK)

        assert (again.accounts.updated, again.accounts.unchanged) == (1, 1)
        with db.engine.connect() as conn:
            tier = conn.execute(
                select(ACCOUNT.c.tier).where(ACCOUNT.c.external_id == "A00001")
            ).scalar_one()
        assert tier == "business"
