"""The at-risk list for account teams: who has not migrated and needs a person, not an e-mail.

An account is at risk as of a day when it is active, has not migrated by that day, and at
least one of these holds (``campaign.yaml`` ``report.at_risk``):

- its deadline (its segment's sunset date) is at most ``deadline_within_days`` away, or
  has passed;
- it opened ``min_tickets`` or more support tickets by that day;
- its average survey CSAT by that day is at or below ``max_average_csat``;
- it is unreachable by e-mail: it has contacts, and every one is suppressed (unsubscribed,
  bounced, reported spam, or suppressed by hand).

Each reason carries the day it began (the deadline window opening, the ticket that made the
count, the answer that took the average down, the last contact suppressed). The account's
owner is its ``report.owner_attribute`` attribute; an account with a ticket open past
``report.escalation.open_ticket_days``, or with ``low_csat_answers`` answers at or below
``low_csat``, is escalated along ``report.escalation.path``.

One SQL query selects and orders them (deadline first, then tickets); a second one brings
each listed account's contacts, executives first, then technical ones: whom to call.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Connection, and_, case, exists, func, literal, null, or_, select

from herald.addresses import display_email
from herald.config import Escalation, HeraldConfig
from herald.customers.rules import attribute_value
from herald.delivery.audience import NoSegmentation, assigned_on, segmentation_day
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
    as_utc,
)

# Contacts an account team reaches first, in this order.
CONTACT_ROLES = (ContactRole.EXECUTIVE.value, ContactRole.TECHNICAL.value, ContactRole.OTHER.value)
CONTACTS_PER_ACCOUNT = 3


DEADLINE = "deadline"
TICKETS = "tickets"
LOW_SATISFACTION = "low satisfaction"
UNREACHABLE = "unreachable"


@dataclass(frozen=True)
class Reason:
    """Why an account is on the list, and the day it became so."""

    kind: str  # deadline, tickets, low satisfaction, unreachable
    text: str
    since: date

    def __str__(self) -> str:
        return f"{self.text} (since {self.since})"


@dataclass(frozen=True)
class AtRiskAccount:
    """One account on the list, with why it is there, who owns it and whom to call."""

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
    reasons: list[Reason]
    unreachable: bool = False
    contacts: list[str] = field(default_factory=list)
    owner: str | None = None
    open_tickets: int = 0  # open past the escalation age
    low_answers: int = 0  # survey answers at or below the escalation score

    @property
    def at_risk_since(self) -> date:
        """The day the first of its reasons began."""
        return min(reason.since for reason in self.reasons)

    def escalations(self, rules: Escalation) -> list[str]:
        """Why it goes up the support escalation path (empty: it does not)."""
        why = []
        if self.open_tickets:
            why.append(f"{self.open_tickets} ticket(s) open over {rules.open_ticket_days} days")
        if self.low_answers >= rules.low_csat_answers:
            why.append(f"{self.low_answers} survey answers at {rules.low_csat} or below")
        return why


@dataclass(frozen=True)
class _Facts:
    """What the reasons are made from, for one account."""

    deadline: date
    days_left: int
    tickets: int
    csat: float | None
    unreachable: bool
    tickets_since: date | None
    csat_since: date | None
    unreachable_since: date | None


def _reasons(config: HeraldConfig, facts: _Facts) -> list[Reason]:
    rules = config.campaign.report.at_risk
    reasons = []
    if facts.unreachable:
        reasons.append(
            Reason(
                UNREACHABLE,
                "unreachable by e-mail: every contact unsubscribed, bounced or suppressed",
                facts.unreachable_since or facts.deadline,
            )
        )
    if facts.days_left < 0:
        reasons.append(
            Reason(DEADLINE, f"deadline passed {-facts.days_left} day(s) ago", facts.deadline)
        )
    elif facts.days_left <= rules.deadline_within_days:
        reasons.append(
            Reason(
                DEADLINE,
                f"deadline in {facts.days_left} day(s)",
                facts.deadline - timedelta(days=rules.deadline_within_days),
            )
        )
    if facts.tickets >= rules.min_tickets and facts.tickets_since is not None:
        reasons.append(Reason(TICKETS, f"{facts.tickets} support tickets", facts.tickets_since))
    if (
        facts.csat is not None
        and facts.csat <= rules.max_average_csat
        and facts.csat_since is not None
    ):
        reasons.append(Reason(LOW_SATISFACTION, f"average CSAT {facts.csat:.1f}", facts.csat_since))
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
    attribute = config.campaign.report.owner_attribute
    owner = null() if attribute is None else attribute_value(attribute, "text")
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
            owner.label("owner"),
        )
        .select_from(
            ACCOUNT.join(
                SEGMENT_ASSIGNMENT,
                assigned_on(segmented_on),
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
    ids = [row.id for row in rows]
    contacts = account_contacts(conn, account_ids=ids)
    history = _history(conn, account_ids=ids, cutoff=cutoff)
    listed = []
    for row in rows:
        day = sunset.get(row.segment, max(sunset.values()))
        days_left = (day - as_of).days
        csat = None if row.csat is None else float(row.csat)
        found = history.get(row.id, _History())
        facts = _Facts(
            deadline=day,
            days_left=days_left,
            tickets=int(row.tickets),
            csat=csat,
            unreachable=bool(row.unreachable),
            tickets_since=found.ticket_since(config.campaign.report.at_risk.min_tickets),
            csat_since=found.csat_since(config.campaign.report.at_risk.max_average_csat),
            unreachable_since=found.suppressed_since,
        )
        named = None if row.owner is None else str(row.owner).strip() or None
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
                reasons=_reasons(config, facts),
                contacts=contacts.get(row.id, []),
                unreachable=bool(row.unreachable),
                owner=named,
                open_tickets=found.open_tickets(
                    cutoff - timedelta(days=config.campaign.report.escalation.open_ticket_days),
                    cutoff,
                ),
                low_answers=found.low_answers(config.campaign.report.escalation.low_csat),
            )
        )
    return listed


@dataclass
class _History:
    """One listed account's tickets, survey answers and suppressions by the cutoff."""

    tickets: list[tuple[datetime, datetime | None]] = field(default_factory=list)
    answers: list[tuple[datetime, int]] = field(default_factory=list)
    suppressed_since: date | None = None

    def ticket_since(self, count: int) -> date | None:
        """The day its ``count``-th ticket was opened."""
        opened = sorted(at for at, _ in self.tickets)
        return opened[count - 1].date() if len(opened) >= count else None

    def csat_since(self, threshold: float) -> date | None:
        """The day its running average CSAT last fell to ``threshold`` or below (None: it
        is above it now)."""
        total, since = 0, None
        for count, (at, csat) in enumerate(sorted(self.answers), start=1):
            total += csat
            low = total / count <= threshold
            if low and since is None:
                since = at.date()
            elif not low:
                since = None
        return since

    def open_tickets(self, older_than: datetime, cutoff: datetime) -> int:
        """Tickets opened before ``older_than`` and still open at the cutoff."""
        return sum(
            1
            for opened, closed in self.tickets
            if opened < older_than and (closed is None or closed >= cutoff)
        )

    def low_answers(self, score: int) -> int:
        """Survey answers at or below ``score``."""
        return sum(1 for _, csat in self.answers if csat <= score)


