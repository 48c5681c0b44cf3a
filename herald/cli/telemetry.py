"""``herald telemetry``: batch telemetry files against their data contracts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape

from herald.cli.common import ExitCode, campaign_config, console, database, errors, guard, settings
from herald.config import SOURCES

telemetry_app = typer.Typer(
    help="Telemetry batch files (adoption, support, survey, performance) and their contracts.",
    no_args_is_help=True,
)


def _source(value: str) -> str:
    if value not in SOURCES:
        raise typer.BadParameter(f"{value!r} is not a source (one of {', '.join(SOURCES)})")
    return value


@telemetry_app.command("ingest")
def ingest(
    kind: Annotated[
        str, typer.Argument(help=f"The source: {', '.join(SOURCES)}.", show_default=False)
    ],
    file: Annotated[
        Path,
        typer.Argument(help="A .csv (with header) or .jsonl/.ndjson file.", show_default=False),
    ],
) -> None:
    """Validate FILE against the source's contract; load its good rows, quarantine the bad.

    Exit code 3: loaded, but rows were quarantined. Exit code 2: the whole batch was rejected
    (nothing loaded; the message names the check and the column).
    """
    from herald.telemetry.contracts import ContractError
    from herald.telemetry.ingest import BatchRejected, ingest_file

    source = _source(kind)
    if not file.is_file():
        errors.print(f"[bold red]error:[/] {escape(str(file))}: file not found")
        raise typer.Exit(ExitCode.INVALID)
    with guard():
        config = campaign_config()
        engine = database()
        try:
            result = ingest_file(
                engine, config=config, source=source, path=file, var_dir=settings().var_dir
            )
        except ContractError as error:
            errors.print(f"[bold red]error:[/] {escape(str(error))}")
            raise typer.Exit(ExitCode.INVALID) from None
        except BatchRejected as rejected:
            errors.print(f"[bold red]error:[/] {escape(str(rejected))}")
            errors.print(
                f"Nothing was loaded. Raw file kept as {rejected.result.kept_file}.",
                markup=False,
            )
            if rejected.result.data_docs is not None:
                errors.print(f"Data Docs: {rejected.result.data_docs}", markup=False)
            raise typer.Exit(ExitCode.INVALID) from None
    console.print(
        f"{source}: {result.loaded} of {result.rows} row(s) loaded "
        f"({result.changed} new or changed), {result.quarantined} quarantined "
        f"(batch {result.batch_id}).",
        markup=False,
        soft_wrap=True,
    )
    if source == "adoption" and (result.accounts_migrated or result.accounts_in_progress):
        console.print(
            f"Accounts: {result.accounts_migrated} marked migrated, "
            f"{result.accounts_in_progress} marked in progress.",
            markup=False,
        )
    for row in result.first_quarantined:
        console.print(f"  line {row.line}: {row.check}", markup=False, soft_wrap=True)
    if result.quarantined > len(result.first_quarantined):
        more = result.quarantined - len(result.first_quarantined)
        console.print(f"  ... and {more} more in the quarantine table", markup=False)
    if result.data_docs is not None:
        console.print(f"Data Docs: {result.data_docs}", markup=False, soft_wrap=True)
    if result.quarantined:
        raise typer.Exit(ExitCode.PARTIAL)


@telemetry_app.command("status")
def status() -> None:
    """The last batch of each source: status, counts, failed check and column, override."""
    from herald.telemetry.health import source_status

    with guard(), database().connect() as conn:
        statuses = {s.source: s for s in source_status(conn, sources=SOURCES)}
    console.print("Telemetry sources (last batch of each):")
    for source in SOURCES:
        item = statuses.get(source)
        if item is None:
            console.print(f"  {source:<12} no batch yet", markup=False)
            continue
        line = (
            f"  {source:<12} {item.status:<9} {item.received_at:%Y-%m-%d %H:%M} UTC  "
            f"rows {item.rows}, loaded {item.loaded}, quarantined {item.quarantined}"
        )
        if item.status == "rejected":
            column = f" on column '{item.failed_column}'" if item.failed_column else ""
            line += f"; failed {item.failed_check}{column}; overridden: "
            line += (
                f"yes, by {item.override.actor} at {item.override.at:%Y-%m-%d %H:%M} UTC: "
                f"{item.override.reason}"
                if item.override
                else "no"
            )
        console.print(line, markup=False, soft_wrap=True)
        console.print(f"    file: {item.file}", markup=False, soft_wrap=True)
        if item.data_docs:
            console.print(f"    Data Docs: {item.data_docs}", markup=False, soft_wrap=True)
    problems = [item.problem for item in statuses.values() if not item.healthy]
    for problem in problems:
        errors.print(f"[red]{escape(problem)}[/]", soft_wrap=True)


@telemetry_app.command("override")
def override(
    source: Annotated[str, typer.Argument(help="The source whose rejected batch to override.")],
    reason: Annotated[str, typer.Option("--reason", help="Why flows may run anyway.")],
) -> None:
    """Let flows that depend on SOURCE run despite its rejected last batch (audit-logged)."""
    from herald.telemetry.health import record_override, source_status

    name = _source(source)
    if not reason.strip():
        errors.print("[bold red]error:[/] --reason must say why")
        raise typer.Exit(ExitCode.INVALID)
    with guard():
        engine = database()
        with engine.begin() as conn:
            current = source_status(conn, sources=[name])
            if not current or current[0].status != "rejected":
                errors.print(
                    f"[bold red]error:[/] {name}'s last batch is not rejected: nothing to override."
                )
                raise typer.Exit(ExitCode.INVALID)
            record_override(conn, source=name, reason=reason)
    console.print(
        f"Override recorded: flows depending on {name} may run despite batch "
        f"{current[0].batch_id} ({current[0].failed_check}).",
        markup=False,
        soft_wrap=True,
    )
