"""On SQLite, what looks for a message's planned rows reads only those (ix_delivery_planned).

A finished phase's rerun claims, expires, checks eligibility and lists the zones still
waiting: each looks for planned rows. The partial index holds only those (filled by the
plan, emptied by the claims), so the statements a rerun runs are captured and each one that
reads planned rows is shown, by SQLite's own query plan, to search that index. Postgres has
no such index (a send's updates must change no indexed column there).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import event, inspect

from herald.config import PhaseName
from herald.delivery import planning
from tests.support.bases import DAY, deliver_by_outbox, load_base
from tests.support.environment import Database

PHASE: PhaseName = "announcement"


def _indexes(db: Database) -> dict[str, Any]:
    return {index["name"]: index for index in inspect(db.engine).get_indexes("delivery")}


def test_the_planned_rows_index_is_sqlites_only(db: Database) -> None:
    """SQLite has the partial index; Postgres has none on ``state`` (updates stay in place)."""
    indexes = _indexes(db)
    if db.backend == "sqlite":
        assert indexes["ix_delivery_planned"]["column_names"] == ["campaign", "message", "id"]
        assert "state = 'planned'" in str(
            indexes["ix_delivery_planned"]["dialect_options"]["sqlite_where"]
        )
    else:
        assert "ix_delivery_planned" not in indexes
        assert not any("state" in index["column_names"] for index in indexes.values())


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
def test_a_finished_phases_rerun_searches_only_planned_rows(db: Database, tmp_path: Path) -> None:
    """Every statement of a rerun that looks for planned ledger rows searches the index of
    planned rows: none reads the message's sent rows to find that none is left."""
    loaded = load_base(db, tmp_path, accounts=60)
    planned = planning.plan(db.engine, config=loaded, phase=PHASE, as_of=DAY).planned
    assert deliver_by_outbox(db, loaded, tmp_path, PHASE).accepted == planned > 0
    with db.engine.connect() as conn:
        assert (
            conn.exec_driver_sql(
                "SELECT count(*) FROM delivery INDEXED BY ix_delivery_planned"
                " WHERE campaign = ? AND message = ? AND state = 'planned'",
                (loaded.campaign.id, PHASE),
            ).scalar_one()
            == 0
        )

    captured: list[tuple[str, Any]] = []

    def capture(*args: Any) -> None:
        statement, parameters = args[2], args[3]  # conn, cursor, statement, parameters, ...
        if "'planned'" in statement and not statement.lstrip().upper().startswith("EXPLAIN"):
            captured.append((statement, parameters))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        again = deliver_by_outbox(db, loaded, tmp_path, PHASE)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert (again.batches, again.accepted) == (0, 0)

    reads = [s for s in captured if "FROM delivery" in s[0] or "UPDATE delivery" in s[0]]
    # The claim, the expiry, the eligibility pass and the zones waiting, at least.
    assert len(reads) >= 4
    with db.engine.connect() as conn:
        for statement, parameters in reads:
            plan = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            details = " | ".join(str(row[-1]) for row in plan)
            searches = [d for d in details.split(" | ") if " delivery " in f" {d} "]
            assert any("ix_delivery_planned" in d for d in searches), (statement, details)
            assert not any(d.startswith("SCAN delivery") for d in searches), (statement, details)
