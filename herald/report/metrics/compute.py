"""Computing the metrics: the queries run in one snapshot of the database, their counts
turned into one value per metric and segment beside its target."""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, Engine, insert

from herald.config import PHASES, HeraldConfig
from herald.db import SIDE_BY_SIDE, id_spans, shared_snapshot
from herald.delivery.audience import NoSegmentation, segmentation_day
from herald.delivery.calendar import start_of
from herald.models import ACCOUNT
from herald.report.metrics.definitions import (
    definitions,
    migration_target_line,
    started,
    status_for,
    trajectory_line,
)
from herald.report.metrics.queries import (
    Span,
    campaign_query,
    inline_stages,
    segments_query,
    stages,
    survey_query,
    tickets_query,
)
from herald.report.metrics.results import (
    ALL,
    FUNNEL_PHASES,
    MONITORED,
    NO_DATA,
    OTHER_PHASE,
    UNSEGMENTED,
    FunnelRow,
    MetricsResult,
    MetricValue,
)
from herald.telemetry.health import require_healthy

FLOW_NAME = "metrics"  # the flow's name: telemetry.yaml ``depends_on`` applies to it

# SQLite: how many parts of the accounts are counted side by side, each on a connection of
# its own (SQLite releases the GIL while a statement runs).
SQLITE_PARTS = SIDE_BY_SIDE


def _segment_key(value: Any) -> str:
    return UNSEGMENTED if value is None else str(value)


def _counts(
    conn: Connection,
    *,
    config: HeraldConfig,
    as_of: date,
    parts: Sequence[Connection] = (),
) -> tuple[dict[str, Counter[str]], date | None, list[str]]:
    """Every count the metrics need, per segment key, plus the segmentation day and categories.

    SQLite: the campaign's counts are taken over ``parts`` (connections reading the same
    snapshot as ``conn``; none: ``conn`` alone), each over its share of the accounts."""
    try:
        segmented_on: date | None = segmentation_day(conn, as_of)
    except NoSegmentation:
        segmented_on = None
    cutoff = start_of(as_of + timedelta(days=1))
    counts: dict[str, Counter[str]] = {}

    def bucket(segment: Any) -> Counter[str]:
        return counts.setdefault(_segment_key(segment), Counter())

    rows: list[dict[str, Any]] = []
    if conn.dialect.name == "sqlite":  # one statement per segment (see campaign_query)
        segments = [*conn.execute(segments_query(segmented_on)).scalars(), None]
        parts = parts or [conn]

        def part(part: Connection, span: Span | None) -> list[dict[str, Any]]:
            found = []
            with _staged(part, campaign=config.campaign.id, as_of=as_of, cutoff=cutoff, span=span):
                for segment in segments:
                    query = campaign_query(as_of, segmented_on, segment, span=span)
                    found.append({"segment": segment, **part.execute(query).one()._mapping})
            return found

        if len(parts) == 1:
            rows += part(conn, None)
        else:
            spans = id_spans(conn, ACCOUNT.c.id, len(parts))
            with ThreadPoolExecutor(len(parts), thread_name_prefix="metrics") as pool:
                for found in pool.map(part, parts, spans):
                    rows += found
    else:
        sources = inline_stages(config.campaign.id, as_of, cutoff)
        query = campaign_query(as_of, segmented_on, grouped=True, sources=sources)
        rows += [dict(row._mapping) for row in conn.execute(query)]
    for values in rows:
        segment = values.pop("segment")
        if not values.pop("accounts"):
            continue  # no account without a segment: no such column
        target = bucket(segment)
        for key, value in values.items():
            target[key] += int(value or 0)
    categories: set[str] = set()
    for segment, category, tickets in conn.execute(tickets_query(cutoff, segmented_on)):
        categories.add(str(category))
        target = bucket(segment)
        target["tickets"] += int(tickets)
        target[f"tickets:{category}"] += int(tickets)
    for segment, responses, satisfied, commented in conn.execute(
        survey_query(cutoff, segmented_on)
    ):
        target = bucket(segment)
        target["responses"] += int(responses)
        target["satisfied"] += int(satisfied or 0)
        target["commented"] += int(commented or 0)
    return counts, segmented_on, sorted(categories)


@contextmanager
def _staged(
    conn: Connection, *, campaign: str, as_of: date, cutoff: Any, span: Span | None = None
) -> Iterator[None]:
    """The per-account stages of the campaign's counts (:func:`queries.stages`), each filled
    into its temporary table for the statements inside, and dropped after them.

    SQLite's path (Postgres reads the stages as subqueries); it works on either. Run inside
    the computation's transaction: on Postgres a failure rolls the tables back with it; a
    SQLite connection may keep one from a failed run, so each is dropped first if it is
    there. Temporary tables belong to the connection: concurrent computations do
    not meet, and nothing is written to the database's own tables."""
    filled = stages(campaign, as_of, cutoff, span)
    for table, query in filled:
        table.drop(conn, checkfirst=True)
        table.create(conn)
        conn.execute(insert(table).from_select(list(query.selected_columns.keys()), query))
    yield
    for table, _ in filled:
        table.drop(conn)


