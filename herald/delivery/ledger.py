"""The delivery ledger: plan in bulk, claim in batches, record outcomes, recover after a crash.

Exactly once rests on three rules, each enforced in the database:

1. *Plan before sending.* A phase's audience is inserted as ``planned`` rows in one
   INSERT ... SELECT ... ON CONFLICT DO NOTHING on the unique key (campaign, message,
   contact): a rerun adds nothing, and nothing is sent that is not in the ledger.
2. *Claim before requesting.* A batch claims up to a request's worth of planned rows
   (``sending``, with its batch id) in one statement; on Postgres the candidate rows are
   locked with SKIP LOCKED, so two workers never claim the same row. The batch is marked
   ``requesting`` and committed *before* the request leaves the process.
3. *Never guess.* When a worker dies, its batches that never reached ``requesting`` go
   back to ``planned`` (nothing left the process); those that did become ``unknown``: the
   provider may have accepted them, so they are not re-sent until an operator or SendGrid's
   events settle them (``herald deliveries resolve``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, datetime, timedelta
from typing import Any, Literal, cast

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    and_,
    bindparam,
    delete,
    exists,
    func,
    insert,
    literal,
    or_,
    select,
    true,
    update,
)

from herald import audit
from herald.config import DEADLINE_EXTENDED, THANK_YOU, HeraldConfig, MessageKind, PhaseName
from herald.db import dialect_insert
from herald.delivery.audience import (
    audience,
    extended_audience,
    segmentation_day,
    thank_you_audience,
)
from herald.delivery.calendar import (
    THANK_YOU_MESSAGE,
    Notice,
    due_notices,
    extended_message,
    is_notice,
    notice_deadline,
    start_of,
)
from herald.models import (
    ACCOUNT,
    CONTACT,
    DELIVERY,
    EMAIL_EVENT,
    PHASE_CONTROL,
    REPORT_DELIVERY,
    SEND_BATCH,
    SEND_WORKER,
    SUPPRESSION,
    AccountLifecycle,
    BatchState,
    DeliveryState,
    MigrationState,
    utcnow,
)

# The tables whose rows a batch claims: customer messages and the leadership report's.
# Both go through the same batches, states and recovery.
BATCH_ROWS = (DELIVERY, REPORT_DELIVERY)

BULK_PLAN_ROWS = 10_000  # a plan this large refreshes the planner's statistics (Postgres)
SETTLED_BY_EVENTS = "settled: SendGrid reported an event for it"


def _phase_rows(campaign: str, message: str) -> Any:
    return and_(DELIVERY.c.campaign == campaign, DELIVERY.c.message == message)


# --------------------------------------------------------------------------- planning


@dataclass(frozen=True)
class PlanResult:
    """What planning added: new ledger rows, and the segmentation they were chosen from."""

    planned: int
    segmented_on: date


def plan(
    engine: Engine,
    config: HeraldConfig,
    phase: PhaseName,
    as_of: date,
    *,
    message: str | None = None,
    segments: list[str] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    critical: bool = False,
) -> PlanResult:
    """Insert the audience as planned rows; rows already in the ledger stay as they are.

    ``message`` is the ledger's name for it (default: the phase; a notice: ``sunset-t30``);
    ``segments`` narrows the phase's segments; ``not_before`` / ``not_after`` bound when it
    may go (a notice is due on a day and superseded by the next one); ``critical`` exempts
    it from the frequency cap.
    """
    with engine.begin() as conn:
        day = segmentation_day(conn, as_of)
        source = audience(config, phase, day, segments=segments).subquery()
        added = _insert_planned(
            conn,
            config.campaign.id,
            message or phase,
            source,
            not_before=not_before,
            not_after=not_after,
            critical=critical,
        )
    return PlanResult(planned=max(added, 0), segmented_on=day)


def _insert_planned(
    conn: Connection,
    campaign: str,
    message: str,
    source: Any,
    *,
    not_before: datetime | None,
    not_after: datetime | None,
    critical: bool,
) -> int:
    """INSERT ... SELECT the rows of ``source`` (contact_id, segment, role, locale, timezone)
    as planned; a row already in the ledger stays as it is. Returns the rows added."""
    now = utcnow()
    moment = DateTime(timezone=True)
    rows = select(
        literal(campaign, String),
        literal(message, String),
        source.c.contact_id,
        source.c.segment,
        source.c.role,
        source.c.locale,
        source.c.timezone,
        literal(not_before, moment),
        literal(not_after, moment),
        literal(critical, Boolean),
        literal(DeliveryState.PLANNED.value, String),
        literal(0, Integer),
        literal(now, moment),
        literal(now, moment),
    ).where(true())  # SQLite reads "... ON CONFLICT" after a join as a join constraint
    statement = (
        dialect_insert(conn.dialect.name)(DELIVERY)
        .from_select(
            [
                "campaign",
                "message",
                "contact_id",
                "segment",
                "role",
                "locale",
                "timezone",
                "not_before",
                "not_after",
                "critical",
                "state",
                "attempts",
                "planned_at",
                "updated_at",
            ],
            rows,
        )
        .on_conflict_do_nothing(index_elements=["campaign", "message", "contact_id"])
        # SQLAlchemy keeps an INSERT's rowcount only when asked.
        .execution_options(preserve_rowcount=True)
    )
    added = max(conn.execute(statement).rowcount, 0)
    if added >= BULK_PLAN_ROWS and conn.dialect.name == "postgresql":
        # Fresh statistics before the claims: with the table's old ones (say, empty) the
        # planner joins every claim against whole tables (measured: 0.6 s per claim at 1M).
        conn.exec_driver_sql("ANALYZE delivery")
    return added


def plan_thank_you(engine: Engine, config: HeraldConfig, as_of: date) -> int:
    """Plan one thank-you for each contact who was mailed by the campaign and whose account
    has migrated by ``as_of`` (active, not suppressed). Returns the rows added."""
    with engine.begin() as conn:
        day = segmentation_day(conn, as_of)
        source = thank_you_audience(config, day, as_of, DELIVERY.alias("earlier")).subquery()
        return _insert_planned(
            conn,
            config.campaign.id,
            THANK_YOU_MESSAGE,
            source,
            not_before=None,
            not_after=None,
            critical=False,
        )


def plan_notices(engine: Engine, config: HeraldConfig, as_of: date) -> list[tuple[Notice, int]]:
    """Plan every sunset notice due and not yet superseded as of ``as_of`` (a missed one is
    caught up here), each for its segment, bounded by its validity; rows added per notice."""
    critical = set(config.campaign.notices.critical_offsets)
    return [
        (
            notice,
            plan(
                engine,
                config,
                "sunset",
                as_of,
                message=notice.message,
                segments=[notice.segment],
                not_before=start_of(notice.due),
                not_after=start_of(notice.until),
                critical=notice.offset in critical,
            ).planned,
        )
        for notice in due_notices(config.campaign, as_of)
    ]


@dataclass(frozen=True)
class Rescheduled:
    """What following the configured deadlines changed: notices for a deadline that is no
    longer the segment's expired unsent; "deadline extended" messages planned, per message."""

    expired: int
    extended: dict[str, int]


