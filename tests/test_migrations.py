"""The Alembic migrations build exactly the schema the models describe, on both databases."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from herald.db import downgrade, upgrade
from herald.models import in_schema, metadata
from tests.support.environment import Database


class TestMigrations:
    def test_migrated_schema_matches_the_models(self, db: Database) -> None:
        """No difference between the migrated database and the SQLModel metadata."""
        with db.engine.connect() as conn:
            opts = {"compare_type": True, "include_object": in_schema(conn.dialect.name)}
            context = MigrationContext.configure(conn, opts=opts)
            assert compare_metadata(context, metadata) == []

    def test_every_idempotency_key_is_a_unique_constraint(self, db: Database) -> None:
        """The delivery ledger, contacts and events are protected by the database itself."""
        inspector = inspect(db.engine)
        uniques = {
            table: {tuple(u["column_names"]) for u in inspector.get_unique_constraints(table)}
            for table in ("delivery", "contact", "account", "email_event", "segment_assignment")
        }
        assert ("campaign", "message", "contact_id") in uniques["delivery"]
        assert ("email",) in uniques["contact"]
        assert ("external_id",) in uniques["account"]
        assert ("sg_event_id",) in uniques["email_event"]
        assert ("account_id", "as_of") in uniques["segment_assignment"]

    def test_the_head_herald_knows_is_alembics(self, db: Database) -> None:
        """herald.db.HEAD names the newest migration, and a migrated database is at it."""
        from alembic.script import ScriptDirectory

        from herald.db import HEAD, alembic_config

        assert ScriptDirectory.from_config(alembic_config(db.url)).get_current_head() == HEAD
        with db.engine.connect() as conn:
            assert conn.execute(text("SELECT version_num FROM alembic_version")).scalar() == HEAD

    def test_upgrade_is_idempotent_and_downgrade_reverses_it(self, db: Database) -> None:
        """Upgrading twice is harmless; downgrading to base drops every table."""
        upgrade(db.url)
        downgrade(db.url, "base")
        assert set(inspect(db.engine).get_table_names()) <= {"alembic_version"}
        upgrade(db.url)
        assert set(metadata.tables) <= set(inspect(db.engine).get_table_names())
