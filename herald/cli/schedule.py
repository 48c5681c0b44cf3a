"""``herald schedule``: the campaign calendar, with today's audience counts."""

from __future__ import annotations

from datetime import timedelta
from typing import Annotated

import typer
from rich.table import Table

from herald.cli.common import AsOf, campaign_config, console, database, guard, parse_day


def schedule(
    days: Annotated[int, typer.Option(min=1, help="How many days ahead.")] = 90,
    as_of: AsOf = None,
) -> None:
    """The campaign calendar: what goes to whom, when, with counts by segment."""

    from herald.delivery.audience import audience_counts
    from herald.delivery.calendar import calendar

    start = parse_day(as_of)
    with guard():
        config = campaign_config()
        entries = calendar(config.campaign, start, start + timedelta(days=days))
        counts: dict[str, dict[str, int]] = {}
        with database().connect() as conn:
            for phase in {entry.phase for entry in entries}:
                per_segment: dict[str, int] = {}
                for count in audience_counts(conn, config, phase, start):  # type: ignore[arg-type]
                    per_segment[count.segment] = per_segment.get(count.segment, 0) + count.contacts
                counts[phase] = per_segment
    window = config.campaign.delivery_window
    table = Table(title=f"Calendar {start} + {days} days")
    table.add_column("day", no_wrap=True)
    table.add_column("message", no_wrap=True)
    table.add_column("to")
    table.add_column("contacts", justify="right", no_wrap=True)
    for entry in entries:
        audience = counts.get(entry.phase, {})
        contacts = sum(audience.get(segment, 0) for segment in entry.segments)
        who = ", ".join(entry.segments) + (" (not migrated)" if entry.phase == "sunset" else "")
        if entry.due is not None:
            who += f"; due {entry.due:%a %Y-%m-%d}, a closed day"
        if entry.until is not None:
            who += f"; until {entry.until}"
        table.add_row(f"{entry.day:%a %Y-%m-%d}", entry.message, who, str(contacts))
    console.print(table)
    console.print(
        f"Each lands {'/'.join(window.days)} {window.start}-{window.end} in the recipient's "
        f"time zone, at most {config.campaign.frequency_cap.max_messages} per contact per "
        f"{config.campaign.frequency_cap.per_days} days (critical notices aside). Counts are "
        f"today's audience ({start})."
    )
    for entry in entries:
        if entry.until is not None:  # a notice: config check guarantees it a day of its own
            continue
        last = entry.day + timedelta(days=7)
        span = [entry.day + timedelta(days=n) for n in range((last - entry.day).days)]
        if not any(window.is_open_day(day) for day in span):
            console.print(
                f"[bold yellow]warning:[/] {entry.message} for {', '.join(entry.segments)} is "
                f"due {entry.day:%a %Y-%m-%d} and superseded on {last}: no delivery-window "
                "day in between, so it cannot be sent. Move the date or widen the window.",
                soft_wrap=True,
            )
    if not entries:
        console.print("Nothing is due in this period.")
