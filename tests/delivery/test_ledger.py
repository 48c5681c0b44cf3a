"""The delivery ledger on both databases: planning, claims, recovery, settling, pausing."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections import Counter
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path

import pytest
from sqlalchemy import select, text, update

from herald.config import HeraldConfig
from herald.delivery import controls, ledger, planning
from herald.delivery.audience import NoSegmentation
from herald.delivery.keys import Outcome
from herald.delivery.recovery import Recovery, recover, resolve, start_worker, unknown_rows
from herald.delivery.sender import PhaseSender, RateLimiter, Renderer
from herald.delivery.transports import BatchResult, OutgoingBatch, Prepared
from herald.models import AUDIT_LOG, SEND_BATCH, SEND_WORKER, as_utc
from tests.support.bases import (
    DAY,
    config,
    eligible,
    ledger_emails,
    load_base,
    some_contacts,
    suppress,
)
from tests.support.environment import Database

CAMPAIGN = "modular-migration-2027"


def states(db: Database, phase: str = "announcement") -> dict[str, int]:
    with db.engine.connect() as conn:
        counts = ledger.state_counts(conn, campaign=CAMPAIGN, message=phase)
    return {state: count for state, count in counts.items() if count}


def dead_pid() -> int:
    """The pid of a process that has exited (and been reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class TestPlanning:
    def test_plan_inserts_the_eligible_audience_once(self, db: Database, tmp_path: Path) -> None:
        """Exactly the eligible contacts are planned; suppressed ones are not; a rerun adds 0."""
        loaded = load_base(db, tmp_path)
        suppressed = some_contacts(db, 3)
        suppress(db, suppressed)
        expected = eligible(db, loaded, "announcement")

        first = planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        again = planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)

        planned = ledger_emails(db, "announcement")
        assert first.planned == len(expected) > 300
        assert again.planned == 0
        assert Counter(planned) == Counter(expected)
        assert not set(suppressed) & set(planned)
        assert first.segmented_on == DAY

    @pytest.mark.parametrize("parts", [2, 3])
    def test_a_large_audience_planned_in_parts_is_the_audience_once(
        self, db: Database, tmp_path: Path, parts: int, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """On Postgres a large audience is planned in parts side by side, one per span of
        contact ids (here any audience is large): the same rows as one statement, each once,
        and a rerun adds none. SQLite, with one writer, plans in one statement."""
        monkeypatch.setattr(planning, "PLAN_PARTS_FROM", 1)
        monkeypatch.setattr(planning, "PLAN_PARTS", parts)
        loaded = load_base(db, tmp_path)
        expected = eligible(db, loaded, "announcement")
        with db.engine.connect() as conn:
            spans = planning._contact_spans(conn)
            contacts = list(conn.execute(text("SELECT id FROM contact")).scalars())
        if db.backend == "postgres":
            assert len(spans) == parts
            assert sorted(
                i for i in contacts for span in spans if span and span[0] <= i <= span[1]
            ) == sorted(contacts)
        else:
            assert spans == [None]

        first = planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        again = planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)

        assert first.planned == len(expected) > 300
        assert again.planned == 0 and again.reused
        assert Counter(ledger_emails(db, "announcement")) == Counter(expected)

    def test_the_preview_phase_plans_only_its_segments_and_roles(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Phase 1 goes to early adopters' executives and engineers, nobody else."""
        loaded = load_base(db, tmp_path)
        planning.plan(db.engine, config=loaded, phase="preview", as_of=DAY)
        with db.engine.connect() as conn:
            variants = set(conn.execute(text("SELECT DISTINCT segment, role FROM delivery")).all())
        assert variants == {("early_adopter", "executive"), ("early_adopter", "technical")}
        assert set(ledger_emails(db, "preview")) == eligible(db, loaded, "preview")

    def test_a_contacts_locale_maps_to_the_campaign_locale_of_its_language(
        self, db: Database, tmp_path: Path
    ) -> None:
        """en-GB is planned as en, de-AT as de, pt as pt-BR, a language the campaign does not
        write (it) as the default (herald.i18n.match_locale, the same rule in SQL)."""
        loaded = load_base(db, tmp_path)
        contacts = sorted(eligible(db, loaded, "announcement"))[:4]
        wanted = dict(zip(contacts, ["en-GB", "de-AT", "pt", "it"], strict=True))
        with db.engine.begin() as conn:
            for address, locale in wanted.items():
                conn.execute(
                    text("UPDATE contact SET locale = :l WHERE email = :e"),
                    {"l": locale, "e": address},
                )
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        with db.engine.connect() as conn:
            locales = set(conn.execute(text("SELECT DISTINCT locale FROM delivery")).scalars())
            planned = dict(
                conn.execute(
                    text(
                        "SELECT c.email, d.locale FROM delivery d "
                        "JOIN contact c ON c.id = d.contact_id"
                    )
                ).all()
            )
        assert locales <= set(loaded.campaign.locales)
        assert [planned[a] for a in contacts] == ["en", "de", "pt-BR", "en"]

    def test_planning_without_a_segmentation_says_what_to_run(self, db: Database) -> None:
        """No segmentation yet: a clear error naming the command, nothing planned."""
        with pytest.raises(NoSegmentation, match="herald segment --as-of 2026-11-24"):
            planning.plan(db.engine, config=config(), phase="announcement", as_of=DAY)
        assert db.count("delivery") == 0

    def test_rows_that_became_ineligible_are_suppressed_before_sending(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Unsubscribed, churned and migrated since planning: suppressed, each with its reason."""
        loaded = load_base(db, tmp_path)
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        # Contacts come three to an account: every third one is at another account.
        unsubscribed, churned_contact, migrated_contact = some_contacts(db, 9, offset=30)[::3]
        suppress(db, [unsubscribed], reason="unsubscribe")
        with db.engine.begin() as conn:
            for email, change in (
                (churned_contact, "lifecycle = 'churned'"),
                (migrated_contact, "migration_state = 'migrated'"),
            ):
                conn.execute(
                    text(
                        f"UPDATE account SET {change} WHERE id = "
                        "(SELECT account_id FROM contact WHERE email = :email)"
                    ),
                    {"email": email},
                )

        counts = planning.suppress_ineligible(db.engine, config=loaded, phase="announcement")

        with db.engine.connect() as conn:
            errors = dict(
                conn.execute(
                    text(
                        "SELECT c.email, d.error FROM delivery d JOIN contact c "
                        "ON c.id = d.contact_id WHERE d.state = 'suppressed'"
                    )
                ).all()
            )
        assert errors[unsubscribed] == "address suppressed: unsubscribe"
        assert errors[churned_contact] == "account churned"
        assert errors[migrated_contact] == "account migrated"
        assert counts["address suppressed"] == 1
        assert sum(counts.values()) == len(errors)


class TestClaims:
    @staticmethod
    def _claimed_twice(
        db: Database, tmp_path: Path, limit: int
    ) -> tuple[int, ledger.Claim, ledger.Claim]:
        """The announcement planned (how many rows) and two claims of ``limit`` rows."""
        loaded = load_base(db, tmp_path)
        planned = planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY).planned
        worker = start_worker(
            db.engine, campaign=CAMPAIGN, message="announcement", transport="outbox"
        )
        first = ledger.claim(db.engine, worker=worker, limit=limit)
        second = ledger.claim(db.engine, worker=worker, limit=limit)
        assert first is not None and second is not None
        return planned, first, second

    def test_claims_take_the_lowest_planned_rows_and_never_overlap(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Two claims of 100 get 200 distinct rows, each batch recorded with its size."""
        _, first, second = self._claimed_twice(db, tmp_path, 100)
        ids_1 = [row.delivery_id for row in first.rows]
        ids_2 = [row.delivery_id for row in second.rows]
        assert len(ids_1) == len(ids_2) == 100
        assert max(ids_1) < min(ids_2)
        assert states(db)["sending"] == 200
        with db.engine.connect() as conn:
            sizes = dict(conn.execute(text("SELECT id, recipients FROM send_batch")).all())
        assert sizes == {first.batch_id: 100, second.batch_id: 100}

    def test_a_batch_finds_its_rows_by_the_id_range_its_claim_took(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A claim records its lowest and highest ledger id on the batch; the batch's record
        and release move exactly its rows, and a batch with no range (a report's, or one
        claimed before the range was kept) still finds them."""
        planned, first, second = self._claimed_twice(db, tmp_path, 50)
        ids = [row.delivery_id for row in first.rows]
        with db.engine.connect() as conn:
            ranges = {
                batch: (low, high)
                for batch, low, high in conn.execute(
                    text("SELECT id, first_row_id, last_row_id FROM send_batch")
                )
            }
        assert ranges[first.batch_id] == (min(ids), max(ids))

        ledger.mark_requesting(db.engine, batch_id=first.batch_id)
        ledger.record(db.engine, batch_id=first.batch_id, outcome=Outcome.ACCEPTED, requests=1)
        assert states(db) == {"accepted": 50, "sending": 50, "planned": planned - 100}

        with db.engine.begin() as conn:  # as a batch claimed before migration 0016
            conn.execute(
                update(SEND_BATCH)
                .where(SEND_BATCH.c.id == second.batch_id)
                .values(first_row_id=None, last_row_id=None)
            )
        ledger.release(db.engine, batch_id=second.batch_id, reason="test")
        assert states(db) == {"accepted": 50, "planned": planned - 50}

    def test_concurrent_claimers_never_share_a_row(self, db: Database, tmp_path: Path) -> None:
        """Six threads (three senders, two batches in flight each) claiming the same phase
        until it is empty: every row claimed once; the claims took turns, each taking the
        lowest rows left, so every batch but the last is full and they follow one another;
        each batch's recorded size and range its own rows'."""
        loaded = load_base(db, tmp_path, accounts=300)
        planned = planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY).planned
        batches: dict[str, list[int]] = {}
        lock = threading.Lock()
        problems: list[BaseException] = []
        workers = [
            start_worker(db.engine, campaign=CAMPAIGN, message="announcement", transport="outbox")
            for _ in range(3)
        ]

        def claimer(worker: ledger.Worker) -> None:
            try:
                while (
                    batch := ledger.claim(db.engine, worker=worker, limit=25, heartbeat_every=30)
                ) is not None:
                    with lock:
                        batches[batch.batch_id] = [row.delivery_id for row in batch.rows]
            except BaseException as error:  # surface a thread's failure in the test
                problems.append(error)

        threads = [threading.Thread(target=claimer, args=(w,)) for w in workers * 2]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        assert not problems
        claimed = [row for rows in batches.values() for row in rows]
        assert len(claimed) == len(set(claimed)) == planned
        assert all(0 < len(rows) <= 25 and rows == sorted(rows) for rows in batches.values())
        in_turn = sorted(batches.values())
        assert [row for rows in in_turn for row in rows] == sorted(claimed)
        assert [len(rows) for rows in in_turn[:-1]] == [25] * (len(in_turn) - 1)
        with db.engine.connect() as conn:
            recorded = {
                batch: (size, low, high)
                for batch, size, low, high in conn.execute(
                    text("SELECT id, recipients, first_row_id, last_row_id FROM send_batch")
                )
            }
        assert recorded == {
            batch: (len(rows), rows[0], rows[-1]) for batch, rows in batches.items()
        }

    def test_a_claim_writes_the_heartbeat_once_its_interval_has_passed(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A claim proves its sender alive when ``heartbeat_every`` seconds have passed since
        the last heartbeat, and leaves it otherwise (a sender's batches in flight would
        queue on its worker row); with 0, every claim writes it."""
        loaded = load_base(db, tmp_path)
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = start_worker(
            db.engine, campaign=CAMPAIGN, message="announcement", transport="outbox"
        )
        beat = datetime.combine(DAY, time(12), tzinfo=UTC)

        def heartbeat() -> datetime:
            with db.engine.connect() as conn:
                value = conn.execute(
                    select(SEND_WORKER.c.heartbeat_at).where(SEND_WORKER.c.id == worker.id)
                ).scalar_one()
            return as_utc(value)

        def claim_at(seconds: float, every: float) -> None:
            at = ledger.Gate(now=beat + timedelta(seconds=seconds))
            assert ledger.claim(db.engine, worker=worker, limit=5, gate=at, heartbeat_every=every)

        with db.engine.begin() as conn:
            conn.execute(
                update(SEND_WORKER).where(SEND_WORKER.c.id == worker.id).values(heartbeat_at=beat)
            )
        claim_at(29, every=30)
        assert heartbeat() == beat
        claim_at(30, every=30)
        assert heartbeat() == beat + timedelta(seconds=30)
        claim_at(31, every=0)
        assert heartbeat() == beat + timedelta(seconds=31)


class TestRecovery:
    def _claimed_twice(
        self, db: Database, tmp_path: Path, pid: int
    ) -> tuple[HeraldConfig, ledger.Claim, ledger.Claim]:
        loaded = load_base(db, tmp_path)
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = start_worker(
            db.engine, campaign=CAMPAIGN, message="announcement", transport="sendgrid"
        )
        with db.engine.begin() as conn:
            conn.execute(update(SEND_WORKER).where(SEND_WORKER.c.id == worker.id).values(pid=pid))
        unrequested = ledger.claim(db.engine, worker=worker, limit=40)
        in_flight = ledger.claim(db.engine, worker=worker, limit=30)
        assert unrequested is not None and in_flight is not None
        ledger.mark_requesting(db.engine, batch_id=in_flight.batch_id)
        return loaded, unrequested, in_flight

    def test_a_dead_senders_batches_are_released_or_made_unknown(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Unrequested rows go back to planned; rows whose request had left become unknown."""
        loaded, _, in_flight = self._claimed_twice(db, tmp_path, dead_pid())
        before = states(db)

        recovery = recover(db.engine, campaign=CAMPAIGN, message="announcement", lease_seconds=300)

        assert recovery == Recovery(workers=1, released=40, unknown=30)
        after = states(db)
        assert after["unknown"] == 30
        assert after["planned"] == before["planned"] + 40
        assert "sending" not in after
        with db.engine.connect() as conn:
            unknown = unknown_rows(conn, campaign=CAMPAIGN, message="announcement")
            actions = list(conn.execute(select(AUDIT_LOG.c.action)).scalars())
        assert {row.batch_id for row in unknown} == {in_flight.batch_id}
        assert "sender.recovered" in actions
        # A second look finds nothing more to do.
        assert (
            recover(db.engine, campaign=CAMPAIGN, message="announcement", lease_seconds=300).workers
            == 0
        )
        assert loaded.campaign.id == CAMPAIGN

    def test_a_live_sender_is_left_alone(self, db: Database, tmp_path: Path) -> None:
        """A sender whose process is alive keeps its claims, however old."""
        # Alive until killed, however long the test takes (it waits on its stdin).
        with subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        ) as sleeper:
            try:
                self._claimed_twice(db, tmp_path, sleeper.pid)
                assert (
                    recover(
                        db.engine, campaign=CAMPAIGN, message="announcement", lease_seconds=300
                    ).workers
                    == 0
                )
                assert states(db)["sending"] == 70
            finally:
                sleeper.kill()

    def test_resolving_unknown_rows_resends_or_marks_them_sent(
        self, db: Database, tmp_path: Path
    ) -> None:
        """--resend plans them again; --mark-sent accepts them; both are audited."""
        _, _, in_flight = self._claimed_twice(db, tmp_path, dead_pid())
        recover(db.engine, campaign=CAMPAIGN, message="announcement", lease_seconds=300)
        with db.engine.connect() as conn:
            unknown = unknown_rows(conn, campaign=CAMPAIGN, message="announcement")
        resent_ids = {row.delivery_id for row in unknown[:10]}
        with db.engine.begin() as conn:
            ids = ", ".join(str(i) for i in resent_ids)
            conn.execute(text(f"UPDATE delivery SET batch_id = 'other' WHERE id IN ({ids})"))

        resent = resolve(
            db.engine,
            campaign=CAMPAIGN,
            message="announcement",
            resolution="resend",
            batch_ids=["other"],
        )
        marked = resolve(
            db.engine, campaign=CAMPAIGN, message="announcement", resolution="mark-sent"
        )

        assert (resent, marked) == (10, 20)
        assert states(db).get("unknown") is None
        assert states(db)["accepted"] == 20
        with db.engine.connect() as conn:
            actions = list(conn.execute(select(AUDIT_LOG.c.action)).scalars())
        assert {"deliveries.resend", "deliveries.mark-sent"} <= set(actions)
        assert in_flight.batch_id


class FailingTransport:
    """A provider that refuses every request (a 4xx): the circuit breaker's case."""

    name = "failing"

    def __init__(self) -> None:
        self.batches = 0

    def prepare(self, batch: OutgoingBatch) -> Prepared:
        return Prepared(batch, {}, None)

    def send(self, prepared: Prepared, before_retry: object = None) -> BatchResult:  # noqa: ARG002
        assert prepared.batch.recipients
        self.batches += 1
        return BatchResult("failed", 1, 400, error="HTTP 400 from SendGrid: refused")


class TestPhaseControl:
    def _sender(self, db: Database, tmp_path: Path) -> tuple[PhaseSender, FailingTransport]:
        loaded = load_base(db, tmp_path)
        # Batches of 100, so the breaker (min_sample 200) sees two before it may trip.
        sending = loaded.campaign.sending.model_copy(update={"batch_size": 100})
        loaded = replace(loaded, campaign=loaded.campaign.model_copy(update={"sending": sending}))
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = start_worker(
            db.engine, campaign=CAMPAIGN, message="announcement", transport="failing"
        )
        transport = FailingTransport()
        sender = PhaseSender(
            engine=db.engine,
            config=loaded,
            phase="announcement",
            worker=worker,
            transport=transport,
            renderer=Renderer(loaded),
            window=False,
        )
        return sender, transport

    def test_the_circuit_breaker_pauses_the_phase_and_says_why(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Failures past the threshold pause the phase; nothing more is claimed until resume."""
        sender, transport = self._sender(db, tmp_path)
        outcomes = []
        while not (outcome := sender.send_batch()).paused:
            outcomes.append(outcome)
        # 100 failed sends are below the sample size; 200 trip it.
        assert len(outcomes) == 1 and outcome.outcome == "failed"
        assert outcome.paused and "failure rate 100.0%" in outcome.paused
        batches = transport.batches
        after_pause = sender.send_batch()
        assert after_pause.batch_id is None and after_pause.paused == outcome.paused
        assert transport.batches == batches
        with db.engine.connect() as conn:
            audit = conn.execute(select(AUDIT_LOG.c.action, AUDIT_LOG.c.actor)).all()
            assert ("phase.paused", "herald circuit breaker") in set(audit)

        controls.set_paused(
            db.engine, campaign=CAMPAIGN, message="announcement", paused=False, reason="fixed"
        )
        sender.counts.failed = 0  # an operator who resumes has fixed the cause
        assert sender.send_batch().batch_id is not None

    def test_an_operator_pause_stops_sending_within_one_batch(
        self, db: Database, tmp_path: Path
    ) -> None:
        """After `phase pause`, the next batch claims nothing; resume continues."""
        sender, transport = self._sender(db, tmp_path)
        controls.set_paused(
            db.engine, campaign=CAMPAIGN, message="announcement", paused=True, reason="legal review"
        )
        outcome = sender.send_batch()
        assert outcome.batch_id is None and outcome.paused == "legal review"
        assert transport.batches == 0
        assert "sending" not in states(db)


class TestRateLimiter:
    def test_the_cumulative_pace_never_runs_ahead_of_the_rate(self) -> None:
        """At 500 messages/s, batches of 1,000 leave 2 s apart, whatever the clock says."""
        now = [100.0]
        slept: list[float] = []

        def sleep(seconds: float) -> None:
            slept.append(seconds)
            now[0] += seconds

        limiter = RateLimiter(500, clock=lambda: now[0], sleep=sleep)
        for _ in range(3):
            limiter.acquire(1000)
            now[0] += 0.1  # the request itself
        assert slept == pytest.approx([2.0, 1.9, 1.9])
        assert 3000 / (now[0] - 100.0) <= 500 * 1.06

    def test_no_rate_means_no_wait(self) -> None:
        """Without a configured rate nothing waits."""
        assert RateLimiter(None).acquire(1000) == 0.0
