"""``herald demo``: a synthetic base imported, segmented and rehearsed, end to end."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer

from herald.cli.common import AsOf, ExitCode, campaign_config, console, guard, parse_day, settings
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
    if result.rejected or rehearsal.never_sent:
        raise typer.Exit(ExitCode.PARTIAL)