def follow_deadlines(engine: Engine, config: HeraldConfig, as_of: date) -> Rescheduled:
    """Bring the ledger in line with each segment's sunset date in config.

    A notice still planned for another deadline than its segment's current one expires (its
    dates no longer hold; the notices of the new deadline are planned on their own days).
    Where ``notices.deadline_extended`` is on and the new deadline is later than one a
    contact was already sent a notice for, that contact gets ``deadline-extended@<date>``
    once, up to the new deadline. Run before planning and sending notices.
    """
    campaign = config.campaign
    now = utcnow()
    name = DELIVERY.c.message
    with engine.begin() as conn:
        expired = 0
        for segment, deadline in campaign.sunset.items():
            expired += conn.execute(
                update(DELIVERY)
                .where(
                    DELIVERY.c.campaign == campaign.id,
                    DELIVERY.c.segment == segment,
                    DELIVERY.c.state == DeliveryState.PLANNED.value,
                    is_notice(name),
                    notice_deadline(name) != deadline.isoformat(),
                )
                .values(
                    state=DeliveryState.EXPIRED.value,
                    error=f"expired: the {segment} deadline moved to {deadline.isoformat()}",
                    updated_at=now,
                )
            ).rowcount
        extended: dict[str, int] = {}
        if campaign.notices.deadline_extended:
            day = segmentation_day(conn, as_of)
            for segment, deadline in campaign.sunset.items():
                if as_of >= deadline:
                    continue
                source = extended_audience(
                    config, day, segment, DELIVERY.alias("earlier")
                ).subquery()
                message = extended_message(deadline)
                extended[message] = extended.get(message, 0) + _insert_planned(
                    conn,
                    campaign.id,
                    message,
                    source,
                    not_before=None,
                    not_after=start_of(deadline),
                    critical=False,
                )
    return Rescheduled(expired=expired, extended=extended)


