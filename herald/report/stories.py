"""Customer success stories: the accounts to propose as case studies, and a case-study draft
built from one account's own measurements.

A candidate (``campaign.yaml`` ``report.stories``) is an active account that has migrated by
the report's day, whose latest performance report shows imports at least ``min_speedup``
times faster, whose survey answers average ``min_average_csat`` or more over at least
``min_responses`` answers with none saying performance did not improve, and, when
``consent_attribute`` is set, whose attribute of that name is true. Candidates are ranked
by their import speed-up, then their memory saving.

The draft (:func:`draft`) follows the strategy's framework: performance improvement by use
case, developer experience, maintenance and debugging, scalability; every figure in it is the
account's own, read from its performance reports.
"""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import (
    ColumnElement,
    Connection,
    and_,
    case,
    false,
    func,
    null,
    or_,
    select,
    true,
)

from herald.config import HeraldConfig
from herald.customers.rules import attribute_value
from herald.delivery.audience import NoSegmentation, assigned_on, segmentation_day
from herald.delivery.calendar import start_of
from herald.i18n.environment import environment
from herald.models import (
    ACCOUNT,
    PERFORMANCE_REPORT,
    SATISFACTION_RESPONSE,
    SEGMENT_ASSIGNMENT,
    SUPPORT_TICKET,
    AccountLifecycle,
    MigrationState,
    as_utc,
)
from herald.report.at_risk import account_contacts

TEMPLATE = "stories/case-study.md"
CSV_NAME = "story-candidates.csv"


class NotACandidate(ValueError):
    """The account cannot have a case-study draft (unknown, no consent, nothing measured)."""


@dataclass(frozen=True)
class Measurement:
    """One performance report, as the customer sent it."""

    report_id: str
    reported_at: datetime
    legacy_import_ms: float
    new_import_ms: float
    legacy_memory_mb: float
    new_memory_mb: float

    @classmethod
    def of(cls, row: Any) -> Measurement:
        """From a row with the performance report's columns."""
        return cls(
            row.report_id,
            as_utc(row.reported_at),
            float(row.legacy_import_ms),
            float(row.new_import_ms),
            float(row.legacy_memory_mb),
            float(row.new_memory_mb),
        )

    @property
    def speedup(self) -> float:
        """How many times faster imports are."""
        return self.legacy_import_ms / self.new_import_ms

    @property
    def memory_saved(self) -> float:
        """The share of import memory saved (0-1)."""
        return 1 - self.new_memory_mb / self.legacy_memory_mb


@dataclass(frozen=True)
class Candidate:
    """An account proposed for a case study, with its measured figures."""

    external_id: str
    name: str
    industry: str | None
    use_case: str | None
    segment: str | None
    tier: str
    region: str
    migrated_on: date | None
    latest: Measurement
    reports: int
    average_csat: float
    responses: int
    contacts: list[str] = field(default_factory=list)
    owner: str | None = None


def _eligible(config: HeraldConfig, as_of: date) -> list[ColumnElement[bool]]:
    """The WHERE of a candidate, up to the survey and speed-up thresholds."""
    rules = config.campaign.report.stories
    conditions: list[ColumnElement[bool]] = [
        ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value,
        ACCOUNT.c.migration_state == MigrationState.MIGRATED.value,
        ACCOUNT.c.migrated_on <= as_of,
    ]
    if rules.consent_attribute is not None:
        conditions.append(attribute_value(rules.consent_attribute, "bool") == true())
    return conditions


