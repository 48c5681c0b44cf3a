"""``herald deliveries``: the unsettled sends of the ledger, and settling them by hand."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.table import Table

from herald.addresses import display_email
from herald.cli.common import (
    ExitCode,
    PhaseArg,
    campaign_config,
    console,
    database,
    guard,
    parse_phase,
)

deliveries_app = typer.Typer(help="The delivery ledger: unsettled sends.", no_args_is_help=True)


@deliveries_app.command("unknown")
def deliveries_unknown(
    phase: Annotated[str | None, typer.Option(help="Only this phase.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to print.")] = 50,
) -> None:
    """Sends whose request may or may not have been accepted; none is re-sent until settled.

    Exit code 3 when there are any.
    """
    from herald.delivery.recovery import unknown_rows

    name = parse_phase(phase) if phase else None
    with guard():
        config = campaign_config()
        with database().connect() as conn:
            rows = unknown_rows(conn, campaign=config.campaign.id, message=name)
    if not rows:
        console.print("No unknown deliveries.")
        return
    table = Table("delivery", "phase", "contact", "batch", "claimed", "why", title="Unknown")
    for row in rows[:limit]:
        table.add_row(
            str(row.delivery_id),
            row.message,
            display_email(row.email),
            row.batch_id or "",
            f"{row.claimed_at:%Y-%m-%d %H:%M:%S}" if row.claimed_at else "",
            row.error or "",
        )
    console.print(table)
    batches = sorted({row.batch_id for row in rows if row.batch_id})
    console.print(
        f"{len(rows)} unknown in {len(batches)} batch(es). Settle them with SendGrid's events, "
        "or: herald deliveries resolve PHASE --resend | --mark-sent [--batch ID]",
        soft_wrap=True,
    )
    raise typer.Exit(ExitCode.PARTIAL)


@deliveries_app.command("resolve")
def deliveries_resolve(
    phase: PhaseArg,
    resend: Annotated[
        bool, typer.Option("--resend", help="They were not delivered: plan them again.")
    ] = False,
    mark_sent: Annotated[
        bool, typer.Option("--mark-sent", help="They were delivered: record them as sent.")
    ] = False,
    batch: Annotated[
        list[str] | None, typer.Option("--batch", help="Only these batches (repeatable).")
    ] = None,
    failed: Annotated[
        bool, typer.Option("--include-failed", help="Also settle rows that failed.")
    ] = False,
) -> None:
    """Settle unknown deliveries of a phase by hand (recorded in the audit log)."""
    from herald.delivery.recovery import resolve

    name = parse_phase(phase)
    if resend == mark_sent:
        raise typer.BadParameter("give exactly one of --resend or --mark-sent")
    with guard():
        config = campaign_config()
        count = resolve(
            database(),
            campaign=config.campaign.id,
            message=name,
            resolution="resend" if resend else "mark-sent",
            batch_ids=batch,
            include_failed=failed,
        )
    action = "planned again (the next send delivers them)" if resend else "marked sent"
    console.print(f"{count} delivery(ies) of {name} {action}.")
