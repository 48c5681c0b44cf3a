"""``herald notices``: plan and send the deadline notices due as of a day."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from herald.cli.common import (
    AsOf,
    ExitCode,
    campaign_config,
    console,
    database,
    flow_run_here,
    guard,
    parse_day,
)

notices_app = typer.Typer(
    help="Deadline notices (what the sunset-notices deployment runs every hour).",
    no_args_is_help=True,
)


@notices_app.command("send")
def notices_send(
    send: Annotated[bool, typer.Option("--send", help="Really send. Without it: what is due.")] = (
        False
    ),
    as_of: AsOf = None,
    ignore_window: Annotated[
        bool,
        typer.Option("--ignore-window", help="Send now, outside delivery windows and the cap."),
    ] = False,
) -> None:
    """Plan the notices going as of the day and send what may go now (dry by default).

    Exit code 3 when a notice expired unsent with nothing later to supersede it (somebody
    never got a deadline notice), or sends failed, are unknown or paused.
    """
    from flows.send_notices import send_notices

    day = parse_day(as_of)
    with guard():
        campaign_config()
        database()
        with flow_run_here():
            summary = send_notices(as_of=day, send=send, window=not ignore_window)
    table = Table(title=f"Notices going as of {day}")
    for column in ("notice", "segment", "due", "goes", "until"):
        table.add_column(column, no_wrap=True)
    table.add_column("planned", justify="right")
    table.add_column("sent", justify="right")
    for line in summary.due:
        table.add_row(
            line.message,
            line.segment,
            f"{line.due:%a %d %b}",
            f"{line.sends_on:%a %d %b}",
            f"{line.until:%d %b %Y}",
            str(line.planned_new),
            str(summary.sent.get(line.message, 0)),
        )
    console.print(table)
    if summary.dry_run:
        console.print("Dry run: nothing was planned or sent. To send: herald notices send --send")
        return
    console.print(
        f"Sent {sum(summary.sent.values())}; {summary.waiting} waiting for a window or the "
        f"cap; failed {summary.failed}; unknown {summary.unknown}."
    )
    for message, count in summary.never_sent.items():
        console.print(
            f"[bold red]never sent:[/] {message}: {count} contact(s) never got this notice "
            "and nothing later superseded it",
            soft_wrap=True,
        )
    if summary.never_sent or summary.failed or summary.unknown or summary.paused:
        raise typer.Exit(ExitCode.PARTIAL)