def story_candidates(conn: Connection, *, config: HeraldConfig, as_of: date) -> list[Candidate]:
    """Every candidate as of the end of ``as_of`` (UTC), best first."""
    rules = config.campaign.report.stories
    cutoff = start_of(as_of + timedelta(days=1))
    try:
        segmented_on: date | None = segmentation_day(conn, as_of)
    except NoSegmentation:
        segmented_on = None
    report = PERFORMANCE_REPORT
    latest = (
        select(
            report.c.account_id,
            report.c.report_id,
            report.c.reported_at,
            report.c.legacy_import_ms,
            report.c.new_import_ms,
            report.c.legacy_memory_mb,
            report.c.new_memory_mb,
            func.count().over(partition_by=report.c.account_id).label("reports"),
            func.row_number()
            .over(
                partition_by=report.c.account_id,
                order_by=(report.c.reported_at.desc(), report.c.id.desc()),
            )
            .label("latest"),
        )
        .where(report.c.reported_at < cutoff)
        .subquery("latest")
    )
    answers = (
        select(
            SATISFACTION_RESPONSE.c.account_id,
            func.avg(SATISFACTION_RESPONSE.c.csat).label("csat"),
            func.count().label("responses"),
            func.sum(
                case((SATISFACTION_RESPONSE.c.performance_improved == false(), 1), else_=0)
            ).label("not_improved"),
        )
        .where(SATISFACTION_RESPONSE.c.responded_at < cutoff)
        .group_by(SATISFACTION_RESPONSE.c.account_id)
        .subquery("answers")
    )
    speedup = latest.c.legacy_import_ms / func.nullif(latest.c.new_import_ms, 0)
    saved = 1 - latest.c.new_memory_mb / func.nullif(latest.c.legacy_memory_mb, 0)
    use_case = (
        null()
        if rules.use_case_attribute is None
        else attribute_value(rules.use_case_attribute, "text")
    )
    owner_key = config.campaign.report.owner_attribute
    owner = null() if owner_key is None else attribute_value(owner_key, "text")
    rows = conn.execute(
        select(
            ACCOUNT.c.id,
            ACCOUNT.c.external_id,
            ACCOUNT.c.name,
            ACCOUNT.c.industry,
            ACCOUNT.c.tier,
            ACCOUNT.c.region,
            ACCOUNT.c.migrated_on,
            SEGMENT_ASSIGNMENT.c.segment,
            use_case.label("use_case"),
            owner.label("owner"),
            latest.c.report_id,
            latest.c.reported_at,
            latest.c.legacy_import_ms,
            latest.c.new_import_ms,
            latest.c.legacy_memory_mb,
            latest.c.new_memory_mb,
            latest.c.reports,
            answers.c.csat,
            answers.c.responses,
        )
        .select_from(
            ACCOUNT.join(latest, and_(latest.c.account_id == ACCOUNT.c.id, latest.c.latest == 1))
            .join(answers, answers.c.account_id == ACCOUNT.c.id)
            .outerjoin(
                SEGMENT_ASSIGNMENT,
                assigned_on(segmented_on),
            )
        )
        .where(
            *_eligible(config, as_of),
            speedup >= rules.min_speedup,
            answers.c.csat >= rules.min_average_csat,
            answers.c.responses >= rules.min_responses,
            or_(answers.c.not_improved.is_(None), answers.c.not_improved == 0),
        )
        .order_by(speedup.desc(), saved.desc(), ACCOUNT.c.external_id)
    ).all()
    contacts = account_contacts(conn, account_ids=[row.id for row in rows])
    return [
        Candidate(
            external_id=row.external_id,
            name=row.name,
            industry=row.industry,
            use_case=None if row.use_case is None else str(row.use_case),
            segment=row.segment,
            tier=row.tier,
            region=row.region,
            migrated_on=row.migrated_on,
            latest=Measurement.of(row),
            reports=int(row.reports),
            average_csat=float(row.csat),
            responses=int(row.responses),
            contacts=contacts.get(row.id, []),
            owner=None if row.owner is None else str(row.owner),
        )
        for row in rows
    ]


CSV_COLUMNS = (
    "external_id",
    "name",
    "industry",
    "use_case",
    "segment",
    "migrated_on",
    "legacy_import_ms",
    "new_import_ms",
    "import_speedup",
    "legacy_memory_mb",
    "new_memory_mb",
    "memory_saved_pct",
    "performance_reports",
    "average_csat",
    "survey_answers",
    "owner",
    "contacts",
)


