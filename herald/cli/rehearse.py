"""``herald rehearse``: the whole calendar on a simulated clock (``herald demo`` ends with one)."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from herald.cli.common import (
    ExitCode,
    campaign_config,
    console,
    flow_run_here,
    guard,
    parse_day,
    safe_url,
)

if TYPE_CHECKING:  # the flows import Prefect: only when a command runs one
    from flows.rehearse import RehearsalSummary


def rehearse_command(
    start: Annotated[str, typer.Option("--from", help="First simulated day, YYYY-MM-DD.")],
    end: Annotated[str, typer.Option("--to", help="Last simulated day, YYYY-MM-DD.")],
    down_from: Annotated[
        str | None, typer.Option(help="Simulate Herald down from this day...")
    ] = None,
    down_to: Annotated[str | None, typer.Option(help="...to this day, inclusive.")] = None,
    seed: Annotated[int, typer.Option(help="Seed of the synthetic telemetry.")] = 7,
) -> None:
    """Run the whole calendar on a simulated clock through the outbox, with synthetic telemetry.

    Acts on the configured database: rehearse on a copy or a demo base, not on production.
    """
    first, last = parse_day(start), parse_day(end)
    with guard():
        campaign_config()
        rehearsal = run_rehearsal(
            first,
            last,
            parse_day(down_from) if down_from else None,
            parse_day(down_to) if down_to else None,
            seed,
        )
    print_rehearsal(rehearsal)
    if rehearsal.never_sent:
        raise typer.Exit(ExitCode.PARTIAL)


def run_rehearsal(
    start: date, end: date, down_from: date | None, down_to: date | None, seed: int
) -> RehearsalSummary:
    from flows.rehearse import rehearse

    with flow_run_here():
        return rehearse(start=start, end=end, down_from=down_from, down_to=down_to, seed=seed)


def print_rehearsal(summary: RehearsalSummary) -> None:
    table = Table(
        "message", "sent", "by this run", title=f"Rehearsal {summary.start} to {summary.end}"
    )
    messages = list(summary.accepted) + [m for m in summary.sent if m not in summary.accepted]
    for message in messages:
        table.add_row(
            message, str(summary.accepted.get(message, 0)), str(summary.sent.get(message, 0))
        )
    table.add_row(
        "[bold]total[/]",
        f"[bold]{sum(summary.accepted.values())}[/]",
        f"[bold]{sum(summary.sent.values())}[/]",
    )
    console.print(table)
    if summary.accepted and not summary.sent:
        console.print(
            "Nothing new to send: this campaign was rehearsed on this database before "
            "(every step is idempotent; the counts are the ledger's)."
        )
    if summary.notices:
        notices = Table("notice", "segment", "sent", "went on", title="Deadline notices")
        for notice in summary.notices:
            went = f"{notice.first:%a %Y-%m-%d}" if notice.first else "-"
            if notice.last and notice.last != notice.first:
                went += f" to {notice.last:%a %Y-%m-%d}"
            notices.add_row(notice.message, notice.segment, str(notice.sent), went)
        console.print(notices)
    for message, count in summary.never_sent.items():
        console.print(
            f"[bold red]never sent:[/] {message}: {count} contact(s) never got this notice "
            "and nothing later superseded it",
            soft_wrap=True,
        )
    console.print(
        f"{summary.days_visited} simulated days with something due; {summary.migrated} "
        f"account(s) migrated; {summary.events} synthetic SendGrid events."
    )
    console.print(f"Outbox: {summary.outbox}")
    console.print(f"Ledger: {safe_url(summary.ledger)} (table delivery)")
    if summary.reports:
        console.print(f"Weekly reports: {len(summary.reports)}; the last one:")
        console.print(f"Report: {summary.reports[-1]}", soft_wrap=True)
