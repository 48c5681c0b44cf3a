"""``herald contact``: everything Herald knows about one contact and its account."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import date, datetime
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from herald.cli.common import (
    ExitCode,
    campaign_config,
    console,
    database,
    errors,
    guard,
    tables,
)

if TYPE_CHECKING:
    from herald.console.contact import ContactHistory

contact_app = typer.Typer(
    help="One contact: its account, segments, messages, events, suppressions.",
    no_args_is_help=True,
)


@contact_app.command("show")
def contact_show(
    email: Annotated[str, typer.Argument(help="The contact's address (any case; IDN or not).")],
    campaign: Annotated[
        str | None, typer.Option(help="The campaign whose ledger to read (default: configured).")
    ] = None,
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """Everything Herald knows about a contact.

    The contact and its account (migration state and the source that set it), the account's
    segment history, every message planned or sent to it in the campaign with its state and
    provider id, every event, its suppressions and the audit entries naming it.

    Exit code 2 when no contact has the address."""
    from herald.console.contact import contact_history

    with guard():  # an address that is not one is an expected error: exit 2
        name = campaign or campaign_config().campaign.id
        with database().connect() as conn:
            found = contact_history(conn, campaign=name, email=email)
    if found is None:
        errors.print(f"[bold red]error:[/] no contact has the address {escape(email.strip())}")
        raise typer.Exit(ExitCode.INVALID)
    if as_json:
        print(json.dumps(found.as_json(), indent=2, ensure_ascii=False))
        return
    print_history(found)


def _when(value: datetime | date | None) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return f"{value:%Y-%m-%d %H:%M}"
    return value.isoformat()


# Ids people copy (a batch, the provider's message id) stay on one line where they fit.
WHOLE = frozenset({"message", "variant", "provider id"})


def _folded(table: Table) -> Table:
    """Long values wrap in their cells rather than being cut short; ids stay whole."""
    for column in table.columns:
        column.overflow = "fold"
        column.no_wrap = column.header in WHOLE
    return table


def _facts(title: str, facts: list[tuple[str, str]]) -> Table:
    table = Table(title=title, show_header=False, title_justify="left", box=None)
    table.add_column(style="bold")
    table.add_column()
    for name, value in facts:
        table.add_row(name, Text(value))
    return table


def print_history(found: ContactHistory) -> None:
    person, account = found.contact, found.account
    console.print(
        _facts(
            f"Contact {escape(person.display_email)}",
            [
                ("id", str(person.id)),
                ("address", person.email),
                ("name", person.name or "-"),
                ("role", person.role),
                ("locale", person.locale),
                ("time zone", person.timezone or "- (the region's)"),
                ("imported", _when(person.created_at)),
                ("updated", _when(person.updated_at)),
            ],
        )
    )
    migrated = f" on {_when(account.migrated_on)}" if account.migrated_on else ""
    crm = account.crm_migration_state or "-"
    if account.crm_migrated_on:
        crm += f" on {_when(account.crm_migrated_on)}"
    console.print(
        _facts(
            f"Account {escape(account.external_id)}",
            [
                ("name", account.name),
                ("tier / region", f"{account.tier} / {account.region}"),
                ("industry", account.industry or "-"),
                ("lifecycle", account.lifecycle),
                ("migration", f"{account.migration_state}{migrated}"),
                ("set by", account.migration_source),
                ("CRM says", crm),
            ],
        )
    )
    segments = Table("as of", "segment", "rule", "readiness", title="Segment history")
    for entry in found.segments:
        segments.add_row(_when(entry.as_of), entry.segment, Text(entry.rule), Text(entry.readiness))
    _print(segments, found.segments, "No segmentation has seen the account.")

    messages = Table(
        "message",
        "variant",
        "state",
        "sent (UTC)",
        "provider id",
        title=f"Messages ({escape(found.campaign)})",
    )
    for row in found.messages:
        state = row.state + (" (critical)" if row.critical else "")
        if row.error:
            state += f": {row.error}"
        if row.state == "planned" and row.not_before:
            state += f", due {_when(row.not_before)}"
        messages.add_row(
            Text(row.message),
            f"{row.segment}/{row.role}/{row.locale}",
            Text(state),
            _when(row.sent_at),
            Text(row.provider_message_id or ""),
        )
    _print(messages, found.messages, "Nothing planned or sent to the contact in this campaign.")

    events = Table("at (UTC)", "event", "message", "detail", title="Events")
    for event in found.events:
        detail = "; ".join(f"{key} {value}" for key, value in event.detail.items())
        events.add_row(
            _when(event.occurred_at),
            event.event,
            Text(event.message or ""),
            Text(detail),
        )
    _print(events, found.events, "No events.")

    suppressions = Table("reason", "source", "since (UTC)", "detail", title="Suppressions")
    for suppression in found.suppressions:
        suppressions.add_row(
            suppression.reason,
            Text(suppression.source),
            _when(suppression.created_at),
            Text(suppression.detail or ""),
        )
    _print(suppressions, found.suppressions, "Not suppressed.")

    if found.audit:
        audit = Table("at (UTC)", "who", "action", "detail", title="Audit log")
        for logged in found.audit:
            audit.add_row(
                _when(logged.at),
                Text(logged.actor),
                logged.action,
                Text(json.dumps(logged.detail, ensure_ascii=False, sort_keys=True)),
            )
        tables().print(_folded(audit))


def _print(table: Table, rows: Sequence[object], empty: str) -> None:
    if rows:
        tables().print(_folded(table))
    else:
        console.print(f"[bold]{table.title}[/]: {empty}")
