"""``herald segment``: segment every active account and print the rollout priority matrix."""

from __future__ import annotations

from datetime import date
from typing import TYPE_CHECKING

from rich.table import Table

from herald.cli.common import AsOf, campaign_config, console, flow_run_here, guard, parse_day

if TYPE_CHECKING:  # the flows import Prefect: only when a command runs one
    from flows.segment_customers import SegmentationSummary


def segment(as_of: AsOf = None) -> None:
    """Assign every active account one segment as of a day; print the rollout priority matrix."""
    day = parse_day(as_of)
    with guard():
        campaign_config()  # fail before starting Prefect if the config is wrong
        summary = run_segmentation(day)
    print_segmentation(summary)


def run_segmentation(day: date) -> SegmentationSummary:
    from flows.segment_customers import segment_customers

    with flow_run_here():
        return segment_customers(as_of=day)


def print_segmentation(summary: SegmentationSummary) -> None:
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
