"""``herald metrics``: the campaign's success metrics against their targets."""

from __future__ import annotations

from datetime import date
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from herald.cli.common import (
    STATUS_STYLE,
    campaign_config,
    console,
    flow_run_here,
    guard,
    parse_day,
)
from herald.report.metrics.display import display, ratio_text, target_text
from herald.report.metrics.results import ALL, MetricsResult

metrics_app = typer.Typer(
    help="Success metrics: computed in SQL as of a day, per segment, against the targets.",
    no_args_is_help=True,
)

AsOf = Annotated[
    str | None,
    typer.Option("--as-of", help="Day the metrics hold at the end of, YYYY-MM-DD (default today)."),
]


@metrics_app.callback()
def _metrics() -> None:
    """Success metrics: computed in SQL as of a day, per segment, against the targets."""


@metrics_app.command("show")
def show(as_of: AsOf = None) -> None:
    """Run the metrics flow (snapshot and artifact included) and print every metric.

    Exit code 2 means a telemetry source the metrics depend on has a rejected last batch:
    nothing was computed.
    """
    day = parse_day(as_of)
    with guard():  # a rejected telemetry source: exit 2, its message
        campaign_config()  # fail before starting Prefect if the config is wrong
        result = _run(day)
    print_metrics(result)


def _run(day: date) -> MetricsResult:
    from flows.compute_metrics import compute_metrics

    with flow_run_here():
        return compute_metrics(as_of=day)


def _styled(status: str, text: str) -> str:
    style = STATUS_STYLE.get(status)
    return f"[{style}]{escape(text)}[/]" if style else escape(text)


def print_metrics(result: MetricsResult) -> None:
    """The overall values with targets and statuses, then each segment's values."""
    segments = [segment for segment in result.segments if segment != ALL]
    where = f"segments as of {result.segmented_on}" if result.segmented_on else "no segmentation"
    overall = Table(title=f"Success metrics of {result.campaign} as of {result.as_of}")
    overall.add_column("metric", no_wrap=True)
    overall.add_column("value", no_wrap=True, justify="right")
    overall.add_column("target", overflow="fold")
    overall.add_column("status", no_wrap=True)
    overall.add_column("n / d", overflow="fold", justify="right")
    by_segment = Table(title=f"Per segment ({where})")
    by_segment.add_column("metric", no_wrap=True)
    for segment in segments:
        # A narrow terminal folds the segment names, never the values.
        by_segment.add_column(segment, overflow="fold", justify="right")
    for metric in result.metrics():
        value = result.get(metric)
        overall.add_row(
            escape(metric),
            _styled(value.status, display(metric, value.value)),
            escape(target_text(value)),
            _styled(value.status, value.status),
            ratio_text(value),
        )
        by_segment.add_row(
            escape(metric),
            *(
                _styled(cell.status, display(metric, cell.value))
                for cell in (result.get(metric, segment) for segment in segments)
            ),
        )
    console.print(overall)
    console.print(by_segment)
    funnel = Table(
        "phase", "sent", "delivered", "opened", "clicked", "migrated accounts", title="Funnel"
    )
    for row in result.funnel:
        funnel.add_row(
            row.phase,
            str(row.sent),
            str(row.delivered),
            str(row.opened),
            str(row.clicked),
            str(row.migrated_accounts),
        )
    console.print(funnel)
    console.print(
        f"[bold]Engagement rate[/]: {escape(result.definitions['engagement_rate'])}",
        soft_wrap=True,
    )
