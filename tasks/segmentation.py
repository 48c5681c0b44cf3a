"""Segmentation tasks: assign segments, count the priority matrix, publish it."""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import task
from prefect.artifacts import create_table_artifact
from prefect.cache_policies import NO_CACHE

from herald.config import SegmentsConfig
from herald.customers.segmentation import (
    PriorityMatrix,
    SegmentationResult,
    assign_segments,
    priority_matrix,
)
from tasks.common import database


@task(name="assign-segments", cache_policy=NO_CACHE)
def assign_segments_task(segments: SegmentsConfig, as_of: date) -> SegmentationResult:
    """Place every active account in exactly one segment and readiness level as of a day."""
    return assign_segments(engine=database(), config=segments, as_of=as_of)


@task(name="count-priority-matrix", cache_policy=NO_CACHE)
def priority_matrix_task(segments: SegmentsConfig, as_of: date) -> PriorityMatrix:
    """Count accounts per segment and readiness level."""
    return priority_matrix(engine=database(), config=segments, as_of=as_of)


@task(name="publish-priority-matrix", cache_policy=NO_CACHE)
def publish_priority_matrix(matrix: PriorityMatrix, output_dir: Path) -> Path:
    """Write the rollout priority matrix as CSV and as a Prefect table artifact."""
    path = matrix.write_csv(output_dir / matrix.as_of.isoformat() / "priority-matrix.csv")
    create_table_artifact(
        key="rollout-priority-matrix",
        table=matrix.rows(),
        description=(
            f"Rollout priority matrix as of {matrix.as_of}: active accounts per segment "
            f"(rows, in rollout order) and readiness (columns). CSV: {path}"
        ),
    )
    return path
