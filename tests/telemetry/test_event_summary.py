"""The delivery event summary: what the database keeps per delivery is what its events say.

``delivery_event_summary`` (migration 0014) holds, per delivery, the earliest time of each
kind of event the metrics count. The database keeps it with triggers on ``email_event``; these
tests write events every way a writer could (bulk inserts, the webhook's path, updates,
deletes, a deleted delivery, TRUNCATE, the migration over existing events) and compare the
table with the same summary worked out here, in Python, from the events themselves.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import Connection, delete, insert, inspect, select, text, update

from herald.db import downgrade, upgrade
from herald.delivery.keys import LedgerKey
from herald.models import (
    DELIVERY,
    DELIVERY_EVENT_SUMMARY,
    EMAIL_EVENT,
    as_utc,
)
from herald.telemetry.event_effects import apply_events
from tests.support.environment import Database
from tests.support.metrics import CAMPAIGN, build

START = datetime(2027, 3, 1, tzinfo=UTC)
DELIVERIES = [1, 2, 5, 7, 14]  # of tests.support.metrics.build
KINDS = [
    "processed",
    "delivered",
    "open",
    "click",
    "bounce",
    "deferred",
    "spamreport",
    "unsubscribe",
    "group_unsubscribe",
    "dropped",
]
# A bounce's ``type``: 'blocked' is temporary and not a hard bounce; no type is.
BOUNCE_RAW = [{}, {"type": "blocked"}, {"type": "bounce"}, {"type": None}]


def expected_summary(conn: Connection) -> dict[int, dict[str, datetime]]:
    """The summary worked out from the stored events, without the triggers' SQL."""
    columns = {
        "delivered": "delivered_at",
        "open": "opened_at",
        "click": "clicked_at",
        "spamreport": "spam_reported_at",
        "unsubscribe": "unsubscribed_at",
        "group_unsubscribe": "unsubscribed_at",
    }
    out: dict[int, dict[str, datetime]] = {}
    rows = conn.execute(
        select(
            EMAIL_EVENT.c.delivery_id,
            EMAIL_EVENT.c.event,
            EMAIL_EVENT.c.occurred_at,
            EMAIL_EVENT.c.raw,
        )
    )
    for delivery_id, kind, moment, raw in rows:
        if delivery_id is None:
            continue
        if kind == "bounce":
            column = None if (raw or {}).get("type") == "blocked" else "hard_bounced_at"
        else:
            column = columns.get(kind)
        if column is None:
            continue
        row = out.setdefault(delivery_id, {})
        moment = as_utc(moment)
        row[column] = min(row.get(column, moment), moment)
    return out


def stored_summary(conn: Connection) -> dict[int, dict[str, datetime]]:
    out: dict[int, dict[str, datetime]] = {}
    for row in conn.execute(select(DELIVERY_EVENT_SUMMARY)).mappings():
        out[row["delivery_id"]] = {
            key: as_utc(value)
            for key, value in row.items()
            if key != "delivery_id" and value is not None
        }
    return out


def event_row(
    number: int, delivery: int | None, kind: str, minutes: int, raw: dict[str, Any]
) -> dict[str, Any]:
    return {
        "sg_event_id": f"e{number}",
        "event": kind,
        "email": "someone@example.com",
        "occurred_at": START + timedelta(minutes=minutes),
        "delivery_id": delivery,
        "raw": {"event": kind, **raw},
    }


events = st.lists(
    st.tuples(
        st.sampled_from([*DELIVERIES, None]),
        st.sampled_from(KINDS),
        st.integers(0, 50),  # minutes: ties and out-of-order arrival both happen
        st.sampled_from(BOUNCE_RAW),
    ),
    min_size=1,
    max_size=25,
)
changes = st.lists(
    st.tuples(
        st.sampled_from(["delete", "move", "retype", "retime"]),
        st.integers(0, 24),  # which event (modulo how many there are)
        st.sampled_from([*DELIVERIES, None]),
        st.sampled_from(KINDS),
        st.integers(0, 50),
    ),
    max_size=6,
)


