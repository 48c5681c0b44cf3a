"""Plan stamps: a rerun whose audience's inputs did not change skips the plan; any change to
them, by Herald or by anyone writing to the database, makes the rerun plan again.

The preview phase (early adopters' executives and technical contacts, not migrated) is the
audience: narrow enough that each change below can bring a contact into it. Changes are made
with raw SQL through an engine of their own, as an outside writer would (the CRM sync, a
person at a SQL prompt), unless the test says Herald makes them.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, create_engine, event, text

from herald.config import HeraldConfig
from herald.customers.segmentation import assign_segments
from herald.delivery import planning, stamps
from herald.delivery.audience import audience_counts
from herald.sandbox.demo import write_demo_base
from tests.support.bases import DAY, load_base, suppress
from tests.support.environment import Database, statements

PHASE = "preview"


@dataclass
class Base:
    """A small base, segmented as of DAY, and the facts each change starts from."""

    db: Database
    config: HeraldConfig
    tmp_path: Path

    def one(self, sql: str, **params: Any) -> Any:
        with self.db.engine.connect() as conn:
            return conn.execute(text(sql), params).scalar_one()

    def plan(self, config: HeraldConfig | None = None, **kwargs: Any) -> planning.PlanResult:
        return planning.plan(
            self.db.engine, config=config or self.config, phase=PHASE, as_of=DAY, **kwargs
        )

    def planned(self, contact_id: int) -> bool:
        return bool(
            self.one(
                "SELECT count(*) FROM delivery WHERE message = :m AND contact_id = :c",
                m=PHASE,
                c=contact_id,
            )
        )

    def eligible_contact(self, offset: int = 0) -> int:
        """A contact in the preview's audience."""
        return int(
            self.one(
                "SELECT c.id FROM contact c JOIN account a ON a.id = c.account_id "
                "JOIN segment_assignment s ON s.account_id = a.id "
                "WHERE s.segment = 'early_adopter' AND a.lifecycle = 'active' "
                "AND a.migration_state <> 'migrated' AND c.role IN ('executive', 'technical') "
                "ORDER BY c.id LIMIT 1 OFFSET :offset",
                offset=offset,
            )
        )

    def account_of(self, contact_id: int) -> int:
        return int(self.one("SELECT account_id FROM contact WHERE id = :c", c=contact_id))


@pytest.fixture
def base(db: Database, tmp_path: Path) -> Base:
    return Base(db, load_base(db, tmp_path, accounts=60), tmp_path)


@contextmanager
def outside(db: Database) -> Iterator[Connection]:
    """A transaction on a connection of its own: not Herald's engine, as any writer."""
    engine = create_engine(db.url)
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        engine.dispose()


def audience_inserts(seen: list[str]) -> list[str]:
    return [s for s in seen if s.lstrip().upper().startswith("INSERT INTO DELIVERY")]


class TestARerunWithNothingChanged:
    def test_does_not_run_the_audience_insert(self, base: Base) -> None:
        """The second plan is reused: no INSERT ... SELECT into the ledger runs at all."""
        first = base.plan()
        with statements(base.db.engine) as seen:
            again = base.plan()
        assert first.planned > 10 and not first.reused
        assert (again.planned, again.reused) == (0, True)
        assert audience_inserts(seen) == []

    def test_the_audience_count_is_the_stamps_less_new_suppressions(self, base: Base) -> None:
        """A new suppression does not make the plan run again (the sender drops the row),
        but the count the rerun reports is the audience's now, exactly."""
        counted = planning.count_audience(
            base.db.engine, config=base.config, phase=PHASE, as_of=DAY
        )
        assert counted.basis is not None
        base.plan(counted=counted)
        contact = base.eligible_contact(offset=3)
        suppress(base.db, [base.one("SELECT email FROM contact WHERE id = :c", c=contact)])

        with statements(base.db.engine) as seen:
            again = planning.count_audience(
                base.db.engine, config=base.config, phase=PHASE, as_of=DAY
            )
            replanned = base.plan(counted=again)
        with base.db.engine.connect() as conn:
            live = audience_counts(conn, base.config, PHASE, DAY)
        assert again.basis is None and replanned.reused
        assert again.counts == live
        assert sum(c.contacts for c in again.counts) == sum(c.contacts for c in counted.counts) - 1
        assert audience_inserts(seen) == []

    @pytest.mark.parametrize(
        "change",
        [
            "UPDATE contact SET name = 'Someone Else' WHERE id = :contact",
            "UPDATE account SET attributes = attributes, tier = 'x' WHERE id = :account",
        ],
        ids=["contact name", "account tier"],
    )
    def test_a_write_the_audience_does_not_read_keeps_the_plan(
        self, base: Base, change: str
    ) -> None:
        """Columns the audience never reads: a contact's name, an account's tier."""
        base.plan()
        contact = base.eligible_contact()
        with outside(base.db) as conn:
            conn.execute(text(change), {"contact": contact, "account": base.account_of(contact)})
        assert base.plan().reused

    def test_an_import_of_unchanged_customers_keeps_the_plan(self, base: Base) -> None:
        """The daily CRM import finding nothing new writes no row: the plan stays current."""
        from herald.customers.importer import import_customers

        base.plan()
        files = write_demo_base(base.tmp_path / "demo", accounts=60, seed=5)
        base.db.engine.dispose()  # Postgres: a fresh session, whose row counts are its own
        result = import_customers(
            engine=base.db.engine,
            accounts_csv=files.accounts_csv,
            contacts_csv=files.contacts_csv,
            rejects_dir=base.tmp_path / "rejects-again",
        )
        assert result.accounts.inserted == result.accounts.updated == 0
        assert base.plan().reused


