"""customer import: a digest of the source row on each account and contact

A re-import skips a row whose CSV line (under the same header) is the one that last wrote
its account or contact: ``import_digest`` holds a 64-bit digest of that line, its header and
the version of the row checks (see herald.customers.importer). NULL means no digest: the
row is checked and compared in full on the next import.

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-27 10:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = '0010'
down_revision: str | None = '0009'
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    for table in ("account", "contact"):
        with op.batch_alter_table(table) as batch:
            batch.add_column(sa.Column("import_digest", sa.BigInteger(), nullable=True))


def downgrade() -> None:
    for table in ("account", "contact"):
        with op.batch_alter_table(table) as batch:
            batch.drop_column("import_digest")
