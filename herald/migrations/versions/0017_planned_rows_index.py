"""on SQLite, each message's planned ledger rows in an index of their own

Claims, expiry, the eligibility pass before a send and the time zones still waiting all look
for a message's *planned* rows. With ``ix_delivery_claim`` (``campaign, message, id``) they
read every row of the message, sent or not: a finished 1M phase's rerun read a million rows
four times to find nothing (0.2-0.5 s each on a 2-core machine). A partial index
(``WHERE state = 'planned'``) holds only the rows still to send: it is filled by the plan and
emptied as rows are claimed, and a rerun with nothing planned reads nothing.

SQLite only: on Postgres a partial index on ``state`` would make every update of a send
change an indexed column, which migration 0016 made sure none does (updates stay in place).

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-29 01:50:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.create_index(
            "ix_delivery_planned",
            "delivery",
            ["campaign", "message", "id"],
            sqlite_where=sa.text("state = 'planned'"),
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "sqlite":
        op.drop_index("ix_delivery_planned", table_name="delivery")
