"""Before a sender sends, planned rows that may no longer go are stopped, each with its reason.

``suppress_ineligible`` finds them in one pass (the ledger joined with contacts and accounts)
and moves each reason's own in order. These tests hold it to the rule it replaced, one
statement per reason over every planned row (written here as plain SQL): the same rows stop,
with the same error, when addresses are suppressed (honoured or not by the phase), accounts
churn or migrate, a row has two reasons at once, and the rows found are more than one
statement's chunk.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import text

from herald.config import HeraldConfig, PhaseName
from herald.delivery import planning, sender
from tests.support.bases import DAY, deliver_by_outbox, load_base, suppress
from tests.support.environment import Database

PHASE: PhaseName = "announcement"


def states(db: Database) -> dict[int, tuple[str, str | None]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT contact_id, state, error FROM delivery WHERE message = :m"), {"m": PHASE}
        )
        return {int(c): (str(s), e) for c, s, e in rows}


def by_the_old_rule(db: Database, honoured: bool, exclude_migrated: bool) -> dict[int, str]:
    """Planned rows each reason stops, one pass per reason in order (the first one wins)."""
    reasons = [
        (
            "SELECT d.contact_id, 'address suppressed: ' || ("
            " SELECT min(s.reason) FROM suppression s JOIN contact c ON c.email = s.email"
            " WHERE c.id = d.contact_id"
            + ("" if honoured else " AND s.reason <> 'unsubscribe'")
            + ")"
            " FROM delivery d WHERE d.message = :m AND d.state = 'planned' AND EXISTS ("
            " SELECT 1 FROM suppression s JOIN contact c ON c.email = s.email"
            " WHERE c.id = d.contact_id"
            + ("" if honoured else " AND s.reason <> 'unsubscribe'")
            + ")"
        ),
        (
            "SELECT d.contact_id, 'account churned' FROM delivery d"
            " JOIN contact c ON c.id = d.contact_id JOIN account a ON a.id = c.account_id"
            " WHERE d.message = :m AND d.state = 'planned' AND a.lifecycle <> 'active'"
        ),
    ]
    if exclude_migrated:
        reasons.append(
            "SELECT d.contact_id, 'account migrated' FROM delivery d"
            " JOIN contact c ON c.id = d.contact_id JOIN account a ON a.id = c.account_id"
            " WHERE d.message = :m AND d.state = 'planned' AND a.migration_state = 'migrated'"
        )
    stopped: dict[int, str] = {}
    with db.engine.connect() as conn:
        for sql in reasons:
            for contact, error in conn.execute(text(sql), {"m": PHASE}):
                stopped.setdefault(int(contact), str(error))
    return stopped


def spoil(db: Database) -> None:
    """Suppress, churn and migrate some of the planned contacts, some of them twice over."""
    with db.engine.connect() as conn:
        contacts = [
            (int(i), str(e), int(a))
            for i, e, a in conn.execute(
                text(
                    "SELECT c.id, c.email, c.account_id FROM contact c JOIN delivery d"
                    " ON d.contact_id = c.id WHERE d.message = :m ORDER BY c.id"
                ),
                {"m": PHASE},
            )
        ]
    assert len(contacts) > 40
    suppress(db, [e for _, e, _ in contacts[0:6]], "unsubscribe")
    suppress(db, [e for _, e, _ in contacts[4:10]], "bounce")  # 4, 5: both reasons
    suppress(db, [e for _, e, _ in contacts[10:13]], "spamreport")
    churned = {a for _, _, a in contacts[8:20:3]}  # 8: suppressed and churned
    migrated = {a for _, _, a in contacts[11:30:4]} - churned
    with db.engine.begin() as conn:
        for account in churned:
            conn.execute(
                text("UPDATE account SET lifecycle = 'churned' WHERE id = :a"), {"a": account}
            )
        for account in migrated:
            conn.execute(
                text("UPDATE account SET migration_state = 'migrated' WHERE id = :a"),
                {"a": account},
            )


@pytest.fixture
def planned(db: Database, tmp_path: Path) -> HeraldConfig:
    loaded = load_base(db, tmp_path, accounts=60)
    planning.plan(db.engine, config=loaded, phase=PHASE, as_of=DAY)
    return loaded


@pytest.mark.parametrize("honoured", [True, False], ids=["unsubscribe honoured", "service notice"])
@pytest.mark.parametrize("chunk", [5_000, 2], ids=["one statement", "chunks of two"])
def test_the_same_rows_stop_with_the_same_reason(
    db: Database,
    planned: HeraldConfig,
    honoured: bool,
    chunk: int,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every kind of reason, and rows with two: each row stops as the per-reason rule stops
    it, with its error; the counts by reason are what moved; every other row stays planned."""
    monkeypatch.setattr(planning, "SUPPRESSED_CHUNK", chunk)
    unsubscribe = planned.campaign.unsubscribe.model_copy(
        update={"honoured_by": None if honoured else ["preview"]}
    )
    loaded = replace(
        planned, campaign=planned.campaign.model_copy(update={"unsubscribe": unsubscribe})
    )
    assert loaded.campaign.unsubscribe.honours(PHASE) is honoured
    spoil(db)
    expected = by_the_old_rule(db, honoured, loaded.campaign.audiences[PHASE].exclude_migrated)
    assert len(expected) > 10
    before = states(db)

    counts = planning.suppress_ineligible(db.engine, config=loaded, phase=PHASE, message=PHASE)

    after = states(db)
    stopped = {c: error for c, (state, error) in after.items() if state == "suppressed"}
    assert stopped == expected
    assert all(after[c] == before[c] for c in after if c not in expected)
    by_reason: dict[str, int] = {}
    for error in expected.values():
        name = error.split(":")[0]
        by_reason[name] = by_reason.get(name, 0) + 1
    assert counts == by_reason
    assert planning.suppress_ineligible(db.engine, config=loaded, phase=PHASE, message=PHASE) == {}


def test_nothing_to_stop_writes_nothing(db: Database, planned: HeraldConfig) -> None:
    """With every planned row still sendable, nothing moves and nothing is counted."""
    before = states(db)
    assert planning.suppress_ineligible(db.engine, config=planned, phase=PHASE, message=PHASE) == {}
    assert states(db) == before


def test_a_suppression_that_comes_during_the_pass_still_stops_its_row(
    db: Database, planned: HeraldConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An unsubscribe committed after the sender's pass read the suppressions (and before its
    first batch) is taken before the first batch: the sender's watermark is the one read
    before the pass, not the newest id when it starts."""
    with db.engine.connect() as conn:
        contact, email = conn.execute(
            text(
                "SELECT c.id, c.email FROM contact c JOIN delivery d ON d.contact_id = c.id"
                " WHERE d.message = :m ORDER BY c.id LIMIT 1"
            ),
            {"m": PHASE},
        ).one()
    real = sender.suppress_ineligible

    def pass_then_unsubscribe(*args: Any, **kwargs: Any) -> dict[str, int]:
        counts = real(*args, **kwargs)
        suppress(db, [email], "unsubscribe")  # committed after the pass
        return counts

    monkeypatch.setattr(sender, "suppress_ineligible", pass_then_unsubscribe)
    done = deliver_by_outbox(db, planned, tmp_path, PHASE)
    after = states(db)
    assert after[contact] == ("suppressed", "address suppressed: unsubscribe")
    assert done.accepted == len(after) - 1
    assert all(state == "accepted" for c, (state, _) in after.items() if c != contact)
