"""Metrics tasks: compute, snapshot, publish (telemetry health is checked by preflight)."""

from __future__ import annotations

from datetime import date

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from herald.config import HeraldConfig
from herald.report.metrics.compute import compute_metrics
from herald.report.metrics.display import markdown
from herald.report.metrics.results import MetricsResult
from herald.report.metrics.snapshot import snapshot_metrics
from tasks.common import database

ARTIFACT_KEY = "success-metrics"


@task(name="compute-metrics", cache_policy=NO_CACHE)
def compute_metrics_task(config: HeraldConfig, as_of: date) -> MetricsResult:
    """Every success metric as of the day, per segment, in SQL."""
    return compute_metrics(database(), config=config, as_of=as_of)


@task(name="snapshot-metrics", cache_policy=NO_CACHE)
def snapshot_metrics_task(result: MetricsResult) -> int:
    """Upsert the values into metric_snapshot (a rerun of a day replaces its values)."""
    return snapshot_metrics(database(), result=result)


@task(name="publish-metrics", cache_policy=NO_CACHE)
def publish_metrics_task(result: MetricsResult) -> str:
    """Publish the overall values, targets, statuses and definitions as a markdown artifact."""
    text = markdown(result)
    create_markdown_artifact(
        key=ARTIFACT_KEY,
        markdown=text,
        description=f"Success metrics of {result.campaign} as of {result.as_of}",
    )
    return text
