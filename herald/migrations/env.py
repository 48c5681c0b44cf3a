"""Alembic environment: runs migrations against the URL Herald configured."""

from __future__ import annotations

from alembic import context

from herald.db import get_engine
from herald.models import in_schema, metadata

config = context.config


def run_migrations_online() -> None:
    """Run migrations on one connection, in one transaction."""
    url = config.get_main_option("sqlalchemy.url")
    assert url, "herald.db.alembic_config sets sqlalchemy.url"
    engine = get_engine(url)
    with engine.connect() as connection:
        context.configure(
            connection=connection,
            target_metadata=metadata,
            # SQLite cannot ALTER most things in place: copy-and-move tables instead.
            render_as_batch=connection.dialect.name == "sqlite",
            compare_type=True,
            include_object=in_schema(connection.dialect.name),
        )
        with context.begin_transaction():
            context.run_migrations()


if context.is_offline_mode():
    raise SystemExit("Herald runs migrations online only: use `herald db upgrade`.")
run_migrations_online()
