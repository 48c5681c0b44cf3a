"""``herald demo``: a synthetic base imported, segmented and rehearsed, end to end."""

from __future__ import annotations

from datetime import date, timedelta
from typing import Annotated

import typer

from herald.cli.common import (
    AsOf,
    ExitCode,
    campaign_config,
    console,
    database,
    guard,
    parse_day,
    settings,
)
from herald.cli.customers import print_import, run_import
from herald.cli.rehearse import print_rehearsal, run_rehearsal
from herald.cli.segment import print_segmentation, run_segmentation


def demo(
    accounts: Annotated[int, typer.Option(min=1, help="Accounts to generate.")] = 2_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same base.")] = 7,
    as_of: AsOf = None,
) -> None:
    """Make a deterministic synthetic base, import and segment it, rehearse the campaign.

    The rehearsal runs the whole calendar (all four phases and every notice) on a
    simulated clock through the outbox (``var/outbox``), never through SendGrid.
    """
    from herald.sandbox.demo import write_demo_base

    day = parse_day(as_of)
    with guard():
        campaign_config()
        files = write_demo_base(settings().var_dir / "demo", accounts=accounts, seed=seed)
        console.print(
            f"Synthetic base (seed {seed}): {files.accounts} accounts, {files.contacts} "
            f"contacts in {files.accounts_csv.parent}"
        )
        result = run_import(files.accounts_csv, files.contacts_csv, None)
        print_import(result)
        summary = run_segmentation(day)
    print_segmentation(summary)
    config = campaign_config()
    start = config.campaign.phases.preview - timedelta(days=7)
    end = max(config.campaign.sunset.values()) + timedelta(days=7)
    with guard():
        rehearsal = run_rehearsal(start, end, None, None, seed)
    print_rehearsal(rehearsal)
    print_next_steps(rehearsal.start, rehearsal.end)
    if result.rejected or rehearsal.never_sent:
        raise typer.Exit(ExitCode.PARTIAL)


def print_next_steps(start: date, end: date) -> None:
    """What to try next on the demo's database, on the demo's own dates (the rehearsal ran a
    simulated clock: on today's date the campaign has not started)."""
    from sqlalchemy import func, select

    from herald.models import CONTACT, DELIVERY, DeliveryState

    with database().connect() as conn:
        busiest = conn.execute(
            select(CONTACT.c.email)
            .join(DELIVERY, DELIVERY.c.contact_id == CONTACT.c.id)
            .where(DELIVERY.c.state == DeliveryState.ACCEPTED.value)
            .group_by(CONTACT.c.id, CONTACT.c.email)
            .order_by(func.count().desc(), CONTACT.c.id)
            .limit(1)
        ).scalar_one_or_none()
    herald = ".venv/bin/herald"
    midway = start + (end - start) / 2
    steps = [
        (f"{herald} status --at {end}T12:00:00Z", "the campaign on one screen, as it ended"),
        (f"{herald} metrics show --as-of {end}", "success metrics against their targets"),
        (f"{herald} schedule --as-of {start} --days 120", "the calendar from the first phase"),
        (f"{herald} phase status announcement", "one phase's ledger, approval and pause"),
        (f"{herald} report weekly --as-of {midway}", "the leadership report of a week"),
        (
            f"{herald} deliveries export --format csv --output var/deliveries.csv",
            "what was sent, to whom, in which state",
        ),
    ]
    if busiest:
        steps.insert(1, (f"{herald} contact show {busiest}", "everything one contact got"))
    console.print("\n[bold]Next[/] (on the demo's dates; the rehearsal ran a simulated clock):")
    for command, what in steps:
        console.print(f"  {command}", markup=False, soft_wrap=True)
        console.print(f"      {what}", style="dim")
