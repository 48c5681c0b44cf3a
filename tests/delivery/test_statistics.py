"""After a bulk write of the ledger, Postgres's planner sees the ledger as it now is.

A plan writes every row ``planned``; a send moves them all on. Autovacuum analyzes the table
only a minute or more later, and until then the planner plans with the old distribution:
right after a send it took every row for planned and scanned the whole ledger for the few
that were (a finished 1M phase's rerun: 2.5 s, most of it such scans). So a plan, and a
sender that moved many rows, refresh the statistics themselves (``herald.db.refresh_statistics``
above ``BULK_ROWS`` rows). The statistics are read where the planner reads them (``pg_stats``),
with the threshold lowered to this small base's size.
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
from sqlalchemy import text

import herald.db
from flows.send_phase import send_phase
from herald.delivery import planning, sender
from herald.delivery.transports.outbox import OutboxTransport
from herald.settings import get_settings
from herald.unsubscribe.links import UnsubscribeLinks
from tests.support.bases import DAY, load_base
from tests.support.environment import Database

PHASE = "announcement"
ON_POSTGRES = pytest.mark.parametrize(
    "db", [pytest.param("postgres", marks=pytest.mark.postgres)], indirect=True
)


def common_states(db: Database) -> set[str]:
    """The values of ``delivery.state`` the planner knows as common (``pg_stats``)."""
    with db.engine.connect() as conn:
        values = conn.execute(
            text(
                "SELECT most_common_vals::text::text[] FROM pg_stats"
                " WHERE tablename = 'delivery' AND attname = 'state'"
            )
        ).scalar()
    return set(values or ())


@ON_POSTGRES
def test_a_plan_and_a_send_each_leave_the_statistics_of_what_they_wrote(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(herald.db, "BULK_ROWS", 20)
    loaded = load_base(db, tmp_path, accounts=60)

    planned = planning.plan(db.engine, config=loaded, phase=PHASE, as_of=DAY)
    assert planned.planned >= 20
    assert common_states(db) == {"planned"}

    done = sender.deliver_message(
        db.engine,
        config=loaded,
        phase=PHASE,
        message=PHASE,
        transport=OutboxTransport(tmp_path / "outbox"),
        renderer=sender.Renderer(loaded),
        links=UnsubscribeLinks.configured(get_settings(), loaded.campaign),
        log=logging.getLogger("tests.delivery.statistics"),
        window=False,
    )
    assert done.accepted == planned.planned == done.moved
    assert common_states(db) == {"accepted"}


@ON_POSTGRES
@pytest.mark.usefixtures("prefect_server")
def test_the_phase_flow_refreshes_them_after_its_sender(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The flow's sender (a task per step) hands its count to the step that finishes it."""
    load_base(db, tmp_path, accounts=60)
    calls: list[int] = []
    refresh = herald.db.refresh_statistics

    def counted(conn: object, changed: int, *tables: str) -> None:
        calls.append(changed)
        refresh(conn, changed, *tables)  # type: ignore[arg-type]

    monkeypatch.setattr(herald.db, "BULK_ROWS", 20)
    monkeypatch.setattr("herald.delivery.recovery.refresh_statistics", counted)

    summary = send_phase(phase=PHASE, as_of=DAY, send=True, window=False)

    assert summary.delivery.accepted >= 20
    assert calls == [summary.delivery.accepted]
    assert common_states(db) == {"accepted"}
