"""The daily snapshot of the metrics: what the weekly report's trend reads back."""

from __future__ import annotations

from sqlalchemy import Engine

from herald.db import dialect_insert
from herald.models import METRIC_SNAPSHOT, utcnow
from herald.report.metrics.results import MetricsResult


def snapshot_metrics(engine: Engine, *, result: MetricsResult) -> int:
    """Upsert every value into metric_snapshot (one row per as_of, metric, segment)."""
    now = utcnow()
    rows = [
        {
            "as_of": result.as_of,
            "metric": value.metric[:100],
            "segment": value.segment[:50],
            "value": value.value,
            "target": value.target,
            "computed_at": now,
        }
        for value in result.values
    ]
    if not rows:
        return 0
    with engine.begin() as conn:
        insert = dialect_insert(conn.dialect.name)(METRIC_SNAPSHOT)
        conn.execute(
            insert.on_conflict_do_update(
                index_elements=["as_of", "metric", "segment"],
                set_={
                    "value": insert.excluded.value,
                    "target": insert.excluded.target,
                    "computed_at": insert.excluded.computed_at,
                },
            ),
            rows,
        )
    return len(rows)
