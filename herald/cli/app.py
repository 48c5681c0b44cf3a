"""The ``herald`` command and its sub-commands."""

from __future__ import annotations

import sys
from datetime import timedelta
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)
from rich.table import Table

from herald.addresses import display_email
from herald.cli.common import (
    ExitCode,
    campaign_config,
    console,
    database,
    errors,
    guard,
    parse_day,
    parse_phase,
    safe_url,
    settings,
)
from herald.cli.metrics import metrics_app
from herald.cli.report import report_app
from herald.cli.telemetry import telemetry_app
from herald.cli.webhooks import webhooks_app
from herald.customers.importer import ImportResult, import_customers

app = typer.Typer(
    name="herald",
    help="Herald runs customer rollout communication campaigns.",
    no_args_is_help=True,
    add_completion=False,
)
db_app = typer.Typer(help="The database schema.", no_args_is_help=True)
config_app = typer.Typer(help="Campaign as code: config/*.yaml.", no_args_is_help=True)
customers_app = typer.Typer(help="Accounts and contacts.", no_args_is_help=True)
templates_app = typer.Typer(help="Message templates.", no_args_is_help=True)
app.add_typer(db_app, name="db")
app.add_typer(config_app, name="config")
app.add_typer(customers_app, name="customers")
app.add_typer(templates_app, name="templates")
phase_app = typer.Typer(help="Communication phases: send (dry by default), pause, resume.")
deliveries_app = typer.Typer(help="The delivery ledger: unsettled sends.", no_args_is_help=True)
app.add_typer(phase_app, name="phase", no_args_is_help=True)
campaign_app = typer.Typer(help="The whole campaign: pause and resume every send.")
app.add_typer(campaign_app, name="campaign", no_args_is_help=True)
app.add_typer(deliveries_app, name="deliveries")
app.add_typer(webhooks_app, name="webhooks", no_args_is_help=True)
app.add_typer(telemetry_app, name="telemetry")
app.add_typer(metrics_app, name="metrics", no_args_is_help=True)
app.add_typer(report_app, name="report", no_args_is_help=True)

AsOf = Annotated[
    str | None, typer.Option("--as-of", help="Day to act as of, YYYY-MM-DD (default today, UTC).")
]


