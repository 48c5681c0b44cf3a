"""`herald suppressions list | add | remove | import`, on both databases.

The commands run through ``herald`` itself, with typer's CliRunner.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, update
from typer.testing import CliRunner, Result

from herald.cli import app
from herald.config import HeraldConfig
from herald.console.suppressions import list_suppressions
from herald.delivery.audience import audience, segmentation_day
from herald.models import AUDIT_LOG, CONTACT, SUPPRESSION, SuppressionReason
from tests.support.bases import DAY, load_base, suppress
from tests.support.environment import Database

ACTOR = "ops-oncall@example.com"
START = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def herald(*args: str) -> Result:
    """Run `herald suppressions ARGS` (a wide terminal: tables do not wrap)."""
    return CliRunner().invoke(app, ["suppressions", *args], env={"COLUMNS": "300"})


def stored(db: Database) -> list[tuple[str, str, str, str | None]]:
    """Every suppression as (email, reason, source, detail), by address and reason."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(
                SUPPRESSION.c.email,
                SUPPRESSION.c.reason,
                SUPPRESSION.c.source,
                SUPPRESSION.c.detail,
            ).order_by(SUPPRESSION.c.email, SUPPRESSION.c.reason)
        ).all()
    return [tuple(row) for row in rows]


def audit_entries(db: Database) -> list[tuple[str, str, dict[str, Any]]]:
    """Every audit entry as (actor, action, detail), oldest first."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(AUDIT_LOG.c.actor, AUDIT_LOG.c.action, AUDIT_LOG.c.detail).order_by(
                AUDIT_LOG.c.id
            )
        ).all()
    return [(actor, action, dict(detail)) for actor, action, detail in rows]


def announcement_audience(db: Database, loaded: HeraldConfig) -> set[str]:
    """The addresses the announcement would go to now (Herald's own audience query)."""
    with db.engine.connect() as conn:
        chosen = audience(loaded, "announcement", segmentation_day(conn, DAY)).subquery()
        return set(
            conn.execute(
                select(CONTACT.c.email).join(chosen, chosen.c.contact_id == CONTACT.c.id)
            ).scalars()
        )


def words(result: Result) -> str:
    """The command's output and errors on one line (table borders and wrapping removed)."""
    return " ".join((result.output + result.stderr).replace("│", " ").split())


class TestAdd:
    def test_add_stores_the_canonical_address_and_audits_who_and_why(self, db: Database) -> None:
        """An address no contact has is suppressed in canonical form (case folded, IDN as
        A-label); the audit entry names the actor and the why, and masks the address."""
        result = herald(
            "add", "Jane.Doe@Bücher.example", "--why", "asked by phone, ticket 4711", "--by", ACTOR
        )
        assert result.exit_code == 0, result.output
        assert "no contact yet" in result.output
        assert stored(db) == [
            ("jane.doe@xn--bcher-kva.example", "manual", "manual", "asked by phone, ticket 4711")
        ]
        assert audit_entries(db) == [
            (
                ACTOR,
                "suppression.added",
                {
                    "email": "j***@xn--bcher-kva.example",
                    "contact_id": None,
                    "reason": "manual",
                    "source": "manual",
                    "why": "asked by phone, ticket 4711",
                },
            )
        ]

    def test_adding_again_changes_nothing_and_says_so(self, db: Database) -> None:
        """A second add of the same address and reason exits 0, says it was there, and adds
        neither a row nor an audit entry."""
        assert herald("add", "a@example.com", "--why", "first", "--by", ACTOR).exit_code == 0
        again = herald("add", "A@EXAMPLE.COM", "--why", "second", "--by", ACTOR)
        assert again.exit_code == 0, again.output
        assert "already suppressed for manual" in words(again)
        assert "nothing changed" in words(again)
        assert stored(db) == [("a@example.com", "manual", "manual", "first")]
        assert len(audit_entries(db)) == 1

    @pytest.mark.parametrize(
        ("args", "message"),
        [
            (["not-an-address"], "invalid e-mail 'not-an-address'"),
            (["josé@example.com"], "SendGrid cannot deliver to a non-ASCII local part"),
            (["a@example.com", "--reason", "angry"], "unknown reason 'angry'"),
        ],
    )
    def test_a_bad_address_or_reason_is_refused(
        self, db: Database, args: list[str], message: str
    ) -> None:
        """A bad address or an unknown reason exits 2 with the reason and writes nothing."""
        result = herald("add", *args)
        assert result.exit_code == 2
        assert message in words(result)
        assert "Traceback" not in result.output
        assert stored(db) == [] and audit_entries(db) == []


class TestAudience:
    def test_a_suppressed_contact_leaves_the_next_audience_and_comes_back_when_removed(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Suppressing a contact by hand takes it out of the announcement's audience;
        removing the suppression (with a why) puts it back, both audited with who and why."""
        loaded = load_base(db, tmp_path, accounts=30)
        before = announcement_audience(db, loaded)
        person = sorted(before)[0]

        added = herald("add", person.upper(), "--why", "legal hold", "--by", ACTOR)
        assert added.exit_code == 0, added.output
        assert announcement_audience(db, loaded) == before - {person}

        removed = herald("remove", person, "--why", "hold lifted", "--by", "second-op")
        assert removed.exit_code == 0, removed.output
        assert "suppressed no more" in words(removed)
        assert stored(db) == []
        assert announcement_audience(db, loaded) == before
        with db.engine.connect() as conn:
            contact_id = conn.execute(
                select(CONTACT.c.id).where(CONTACT.c.email == person)
            ).scalar_one()
        entries = audit_entries(db)
        assert [(actor, action) for actor, action, _ in entries] == [
            (ACTOR, "suppression.added"),
            ("second-op", "suppression.removed"),
        ]
        assert entries[0][2]["contact_id"] == entries[1][2]["contact_id"] == contact_id
        assert entries[1][2]["why"] == "hold lifted"
        assert entries[1][2]["reasons"] == ["manual"]
        assert person not in str(entries)  # masked


class TestRemove:
    def test_an_unsubscribe_is_not_removed_without_its_reason_named(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Removing an unsubscribed address without --reason is refused (exit 2, one line
        saying which reason to name) and changes nothing, even with a manual one beside it."""
        loaded = load_base(db, tmp_path, accounts=30)
        person = sorted(announcement_audience(db, loaded))[0]
        suppress(db, [person], "unsubscribe")
        assert herald("add", person, "--why", "also by hand").exit_code == 0
        rows, entries = stored(db), audit_entries(db)

        result = herald("remove", person, "--why", "customer called back")

        assert result.exit_code == 2
        assert "suppressed for unsubscribe" in words(result)
        assert "--reason unsubscribe" in words(result)
        assert "Traceback" not in result.output
        assert stored(db) == rows and audit_entries(db) == entries
        assert person not in announcement_audience(db, loaded)

    def test_an_unsubscribe_goes_when_named_with_a_why(self, db: Database, tmp_path: Path) -> None:
        """`--reason unsubscribe --why ...` removes exactly that suppression, audited; the
        contact is eligible again once nothing else suppresses it."""
        loaded = load_base(db, tmp_path, accounts=30)
        person = sorted(announcement_audience(db, loaded))[0]
        suppress(db, [person], "unsubscribe")
        suppress(db, [person], "bounce")

        first = herald(
            "remove", person, "--reason", "unsubscribe", "--why", "re-subscribed in writing"
        )
        assert first.exit_code == 0, first.output
        assert "Still suppressed for: bounce" in words(first)
        assert [reason for _, reason, _, _ in stored(db)] == ["bounce"]
        assert person not in announcement_audience(db, loaded)

        second = herald("remove", person, "--reason", "bounce", "--why", "mailbox fixed")
        assert second.exit_code == 0, second.output
        assert stored(db) == []
        assert person in announcement_audience(db, loaded)
        removals = [detail for _, action, detail in audit_entries(db)]
        assert [(d["reasons"], d["why"]) for d in removals] == [
            (["unsubscribe"], "re-subscribed in writing"),
            (["bounce"], "mailbox fixed"),
        ]

    def test_a_removal_needs_a_why(self, db: Database) -> None:
        """Without --why, or with an empty one, a removal exits 2 and nothing changes."""
        assert herald("add", "a@example.com").exit_code == 0
        assert herald("remove", "a@example.com").exit_code == 2
        empty = herald("remove", "a@example.com", "--why", "  ")
        assert empty.exit_code == 2
        assert "say why" in words(empty)
        assert len(stored(db)) == 1 and len(audit_entries(db)) == 1

    def test_removing_what_is_not_there_changes_nothing(self, db: Database) -> None:
        """Removing an address that is not suppressed exits 0, says so, and audits nothing."""
        result = herald("remove", "nobody@example.com", "--why", "cleanup")
        assert result.exit_code == 0, result.output
        assert "is not suppressed" in words(result)
        assert audit_entries(db) == []

    def test_a_removed_suppression_id_is_never_given_again(self, db: Database) -> None:
        """A running send looks for suppressions above the highest id it has seen: after
        the newest one is removed, the next one added still gets a higher id."""
        assert herald("add", "first@example.com", "--why", "t").exit_code == 0
        assert herald("add", "second@example.com", "--why", "t").exit_code == 0
        with db.engine.connect() as conn:
            seen = conn.execute(select(SUPPRESSION.c.id).order_by(SUPPRESSION.c.id.desc())).first()
        assert seen is not None
        assert herald("remove", "second@example.com", "--why", "t").exit_code == 0
        assert herald("add", "third@example.com", "--why", "t").exit_code == 0
        with db.engine.connect() as conn:
            third = conn.execute(
                select(SUPPRESSION.c.id).where(SUPPRESSION.c.email == "third@example.com")
            ).scalar_one()
        assert third > seen[0]


class TestImport:
    def test_good_lines_land_and_each_bad_line_is_reported_with_its_line(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """Good lines land; a bad address, an unknown reason and an unclosed quote are each
        reported with their line and reason (exit 3); a repeated line and an address already
        suppressed are counted; one audit entry gives the counts."""
        suppress(db, ["old@example.com"], "bounce")
        lines = [
            "email,reason,detail",
            "one@example.com,,from the CRM",  # 2: manual, its own detail
            "Two@Bücher.example,unsubscribe,",  # 3: IDN, the import's why as detail
            "not-an-email,manual,",  # 4: bad address
            "three@example.com,angry,",  # 5: bad reason
            'four@example.com,manual,"never closed',  # 6: malformed
            "five@example.com,bounce,",  # 7
            "ONE@example.com,manual,again",  # 8: repeats line 2
            "old@example.com,bounce,",  # 9: suppressed before
            "old@example.com,manual,",  # 10: a new reason for it
        ]
        path = tmp_path / "list.csv"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

        result = herald("import", str(path), "--why", "legacy list 2026", "--by", ACTOR)

        assert result.exit_code == 3, result.output
        assert stored(db) == [
            ("five@example.com", "bounce", "import:list.csv", "legacy list 2026"),
            ("old@example.com", "bounce", "test", None),
            ("old@example.com", "manual", "import:list.csv", "legacy list 2026"),
            ("one@example.com", "manual", "import:list.csv", "from the CRM"),
            ("two@xn--bcher-kva.example", "unsubscribe", "import:list.csv", "legacy list 2026"),
        ]
        text = words(result)
        assert f"{path}:4: invalid e-mail 'not-an-email'" in text
        assert f"{path}:5: unknown reason 'angry'" in text
        assert f"{path}:6: malformed CSV" in text
        assert "3 line(s) rejected" in text
        rejects = list((herald_env / "rejects").glob("suppression-rejects-*.csv"))
        assert len(rejects) == 1 and "not-an-email" in rejects[0].read_text(encoding="utf-8")
        [(actor, action, detail)] = audit_entries(db)
        assert (actor, action) == (ACTOR, "suppressions.imported")
        assert detail == {
            "file": str(path),
            "rows": 9,
            "added": 4,
            "already": 1,
            "duplicates": 1,
            "rejected": 3,
            "added_by_reason": {"bounce": 1, "manual": 2, "unsubscribe": 1},
            "why": "legacy list 2026",
        }

    def test_repeats_across_chunks_are_duplicates_and_a_rerun_adds_nothing(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A line repeated far apart (another chunk) counts as a duplicate of the one that
        added it; importing the same file again adds nothing and counts every line, the
        repeat too, as already suppressed."""
        from herald.console.suppressions import import_suppressions

        rows = [f"p{n}@example.com" for n in range(25)] + ["p3@example.com", "P4@example.com"]
        path = tmp_path / "list.csv"
        path.write_text("email\n" + "\n".join(rows) + "\n", encoding="utf-8")
        with db.engine.begin() as conn:
            first = import_suppressions(conn, path, rejects_dir=tmp_path, chunk_rows=10)
        with db.engine.begin() as conn:
            again = import_suppressions(conn, path, rejects_dir=tmp_path, chunk_rows=10)
        assert (first.added, first.duplicates, first.already) == (25, 2, 0)
        assert (again.added, again.duplicates, again.already) == (0, 0, 27)
        assert db.count("suppression") == 25

    def test_a_bad_header_imports_nothing(self, db: Database, tmp_path: Path) -> None:
        """A file without an email column exits 2 before anything is written or audited."""
        path = tmp_path / "list.csv"
        path.write_text("address,reason\na@example.com,manual\n", encoding="utf-8")
        result = herald("import", str(path))
        assert result.exit_code == 2
        assert "missing required column(s): email" in words(result)
        assert stored(db) == [] and audit_entries(db) == []


class TestList:
    def test_filters_by_reason_address_and_text_newest_first(self, db: Database) -> None:
        """`list` filters by reason, exact address (any case, IDN) and a piece of the
        address, newest first, and says how many match beyond the limit."""
        for email, reason in [
            ("alpha@example.com", "manual"),
            ("beta@example.com", "bounce"),
            ("gamma@bücher.example", "manual"),
            ("delta@example.org", "spam_report"),
        ]:
            assert herald("add", email, "--reason", reason).exit_code == 0
        with db.engine.begin() as conn:  # a day apart each, in the order added
            ids = conn.execute(select(SUPPRESSION.c.id).order_by(SUPPRESSION.c.id)).scalars()
            for step, row_id in enumerate(list(ids)):
                conn.execute(
                    update(SUPPRESSION)
                    .where(SUPPRESSION.c.id == row_id)
                    .values(created_at=START + timedelta(days=step))
                )

        with db.engine.connect() as conn:
            everything = list_suppressions(conn)
            manual = list_suppressions(conn, reason=SuppressionReason.MANUAL)
            exact = list_suppressions(conn, email="GAMMA@BÜCHER.EXAMPLE")
            piece = list_suppressions(conn, contains="bücher")
            limited = list_suppressions(conn, contains="example.com", limit=1)
        assert [r.email for r in everything.rows] == [
            "delta@example.org",
            "gamma@xn--bcher-kva.example",
            "beta@example.com",
            "alpha@example.com",
        ]
        assert [r.email for r in manual.rows] == [
            "gamma@xn--bcher-kva.example",
            "alpha@example.com",
        ]
        assert [r.display_email for r in exact.rows] == ["gamma@bücher.example"]
        assert [r.email for r in piece.rows] == ["gamma@xn--bcher-kva.example"]
        assert ([r.email for r in limited.rows], limited.total) == (["beta@example.com"], 2)

        shown = herald("list", "--reason", "manual")
        assert shown.exit_code == 0, shown.output
        assert "gamma@bücher.example" in shown.output and "alpha@example.com" in shown.output
        assert "beta@example.com" not in shown.output
        assert "2 of 2 suppression(s) shown" in words(shown)
        assert herald("list", "--reason", "nope").exit_code == 2
