"""After a bulk write of the ledger, Postgres's planner sees the ledger as it now is.

A plan writes every row ``planned``; a send moves them all on. Autovacuum analyzes the table
only a minute or more later, and until then the planner plans with the old distribution:
right after a send it took every row for planned and scanned the whole ledger for the few
that were (a finished 1M phase's rerun: 2.5 s, most of it such scans). So a plan, a sender
about to look again from the start of the ledger, and the step that finishes a sender, each
after many rows (``BULK_ROWS``), refresh the statistics themselves
(``herald.db.refresh_statistics``). The statistics are read where the planner reads them
(``pg_stats``), with the threshold lowered to this small base's size.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, Engine

import herald.db
from flows.send_phase import send_phase
from herald.config import PhaseName
from herald.delivery import planning
from tests.support.bases import DAY, deliver_by_outbox, load_base
from tests.support.environment import Database

PHASE: PhaseName = "announcement"
ON_POSTGRES = pytest.mark.parametrize(
    "db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def common_states(db: Database) -> set[str]:
    """The values of ``delivery.state`` the planner knows as common (``pg_stats``)."""
    found = db.rows(
        "SELECT most_common_vals::text::text[] FROM pg_stats"
        " WHERE tablename = 'delivery' AND attname = 'state'"
    )
    return set(found[0][0] or ()) if found else set()


@ON_POSTGRES
def test_a_plan_and_a_send_each_leave_the_statistics_of_what_they_wrote(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(herald.db, "BULK_ROWS", 20)
    loaded = load_base(db, tmp_path, accounts=60)

    planned = planning.plan(db.engine, config=loaded, phase=PHASE, as_of=DAY)
    assert planned.planned >= 20
    assert common_states(db) == {"planned"}

    done = deliver_by_outbox(db, loaded, tmp_path, PHASE)
    assert done.accepted == planned.planned == done.moved
    assert common_states(db) == {"accepted"}


Refreshed = list[tuple[str, int, bool]]


@pytest.fixture
def refreshes(monkeypatch: pytest.MonkeyPatch) -> Refreshed:
    """Each refresh asked for: by the sender before a pass from the start, or by the step
    that finishes it; with the rows changed, and whether it analyzed."""
    seen: Refreshed = []
    real = herald.db.refresh_statistics

    def spy(where: str) -> Any:
        def refresh(bind: Engine | Connection, changed: int, *tables: str) -> bool:
            analyzed = real(bind, changed, *tables)
            seen.append((where, changed, analyzed))
            return analyzed

        return refresh

    monkeypatch.setattr(herald.db, "BULK_ROWS", 20)
    monkeypatch.setattr("herald.delivery.sender.refresh_statistics", spy("sender"))
    monkeypatch.setattr("herald.delivery.recovery.refresh_statistics", spy("finish"))
    return seen


@ON_POSTGRES
@pytest.mark.usefixtures("prefect_server")
def test_the_phase_flow_refreshes_them_once_its_sender_has_sent_everything(
    db: Database, tmp_path: Path, refreshes: Refreshed
) -> None:
    """The sender, out of rows above its watermark, refreshes them before its pass from the
    start (which would otherwise walk every row it sent); the step that finishes it then
    has nothing new to tell the planner."""
    load_base(db, tmp_path, accounts=60)

    summary = send_phase(phase=PHASE, as_of=DAY, send=True, window=False)

    assert summary.delivery is not None
    sent = summary.delivery.accepted
    assert sent >= 20
    assert refreshes == [("sender", sent, True), ("finish", 0, False)]
    assert common_states(db) == {"accepted"}


@ON_POSTGRES
@pytest.mark.usefixtures("prefect_server")
def test_a_sender_stopped_early_leaves_the_refresh_to_its_finish(
    db: Database, tmp_path: Path, refreshes: Refreshed
) -> None:
    """Stopped by ``max_batches`` before any pass from the start: the finishing step,
    handed the rows the sender moved, refreshes the statistics."""
    load_base(db, tmp_path, accounts=60)

    summary = send_phase(phase=PHASE, as_of=DAY, send=True, window=False, max_batches=1)

    assert summary.delivery is not None
    sent = summary.delivery.accepted
    assert sent >= 20
    assert refreshes == [("finish", sent, True)]
    assert common_states(db) == {"accepted"}
