"""A rehearsal: the whole campaign calendar on a simulated clock, against the outbox.

Day by day (only the days on which something is due or waiting), it does what the
deployments would: plan the phases and notices due that day, then at each moment a
recipient time zone's delivery window opens, send what is due there. After each day's
sends, synthetic telemetry comes back through the same paths real telemetry takes: SendGrid
events (delivered, open, click, a few bounces and unsubscribes) through
:func:`herald.telemetry.events.apply_events`; accounts migrate with a probability that rises
with every message they received; tickets and surveys arrive. Everything is seeded: the same
base and seed give the same rehearsal.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any

from sqlalchemy import Engine, func, insert, or_, select, update

from herald import ledger
from herald.audience import accounts, contacts
from herald.calendar import (
    THANK_YOU_MESSAGE,
    due_notices,
    in_window,
    openings,
    parse_message,
    start_of,
)
from herald.config import HeraldConfig, MessageKind
from herald.models import (
    AdoptionEvent,
    DeliveryState,
    MigrationState,
    PerformanceReport,
    SatisfactionResponse,
    SupportTicket,
    table,
)
from herald.telemetry.events import apply_events

PHASE_WEEK = timedelta(days=7)
adoption = table(AdoptionEvent)
tickets = table(SupportTicket)
surveys = table(SatisfactionResponse)
performance = table(PerformanceReport)


@dataclass(frozen=True)
class Behaviour:
    """How the synthetic customers respond (per day, per message received so far)."""

    open_rate: float = 0.55
    click_rate: float = 0.35  # of those who open
    bounce_rate: float = 0.01
    unsubscribe_rate: float = 0.002
    migrate_base: float = 0.002  # per day, before any message
    migrate_per_message: float = 0.004  # added per message the account received
    ticket_rate: float = 0.01  # per account per visited day after its first message
    survey_rate: float = 0.3  # of accounts on the day they migrate
    report_rate: float = 0.8  # of accounts on the day they migrate: a performance report
    improved_rate: float = 0.98  # of those reports: the new import is faster


@dataclass
class Day:
    """What happened on one simulated day."""

    day: date
    planned: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    migrated: int = 0
    events: int = 0


def _due_messages(engine: Engine, config: HeraldConfig, at: datetime) -> list[str]:
    """Messages with planned rows that may go at ``at``: due, unexpired, window open."""
    deliveries = ledger.deliveries
    with engine.connect() as conn:
        waiting = conn.execute(
            select(deliveries.c.message, deliveries.c.timezone)
            .where(
                deliveries.c.campaign == config.campaign.id,
                deliveries.c.state == DeliveryState.PLANNED.value,
                or_(deliveries.c.not_before.is_(None), deliveries.c.not_before <= at),
            )
            .distinct()
        ).all()
    window = config.campaign.delivery_window
    return sorted({m for m, tz in waiting if in_window(window, tz or window.default_timezone, at)})


def plan_day(engine: Engine, config: HeraldConfig, day: date) -> dict[str, int]:
    """Plan the phases dated ``day`` and the notices due and still valid on it."""
    campaign = config.campaign
    planned: dict[str, int] = {}
    for phase in ("preview", "announcement", "deprecation"):
        dated = getattr(campaign.phases, phase)
        if dated <= day < dated + PHASE_WEEK:  # as its hourly schedule would, for a week
            planned[phase] = ledger.plan(
                engine, config, phase, day, not_before=start_of(dated)
            ).planned
    planned.update(ledger.follow_deadlines(engine, config, day).extended)
    for notice, count in ledger.plan_notices(engine, config, day):
        planned[notice.message] = planned.get(notice.message, 0) + count
    if campaign.notices.thank_you:
        planned[THANK_YOU_MESSAGE] = ledger.plan_thank_you(engine, config, day)
    return planned


def zones(engine: Engine, config: HeraldConfig) -> list[str]:
    """Every time zone a planned row may wait in."""
    window = config.campaign.delivery_window
    with engine.connect() as conn:
        own = set(
            conn.execute(
                select(ledger.deliveries.c.timezone)
                .where(ledger.deliveries.c.state == DeliveryState.PLANNED.value)
                .distinct()
            ).scalars()
        )
    return sorted({z for z in own if z} | set(window.region_timezones.values()))


def send_day(
    engine: Engine,
    config: HeraldConfig,
    day: date,
    deliver: Callable[[MessageKind, str, int | None, datetime], int],
) -> dict[str, int]:
    """At each window opening of the day, send every message with rows due there."""
    sent: dict[str, int] = {}
    start = start_of(day)
    window = config.campaign.delivery_window
    for moment in openings(window, zones(engine, config), start, start + timedelta(days=1)):
        at = moment + timedelta(minutes=1)
        for message in _due_messages(engine, config, at):
            name = parse_message(message)
            count = deliver(name.kind, message, name.offset, at)
            if count:
                sent[message] = sent.get(message, 0) + count
    return sent


def telemetry_day(
    engine: Engine, config: HeraldConfig, day: date, behaviour: Behaviour, rng: random.Random
) -> tuple[int, int]:
    """Synthetic responses to the day's sends and the day's migrations: (events, migrated)."""
    deliveries = ledger.deliveries
    start, end = start_of(day), start_of(day + timedelta(days=1))
    with engine.connect() as conn:
        sent = conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.campaign,
                deliveries.c.message,
                deliveries.c.contact_id,
                deliveries.c.sent_at,
                contacts.c.email,
            )
            .join(contacts, contacts.c.id == deliveries.c.contact_id)
            .where(
                deliveries.c.campaign == config.campaign.id,
                deliveries.c.state == DeliveryState.ACCEPTED.value,
                deliveries.c.sent_at >= start,
                deliveries.c.sent_at < end,
            )
            .order_by(deliveries.c.id)
        ).all()
    events: list[dict[str, Any]] = []
    for row in sent:
        key = f"{row.campaign}/{row.message}/{row.contact_id}"
        stamp = int(row.sent_at.timestamp()) if isinstance(row.sent_at, datetime) else 0
        base = {"email": row.email, "herald_key": key, "timestamp": stamp + 60}

        def emit(
            kind: str, row_id: int = row.id, base: dict[str, Any] = base, **extra: Any
        ) -> None:
            events.append(
                {**base, "event": kind, "sg_event_id": f"rehearsal-{row_id}-{kind}", **extra}
            )

        if rng.random() < behaviour.bounce_rate:
            emit("bounce", type="bounce", reason="550 5.1.1 unknown user")
            continue
        emit("delivered")
        if rng.random() < behaviour.open_rate:
            emit("open")
            if rng.random() < behaviour.click_rate:
                emit("click", url=str(config.campaign.links.migration_guide))
        if rng.random() < behaviour.unsubscribe_rate:
            emit("unsubscribe")
    with engine.begin() as conn:
        if events:
            apply_events(conn, events)
        migrated = _migrate(conn, config, day, behaviour, rng)
    return len(events), migrated


def _migrate(
    conn: Any, config: HeraldConfig, day: date, behaviour: Behaviour, rng: random.Random
) -> int:
    deliveries = ledger.deliveries
    received = (
        select(contacts.c.account_id, func.count().label("messages"))
        .join(deliveries, deliveries.c.contact_id == contacts.c.id)
        .where(
            deliveries.c.campaign == config.campaign.id,
            deliveries.c.state == DeliveryState.ACCEPTED.value,
        )
        .group_by(contacts.c.account_id)
        .subquery()
    )
    candidates = conn.execute(
        select(accounts.c.id, func.coalesce(received.c.messages, 0))
        .outerjoin(received, received.c.account_id == accounts.c.id)
        .where(
            accounts.c.lifecycle == "active",
            accounts.c.migration_state != MigrationState.MIGRATED.value,
        )
        .order_by(accounts.c.id)
    ).all()
    moved = [
        account_id
        for account_id, messages in candidates
        if messages
        and rng.random() < behaviour.migrate_base + behaviour.migrate_per_message * messages
    ]
    reached = [account_id for account_id, messages in candidates if messages]
    noon = start_of(day) + timedelta(hours=12)
    if moved:
        conn.execute(
            update(accounts)
            .where(accounts.c.id.in_(moved))
            .values(migration_state=MigrationState.MIGRATED.value, migrated_on=day, updated_at=noon)
        )
        conn.execute(
            insert(adoption),
            [
                {
                    "account_id": a,
                    "observed_on": day,
                    "adoption_pct": 100.0,
                    "batch_id": "rehearsal",
                }
                for a in moved
            ],
        )
        answered = [a for a in moved if rng.random() < behaviour.survey_rate]
        if answered:
            conn.execute(
                insert(surveys),
                [
                    {
                        "response_id": f"rehearsal-{a}-{day}",
                        "account_id": a,
                        "responded_at": noon,
                        "csat": 5 if rng.random() < 0.9 else 3,
                        "performance_improved": rng.random() < 0.97,
                        "comment": "Imports are much faster." if rng.random() < 0.4 else None,
                        "batch_id": "rehearsal",
                    }
                    for a in answered
                ],
            )
        measured = [a for a in moved if rng.random() < behaviour.report_rate]
        if measured:
            # The vendor's headline: imports 101.76x faster, 99.7% less import memory.
            conn.execute(
                insert(performance),
                [
                    {
                        "report_id": f"rehearsal-{a}-{day}",
                        "account_id": a,
                        "reported_at": noon,
                        "legacy_import_ms": 2035.2,
                        "new_import_ms": (
                            20.0 if rng.random() < behaviour.improved_rate else 2100.0
                        ),
                        "legacy_memory_mb": 512.0,
                        "new_memory_mb": 1.5,
                        "batch_id": "rehearsal",
                    }
                    for a in measured
                ],
            )
    opened = [a for a in reached if rng.random() < behaviour.ticket_rate]
    if opened:
        conn.execute(
            insert(tickets),
            [
                {
                    "ticket_id": f"rehearsal-{a}-{day}",
                    "account_id": a,
                    "opened_at": noon,
                    "closed_at": noon + timedelta(hours=6),
                    "category": rng.choice(["migration", "performance", "billing", "how-to"]),
                    "satisfaction": 5 if rng.random() < 0.9 else 2,
                    "batch_id": "rehearsal",
                }
                for a in opened
            ],
        )
    return len(moved)


def due_today(config: HeraldConfig, day: date) -> bool:
    """Whether a phase's week or a notice is due on ``day`` (what the schedules would run)."""
    campaign = config.campaign
    for phase in ("preview", "announcement", "deprecation"):
        if getattr(campaign.phases, phase) <= day < getattr(campaign.phases, phase) + PHASE_WEEK:
            return True
    return any(notice.due == day for notice in due_notices(campaign, day))


def waiting(engine: Engine, campaign: str) -> bool:
    """Whether any ledger row is planned and not yet sent."""
    with engine.connect() as conn:
        return bool(ledger.planned_rows(conn, campaign))
