"""``herald db``: the database schema."""

from __future__ import annotations

import typer

from herald.cli.common import console, database, guard, safe_url, settings

db_app = typer.Typer(help="The database schema.", no_args_is_help=True)


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the current version."""
    with guard():
        database()
    console.print(f"Schema is current: {safe_url(settings().effective_database_url)}")
