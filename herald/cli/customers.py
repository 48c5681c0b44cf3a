"""``herald customers``: importing accounts and contacts (``herald demo`` imports the same way)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

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

from herald.cli.common import ExitCode, console, database, errors, guard, settings
from herald.customers.importer import ImportResult, import_customers

customers_app = typer.Typer(help="Accounts and contacts.", no_args_is_help=True)


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
        result = run_import(accounts_csv, contacts_csv, rejects_dir)
    print_import(result)
    if result.rejected:
        raise typer.Exit(ExitCode.PARTIAL)


def run_import(
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


def print_import(result: ImportResult) -> None:
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
