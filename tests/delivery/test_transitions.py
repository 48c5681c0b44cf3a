"""The ledger's state machine: every pair of states is allowed or refused as the diagrams in
herald.models say, and a refused move changes nothing on either database."""

from __future__ import annotations

from datetime import UTC, datetime
from itertools import product

import pytest
from sqlalchemy import Connection, insert, select

from herald.delivery import ledger
from herald.delivery.keys import Outcome
from herald.delivery.ledger import IllegalMove, check_move, move, sources
from herald.models import (
    ACCOUNT,
    CONTACT,
    DELIVERY,
    REPORT_DELIVERY,
    SEND_BATCH,
    SEND_WORKER,
    BatchState,
    DeliveryState,
)
from tests.support.environment import Database

D, B = DeliveryState, BatchState

# The diagrams of DeliveryState and BatchState, written out pair by pair.
DELIVERY_ALLOWED = {
    (D.PLANNED, D.SENDING),
    (D.PLANNED, D.SUPPRESSED),
    (D.PLANNED, D.EXPIRED),
    (D.SENDING, D.PLANNED),
    (D.SENDING, D.ACCEPTED),
    (D.SENDING, D.FAILED),
    (D.SENDING, D.UNKNOWN),
    (D.UNKNOWN, D.PLANNED),
    (D.UNKNOWN, D.ACCEPTED),
    (D.FAILED, D.PLANNED),
    (D.FAILED, D.ACCEPTED),
    (D.FAILED, D.SENDING),
}
BATCH_ALLOWED = {
    (B.CLAIMED, B.REQUESTING),
    (B.CLAIMED, B.RELEASED),
    (B.CLAIMED, B.FAILED),
    (B.REQUESTING, B.ACCEPTED),
    (B.REQUESTING, B.FAILED),
    (B.REQUESTING, B.UNKNOWN),
}
CAMPAIGN, MESSAGE = "c", "announcement"
NOW = datetime(2026, 11, 24, 9, tzinfo=UTC)


@pytest.mark.parametrize(("from_", "to"), list(product(D, D)), ids=str)
def test_every_pair_of_delivery_states_is_allowed_or_refused(
    from_: DeliveryState, to: DeliveryState
) -> None:
    """A pair of the diagram passes the check; any other raises."""
    if (from_, to) in DELIVERY_ALLOWED:
        check_move(from_, to)
        assert from_ in sources(to)
    else:
        with pytest.raises(IllegalMove):
            check_move(from_, to)
        assert from_ not in sources(to)


@pytest.mark.parametrize(("from_", "to"), list(product(B, B)), ids=str)
def test_every_pair_of_batch_states_is_allowed_or_refused(
    from_: BatchState, to: BatchState
) -> None:
    """A pair of the diagram passes the check; any other raises."""
    if (from_, to) in BATCH_ALLOWED:
        check_move(from_, to)
        assert from_ in sources(to)
    else:
        with pytest.raises(IllegalMove):
            check_move(from_, to)
        assert from_ not in sources(to)


def test_a_batch_state_and_a_row_state_of_the_same_name_do_not_mix() -> None:
    """``accepted`` of a batch is not ``accepted`` of a row (a StrEnum equals its text)."""
    with pytest.raises(IllegalMove):
        check_move(B.REQUESTING, D.ACCEPTED)  # type: ignore[arg-type]
    with pytest.raises(IllegalMove):
        check_move(D.SENDING, B.ACCEPTED)  # type: ignore[arg-type]
    assert {state.value for state in Outcome} <= {state.value for state in D}
    assert {state.value for state in Outcome} <= {state.value for state in B}


# --------------------------------------------------------------------------- on a database


def rows_in(conn: Connection, *states: DeliveryState) -> list[int]:
    """One ledger row per state (a contact each); their ids, in that order."""
    ids = []
    for n, state in enumerate(states, start=1):
        conn.execute(
            insert(ACCOUNT).values(
                id=n,
                external_id=f"A{n}",
                name=f"Account {n}",
                tier="pro",
                region="na",
                lifecycle="active",
                migration_state="not_started",
                attributes={},
                created_at=NOW,
                updated_at=NOW,
            )
        )
        conn.execute(
            insert(CONTACT).values(
                id=n,
                account_id=n,
                email=f"c{n}@example.com",
                role="technical",
                locale="en",
                created_at=NOW,
                updated_at=NOW,
            )
        )
        ids.append(
            conn.execute(
                insert(DELIVERY)
                .values(
                    campaign=CAMPAIGN,
                    message=MESSAGE,
                    contact_id=n,
                    segment="standard",
                    role="technical",
                    locale="en",
                    critical=False,
                    state=state.value,
                    attempts=0,
                    planned_at=NOW,
                    updated_at=NOW,
                )
                .returning(DELIVERY.c.id)
            ).scalar_one()
        )
    return ids


