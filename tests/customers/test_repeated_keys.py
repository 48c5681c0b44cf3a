"""The duplicate-key check runs only where the staged keys' hashes say a key may be repeated.

Rejecting every line of a key given twice is a grouping of the whole staging table; the
import keeps the hashes of the keys it stages (``importer._Keys``) and runs it only when they
are fewer than the rows. These tests hold that a file without a repeated key is imported
without it, that a repeated key is still rejected, also when one of its lines is a stored
row skipped as unchanged, and that colliding hashes only cost the check, never a row.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from herald.customers import importer
from tests.support.csvfiles import (
    ACCOUNT_HEADER,
    CONTACT_HEADER,
    account,
    contact,
    read_rejects,
    run_import,
    write_csv,
)
from tests.support.environment import Database, statements


def groupings(seen: list[str]) -> list[str]:
    """Of the statements run, those that look for a repeated key (``GROUP BY ... HAVING``)."""
    return [statement for statement in seen if "HAVING" in statement]


def accounts_file(tmp_path: Path, count: int) -> Path:
    return write_csv(
        tmp_path / "accounts.csv", ACCOUNT_HEADER, [account(n) for n in range(1, count + 1)]
    )


def test_a_file_without_a_repeated_key_is_not_grouped(db: Database, tmp_path: Path) -> None:
    contacts = write_csv(
        tmp_path / "contacts.csv", CONTACT_HEADER, [contact(n, n) for n in range(1, 41)]
    )
    with statements(db.engine) as seen:
        result = run_import(db, tmp_path, accounts_file(tmp_path, 40), contacts, chunk_rows=7)

    assert (result.accounts.inserted, result.contacts.inserted, result.rejected) == (40, 40, 0)
    assert groupings(seen) == []


def test_a_repeated_key_is_rejected_on_every_line(db: Database, tmp_path: Path) -> None:
    rows = [contact(n, n) for n in range(1, 21)]
    rows[14] = contact(15, 15, email=rows[2][1].upper())  # line 16 repeats line 4's address
    contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)

    with statements(db.engine) as seen:
        result = run_import(db, tmp_path, accounts_file(tmp_path, 20), contacts, chunk_rows=7)

    assert len(groupings(seen)) == 1
    assert (result.contacts.inserted, result.contacts.rejected) == (18, 2)
    assert [int(r["line"]) for r in read_rejects(result.rejects_path)] == [4, 16]


def test_a_new_line_repeating_an_unchanged_rows_key_is_rejected(
    db: Database, tmp_path: Path
) -> None:
    """The second import skips line 4 as unchanged; its key, given again on a new line, makes
    the import read line 4 again, and both lines are rejected: the stored row stays."""
    accounts = accounts_file(tmp_path, 10)
    rows = [contact(n, n) for n in range(1, 11)]
    run_import(db, tmp_path, accounts, write_csv(tmp_path / "c1.csv", CONTACT_HEADER, rows))
    again = write_csv(
        tmp_path / "c2.csv", CONTACT_HEADER, [*rows, contact(99, 5, email=rows[2][1])]
    )

    result = run_import(db, tmp_path, accounts, again)

    assert (result.contacts.unchanged, result.contacts.rejected) == (9, 2)
    assert [int(r["line"]) for r in read_rejects(result.rejects_path)] == [4, 12]
    assert db.count("contact") == 10


def test_colliding_hashes_cost_the_check_and_no_row(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(importer, "hash", lambda _: 7, raising=False)  # every key alike
    contacts = write_csv(
        tmp_path / "contacts.csv", CONTACT_HEADER, [contact(n, n) for n in range(1, 31)]
    )
    with statements(db.engine) as seen:
        result = run_import(db, tmp_path, accounts_file(tmp_path, 30), contacts)

    # Accounts and contacts: each grouped, each found no repeated key.
    assert len(groupings(seen)) == 2
    assert (result.accounts.inserted, result.contacts.inserted, result.rejected) == (30, 30, 0)


def test_past_its_limit_the_tracker_says_maybe(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importer._Keys, "LIMIT", 3)
    stage = importer._staging_tables()[1]
    keys = importer._Keys(stage, "email")
    keys.add([(1, None, "A1", "a@x.com"), (2, None, "A1", "b@x.com")])
    assert not keys.maybe_repeated
    keys.add([(3, None, "A1", "c@x.com"), (4, None, "A1", "d@x.com")])
    assert keys.maybe_repeated
