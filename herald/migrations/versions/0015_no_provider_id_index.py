"""the ledger's provider message id is no longer indexed: nothing looks a row up by it

``ix_delivery_provider_message_id`` was written for every row a request's answer accepted
(the id is the request's, the same for its 1,000 rows), and no query reads the ledger by it:
SendGrid's events find their row by the ledger key Herald puts in each message's custom
arguments (``herald_key``: campaign, message, contact), and the contact page shows the id beside
the row it already has. The column stays.

Revision ID: 0015
Revises: 0014
Create Date: 2026-11-28 10:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0015"
down_revision: str | None = "0014"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("ix_delivery_provider_message_id", table_name="delivery")


def downgrade() -> None:
    where = sa.text("provider_message_id IS NOT NULL")
    op.create_index(
        "ix_delivery_provider_message_id",
        "delivery",
        ["provider_message_id"],
        sqlite_where=where,
        postgresql_where=where,
    )
