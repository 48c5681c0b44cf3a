"""Customer import: idempotent upsert, bad rows rejected with line and reason, on both databases."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import select

from herald.customers.rows import ImportError_
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


def snapshot(db: Database) -> tuple[list[tuple[object, ...]], list[tuple[object, ...]]]:
    with db.engine.connect() as conn:
        accounts = conn.execute(select(ACCOUNT).order_by(ACCOUNT.c.id)).all()
        contacts = conn.execute(select(CONTACT).order_by(CONTACT.c.id)).all()
    return [tuple(r) for r in accounts], [tuple(r) for r in contacts]


class TestMalformedRows:
    def test_five_bad_contacts_among_1000_are_rejected_with_their_lines(
        self, db: Database, tmp_path: Path
    ) -> None:
        """994 contacts land; the 5 bad ones, and the row the duplicate repeats, are reported
        with file, line number and reason."""
        accounts = write_csv(
            tmp_path / "accounts.csv", ACCOUNT_HEADER, [account(n) for n in range(1, 101)]
        )
        rows = [contact(n, 1 + n % 100) for n in range(1, 1001)]
        # Data line k sits on file line k + 1 (the header is line 1).
        rows[9] = contact(10, 1, email="not-an-email")
        rows[199] = contact(200, 999)  # account A00999 does not exist
        rows[399] = contact(400, 1, role="ceo")
        rows[599] = contact(600, 1, timezone="Mars/Olympus_Mons")
        rows[799] = contact(800, 1, email=rows[4][1])  # same e-mail as data line 5
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)

        result = run_import(db, tmp_path, accounts, contacts, chunk_rows=128)

        assert result.contacts.rows == 1000
        assert result.contacts.inserted == 994
        assert result.contacts.rejected == 6
        assert db.count("contact") == 994
        rejects = sorted(read_rejects(result.rejects_path), key=lambda r: int(r["line"]))
        assert [(r["file"], int(r["line"])) for r in rejects] == [
            (str(contacts), line) for line in (6, 11, 201, 401, 601, 801)
        ]
        reasons = [r["reason"] for r in rejects]
        duplicate = f"duplicate email {rows[4][1]}: 2 rows, lines 6 to 801; none imported"
        assert reasons[0] == reasons[5] == duplicate
        assert reasons[1].startswith("invalid e-mail 'not-an-email'")
        assert reasons[2] == "unknown account A00999"
        assert reasons[3].startswith("unknown role 'ceo'")
        assert reasons[4].startswith("unknown timezone 'Mars/Olympus_Mons'")
        assert rejects[3]["row"].split(",")[3] == "ceo"
        # The rows SQL rejects (duplicates, unknown account) are not staged with their text:
        # it is read again from the file.
        assert [rejects[i]["row"] for i in (0, 2, 5)] == [
            ",".join(rows[line - 2]) for line in (6, 201, 801)
        ]

    def test_five_bad_accounts_among_1000_are_rejected_with_their_lines(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Bad lifecycle, empty name, bad date, short row and a duplicate id are rejected."""
        rows = [account(n) for n in range(1, 1001)]
        rows[99] = account(100, lifecycle="zombie")
        rows[299] = account(300, name="  ")
        rows[499] = account(500, migration_state="migrated", migrated_on="2026-02-30")
        rows[699] = account(700)[:-1]
        rows[899] = account(3)
        path = write_csv(tmp_path / "accounts.csv", ACCOUNT_HEADER, rows)

        result = run_import(db, tmp_path, path)

        assert (result.accounts.inserted, result.accounts.rejected) == (994, 6)
        assert db.count("account") == 994
        rejects = sorted(read_rejects(result.rejects_path), key=lambda r: int(r["line"]))
        assert [int(r["line"]) for r in rejects] == [4, 101, 301, 501, 701, 901]
        assert [r["reason"] for r in rejects] == [
            "duplicate external_id A00003: 2 rows, lines 4 to 901; none imported",
            "unknown lifecycle 'zombie' (expected one of active, churned)",
            "name is empty",
            "migrated_on '2026-02-30' is not a date (YYYY-MM-DD)",
            "expected 10 fields, found 9",
            "duplicate external_id A00003: 2 rows, lines 4 to 901; none imported",
        ]

    def test_invalid_utf8_rejects_only_that_row(self, db: Database, tmp_path: Path) -> None:
        """A row with bytes that are not UTF-8 is rejected by line; its neighbours import."""
        path = write_csv(
            tmp_path / "accounts.csv", ACCOUNT_HEADER, [account(n) for n in range(1, 4)]
        )
        data = path.read_bytes().replace(b"Account 2", b"Acc\xe9unt 2")
        path.write_bytes(data)

        result = run_import(db, tmp_path, path)

        assert result.accounts.inserted == 2
        rejects = read_rejects(result.rejects_path)
        assert [(int(r["line"]), r["reason"][:19]) for r in rejects] == [(3, "not valid UTF-8 (th")]

    def test_unbalanced_quote_is_rejected_not_fatal(self, db: Database, tmp_path: Path) -> None:
        """A stray quote that swallows the rest of the file is reported with its line."""
        path = tmp_path / "accounts.csv"
        path.write_text(
            ",".join(ACCOUNT_HEADER)
            + "\n"
            + ",".join(account(1))
            + "\n"
            + 'A00002,"Broken,business,emea,software,active,not_started,,false,4.0\n',
            encoding="utf-8",
        )
        result = run_import(db, tmp_path, path)
        assert result.accounts.inserted == 1
        rejects = read_rejects(result.rejects_path)
        assert len(rejects) == 1
        assert rejects[0]["line"] == "3"


