"""suppression ids are never reused: AUTOINCREMENT on SQLite

A sender looks for suppressions newer than the highest id it has seen before each batch.
Since `herald suppressions remove` deletes rows, SQLite (whose rowids restart above the
highest id left) could give a new suppression the id of a removed one, and a running send
would not see it. AUTOINCREMENT makes SQLite never hand out an id twice, as a Postgres
sequence never does; on Postgres nothing changes.

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 04:40:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = '0008'
down_revision: str | None = '0007'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "suppression", recreate="always", table_kwargs={"sqlite_autoincrement": True}
    ):
        pass


def downgrade() -> None:
    if op.get_bind().dialect.name != "sqlite":
        return
    with op.batch_alter_table(
        "suppression", recreate="always", table_kwargs={"sqlite_autoincrement": False}
    ):
        pass
