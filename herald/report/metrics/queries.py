"""The SQL of the metrics: aggregate queries that count, per segment, everything the metrics
are ratios of. Each is built here and run by :mod:`herald.report.metrics.compute`.

``cutoff`` is the first instant after the as-of day (UTC): only rows before it count.
"""

from __future__ import annotations

from datetime import date
from typing import Any

from sqlalchemy import ColumnElement, Select, and_, case, func, literal, or_, select, true

from herald.config import PHASES
from herald.customers.rules import attribute_value
from herald.delivery.audience import assigned_on
from herald.models import (
    ACCOUNT,
    ADOPTION_EVENT,
    CONTACT,
    DELIVERY,
    EMAIL_EVENT,
    PERFORMANCE_REPORT,
    SATISFACTION_RESPONSE,
    SEGMENT_ASSIGNMENT,
    SUPPORT_TICKET,
    SUPPRESSION,
    AccountLifecycle,
    DeliveryState,
    MigrationState,
)
from herald.report.metrics.definitions import PERFORMANCE_ATTRIBUTE
from herald.report.metrics.results import FUNNEL_PHASES, OTHER_PHASE


def _n(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """SUM(CASE WHEN condition THEN 1 ELSE 0 END): rows for which it holds."""
    return func.sum(case((condition, 1), else_=0))


def _flag(condition: ColumnElement[bool]) -> ColumnElement[Any]:
    """MAX(CASE WHEN condition THEN 1 ELSE 0 END): whether any row holds it."""
    return func.max(case((condition, 1), else_=0))


BROADCAST_PHASES: tuple[str, ...] = tuple(phase for phase in PHASES if phase != "sunset")


def in_phase(message: ColumnElement[str], phase: str) -> ColumnElement[bool]:
    """SQL: whether a ledger message belongs to ``phase`` (sunset notices: 'sunset-t30')."""
    notice = message.like("sunset%")
    if phase == "sunset":
        return notice
    if phase == OTHER_PHASE:
        return ~or_(message.in_(BROADCAST_PHASES), notice)
    return message == phase


def _event_flags(cutoff: Any) -> Any:
    """Per delivery: which events it had by the cutoff (one pass over email_event).

    A CTE, MATERIALIZED on Postgres: planned on its own and run once. As a plain subquery
    (while this query was being tuned) Postgres 15 put it under the build side of a parallel
    hash join, where every worker ran the whole aggregate again: 3x the work at 10M events.
    It reads every delivery's events, not only this campaign's: filtering by campaign would
    need a join at the scale of the event table, where the join to the campaign's deliveries
    after the aggregate is at the scale of the deliveries.
    """
    e = EMAIL_EVENT
    bounce_type = func.coalesce(e.c.raw["type"].as_string(), "bounce")
    hard = case(
        (e.c.event == "bounce", case((bounce_type == "blocked", 0), else_=1)),
        else_=0,
    )
    return (
        select(
            e.c.delivery_id.label("delivery_id"),
            _flag(e.c.event == "delivered").label("delivered"),
            _flag(e.c.event == "open").label("opened"),
            _flag(e.c.event == "click").label("clicked"),
            func.max(hard).label("hard"),
            _flag(e.c.event == "spamreport").label("spam"),
            _flag(e.c.event.in_(("unsubscribe", "group_unsubscribe"))).label("unsub"),
        )
        .where(e.c.delivery_id.is_not(None), e.c.occurred_at < cutoff)
        .group_by(e.c.delivery_id)
        .cte("ev")
        .prefix_with("MATERIALIZED", dialect="postgresql")
    )


FUNNEL_COUNTS = ("sent", "delivered", "opened", "clicked")
DELIVERABILITY_COUNTS = ("hard", "spam", "unsub")


def _per_account(campaign: str, cutoff: Any) -> Any:
    """Per account with an accepted delivery: funnel counts per phase, reach and engagement.

    Only accepted deliveries (sent by the cutoff) are read, so every row is a message sent and
    each column is one cheap test per row. Contacts are counted DISTINCT here rather than
    through a per-contact level: one grouping of the deliveries instead of two (measured ~25%
    faster at 10M events on both databases).
    """
    d = DELIVERY
    ev = _event_flags(cutoff)

    def where(condition: ColumnElement[bool], then: Any = 1) -> ColumnElement[Any]:
        return case((condition, then), else_=0)

    engaged = or_(ev.c.opened == 1, ev.c.clicked == 1)
    columns: list[Any] = [CONTACT.c.account_id.label("account_id")]
    for name in FUNNEL_PHASES:
        phase = in_phase(d.c.message, name)
        columns += [
            func.sum(where(phase)).label(f"sent_{name}"),
            func.sum(where(phase, ev.c.delivered)).label(f"delivered_{name}"),
            func.sum(where(phase, ev.c.opened)).label(f"opened_{name}"),
            func.sum(where(phase, ev.c.clicked)).label(f"clicked_{name}"),
            func.max(where(phase)).label(f"reached_{name}"),
        ]
    columns += [
        # Event flags are 1, 0, or NULL (no events): SUM and MAX skip the NULLs.
        func.sum(ev.c.hard).label("hard"),
        func.sum(ev.c.spam).label("spam"),
        func.sum(ev.c.unsub).label("unsub"),
        literal(1).label("reached"),
        func.max(where(engaged)).label("engaged"),
        func.count(d.c.contact_id.distinct()).label("contacts_reached"),
        func.count(case((engaged, d.c.contact_id)).distinct()).label("contacts_engaged"),
    ]
    return (
        select(*columns)
        .select_from(
            d.join(CONTACT, CONTACT.c.id == d.c.contact_id).outerjoin(
                ev, ev.c.delivery_id == d.c.id
            )
        )
        .where(
            d.c.campaign == campaign,
            d.c.state == DeliveryState.ACCEPTED.value,
            d.c.sent_at < cutoff,
        )
        .group_by(CONTACT.c.account_id)
        .subquery("af")
    )


def campaign_query(
    campaign: str, as_of: date, cutoff: Any, segmented_on: date | None
) -> Select[Any]:
    """Per segment: every account-level and delivery-level count of the campaign."""
    a = ACCOUNT
    af = _per_account(campaign, cutoff)
    # Per account: its contacts, and those not suppressed by the cutoff (still writable).
    suppressed = (
        select(SUPPRESSION.c.email.label("email"))
        .where(SUPPRESSION.c.created_at < cutoff)
        .group_by(SUPPRESSION.c.email)
        .subquery("sup")
    )
    contacts = (
        select(
            CONTACT.c.account_id.label("account_id"),
            func.count().label("contacts"),
            func.count(case((suppressed.c.email.is_(None), 1))).label("writable"),
        )
        .select_from(CONTACT.outerjoin(suppressed, suppressed.c.email == CONTACT.c.email))
        .group_by(CONTACT.c.account_id)
        .subquery("cc")
    )
    adopted = (
        select(ADOPTION_EVENT.c.account_id.label("account_id"))
        .where(ADOPTION_EVENT.c.observed_on <= as_of, ADOPTION_EVENT.c.adoption_pct > 0)
        .group_by(ADOPTION_EVENT.c.account_id)
        .subquery("adopted")
    )
    reports = (
        select(
            PERFORMANCE_REPORT.c.account_id.label("account_id"),
            case(
                (PERFORMANCE_REPORT.c.new_import_ms < PERFORMANCE_REPORT.c.legacy_import_ms, 1),
                else_=0,
            ).label("faster"),
            func.row_number()
            .over(
                partition_by=PERFORMANCE_REPORT.c.account_id,
                order_by=(PERFORMANCE_REPORT.c.reported_at.desc(), PERFORMANCE_REPORT.c.id.desc()),
            )
            .label("latest"),
        )
        .where(PERFORMANCE_REPORT.c.reported_at < cutoff)
        .subquery("reports")
    )
    active = a.c.lifecycle == AccountLifecycle.ACTIVE.value
    migrated = and_(
        active,
        a.c.migration_state == MigrationState.MIGRATED.value,
        a.c.migrated_on <= as_of,
    )
    early = and_(active, attribute_value(PERFORMANCE_ATTRIBUTE, "bool") == true())
    reached = and_(active, af.c.reached == 1)
    unreached = and_(active, af.c.reached.is_(None))
    # Not held against reach: no contact left to write to, or moved before any message.
    unreachable = and_(unreached, func.coalesce(contacts.c.writable, 0) == 0)
    moved_first = and_(unreached, func.coalesce(contacts.c.writable, 0) > 0, migrated)
    columns: list[Any] = [
        SEGMENT_ASSIGNMENT.c.segment.label("segment"),
        _n(active).label("active"),
        func.sum(case((active, func.coalesce(contacts.c.contacts, 0)), else_=0)).label(
            "active_contacts"
        ),
        _n(reached).label("reached"),
        _n(unreachable).label("unreachable"),
        _n(moved_first).label("moved_first"),
        _n(and_(reached, af.c.engaged == 1)).label("engaged"),
        func.sum(case((reached, af.c.contacts_reached), else_=0)).label("contacts_reached"),
        func.sum(case((reached, af.c.contacts_engaged), else_=0)).label("contacts_engaged"),
        _n(migrated).label("migrated"),
        _n(early).label("early"),
        _n(and_(early, or_(af.c.engaged == 1, adopted.c.account_id.is_not(None)))).label(
            "early_engaged"
        ),
        _n(and_(migrated, reports.c.account_id.is_not(None))).label("reported"),
        _n(and_(migrated, reports.c.faster == 1)).label("validated"),
    ]
    for name in FUNNEL_PHASES:
        in_phase = and_(active, af.c[f"reached_{name}"] == 1)
        columns += [
            _n(in_phase).label(f"reached_{name}"),
            _n(and_(in_phase, migrated)).label(f"migrated_{name}"),
        ]
        columns += [
            func.sum(af.c[f"{count}_{name}"]).label(f"{count}_{name}") for count in FUNNEL_COUNTS
        ]
    columns += [func.sum(af.c[name]).label(name) for name in DELIVERABILITY_COUNTS]
    return (
        select(*columns)
        .select_from(
            a.outerjoin(SEGMENT_ASSIGNMENT, assigned_on(segmented_on))
            .outerjoin(af, af.c.account_id == a.c.id)
            .outerjoin(contacts, contacts.c.account_id == a.c.id)
            .outerjoin(adopted, adopted.c.account_id == a.c.id)
            .outerjoin(reports, and_(reports.c.account_id == a.c.id, reports.c.latest == 1))
        )
        .group_by(SEGMENT_ASSIGNMENT.c.segment)
    )


def tickets_query(cutoff: Any, segmented_on: date | None) -> Select[Any]:
    """Tickets of active accounts opened by the cutoff, per segment and category."""
    return (
        select(SEGMENT_ASSIGNMENT.c.segment, SUPPORT_TICKET.c.category, func.count())
        .select_from(
            SUPPORT_TICKET.join(ACCOUNT, ACCOUNT.c.id == SUPPORT_TICKET.c.account_id).outerjoin(
                SEGMENT_ASSIGNMENT, assigned_on(segmented_on)
            )
        )
        .where(
            SUPPORT_TICKET.c.opened_at < cutoff,
            ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value,
        )
        .group_by(SEGMENT_ASSIGNMENT.c.segment, SUPPORT_TICKET.c.category)
    )


def survey_query(cutoff: Any, segmented_on: date | None) -> Select[Any]:
    """Survey responses by the cutoff per segment: all, CSAT >= 4, with a comment."""
    comment = SATISFACTION_RESPONSE.c.comment
    return (
        select(
            SEGMENT_ASSIGNMENT.c.segment,
            func.count().label("responses"),
            _n(SATISFACTION_RESPONSE.c.csat >= 4).label("satisfied"),
            _n(and_(comment.is_not(None), func.length(func.trim(comment)) > 0)).label("commented"),
        )
        .select_from(
            SATISFACTION_RESPONSE.join(
                ACCOUNT, ACCOUNT.c.id == SATISFACTION_RESPONSE.c.account_id
            ).outerjoin(SEGMENT_ASSIGNMENT, assigned_on(segmented_on))
        )
        .where(SATISFACTION_RESPONSE.c.responded_at < cutoff)
        .group_by(SEGMENT_ASSIGNMENT.c.segment)
    )
