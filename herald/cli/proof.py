"""``herald phase proof``: a phase's message, one per chosen variant, to seed addresses."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from herald.addresses import display_email
from herald.cli.common import (
    AsOf,
    ExitCode,
    PhaseArg,
    campaign_config,
    console,
    database,
    errors,
    guard,
    parse_day,
    parse_phase,
    settings,
)

ListOption = list[str] | None


def phase_proof(
    phase: PhaseArg,
    to: Annotated[
        ListOption,
        typer.Option(
            "--to",
            help="Seed addresses, comma-separated or repeated (default: proof.seeds in "
            "campaign.yaml).",
            show_default=False,
        ),
    ] = None,
    segment: Annotated[
        ListOption,
        typer.Option(
            "--segment",
            help="Segments of the phase's audience, comma-separated or repeated (default: all).",
            show_default=False,
        ),
    ] = None,
    role: Annotated[
        ListOption,
        typer.Option(
            "--role",
            help="Roles of the phase's audience, comma-separated or repeated (default: all).",
            show_default=False,
        ),
    ] = None,
    locale: Annotated[
        ListOption,
        typer.Option(
            "--locale",
            help="Campaign locales, comma-separated or repeated (default: the campaign's "
            "default locale).",
            show_default=False,
        ),
    ] = None,
    notice: Annotated[
        ListOption,
        typer.Option(
            "--notice",
            help="Sunset only: notice kinds such as T-30, comma-separated or repeated "
            "(default: every notice of notices.offsets_days).",
            show_default=False,
        ),
    ] = None,
    as_of: AsOf = None,
    placeholders: Annotated[
        bool,
        typer.Option(
            "--placeholders",
            help="Fill names and the account with placeholder values instead of a "
            "representative contact's.",
        ),
    ] = False,
) -> None:
    """Send a proof: one message per variant (segment x role x locale, and notice for the
    sunset) to seed addresses through the configured transport, subject marked [Proof].

    A proof is never in the ledger or the metrics; the audit log records it. Templates are
    checked first. Exit code 2: bad input (nothing was sent); 3: some requests failed.
    """
    from herald.delivery.proof import send_proof

    name = parse_phase(phase)
    day = parse_day(as_of)
    with guard():
        config = campaign_config()
        run = send_proof(
            database(),
            config=config,
            settings=settings(),
            phase=name,
            as_of=day,
            to=to,
            segments=segment,
            roles=role,
            locales=locale,
            notices=notice,
            placeholders=placeholders,
        )

    sunset = any(item.notice for item in run.sent)
    table = Table(title=f"Proof {run.proof_id}: {name}, {len(run.sent)} variant(s)")
    if sunset:
        table.add_column("notice")
    for column in ("segment", "role", "locale", "subject", "values from", "result"):
        table.add_column(column)
    for item in run.sent:
        variant = item.variant
        result = "[green]sent[/]" if item.ok else f"[red]{escape(item.outcome.value)}[/]"
        cells = [
            variant.segment,
            variant.role,
            variant.locale,
            escape(item.subject),
            escape(item.values_from),
            result,
        ]
        table.add_row(*([item.notice or ""] if sunset else []), *cells)
    console.print(table)
    seeds = ", ".join(display_email(seed) for seed in run.seeds)
    console.print(f"To {len(run.seeds)} seed(s): {seeds}", markup=False, soft_wrap=True)
    if run.folder is not None:
        console.print(
            f"Written by the outbox to {run.folder} (one .eml per variant per seed, "
            "index.jsonl beside them).",
            markup=False,
            soft_wrap=True,
        )
    else:
        console.print(
            f"Sent through {run.transport}: one request per variant, key proof:{run.proof_id} "
            "(not a ledger key).",
            markup=False,
            soft_wrap=True,
        )
    console.print("Not in the ledger or the metrics; the audit log records it (phase.proof).")
    if run.failed:
        for item in run.failed:
            variant = item.variant
            which = f"{item.notice} " if item.notice else ""
            errors.print(
                f"[bold red]failed:[/] {which}{variant.segment}/{variant.role}/"
                f"{variant.locale}: {escape(item.error or item.outcome.value)}"
            )
        raise typer.Exit(ExitCode.PARTIAL)
