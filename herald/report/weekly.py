"""What the weekly leadership report says, as data: built from SQL, rendered elsewhere.

- **Executive summary**: each metric with a target (``config/targets.yaml``), overall: its
  value, target, status (on track / at risk / off track / no data) and the change since the
  report a week earlier (from ``metric_snapshot``).
- **Adoption curve**: the cumulative share of active accounts migrated, day by day since the
  announcement, overall and per segment, against the target line, with the pace of the last
  four weeks carried forward to the target date.
- **Trend**: key metrics week by week (``trend_weeks`` weeks ending on the report's day),
  from the weekly snapshots; a week without one is computed and snapshotted first.
- **Funnel**, per-segment values and the **at-risk list** (:mod:`herald.report.at_risk`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, and_, func, select

from herald.config import AtRisk, HeraldConfig
from herald.delivery.audience import NoSegmentation, segmentation_day
from herald.models import (
    ACCOUNT,
    METRIC_SNAPSHOT,
    SEGMENT_ASSIGNMENT,
    AccountLifecycle,
    MigrationState,
    utcnow,
)
from herald.report.at_risk import AtRiskAccount, at_risk_accounts
from herald.report.metrics.compute import compute_metrics
from herald.report.metrics.definitions import migration_target_line
from herald.report.metrics.display import display, target_text
from herald.report.metrics.results import ALL, AT_RISK, NO_DATA, OFF_TRACK, ON_TRACK, MetricsResult
from herald.report.metrics.snapshot import snapshot_metrics

# Metrics the trend table and charts follow week by week.
TREND_METRICS = (
    "message_reach",
    "engagement_rate",
    "migration_rate",
    "migration_target_line",
    "support_satisfaction",
    "hard_bounce_rate",
    "spam_complaint_rate",
    "unsubscribe_rate",
)
PACE_DAYS = 28
STATUS_ORDER = (OFF_TRACK, AT_RISK, ON_TRACK, NO_DATA)


@dataclass(frozen=True)
class SummaryLine:
    """One target in the executive summary."""

    metric: str
    label: str
    value: float | None
    shown: str
    target: str
    status: str
    previous: float | None
    change: str


@dataclass(frozen=True)
class AdoptionCurve:
    """Cumulative share migrated per day, overall and per segment, and the target line."""

    days: list[date]
    overall: list[float]
    segments: dict[str, list[float]]
    target_line: list[float | None]
    target: float | None
    target_date: date | None
    projected: float | None  # the share at target_date at the last four weeks' pace (if ahead)


@dataclass
class WeeklyReport:
    """Everything the weekly report shows, as of the end of one day (UTC)."""

    campaign_id: str
    campaign_name: str
    as_of: date
    generated_at: datetime
    metrics: MetricsResult
    summary: list[SummaryLine]
    trend_weeks: list[date]
    trend: dict[str, list[float | None]]
    adoption: AdoptionCurve
    at_risk: list[AtRiskAccount]
    at_risk_rows: int
    at_risk_rules: AtRisk
    definitions: dict[str, str] = field(default_factory=dict)

    def counts(self) -> dict[str, int]:
        """How many targets stand in each status."""
        found = dict.fromkeys(STATUS_ORDER, 0)
        for line in self.summary:
            found[line.status] = found.get(line.status, 0) + 1
        return found

    @property
    def verdict(self) -> str:
        """The one-line answer: off track if any target is, else at risk if any is, else on
        track."""
        counts = self.counts()
        if counts[OFF_TRACK]:
            return OFF_TRACK
        if counts[AT_RISK]:
            return AT_RISK
        return ON_TRACK if counts[ON_TRACK] else NO_DATA

    @property
    def weeks_of_trend(self) -> int:
        """Weeks in the trend that have data."""
        return sum(1 for value in self.trend.get("migration_rate", []) if value is not None)


def change_text(metric: str, now: float | None, before: float | None) -> str:
    """The change since last week: percentage points for shares, plain for rates per 100."""
    if now is None or before is None:
        return "new" if now is not None else "-"
    delta = now - before
    if metric.startswith("support_utilization"):
        return f"{delta:+.1f}"
    return f"{100 * delta:+.1f} pts"


def _snapshots(engine: Engine, *, days: list[date]) -> dict[date, dict[str, float | None]]:
    """Overall snapshot values of the trend metrics on each of ``days`` that has them."""
    found: dict[date, dict[str, float | None]] = defaultdict(dict)
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                METRIC_SNAPSHOT.c.as_of, METRIC_SNAPSHOT.c.metric, METRIC_SNAPSHOT.c.value
            ).where(
                METRIC_SNAPSHOT.c.as_of.in_(days),
                METRIC_SNAPSHOT.c.segment == ALL,
            )
        ).all()
    for as_of, metric, value in rows:
        day = as_of if isinstance(as_of, date) else date.fromisoformat(str(as_of))
        found[day][str(metric)] = value
    return found


def _first_day(config: HeraldConfig) -> date:
    """Nothing happens before the preview: no week before it is worth a trend point."""
    return config.campaign.phases.preview - timedelta(days=7)


def trend(
    engine: Engine, *, config: HeraldConfig, current: MetricsResult
) -> tuple[list[date], dict[str, list[float | None]]]:
    """The trend metrics on each report day of the last ``trend_weeks`` weeks (oldest first);
    a week with no snapshot yet is computed and snapshotted (only weeks since the preview)."""
    weeks = config.campaign.report.trend_weeks
    days = [current.as_of - timedelta(days=7 * back) for back in range(weeks - 1, -1, -1)]
    days = [day for day in days if day >= _first_day(config) or day == current.as_of]
    known = _snapshots(engine, days=days)
    for day in days:
        if day != current.as_of and "migration_rate" not in known.get(day, {}):
            result = compute_metrics(engine, config=config, as_of=day)
            snapshot_metrics(engine, result=result)
            known[day] = {v.metric: v.value for v in result.overall()}
    known[current.as_of] = {v.metric: v.value for v in current.overall()}
    return days, {metric: [known[day].get(metric) for day in days] for metric in TREND_METRICS}


def adoption_curve(engine: Engine, *, config: HeraldConfig, as_of: date) -> AdoptionCurve:
    """Cumulative share of active accounts migrated by each day since the announcement."""
    start = min(config.campaign.phases.announcement, as_of)
    days = [start + timedelta(days=n) for n in range((as_of - start).days + 1)]
    with engine.connect() as conn:
        try:
            segmented_on: date | None = segmentation_day(conn, as_of)
        except NoSegmentation:
            segmented_on = None
        joined = ACCOUNT.outerjoin(
            SEGMENT_ASSIGNMENT,
            and_(
                SEGMENT_ASSIGNMENT.c.account_id == ACCOUNT.c.id,
                SEGMENT_ASSIGNMENT.c.as_of == segmented_on,
            ),
        )
        active = ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value
        sizes = {
            segment: int(count)
            for segment, count in conn.execute(
                select(SEGMENT_ASSIGNMENT.c.segment, func.count())
                .select_from(joined)
                .where(active)
                .group_by(SEGMENT_ASSIGNMENT.c.segment)
            )
        }
        moved = conn.execute(
            select(SEGMENT_ASSIGNMENT.c.segment, ACCOUNT.c.migrated_on, func.count())
            .select_from(joined)
            .where(
                active,
                ACCOUNT.c.migration_state == MigrationState.MIGRATED.value,
                ACCOUNT.c.migrated_on <= as_of,
            )
            .group_by(SEGMENT_ASSIGNMENT.c.segment, ACCOUNT.c.migrated_on)
        ).all()
    per_day: dict[str | None, dict[date, int]] = defaultdict(lambda: defaultdict(int))
    for segment, day, count in moved:
        moment = day if isinstance(day, date) else date.fromisoformat(str(day))
        per_day[segment][max(moment, start)] += int(count)

    def cumulative(counts: dict[date, int], size: int) -> list[float]:
        total, out = 0, []
        for day in days:
            total += counts.get(day, 0)
            out.append(total / size if size else 0.0)
        return out

    everyone: dict[date, int] = defaultdict(int)
    for counts in per_day.values():
        for day, count in counts.items():
            everyone[day] += count
    overall = cumulative(everyone, sum(sizes.values()))
    segments = {
        name: cumulative(per_day.get(name, {}), sizes.get(name, 0))
        for name in config.segments.names
        if sizes.get(name)
    }
    target = config.targets.targets.get("migration_rate")
    target_date = (
        config.campaign.phases.announcement + timedelta(days=target.within_days)
        if target is not None and target.within_days is not None
        else None
    )
    projected = None
    if target_date is not None and target_date > as_of and len(overall) > 1:
        back = min(PACE_DAYS, len(overall) - 1)
        pace = (overall[-1] - overall[-1 - back]) / back
        projected = min(1.0, overall[-1] + pace * max(0, (target_date - as_of).days))
    return AdoptionCurve(
        days=days,
        overall=overall,
        segments=segments,
        target_line=[migration_target_line(config, day) for day in days],
        target=target.value if target is not None else None,
        target_date=target_date,
        projected=projected,
    )


def summary(
    config: HeraldConfig, result: MetricsResult, previous: dict[str, float | None]
) -> list[SummaryLine]:
    """Each metric with a target, overall, in the order of ``targets.yaml``."""
    lines = []
    for metric, target in config.targets.targets.items():
        if target.value is None:
            continue
        value = result.get(metric)
        before = previous.get(metric)
        lines.append(
            SummaryLine(
                metric=metric,
                label=target.label or metric,
                value=value.value,
                shown=display(metric, value.value),
                target=target_text(value, result),
                status=value.status,
                previous=before,
                change=change_text(metric, value.value, before),
            )
        )
    return lines


def build_report(engine: Engine, *, config: HeraldConfig, result: MetricsResult) -> WeeklyReport:
    """The report for ``result``'s day (its metrics already computed and snapshotted)."""
    weeks, values = trend(engine, config=config, current=result)
    week_before = result.as_of - timedelta(days=7)
    previous = _snapshots(engine, days=[week_before]).get(week_before, {})
    with engine.connect() as conn:
        listed = at_risk_accounts(conn, config=config, as_of=result.as_of)
    return WeeklyReport(
        campaign_id=config.campaign.id,
        campaign_name=config.campaign.name,
        as_of=result.as_of,
        generated_at=utcnow(),
        metrics=result,
        summary=summary(config, result, previous),
        trend_weeks=weeks,
        trend=values,
        adoption=adoption_curve(engine, config=config, as_of=result.as_of),
        at_risk=listed,
        at_risk_rows=config.campaign.report.at_risk_rows,
        at_risk_rules=config.campaign.report.at_risk,
        definitions=result.definitions,
    )
