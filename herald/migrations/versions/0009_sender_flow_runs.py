"""a sender records the Prefect flow run it works for

A phase sent by several senders (child flow runs started through the work pool) needs to
know which sender row belongs to which child run: its per-sender counts and rates, and a
child run that Prefect reports crashed settles that sender's batches at once.

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 08:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0009'
down_revision: str | None = '0008'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("send_worker") as batch:
        batch.add_column(sa.Column("flow_run_id", sa.String(length=36), nullable=True))
        batch.create_index("ix_send_worker_flow_run", ["flow_run_id"])


def downgrade() -> None:
    with op.batch_alter_table("send_worker") as batch:
        batch.drop_index("ix_send_worker_flow_run")
        batch.drop_column("flow_run_id")
