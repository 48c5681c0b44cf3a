"""delivery event summary: per delivery, when each event the metrics count first happened

The metrics folded every ``email_event`` row into per-delivery flags at each run: at 10M
events the fold alone cost more than the rest of the campaign query. ``delivery_event_summary``
keeps, per delivery, the earliest time of each kind of event they count (delivered, opened,
clicked, spam report, unsubscribe, hard bounce); "by the cutoff" stays a comparison, so any
as-of day is still answered exactly.

The database keeps it, so that every writer counts (the webhook, a batch file, raw SQL):

- an insert of events keeps the earliest time per kind (PostgreSQL: one statement-level
  trigger over the inserted rows, cheap for bulk writes; SQLite: a row-level trigger);
- an update or delete of events works the deliveries they belonged to (before and after)
  out again from their events, so the summary is always what the events say;
- a TRUNCATE of the events (PostgreSQL) empties it; a deleted delivery takes its row along.

Existing events are summarised here, once. ``ix_email_event_delivery_event`` (0011), which
let the metrics fold the events from an index alone, goes: nothing reads it now, and every
event written paid for it.

Revision ID: 0014
Revises: 0013
Create Date: 2026-11-27 23:55:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0014"
down_revision: str | None = "0013"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLE = "delivery_event_summary"

# Each column and when an event (``{e}``: the row) counts for it; ``{hard}`` is true for a
# bounce that is not a block ('blocked' is temporary), per dialect.
KINDS: dict[str, str] = {
    "delivered_at": "{e}.event = 'delivered'",
    "opened_at": "{e}.event = 'open'",
    "clicked_at": "{e}.event = 'click'",
    "spam_reported_at": "{e}.event = 'spamreport'",
    "unsubscribed_at": "{e}.event IN ('unsubscribe', 'group_unsubscribe')",
    "hard_bounced_at": "{e}.event = 'bounce' AND {hard}",
}
HARD = {
    "sqlite": "coalesce(json_extract({e}.raw, '$.type'), 'bounce') <> 'blocked'",
    "postgresql": "coalesce({e}.raw ->> 'type', 'bounce') <> 'blocked'",
}
COLUMNS = ", ".join(KINDS)


def _condition(kind: str, row: str, dialect: str) -> str:
    return KINDS[kind].format(e=row, hard=HARD[dialect].format(e=row))


def _counted(row: str, dialect: str) -> str:
    """SQL: the event ``row`` counts for some column."""
    return " OR ".join(f"({_condition(kind, row, dialect)})" for kind in KINDS)


def _summarised(source: str, where: str, dialect: str) -> str:
    """SELECT: one summary row per delivery of the events ``source`` (aliased ``e``)."""
    firsts = ", ".join(
        f"min(CASE WHEN {_condition(kind, 'e', dialect)} THEN e.occurred_at END)" for kind in KINDS
    )
    return (
        f"SELECT e.delivery_id, {firsts} FROM {source} AS e "
        f"WHERE e.delivery_id IS NOT NULL AND ({_counted('e', dialect)}) AND ({where}) "
        "GROUP BY e.delivery_id"
    )


def _redo(deliveries: str, dialect: str) -> str:
    """Statements: the summary rows of ``deliveries`` (a SQL list) worked out again."""
    where = f"e.delivery_id IN ({deliveries})"
    return (
        f"DELETE FROM {TABLE} WHERE delivery_id IN ({deliveries}); "
        f"INSERT INTO {TABLE} (delivery_id, {COLUMNS}) "
        f"{_summarised('email_event', where, dialect)};"
    )


PG_INSERT = f"""
CREATE FUNCTION herald_event_summary_insert() RETURNS trigger LANGUAGE plpgsql
-- As its owner: a writer allowed to add events need not be allowed the summary.
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    INSERT INTO {TABLE} AS s (delivery_id, {COLUMNS})
    {_summarised("added", "true", "postgresql")}
    ORDER BY 1  -- rows locked in one order: concurrent writers do not deadlock here
    ON CONFLICT (delivery_id) DO UPDATE SET
    {", ".join(f"{kind} = least(s.{kind}, excluded.{kind})" for kind in KINDS)};
    RETURN NULL;
END
$$
"""

# The deliveries whose rows a change can move: of the events that count, before or after.
_REMOVED = f"SELECT e.delivery_id FROM removed AS e WHERE {_counted('e', 'postgresql')}"
_BOTH = f"{_REMOVED} UNION SELECT e.delivery_id FROM added AS e WHERE {_counted('e', 'postgresql')}"
PG_REDO = f"""
CREATE FUNCTION herald_event_summary_redo() RETURNS trigger LANGUAGE plpgsql
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    IF TG_OP = 'TRUNCATE' THEN
        DELETE FROM {TABLE};
    ELSIF TG_OP = 'DELETE' THEN
        {_redo(_REMOVED, "postgresql")}
    ELSE
        {_redo(_BOTH, "postgresql")}
    END IF;
    RETURN NULL;
