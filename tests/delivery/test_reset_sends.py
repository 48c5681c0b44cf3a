"""Emptying what a send wrote between two runs of a phase (herald.testing.synthetic.reset_sends,
used by the benchmarks, the chaos run and the scale-out tests): the base stays, the ledger and
everything around it goes, and the next run plans the whole audience again. ``fresh`` (the
benchmarks) gives Postgres new, empty tables, so the second run does not step over the first's
dead rows.
"""

from __future__ import annotations

from datetime import date

import pytest
from sqlalchemy import text

from herald.config import load_config
from herald.delivery import ledger, planning
from herald.delivery.controls import set_paused
from herald.delivery.recovery import start_worker
from herald.telemetry.webhook_batches import store_batch
from herald.testing.synthetic import SENT_TABLES, reset_sends, seed_base
from tests.support.bases import suppress
from tests.support.environment import ROOT, Database

AS_OF = date(2027, 2, 9)  # the announcement's day: it goes to every segment
PHASE = "announcement"
CONTACTS = 40


def _filenode(db: Database) -> int:
    with db.engine.connect() as conn:
        return int(conn.execute(text("SELECT pg_relation_filenode('delivery')")).scalar_one())


@pytest.mark.parametrize("fresh", [False, True])
def test_a_reset_keeps_the_base_and_the_next_plan_takes_the_whole_audience(
    db: Database, fresh: bool
) -> None:
    config_dir = ROOT / "config"
    seed_base(db.url, CONTACTS, AS_OF, config_dir)
    config = load_config(config_dir)
    first = planning.plan(db.engine, config=config, phase=PHASE, as_of=AS_OF)
    assert first.planned > 0
    before = _filenode(db) if db.backend == "postgres" else None
    # Something in every table the reset empties, written as Herald writes it: a sender and
    # its claimed batch, a pause (with its audit entry), a webhook body, a suppression and an
    # event of a sent row (with its summary).
    campaign = config.campaign.id
    worker = start_worker(db.engine, campaign=campaign, message=PHASE, transport="test")
    claimed = ledger.claim(db.engine, worker=worker, limit=5)
    assert claimed is not None
    set_paused(db.engine, campaign=campaign, message=PHASE, paused=True, reason="test")
    store_batch(db.engine, body=b"[]", signed_at=None, events=0)
    suppress(db, ["someone@example.com"])
    with db.engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO email_event (sg_event_id, event, email, occurred_at, delivery_id, "
                "raw, received_at) SELECT 'e1', 'delivered', 'x@example.com', planned_at, id, "
                "'{}', planned_at FROM delivery ORDER BY id LIMIT 1"
            )
        )
    emptied = (*SENT_TABLES, "delivery_event_summary")
    for table in emptied:
        assert db.count(table) > 0, table

    reset_sends(db.url, fresh=fresh)

    for table in emptied:
        assert db.count(table) == 0, table
    assert db.count("contact") == CONTACTS
    assert db.count("segment_assignment") > 0
    if before is not None:  # a TRUNCATE gives the table a new file; a DELETE keeps it
        assert (_filenode(db) != before) is fresh
    again = planning.plan(db.engine, config=config, phase=PHASE, as_of=AS_OF)
    assert not again.reused
    assert again.planned == first.planned
