"""a send's updates of the ledger write no index entry: batches found by their id range

Every ledger row is updated twice by a send (claimed, then recorded). ``state`` was in
``ix_delivery_claim`` and ``batch_id`` in ``ix_delivery_batch``, so neither update could stay
in place: on Postgres each wrote a new entry in every index of the table (non-HOT). Now no
index holds a column a send changes:

- ``ix_delivery_claim`` is ``(campaign, message, id)``: a claim walks the phase's ids up from
  the sender's watermark and reads ``state`` from the row;
- ``ix_delivery_batch`` is dropped: a batch records the lowest and highest id its claim took
  (``send_batch.first_row_id``, ``last_row_id``), and its rows are looked up by that range
  and their batch id (a batch without one, a report's or an older one, is looked up
  everywhere);
- on Postgres the ledger keeps 40% of each page free (``fillfactor`` 60) for the updated
  versions of its rows.

Revision ID: 0016
Revises: 0015
Create Date: 2026-11-28 14:10:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0016"
down_revision: str | None = "0015"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("send_batch") as batch:
        batch.add_column(sa.Column("first_row_id", sa.Integer(), nullable=True))
        batch.add_column(sa.Column("last_row_id", sa.Integer(), nullable=True))
    op.drop_index("ix_delivery_batch", table_name="delivery")
    op.drop_index("ix_delivery_claim", table_name="delivery")
    op.create_index("ix_delivery_claim", "delivery", ["campaign", "message", "id"])
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery SET (fillfactor = 60)")


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("ALTER TABLE delivery RESET (fillfactor)")
    op.drop_index("ix_delivery_claim", table_name="delivery")
    op.create_index("ix_delivery_claim", "delivery", ["campaign", "message", "state", "id"])
    where = sa.text("batch_id IS NOT NULL")
    op.create_index(
        "ix_delivery_batch", "delivery", ["batch_id"], sqlite_where=where, postgresql_where=where
    )
    with op.batch_alter_table("send_batch") as batch:
        batch.drop_column("last_row_id")
        batch.drop_column("first_row_id")
