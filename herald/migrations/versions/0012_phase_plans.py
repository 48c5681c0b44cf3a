"""plan stamps: a rerun of a plan whose audience did not change skips it

``plan_stamp`` records, per (campaign, message), what the last plan planned: a digest of its
statement (the audience query and its parameters: the segmentation day, the segments, the
config it reads) and the *data version* of the audience's inputs when it read them, with
the audience counted by segment and role. A rerun whose digest matches and whose inputs
did not change since skips the INSERT ... SELECT (``herald.delivery.stamps``).

The data version is kept by the database itself, so that every writer counts (Herald's,
the CRM sync, raw SQL): triggers on ``contact``, ``account``, ``segment_assignment``,
``suppression`` (a removal or change: a new suppression only shrinks an audience, and the
sender drops its rows before sending) and ``delivery`` (a ledger row removed or re-keyed).

- PostgreSQL: one statement-level trigger per table (cheap for bulk writes) records the
  writing transaction's id in ``audience_change`` (once per transaction); a plan records
  its snapshot, and its inputs changed when a recorded transaction is not visible in it.
  No counter row, so concurrent writers never wait for each other.
- SQLite (row-level triggers only): ``audience_version`` holds a counter and a ``dirty``
  flag; a plan clears the flag, and only the first change after it (``WHEN dirty = 0``)
  bumps the counter, so a bulk write pays one indexed read per row.

A migration that later recreates one of these tables on SQLite (``batch_alter_table``)
drops its triggers: recreate them (tests/delivery/test_plan_stamps.py checks they exist).

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-27 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = '0012'
down_revision: str | None = '0011'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# What each watched table's audience-relevant changes are: (table, columns whose update
# counts; None: no update counts, inserts: whether an insert counts).
WATCHED: tuple[tuple[str, tuple[str, ...], bool], ...] = (
    ("contact", ("id", "account_id", "email", "role", "timezone", "locale"), True),
    ("account", ("id", "lifecycle", "migration_state", "migrated_on", "region"), True),
    ("segment_assignment", ("id", "account_id", "as_of", "segment"), True),
    ("suppression", ("email", "reason"), False),
    ("delivery", ("campaign", "message", "contact_id"), False),
)

PG_FUNCTION = """
CREATE FUNCTION herald_audience_changed() RETURNS trigger LANGUAGE plpgsql
-- As its owner: a writer allowed to change contact need not be allowed audience_change.
SECURITY DEFINER SET search_path FROM CURRENT AS $$
BEGIN
    -- A statement that changed no row (an import's upsert of unchanged rows) changes no
    -- audience: the transaction's own row counts tell (without counts, always record).
    IF TG_OP = 'TRUNCATE'
        OR current_setting('track_counts') <> 'on'
        OR pg_stat_get_xact_tuples_inserted(TG_RELID)
            + pg_stat_get_xact_tuples_updated(TG_RELID)
            + pg_stat_get_xact_tuples_deleted(TG_RELID) > 0
    THEN
        INSERT INTO audience_change (xid, at)
        VALUES (pg_current_xact_id()::text::bigint, now())
        ON CONFLICT (xid) DO NOTHING;
    END IF;
    RETURN NULL;
END
$$
"""


def _trigger_name(table: str, event: str = "") -> str:
    return f"herald_audience_{table}{'_' + event if event else ''}"


def upgrade() -> None:
    op.create_table(
        "plan_stamp",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("campaign", sa.String(length=100), nullable=False),
        sa.Column("message", sa.String(length=100), nullable=False),
        sa.Column("digest", sa.String(length=64), nullable=False),
        sa.Column("segmented_on", sa.Date(), nullable=False),
        sa.Column("data_version", sa.Text(), nullable=False),
        sa.Column("suppressed_through", sa.Integer(), nullable=True),
        sa.Column(
            "audience",
            sa.JSON().with_variant(postgresql.JSONB(astext_type=sa.Text()), "postgresql"),
            nullable=True,
        ),
        sa.Column("planned_at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("campaign", "message", name="uq_plan_stamp_key"),
    )
    op.create_table(
        "audience_version",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("version", sa.BigInteger(), nullable=False),
        sa.Column("dirty", sa.Boolean(), nullable=False),
        sa.PrimaryKeyConstraint("id"),
    )
    op.create_table(
        "audience_change",
        sa.Column("xid", sa.BigInteger(), autoincrement=False, nullable=False),
        sa.Column("at", sa.DateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("xid"),
    )
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        op.execute(PG_FUNCTION)
        for table, columns, inserts in WATCHED:
            events = " OR ".join(
                [
                    *(["INSERT"] if inserts else []),
                    f"UPDATE OF {', '.join(columns)}",
                    "DELETE",
                    "TRUNCATE",
                ]
            )
            op.execute(
                f"CREATE TRIGGER {_trigger_name(table)} AFTER {events} ON {table} "
                "FOR EACH STATEMENT EXECUTE FUNCTION herald_audience_changed()"
            )
        return
    op.execute("INSERT INTO audience_version (id, version, dirty) VALUES (1, 1, 1)")
    clean = "(SELECT dirty FROM audience_version WHERE id = 1) = 0"
    bump = "UPDATE audience_version SET version = version + 1, dirty = 1 WHERE id = 1;"
    for table, columns, inserts in WATCHED:
        if inserts:
            op.execute(
                f"CREATE TRIGGER {_trigger_name(table, 'insert')} AFTER INSERT ON {table} "
                f"WHEN {clean} BEGIN {bump} END"
            )
        changed = " OR ".join(f"OLD.{c} IS NOT NEW.{c}" for c in columns)
        op.execute(
            f"CREATE TRIGGER {_trigger_name(table, 'update')} "
            f"AFTER UPDATE OF {', '.join(columns)} ON {table} "
            f"WHEN ({changed}) AND {clean} BEGIN {bump} END"
        )
        op.execute(
            f"CREATE TRIGGER {_trigger_name(table, 'delete')} AFTER DELETE ON {table} "
            f"WHEN {clean} BEGIN {bump} END"
        )


def downgrade() -> None:
    dialect = op.get_bind().dialect.name
    if dialect == "postgresql":
        for table, _, _ in WATCHED:
            op.execute(f"DROP TRIGGER IF EXISTS {_trigger_name(table)} ON {table}")
        op.execute("DROP FUNCTION IF EXISTS herald_audience_changed()")
    else:
        for table, _, _ in WATCHED:
            for event in ("insert", "update", "delete"):
                op.execute(f"DROP TRIGGER IF EXISTS {_trigger_name(table, event)}")
    op.drop_table("audience_change")
    op.drop_table("audience_version")
    op.drop_table("plan_stamp")
