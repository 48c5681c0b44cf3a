"""``herald preview``: what one contact would receive in a phase, or why not."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Literal

import typer

from herald.addresses import display_email
from herald.cli.common import (
    AsOf,
    ExitCode,
    campaign_config,
    console,
    database,
    guard,
    parse_day,
    parse_phase,
    settings,
)

if TYPE_CHECKING:
    from herald.config import PhaseName


def preview_command(
    phase: Annotated[
        str,
        typer.Argument(
            help="preview, announcement, deprecation, sunset (the notice going that day), "
            "thank-you or deadline-extended.",
            show_default=False,
        ),
    ],
    contact: Annotated[str, typer.Option("--contact", help="The contact's e-mail address.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML body to this file.")
    ] = None,
    as_of: AsOf = None,
    locale: Annotated[
        str | None,
        typer.Option(
            "--locale",
            help="Render it in this campaign locale instead of the contact's (for reviewers).",
        ),
    ] = None,
) -> None:
    """Exactly what a contact would receive in a phase (for sunset: the notice that goes on
    the day, with its count of days; thank-you: the one after a move), or why they would not.

    Exit code 3 means the contact would not receive it (the reasons are printed).
    """
    from herald.delivery.preview import preview

    kinds: dict[str, Literal["thank_you", "deadline_extended"]] = {
        "thank-you": "thank_you",
        "deadline-extended": "deadline_extended",
    }
    name: PhaseName | Literal["thank_you", "deadline_extended"] = kinds.get(
        phase.replace("_", "-")
    ) or parse_phase(phase)
    day = parse_day(as_of)
    with guard():
        config = campaign_config()
        if locale is not None and locale not in config.campaign.locales:
            raise typer.BadParameter(
                f"{locale!r} is not one of the campaign's locales "
                f"({', '.join(config.campaign.locales)})",
                param_hint="--locale",
            )
        result = preview(
            database(), config, name, contact, day, settings().templates_dir, locale=locale
        )
    if result.variant is not None:
        variant = result.variant
        console.print(
            f"Variant: phase {variant.phase}, segment {variant.segment}, role {variant.role}, "
            f"locale {variant.locale}",
            markup=False,
        )
    if result.message is not None:
        why = "chosen with --locale; " if locale else ""
        console.print(
            f"Language: {result.message.language} ({why}the contact's locale is "
            f"{result.locale or 'not set'})",
            markup=False,
        )
    if result.message is not None:
        console.print(f"Subject: {result.message.subject}", markup=False, soft_wrap=True)
        console.print("")
        console.print(result.message.text, markup=False, soft_wrap=True)
        if html is not None:
            html.write_text(result.message.html, encoding="utf-8")
            console.print(f"HTML body written to {html}")
    shown = display_email(result.email)
    if result.would_send:
        which = f" ({result.notice})" if result.notice else ""
        console.print(f"[green]{shown} would receive this message in {name}{which} on {day}.[/]")
        return
    console.print(f"[bold yellow]{shown} would NOT receive {name}:[/]")
    for reason in result.reasons:
        console.print(f"  - {reason}", markup=False)
    raise typer.Exit(ExitCode.PARTIAL)
