"""``herald deliveries export`` and ``herald events export``: the ledger and SendGrid's events
of the campaign as CSV or Parquet, streamed (see :mod:`herald.console.exports`)."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Protocol, TextIO, TypeVar

import typer
from rich.markup import escape
from sqlalchemy import Engine

from herald.cli.common import ExitCode, campaign_config, database, errors, guard
from herald.config import MessageKind
from herald.console.exports import (
    CHUNK_ROWS,
    EVENT_TYPES,
    EXPORT_KINDS,
    BadFilter,
    Exported,
    ExportFormat,
    Filters,
    export_deliveries,
    export_events,
    parse_event_type,
    parse_kind,
    parse_state,
)


class Exporter(Protocol):
    """:func:`export_deliveries` or :func:`export_events`."""

    def __call__(
        self,
        *,
        engine: Engine,
        filters: Filters,
        format: ExportFormat,
        output: Path | TextIO,
        chunk_rows: int = ...,
    ) -> Exported: ...


# The options both exports share.
Output = Annotated[
    str,
    typer.Option(
        "--output",
        "-o",
        metavar="FILE",
        help="The file to write (replaced only once complete); '-': CSV to standard output.",
        show_default=False,
    ),
]
Format = Annotated[
    ExportFormat | None,
    typer.Option(
        "--format",
        metavar="csv|parquet",
        help="csv or parquet (default: parquet for a .parquet file, else csv).",
        show_default=False,
    ),
]
Phases = Annotated[
    list[str] | None,
    typer.Option(
        "--phase",
        metavar="PHASE",
        help=f"Only messages of this phase (repeatable): {', '.join(EXPORT_KINDS)}; "
        "sunset takes its notices too.",
        show_default=False,
    ),
]
Messages = Annotated[
    list[str] | None,
    typer.Option(
        "--message",
        metavar="MESSAGE",
        help="Only this ledger message (repeatable), e.g. sunset-t30@2027-09-30.",
        show_default=False,
    ),
]
ChunkRows = Annotated[
    int,
    typer.Option(
        "--chunk-rows",
        metavar="N",
        min=1,
        help="Rows per database round trip and per Parquet row group.",
    ),
]


def deliveries_export(
    output: Output,
    format: Format = None,
    phase: Phases = None,
    message: Messages = None,
    state: Annotated[
        list[str] | None,
        typer.Option(
            "--state",
            metavar="STATE",
            help="Only rows in this state (repeatable): "
            "planned, sending, accepted, failed, suppressed, unknown, expired.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DAY",
            help="Only rows planned on or after this day, YYYY-MM-DD (UTC).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DAY",
            help="Only rows planned on or before this day, YYYY-MM-DD (UTC).",
            show_default=False,
        ),
    ] = None,
    chunk_rows: ChunkRows = CHUNK_ROWS,
) -> None:
    """Export the campaign's delivery ledger (with each contact's address) to CSV or Parquet.

    Streamed: memory stays that of one chunk however many rows there are. Exit code 2 for
    bad usage (nothing is written).
    """
    states = tuple(_each(state, parse_state, "--state"))
    common = _common(output, format, phase, message, since, until, chunk_rows)
    _run(export_deliveries, "delivery(ies)", common, states=states)


def events_export(
    output: Output,
    format: Format = None,
    phase: Phases = None,
    message: Messages = None,
    event: Annotated[
        list[str] | None,
        typer.Option(
            "--event",
            metavar="TYPE",
            help=f"Only events of this type (repeatable): {', '.join(EVENT_TYPES)}.",
            show_default=False,
        ),
    ] = None,
    since: Annotated[
        str | None,
        typer.Option(
            "--since",
            metavar="DAY",
            help="Only events that occurred on or after this day, YYYY-MM-DD (UTC).",
            show_default=False,
        ),
    ] = None,
    until: Annotated[
        str | None,
        typer.Option(
            "--until",
            metavar="DAY",
            help="Only events that occurred on or before this day, YYYY-MM-DD (UTC).",
            show_default=False,
        ),
    ] = None,
    chunk_rows: ChunkRows = CHUNK_ROWS,
) -> None:
    """Export the campaign's SendGrid events to CSV or Parquet (--phase and --message take
    the events of those ledger rows).

    Streamed: memory stays that of one chunk however many rows there are. Exit code 2 for
    bad usage (nothing is written).
    """
    events = tuple(_each(event, parse_event_type, "--event"))
    common = _common(output, format, phase, message, since, until, chunk_rows)
    _run(export_events, "event(s)", common, events=events)


# --------------------------------------------------------------------------- shared

T = TypeVar("T")


@dataclass(frozen=True)
class _Common:
    """The options both commands share, checked before anything is read or written."""

    kinds: tuple[MessageKind, ...]
    messages: tuple[str, ...]
    since: date | None
    until: date | None
    output: Path | None  # None: standard output
    format: ExportFormat
    chunk_rows: int

    def filters(self, campaign: str, **only: tuple[Any, ...]) -> Filters:
        return Filters(
            campaign,
            kinds=self.kinds,
            messages=self.messages,
            since=self.since,
            until=self.until,
            **only,
        )


def _common(
    output: str,
    format: ExportFormat | None,
    phase: list[str] | None,
    message: list[str] | None,
    since: str | None,
    until: str | None,
    chunk_rows: int,
) -> _Common:
    kinds = tuple(_each(phase, parse_kind, "--phase"))
    first, last = _day(since, "--since"), _day(until, "--until")
    if first and last and first > last:
        raise typer.BadParameter(
            f"--since {first.isoformat()} is after --until {last.isoformat()}",
            param_hint="'--since'",
        )
    if output == "-":
        if format not in (None, ExportFormat.CSV):
            raise typer.BadParameter(
                "Parquet is written to a file, not standard output", param_hint="'--output'"
            )
        return _Common(kinds, tuple(message or ()), first, last, None, ExportFormat.CSV, chunk_rows)
    path = Path(output)
    if path.is_dir():
        raise typer.BadParameter(f"{output} is a directory", param_hint="'--output'")
    if not path.parent.is_dir():
        raise typer.BadParameter(f"{output}: no directory {path.parent}", param_hint="'--output'")
    chosen = format or (
        ExportFormat.PARQUET if path.suffix.lower() == ".parquet" else ExportFormat.CSV
    )
    return _Common(kinds, tuple(message or ()), first, last, path, chosen, chunk_rows)


def _each(values: list[str] | None, parse: Callable[[str], T], option: str) -> list[T]:
    try:
        return [parse(value) for value in values or []]
    except BadFilter as error:
        raise typer.BadParameter(str(error), param_hint=f"'{option}'") from None


def _day(value: str | None, option: str) -> date | None:
    if value is None:
        return None
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(
            f"{value!r} is not a date (YYYY-MM-DD)", param_hint=f"'{option}'"
        ) from None


def _run(export: Exporter, noun: str, common: _Common, **only: tuple[Any, ...]) -> None:
    """Read the campaign, export, and say on standard error what was written."""
    with guard():
        filters = common.filters(campaign_config().campaign.id, **only)
        engine = database()
        try:
            exported = export(
                engine=engine,
                filters=filters,
                format=common.format,
                output=common.output or sys.stdout,
                chunk_rows=common.chunk_rows,
            )
        except BrokenPipeError:
            # The reader of standard output went away (`| head`): stop quietly.
            _silence_stdout()
            raise typer.Exit(ExitCode.FAILED) from None
        except OSError as error:
            where = common.output or "standard output"
            errors.print(f"[bold red]error:[/] cannot write {escape(str(where))}: {error}")
            raise typer.Exit(ExitCode.FAILED) from None
    errors.print(_summary(exported, noun))


def _summary(exported: Exported, noun: str) -> str:
    where = "standard output" if exported.path is None else str(exported.path)
    detail = exported.format.value
    if exported.format is ExportFormat.PARQUET:
        detail += f", {exported.row_groups} row group(s)"
    return f"{exported.rows:,} {noun} exported to {escape(where)} ({detail})."


def _silence_stdout() -> None:
    """Point standard output at /dev/null, so that flushing it at exit raises nothing."""
    try:
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
    except (OSError, ValueError):  # no file descriptor behind it (a test's capture)
        pass


events_app = typer.Typer(
    help="SendGrid's events, as the webhook stored them: export.", no_args_is_help=True
)
events_app.command("export")(events_export)
