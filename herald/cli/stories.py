"""``herald stories``: customer success stories, from the accounts' own measurements."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from herald.cli.common import (
    AsOf,
    ExitCode,
    campaign_config,
    console,
    database,
    errors,
    guard,
    parse_day,
    settings,
)

stories_app = typer.Typer(
    help="Customer success stories: case-study candidates and drafts.", no_args_is_help=True
)


@stories_app.callback()
def _stories() -> None:
    """Customer success stories: case-study candidates and drafts."""


@stories_app.command("list")
def list_candidates(
    as_of: AsOf = None,
    csv_path: Annotated[
        Path | None, typer.Option("--csv", help="Also write every candidate to this CSV file.")
    ] = None,
) -> None:
    """The case-study candidates as of a day, best first (report.stories in campaign.yaml:
    migrated, the largest measured improvements, positive surveys, consent given)."""
    from herald.report.stories import candidates_csv, story_candidates

    day = parse_day(as_of)
    with guard():
        config = campaign_config()
        with database().connect() as conn:
            found = story_candidates(conn, config=config, as_of=day)
    table = Table(title=f"Case-study candidates as of {day}: {len(found)}")
    for column in ("account", "name", "industry", "imports", "memory", "CSAT", "reports"):
        table.add_column(column, justify="right" if column in ("imports", "memory") else "left")
    for c in found[: config.campaign.report.stories.candidates]:
        table.add_row(
            escape(c.external_id),
            escape(c.name),
            escape(c.industry or "-"),
            f"{c.latest.speedup:.2f}x",
            f"{100 * c.latest.memory_saved:.1f}% less",
            f"{c.average_csat:.1f}",
            str(c.reports),
        )
    console.print(table)
    if csv_path is not None:
        csv_path.write_text(candidates_csv(found), encoding="utf-8")
        console.print(f"Every candidate: {csv_path}", soft_wrap=True, markup=False)


@stories_app.command("draft")
def draft_story(
    account: Annotated[str, typer.Argument(help="The account's external id.")],
    out: Annotated[
        Path | None,
        typer.Option("--out", help="Where to write it (default var/stories/<ACCOUNT>.md)."),
    ] = None,
) -> None:
    """Write a case-study draft for ACCOUNT from its own performance reports, survey answers
    and contacts (templates/stories/case-study.md).

    Exit code 2: no such account, no consent (when report.stories.consent_attribute is
    set) or no performance report: nothing was written.
    """
    from herald.report.stories import NotACandidate, draft, story_facts

    with guard():
        config = campaign_config()
        with database().connect() as conn:
            try:
                facts = story_facts(conn, config=config, external_id=account)
            except NotACandidate as error:
                errors.print(f"[bold red]error:[/] {escape(str(error))}. Nothing was written.")
                raise typer.Exit(ExitCode.INVALID) from None
        text = draft(config, facts, settings().templates_dir)
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in account)
    path = out or settings().var_dir / "stories" / f"{safe}.md"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    latest = facts.measurements[-1]
    console.print(
        f"Draft for {escape(facts.name)} ({escape(facts.external_id)}): imports "
        f"{latest.speedup:.2f}x faster, {100 * latest.memory_saved:.1f}% less memory "
        f"({len(facts.measurements)} report(s))."
    )
    console.print(f"Written to {path}", soft_wrap=True, markup=False)
