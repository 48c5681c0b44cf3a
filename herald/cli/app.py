"""The ``herald`` command and its sub-commands."""

from __future__ import annotations

import sys
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

from herald.cli.common import (
    ExitCode,
    campaign_config,
    console,
    database,
    errors,
    guard,
    parse_day,
    safe_url,
    settings,
)
from herald.customers import ImportResult, import_customers

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
    from herald.messages import check_templates

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


# --------------------------------------------------------------------------- demo


@app.command("demo")
def demo(
    accounts: Annotated[int, typer.Option(min=1, help="Accounts to generate.")] = 2_000,
    seed: Annotated[int, typer.Option(help="Random seed: the same seed gives the same base.")] = 7,
    as_of: AsOf = None,
) -> None:
    """Generate a deterministic synthetic customer base, import it and segment it."""
    from herald.demo import write_demo_base

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
    if result.rejected:
        raise typer.Exit(ExitCode.PARTIAL)


def main() -> None:
    """Entry point of the ``herald`` script."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