class TestIdempotence:
    def test_reimporting_the_same_files_changes_nothing(self, db: Database, tmp_path: Path) -> None:
        """A second import of the same files inserts and updates nothing, timestamps included."""
        accounts = write_csv(
            tmp_path / "accounts.csv",
            ACCOUNT_HEADER,
            [account(n, attr_legacy_version="4.2") for n in range(1, 51)],
        )
        rows = [contact(n, 1 + n % 50) for n in range(1, 201)]
        rows[7] = contact(8, 1, role="wizard")
        contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)
        first = run_import(db, tmp_path, accounts, contacts)
        before = snapshot(db)

        second = run_import(db, tmp_path, accounts, contacts)

        assert (first.accounts.inserted, first.contacts.inserted) == (50, 199)
        assert (second.accounts.inserted, second.accounts.updated) == (0, 0)
        assert (second.contacts.inserted, second.contacts.updated) == (0, 0)
        assert (second.accounts.unchanged, second.contacts.unchanged) == (50, 199)
        assert second.contacts.rejected == 1
        assert snapshot(db) == before

    def test_a_changed_row_is_updated_in_place(self, db: Database, tmp_path: Path) -> None:
        """Changing one account's tier updates that row only, keeping its id."""
        rows = [account(n) for n in range(1, 11)]
        path = write_csv(tmp_path / "accounts.csv", ACCOUNT_HEADER, rows)
        run_import(db, tmp_path, path)
        rows[3] = account(4, tier="Enterprise", attr_performance_focused="true")
        write_csv(path, ACCOUNT_HEADER, rows)

        result = run_import(db, tmp_path, path)

        assert (result.accounts.inserted, result.accounts.updated, result.accounts.unchanged) == (
            0,
            1,
            9,
        )
        with db.engine.connect() as conn:
            row = conn.execute(select(ACCOUNT).where(ACCOUNT.c.external_id == "A00004")).one()
        assert row.id == 4
        assert row.tier == "enterprise"
        assert row.attributes == {"legacy_version": 4.0, "performance_focused": True}
        assert row.updated_at > row.created_at