def planned_rows(conn: Connection, campaign: str) -> dict[str, int]:
    """Rows still planned, per message, in message order."""
    rows = conn.execute(
        select(DELIVERY.c.message, func.count())
        .where(
            DELIVERY.c.campaign == campaign,
            DELIVERY.c.state == DeliveryState.PLANNED.value,
        )
        .group_by(DELIVERY.c.message)
        .order_by(DELIVERY.c.message)
    )
    return {str(message): int(count) for message, count in rows}


def accepted_rows(conn: Connection, campaign: str) -> dict[str, int]:
    """Rows sent (accepted), per message, in the order the messages first went."""
    rows = conn.execute(
        select(DELIVERY.c.message, func.count())
        .where(
            DELIVERY.c.campaign == campaign,
            DELIVERY.c.state == DeliveryState.ACCEPTED.value,
        )
        .group_by(DELIVERY.c.message)
        .order_by(func.min(DELIVERY.c.sent_at), DELIVERY.c.message)
    )
    return {str(message): int(count) for message, count in rows}


def expire(engine: Engine, campaign: str, message: str, now: datetime) -> int:
    """Planned rows past their ``not_after`` (a later notice superseded them) expire."""
    with engine.begin() as conn:
        return conn.execute(
            update(DELIVERY)
            .where(
                _phase_rows(campaign, message),
                DELIVERY.c.state == DeliveryState.PLANNED.value,
                DELIVERY.c.not_after.isnot(None),
                DELIVERY.c.not_after <= now,
            )
            .values(
                state=DeliveryState.EXPIRED.value,
                error="expired: superseded before it could be sent",
                updated_at=now,
            )
        ).rowcount


def waiting_zones(conn: Connection, campaign: str, message: str) -> list[str]:
    """The recipients' time zones among the phase's planned rows."""
    return [
        zone_name or ""
        for zone_name in conn.execute(
            select(DELIVERY.c.timezone)
            .where(
                _phase_rows(campaign, message),
                DELIVERY.c.state == DeliveryState.PLANNED.value,
            )
            .distinct()
        ).scalars()
    ]


def suppress_ineligible(
    engine: Engine, config: HeraldConfig, phase: MessageKind, message: str | None = None
) -> dict[str, int]:
    """Mark planned rows that may no longer be sent as ``suppressed``, with the reason.

    Run before every send: an address unsubscribed, bounced or reported spam since
    planning, an account that churned, or (where the phase says so) one that migrated.
    """
    campaign = config.campaign.id
    planned = and_(
        _phase_rows(campaign, message or phase),
        DELIVERY.c.state == DeliveryState.PLANNED.value,
    )
    suppressed_reason = (
        select(func.min(SUPPRESSION.c.reason))
        .where(
            CONTACT.c.id == DELIVERY.c.contact_id,
            SUPPRESSION.c.email == CONTACT.c.email,
        )
        .correlate(DELIVERY)
        .scalar_subquery()
    )

    def account_is(condition: Any) -> Any:
        return (
            exists()
            .where(
                CONTACT.c.id == DELIVERY.c.contact_id,
                ACCOUNT.c.id == CONTACT.c.account_id,
                condition,
            )
            .correlate(DELIVERY)
        )

    checks: list[tuple[str, Any, Any]] = [
        (
            "address suppressed",
            exists()
            .where(
                CONTACT.c.id == DELIVERY.c.contact_id,
                SUPPRESSION.c.email == CONTACT.c.email,
            )
            .correlate(DELIVERY),
            literal("address suppressed: ") + suppressed_reason,
        ),
        (
            "account churned",
            account_is(ACCOUNT.c.lifecycle != AccountLifecycle.ACTIVE.value),
            literal("account churned"),
        ),
    ]
    # A thank-you goes to migrated accounts; a phase skips them where its audience says so.
    audience_of = "sunset" if phase == DEADLINE_EXTENDED else phase
    exclude_migrated = (
        phase != THANK_YOU
        and config.campaign.audiences[cast(PhaseName, audience_of)].exclude_migrated
    )
    if exclude_migrated:
        checks.append(
            (
                "account migrated",
                account_is(ACCOUNT.c.migration_state == MigrationState.MIGRATED.value),
                literal("account migrated"),
            )
        )
    counts: dict[str, int] = {}
    now = utcnow()
    with engine.begin() as conn:
        for name, condition, error in checks:
            result = conn.execute(
                update(DELIVERY)
                .where(planned, condition)
                .values(state=DeliveryState.SUPPRESSED.value, error=error, updated_at=now)
            )
            if result.rowcount:
                counts[name] = result.rowcount
    return counts


