"""``herald phase``: send, pause, resume and inspect one phase; ``herald approve`` its real send."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from herald.cli.campaign import set_pause
from herald.cli.common import (
    AsOf,
    ExitCode,
    PhaseArg,
    campaign_config,
    console,
    database,
    flow_run_here,
    guard,
    parse_day,
    parse_phase,
    settings,
)

if TYPE_CHECKING:  # the flows import Prefect: only when a command runs one
    from flows.send_phase import PhaseSummary
    from herald.config import PhaseName

phase_app = typer.Typer(
    help="Communication phases: send (dry by default), pause, resume.", no_args_is_help=True
)


@phase_app.command("send")
def phase_send(
    phase: PhaseArg,
    send: Annotated[
        bool, typer.Option("--send", help="Really send. Without it: counts and sample renders.")
    ] = False,
    as_of: AsOf = None,
    max_batches: Annotated[
        int | None, typer.Option(min=1, help="Stop after this many batches.")
    ] = None,
    ignore_window: Annotated[
        bool,
        typer.Option(
            "--ignore-window",
            help="Send now to everyone due, outside delivery windows and the frequency cap.",
        ),
    ] = False,
    senders: Annotated[
        int | None,
        typer.Option(
            min=1,
            max=64,
            help="Sender runs started through the work pool (default: sending.senders in "
            "campaign.yaml). More than 1 needs a Prefect server and workers (docs/deploy.md).",
        ),
    ] = None,
) -> None:
    """Run a phase: a dry run (audience counts, sample renders) unless --send is given.

    Exit code 3 means the phase is paused, or its ledger holds failed or unknown rows
    (whichever run left them): a person has something to settle.
    """
    from herald.delivery.transports import get_transport

    name = parse_phase(phase)
    day = parse_day(as_of)
    with guard():
        config = campaign_config()
        if send:
            get_transport(settings(), config)  # a missing API key stops here, before Prefect
        database()
        summary = _run_phase(
            name, day, send, max_batches, window=not ignore_window, senders=senders
        )
    _print_phase(summary)
    if summary.paused or needs_a_person(summary.ledger):
        raise typer.Exit(ExitCode.PARTIAL)


def needs_a_person(counts: dict[str, int]) -> bool:
    """Whether a phase's ledger holds rows a person must settle (failed or unknown)."""
    return bool(counts.get("failed") or counts.get("unknown"))


def _run_phase(
    phase: PhaseName,
    day: date,
    send: bool,
    max_batches: int | None = None,
    window: bool = True,
    senders: int | None = None,
) -> PhaseSummary:
    from flows.send_phase import send_phase

    with flow_run_here():
        return send_phase(
            phase=phase,
            as_of=day,
            send=send,
            max_batches=max_batches,
            window=window,
            senders=senders,
        )