def _churned_before(base: Base, contact: int) -> None:
    with outside(base.db) as conn:
        conn.execute(
            text("UPDATE account SET lifecycle = 'churned' WHERE id = :a"),
            {"a": base.account_of(contact)},
        )


def _migrated_before(base: Base, contact: int) -> None:
    with outside(base.db) as conn:
        conn.execute(
            text("UPDATE account SET migration_state = 'migrated' WHERE id = :a"),
            {"a": base.account_of(contact)},
        )


def _suppressed_before(base: Base, contact: int) -> None:
    suppress(base.db, [base.one("SELECT email FROM contact WHERE id = :c", c=contact)], "bounce")


def _other_role_before(base: Base, contact: int) -> None:
    with outside(base.db) as conn:
        conn.execute(text("UPDATE contact SET role = 'other' WHERE id = :c"), {"c": contact})


def _standard_segment_before(base: Base, contact: int) -> None:
    with outside(base.db) as conn:
        conn.execute(
            text("UPDATE segment_assignment SET segment = 'standard' WHERE account_id = :a"),
            {"a": base.account_of(contact)},
        )


def _nothing(base: Base, contact: int) -> None:
    del base, contact


@dataclass(frozen=True)
class Change:
    """A change after the plan: ``before`` keeps the contact out of the first plan (or
    None), ``after`` is the change; ``adds``: the rerun must plan the contact."""

    before: Callable[[Base, int], None]
    after: str
    adds: bool = True


CHANGES = {
    "contact role": Change(
        _other_role_before, "UPDATE contact SET role = 'executive' WHERE id = :contact"
    ),
    "contact email": Change(
        _suppressed_before,
        "UPDATE contact SET email = 'moved-' || email WHERE id = :contact",
    ),
    "contact locale": Change(
        _nothing, "UPDATE contact SET locale = 'de' WHERE id = :contact", adds=False
    ),
    "contact timezone": Change(
        _nothing, "UPDATE contact SET timezone = 'Asia/Tokyo' WHERE id = :contact", adds=False
    ),
    "contact removed": Change(_nothing, "DELETE FROM contact WHERE id = :other", adds=False),
    "account lifecycle": Change(
        _churned_before, "UPDATE account SET lifecycle = 'active' WHERE id = :account"
    ),
    "account migration state": Change(
        _migrated_before, "UPDATE account SET migration_state = 'in_progress' WHERE id = :account"
    ),
    "account region": Change(
        _nothing, "UPDATE account SET region = 'apac' WHERE id = :account", adds=False
    ),
    "segment assignment": Change(
        _standard_segment_before,
        "UPDATE segment_assignment SET segment = 'early_adopter' WHERE account_id = :account",
    ),
    "suppression removed": Change(
        _suppressed_before,
        "DELETE FROM suppression WHERE email = (SELECT email FROM contact WHERE id = :contact)",
    ),
    "suppression changed": Change(
        _suppressed_before,
        "UPDATE suppression SET email = 'someone.else@example.com' "
        "WHERE email = (SELECT email FROM contact WHERE id = :contact)",
    ),
    "ledger row removed": Change(
        _nothing, "DELETE FROM delivery WHERE contact_id = :contact AND message = 'preview'"
    ),
}


