"""the ledger's batch and provider-id indexes hold only rows that have one

A planned row has no batch and no provider message id; both indexes held an entry for each
of a plan's rows all the same (a million entries of NULL at a 1M plan, written and then
replaced). As partial indexes (``WHERE ... IS NOT NULL``) they hold only the rows a claim
or an answer gave a value, and still serve every ``batch_id = ...`` and
``provider_message_id = ...`` look-up (an equality implies NOT NULL, on SQLite and
Postgres alike).

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-27 11:20:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PARTIAL = {
    "ix_delivery_batch": "batch_id",
    "ix_delivery_provider_message_id": "provider_message_id",
}


def upgrade() -> None:
    for name, column in PARTIAL.items():
        op.drop_index(name, table_name="delivery")
        where = sa.text(f"{column} IS NOT NULL")
        op.create_index(name, "delivery", [column], sqlite_where=where, postgresql_where=where)


def downgrade() -> None:
    for name, column in PARTIAL.items():
        op.drop_index(name, table_name="delivery")
        op.create_index(name, "delivery", [column])