class TestFileFormats:
    def test_utf8_with_bom_imports_like_without(self, db: Database, tmp_path: Path) -> None:
        """A BOM before the header does not become part of the first column's name."""
        path = write_csv(
            tmp_path / "accounts.csv",
            ACCOUNT_HEADER,
            [account(1, name="Zoë Ünïcode GmbH")],
            bom=True,
        )
        result = run_import(db, tmp_path, path)
        assert result.accounts.inserted == 1
        with db.engine.connect() as conn:
            assert conn.execute(select(ACCOUNT.c.name)).scalar_one() == "Zoë Ünïcode GmbH"

    def test_blank_lines_are_skipped_and_not_counted(self, db: Database, tmp_path: Path) -> None:
        """Blank lines (often at the end of an export) are neither rows nor rejects."""
        path = write_csv(tmp_path / "accounts.csv", ACCOUNT_HEADER, [account(1)])
        path.write_text(path.read_text() + "\n\n" + ",".join(account(2)) + "\n\n")
        result = run_import(db, tmp_path, path)
        assert (result.accounts.rows, result.accounts.inserted, result.accounts.rejected) == (
            2,
            2,
            0,
        )

    def test_emails_are_normalised_and_deduplicated_case_insensitively(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Upper-case and internationalised addresses are compared in one canonical form: two
        rows that differ only in case are the same contact twice, and neither is imported; an
        internationalised domain is stored as its A-label."""
        accounts = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER, [account(1)])
        contacts = write_csv(
            tmp_path / "c.csv",
            CONTACT_HEADER,
            [
                contact(1, 1, email="Jane.Doe@Example.COM"),
                contact(2, 1, email="jane.doe@example.com"),
                contact(3, 1, email="Jose@Bücher.de", locale="pt_br"),
            ],
        )
        result = run_import(db, tmp_path, accounts, contacts)
        assert (result.contacts.inserted, result.contacts.rejected) == (1, 2)
        with db.engine.connect() as conn:
            stored = conn.execute(
                select(CONTACT.c.email, CONTACT.c.locale).order_by(CONTACT.c.id)
            ).all()
        assert [tuple(r) for r in stored] == [("jose@xn--bcher-kva.de", "pt-BR")]
        assert [r["reason"] for r in read_rejects(result.rejects_path)] == [
            "duplicate email jane.doe@example.com: 2 rows, lines 2 to 3; none imported"
        ] * 2


class TestHeaders:
    def test_unknown_column_stops_the_import_before_anything_is_written(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A misspelt column fails both files up front: not even the good accounts file lands."""
        accounts = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER, [account(1)])
        header = [*CONTACT_HEADER[:-1], "loacle"]
        contacts = write_csv(tmp_path / "c.csv", header, [contact(1, 1)])
        with pytest.raises(ImportError_, match=r"c\.csv:1: bad header: unknown column 'loacle'"):
            run_import(db, tmp_path, accounts, contacts)
        assert db.count("account") == 0

    def test_missing_required_column_is_named(self, db: Database, tmp_path: Path) -> None:
        """A header without a required column says which one."""
        path = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER[1:], [account(1)[1:]])
        with pytest.raises(ImportError_, match=r"missing required column.*external_id"):
            run_import(db, tmp_path, path)


class TestAtomicity:
    def test_a_failure_midway_rolls_back_everything_and_the_next_import_works(
        self, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """If the contacts step fails, the accounts already upserted are rolled back too."""
        import herald.customers.importer as customers

        accounts = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER, [account(1), account(2)])
        contacts = write_csv(tmp_path / "c.csv", CONTACT_HEADER, [contact(1, 1), contact(2, 9)])
        original = customers._resolve_accounts

        def crash(*_args: object) -> None:
            raise RuntimeError("database went away")

        monkeypatch.setattr(customers, "_resolve_accounts", crash)
        with pytest.raises(RuntimeError, match="went away"):
            run_import(db, tmp_path, accounts, contacts)
        assert db.count("account") == 0

        monkeypatch.setattr(customers, "_resolve_accounts", original)
        result = run_import(db, tmp_path, accounts, contacts)
        assert (result.accounts.inserted, result.contacts.inserted) == (2, 1)
        assert [r["line"] for r in read_rejects(result.rejects_path)] == ["3"]
