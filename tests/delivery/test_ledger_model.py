"""Model-based test of the send ledger (Hypothesis ``RuleBasedStateMachine``).

The machine drives Herald's ledger functions (the same ones the sender and the flows call)
against a real SQLite database, and keeps its own model of SendGrid: which ledger keys it
accepted, and the events it owes Herald's webhook for them. Rules: claim a batch, start its
request, answer it (2xx; 429 or 5xx retried, then accepted; 5xx until the tries run out;
an ambiguous answer after which SendGrid did or did not accept it), crash the sender (its
requests in flight accepted or not), restart (recovery), deliver webhook events (some,
duplicated, out of order, possibly before the request's answer), pause and resume; and
planning again: a contact added (by raw SQL) or a column the audience does not read
changed meanwhile. The plan must be reused exactly when nothing it reads changed since the
last plan (its stamp), and otherwise add exactly the contacts not yet in the ledger.

Invariant after every step: SendGrid accepted each ledger key at most once. At the end, the
operator's procedure (resume, recover, let every owed event arrive, re-send what is still
unknown or failed, send the rest) leaves exactly one accepted send for every planned,
unsuppressed key (every contact added along the way included), and the ledger agrees with
SendGrid.

Examples: ``HERALD_MODEL_EXAMPLES`` (``make test``: 60; ``make chaos``: 1,000).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
)
from sqlalchemy import Engine, insert, select, text

from herald.customers.segmentation import assign_segments
from herald.db import get_engine, upgrade
from herald.delivery import controls, ledger, planning, recovery
from herald.models import ACCOUNT, CONTACT, DELIVERY, DeliveryState
from herald.telemetry.event_effects import apply_events
from tests.support.bases import DAY, config

EXAMPLES = int(os.environ.get("HERALD_MODEL_EXAMPLES", "60"))
PHASE = "announcement"
CONTACTS = 14


def _template() -> Path:
    """A migrated SQLite file with 14 contacts on 7 active accounts, segmented (built once)."""
    folder = Path(tempfile.mkdtemp(prefix="herald-model-"))
    path = folder / "template.db"
    url = f"sqlite:///{path}"
    upgrade(url)
    engine = get_engine(url)
    now = datetime.now(UTC)
    with engine.begin() as conn:
        conn.execute(
            insert(ACCOUNT),
            [
                {
                    "id": a,
                    "external_id": f"M{a}",
                    "name": f"Model {a}",
                    "tier": "pro",
                    "region": "na",
                    "lifecycle": "active",
                    "migration_state": "not_started",
                    "attributes": {},
                    "created_at": now,
                    "updated_at": now,
                }
                for a in range(1, CONTACTS // 2 + 1)
            ],
        )
        conn.execute(
            insert(CONTACT),
            [
                {
                    "id": c,
                    "account_id": (c + 1) // 2,
                    "email": f"m{c}@model.example.com",
                    "role": "executive" if c % 2 else "technical",
                    "created_at": now,
                    "updated_at": now,
                }
                for c in range(1, CONTACTS + 1)
            ],
        )
    assign_segments(engine=engine, config=config().segments, as_of=DAY)
    engine.dispose()
    return path


TEMPLATE: Path | None = None


@dataclass
class Request:
    claim: ledger.Claim
    started: bool = False
    accepted: bool = False  # SendGrid took it before its answer reached Herald


@dataclass
class SendGridModel:
    """What SendGrid did: accepted keys (with counts) and the events it still owes."""

    accepted: Counter[str] = field(default_factory=Counter)
    owed: list[dict[str, Any]] = field(default_factory=list)
    number: int = 0

    def accept(self, keys: list[str]) -> None:
        for key in keys:
            self.accepted[key] += 1
            self.number += 1
            contact = key.rpartition("/")[2]
            self.owed.append(
                {
                    "event": "delivered",
                    "email": f"m{contact}@model.example.com",
                    "sg_event_id": f"model-{self.number}",
                    "timestamp": int(datetime.now(UTC).timestamp()),
                    "herald_key": key,
                }
            )


class LedgerMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        global TEMPLATE
        if TEMPLATE is None:
            TEMPLATE = _template()
        self.folder = Path(tempfile.mkdtemp(prefix="herald-model-run-"))
        shutil.copy(TEMPLATE, self.folder / "herald.db")
        self.engine: Engine = get_engine(f"sqlite:///{self.folder / 'herald.db'}")
        self.config = config()
        self.campaign = self.config.campaign.id
        self.sendgrid = SendGridModel()
        self.requests: list[Request] = []
        self.paused = False
        self.keys: set[str] = set()
        self.audience = set(range(1, CONTACTS + 1))  # contact ids the phase goes to
        self.stamp_current = False  # nothing the plan reads changed since the last plan

    def teardown(self) -> None:
        self.engine.dispose()
        shutil.rmtree(self.folder, ignore_errors=True)

    # ------------------------------------------------------------------ helpers

    def key(self, row: ledger.ClaimedRow) -> str:
        return f"{self.campaign}/{PHASE}/{row.contact_id}"

    def keys_of(self, request: Request) -> list[str]:
        return [self.key(row) for row in request.claim.rows]

    def new_worker(self) -> None:
        self.worker = recovery.start_worker(
            self.engine, campaign=self.campaign, message=PHASE, transport="model"
        )

    # ------------------------------------------------------------------ rules

    def plan_again(self) -> None:
        """Plan: reused exactly when nothing changed; else the contacts not yet planned."""
        before = len(self.keys)
        result = planning.plan(self.engine, config=self.config, phase=PHASE, as_of=DAY)
        assert result.reused == self.stamp_current, result
        assert result.planned == len(self.audience) - before
        self.stamp_current = True
        with self.engine.connect() as conn:
            ids = conn.execute(
                select(DELIVERY.c.contact_id).where(DELIVERY.c.message == PHASE)
            ).scalars()
            self.keys = {f"{self.campaign}/{PHASE}/{c}" for c in ids}
        assert self.keys == {f"{self.campaign}/{PHASE}/{c}" for c in self.audience}

    @initialize()
    def plan(self) -> None:
        self.plan_again()
        assert len(self.keys) == CONTACTS
        self.new_worker()

    @rule()
    def replan(self) -> None:
        """A rerun of the phase plans again (while batches may be in flight)."""
        self.plan_again()

    @rule(account=st.integers(1, CONTACTS // 2))
    def add_contact(self, account: int) -> None:
        """Someone outside Herald adds a contact to an account in the audience."""
        contact = max(self.audience) + 1
        with self.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO contact (id, account_id, email, role, locale, created_at, "
                    "updated_at) VALUES (:id, :a, :email, 'executive', 'en', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP)"
                ),
                {"id": contact, "a": account, "email": f"m{contact}@model.example.com"},
            )
        self.audience.add(contact)
        self.stamp_current = False

    @rule(contact=st.integers(1, CONTACTS))
    def rename_contact(self, contact: int) -> None:
        """A column the audience does not read changes: the plan stays current."""
        with self.engine.begin() as conn:
            conn.execute(text("UPDATE contact SET name = 'Renamed' WHERE id = :c"), {"c": contact})

    @rule(size=st.integers(1, 5))
    def claim(self, size: int) -> None:
        with self.engine.connect() as conn:
            paused = controls.paused_reason(conn, campaign=self.campaign, message=PHASE)
        assert (paused is not None) == self.paused
        if paused:  # the sender checks before every claim
            return
        claimed = ledger.claim(self.engine, worker=self.worker, limit=size)
        if claimed is not None:
            self.requests.append(Request(claimed))

    @precondition(lambda self: any(not r.started for r in self.requests))
    @rule()
    def start_request(self) -> None:
        request = next(r for r in self.requests if not r.started)
        ledger.mark_requesting(self.engine, batch_id=request.claim.batch_id)
        request.started = True

    @precondition(lambda self: any(r.started and not r.accepted for r in self.requests))
    @rule()
    def sendgrid_accepts_before_answering(self) -> None:
        """The request reached SendGrid and was accepted; the answer is still on its way
        (and the events for it may arrive first)."""
        request = next(r for r in self.requests if r.started and not r.accepted)
        self.sendgrid.accept(self.keys_of(request))
        request.accepted = True

    @precondition(lambda self: any(r.started for r in self.requests))
    @rule(
        answer=st.sampled_from(
            ["2xx", "429-then-2xx", "5xx-then-2xx", "5xx-exhausted", "4xx", "ambiguous"]
        ),
        accepted_anyway=st.booleans(),
    )
    def answer(self, answer: str, accepted_anyway: bool) -> None:
        request = next(r for r in self.requests if r.started)
        self.requests.remove(request)
        batch_id, keys = request.claim.batch_id, self.keys_of(request)
        if request.accepted and answer not in ("2xx", "ambiguous"):
            answer = "ambiguous"  # accepted: only a 2xx or no answer can follow
        if answer in ("2xx", "429-then-2xx", "5xx-then-2xx"):
            if not request.accepted:
                self.sendgrid.accept(keys)
            tries = 1 if answer == "2xx" else 2
            ledger.record(
                self.engine, batch_id=batch_id, outcome="accepted", requests=tries, http_status=202
            )
        elif answer in ("5xx-exhausted", "4xx"):
            ledger.record(
                self.engine, batch_id=batch_id, outcome="failed", requests=1, http_status=500
            )
        else:  # the connection reset after the request was written
            if accepted_anyway and not request.accepted:
                self.sendgrid.accept(keys)
            ledger.record(
                self.engine, batch_id=batch_id, outcome="unknown", requests=1, error="reset"
            )

    @rule(accepted=st.lists(st.booleans(), max_size=8))
    def crash_and_restart(self, accepted: list[bool]) -> None:
        """The sender dies: requests in flight may have been accepted; a new one recovers."""
        for index, request in enumerate(self.requests):
            took = accepted[index] if index < len(accepted) else False
            if request.started and took and not request.accepted:
                self.sendgrid.accept(self.keys_of(request))
        self.requests = []
        self.new_worker()
        recovery.recover(
            self.engine, campaign=self.campaign, message=PHASE, lease_seconds=60.0, by=self.worker
        )

    @precondition(lambda self: bool(self.sendgrid.owed))
    @rule(
        data=st.data(),
        duplicate=st.booleans(),
        reverse=st.booleans(),
    )
    def webhook(self, data: st.DataObject, duplicate: bool, reverse: bool) -> None:
        """Some owed events arrive, maybe twice, maybe in reverse order."""
        owed = self.sendgrid.owed
        count = data.draw(st.integers(1, len(owed)))
        batch = owed[:count]
        del owed[:count]
        if reverse:
            batch = list(reversed(batch))
        with self.engine.begin() as conn:
            apply_events(conn, events=batch)
        if duplicate:
            with self.engine.begin() as conn:
                apply_events(conn, events=batch)

    @rule()
    def toggle_pause(self) -> None:
        self.paused = not self.paused
        reason = "paused by the model" if self.paused else "resumed by the model"
        controls.set_paused(
            self.engine,
            campaign=self.campaign,
            message=controls.CAMPAIGN_WIDE,
            paused=self.paused,
            reason=reason,
        )

    # ------------------------------------------------------------------ invariants

    @invariant()
    def never_accepted_twice(self) -> None:
        twice = [key for key, n in self.sendgrid.accepted.items() if n > 1]
        assert not twice, twice

    @invariant()
    def the_ledger_never_claims_a_send_sendgrid_did_not_make(self) -> None:
        with self.engine.connect() as conn:
            accepted = set(
                conn.execute(
                    select(DELIVERY.c.contact_id).where(
                        DELIVERY.c.state == DeliveryState.ACCEPTED.value
                    )
                ).scalars()
            )
        assert {f"{self.campaign}/{PHASE}/{c}" for c in accepted} <= set(self.sendgrid.accepted)

    def finish(self) -> None:
        """The operator's procedure after everything settles, then the final check."""
        if self.paused:
            self.toggle_pause()
        self.crash_and_restart([])  # whatever was in flight is unknown now (nothing accepted)
        if self.sendgrid.owed:
            with self.engine.begin() as conn:
                apply_events(conn, events=self.sendgrid.owed)
            self.sendgrid.owed = []
        recovery.resolve(
            self.engine,
            campaign=self.campaign,
            message=PHASE,
            resolution="resend",
            include_failed=True,
        )
        self.plan_again()  # the rerun: whoever was added since the last plan is planned
        while (claimed := ledger.claim(self.engine, worker=self.worker, limit=5)) is not None:
            request = Request(claimed, started=True)
            ledger.mark_requesting(self.engine, batch_id=claimed.batch_id)
            self.sendgrid.accept(self.keys_of(request))
            ledger.record(self.engine, batch_id=claimed.batch_id, outcome="accepted", requests=1)
        self.never_accepted_twice()
        assert set(self.sendgrid.accepted) == self.keys
        with self.engine.connect() as conn:
            counts = ledger.state_counts(conn, campaign=self.campaign, message=PHASE)
        assert counts[DeliveryState.ACCEPTED.value] == len(self.audience), counts


class FinishingMachine(LedgerMachine):
    def teardown(self) -> None:
        try:
            self.finish()
        finally:
            super().teardown()


FinishingMachine.TestCase.settings = settings(
    max_examples=EXAMPLES,
    stateful_step_count=30,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
class TestLedgerModel(FinishingMachine.TestCase):  # type: ignore[name-defined,misc]
    """At most one accepted send per key at every step; exactly one per key at the end."""
