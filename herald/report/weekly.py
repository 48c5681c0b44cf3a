"""What the weekly leadership report says, as data: built from SQL, rendered elsewhere.

- **Verdict**: each target judged by :mod:`herald.report.verdict` (trajectory and pace for
  dated targets, target and limit for levels); the headline follows the ``headline``
  targets of ``targets.yaml``; the campaign's stage (:mod:`herald.report.stage`) decides
  "not started" before the first send and "met" / "missed" once it has closed.
- **Executive summary**: each metric with a target (``config/targets.yaml``), overall: its
  value, target, status with its reason, what the value leaves out, and the change since the
  report a week earlier (from ``metric_snapshot``).
- **Adoption curve**: the cumulative share of active accounts migrated, day by day since the
  announcement, overall and per segment, against the target line, with the pace of the last
  four weeks carried forward to the target date.
- **Trend**: key metrics week by week (``trend_weeks`` weeks ending on the report's day),
  from the weekly snapshots; a week without one is computed and snapshotted first.
- **Funnel**, per-segment values, the **at-risk list** and support escalations
  (:mod:`herald.report.at_risk`), and the case-study candidates
  (:mod:`herald.report.stories`).
- **Marks**: a rehearsal's report, or one on data a rehearsal made up, says so
  (:mod:`herald.sandbox.marks`).
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta

from sqlalchemy import Engine, func, select

from herald.config import AtRisk, Escalation, HeraldConfig
from herald.delivery.audience import NoSegmentation, assigned_on, segmentation_day
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
from herald.report.metrics.definitions import migration_target_line, target_date
from herald.report.metrics.display import display, target_text
from herald.report.metrics.results import (
    ALL,
    AT_RISK,
    MET,
    MISSED,
    MONITORED,
    NO_DATA,
    NOT_STARTED,
    OFF_TRACK,
    ON_TRACK,
    MetricsResult,
)
from herald.report.metrics.snapshot import snapshot_metrics
from herald.report.stage import CLOSED, Stage, stage
from herald.report.stories import Candidate, story_candidates
from herald.report.verdict import (
    Judgement,
    attention,
    headline,
    judge_all,
    pace_per_day,
    projection,
    rule,
)
from herald.sandbox.marks import SUBJECT_PREFIX, mark, synthetic_sources

# Metrics the trend table and charts follow week by week (the dated targets' pace too).
TREND_METRICS = (
    "message_reach",
    "engagement_rate",
    "migration_rate",
    "migration_target_line",
    "support_satisfaction",
    "hard_bounce_rate",
    "spam_complaint_rate",
    "unsubscribe_rate",
    "early_adopter_engagement",
    "performance_validation",
)
STATUS_ORDER = (OFF_TRACK, AT_RISK, ON_TRACK, NO_DATA, NOT_STARTED, MONITORED)


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
    why: str = ""
    headline: bool = False
    note: str = ""  # what the value leaves out, e.g. unreachable accounts


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
    judgements: list[Judgement] = field(default_factory=list)
    rule: str = ""
    stage: Stage = field(default_factory=lambda: Stage(NOT_STARTED, None))
    mark: str | None = None  # rehearsal / synthetic data banner
    stories: list[Candidate] = field(default_factory=list)
    stories_shown: int = 10
    escalation: Escalation = field(default_factory=Escalation)
    closing: list[str] = field(default_factory=list)

    def counts(self) -> dict[str, int]:
        """How many targets stand in each status."""
        found = dict.fromkeys(STATUS_ORDER, 0)
        for line in self.summary:
            found[line.status] = found.get(line.status, 0) + 1
        return found

    @property
    def verdict(self) -> str:
        """The headline: 'not started' before the first send, else the worst status of the
        headline targets (``targets.yaml`` ``headline``; the others do not count), and once
        the campaign has closed, whether they were met or missed."""
        if not self.stage.started:
            return NOT_STARTED
        verdict = headline(self.judgements)
        if self.stage.state == CLOSED:
            return MET if verdict == ON_TRACK else MISSED
        return verdict

    @property
    def attention(self) -> list[Judgement]:
        """Targets outside the headline that are at risk or off track."""
        return attention(self.judgements)

    @property
    def escalated(self) -> list[AtRiskAccount]:
        """At-risk accounts to take up the support escalation path."""
        return [account for account in self.at_risk if account.escalations(self.escalation)]

    @property
    def subject(self) -> str:
        """The e-mail subject (a rehearsal's says so first)."""
        text = f"{self.campaign_name}: week ending {self.as_of}: {self.verdict}"
        return (SUBJECT_PREFIX + text) if self.mark else text

    @property
    def weeks_of_trend(self) -> int:
        """Weeks in the trend that have data."""
        return sum(1 for value in self.trend.get("migration_rate", []) if value is not None)


def change_text(metric: str, now: float | None, before: float | None) -> str:
    """The change since last week: percentage points for shares, plain for rates per 100;
    a change that rounds to zero is 'no change' (no signed zero)."""
    if now is None or before is None:
        return "new" if now is not None else "-"
    delta = now - before
    if metric.startswith("support_utilization"):
        text = f"{delta:+.1f}"
        return "no change" if float(text) == 0 else text
    text = f"{100 * delta:+.1f}"
    return "no change" if float(text) == 0 else f"{text} pts"


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
            assigned_on(segmented_on),
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
    due = None if target is None else target_date(config, target)
    projected = None
    if due is not None and due > as_of and overall:
        pace = pace_per_day(list(zip(days, overall, strict=True)), as_of)
        projected = projection(overall[-1], pace, as_of, due)
    return AdoptionCurve(
        days=days,
        overall=overall,
        segments=segments,
        target_line=[migration_target_line(config, day) for day in days],
        target=target.value if target is not None else None,
        target_date=due,
        projected=projected,
    )


def _note(metric: str, result: MetricsResult) -> str:
    """What a value leaves out, in a few words."""
    if metric == "message_reach":
        unreachable = result.get("unreachable_accounts").numerator or 0
        moved = result.get("moved_before_reached").numerator or 0
        parts = []
        if unreachable:
            parts.append(f"{unreachable:,} unreachable (no contact left to write to)")
        if moved:
            parts.append(f"{moved:,} migrated before any message")
        return "; ".join(parts) + (": not counted" if parts else "")
    if metric == "performance_validation":
        reported = result.get("performance_reported")
        if reported.denominator:
            return (
                f"{reported.numerator:,} of {reported.denominator:,} migrated accounts sent a "
                "measurement"
            )
    return ""


def summary(
    config: HeraldConfig,
    result: MetricsResult,
    previous: dict[str, float | None],
    judgements: list[Judgement],
) -> list[SummaryLine]:
    """Each metric with a target, overall, in the order of ``targets.yaml``, as judged."""
    judged = {judgement.metric: judgement for judgement in judgements}
    lines = []
    for metric, target in config.targets.targets.items():
        if target.value is None:
            continue
        value = result.get(metric)
        before = previous.get(metric)
        judgement = judged[metric]
        lines.append(
            SummaryLine(
                metric=metric,
                label=target.label or metric,
                value=value.value,
                shown=display(metric, value.value),
                target=target_text(value),
                status=judgement.status,
                previous=before,
                change=change_text(metric, value.value, before),
                why=judgement.why,
                headline=judgement.headline,
                note=_note(metric, result),
            )
        )
    return lines


def _closing(report_stage: Stage, result: MetricsResult) -> list[str]:
    """The closing summary's facts, after the last deadline."""
    if report_stage.state != CLOSED:
        return []
    migration = result.get("migration_rate")
    reach = result.get("message_reach")
    sent = sum(row.sent for row in result.funnel)
    left = (migration.denominator or 0) - (migration.numerator or 0)
    return [
        f"The campaign closed with its last deadline on {report_stage.last_deadline}; the "
        f"first message went on {report_stage.first_sent}.",
        f"{display('migration_rate', migration.value)} of active accounts migrated "
        f"({migration.numerator:,} of {migration.denominator:,}); {left:,} never did.",
        f"{display('message_reach', reach.value)} of the accounts it could write to were "
        f"reached; {sent:,} messages were sent.",
    ]


def build_report(
    engine: Engine, *, config: HeraldConfig, result: MetricsResult, rehearsal: bool = False
) -> WeeklyReport:
    """The report for ``result``'s day (its metrics already computed and snapshotted);
    ``rehearsal``: made by a rehearsal (marked so, whatever the data)."""
    weeks, values = trend(engine, config=config, current=result)
    week_before = result.as_of - timedelta(days=7)
    previous = _snapshots(engine, days=[week_before]).get(week_before, {})
    history = {metric: list(zip(weeks, series, strict=True)) for metric, series in values.items()}
    judgements = judge_all(config, result, history)
    with engine.connect() as conn:
        listed = at_risk_accounts(conn, config=config, as_of=result.as_of)
        now = stage(conn, config=config, as_of=result.as_of)
        synthetic = synthetic_sources(conn)
        proposed = story_candidates(conn, config=config, as_of=result.as_of)
    return WeeklyReport(
        campaign_id=config.campaign.id,
        campaign_name=config.campaign.name,
        as_of=result.as_of,
        generated_at=utcnow(),
        metrics=result,
        summary=summary(config, result, previous, judgements),
        trend_weeks=weeks,
        trend=values,
        adoption=adoption_curve(engine, config=config, as_of=result.as_of),
        at_risk=listed,
        at_risk_rows=config.campaign.report.at_risk_rows,
        at_risk_rules=config.campaign.report.at_risk,
        definitions=result.definitions,
        judgements=judgements,
        rule=rule(config),
        stage=now,
        mark=mark(rehearsal=rehearsal, synthetic=synthetic),
        stories=proposed,
        stories_shown=config.campaign.report.stories.candidates,
        escalation=config.campaign.report.escalation,
        closing=_closing(now, result),
    )