def _print_phase(summary: PhaseSummary) -> None:
    table = Table("segment", "role", "contacts", title=f"{summary.phase}: audience")
    for row in summary.audience:
        table.add_row(str(row["segment"]), str(row["role"]), str(row["contacts"]))
    table.add_row("[bold]total[/]", "", f"[bold]{summary.audience_total}[/]")
    console.print(table)
    if summary.dry_run:
        for sample in summary.samples:
            console.print(
                f"  sample {sample['segment']}/{sample['role']}: {sample['subject']!r} "
                f"-> {sample['html']}",
                soft_wrap=True,
                markup=False,
            )
        console.print(
            f"[bold]Dry run[/]: nothing was sent. Templates OK ({summary.templates_checked} "
            f"variants). To send: herald phase send {summary.phase} --send"
        )
        return
    from herald.delivery.sender import Delivered

    done = summary.delivery or Delivered(message=summary.phase)
    console.print(
        f"{summary.phase} via {summary.transport}: planned {summary.planned_new} new; "
        f"sent {done.accepted} in {done.requests} request(s) over {done.batches} "
        f"batch(es); failed {done.failed}; unknown {done.unknown}.",
        soft_wrap=True,
    )
    if summary.fanned_out:
        fanned = summary.fanned_out
        for s in fanned.senders:
            console.print(
                f"  sender {s.worker_id[:8]} on {s.host}:{s.pid}: {s.accepted} accepted in "
                f"{s.batches} batch(es), {s.rate:.0f}/s" + (f" ({s.outcome})" if s.outcome else ""),
                soft_wrap=True,
            )
        if fanned.found_dead:
            console.print(
                f"[yellow]{fanned.found_dead} sender(s) died[/]: their unrequested rows were "
                f"planned again ({fanned.swept} sent at the end by the phase's run); their "
                "requests in flight are unknown (herald deliveries unknown)."
            )
    if done.suppressed_now:
        console.print(
            "Suppressed before sending: "
            + ", ".join(f"{k} {v}" for k, v in done.suppressed_now.items())
        )
    if done.recovered_unknown or done.recovered_released:
        console.print(
            f"[yellow]A sender had died[/]: {done.recovered_released} unrequested row(s) "
            f"put back, {done.recovered_unknown} in-flight row(s) now unknown."
        )
    if summary.timezone_fallbacks:
        console.print(
            f"{summary.timezone_fallbacks} recipient(s) have no time zone: sent in their "
            "account region's delivery window."
        )
    if summary.waiting:
        console.print(
            f"{summary.waiting} planned row(s) wait for their recipients' delivery window or "
            "the frequency cap; the next run sends them."
        )
    ledger_line = ", ".join(f"{k} {v}" for k, v in summary.ledger.items() if v)
    console.print(f"Ledger for {summary.phase}: {ledger_line or 'empty'}")
    if summary.outbox:
        console.print(f"Outbox: {summary.outbox}")
    if summary.paused:
        console.print(
            f"[bold yellow]Paused:[/] {summary.paused}. Resume: herald phase resume "
            f"{summary.phase}",
            soft_wrap=True,
        )
    if summary.ledger.get("unknown"):
        console.print(
            f"[yellow]{summary.ledger['unknown']} unknown[/] (may have been accepted; never "
            "re-sent until settled): see herald deliveries unknown"
        )
    if summary.ledger.get("failed"):
        console.print(
            f"[yellow]{summary.ledger['failed']} failed[/] (not sent; each with its reason): "
            f"see herald phase status {summary.phase}; once fixed, herald deliveries resolve "
            f"{summary.phase} --resend --include-failed"
        )


@phase_app.command("pause")
def phase_pause(
    phase: PhaseArg,
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "paused by hand",
) -> None:
    """Stop a phase's sending within one batch; `resume` continues it."""
    name = parse_phase(phase)
    set_pause(name, paused=True, reason=reason)
    console.print(f"Phase {name} paused: {reason}")


@phase_app.command("resume")
def phase_resume(phase: PhaseArg) -> None:
    """Let a paused phase send again (after the operator or the circuit breaker paused it)."""
    from herald.delivery.controls import paused_reason, set_paused

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        engine = database()
        with engine.connect() as conn:
            was = paused_reason(conn, campaign=config.campaign.id, message=name)
        set_paused(
            engine,
            campaign=config.campaign.id,
            message=name,
            paused=False,
            reason=f"resumed (was: {was})",
        )
    console.print(
        f"Phase {name} resumed" + (f" (was paused: {was})." if was else " (was not paused).")
    )


@phase_app.command("status")
def phase_status(phase: PhaseArg) -> None:
    """The phase's ledger by state, why rows failed, whether it is paused and approved."""
    from herald.delivery.controls import approval, paused_reason
    from herald.delivery.ledger import failure_reasons, state_counts

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        campaign = config.campaign.id
        with database().connect() as conn:
            counts = state_counts(conn, campaign=campaign, message=name)
            paused = paused_reason(conn, campaign=campaign, message=name)
            reasons = failure_reasons(conn, campaign=campaign, message=name)
            approved = approval(conn, campaign=campaign, message=name)
    table = Table("state", "rows", title=f"{name}: ledger")
    for state, count in counts.items():
        table.add_row(state, str(count))
    console.print(table)
    if reasons:
        failed = Table("rows", "why they failed", title=f"{name}: failed rows")
        for reason, count in reasons:
            failed.add_row(str(count), reason)
        console.print(failed)
    console.print(f"Paused: {paused}" if paused else "Not paused.")
    if approved:
        note = f": {approved.note}" if approved.note else ""
        console.print(
            f"Approved by {approved.by} at {approved.at:%Y-%m-%d %H:%M} UTC{note}", markup=False
        )
    else:
        console.print(f"Not approved: a scheduled real send waits (herald approve {name}).")


def approve(
    phase: PhaseArg,
    note: Annotated[str, typer.Option(help="Why, or what was checked (audit log).")] = "",
) -> None:
    """Approve the real send of a phase: its scheduled run sends without waiting."""
    from herald.delivery.controls import approve as record_approval

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        who = record_approval(database(), campaign=config.campaign.id, message=name, note=note)
    console.print(f"Phase {name} approved by {who}.")