def candidates_csv(candidates: list[Candidate]) -> str:
    """Every candidate, one row each, with the measured figures and whom to ask."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for c in candidates:
        writer.writerow(
            [
                c.external_id,
                c.name,
                c.industry or "",
                c.use_case or "",
                c.segment or "",
                "" if c.migrated_on is None else c.migrated_on.isoformat(),
                f"{c.latest.legacy_import_ms:g}",
                f"{c.latest.new_import_ms:g}",
                f"{c.latest.speedup:.2f}",
                f"{c.latest.legacy_memory_mb:g}",
                f"{c.latest.new_memory_mb:g}",
                f"{100 * c.latest.memory_saved:.1f}",
                c.reports,
                f"{c.average_csat:.2f}",
                c.responses,
                c.owner or "",
                " ".join(c.contacts),
            ]
        )
    return buffer.getvalue()


# --------------------------------------------------------------------------- the draft


@dataclass(frozen=True)
class StoryFacts:
    """Everything the draft says about one account, read from the database."""

    external_id: str
    name: str
    industry: str | None
    use_case: str | None
    segment: str | None
    tier: str
    region: str
    migrated_on: date | None
    measurements: list[Measurement]
    comments: list[str]
    average_csat: float | None
    responses: int
    tickets: int
    contacts: list[str]
    consent: bool | None


def story_facts(conn: Connection, *, config: HeraldConfig, external_id: str) -> StoryFacts:
    """Read one account's facts; NotACandidate if it is unknown, has not consented (when
    consent is required) or has no performance report."""
    rules = config.campaign.report.stories
    consent = (
        null()
        if rules.consent_attribute is None
        else attribute_value(rules.consent_attribute, "bool")
    )
    use_case = (
        null()
        if rules.use_case_attribute is None
        else attribute_value(rules.use_case_attribute, "text")
    )
    row = conn.execute(
        select(
            ACCOUNT.c.id,
            ACCOUNT.c.external_id,
            ACCOUNT.c.name,
            ACCOUNT.c.industry,
            ACCOUNT.c.tier,
            ACCOUNT.c.region,
            ACCOUNT.c.migrated_on,
            ACCOUNT.c.migration_state,
            consent.label("consent"),
            use_case.label("use_case"),
        ).where(ACCOUNT.c.external_id == external_id)
    ).first()
    if row is None:
        raise NotACandidate(f"no account with external_id {external_id!r}")
    if rules.consent_attribute is not None and not row.consent:
        raise NotACandidate(
            f"account {external_id} has not consented to a case study (its attribute "
            f"{rules.consent_attribute!r} is not true)"
        )
    measured = [
        Measurement.of(m)
        for m in conn.execute(
            select(PERFORMANCE_REPORT)
            .where(PERFORMANCE_REPORT.c.account_id == row.id)
            .order_by(PERFORMANCE_REPORT.c.reported_at, PERFORMANCE_REPORT.c.id)
        )
    ]
    if not measured:
        raise NotACandidate(f"account {external_id} has sent no performance report")
    answers = conn.execute(
        select(SATISFACTION_RESPONSE.c.csat, SATISFACTION_RESPONSE.c.comment)
        .where(SATISFACTION_RESPONSE.c.account_id == row.id)
        .order_by(SATISFACTION_RESPONSE.c.responded_at, SATISFACTION_RESPONSE.c.id)
    ).all()
    tickets = conn.execute(
        select(func.count()).where(SUPPORT_TICKET.c.account_id == row.id)
    ).scalar_one()
    segment = conn.execute(
        select(SEGMENT_ASSIGNMENT.c.segment)
        .where(SEGMENT_ASSIGNMENT.c.account_id == row.id)
        .order_by(SEGMENT_ASSIGNMENT.c.as_of.desc())
        .limit(1)
    ).scalar()
    return StoryFacts(
        external_id=row.external_id,
        name=row.name,
        industry=row.industry,
        use_case=None if row.use_case is None else str(row.use_case),
        segment=segment,
        tier=row.tier,
        region=row.region,
        migrated_on=row.migrated_on if row.migration_state == MigrationState.MIGRATED else None,
        measurements=measured,
        comments=[str(c).strip() for _, c in answers if c and str(c).strip()],
        average_csat=(sum(int(csat) for csat, _ in answers) / len(answers)) if answers else None,
        responses=len(answers),
        tickets=int(tickets),
        contacts=account_contacts(conn, account_ids=[row.id]).get(row.id, []),
        consent=None if rules.consent_attribute is None else bool(row.consent),
    )


def draft(config: HeraldConfig, facts: StoryFacts, templates: Path) -> str:
    """The case-study draft (Markdown) for one account, from its own figures."""
    template = environment(templates).get_template(TEMPLATE)
    return template.render(
        story=facts,
        latest=facts.measurements[-1],
        campaign=config.campaign,
        evidence=config.evidence,
    )
