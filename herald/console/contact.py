"""A contact's history: everything Herald knows about one address and its account.

The contact and its account (with the account's migration state and which source set it),
the account's segment history, every ledger row of the contact in the campaign (the message,
the variant it was planned with, its state, when it may go and went, its batch and the
provider's message id), every SendGrid event of the address or of its ledger rows, the
address's suppressions and the audit entries that name the contact. A handful of indexed
queries, whatever the size of the campaign.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import Connection, or_, select

from herald.addresses import display_email
from herald.console.suppressions import SuppressionRow, address, suppressions_of
from herald.models import (
    ACCOUNT,
    AUDIT_LOG,
    CONTACT,
    DELIVERY,
    EMAIL_EVENT,
    SEGMENT_ASSIGNMENT,
    as_utc,
)

# What of a SendGrid event's own fields says what happened (the rest is in ``raw``).
EVENT_FIELDS: Final = ("type", "reason", "status", "response", "attempt", "url", "asm_group_id")
AUDIT_ROWS: Final = 200  # the newest audit entries naming the contact


@dataclass(frozen=True)
class ContactInfo:
    """The contact as imported."""

    id: int
    email: str
    display_email: str
    name: str | None
    role: str
    locale: str
    timezone: str | None
    created_at: datetime
    updated_at: datetime


@dataclass(frozen=True)
class AccountInfo:
    """The contact's account, its migration state and which source set it."""

    id: int
    external_id: str
    name: str
    tier: str
    region: str
    industry: str | None
    lifecycle: str
    migration_state: str
    migrated_on: date | None
    migration_source: str
    crm_migration_state: str | None
    crm_migrated_on: date | None
    attributes: dict[str, Any]


@dataclass(frozen=True)
class SegmentEntry:
    """The account's segment and readiness as of a segmentation day."""

    as_of: date
    segment: str
    rule: str
    readiness: str
    readiness_rule: str
    assigned_at: datetime


@dataclass(frozen=True)
class MessageEntry:
    """One ledger row of the contact: a message planned or sent, and what became of it."""

    delivery_id: int
    message: str
    segment: str
    role: str
    locale: str
    timezone: str | None
    critical: bool
    state: str
    planned_at: datetime
    not_before: datetime | None
    not_after: datetime | None
    claimed_at: datetime | None
    sent_at: datetime | None
    batch_id: str | None
    provider_message_id: str | None
    attempts: int
    error: str | None


@dataclass(frozen=True)
class EventEntry:
    """A SendGrid event of the address or of one of its ledger rows."""

    id: int
    event: str
    occurred_at: datetime
    email: str
    delivery_id: int | None
    campaign: str | None
    message: str | None
    sg_event_id: str
    sg_message_id: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class AuditEntry:
    """An audit log entry that names the contact (by its id)."""

    at: datetime
    actor: str
    action: str
    campaign: str | None
    phase: str | None
    detail: dict[str, Any]


@dataclass(frozen=True)
class ContactHistory:
    """Everything Herald knows about one contact, in the order things happened."""

    campaign: str
    contact: ContactInfo
    account: AccountInfo
    segments: list[SegmentEntry]
    messages: list[MessageEntry]
    events: list[EventEntry]
    suppressions: list[SuppressionRow]
    audit: list[AuditEntry]

    def as_json(self) -> dict[str, Any]:
        """The history as plain JSON values (timestamps and days in ISO 8601)."""
        suppressions = [
            {**asdict(row), "display_email": row.display_email} for row in self.suppressions
        ]
        plain: dict[str, Any] = _plain(
            {
                "campaign": self.campaign,
                "contact": asdict(self.contact),
                "account": asdict(self.account),
                "segments": [asdict(entry) for entry in self.segments],
                "messages": [asdict(entry) for entry in self.messages],
                "events": [asdict(entry) for entry in self.events],
                "suppressions": suppressions,
                "audit": [asdict(entry) for entry in self.audit],
            }
        )
        return plain


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(item) for item in value]
    if isinstance(value, datetime | date):
        return value.isoformat()
    return value


def _moment(value: datetime | None) -> datetime | None:
    return None if value is None else as_utc(value)


def _day(value: Any) -> date | None:
    if value is None or isinstance(value, date):
        return value
    return date.fromisoformat(str(value))


def contact_history(conn: Connection, *, campaign: str, email: str) -> ContactHistory | None:
    """The history of the contact with this address (taken as the customer import takes
    it: case folded, an internationalised domain as its A-label), or None when no contact
    has it. SuppressionError when ``email`` is no address at all."""
    canonical = address(email)
    person = conn.execute(select(CONTACT).where(CONTACT.c.email == canonical)).first()
    if person is None:
        return None
    firm = conn.execute(select(ACCOUNT).where(ACCOUNT.c.id == person.account_id)).one()
    contact = ContactInfo(
        id=person.id,
        email=person.email,
        display_email=display_email(person.email),
        name=person.name,
        role=person.role,
        locale=person.locale,
        timezone=person.timezone,
        created_at=as_utc(person.created_at),
        updated_at=as_utc(person.updated_at),
    )
    account = AccountInfo(
        id=firm.id,
        external_id=firm.external_id,
        name=firm.name,
        tier=firm.tier,
        region=firm.region,
        industry=firm.industry,
        lifecycle=firm.lifecycle,
        migration_state=firm.migration_state,
        migrated_on=_day(firm.migrated_on),
        migration_source=firm.migration_source,
        crm_migration_state=firm.crm_migration_state,
        crm_migrated_on=_day(firm.crm_migrated_on),
        attributes=dict(firm.attributes or {}),
    )
    return ContactHistory(
        campaign=campaign,
        contact=contact,
        account=account,
        segments=_segments(conn, account.id),
        messages=_messages(conn, campaign, contact.id),
        events=_events(conn, canonical, contact.id),
        suppressions=suppressions_of(conn, canonical),
        audit=_audit(conn, contact.id),
    )