class TestTheSummaryIsWhatTheEventsSay:
    @settings(
        max_examples=25,
        deadline=None,
        suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    )
    @given(events=events, changes=changes)
    def test_after_any_inserts_updates_and_deletes(
        self, db: Database, events: list[Any], changes: list[Any]
    ) -> None:
        """Events written in bulk, then changed and removed one by one: the summary is the
        earliest time per kind and delivery (a blocked bounce is not hard; other events and
        events of no delivery leave no trace)."""
        if not _built(db):
            build(db.engine)
        with db.engine.begin() as conn:
            conn.execute(delete(EMAIL_EVENT))
            assert stored_summary(conn) == {}
            conn.execute(
                insert(EMAIL_EVENT),
                [event_row(n, *event) for n, event in enumerate(events)],
            )
            assert stored_summary(conn) == expected_summary(conn)
            for action, which, delivery, kind, minutes in changes:
                ids = sorted(conn.execute(select(EMAIL_EVENT.c.id)).scalars())
                if not ids:
                    break
                target = EMAIL_EVENT.c.id == ids[which % len(ids)]
                if action == "delete":
                    conn.execute(delete(EMAIL_EVENT).where(target))
                elif action == "move":
                    conn.execute(update(EMAIL_EVENT).where(target).values(delivery_id=delivery))
                elif action == "retype":
                    conn.execute(update(EMAIL_EVENT).where(target).values(event=kind))
                else:
                    moment = START + timedelta(minutes=minutes)
                    conn.execute(update(EMAIL_EVENT).where(target).values(occurred_at=moment))
                assert stored_summary(conn) == expected_summary(conn), action


def _built(db: Database) -> bool:
    with db.engine.connect() as conn:
        return conn.execute(select(DELIVERY.c.id).limit(1)).first() is not None


class TestWriters:
    def test_the_webhook_path_fills_it(self, db: Database) -> None:
        """Events applied as the webhook applies them (bulk, by ledger key) are summarised;
        an event SendGrid re-delivers changes nothing."""
        build(db.engine)
        with db.engine.begin() as conn:
            conn.execute(delete(EMAIL_EVENT))
        key = LedgerKey(CAMPAIGN, "announcement", 2).format()  # delivery 6: contact c2
        first = START + timedelta(hours=1)
        batch = [
            {
                "event": "open",
                "email": "c2@example.com",
                "timestamp": int(first.timestamp()),
                "sg_event_id": "w1",
                "herald_key": key,
            },
            {
                "event": "open",
                "email": "c2@example.com",
                "timestamp": int((first - timedelta(minutes=5)).timestamp()),
                "sg_event_id": "w2",
                "herald_key": key,
            },
        ]
        with db.engine.begin() as conn:
            assert apply_events(conn, events=batch).stored == 2
            assert apply_events(conn, events=batch).stored == 0
        with db.engine.connect() as conn:
            summary = stored_summary(conn)
            assert summary == expected_summary(conn)
        assert summary == {6: {"opened_at": first - timedelta(minutes=5)}}

    def test_a_deleted_delivery_takes_its_row_along(self, db: Database) -> None:
        """Deleting a delivery sets its events' delivery to NULL (kept for the record) and
        removes its summary row, without a foreign-key error."""
        build(db.engine)
        with db.engine.begin() as conn:
            assert 1 in stored_summary(conn)
            conn.execute(delete(DELIVERY).where(DELIVERY.c.id == 1))
        with db.engine.connect() as conn:
            summary = stored_summary(conn)
            assert 1 not in summary
            assert summary == expected_summary(conn)
            orphans = select(EMAIL_EVENT.c.id).where(EMAIL_EVENT.c.sg_event_id == "ev0")
            assert conn.execute(orphans).first() is not None

    def test_emptying_the_events_empties_it(self, db: Database) -> None:
        """TRUNCATE on Postgres (a statement trigger of its own), a DELETE of every row on
        SQLite (which has no TRUNCATE)."""
        build(db.engine)
        empty = "TRUNCATE email_event" if db.backend == "postgres" else "DELETE FROM email_event"
        with db.engine.begin() as conn:
            assert stored_summary(conn)
            conn.execute(text(empty))
        with db.engine.connect() as conn:
            assert stored_summary(conn) == {}


class TestMigration:
    def test_existing_events_are_summarised_and_downgrade_removes_it(self, db: Database) -> None:
        """Upgrading a database that has events fills the summary from them; downgrading
        drops the table and its triggers (events written after that are plain rows)."""
        build(db.engine)
        with db.engine.connect() as conn:
            before = expected_summary(conn)
        assert before  # the fixture has events to summarise
        downgrade(db.url, "0013")
        assert "delivery_event_summary" not in inspect(db.engine).get_table_names()
        with db.engine.begin() as conn:
            conn.execute(insert(EMAIL_EVENT), [event_row(900, 1, "click", 1, {})])
        upgrade(db.url)
        with db.engine.connect() as conn:
            assert stored_summary(conn) == expected_summary(conn)
            assert stored_summary(conn)[1]["clicked_at"] == START + timedelta(minutes=1)