# --------------------------------------------------------------------------- db, config


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Create or migrate the database schema to the current version."""
    with guard():
        database()
    console.print(f"Schema is current: {safe_url(settings().effective_database_url)}")


@config_app.command("check")
def config_check() -> None:
    """Validate every config file; print each problem with file, line and key path."""
    with guard():
        config = campaign_config()
    console.print(
        f"Config OK ({config.directory}): campaign {config.campaign.id!r}, "
        f"{len(config.segments.segments)} segments, {len(config.segments.rules)} rules, "
        f"{len(config.evidence.figures)} evidence figures, {len(config.targets.targets)} targets."
    )


@templates_app.command("check")
def templates_check() -> None:
    """Render every template for every phase, segment, role and locale; fail on any error."""
    from herald.delivery.messages import check_templates

    with guard():
        count = check_templates(campaign_config(), settings().templates_dir)
    console.print(f"Templates OK: {count} variants rendered from {settings().templates_dir}.")


@app.command("settings")
def show_settings() -> None:
    """Print the effective settings (secrets masked)."""
    current = settings()
    table = Table("setting", "value", title="Herald settings")
    table.add_row("HERALD_DATABASE_URL", safe_url(current.effective_database_url))
    table.add_row("HERALD_CONFIG_DIR", str(current.config_dir))
    table.add_row("HERALD_TEMPLATES_DIR", str(current.templates_dir))
    table.add_row("HERALD_VAR_DIR", str(current.var_dir))
    table.add_row("HERALD_TRANSPORT", current.transport.value)
    table.add_row("HERALD_SENDGRID_API_HOST", current.sendgrid_api_host)
    table.add_row("SENDGRID_API_KEY", "set (hidden)" if current.sendgrid_api_key else "not set")
    console.print(table)


# --------------------------------------------------------------------------- customers


@customers_app.command("import")
def customers_import(
    accounts_csv: Annotated[Path, typer.Argument(help="Accounts CSV (UTF-8, BOM or not).")],
    contacts_csv: Annotated[
        Path | None, typer.Argument(help="Contacts CSV; their accounts must be known.")
    ] = None,
    rejects_dir: Annotated[
        Path | None,
        typer.Option(help="Where the rejects file goes (default <HERALD_VAR_DIR>/rejects)."),
    ] = None,
) -> None:
    """Upsert accounts and contacts by external id / e-mail; reject bad rows with line and reason.

    Exit code 3 means the import finished but rows were rejected.
    """
    with guard():
        result = _import(accounts_csv, contacts_csv, rejects_dir)
    _print_import(result)
    if result.rejected:
        raise typer.Exit(ExitCode.PARTIAL)


def _import(
    accounts_csv: Path, contacts_csv: Path | None, rejects_dir: Path | None
) -> ImportResult:
    engine = database()
    total = sum(p.stat().st_size for p in (accounts_csv, contacts_csv) if p and p.is_file())
    with Progress(
        TextColumn("importing"),
        BarColumn(),
        DownloadColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=errors,
        transient=True,
        disable=not errors.is_terminal,
    ) as progress:
        bar = progress.add_task("import", total=total)
        return import_customers(
            engine=engine,
            accounts_csv=accounts_csv,
            contacts_csv=contacts_csv,
            rejects_dir=rejects_dir or settings().var_dir / "rejects",
            chunk_rows=settings().import_chunk_rows,
            progress=lambda count: progress.advance(bar, count),
        )


def _print_import(result: ImportResult) -> None:
    table = Table(
        "file", "rows", "inserted", "updated", "unchanged", "rejected", title="Customer import"
    )
    for part in (result.accounts, result.contacts):
        if part.file:
            table.add_row(
                part.file,
                *(
                    str(n)
                    for n in (part.rows, part.inserted, part.updated, part.unchanged, part.rejected)
                ),
            )
    console.print(table)
    if result.rejects_path is not None:
        shown = result.first_rejects
        console.print(
            f"[yellow]{result.rejected} row(s) rejected[/]; all in {result.rejects_path}",
            soft_wrap=True,
        )
        for reject in shown:
            console.print(
                f"  {reject.file}:{reject.line}: {reject.reason}", markup=False, soft_wrap=True
            )
        if result.rejected > len(shown):
            console.print(f"  ... and {result.rejected - len(shown)} more in the rejects file")


# --------------------------------------------------------------------------- segmentation


@app.command("segment")
def segment(as_of: AsOf = None) -> None:
    """Assign every active account one segment as of a day; print the rollout priority matrix."""
    day = parse_day(as_of)
    with guard():
        campaign_config()  # fail before starting Prefect if the config is wrong
        summary = _run_segmentation(day)
    _print_segmentation(summary)


def _run_segmentation(day: Any) -> Any:
    from flows.segment_customers import SegmentationRun, segment_customers

    return segment_customers(SegmentationRun(as_of=day))


def _print_segmentation(summary: Any) -> None:
    counts = Table("segment", "accounts", title=f"Segments as of {summary.as_of}")
    for name, count in summary.by_segment.items():
        counts.add_row(name, str(count))
    assigned = sum(summary.by_segment.values())
    counts.add_row("[bold]total[/]", f"[bold]{assigned}[/]")
    console.print(counts)
    check = "=" if assigned == summary.active_accounts else "!="
    console.print(
        f"Assigned {assigned} {check} {summary.active_accounts} active accounts.", soft_wrap=True
    )
    matrix = Table(*summary.matrix[0].keys(), title="Rollout priority matrix (accounts)")
    for row in summary.matrix:
        matrix.add_row(*(str(value) for value in row.values()))
    console.print(matrix)
    console.print(f"Matrix CSV: {summary.matrix_csv}")


# --------------------------------------------------------------------------- phases

PhaseArg = Annotated[
    str, typer.Argument(help="preview, announcement, deprecation or sunset.", show_default=False)
]


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
        summary = _run_phase(name, day, send, max_batches, window=not ignore_window)
    _print_phase(summary)
    if summary.paused or needs_a_person(summary.ledger):
        raise typer.Exit(ExitCode.PARTIAL)


def needs_a_person(counts: dict[str, int]) -> bool:
    """Whether a phase's ledger holds rows a person must settle (failed or unknown)."""
    return bool(counts.get("failed") or counts.get("unknown"))


def _run_phase(
    phase: Any, day: Any, send: bool, max_batches: int | None = None, window: bool = True
) -> Any:
    from flows.send_phase import PhaseRun, send_phase

    return send_phase(
        PhaseRun(phase=phase, as_of=day, send=send, max_batches=max_batches, window=window)
    )