# --------------------------------------------------------------------------- workers


@dataclass(frozen=True)
class Worker:
    """This process, sending one phase."""

    id: str
    campaign: str
    message: str


def start_worker(engine: Engine, campaign: str, message: str, transport: str) -> Worker:
    """Register this process as a sender of the phase."""
    worker = Worker(str(uuid.uuid4()), campaign, message)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(SEND_WORKER).values(
                id=worker.id,
                campaign=campaign,
                message=message,
                transport=transport,
                host=socket.gethostname(),
                pid=os.getpid(),
                started_at=now,
                heartbeat_at=now,
            )
        )
    return worker


def finish_worker(engine: Engine, worker: Worker, outcome: str) -> None:
    """Mark this process's sending finished (cleanly or not: ``outcome`` says which).

    Batches it leaves open (stopped by an interrupt between claim and answer) are settled as
    a recovery would: never requested, back to planned; requested, unknown."""
    with engine.begin() as conn:
        _settle_worker(conn, worker.id, outcome)


def _settle_worker(conn: Connection, worker_id: str, outcome: str) -> tuple[int, int]:
    """Settle a stopped sender's open batches and mark it finished; (released, unknown).

    Rows of a batch that never reached ``requesting`` go back to planned (nothing left the
    process); rows of one that did become unknown (the provider may have accepted them),
    unless SendGrid already reported an event for them."""
    now = utcnow()
    claimed = select(SEND_BATCH.c.id).where(
        SEND_BATCH.c.worker_id == worker_id, SEND_BATCH.c.state == BatchState.CLAIMED.value
    )
    requesting = select(SEND_BATCH.c.id).where(
        SEND_BATCH.c.worker_id == worker_id, SEND_BATCH.c.state == BatchState.REQUESTING.value
    )
    released = unknown = 0
    for rows in BATCH_ROWS:
        released += conn.execute(
            update(rows)
            .where(rows.c.batch_id.in_(claimed), rows.c.state == DeliveryState.SENDING.value)
            .values(state=DeliveryState.PLANNED.value, batch_id=None, updated_at=now)
        ).rowcount
        unknown += conn.execute(
            update(rows)
            .where(rows.c.batch_id.in_(requesting), rows.c.state == DeliveryState.SENDING.value)
            .values(
                state=DeliveryState.UNKNOWN.value,
                error=f"request in flight when sender {worker_id} stopped",
                updated_at=now,
            )
        ).rowcount
    unknown -= settle_proven(conn, DELIVERY.c.batch_id.in_(requesting))
    conn.execute(
        update(SEND_BATCH)
        .where(SEND_BATCH.c.worker_id == worker_id, SEND_BATCH.c.state == BatchState.CLAIMED.value)
        .values(state=BatchState.RELEASED.value, finished_at=now)
    )
    conn.execute(
        update(SEND_BATCH)
        .where(
            SEND_BATCH.c.worker_id == worker_id, SEND_BATCH.c.state == BatchState.REQUESTING.value
        )
        .values(state=BatchState.UNKNOWN.value, finished_at=now)
    )
    conn.execute(
        update(SEND_WORKER)
        .where(SEND_WORKER.c.id == worker_id, SEND_WORKER.c.finished_at.is_(None))
        .values(finished_at=now, outcome=outcome[:200])
    )
    return released, unknown


def _alive(host: str, pid: int, heartbeat_at: datetime, lease: timedelta) -> bool:
    if host == socket.gethostname():
        if pid == os.getpid():
            return False  # an earlier process with our pid: it is gone
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return utcnow() - _aware(heartbeat_at) < lease


def _aware(value: datetime) -> datetime:
    from datetime import UTC

    return value if value.tzinfo else value.replace(tzinfo=UTC)