class TestEveryChangeToTheInputsPlansAgain:
    @pytest.mark.parametrize("name", list(CHANGES))
    def test_a_change_by_raw_sql_is_planned_by_the_rerun(self, base: Base, name: str) -> None:
        """The rerun runs the plan again and the contact the change brings in is planned."""
        change = CHANGES[name]
        contact, other = base.eligible_contact(), base.eligible_contact(offset=1)
        change.before(base, contact)
        assert base.plan().planned > 0
        assert base.planned(contact) is (change.before is _nothing)
        assert base.plan().reused

        with outside(base.db) as conn:
            conn.execute(
                text(change.after),
                {"contact": contact, "other": other, "account": base.account_of(contact)},
            )
        with statements(base.db.engine) as seen:
            rerun = base.plan()

        assert not rerun.reused and len(audience_inserts(seen)) == 1
        assert base.planned(contact)
        if change.adds:
            assert rerun.planned >= 1
        assert base.plan().reused

    def test_a_new_contact_is_planned_by_the_rerun(self, base: Base) -> None:
        """A contact inserted after the plan, at an account in the audience."""
        base.plan()
        account = base.account_of(base.eligible_contact())
        with outside(base.db) as conn:
            conn.execute(
                text(
                    "INSERT INTO contact (account_id, email, role, locale, created_at, "
                    "updated_at) VALUES (:a, 'new.person@example.com', 'technical', 'en', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"a": account},
            )
        rerun = base.plan()
        new = base.one("SELECT id FROM contact WHERE email = 'new.person@example.com'")
        assert (rerun.planned, rerun.reused) == (1, False)
        assert base.planned(new)

    def test_herald_segmenting_the_same_day_again_plans_again(self, base: Base) -> None:
        """The segmentation flow re-run for the plan's day rewrites its rows: plan again."""
        base.plan()
        assign_segments(engine=base.db.engine, config=base.config.segments, as_of=DAY)
        assert not base.plan().reused

    def test_a_segmentation_of_a_later_day_plans_from_it(self, base: Base) -> None:
        """A new day's segmentation is another plan (its digest names the day)."""
        base.plan()
        later = DAY + timedelta(days=1)
        assign_segments(engine=base.db.engine, config=base.config.segments, as_of=later)
        rerun = planning.plan(base.db.engine, config=base.config, phase=PHASE, as_of=later)
        assert not rerun.reused and rerun.segmented_on == later

    def test_a_config_audience_change_plans_again(self, base: Base) -> None:
        """The preview's roles widened in campaign.yaml: the contacts it adds are planned."""
        base.plan()
        audiences = dict(base.config.campaign.audiences)
        audiences[PHASE] = audiences[PHASE].model_copy(
            update={"roles": ["executive", "technical", "other"]}
        )
        wider = replace(
            base.config, campaign=base.config.campaign.model_copy(update={"audiences": audiences})
        )
        rerun = base.plan(config=wider)
        assert not rerun.reused and rerun.planned > 0
        assert base.plan(config=wider).reused
        assert not base.plan().reused  # and back: the digest differs again (adds nothing)

    def test_a_notice_plan_is_stamped_per_message(self, base: Base) -> None:
        """A sunset notice goes through the same plan: reused when nothing changed, and its
        stamp is its own (another notice of the same segment is another plan)."""

        def notice(message: str) -> planning.PlanResult:
            return planning.plan(
                base.db.engine,
                config=base.config,
                phase="sunset",
                as_of=DAY,
                message=message,
                segments=["early_adopter"],
            )

        first = notice("sunset-t90@2027-06-30")
        again = notice("sunset-t90@2027-06-30")
        other = notice("sunset-t30@2027-06-30")
        assert first.planned > 0 and again.reused and not other.reused
        assert other.planned == first.planned


class TestTheTriggers:
    def test_every_watched_table_has_its_trigger_at_head(self, db: Database) -> None:
        """A migration that recreates a watched table (SQLite's batch mode) must recreate
        its triggers: without them no plan would ever be reused."""
        with db.engine.connect() as conn:
            assert stamps.watched(conn)

    def test_without_a_trigger_nothing_is_reused(self, base: Base) -> None:
        """A database missing one trigger never trusts a stamp."""
        base.plan()
        with base.db.engine.begin() as conn:
            if base.db.backend == "postgres":
                conn.execute(text("ALTER TABLE contact DISABLE TRIGGER herald_audience_contact"))
            else:
                conn.execute(text("DROP TRIGGER herald_audience_contact_insert"))
        try:
            assert not base.plan().reused
        finally:
            if base.db.backend == "postgres":
                with base.db.engine.begin() as conn:
                    conn.execute(text("ALTER TABLE contact ENABLE TRIGGER herald_audience_contact"))

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    def test_a_count_on_sqlite_does_not_wait_for_a_long_writer(
        self, db: Database, tmp_path: Path
    ) -> None:
        """SQLite: clearing the dirty flag needs the write lock; a count (a dry run) held up
        by an import counts all the same, without a basis for the plan's stamp."""
        base = Base(db, load_base(db, tmp_path, accounts=20), tmp_path)  # dirty: segmented
        engine = create_engine(db.url)
        try:
            with engine.connect() as conn:
                conn.exec_driver_sql("BEGIN IMMEDIATE")  # a writer holding the lock
                counted = planning.count_audience(
                    db.engine, config=base.config, phase=PHASE, as_of=DAY
                )
                conn.exec_driver_sql("ROLLBACK")
        finally:
            engine.dispose()
        with db.engine.connect() as conn:
            assert counted.counts == audience_counts(conn, base.config, PHASE, DAY)
        assert counted.basis is None
        base.plan(counted=counted)
        assert planning.count_audience(
            db.engine, config=base.config, phase=PHASE, as_of=DAY
        ).basis  # no count on the stamp: counted now, with a basis

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    def test_sqlite_recovers_from_a_removed_version_row(self, db: Database, tmp_path: Path) -> None:
        """SQLite: the version row deleted by hand: nothing is reused until a plan has
        written it again, at a version no earlier stamp has."""
        base = Base(db, load_base(db, tmp_path, accounts=20), tmp_path)
        base.plan()
        with outside(db) as conn:
            conn.execute(text("DELETE FROM audience_version"))
        assert not base.plan().reused
        assert base.plan().reused


@pytest.mark.parametrize(
    "db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)
class TestConcurrentWriters:
    def test_a_writer_committing_after_the_plans_snapshot_leaves_the_stamp_stale(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Postgres: a contact inserted by a transaction still open while the plan runs (not
        in its snapshot), committed after it, is planned by the next run."""
        base = Base(db, load_base(db, tmp_path, accounts=20), tmp_path)
        account = base.account_of(base.eligible_contact())
        writer = create_engine(db.url)
        try:
            with writer.connect() as conn:
                transaction = conn.begin()
                conn.execute(
                    text(
                        "INSERT INTO contact (account_id, email, role, locale, created_at, "
                        "updated_at) VALUES (:a, 'late@example.com', 'executive', 'en', now(), "
                        "now())"
                    ),
                    {"a": account},
                )
                first = base.plan()
                transaction.commit()
        finally:
            writer.dispose()
        new = base.one("SELECT id FROM contact WHERE email = 'late@example.com'")
        assert first.planned > 0 and not base.planned(new)
        rerun = base.plan()
        assert (rerun.reused, rerun.planned) == (False, 1) and base.planned(new)

    def test_a_writer_committing_while_the_plan_runs_is_planned_now_or_next_time(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Postgres: a writer that commits between the plan's version and its INSERT is in
        the INSERT's snapshot (planned now), and the stamp is stale (the next run plans
        again, adding nothing): never reused over a change it did not see."""
        base = Base(db, load_base(db, tmp_path, accounts=20), tmp_path)
        account = base.account_of(base.eligible_contact())
        writer = create_engine(db.url)
        committed = threading.Event()
        try:
            with writer.connect() as conn:
                transaction = conn.begin()
                conn.execute(
                    text(
                        "INSERT INTO contact (account_id, email, role, locale, created_at, "
                        "updated_at) VALUES (:a, 'during@example.com', 'executive', 'en', "
                        "now(), now())"
                    ),
                    {"a": account},
                )

                def commit_before_insert(*args: Any) -> None:
                    if "INSERT INTO delivery" in str(args[2]) and not committed.is_set():
                        transaction.commit()
                        committed.set()

                event.listen(base.db.engine, "before_cursor_execute", commit_before_insert)
                try:
                    first = base.plan()
                finally:
                    event.remove(base.db.engine, "before_cursor_execute", commit_before_insert)
        finally:
            writer.dispose()
        new = base.one("SELECT id FROM contact WHERE email = 'during@example.com'")
        assert committed.is_set() and base.planned(new) and first.planned > 0
        rerun = base.plan()
        assert (rerun.reused, rerun.planned) == (False, 0)
        assert base.plan().reused