def delivery_states(db: Database) -> list[str]:
    with db.engine.connect() as conn:
        return list(conn.execute(select(DELIVERY.c.state).order_by(DELIVERY.c.id)).scalars())


def batch_in(conn: Connection, state: BatchState) -> str:
    conn.execute(
        insert(SEND_WORKER).values(
            id="w",
            campaign=CAMPAIGN,
            message=MESSAGE,
            transport="t",
            host="h",
            pid=1,
            started_at=NOW,
            heartbeat_at=NOW,
        )
    )
    conn.execute(
        insert(SEND_BATCH).values(
            id="b",
            worker_id="w",
            campaign=CAMPAIGN,
            message=MESSAGE,
            state=state.value,
            recipients=0,
            requests=0,
            created_at=NOW,
        )
    )
    return "b"


def batch_state(db: Database) -> str:
    with db.engine.connect() as conn:
        return str(conn.execute(select(SEND_BATCH.c.state)).scalar_one())


class TestMovesOnTheDatabase:
    def test_an_update_only_moves_rows_in_an_allowed_source_state(self, db: Database) -> None:
        """Every state present, each asked to become accepted: only those that may move do."""
        every = list(D)
        with db.engine.begin() as conn:
            rows_in(conn, *every)
            moved = move(conn, DELIVERY, DELIVERY.c.campaign == CAMPAIGN, to=D.ACCEPTED)
        assert moved == 3  # sending, unknown, failed
        assert delivery_states(db) == [
            D.ACCEPTED if state in (D.SENDING, D.UNKNOWN, D.FAILED) else state for state in every
        ]

    def test_a_disallowed_move_raises_and_changes_nothing(self, db: Database) -> None:
        """An accepted row asked to go back to sending: refused before anything is written."""
        with db.engine.begin() as conn:
            ids = rows_in(conn, D.ACCEPTED, D.PLANNED)
        with pytest.raises(IllegalMove), db.engine.begin() as conn:
            move(conn, DELIVERY, DELIVERY.c.id.in_(ids), to=D.SENDING, from_=[D.ACCEPTED])
        assert delivery_states(db) == [D.ACCEPTED, D.PLANNED]
        with db.engine.begin() as conn:
            assert move(conn, DELIVERY, DELIVERY.c.id == ids[0], to=D.PLANNED) == 0
        assert delivery_states(db) == [D.ACCEPTED, D.PLANNED]

    def test_a_move_of_the_wrong_kind_for_its_table_raises(self, db: Database) -> None:
        """Rows take DeliveryState moves, batches BatchState moves, and `to` sets the state."""
        with db.engine.begin() as conn:
            with pytest.raises(IllegalMove):
                move(conn, SEND_BATCH, to=D.ACCEPTED)
            with pytest.raises(IllegalMove):
                move(conn, REPORT_DELIVERY, to=B.ACCEPTED)
            with pytest.raises(IllegalMove):
                move(conn, SEND_WORKER, to=D.ACCEPTED)
            with pytest.raises(IllegalMove):
                move(conn, DELIVERY, to=D.ACCEPTED, state=D.PLANNED.value)

    def test_a_released_batch_takes_no_request_and_no_outcome(self, db: Database) -> None:
        """A recovery released the batch: its request must not leave, a late answer is not
        recorded on it, and nothing changes."""
        with db.engine.begin() as conn:
            batch_id = batch_in(conn, B.RELEASED)
        with pytest.raises(IllegalMove):
            ledger.mark_requesting(db.engine, batch_id=batch_id)
        ledger.record(db.engine, batch_id=batch_id, outcome=Outcome.ACCEPTED, requests=1)
        assert batch_state(db) == B.RELEASED

    def test_a_claimed_batch_may_fail_without_a_request(self, db: Database) -> None:
        """A batch none of whose rows could go fails straight from claimed."""
        with db.engine.begin() as conn:
            batch_id = batch_in(conn, B.CLAIMED)
        ledger.record(db.engine, batch_id=batch_id, outcome=Outcome.FAILED, requests=0)
        assert batch_state(db) == B.FAILED