@dataclass(frozen=True)
class Recovery:
    """What was found of senders that died: rows put back, rows now unknown."""

    workers: int
    released: int
    unknown: int


def recover(
    engine: Engine, campaign: str, message: str, lease_seconds: float, by: Worker | None = None
) -> Recovery:
    """Settle the batches of senders of this phase that died without finishing."""
    lease = timedelta(seconds=lease_seconds)
    with engine.connect() as conn:
        open_workers = conn.execute(
            select(
                SEND_WORKER.c.id, SEND_WORKER.c.host, SEND_WORKER.c.pid, SEND_WORKER.c.heartbeat_at
            ).where(
                SEND_WORKER.c.campaign == campaign,
                SEND_WORKER.c.message == message,
                SEND_WORKER.c.finished_at.is_(None),
            )
        ).all()
    dead = [
        row.id
        for row in open_workers
        if (by is None or row.id != by.id)
        and not _alive(row.host, row.pid, row.heartbeat_at, lease)
    ]
    released = unknown = 0
    for worker_id in dead:
        with engine.begin() as conn:
            back, lost = _settle_worker(
                conn, worker_id, f"lost: found dead by {by.id if by else 'an operator'}"
            )
        released += back
        unknown += lost
    if dead:
        with engine.begin() as conn:
            audit.record(
                conn,
                "sender.recovered",
                campaign=campaign,
                phase=message,
                detail={"workers": dead, "released": released, "unknown": unknown},
            )
    return Recovery(workers=len(dead), released=released, unknown=unknown)


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class ClaimedRow:
    """One claimed ledger row with what rendering and sending need."""

    delivery_id: int
    contact_id: int
    segment: str
    role: str
    locale: str
    email: str
    name: str | None
    account_name: str


@dataclass(frozen=True)
class Claim:
    """A batch of claimed rows (``sending``), owned by one worker."""

    batch_id: str
    rows: list[ClaimedRow]


@dataclass(frozen=True)
class Gate:
    """What a claim may take now: due rows, in open time zones, within the frequency cap."""

    now: datetime
    zones: list[str] | None = None  # None: every zone (no delivery window applies)
    cap_messages: int | None = None
    cap_days: int = 7


def claim(
    engine: Engine, worker: Worker, limit: int, gate: Gate | None = None, after: int = 0
) -> Claim | None:
    """Claim up to ``limit`` planned rows of the worker's phase, lowest ids first; None if none.

    ``after``: only rows with a higher id (a sender's watermark: it need not walk again past
    the rows it already sent, which Postgres keeps as dead index entries until a vacuum)."""
    batch_id = str(uuid.uuid4())
    now = gate.now if gate else utcnow()
    with engine.begin() as conn:
        conn.execute(
            update(SEND_WORKER).where(SEND_WORKER.c.id == worker.id).values(heartbeat_at=now)
        )
        open_batch(conn, batch_id, worker, now)
        candidates = (
            select(DELIVERY.c.id)
            .where(
                _phase_rows(worker.campaign, worker.message),
                DELIVERY.c.state == DeliveryState.PLANNED.value,
                DELIVERY.c.id > after,
                *_gated(gate),
            )
            .order_by(DELIVERY.c.id)
            .limit(limit)
        )
        if conn.dialect.name == "postgresql":
            # Lock the candidates first, skipping rows another worker holds. (Inside
            # "IN (subquery)" Postgres may re-run a SKIP LOCKED subquery per row and claim
            # more than the limit.)
            ids: Any = list(conn.execute(candidates.with_for_update(skip_locked=True)).scalars())
        else:
            ids = candidates.scalar_subquery()  # one statement under SQLite's single writer
        claimed = conn.execute(
            update(DELIVERY)
            .where(
                DELIVERY.c.id.in_(ids),
                DELIVERY.c.state == DeliveryState.PLANNED.value,
            )
            .values(**claim_values(DELIVERY, batch_id, now))
        ).rowcount
        if not claimed:
            conn.execute(delete(SEND_BATCH).where(SEND_BATCH.c.id == batch_id))
            return None
        conn.execute(
            update(SEND_BATCH).where(SEND_BATCH.c.id == batch_id).values(recipients=claimed)
        )
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                DELIVERY.c.id,
                DELIVERY.c.contact_id,
                DELIVERY.c.segment,
                DELIVERY.c.role,
                DELIVERY.c.locale,
                CONTACT.c.email,
                CONTACT.c.name,
                ACCOUNT.c.name,
            )
            .select_from(DELIVERY)
            .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
            .where(DELIVERY.c.batch_id == batch_id)
            .order_by(DELIVERY.c.id)
        ).all()
    return Claim(batch_id, [ClaimedRow(*row) for row in rows])