def _segments(conn: Connection, account_id: int) -> list[SegmentEntry]:
    rows = conn.execute(
        select(
            SEGMENT_ASSIGNMENT.c.as_of,
            SEGMENT_ASSIGNMENT.c.segment,
            SEGMENT_ASSIGNMENT.c.rule,
            SEGMENT_ASSIGNMENT.c.readiness,
            SEGMENT_ASSIGNMENT.c.readiness_rule,
            SEGMENT_ASSIGNMENT.c.assigned_at,
        )
        .where(SEGMENT_ASSIGNMENT.c.account_id == account_id)
        .order_by(SEGMENT_ASSIGNMENT.c.as_of)
    )
    return [
        SegmentEntry(
            as_of=_day(row.as_of) or date.min,
            segment=row.segment,
            rule=row.rule,
            readiness=row.readiness,
            readiness_rule=row.readiness_rule,
            assigned_at=as_utc(row.assigned_at),
        )
        for row in rows
    ]


def _messages(conn: Connection, campaign: str, contact_id: int) -> list[MessageEntry]:
    rows = conn.execute(
        select(DELIVERY)
        .where(DELIVERY.c.contact_id == contact_id, DELIVERY.c.campaign == campaign)
        .order_by(DELIVERY.c.planned_at, DELIVERY.c.id)
    )
    return [
        MessageEntry(
            delivery_id=row.id,
            message=row.message,
            segment=row.segment,
            role=row.role,
            locale=row.locale,
            timezone=row.timezone,
            critical=bool(row.critical),
            state=row.state,
            planned_at=as_utc(row.planned_at),
            not_before=_moment(row.not_before),
            not_after=_moment(row.not_after),
            claimed_at=_moment(row.claimed_at),
            sent_at=_moment(row.sent_at),
            batch_id=row.batch_id,
            provider_message_id=row.provider_message_id,
            attempts=row.attempts,
            error=row.error,
        )
        for row in rows
    ]


def _events(conn: Connection, email: str, contact_id: int) -> list[EventEntry]:
    """Events of the address, and of the contact's ledger rows in any campaign (an event
    may carry another address than the one stored now)."""
    of_contact = select(DELIVERY.c.id).where(DELIVERY.c.contact_id == contact_id)
    rows = conn.execute(
        select(
            EMAIL_EVENT.c.id,
            EMAIL_EVENT.c.event,
            EMAIL_EVENT.c.occurred_at,
            EMAIL_EVENT.c.email,
            EMAIL_EVENT.c.delivery_id,
            EMAIL_EVENT.c.sg_event_id,
            EMAIL_EVENT.c.sg_message_id,
            EMAIL_EVENT.c.raw,
            DELIVERY.c.campaign,
            DELIVERY.c.message,
        )
        .select_from(EMAIL_EVENT.outerjoin(DELIVERY, DELIVERY.c.id == EMAIL_EVENT.c.delivery_id))
        .where(or_(EMAIL_EVENT.c.email == email, EMAIL_EVENT.c.delivery_id.in_(of_contact)))
        .order_by(EMAIL_EVENT.c.occurred_at, EMAIL_EVENT.c.id)
    )
    return [
        EventEntry(
            id=row.id,
            event=row.event,
            occurred_at=as_utc(row.occurred_at),
            email=row.email,
            delivery_id=row.delivery_id,
            campaign=row.campaign,
            message=row.message,
            sg_event_id=row.sg_event_id,
            sg_message_id=row.sg_message_id,
            detail={
                key: row.raw[key]
                for key in EVENT_FIELDS
                if isinstance(row.raw, dict) and row.raw.get(key) not in (None, "")
            },
        )
        for row in rows
    ]


def _audit(conn: Connection, contact_id: int) -> list[AuditEntry]:
    """The newest audit entries whose detail names the contact's id (an unsubscribe, a
    suppression added or removed by hand), oldest first."""
    named = AUDIT_LOG.c.detail["contact_id"].as_integer() == contact_id
    rows = conn.execute(
        select(AUDIT_LOG)
        .where(named)
        .order_by(AUDIT_LOG.c.at.desc(), AUDIT_LOG.c.id.desc())
        .limit(AUDIT_ROWS)
    ).all()
    return [
        AuditEntry(
            at=as_utc(row.at),
            actor=row.actor,
            action=row.action,
            campaign=row.campaign,
            phase=row.phase,
            detail=dict(row.detail or {}),
        )
        for row in reversed(rows)
    ]
