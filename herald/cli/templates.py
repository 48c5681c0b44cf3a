"""``herald templates``: every message template, rendered in every variant."""

from __future__ import annotations

import typer

from herald.cli.common import campaign_config, console, guard, settings

templates_app = typer.Typer(help="Message templates.", no_args_is_help=True)


@templates_app.command("check")
def templates_check() -> None:
    """Render every template for every phase, segment, role and locale; fail on any error."""
    from herald.delivery.messages import check_templates

    with guard():
        count = check_templates(campaign_config(), settings().templates_dir)
    console.print(f"Templates OK: {count} variants rendered from {settings().templates_dir}.")