def _segments(config: HeraldConfig, present: Iterable[str]) -> list[str]:
    """'all', the configured segments in rollout order, then any other segment with data."""
    names = [ALL, *config.segments.names]
    extra = sorted(set(present) - set(names) - {UNSEGMENTED})
    names += extra
    if UNSEGMENTED in present:
        names.append(UNSEGMENTED)
    return names


def _ratio(numerator: int, denominator: int, scale: float = 1.0) -> float | None:
    return None if denominator == 0 else scale * numerator / denominator


def compute_metrics(engine: Engine, *, config: HeraldConfig, as_of: date) -> MetricsResult:
    """Every success metric as of the end of ``as_of`` (UTC), per segment, beside its target.

    Refuses (``SourceRejected``) while a telemetry source the ``metrics`` flow depends on has a
    rejected last batch.
    """
    require_healthy(engine, config=config, flow_name=FLOW_NAME)
    if engine.dialect.name == "sqlite":
        # Every part reads one snapshot, the first's connection also the rest.
        with shared_snapshot(engine, SQLITE_PARTS) as parts:
            counts, segmented_on, categories = _counts(
                parts[0], config=config, as_of=as_of, parts=parts
            )
    else:
        # REPEATABLE READ: every query sees one snapshot.
        with (
            engine.connect().execution_options(isolation_level="REPEATABLE READ") as conn,
            conn.begin(),
        ):
            counts, segmented_on, categories = _counts(conn, config=config, as_of=as_of)

    segments = _segments(config, counts)
    overall: Counter[str] = Counter()
    for counter in counts.values():
        overall.update(counter)
    counts[ALL] = overall
    targets = {str(key): value for key, value in config.targets.targets.items()}
    line = migration_target_line(config, as_of)

    values: list[MetricValue] = []

    def add(
        metric: str,
        numerator: str,
        denominator: str,
        *,
        target_key: str | None = None,
        scale: float = 1.0,
    ) -> None:
        target = targets.get(target_key) if target_key else None
        today = trajectory_line(config, target, as_of)
        judged = started(config, target, as_of)
        for segment in segments:
            n = counts.get(segment, Counter())[numerator]
            d = counts.get(segment, Counter())[denominator]
            value = _ratio(n, d, scale)
            values.append(
                MetricValue(
                    metric=metric,
                    segment=segment,
                    value=value,
                    target=target.value if target else None,
                    comparison=target.comparison if target else None,
                    status=status_for(value, target, today, sample=d, started=judged),
                    numerator=n,
                    denominator=d,
                    limit=target.limit if target else None,
                    line=today,
                    tolerance=target.tolerance if target else 0.0,
                )
            )

    for bucket in counts.values():
        bucket["to_reach"] = bucket["active"] - bucket["unreachable"] - bucket["moved_first"]
    add("message_reach", "reached", "to_reach", target_key="message_reach")
    add("unreachable_accounts", "unreachable", "active")
    add("moved_before_reached", "moved_first", "active")
    add("message_reach_contacts", "contacts_reached", "active_contacts")
    for phase in PHASES:
        add(f"reach_{phase}", f"reached_{phase}", "active")
    add("engagement_rate", "engaged", "reached", target_key="engagement_rate")
    add("engagement_rate_contacts", "contacts_engaged", "contacts_reached")
    add(
        "early_adopter_engagement",
        "early_engaged",
        "early",
        target_key="early_adopter_engagement",
    )
    add("migration_rate", "migrated", "active", target_key="migration_rate")
    for segment in segments:
        values.append(
            MetricValue(
                "migration_target_line",
                segment,
                line,
                None,
                None,
                NO_DATA if line is None else MONITORED,
                None,
                None,
            )
        )
    add(
        "support_utilization",
        "tickets",
        "active",
        target_key="support_utilization",
        scale=100.0,
    )
    for category in categories:
        add(f"support_utilization:{category}", f"tickets:{category}", "active", scale=100.0)
    add("support_satisfaction", "satisfied", "responses", target_key="support_satisfaction")
    add("performance_validation", "validated", "reported", target_key="performance_validation")
    add("performance_reported", "reported", "migrated")
    sent = "sent"
    for segment in segments:
        bucket = counts.setdefault(segment, Counter())
        bucket[sent] = sum(bucket[f"sent_{name}"] for name in FUNNEL_PHASES)
    add("hard_bounce_rate", "hard", sent, target_key="hard_bounce_rate")
    add("spam_complaint_rate", "spam", sent, target_key="spam_complaint_rate")
    add("unsubscribe_rate", "unsub", sent, target_key="unsubscribe_rate")
    add("feedback_quality", "commented", "responses", target_key="feedback_quality")

    funnel = [
        FunnelRow(
            phase=name,
            sent=overall[f"sent_{name}"],
            delivered=overall[f"delivered_{name}"],
            opened=overall[f"opened_{name}"],
            clicked=overall[f"clicked_{name}"],
            migrated_accounts=overall[f"migrated_{name}"],
        )
        for name in FUNNEL_PHASES
        if name != OTHER_PHASE or overall[f"sent_{name}"]
    ]
    return MetricsResult(
        as_of=as_of,
        values=values,
        funnel=funnel,
        definitions=definitions(config),
        campaign=config.campaign.id,
        segmented_on=segmented_on,
        segments=segments,
    )