def _history(conn: Connection, *, account_ids: list[int], cutoff: datetime) -> dict[int, _History]:
    """Tickets, answers and the last suppression of each listed account (bounded IN lists)."""
    found: dict[int, _History] = {}
    for start in range(0, len(account_ids), 1000):
        chunk = account_ids[start : start + 1000]
        for account_id, opened, closed in conn.execute(
            select(
                SUPPORT_TICKET.c.account_id, SUPPORT_TICKET.c.opened_at, SUPPORT_TICKET.c.closed_at
            ).where(SUPPORT_TICKET.c.account_id.in_(chunk), SUPPORT_TICKET.c.opened_at < cutoff)
        ):
            found.setdefault(account_id, _History()).tickets.append(
                (as_utc(opened), None if closed is None else as_utc(closed))
            )
        for account_id, at, csat in conn.execute(
            select(
                SATISFACTION_RESPONSE.c.account_id,
                SATISFACTION_RESPONSE.c.responded_at,
                SATISFACTION_RESPONSE.c.csat,
            ).where(
                SATISFACTION_RESPONSE.c.account_id.in_(chunk),
                SATISFACTION_RESPONSE.c.responded_at < cutoff,
            )
        ):
            found.setdefault(account_id, _History()).answers.append((as_utc(at), int(csat)))
        for account_id, latest in conn.execute(
            select(CONTACT.c.account_id, func.max(SUPPRESSION.c.created_at))
            .join(SUPPRESSION, SUPPRESSION.c.email == CONTACT.c.email)
            .where(CONTACT.c.account_id.in_(chunk), SUPPRESSION.c.created_at < cutoff)
            .group_by(CONTACT.c.account_id)
        ):
            if latest is not None:
                found.setdefault(account_id, _History()).suppressed_since = as_utc(latest).date()
    return found


def account_contacts(conn: Connection, *, account_ids: list[int]) -> dict[int, list[str]]:
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
