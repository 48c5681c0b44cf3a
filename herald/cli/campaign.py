"""``herald campaign``: pause and resume the whole campaign."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.common import campaign_config, console, database, guard

campaign_app = typer.Typer(
    help="The whole campaign: pause and resume every send.", no_args_is_help=True
)


@campaign_app.command("pause")
def campaign_pause(
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "paused by hand",
) -> None:
    """Stop every phase and notice of the campaign within one batch."""
    from herald.delivery.controls import CAMPAIGN_WIDE

    campaign = set_pause(CAMPAIGN_WIDE, paused=True, reason=reason)
    console.print(f"Campaign {campaign} paused: {reason}")


@campaign_app.command("resume")
def campaign_resume() -> None:
    """Let the campaign send again (phases paused on their own stay paused)."""
    from herald.delivery.controls import CAMPAIGN_WIDE

    campaign = set_pause(CAMPAIGN_WIDE, paused=False, reason="resumed")
    console.print(f"Campaign {campaign} resumed.")


def set_pause(message: str, *, paused: bool, reason: str) -> str:
    """Pause or resume ``message`` (a phase, or the whole campaign) and say why in the audit
    log; the campaign's id. ``herald phase pause`` goes through here too."""
    from herald.delivery.controls import set_paused

    with guard():
        config = campaign_config()
        set_paused(
            database(), campaign=config.campaign.id, message=message, paused=paused, reason=reason
        )
    return config.campaign.id
