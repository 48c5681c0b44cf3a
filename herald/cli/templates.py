"""``herald templates``: every message template, rendered in every variant."""

from __future__ import annotations

import typer

from herald.cli.common import campaign_config, console, guard, settings

templates_app = typer.Typer(help="Message templates.", no_args_is_help=True)


@templates_app.command("check")
def templates_check() -> None:
    """Render every template for every phase, segment, role and locale; fail on any error,
    and on a sentence a locale's catalog lacks, leaves empty or fuzzy, or translates with
    other placeholders (naming the catalog, the message and the locale)."""
    from herald.delivery.messages import check_templates
    from herald.i18n.catalogs import language_for

    with guard():
        config = campaign_config()
        count = check_templates(config, settings().templates_dir)
    locales = config.campaign.locales
    written = {tag: language_for(settings().templates_dir, tag, locales[0]) for tag in locales}
    console.print(
        f"Templates OK: {count} variants rendered from {settings().templates_dir}, every "
        f"sentence translated in {', '.join(t for t in locales if written[t] == t)}.",
        soft_wrap=True,
    )
    for tag, language in written.items():
        if language != tag:
            console.print(f"Locale {tag} has no catalog: its contacts get {language}.")
