"""Herald's tables (SQLModel) and the named states of everything that has a lifecycle.

Conventions, held everywhere:
- every timestamp is timezone-aware UTC (``DateTime(timezone=True)``); calendar days are ``date``;
- every idempotency key has an explicit unique constraint, and every filter a flow uses an index;
- states are ``StrEnum`` values stored as plain strings (no native enum types, so a new state is
  a code change, not a schema migration);
- schema changes go through Alembic (``herald/migrations``); ``metadata`` here is the target.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from enum import StrEnum
from typing import Any, Final

from sqlalchemy import (
    JSON,
    BigInteger,
    Column,
    Date,
    DateTime,
    ForeignKey,
    Index,
    Integer,
    LargeBinary,
    String,
    Table,
    Text,
    UniqueConstraint,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlmodel import Field, SQLModel

# JSONB on Postgres (indexable, compared by value), JSON text elsewhere.
JSONType = JSON().with_variant(JSONB(), "postgresql")


def utcnow() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(UTC)


def as_utc(moment: datetime) -> datetime:
    """A stored timestamp as aware UTC: SQLite hands them back naive, and Herald stores UTC."""
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


# --------------------------------------------------------------------------- states


class AccountLifecycle(StrEnum):
    """Whether an account is a current customer."""

    ACTIVE = "active"
    CHURNED = "churned"


class MigrationState(StrEnum):
    """Where an account stands in its move from the legacy product to the new one."""

    NOT_STARTED = "not_started"
    IN_PROGRESS = "in_progress"
    MIGRATED = "migrated"


class MigrationSource(StrEnum):
    """Which source set an account's migration state.

    Telemetry wins: once adoption telemetry has set an account's state, a customer import
    records the CRM's value beside it (``crm_migration_state``) and leaves the state alone.
    """

    CRM = "crm"  # the customer import (the CRM export)
    TELEMETRY = "telemetry"  # adoption telemetry (measured usage of the new product)


class ContactRole(StrEnum):
    """Which package a contact receives: the business case or the technical evidence."""

    EXECUTIVE = "executive"
    TECHNICAL = "technical"
    OTHER = "other"


class SuppressionReason(StrEnum):
    """Why an address must not be sent to."""

    UNSUBSCRIBE = "unsubscribe"
    BOUNCE = "bounce"
    SPAM_REPORT = "spam_report"
    MANUAL = "manual"


class DeliveryState(StrEnum):
    """The life of one ledger row; ``herald.delivery.ledger.move`` allows these moves only.

    planned -> sending (claimed) -> accepted (2xx) | failed (4xx: not retried) | unknown (may
               have been accepted: never re-sent until settled) | planned (never requested)
    planned -> suppressed (no longer eligible) | expired (a notice superseded before it went)
    unknown -> planned (re-send approved) | accepted (marked sent, or SendGrid's events)
    failed -> planned | accepted (settled by hand) | sending (a leadership report's rerun)
    """

    PLANNED = "planned"
    SENDING = "sending"
    ACCEPTED = "accepted"
    FAILED = "failed"
    SUPPRESSED = "suppressed"
    UNKNOWN = "unknown"
    EXPIRED = "expired"


class BatchState(StrEnum):
    """The life of one send batch (at most one provider request's worth of recipients).

    claimed -> requesting (the request is about to leave) -> accepted | failed | unknown
    claimed -> released (nothing left the process: its rows went back to planned) | failed
    """

    CLAIMED = "claimed"
    REQUESTING = "requesting"
    ACCEPTED = "accepted"
    FAILED = "failed"
    UNKNOWN = "unknown"
    RELEASED = "released"


# --------------------------------------------------------------------------- customers


# Whatever changes an account's or a contact's imported columns other than the customer
# import must set import_digest to NULL, or the next import may skip the row as unchanged.
IMPORT_DIGEST = (
    "Digest of the CSV line (with its header) that last wrote the row; the customer import "
    "skips a line whose digest this is. NULL: compared in full on the next import."
)


class Account(SQLModel, table=True):
    """A customer account, upserted from the CRM export by ``external_id``."""

    __table_args__ = (
        UniqueConstraint("external_id", name="uq_account_external_id"),
        # Audience selection: active accounts, optionally not yet migrated.
        Index("ix_account_lifecycle_migration", "lifecycle", "migration_state"),
    )

    id: int | None = Field(default=None, primary_key=True)
    external_id: str = Field(sa_type=String(100))
    name: str = Field(sa_type=String(300))
    tier: str = Field(sa_type=String(50))
    region: str = Field(sa_type=String(50))
    industry: str | None = Field(default=None, sa_type=String(100))
    lifecycle: AccountLifecycle = Field(
        default=AccountLifecycle.ACTIVE,
        sa_type=String(16),
    )
    migration_state: MigrationState = Field(
        default=MigrationState.NOT_STARTED,
        sa_type=String(16),
    )
    migrated_on: date | None = Field(default=None, sa_type=Date)
    migration_source: MigrationSource = Field(
        default=MigrationSource.CRM,
        sa_type=String(16),
        sa_column_kwargs={"server_default": MigrationSource.CRM.value},
        description="Which source set migration_state (telemetry wins over the CRM).",
    )
    crm_migration_state: MigrationState | None = Field(
        default=None, sa_type=String(16), description="What the last customer import said."
    )
    crm_migrated_on: date | None = Field(default=None, sa_type=Date)
    attributes: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    import_digest: int | None = Field(default=None, sa_type=BigInteger, description=IMPORT_DIGEST)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Contact(SQLModel, table=True):
    """A person at an account; the e-mail address is unique across Herald.

    ``email`` is the canonical form (:func:`herald.addresses.canonical_email`): lower-case
    ASCII, an internationalised domain as its A-label (``xn--``), which is what SendGrid
    takes and what its events report back.
    """

    __table_args__ = (
        UniqueConstraint("email", name="uq_contact_email"),
        Index("ix_contact_account_role", "account_id", "role"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    email: str = Field(sa_type=String(320))
    name: str | None = Field(default=None, sa_type=String(300))
    role: ContactRole = Field(default=ContactRole.OTHER, sa_type=String(16))
    timezone: str | None = Field(default=None, sa_type=String(64))
    locale: str = Field(default="en", sa_type=String(16))
    import_digest: int | None = Field(default=None, sa_type=BigInteger, description=IMPORT_DIGEST)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SegmentAssignment(SQLModel, table=True):
    """One account's segment and readiness as of a day; the rows over time are the history."""

    __tablename__ = "segment_assignment"
    __table_args__ = (
        UniqueConstraint("account_id", "as_of", name="uq_segment_assignment_account_as_of"),
        Index("ix_segment_assignment_as_of_segment", "as_of", "segment", "readiness"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    as_of: date = Field(sa_type=Date)
    segment: str = Field(sa_type=String(50))
    rule: str = Field(sa_type=String(100))
    readiness: str = Field(sa_type=String(50))
    readiness_rule: str = Field(sa_type=String(100))
    assigned_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class Suppression(SQLModel, table=True):
    """An address that must not receive mail, and why; checked before every send."""

    __table_args__ = (
        UniqueConstraint("email", "reason", name="uq_suppression_email_reason"),
        # A sender watches for ids above the highest it has seen: SQLite must never reuse
        # the id of a removed suppression (Postgres sequences never do).
        {"sqlite_autoincrement": True},
    )

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(sa_type=String(320))
    reason: SuppressionReason = Field(sa_type=String(16))
    source: str = Field(sa_type=String(100))
    detail: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


# --------------------------------------------------------------------------- delivery ledger


class Delivery(SQLModel, table=True):
    """The ledger: one row per (campaign, message, contact), planned before anything is sent.

    ``segment``, ``role`` and ``locale`` are the variant the contact was planned with, so a
    batch renders without re-reading the customer tables and a rerun sends the same message.
    """

    __table_args__ = (
        UniqueConstraint("campaign", "message", "contact_id", name="uq_delivery_key"),
        # Claims walk a phase's ids upwards from the sender's watermark. No index holds a
        # column a send changes (state, batch, provider id, times): on Postgres each claim's
        # and record's update then stays on its page (HOT, with the table's fillfactor) and
        # writes no index entry; a batch finds its rows by the id range its claim recorded
        # (``send_batch.first_row_id``/``last_row_id``, migration 0016).
        Index("ix_delivery_claim", "campaign", "message", "id"),
        Index("ix_delivery_contact", "contact_id"),
        # SQLite only: each message's planned rows (a partial index, emptied as they are
        # claimed), so that what looks for planned rows (claims, expiry, the eligibility
        # pass, the zones waiting) reads only those: a finished 1M phase's rerun finds none
        # at once instead of reading a million rows four times. SQLite uses it for a
        # condition written ``state = 'planned'`` in the statement (ledger.PLANNED), not a
        # bound parameter. Postgres has none: a send's updates would then change an
        # indexed column, and could no longer stay in place (migration 0016).
        Index(
            "ix_delivery_planned",
            "campaign",
            "message",
            "id",
            sqlite_where=text("state = 'planned'"),
        ).ddl_if(dialect="sqlite"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(sa_type=String(100))
    message: str = Field(sa_type=String(100))
    contact_id: int = Field(foreign_key="contact.id", ondelete="CASCADE")
    segment: str = Field(sa_type=String(50))
    role: str = Field(sa_type=String(16))
    locale: str = Field(sa_type=String(16))
    timezone: str | None = Field(
        default=None, sa_type=String(64), description="Where the recipient's send window is."
    )
    not_before: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), description="Not sent before (due)."
    )
    not_after: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), description="Expires (superseded)."
    )
    critical: bool = Field(default=False, description="Exempt from the frequency cap.")
    state: DeliveryState = Field(default=DeliveryState.PLANNED, sa_type=String(16))
    batch_id: str | None = Field(default=None, sa_type=String(36))
    provider_message_id: str | None = Field(default=None, sa_type=String(200))
    attempts: int = Field(default=0)
    error: str | None = Field(default=None, sa_type=Text)
    planned_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    claimed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    updated_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SendWorker(SQLModel, table=True):
    """One process sending one phase; its heartbeat tells a later run whether it is alive."""

    __tablename__ = "send_worker"
    __table_args__ = (
        Index("ix_send_worker_open", "campaign", "message", "finished_at"),
        Index("ix_send_worker_flow_run", "flow_run_id"),
    )

    id: str = Field(primary_key=True, sa_type=String(36))
    campaign: str = Field(sa_type=String(100))
    message: str = Field(sa_type=String(100))
    transport: str = Field(sa_type=String(20))
    host: str = Field(sa_type=String(255))
    pid: int
    started_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    heartbeat_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    outcome: str | None = Field(default=None, sa_type=String(200))
    # The Prefect flow run this sender works in (a phase's sender child run, or the phase's
    # own run): per-sender counts, and a crashed child run settles its sender at once.
    flow_run_id: str | None = Field(default=None, sa_type=String(36))


class SendBatch(SQLModel, table=True):
    """One claim of up to a request's worth of ledger rows, and what became of its request."""

    __tablename__ = "send_batch"
    __table_args__ = (
        Index("ix_send_batch_worker", "worker_id"),
        Index("ix_send_batch_campaign_message_state", "campaign", "message", "state"),
    )

    id: str = Field(primary_key=True, sa_type=String(36))
    worker_id: str = Field(foreign_key="send_worker.id", sa_type=String(36))
    campaign: str = Field(sa_type=String(100))
    message: str = Field(sa_type=String(100))
    state: BatchState = Field(default=BatchState.CLAIMED, sa_type=String(16))
    recipients: int = 0
    # The lowest and highest ledger (``delivery``) id the claim took: where the batch's rows
    # are found (the ledger has no index on ``batch_id``). None: anywhere (a report's batch,
    # or one claimed before migration 0016).
    first_row_id: int | None = None
    last_row_id: int | None = None
    requests: int = Field(default=0, description="HTTP requests made, retries included.")
    http_status: int | None = None
    provider_message_id: str | None = Field(default=None, sa_type=String(200))
    error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    finished_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class PhaseControl(SQLModel, table=True):
    """Whether a phase may send: paused (by an operator or the breaker) and why; approved."""

    __tablename__ = "phase_control"
    __table_args__ = (UniqueConstraint("campaign", "message", name="uq_phase_control_key"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(sa_type=String(100))
    message: str = Field(sa_type=String(100))
    paused: bool = False
    reason: str | None = Field(default=None, sa_type=Text)
    changed_by: str = Field(sa_type=String(200))
    changed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    approved_by: str | None = Field(default=None, sa_type=String(200))
    approved_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    approval_note: str | None = Field(default=None, sa_type=Text)


class PlanStamp(SQLModel, table=True):
    """What the last plan of a message planned: its statement's digest, the data version of
    the audience's inputs it read, and the audience it counted (``herald.delivery.stamps``).
    A rerun whose digest matches and whose inputs did not change since skips the plan."""

    __tablename__ = "plan_stamp"
    __table_args__ = (UniqueConstraint("campaign", "message", name="uq_plan_stamp_key"),)

    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(sa_type=String(100))
    message: str = Field(sa_type=String(100))
    digest: str = Field(sa_type=String(64), description="Of the plan's statement and parameters.")
    segmented_on: date = Field(sa_type=Date)
    data_version: str = Field(sa_type=Text, description="The inputs' version it read.")
    suppressed_through: int | None = Field(
        default=None, description="The highest suppression id its audience count reflects."
    )
    audience: list[Any] | None = Field(
        default=None, sa_type=JSONType, description="[segment, role, contacts] as counted."
    )
    planned_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class AudienceVersion(SQLModel, table=True):
    """SQLite's data version of the audience's inputs (one row): triggers bump ``version``
    on the first change after a plan cleared ``dirty``. Unused on Postgres."""

    __tablename__ = "audience_version"

    id: int | None = Field(default=None, primary_key=True)
    version: int = Field(sa_type=BigInteger)
    dirty: bool


class AudienceChange(SQLModel, table=True):
    """Postgres: a transaction that changed an audience's inputs (its id, recorded once by a
    statement trigger). Unused on SQLite."""

    __tablename__ = "audience_change"

    xid: int = Field(sa_column=Column(BigInteger, primary_key=True, autoincrement=False))
    at: datetime = Field(sa_type=DateTime(timezone=True))


# --------------------------------------------------------------------------- telemetry


class EmailEvent(SQLModel, table=True):
    """A SendGrid event (delivered, open, bounce, ...), stored once by ``sg_event_id``."""

    __tablename__ = "email_event"
    __table_args__ = (
        UniqueConstraint("sg_event_id", name="uq_email_event_sg_event_id"),
        Index("ix_email_event_delivery", "delivery_id"),
        Index("ix_email_event_email", "email"),
        Index("ix_email_event_event_time", "event", "occurred_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    sg_event_id: str = Field(sa_type=String(100))
    event: str = Field(sa_type=String(32))
    email: str = Field(sa_type=String(320))
    occurred_at: datetime = Field(sa_type=DateTime(timezone=True))
    delivery_id: int | None = Field(default=None, foreign_key="delivery.id", ondelete="SET NULL")
    sg_message_id: str | None = Field(default=None, sa_type=String(200))
    herald_key: str | None = Field(
        default=None, sa_type=String(300), description="custom_args.herald_key, if Herald's."
    )
    raw: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class DeliveryEventSummary(SQLModel, table=True):
    """Per delivery, when each kind of event the metrics count first happened to it.

    Kept by the database itself (triggers on ``email_event``, migration 0014), so that every
    writer counts: an insert keeps the earliest time per kind, an update or delete of an
    event works its delivery's row out again. The metrics read one row per delivery here
    instead of folding every event; "by the cutoff" is a comparison with these times.
    """

    __tablename__ = "delivery_event_summary"

    delivery_id: int = Field(
        sa_column=Column(
            Integer,
            ForeignKey("delivery.id", ondelete="CASCADE"),
            primary_key=True,
            autoincrement=False,
        )
    )
    delivered_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    opened_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    clicked_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    spam_reported_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    unsubscribed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    hard_bounced_at: datetime | None = Field(
        default=None,
        sa_type=DateTime(timezone=True),
        description="a bounce other than 'blocked' (which is temporary)",
    )


class WebhookBatch(SQLModel, table=True):
    """A verified Event Webhook POST, stored raw before the 2xx: processed after, never lost."""

    __tablename__ = "webhook_batch"
    __table_args__ = (Index("ix_webhook_batch_processed", "processed_at"),)

    id: int | None = Field(default=None, primary_key=True)
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    signed_at: datetime | None = Field(
        default=None, sa_type=DateTime(timezone=True), description="The signature's timestamp."
    )
    body: bytes = Field(sa_type=LargeBinary)
    events: int = 0
    processed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    error: str | None = Field(default=None, sa_type=Text)


class WebhookEventFailure(SQLModel, table=True):
    """One event of a stored webhook batch that could not be applied, kept with its error.

    The batch's other events take effect; this one waits here, listed by
    ``herald webhooks failures`` and applied again by ``herald webhooks retry`` after a fix.
    """

    __tablename__ = "webhook_event_failure"
    __table_args__ = (
        UniqueConstraint("batch_id", "position", name="uq_webhook_event_failure_key"),
        Index("ix_webhook_event_failure_open", "resolved_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    batch_id: int = Field(foreign_key="webhook_batch.id", ondelete="CASCADE")
    position: int = Field(description="The event's index in its batch (0-based).")
    sg_event_id: str | None = Field(default=None, sa_type=String(100))
    event: str | None = Field(default=None, sa_type=String(32))
    raw: str = Field(sa_type=Text, description="The event as ASCII JSON (NUL escaped).")
    error: str = Field(sa_type=Text)
    attempts: int = 1
    failed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    resolved_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class TelemetryBatch(SQLModel, table=True):
    """One file of a batch source and what its data contract said of it."""

    __tablename__ = "telemetry_batch"
    __table_args__ = (Index("ix_telemetry_batch_source_received", "source", "received_at"),)

    id: str = Field(primary_key=True, sa_type=String(36))
    source: str = Field(sa_type=String(50))
    file: str = Field(sa_type=String(1000))
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    status: str = Field(sa_type=String(16), description="loaded or rejected.")
    rows: int = 0
    loaded: int = 0
    quarantined: int = 0
    failed_check: str | None = Field(default=None, sa_type=String(200))
    failed_column: str | None = Field(default=None, sa_type=String(200))
    detail: str | None = Field(default=None, sa_type=Text)
    data_docs: str | None = Field(default=None, sa_type=String(1000))


class AdoptionEvent(SQLModel, table=True):
    """An account's observed adoption of the new product on a day."""

    __tablename__ = "adoption_event"
    __table_args__ = (
        UniqueConstraint("account_id", "observed_on", name="uq_adoption_event_account_day"),
        Index("ix_adoption_event_observed_on", "observed_on"),
    )

    id: int | None = Field(default=None, primary_key=True)
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    observed_on: date = Field(sa_type=Date)
    adoption_pct: float = Field(
        description="Share of the account's usage on the new product, 0-100."
    )
    batch_id: str | None = Field(default=None, sa_type=String(100))
    received_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class SupportTicket(SQLModel, table=True):
    """A support ticket from the helpdesk export, upserted by its ticket id."""

    __tablename__ = "support_ticket"
    __table_args__ = (
        UniqueConstraint("ticket_id", name="uq_support_ticket_ticket_id"),
        Index("ix_support_ticket_account", "account_id"),
        Index("ix_support_ticket_opened_at", "opened_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    ticket_id: str = Field(sa_type=String(100))
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    opened_at: datetime = Field(sa_type=DateTime(timezone=True))
    closed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    category: str = Field(sa_type=String(100))
    satisfaction: int | None = Field(default=None, description="Ticket CSAT, 1-5.")
    batch_id: str | None = Field(default=None, sa_type=String(100))


class SatisfactionResponse(SQLModel, table=True):
    """A satisfaction survey answer from a contact of an account."""

    __tablename__ = "satisfaction_response"
    __table_args__ = (
        UniqueConstraint("response_id", name="uq_satisfaction_response_response_id"),
        Index("ix_satisfaction_response_account", "account_id"),
        Index("ix_satisfaction_response_responded_at", "responded_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    response_id: str = Field(sa_type=String(100))
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    contact_id: int | None = Field(default=None, foreign_key="contact.id", ondelete="SET NULL")
    responded_at: datetime = Field(sa_type=DateTime(timezone=True))
    csat: int = Field(description="1-5.")
    performance_improved: bool | None = None
    comment: str | None = Field(default=None, sa_type=Text)
    batch_id: str | None = Field(default=None, sa_type=String(100))


class PerformanceReport(SQLModel, table=True):
    """A customer's own legacy-vs-new benchmark, as they reported it."""

    __tablename__ = "performance_report"
    __table_args__ = (
        UniqueConstraint("report_id", name="uq_performance_report_report_id"),
        Index("ix_performance_report_account", "account_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    report_id: str = Field(sa_type=String(100))
    account_id: int = Field(foreign_key="account.id", ondelete="CASCADE")
    reported_at: datetime = Field(sa_type=DateTime(timezone=True))
    legacy_import_ms: float
    new_import_ms: float
    legacy_memory_mb: float
    new_memory_mb: float
    batch_id: str | None = Field(default=None, sa_type=String(100))


class Quarantine(SQLModel, table=True):
    """A telemetry row that failed a data contract, kept raw with the check it failed."""

    __table_args__ = (Index("ix_quarantine_source_batch", "source", "batch_id"),)

    id: int | None = Field(default=None, primary_key=True)
    source: str = Field(sa_type=String(50))
    batch_id: str | None = Field(default=None, sa_type=String(100))
    line: int | None = None
    raw: str = Field(sa_type=Text)
    failed_check: str = Field(sa_type=String(200))
    detail: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class MetricSnapshot(SQLModel, table=True):
    """A success metric's value as of a day, per segment ('all' for overall), beside its target."""

    __tablename__ = "metric_snapshot"
    __table_args__ = (
        UniqueConstraint("as_of", "metric", "segment", name="uq_metric_snapshot_key"),
    )

    id: int | None = Field(default=None, primary_key=True)
    as_of: date = Field(sa_type=Date)
    metric: str = Field(sa_type=String(100))
    segment: str = Field(default="all", sa_type=String(50))
    value: float | None = None
    target: float | None = None
    computed_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))


class ReportDelivery(SQLModel, table=True):
    """One leadership recipient of one report, so a report is sent to each address once
    however often its flow runs. Its rows take the same states as the delivery ledger's and
    go through the same batches (``send_batch``), claims and recovery."""

    __tablename__ = "report_delivery"
    __table_args__ = (
        UniqueConstraint("campaign", "report", "email", name="uq_report_delivery_key"),
        Index("ix_report_delivery_batch", "batch_id"),
    )

    id: int | None = Field(default=None, primary_key=True)
    campaign: str = Field(sa_type=String(100))
    report: str = Field(sa_type=String(100), description="e.g. weekly-2027-03-01")
    email: str = Field(sa_type=String(320))
    state: DeliveryState = Field(default=DeliveryState.PLANNED, sa_type=String(16))
    path: str | None = Field(default=None, sa_type=Text, description="The saved report.")
    batch_id: str | None = Field(default=None, sa_type=String(36))
    provider_message_id: str | None = Field(default=None, sa_type=String(200))
    attempts: int = Field(default=0, sa_column_kwargs={"server_default": "0"})
    error: str | None = Field(default=None, sa_type=Text)
    planned_at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    claimed_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    sent_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))
    updated_at: datetime | None = Field(default=None, sa_type=DateTime(timezone=True))


class AuditLog(SQLModel, table=True):
    """Who did what, when, to which campaign and phase."""

    __tablename__ = "audit_log"
    __table_args__ = (
        Index("ix_audit_log_campaign_phase", "campaign", "phase"),
        Index("ix_audit_log_at", "at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    at: datetime = Field(default_factory=utcnow, sa_type=DateTime(timezone=True))
    actor: str = Field(sa_type=String(200))
    action: str = Field(sa_type=String(100))
    campaign: str | None = Field(default=None, sa_type=String(100))
    phase: str | None = Field(default=None, sa_type=String(100))
    detail: dict[str, Any] = Field(default_factory=dict, sa_type=JSONType)


metadata = SQLModel.metadata

# Indexes the schema has on SQLite only (made with ``ddl_if``, which Alembic's comparison
# does not read): see :func:`in_schema`.
SQLITE_ONLY_INDEXES: Final = frozenset({"ix_delivery_planned"})


def in_schema(dialect: str) -> Any:
    """Alembic's ``include_object`` for a database of ``dialect``: every object of the
    metadata but the indexes it does not have there (:data:`SQLITE_ONLY_INDEXES`)."""

    def include(item: Any, name: str | None, kind: str, reflected: bool, compare_to: Any) -> bool:
        del item, reflected, compare_to
        return not (kind == "index" and dialect != "sqlite" and name in SQLITE_ONLY_INDEXES)

    return include


def table(model: type[SQLModel]) -> Table:
    """The Core table of a SQLModel class, for set-based statements."""
    core: Table = model.__table__  # type: ignore[attr-defined]
    return core


# One Core handle per table, for set-based statements; every module uses these names.
ACCOUNT: Final = table(Account)
CONTACT: Final = table(Contact)
SEGMENT_ASSIGNMENT: Final = table(SegmentAssignment)
SUPPRESSION: Final = table(Suppression)
DELIVERY: Final = table(Delivery)
SEND_WORKER: Final = table(SendWorker)
SEND_BATCH: Final = table(SendBatch)
PHASE_CONTROL: Final = table(PhaseControl)
PLAN_STAMP: Final = table(PlanStamp)
AUDIENCE_VERSION: Final = table(AudienceVersion)
AUDIENCE_CHANGE: Final = table(AudienceChange)
EMAIL_EVENT: Final = table(EmailEvent)
DELIVERY_EVENT_SUMMARY: Final = table(DeliveryEventSummary)
WEBHOOK_BATCH: Final = table(WebhookBatch)
WEBHOOK_EVENT_FAILURE: Final = table(WebhookEventFailure)
TELEMETRY_BATCH: Final = table(TelemetryBatch)
ADOPTION_EVENT: Final = table(AdoptionEvent)
SUPPORT_TICKET: Final = table(SupportTicket)
SATISFACTION_RESPONSE: Final = table(SatisfactionResponse)
PERFORMANCE_REPORT: Final = table(PerformanceReport)
QUARANTINE: Final = table(Quarantine)
METRIC_SNAPSHOT: Final = table(MetricSnapshot)
REPORT_DELIVERY: Final = table(ReportDelivery)
AUDIT_LOG: Final = table(AuditLog)