def _print_phase(summary: Any) -> None:
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
    console.print(
        f"{summary.phase} via {summary.transport}: planned {summary.planned_new} new; "
        f"sent {summary.accepted} in {summary.requests} request(s) over {summary.batches} "
        f"batch(es); failed {summary.failed}; unknown {summary.unknown}.",
        soft_wrap=True,
    )
    if summary.suppressed_now:
        console.print(
            "Suppressed before sending: "
            + ", ".join(f"{k} {v}" for k, v in summary.suppressed_now.items())
        )
    if summary.recovered_unknown or summary.recovered_released:
        console.print(
            f"[yellow]A sender had died[/]: {summary.recovered_released} unrequested row(s) "
            f"put back, {summary.recovered_unknown} in-flight row(s) now unknown."
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
    from herald.delivery.ledger import set_paused

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        set_paused(database(), config.campaign.id, name, True, reason)
    console.print(f"Phase {name} paused: {reason}")


@phase_app.command("resume")
def phase_resume(phase: PhaseArg) -> None:
    """Let a paused phase send again (after the operator or the circuit breaker paused it)."""
    from herald.delivery.ledger import paused_reason, set_paused

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        engine = database()
        with engine.connect() as conn:
            was = paused_reason(conn, config.campaign.id, name)
        set_paused(engine, config.campaign.id, name, False, f"resumed (was: {was})")
    console.print(
        f"Phase {name} resumed" + (f" (was paused: {was})." if was else " (was not paused).")
    )


@app.command("schedule")
def schedule(
    days: Annotated[int, typer.Option(min=1, help="How many days ahead.")] = 90,
    as_of: AsOf = None,
) -> None:
    """The campaign calendar: what goes to whom, when, with counts by segment."""
    from datetime import timedelta

    from herald.config import WEEKDAYS
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
        last = entry.until or entry.day + timedelta(days=7)
        span = [entry.day + timedelta(days=n) for n in range((last - entry.day).days)]
        if not any(WEEKDAYS[day.weekday()] in window.days for day in span):
            console.print(
                f"[bold yellow]warning:[/] {entry.message} for {', '.join(entry.segments)} is "
                f"due {entry.day:%a %Y-%m-%d} and superseded on {last}: no delivery-window "
                "day in between, so it cannot be sent. Move the date or widen the window.",
                soft_wrap=True,
            )
    if not entries:
        console.print("Nothing is due in this period.")


@app.command("approve")
def approve(
    phase: PhaseArg,
    note: Annotated[str, typer.Option(help="Why, or what was checked (audit log).")] = "",
) -> None:
    """Approve the real send of a phase: its scheduled run sends without waiting."""
    from herald.delivery.ledger import approve as record_approval

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        who = record_approval(database(), config.campaign.id, name, note)
    console.print(f"Phase {name} approved by {who}.")


@campaign_app.command("pause")
def campaign_pause(
    reason: Annotated[str, typer.Option(help="Why (goes to the audit log).")] = "paused by hand",
) -> None:
    """Stop every phase and notice of the campaign within one batch."""
    from herald.delivery.ledger import CAMPAIGN_WIDE, set_paused

    with guard():
        config = campaign_config()
        set_paused(database(), config.campaign.id, CAMPAIGN_WIDE, True, reason)
    console.print(f"Campaign {config.campaign.id} paused: {reason}")


@campaign_app.command("resume")
def campaign_resume() -> None:
    """Let the campaign send again (phases paused on their own stay paused)."""
    from herald.delivery.ledger import CAMPAIGN_WIDE, set_paused

    with guard():
        config = campaign_config()
        set_paused(database(), config.campaign.id, CAMPAIGN_WIDE, False, "resumed")
    console.print(f"Campaign {config.campaign.id} resumed.")


@phase_app.command("status")
def phase_status(phase: PhaseArg) -> None:
    """The phase's ledger by state, why rows failed, and whether it is paused."""
    from herald.delivery.ledger import failure_reasons, paused_reason, state_counts

    name = parse_phase(phase)
    with guard():
        config = campaign_config()
        with database().connect() as conn:
            counts = state_counts(conn, config.campaign.id, name)
            paused = paused_reason(conn, config.campaign.id, name)
            reasons = failure_reasons(conn, config.campaign.id, name)
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


@app.command("preview")
def preview_command(
    phase: PhaseArg,
    contact: Annotated[str, typer.Option("--contact", help="The contact's e-mail address.")],
    html: Annotated[
        Path | None, typer.Option("--html", help="Also write the HTML body to this file.")
    ] = None,
    as_of: AsOf = None,
) -> None:
    """Exactly what a contact would receive in a phase, or why they would not.

    Exit code 3 means the contact would not receive it (the reasons are printed).
    """
    from herald.delivery.preview import preview

    name = parse_phase(phase)
    day = parse_day(as_of)
    with guard():
        config = campaign_config()
        result = preview(database(), config, name, contact, day, settings().templates_dir)
    if result.variant is not None:
        variant = result.variant
        console.print(
            f"Variant: phase {variant.phase}, segment {variant.segment}, role {variant.role}, "
            f"locale {variant.locale}"
        )
    if result.message is not None:
        console.print(f"Subject: {result.message.subject}", markup=False, soft_wrap=True)
        console.print("")
        console.print(result.message.text, markup=False, soft_wrap=True)
        if html is not None:
            html.write_text(result.message.html, encoding="utf-8")
            console.print(f"HTML body written to {html}")
    shown = display_email(result.email)
    if result.would_send:
        console.print(f"[green]{shown} would receive this message in {name}.[/]")
        return
    console.print(f"[bold yellow]{shown} would NOT receive {name}:[/]")
    for reason in result.reasons:
        console.print(f"  - {reason}", markup=False)
    raise typer.Exit(ExitCode.PARTIAL)


# --------------------------------------------------------------------------- deliveries


@deliveries_app.command("unknown")
def deliveries_unknown(
    phase: Annotated[str | None, typer.Option(help="Only this phase.")] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to print.")] = 50,
) -> None:
    """Sends whose request may or may not have been accepted; none is re-sent until settled.

    Exit code 3 when there are any.
    """
    from herald.delivery.ledger import unknown_rows

    name = parse_phase(phase) if phase else None
    with guard():
        config = campaign_config()
        with database().connect() as conn:
            rows = unknown_rows(conn, config.campaign.id, name)
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
    from herald.delivery.ledger import resolve

    name = parse_phase(phase)
    if resend == mark_sent:
        raise typer.BadParameter("give exactly one of --resend or --mark-sent")
    with guard():
        config = campaign_config()
        count = resolve(
            database(),
            config.campaign.id,
            name,
            "resend" if resend else "mark-sent",
            batch_ids=batch,
            include_failed=failed,
        )
    action = "planned again (the next send delivers them)" if resend else "marked sent"
    console.print(f"{count} delivery(ies) of {name} {action}.")


# --------------------------------------------------------------------------- demo


@app.command("rehearse")
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
        rehearsal = _run_rehearsal(
            first,
            last,
            parse_day(down_from) if down_from else None,
            parse_day(down_to) if down_to else None,
            seed,
        )
    _print_rehearsal(rehearsal)


def _run_rehearsal(start: Any, end: Any, down_from: Any, down_to: Any, seed: int) -> Any:
    from flows.rehearse import RehearsalRun, rehearse

    return rehearse(
        RehearsalRun(start=start, end=end, down_from=down_from, down_to=down_to, seed=seed)
    )


def _print_rehearsal(summary: Any) -> None:
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
    console.print(
        f"{summary.days_visited} simulated days with something due; {summary.migrated} "
        f"account(s) migrated; {summary.events} synthetic SendGrid events."
    )
    console.print(f"Outbox: {summary.outbox}")
    console.print(f"Ledger: {safe_url(summary.ledger)} (table delivery)")
    if summary.reports:
        console.print(f"Weekly reports: {len(summary.reports)}; the last one:")
        console.print(f"Report: {summary.reports[-1]}", soft_wrap=True)


@app.command("demo")
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
        result = _import(files.accounts_csv, files.contacts_csv, None)
        _print_import(result)
        summary = _run_segmentation(day)
    _print_segmentation(summary)
    config = campaign_config()
    start = config.campaign.phases.preview - timedelta(days=7)
    end = max(config.campaign.sunset.values()) + timedelta(days=7)
    with guard():
        rehearsal = _run_rehearsal(start, end, None, None, seed)
    _print_rehearsal(rehearsal)
    if result.rejected:
        raise typer.Exit(ExitCode.PARTIAL)


def main() -> None:
    """Entry point of the ``herald`` script."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
