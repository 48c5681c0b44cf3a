"""Flow: segment every active account as of a day and publish the rollout priority matrix."""

from __future__ import annotations

from datetime import UTC, date, datetime
from pathlib import Path

from prefect import flow, get_run_logger
from pydantic import BaseModel

from flows.run_names import named
from flows.status import STATUS_HOOKS
from herald.settings import get_settings
from tasks.common import preflight
from tasks.segmentation import (
    assign_segments_task,
    priority_matrix_task,
    publish_priority_matrix,
)


class SegmentationSummary(BaseModel):
    """What the run did: counts per segment, the matrix rows and where the CSV is."""

    as_of: date
    active_accounts: int
    by_segment: dict[str, int]
    matrix: list[dict[str, str | int]]
    matrix_csv: Path


@flow(
    name="segment-customers",
    flow_run_name=named("segment"),
    on_completion=STATUS_HOOKS,
    on_failure=STATUS_HOOKS,
)
def segment_customers(
    as_of: date | None = None,
    output_dir: Path | None = None,
) -> SegmentationSummary:
    """Assign every active account one segment as of a day and publish the priority matrix.

    Args:
        as_of: Day the segments hold from (default: today, UTC).
        output_dir: Where the matrix CSV goes (default: <HERALD_VAR_DIR>/segmentation).
    """
    as_of = as_of or datetime.now(UTC).date()
    output_dir = output_dir or get_settings().var_dir / "segmentation"
    config = preflight("segment-customers")
    result = assign_segments_task(config.segments, as_of)
    matrix = priority_matrix_task(config.segments, as_of)
    path = publish_priority_matrix(matrix, output_dir)
    get_run_logger().info(
        f"Segmented {result.assigned} of {result.active_accounts} active accounts as of "
        f"{as_of}: " + ", ".join(f"{name} {count}" for name, count in result.by_segment.items())
    )
    return SegmentationSummary(
        as_of=as_of,
        active_accounts=result.active_accounts,
        by_segment=result.by_segment,
        matrix=matrix.rows(),
        matrix_csv=path,
    )


if __name__ == "__main__":
    segment_customers()
