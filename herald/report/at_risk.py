"""The at-risk list for account teams: who has not migrated and needs a person, not an e-mail.

An account is at risk as of a day when it is active, has not migrated by that day, and at
least one of these holds (``campaign.yaml`` ``report.at_risk``):

- its deadline (its segment's sunset date) is at most ``deadline_within_days`` away, or
  has passed;
- it opened ``min_tickets`` or more support tickets by that day;
- its average survey CSAT by that day is at or below ``max_average_csat``;
- it is unreachable by e-mail: it has contacts, and every one is suppressed (unsubscribed,
  bounced, reported spam, or suppressed by hand).

One SQL query selects and orders them (deadline first, then tickets); a second one brings
each listed account's contacts, executives first, then technical ones: whom to call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, literal, or_, select

from herald.addresses import display_email
from herald.config import HeraldConfig
from herald.delivery.audience import NoSegmentation, segmentation_day
from herald.delivery.calendar import start_of
from herald.models import (
    ACCOUNT,
    ADOPTION_EVENT,
    CONTACT,
    SATISFACTION_RESPONSE,
    SEGMENT_ASSIGNMENT,
    SUPPORT_TICKET,
    SUPPRESSION,
    AccountLifecycle,
    ContactRole,
    MigrationState,
)

# Contacts an account team reaches first, in this order.
CONTACT_ROLES = (ContactRole.EXECUTIVE.value, ContactRole.TECHNICAL.value, ContactRole.OTHER.value)
CONTACTS_PER_ACCOUNT = 3


@dataclass(frozen=True)
class AtRiskAccount:
    """One account on the list, with why it is there and whom to call."""

    external_id: str
    name: str
    segment: str
    tier: str
    region: str
    deadline: date
    days_left: int
    tickets: int
    average_csat: float | None
    responses: int
    adoption_pct: float | None
    reasons: list[str]
    unreachable: bool = False
    contacts: list[str] = field(default_factory=list)


def _reasons(
    config: HeraldConfig, days_left: int, tickets: int, csat: float | None, unreachable: bool
) -> list[str]:
    rules = config.campaign.report.at_risk
    reasons = []
    if unreachable:
        reasons.append("unreachable by e-mail: every contact unsubscribed, bounced or suppressed")
    if days_left < 0:
        reasons.append(f"deadline passed {-days_left} day(s) ago")
    elif days_left <= rules.deadline_within_days:
        reasons.append(f"deadline in {days_left} day(s)")
    if tickets >= rules.min_tickets:
        reasons.append(f"{tickets} support tickets")
    if csat is not None and csat <= rules.max_average_csat:
        reasons.append(f"average CSAT {csat:.1f}")
    return reasons


def at_risk_accounts(conn: Connection, *, config: HeraldConfig, as_of: date) -> list[AtRiskAccount]:
    """Every at-risk account as of the end of ``as_of`` (UTC), most urgent first."""
    try:
        segmented_on = segmentation_day(conn, as_of)
    except NoSegmentation:
        return []
    rules = config.campaign.report.at_risk
    cutoff = start_of(as_of + timedelta(days=1))
    sunset = config.campaign.sunset
    deadline = case(
        *((SEGMENT_ASSIGNMENT.c.segment == name, literal(day)) for name, day in sunset.items()),
        else_=literal(max(sunset.values())),
    )
    latest_deadline_soon = [
        name for name, day in sunset.items() if (day - as_of).days <= rules.deadline_within_days
    ]
    tickets = (
        select(SUPPORT_TICKET.c.account_id, func.count().label("tickets"))
        .where(SUPPORT_TICKET.c.opened_at < cutoff)
        .group_by(SUPPORT_TICKET.c.account_id)
        .subquery("tickets")
    )
    surveys = (
        select(
            SATISFACTION_RESPONSE.c.account_id,
            func.avg(SATISFACTION_RESPONSE.c.csat).label("csat"),
            func.count().label("responses"),
        )
        .where(SATISFACTION_RESPONSE.c.responded_at < cutoff)
        .group_by(SATISFACTION_RESPONSE.c.account_id)
        .subquery("surveys")
    )
    adoption = (
        select(
            ADOPTION_EVENT.c.account_id,
            ADOPTION_EVENT.c.adoption_pct,
            func.row_number()
            .over(
                partition_by=ADOPTION_EVENT.c.account_id,
                order_by=(ADOPTION_EVENT.c.observed_on.desc(), ADOPTION_EVENT.c.id.desc()),
            )
            .label("latest"),
        )
        .where(ADOPTION_EVENT.c.observed_on <= as_of)
        .subquery("adoption")
    )
    ticket_count = func.coalesce(tickets.c.tickets, 0)
    reachable = CONTACT.alias("reachable")
    unreachable = and_(
        exists().where(reachable.c.account_id == ACCOUNT.c.id),
        ~exists().where(
            reachable.c.account_id == ACCOUNT.c.id,
            ~exists().where(SUPPRESSION.c.email == reachable.c.email),
        ),
    )
    not_migrated = or_(
        ACCOUNT.c.migration_state != MigrationState.MIGRATED.value,
        ACCOUNT.c.migrated_on.is_(None),
        ACCOUNT.c.migrated_on > as_of,
    )
    query = (
        select(
            ACCOUNT.c.id,
            ACCOUNT.c.external_id,
            ACCOUNT.c.name,
            ACCOUNT.c.tier,
            ACCOUNT.c.region,
            SEGMENT_ASSIGNMENT.c.segment,
            ticket_count.label("tickets"),
            surveys.c.csat,
            func.coalesce(surveys.c.responses, 0).label("responses"),
            adoption.c.adoption_pct,
            case((unreachable, True), else_=False).label("unreachable"),
        )
        .select_from(
            ACCOUNT.join(
                SEGMENT_ASSIGNMENT,
                and_(
                    SEGMENT_ASSIGNMENT.c.account_id == ACCOUNT.c.id,
                    SEGMENT_ASSIGNMENT.c.as_of == segmented_on,
                ),
            )
            .outerjoin(tickets, tickets.c.account_id == ACCOUNT.c.id)
            .outerjoin(surveys, surveys.c.account_id == ACCOUNT.c.id)
            .outerjoin(
                adoption, and_(adoption.c.account_id == ACCOUNT.c.id, adoption.c.latest == 1)
            )
        )
        .where(
            ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value,
            not_migrated,
            or_(
                SEGMENT_ASSIGNMENT.c.segment.in_(latest_deadline_soon),
                ticket_count >= rules.min_tickets,
                surveys.c.csat <= rules.max_average_csat,
                unreachable,
            ),
        )
        .order_by(deadline, ticket_count.desc(), ACCOUNT.c.external_id)
    )
    rows = conn.execute(query).all()
    contacts = _contacts(conn, account_ids=[row.id for row in rows])
    listed = []
    for row in rows:
        day = sunset.get(row.segment, max(sunset.values()))
        days_left = (day - as_of).days
        csat = None if row.csat is None else float(row.csat)
        listed.append(
            AtRiskAccount(
                external_id=row.external_id,
                name=row.name,
                segment=row.segment,
                tier=row.tier,
                region=row.region,
                deadline=day,
                days_left=days_left,
                tickets=int(row.tickets),
                average_csat=csat,
                responses=int(row.responses),
                adoption_pct=None if row.adoption_pct is None else float(row.adoption_pct),
                reasons=_reasons(config, days_left, int(row.tickets), csat, bool(row.unreachable)),
                contacts=contacts.get(row.id, []),
                unreachable=bool(row.unreachable),
            )
        )
    return listed


def _contacts(conn: Connection, *, account_ids: list[int]) -> dict[int, list[str]]:
    """Up to three contacts per account: executives first, then technical, then others."""
    found: dict[int, list[str]] = {}
    rank = case(
        *((CONTACT.c.role == role, i) for i, role in enumerate(CONTACT_ROLES)),
        else_=len(CONTACT_ROLES),
    )
    for start in range(0, len(account_ids), 1000):  # bounded IN lists
        chunk = account_ids[start : start + 1000]
        rows: Any = conn.execute(
            select(CONTACT.c.account_id, CONTACT.c.email)
            .where(CONTACT.c.account_id.in_(chunk))
            .order_by(CONTACT.c.account_id, rank, CONTACT.c.id)
        )
        for account_id, email in rows:
            emails = found.setdefault(account_id, [])
            if len(emails) < CONTACTS_PER_ACCOUNT:
                emails.append(display_email(email))  # account teams read them
    return found