def open_batch(
    conn: Connection, batch_id: str, worker: Worker, now: datetime, recipients: int = 0
) -> None:
    """Record a new claim of ``worker`` (``claimed``), in the transaction that takes its rows."""
    conn.execute(
        insert(SEND_BATCH).values(
            id=batch_id,
            worker_id=worker.id,
            campaign=worker.campaign,
            message=worker.message,
            state=BatchState.CLAIMED.value,
            recipients=recipients,
            requests=0,
            created_at=now,
        )
    )


def claim_values(rows: Any, batch_id: str, now: datetime) -> dict[str, Any]:
    """What a claim sets on a row of ``rows`` (a table of :data:`BATCH_ROWS`): sending, in
    this batch, one more attempt."""
    return {
        "state": DeliveryState.SENDING.value,
        "batch_id": batch_id,
        "claimed_at": now,
        "attempts": rows.c.attempts + 1,
        "updated_at": now,
    }


def _gated(gate: Gate | None) -> list[Any]:
    if gate is None:
        return []
    conditions: list[Any] = [
        or_(DELIVERY.c.not_before.is_(None), DELIVERY.c.not_before <= gate.now),
        or_(DELIVERY.c.not_after.is_(None), DELIVERY.c.not_after > gate.now),
    ]
    if gate.zones is not None:
        conditions.append(DELIVERY.c.timezone.in_(gate.zones))
    if gate.cap_messages is not None:
        earlier = DELIVERY.alias("earlier")
        recent = (
            select(func.count())
            .where(
                earlier.c.contact_id == DELIVERY.c.contact_id,
                earlier.c.state == DeliveryState.ACCEPTED.value,
                earlier.c.sent_at > gate.now - timedelta(days=gate.cap_days),
            )
            .correlate(DELIVERY)
            .scalar_subquery()
        )
        conditions.append(or_(DELIVERY.c.critical.is_(True), recent < gate.cap_messages))
    return conditions


def mark_requesting(engine: Engine, batch_id: str) -> None:
    """Commit that the batch's request is about to leave: from now on a crash means unknown."""
    with engine.begin() as conn:
        conn.execute(
            update(SEND_BATCH)
            .where(SEND_BATCH.c.id == batch_id)
            .values(state=BatchState.REQUESTING.value)
        )


def release(engine: Engine, batch_id: str, reason: str) -> None:
    """Put a claimed batch's rows back to planned (nothing was requested)."""
    now = utcnow()
    with engine.begin() as conn:
        for rows in BATCH_ROWS:
            conn.execute(
                update(rows)
                .where(rows.c.batch_id == batch_id, rows.c.state == DeliveryState.SENDING.value)
                .values(state=DeliveryState.PLANNED.value, batch_id=None, updated_at=now)
            )
        conn.execute(
            update(SEND_BATCH)
            .where(SEND_BATCH.c.id == batch_id)
            .values(state=BatchState.RELEASED.value, error=reason, finished_at=now)
        )


def refuse(engine: Engine, batch_id: str, refused: dict[int, str]) -> int:
    """Rows of a claimed batch that its transport refused (a value it cannot put in a
    header): ``failed``, each with its reason, before the request leaves. Returns how many."""
    if not refused:
        return 0
    now = utcnow()
    params = [{"row_id": row_id, "reason": reason[:2000]} for row_id, reason in refused.items()]
    count = 0
    with engine.begin() as conn:
        for rows in BATCH_ROWS:
            count += max(
                conn.execute(
                    update(rows)
                    .where(
                        rows.c.id == bindparam("row_id"),
                        rows.c.batch_id == batch_id,
                        rows.c.state == DeliveryState.SENDING.value,
                    )
                    .values(
                        state=DeliveryState.FAILED.value,
                        error=bindparam("reason"),
                        updated_at=now,
                    )
                    .execution_options(preserve_rowcount=True),
                    params,
                ).rowcount,
                0,
            )
    return count


Outcome = Literal["accepted", "failed", "unknown"]


