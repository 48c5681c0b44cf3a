"""``herald settings``: the effective settings, secrets masked."""

from __future__ import annotations

from rich.table import Table

from herald.cli.common import console, safe_url, settings


def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    current = settings()
    table = Table("setting", "value", title="Herald settings")
    table.add_row("HERALD_DATABASE_URL", safe_url(current.effective_database_url))
    table.add_row("HERALD_CONFIG_DIR", str(current.config_dir))
    table.add_row("HERALD_TEMPLATES_DIR", str(current.templates_dir))
    table.add_row("HERALD_VAR_DIR", str(current.var_dir))
    table.add_row("HERALD_TRANSPORT", current.transport.value)
    table.add_row("HERALD_SENDGRID_API_HOST", current.sendgrid_api_host)
    table.add_row("SENDGRID_API_KEY", "set (hidden)" if current.sendgrid_api_key else "not set")
    table.add_row(
        "HERALD_UNSUBSCRIBE_SECRET",
        "set (hidden)" if current.unsubscribe_secret else "not set (the outbox keeps one in var/)",
    )
    console.print(table)
