"""Flow: the campaign's success metrics as of a day, snapshotted and published.

Named ``metrics``, so ``telemetry.yaml`` ``depends_on.metrics`` applies: while a source it
depends on has a rejected last batch, the run fails in its first task (SourceRejected, naming
the source, the failed check and the column) and computes nothing.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from prefect import flow, get_run_logger

from flows.run_names import named
from flows.status import STATUS_HOOKS
from herald.report.metrics.compute import FLOW_NAME
from herald.report.metrics.results import MetricsResult
from tasks.common import as_is, preflight
from tasks.metrics import (
    compute_metrics_task,
    publish_metrics_task,
    snapshot_metrics_task,
)


@flow(
    name=FLOW_NAME,
    flow_run_name=named("metrics"),
    on_completion=STATUS_HOOKS,
    on_failure=STATUS_HOOKS,
)
def compute_metrics(
    as_of: date | None = None,
) -> MetricsResult:
    """Refuse on unhealthy telemetry, compute every metric, snapshot and publish them.

    Args:
        as_of: Day the metrics hold at the end of (default: today, UTC).
    """
    as_of = as_of or datetime.now(UTC).date()
    config = preflight(FLOW_NAME)
    result = compute_metrics_task(config, as_of)
    saved = snapshot_metrics_task(as_is(result))
    publish_metrics_task(as_is(result))
    statuses = [value.status for value in result.overall()]
    get_run_logger().info(
        f"Metrics as of {as_of}: {saved} values saved; overall "
        + ", ".join(f"{status} {statuses.count(status)}" for status in sorted(set(statuses)))
    )
    return result


if __name__ == "__main__":
    compute_metrics()