def record(
    engine: Engine,
    batch_id: str,
    outcome: Outcome,
    *,
    requests: int,
    http_status: int | None = None,
    provider_message_id: str | None = None,
    error: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record what became of a batch's request, on the batch and on every one of its rows."""
    now = at or utcnow()
    values: dict[str, Any] = {"state": outcome, "error": error, "updated_at": now}
    if outcome == "accepted":
        values.update(provider_message_id=provider_message_id, sent_at=now)
    with engine.begin() as conn:
        for rows in BATCH_ROWS:
            conn.execute(
                update(rows)
                .where(rows.c.batch_id == batch_id, rows.c.state == DeliveryState.SENDING.value)
                .values(**values)
            )
        if outcome == "unknown":
            settle_proven(conn, DELIVERY.c.batch_id == batch_id)
        conn.execute(
            update(SEND_BATCH)
            .where(SEND_BATCH.c.id == batch_id)
            .values(
                state=outcome,
                requests=requests,
                http_status=http_status,
                provider_message_id=provider_message_id,
                error=error,
                finished_at=now,
            )
        )


def settle_proven(conn: Connection, *where: Any) -> int:
    """Unknown rows (among ``where``) that SendGrid already reported an event for were
    accepted: mark them so. Events can arrive before the request's answer, or before a
    crashed sender's rows are found; without this they would wait for a person, who might
    send them again."""
    proven = exists().where(EMAIL_EVENT.c.delivery_id == DELIVERY.c.id)
    return int(
        conn.execute(
            update(DELIVERY)
            .where(*where, DELIVERY.c.state == DeliveryState.UNKNOWN.value, proven)
            .values(
                state=DeliveryState.ACCEPTED.value,
                error=SETTLED_BY_EVENTS,
                sent_at=DELIVERY.c.claimed_at,
                updated_at=utcnow(),
            )
        ).rowcount
    )


# --------------------------------------------------------------------------- reading


def state_counts(conn: Connection, campaign: str, message: str) -> dict[str, int]:
    """Ledger rows of a phase per state (every state present, zeros included)."""
    counts = {state.value: 0 for state in DeliveryState}
    for state, count in conn.execute(
        select(DELIVERY.c.state, func.count())
        .where(_phase_rows(campaign, message))
        .group_by(DELIVERY.c.state)
    ):
        counts[state] = count
    return counts


def failure_reasons(
    conn: Connection, campaign: str, message: str, limit: int = 20
) -> list[tuple[str, int]]:
    """Why a phase's rows failed: each distinct reason with its row count, most rows first."""
    count = func.count().label("rows")
    rows = conn.execute(
        select(func.coalesce(DELIVERY.c.error, "no reason recorded"), count)
        .where(_phase_rows(campaign, message), DELIVERY.c.state == DeliveryState.FAILED.value)
        .group_by(DELIVERY.c.error)
        .order_by(count.desc())
        .limit(limit)
    )
    return [(str(reason), int(rows_)) for reason, rows_ in rows]


@dataclass(frozen=True)
class UnsettledRow:
    """A ledger row whose request may or may not have been accepted."""

    delivery_id: int
    message: str
    email: str
    batch_id: str | None
    claimed_at: datetime | None
    error: str | None


def unknown_rows(
    conn: Connection, campaign: str, message: str | None = None, limit: int | None = None
) -> list[UnsettledRow]:
    """The ``unknown`` rows of a campaign (or one phase), oldest claim first."""
    query = (
        select(
            DELIVERY.c.id,
            DELIVERY.c.message,
            CONTACT.c.email,
            DELIVERY.c.batch_id,
            DELIVERY.c.claimed_at,
            DELIVERY.c.error,
        )
        .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
        .where(
            DELIVERY.c.campaign == campaign,
            DELIVERY.c.state == DeliveryState.UNKNOWN.value,
        )
        .order_by(DELIVERY.c.claimed_at, DELIVERY.c.id)
    )
    if message is not None:
        query = query.where(DELIVERY.c.message == message)
    if limit is not None:
        query = query.limit(limit)
    return [UnsettledRow(*row) for row in conn.execute(query)]


Resolution = Literal["resend", "mark-sent"]


def resolve(
    engine: Engine,
    campaign: str,
    message: str,
    resolution: Resolution,
    *,
    batch_ids: Sequence[str] | None = None,
    include_failed: bool = False,
) -> int:
    """Settle unknown rows: ``resend`` puts them back to planned, ``mark-sent`` accepts them."""
    states = [DeliveryState.UNKNOWN.value]
    if include_failed:
        states.append(DeliveryState.FAILED.value)
    where = [_phase_rows(campaign, message), DELIVERY.c.state.in_(states)]
    if batch_ids:
        where.append(DELIVERY.c.batch_id.in_(list(batch_ids)))
    now = utcnow()
    who = audit.actor()
    if resolution == "resend":
        values: dict[str, Any] = {
            "state": DeliveryState.PLANNED.value,
            "batch_id": None,
            "error": f"re-send approved by {who}",
            "updated_at": now,
        }
    else:
        values = {
            "state": DeliveryState.ACCEPTED.value,
            "error": f"marked sent by {who}",
            "sent_at": DELIVERY.c.claimed_at,
            "updated_at": now,
        }
    with engine.begin() as conn:
        # Rows SendGrid already reported an event for were accepted: never send them again.
        proven = settle_proven(conn, *where)
        count = conn.execute(update(DELIVERY).where(*where).values(**values)).rowcount
        if resolution == "mark-sent":
            count += proven
        audit.record(
            conn,
            f"deliveries.{resolution}",
            campaign=campaign,
            phase=message,
            detail={
                "rows": count,
                "settled_by_events": proven,
                "batches": list(batch_ids or []),
                "states": states,
            },
            who=who,
        )
    return count


# --------------------------------------------------------------------------- phase control


CAMPAIGN_WIDE = "*"


def paused_reason(conn: Connection, campaign: str, message: str) -> str | None:
    """Why the phase (or the whole campaign, message ``*``) is paused; None when it may send."""
    for name in (CAMPAIGN_WIDE, message):
        row = conn.execute(
            select(PHASE_CONTROL.c.paused, PHASE_CONTROL.c.reason).where(
                PHASE_CONTROL.c.campaign == campaign, PHASE_CONTROL.c.message == name
            )
        ).first()
        if row is not None and row.paused:
            return str(row.reason or "paused")
    return None


def set_paused(
    engine: Engine, campaign: str, message: str, paused: bool, reason: str, who: str | None = None
) -> None:
    """Pause or resume a phase, recording who and why in the audit log."""
    who = who or audit.actor()
    now = utcnow()
    with engine.begin() as conn:
        statement = dialect_insert(conn.dialect.name)(PHASE_CONTROL).values(
            campaign=campaign,
            message=message,
            paused=paused,
            reason=reason,
            changed_by=who,
            changed_at=now,
        )
        conn.execute(
            statement.on_conflict_do_update(
                index_elements=["campaign", "message"],
                set_={
                    "paused": paused,
                    "reason": reason,
                    "changed_by": who,
                    "changed_at": now,
                },
            )
        )
        audit.record(
            conn,
            "phase.paused" if paused else "phase.resumed",
            campaign=campaign,
            phase=message,
            detail={"reason": reason},
            who=who,
        )


def approve(
    engine: Engine, campaign: str, message: str, note: str = "", who: str | None = None
) -> str:
    """Record that ``who`` approved the real send of a phase; returns who."""
    who = who or audit.actor()
    with engine.begin() as conn:
        audit.record(
            conn, "phase.approved", campaign=campaign, phase=message, detail={"note": note}, who=who
        )
    return who


def approval(conn: Connection, campaign: str, message: str) -> tuple[str, datetime] | None:
    """Who approved the phase's real send, and when (the latest approval), if anyone did."""
    from herald.models import AUDIT_LOG

    row = conn.execute(
        select(AUDIT_LOG.c.actor, AUDIT_LOG.c.at)
        .where(
            AUDIT_LOG.c.action == "phase.approved",
            AUDIT_LOG.c.campaign == campaign,
            AUDIT_LOG.c.phase == message,
        )
        .order_by(AUDIT_LOG.c.at.desc())
        .limit(1)
    ).first()
    return (str(row.actor), row.at) if row is not None else None


def timezone_fallbacks(conn: Connection, campaign: str, message: str) -> int:
    """Rows of a message whose contact has no time zone (their region's window is used)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(DELIVERY)
            .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .where(
                _phase_rows(campaign, message),
                or_(CONTACT.c.timezone.is_(None), CONTACT.c.timezone == ""),
            )
        ).scalar_one()
    )
