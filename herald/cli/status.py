"""``herald status``: the whole campaign on one screen (or as JSON for scripts)."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich import box
from rich.markup import escape
from rich.table import Table

from herald.cli.common import ExitCode, campaign_config, console, database, guard, tables

if TYPE_CHECKING:
    from herald.console.status import CampaignStatus


def status(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
    at: Annotated[
        str | None,
        typer.Option(
            "--at",
            help="The moment to read it at, ISO-8601 (default now): a rehearsal's clock.",
        ),
    ] = None,
) -> None:
    """The whole campaign on one screen: each phase and notice, and what needs a person.

    Per phase and notice (by segment and deadline): planned, waiting (not due, outside the
    window, held by the cap, ready), sent, failed, unknown, suppressed, expired; when it goes
    next; approval and pause. Then the senders that have not finished (a sender that looks
    dead needs a person), telemetry health and what needs a person. Exit code 3 when
    something needs a person.
    """
    from herald.console.status import campaign_status

    now = _moment(at)
    with guard():
        config = campaign_config()
        with database().connect() as conn:
            found = campaign_status(conn, config=config, now=now)
    if as_json:
        print(json.dumps(found.as_json(), indent=2))
    else:
        _print(found)
    if found.attention:
        raise typer.Exit(ExitCode.PARTIAL)


def _moment(value: str | None) -> datetime:
    if value is None:
        return datetime.now(UTC)
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not an ISO-8601 moment", param_hint="--at"
        ) from None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _print(found: CampaignStatus) -> None:
    state = f"[bold yellow]paused[/]: {found.paused}" if found.paused else "running"
    console.print(
        f"[bold]{found.campaign}[/] ({found.name}), {found.now:%Y-%m-%d %H:%M} UTC, campaign "
        f"day {found.today}: {state}; {found.ledger_rows} ledger rows.",
        soft_wrap=True,
    )
    table = Table(
        "message",
        "rows",
        "waiting",
        "sent",
        "failed",
        "unknown",
        "suppr.",
        "expired",
        "next (UTC)",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in (0, 2, 8):  # the label, why rows wait, the next moment stay on one line
        table.columns[column].no_wrap = True
    group = None
    for line in found.messages:
        label = line.label
        if line.offset is not None:
            if (line.segment, line.deadline) != group:
                group = (line.segment, line.deadline)
                table.add_row(f"[bold]{line.segment}[/] notices ({line.deadline})")
            label = f"  T-{line.offset}"
        if line.paused:
            label += " [yellow](paused)[/]"
        if line.needs_approval:
            label += " [yellow](needs approval)[/]"
        w = line.waiting
        why = ", ".join(
            f"{count} {name}"
            for name, count in (
                ("not due", w.not_due),
                ("window", w.window),
                ("cap", w.cap),
                ("ready", w.ready),
            )
            if count
        )
        s = line.states
        table.add_row(
            label,
            str(line.rows),
            f"{w.total}" + (f" ({why})" if why else ""),
            str(s["accepted"]),
            _alert(s["failed"]),
            _alert(s["unknown"]),
            str(s["suppressed"]),
            str(s["expired"]),
            f"{line.next_due:%Y-%m-%d %H:%M}" if line.next_due else "",
        )
    tables().print(table)
    if found.senders:
        _print_senders(found)
    for source in found.telemetry:
        mark = "ok" if source.healthy else "[red]rejected[/]"
        console.print(f"telemetry {source.source}: {mark} ({source.received_at:%Y-%m-%d %H:%M})")
    if not found.telemetry:
        console.print("telemetry: no batch received yet")
    if found.attention:
        console.print("[bold]Needs a person:[/]")
        for item in found.attention:
            console.print(f"  - {item}", markup=False, soft_wrap=True)
    else:
        console.print("Nothing needs a person.")


def _print_senders(found: CampaignStatus) -> None:
    from herald.console.status import age
    from herald.scaleout.senders import short_id

    table = Table(
        "message",
        "host:pid",
        "flow run",
        "batches",
        "accepted",
        "in flight",
        "rate/s",
        "heartbeat",
        "state",
        title="Live senders",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    for column in range(3, 7):
        table.columns[column].justify = "right"
    for sender in found.senders:
        s = sender.stats
        table.add_row(
            escape(s.message),
            escape(f"{s.host}:{s.pid}"),
            short_id(s.flow_run_id),
            str(s.batches),
            str(s.accepted),
            str(s.in_flight),
            f"{s.rate:.1f}",
            f"{age(sender.heartbeat_age)} ago",
            "alive" if sender.alive else "[red]looks dead[/]",
        )
    tables().print(table)


def _alert(count: int) -> str:
    return f"[red]{count}[/]" if count else "0"
