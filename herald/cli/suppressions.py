"""``herald suppressions``: the suppression list by hand: list, add, remove, import.

Every change goes to the audit log with who (``--by``, default the actor) and why
(``--why``); removing an unsubscribe, a bounce or a spam report needs that reason named
(:mod:`herald.console.suppressions` says why).
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from herald.addresses import display_email
from herald.cli.common import ExitCode, console, database, errors, guard, settings
from herald.console.suppressions import (
    SuppressionError,
    SuppressionImport,
    add_suppression,
    import_suppressions,
    list_suppressions,
    parse_reason,
    remove_suppression,
)
from herald.models import SuppressionReason

suppressions_app = typer.Typer(
    help="Addresses Herald must not mail: list, add, remove, import (all audit-logged).",
    no_args_is_help=True,
)

REASONS = ", ".join(reason.value for reason in SuppressionReason)
By = Annotated[
    str | None,
    typer.Option("--by", help="Who makes the change, for the audit log (default: user@host)."),
]


def say(line: str) -> None:
    """Print one line as it is (no markup: an address may hold brackets), never wrapped."""
    console.print(line, markup=False, soft_wrap=True)


def _refused(error: SuppressionError) -> typer.Exit:
    errors.print(f"[bold red]error:[/] {escape(str(error))}")
    return typer.Exit(ExitCode.INVALID)


def _reason(value: str | None) -> SuppressionReason | None:
    """The --reason option (read before any work; `guard` reports what fails later)."""
    if value is None:
        return None
    try:
        return parse_reason(value)
    except SuppressionError as error:
        raise _refused(error) from None


@suppressions_app.command("list")
def suppressions_list(
    reason: Annotated[str | None, typer.Option(help=f"Only this reason ({REASONS}).")] = None,
    email: Annotated[str | None, typer.Option(help="Only this address (exact).")] = None,
    match: Annotated[
        str | None, typer.Option("--match", help="Only addresses containing this text.")
    ] = None,
    limit: Annotated[int, typer.Option(min=1, help="Rows to print, newest first.")] = 50,
) -> None:
    """Suppressed addresses, newest first.

    Each with its reason, where it came from, when, its detail, and the contact that has
    the address (if any)."""
    wanted = _reason(reason)
    with guard(), database().connect() as conn:
        listed = list_suppressions(conn, reason=wanted, email=email, contains=match, limit=limit)
    if not listed.rows:
        console.print("No suppressions match.")
        return
    table = Table("address", "reason", "source", "since (UTC)", "contact", "detail")
    for row in listed.rows:
        table.add_row(
            Text(row.display_email),
            row.reason,
            Text(row.source),
            f"{row.created_at:%Y-%m-%d %H:%M}",
            str(row.contact_id) if row.contact_id is not None else "-",
            Text(row.detail or ""),
        )
    console.print(table)
    console.print(f"{len(listed.rows)} of {listed.total} suppression(s) shown.")


@suppressions_app.command("add")
def suppressions_add(
    email: Annotated[str, typer.Argument(help="The address (need not be a contact's).")],
    reason: Annotated[str, typer.Option(help=f"Why it is suppressed ({REASONS}).")] = "manual",
    why: Annotated[
        str | None, typer.Option("--why", help="What happened, kept on it and in the audit log.")
    ] = None,
    by: By = None,
) -> None:
    """Suppress an address (audit-logged).

    Idempotent: suppressing it again for the same reason changes nothing. It takes effect
    before the next batch of every running send. The address need not be a contact's yet."""
    wanted = _reason(reason) or SuppressionReason.MANUAL
    with guard(), database().begin() as conn:
        added = add_suppression(conn, email=email, reason=wanted, why=why, who=by)
    row = added.row
    if added.new:
        known = f"contact {row.contact_id}" if row.contact_id is not None else "no contact yet"
        say(f"Suppressed {row.display_email} ({row.reason}; {known}).")
    else:
        say(
            f"{row.display_email} was already suppressed for {row.reason} since "
            f"{row.created_at:%Y-%m-%d %H:%M} UTC (source {row.source}): nothing changed."
        )


@suppressions_app.command("remove")
def suppressions_remove(
    email: Annotated[str, typer.Argument(help="The address.")],
    why: Annotated[str, typer.Option("--why", help="Why it may be mailed again (required).")],
    reason: Annotated[
        str | None,
        typer.Option(
            help="The suppression to remove; required for unsubscribe, bounce and spam_report "
            "(default: the manual one)."
        ),
    ] = None,
    by: By = None,
) -> None:
    """Let Herald mail an address again (audit-logged, --why required).

    Without --reason, removes its manual suppression. An unsubscribe, bounce or spam report
    is what the recipient or their mail server asked: it goes only when --reason names it,
    one at a time. Exit code 2 when refused (nothing changed)."""
    wanted = _reason(reason)
    with guard(), database().begin() as conn:
        removed = remove_suppression(conn, email=email, why=why, reason=wanted, who=by)
    shown = display_email(removed.email)
    still = (
        f" Still suppressed for: {', '.join(removed.remaining)}."
        if removed.remaining
        else " It is suppressed no more."
    )
    if not removed.removed:
        what = f"for {wanted.value}" if wanted else "by hand (manual)"
        say(f"{shown} is not suppressed {what}: nothing changed.{still}")
        return
    reasons = ", ".join(row.reason for row in removed.removed)
    say(f"Removed the {reasons} suppression of {shown}.{still}")


@suppressions_app.command("import")
def suppressions_import(
    file: Annotated[
        Path, typer.Argument(help="CSV with a header: email, and optionally reason, detail.")
    ],
    why: Annotated[
        str | None,
        typer.Option("--why", help="Where the list comes from (the detail of lines without)."),
    ] = None,
    by: By = None,
    rejects_dir: Annotated[
        Path | None,
        typer.Option(help="Where the rejects file goes (default <HERALD_VAR_DIR>/rejects)."),
    ] = None,
) -> None:
    """Suppress every address of a CSV file (one audit entry with the counts).

    Header: email, and optionally reason (default manual) and detail (default --why). Bad
    lines are rejected with their line and reason, the rest lands; addresses suppressed
    already for that reason and repeated lines are counted, not changed.

    Exit code 3 means the import finished but lines were rejected; 2 that the file or its
    header is wrong (nothing was imported)."""
    with guard(), database().begin() as conn:
        result = import_suppressions(
            conn,
            file,
            rejects_dir=rejects_dir or settings().var_dir / "rejects",
            why=why,
            who=by,
        )
    print_import(result)
    if result.rejected:
        raise typer.Exit(ExitCode.PARTIAL)


def print_import(result: SuppressionImport) -> None:
    table = Table(
        "file", "rows", "added", "already", "duplicates", "rejected", title="Suppression import"
    )
    table.add_row(
        Text(result.file),
        *(
            str(n)
            for n in (
                result.rows,
                result.added,
                result.already,
                result.duplicates,
                result.rejected,
            )
        ),
    )
    console.print(table)
    if result.added_by_reason:
        added = ", ".join(f"{n} {reason}" for reason, n in sorted(result.added_by_reason.items()))
        console.print(f"Added: {added}.")
    if result.rejects_path is not None:
        shown = result.first_rejects
        console.print(
            f"[yellow]{result.rejected} line(s) rejected[/]; all in "
            f"{escape(str(result.rejects_path))}",
            soft_wrap=True,
        )
        for reject in shown:
            console.print(
                f"  {result.file}:{reject.line}: {reject.reason}", markup=False, soft_wrap=True
            )
        if result.rejected > len(shown):
            console.print(f"  ... and {result.rejected - len(shown)} more in the rejects file")