END
$$
"""


def upgrade() -> None:
    op.create_table(
        TABLE,
        sa.Column("delivery_id", sa.Integer(), autoincrement=False, nullable=False),
        *(sa.Column(kind, sa.DateTime(timezone=True), nullable=True) for kind in KINDS),
        sa.ForeignKeyConstraint(["delivery_id"], ["delivery.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("delivery_id"),
    )
    op.drop_index("ix_email_event_delivery_event", table_name="email_event")
    dialect = op.get_bind().dialect.name
    op.execute(
        f"INSERT INTO {TABLE} (delivery_id, {COLUMNS}) "
        + _summarised("email_event", "true", dialect)
    )
    if dialect == "postgresql":
        op.execute(PG_INSERT)
        op.execute(PG_REDO)
        op.execute(
            "CREATE TRIGGER herald_event_summary_insert AFTER INSERT ON email_event "
            "REFERENCING NEW TABLE AS added "
            "FOR EACH STATEMENT EXECUTE FUNCTION herald_event_summary_insert()"
        )
        op.execute(
            "CREATE TRIGGER herald_event_summary_update AFTER UPDATE ON email_event "
            "REFERENCING OLD TABLE AS removed NEW TABLE AS added "
            "FOR EACH STATEMENT EXECUTE FUNCTION herald_event_summary_redo()"
        )
        op.execute(
            "CREATE TRIGGER herald_event_summary_delete AFTER DELETE ON email_event "
            "REFERENCING OLD TABLE AS removed "
            "FOR EACH STATEMENT EXECUTE FUNCTION herald_event_summary_redo()"
        )
        op.execute(
            "CREATE TRIGGER herald_event_summary_truncate AFTER TRUNCATE ON email_event "
            "FOR EACH STATEMENT EXECUTE FUNCTION herald_event_summary_redo()"
        )
        return
    firsts = ", ".join(
        f"CASE WHEN {_condition(kind, 'NEW', dialect)} THEN NEW.occurred_at END" for kind in KINDS
    )
    # SQLite's two-argument min() is NULL when either is: keep whichever is known.
    earliest = ", ".join(
        f"{kind} = coalesce(min({kind}, excluded.{kind}), {kind}, excluded.{kind})"
        for kind in KINDS
    )
    op.execute(
        "CREATE TRIGGER herald_event_summary_insert AFTER INSERT ON email_event "
        f"WHEN NEW.delivery_id IS NOT NULL AND ({_counted('NEW', dialect)}) BEGIN "
        f"INSERT INTO {TABLE} (delivery_id, {COLUMNS}) VALUES (NEW.delivery_id, {firsts}) "
        f"ON CONFLICT (delivery_id) DO UPDATE SET {earliest}; END"
    )
    # An event that counts for no column, before or after the change, moves no row.
    before = f"(OLD.delivery_id IS NOT NULL AND ({_counted('OLD', dialect)}))"
    after = f"(NEW.delivery_id IS NOT NULL AND ({_counted('NEW', dialect)}))"
    op.execute(
        "CREATE TRIGGER herald_event_summary_update "
        "AFTER UPDATE OF delivery_id, event, occurred_at, raw ON email_event "
        f"WHEN {before} OR {after} BEGIN "
        f"{_redo('OLD.delivery_id, NEW.delivery_id', dialect)} END"
    )
    op.execute(
        "CREATE TRIGGER herald_event_summary_delete AFTER DELETE ON email_event "
        f"WHEN {before} BEGIN {_redo('OLD.delivery_id', dialect)} END"
    )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        for event in ("insert", "update", "delete", "truncate"):
            op.execute(f"DROP TRIGGER IF EXISTS herald_event_summary_{event} ON email_event")
        op.execute("DROP FUNCTION IF EXISTS herald_event_summary_insert()")
        op.execute("DROP FUNCTION IF EXISTS herald_event_summary_redo()")
    else:
        for event in ("insert", "update", "delete"):
            op.execute(f"DROP TRIGGER IF EXISTS herald_event_summary_{event}")
    op.drop_table(TABLE)
    op.create_index(
        "ix_email_event_delivery_event", "email_event", ["delivery_id", "event", "occurred_at"]
    )
