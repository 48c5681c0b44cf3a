"""``herald report weekly``: the leadership report on demand."""

from __future__ import annotations

import webbrowser
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Annotated

import typer
from rich.markup import escape

from herald.cli.common import (
    STATUS_STYLE,
    campaign_config,
    console,
    flow_run_here,
    guard,
    parse_day,
)

if TYPE_CHECKING:  # the flows import Prefect: only when a command runs one
    from flows.weekly_report import ReportSummary

report_app = typer.Typer(help="The weekly leadership report.", no_args_is_help=True)


@report_app.callback()
def _report() -> None:
    """The weekly leadership report."""


@report_app.command("weekly")
def weekly(
    as_of: Annotated[
        str | None,
        typer.Option("--as-of", help="Last day it covers, YYYY-MM-DD (default yesterday, UTC)."),
    ] = None,
    send: Annotated[
        bool, typer.Option("--send", help="Send it to the leadership list (once per address).")
    ] = False,
    open_: Annotated[
        bool, typer.Option("--open", help="Open the saved report in a browser.")
    ] = False,
) -> None:
    """Build the report as of a day, save it under var/reports/<date>/ and publish it;
    ``--send`` also sends it (without it, nothing is sent).

    Exit code 2 means a telemetry source the metrics depend on has a rejected last batch.
    """
    day = parse_day(as_of) if as_of else datetime.now(UTC).date() - timedelta(days=1)
    with guard():
        config = campaign_config()
        summary = _run(day, send)
    verdict = summary.verdict
    console.print(
        f"Week ending {summary.as_of}: [{STATUS_STYLE.get(verdict, 'bold')}]{verdict}[/]; "
        + ", ".join(f"{n} {status}" for status, n in summary.statuses.items() if n)
        + f"; {summary.weeks_of_trend} week(s) of trend; {summary.at_risk} at-risk account(s)."
    )
    if summary.sent is not None:
        sent = summary.sent
        style = "red" if sent.failed else "yellow" if sent.unknown else "default"
        console.print(escape(sent.describe()), style=style)
    else:
        leaders = len(config.campaign.report.leadership)
        console.print(f"Dry run: not sent (--send sends it to {leaders} leadership address(es)).")
    console.print(f"Report: {summary.path}", soft_wrap=True, markup=False)
    if open_:
        webbrowser.open(summary.path.resolve().as_uri())


def _run(day: date, send: bool) -> ReportSummary:
    from flows.weekly_report import weekly_report

    with flow_run_here():
        return weekly_report(as_of=day, send=send)
