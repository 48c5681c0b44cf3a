"""``herald config``: campaign as code, checked before anything runs."""

from __future__ import annotations

import typer

from herald.cli.common import campaign_config, console, guard

config_app = typer.Typer(help="Campaign as code: config/*.yaml.", no_args_is_help=True)


@config_app.command("check")
def config_check() -> None:
    """Validate every config file; print each problem with file, line and key path."""
    with guard():
        config = campaign_config()
    console.print(
        f"Config OK ({config.directory}): campaign {config.campaign.id!r}, "
        f"{len(config.segments.segments)} segments, {len(config.segments.rules)} rules, "
        f"{len(config.evidence.figures)} evidence figures, {len(config.targets.targets)} targets."
    )
