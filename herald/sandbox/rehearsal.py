"""A rehearsal: the whole campaign calendar on a simulated clock, against the outbox.

Day by day (only the days on which something is due or waiting), it does what the
deployments would: plan the phases and notices due that day, then at each moment a
recipient time zone's delivery window opens, send what is due there. After each day's
sends, synthetic telemetry comes back through the same paths real telemetry takes: SendGrid
events (delivered, open, click, a few bounces and unsubscribes) through
:func:`herald.telemetry.event_effects.apply_events`; accounts migrate with a probability that rises
with every message they received; tickets and surveys arrive. Everything is seeded: the same
base and seed give the same rehearsal.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import Engine, func, or_, select

from herald.config import HeraldConfig, MessageKind
from herald.db import dialect_insert
from herald.delivery import planning
from herald.delivery.calendar import (
    THANK_YOU_MESSAGE,
    due_notices,
    in_window,
    openings,
    parse_message,
    start_of,
)
from herald.delivery.keys import LedgerKey
from herald.models import (
    ACCOUNT,
    ADOPTION_EVENT,
    CONTACT,
    DELIVERY,
    PERFORMANCE_REPORT,
    SATISFACTION_RESPONSE,
    SUPPORT_TICKET,
    DeliveryState,
    MigrationState,
)
from herald.sandbox.marks import SYNTHETIC_BATCH
from herald.telemetry.adoption import apply_adoption
from herald.telemetry.event_effects import apply_events

T = TypeVar("T")

PHASE_WEEK = timedelta(days=7)
COMMENTS = (
    "Imports are much faster.",
    "Our test suite starts in a fraction of the time.",
    "Workers use far less memory; we run more of them per host.",
    "The migration guide made the switch straightforward.",
)


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
    stuck_ticket_rate: float = 0.2  # of tickets: open for weeks, not hours
    ticket_survey_rate: float = 0.6  # of tickets: a survey answer follows
    unhappy_rate: float = 0.25  # of accounts: their ticket surveys score 1-2


@dataclass
class Day:
    """What happened on one simulated day."""

    day: date
    planned: dict[str, int] = field(default_factory=dict)
    sent: dict[str, int] = field(default_factory=dict)
    migrated: int = 0
    events: int = 0


def _due_messages(engine: Engine, config: HeraldConfig, at: datetime) -> list[str]:
    """Messages with planned rows that may go at ``at``: due, unexpired, window open (for a
    critical notice: the window's hours, whatever the day)."""
    with engine.connect() as conn:
        waiting = conn.execute(
            select(DELIVERY.c.message, DELIVERY.c.timezone, DELIVERY.c.critical)
            .where(
                DELIVERY.c.campaign == config.campaign.id,
                DELIVERY.c.state == DeliveryState.PLANNED.value,
                or_(DELIVERY.c.not_before.is_(None), DELIVERY.c.not_before <= at),
            )
            .distinct()
        ).all()
    window = config.campaign.delivery_window
    return sorted(
        {
            message
            for message, tz, critical in waiting
            if in_window(window, tz or window.default_timezone, at, any_day=bool(critical))
        }
    )


def plan_day(engine: Engine, config: HeraldConfig, day: date) -> dict[str, int]:
    """Plan the phases dated ``day`` and the notices due and still valid on it."""
    campaign = config.campaign
    planned: dict[str, int] = {}
    for phase in ("preview", "announcement", "deprecation"):
        dated = getattr(campaign.phases, phase)
        if dated <= day < dated + PHASE_WEEK:  # as its hourly schedule would, for a week
            planned[phase] = planning.plan(
                engine, config=config, phase=phase, as_of=day, not_before=start_of(dated)
            ).planned
    planned.update(planning.follow_deadlines(engine, config=config, as_of=day).extended)
    for notice, count in planning.plan_notices(engine, config=config, as_of=day):
        planned[notice.message] = planned.get(notice.message, 0) + count
    if campaign.notices.thank_you:
        # Accounts that moved before today: today's moves arrive with today's telemetry,
        # after the sends, and a rehearsal run again over this day must see the same.
        planned[THANK_YOU_MESSAGE] = planning.plan_thank_you(
            engine, config=config, as_of=day - timedelta(days=1)
        )
    return planned


def zones(engine: Engine, config: HeraldConfig) -> list[str]:
    """Every time zone a planned row may wait in."""
    window = config.campaign.delivery_window
    with engine.connect() as conn:
        own = set(
            conn.execute(
                select(DELIVERY.c.timezone)
                .where(DELIVERY.c.state == DeliveryState.PLANNED.value)
                .distinct()
            ).scalars()
        )
    return sorted({z for z in own if z} | set(window.region_timezones.values()))


def send_day(
    engine: Engine,
    config: HeraldConfig,
    day: date,
    deliver: Callable[[MessageKind, str, datetime], int],
) -> dict[str, int]:
    """At each window opening of the day, send every message with rows due there."""
    sent: dict[str, int] = {}
    start = start_of(day)
    window = config.campaign.delivery_window
    end = start + timedelta(days=1)
    for moment in openings(window, zones(engine, config), start, end, any_day=True):
        at = moment + timedelta(minutes=1)
        for message in _due_messages(engine, config, at):
            name = parse_message(message)
            count = deliver(name.kind, message, at)
            if count:
                sent[message] = sent.get(message, 0) + count
    return sent


class Draws:
    """The rehearsal's randomness, drawn per thing rather than in sequence: the same seed
    gives the same answer for the same (day, account, message, question) however often it
    is asked, so a rehearsal run again over the same days changes nothing."""

    def __init__(self, seed: int) -> None:
        self.seed = seed

    def __call__(self, *parts: object) -> float:
        """A number in [0, 1) fixed by the seed and ``parts``."""
        key = ":".join(str(part) for part in (self.seed, *parts)).encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        return int.from_bytes(digest, "big") / 2**64

    def choice(self, options: Sequence[T], *parts: object) -> T:
        """One of ``options``, fixed by the seed and ``parts``."""
        return options[int(self(*parts) * len(options))]


def telemetry_day(
    engine: Engine, config: HeraldConfig, day: date, behaviour: Behaviour, draw: Draws
) -> tuple[int, int]:
    """Synthetic responses to the day's sends and the day's migrations: (events, migrated).

    Idempotent: events have fixed ids, and every other row is inserted once by its key."""
    start, end = start_of(day), start_of(day + timedelta(days=1))
    with engine.connect() as conn:
        sent = conn.execute(
            select(
                DELIVERY.c.id,
                DELIVERY.c.campaign,
                DELIVERY.c.message,
                DELIVERY.c.contact_id,
                DELIVERY.c.sent_at,
                CONTACT.c.email,
            )
            .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .where(
                DELIVERY.c.campaign == config.campaign.id,
                DELIVERY.c.state == DeliveryState.ACCEPTED.value,
                DELIVERY.c.sent_at >= start,
                DELIVERY.c.sent_at < end,
            )
            .order_by(DELIVERY.c.id)
        ).all()
    events: list[dict[str, Any]] = []
    for row in sent:
        key = LedgerKey(row.campaign, row.message, row.contact_id).format()
        stamp = int(row.sent_at.timestamp()) if isinstance(row.sent_at, datetime) else 0
        base = {"email": row.email, "herald_key": key, "timestamp": stamp + 60}

        def emit(
            kind: str, row_id: int = row.id, base: dict[str, Any] = base, **extra: Any
        ) -> None:
            events.append(
                {**base, "event": kind, "sg_event_id": f"rehearsal-{row_id}-{kind}", **extra}
            )

        if draw(row.id, "bounce") < behaviour.bounce_rate:
            emit("bounce", type="bounce", reason="550 5.1.1 unknown user")
            continue
        emit("delivered")
        if draw(row.id, "open") < behaviour.open_rate:
            emit("open")
            if draw(row.id, "click") < behaviour.click_rate:
                emit("click", url=str(config.campaign.links.migration_guide))
        if draw(row.id, "unsubscribe") < behaviour.unsubscribe_rate:
            emit("unsubscribe")
    with engine.begin() as conn:
        if events:
            apply_events(conn, events=events)
        migrated = _migrate(conn, config, day, behaviour, draw)
    return len(events), migrated


def _insert_once(conn: Any, target: Any, key: list[str], rows: list[dict[str, Any]]) -> None:
    """Insert ``rows``; those already there (by ``key``) stay as they are."""
    if rows:
        statement = dialect_insert(conn.dialect.name)(target).on_conflict_do_nothing(
            index_elements=key
        )
        conn.execute(statement, rows)


def _migrate(conn: Any, config: HeraldConfig, day: date, behaviour: Behaviour, draw: Draws) -> int:
    """Accounts that move on ``day``: the chance rises with the messages each had received
    by the end of that day. The move comes back as adoption telemetry (100%), applied as
    real telemetry is; surveys, performance reports and tickets follow."""
    end = start_of(day + timedelta(days=1))
    received = (
        select(CONTACT.c.account_id, func.count().label("messages"))
        .join(DELIVERY, DELIVERY.c.contact_id == CONTACT.c.id)
        .where(
            DELIVERY.c.campaign == config.campaign.id,
            DELIVERY.c.state == DeliveryState.ACCEPTED.value,
            DELIVERY.c.sent_at < end,
        )
        .group_by(CONTACT.c.account_id)
        .subquery()
    )
    candidates = conn.execute(
        select(ACCOUNT.c.id, func.coalesce(received.c.messages, 0))
        .outerjoin(received, received.c.account_id == ACCOUNT.c.id)
        .where(
            ACCOUNT.c.lifecycle == "active",
            or_(
                ACCOUNT.c.migration_state != MigrationState.MIGRATED.value,
                ACCOUNT.c.migrated_on >= day,  # moved on this day (a rerun of it)
            ),
        )
        .order_by(ACCOUNT.c.id)
    ).all()
    moved = [
        account_id
        for account_id, messages in candidates
        if messages
        and draw(day, account_id, "migrate")
        < behaviour.migrate_base + behaviour.migrate_per_message * messages
    ]
    reached = [account_id for account_id, messages in candidates if messages]
    noon = start_of(day) + timedelta(hours=12)
    _insert_once(
        conn,
        ADOPTION_EVENT,
        ["account_id", "observed_on"],
        [
            {
                "account_id": a,
                "observed_on": day,
                "adoption_pct": 100.0,
                "batch_id": SYNTHETIC_BATCH,
                "received_at": noon,
            }
            for a in moved
        ],
    )
    migrated, _ = apply_adoption(
        conn, accounts=moved, threshold=config.telemetry.adoption.migrated_at_pct
    )
    answered = [a for a in moved if draw(day, a, "survey") < behaviour.survey_rate]
    _insert_once(
        conn,
        SATISFACTION_RESPONSE,
        ["response_id"],
        [
            {
                "response_id": f"rehearsal-{a}-{day}",
                "account_id": a,
                "responded_at": noon,
                "csat": 5 if draw(day, a, "csat") < 0.9 else 3,
                "performance_improved": draw(day, a, "improved") < 0.97,
                "comment": (
                    draw.choice(COMMENTS, day, a, "comment-text")
                    if draw(day, a, "comment") < 0.4
                    else None
                ),
                "batch_id": SYNTHETIC_BATCH,
            }
            for a in answered
        ],
    )
    measured = [a for a in moved if draw(day, a, "report") < behaviour.report_rate]
    _insert_once(
        conn,
        PERFORMANCE_REPORT,
        ["report_id"],
        [_measurement(draw, day, a, noon, behaviour) for a in measured],
    )
    opened = [a for a in reached if draw(day, a, "ticket") < behaviour.ticket_rate]
    _insert_once(
        conn,
        SUPPORT_TICKET,
        ["ticket_id"],
        [
            {
                "ticket_id": f"rehearsal-{a}-{day}",
                "account_id": a,
                "opened_at": noon,
                # Most close the same day; some stay open for weeks (support escalations).
                "closed_at": noon
                + (
                    timedelta(days=10 + int(30 * draw(day, a, "open-for")))
                    if draw(day, a, "stuck") < behaviour.stuck_ticket_rate
                    else timedelta(hours=6)
                ),
                "category": draw.choice(
                    ["migration", "performance", "billing", "how-to"], day, a, "category"
                ),
                "satisfaction": 5 if draw(day, a, "satisfaction") < 0.9 else 2,
                "batch_id": SYNTHETIC_BATCH,
            }
            for a in opened
        ],
    )
    # A ticket brings a survey now and then; an unhappy account answers low.
    surveyed = [a for a in opened if draw(day, a, "ticket-survey") < behaviour.ticket_survey_rate]
    _insert_once(
        conn,
        SATISFACTION_RESPONSE,
        ["response_id"],
        [
            {
                "response_id": f"rehearsal-ticket-{a}-{day}",
                "account_id": a,
                "responded_at": noon + timedelta(hours=8),
                "csat": (
                    1 + int(2 * draw(day, a, "ticket-csat"))
                    if draw(a, "unhappy") < behaviour.unhappy_rate
                    else 4 + int(2 * draw(day, a, "ticket-csat"))
                ),
                "performance_improved": None,
                "comment": None,
                "batch_id": SYNTHETIC_BATCH,
            }
            for a in surveyed
        ],
    )
    return migrated


def _measurement(
    draw: Draws, day: date, account: int, noon: datetime, behaviour: Behaviour
) -> dict[str, Any]:
    """One account's own benchmark: around the vendor's headline (imports 101.76x faster,
    99.7% less import memory), each account its own figures; a few measure no gain."""
    legacy_ms = round(400 + 3600 * draw(day, account, "legacy-ms"), 1)
    speedup = 30 + 140 * draw(day, account, "speedup")
    improved = draw(day, account, "faster") < behaviour.improved_rate
    legacy_mb = round(96 + 928 * draw(day, account, "legacy-mb"), 1)
    return {
        "report_id": f"rehearsal-{account}-{day}",
        "account_id": account,
        "reported_at": noon,
        "legacy_import_ms": legacy_ms,
        "new_import_ms": round(legacy_ms / speedup, 1) if improved else round(legacy_ms * 1.04, 1),
        "legacy_memory_mb": legacy_mb,
        "new_memory_mb": round(legacy_mb * (0.001 + 0.006 * draw(day, account, "memory")), 2),
        "batch_id": SYNTHETIC_BATCH,
    }


def due_today(config: HeraldConfig, day: date) -> bool:
    """Whether a phase's week or a notice is due on ``day`` (what the schedules would run)."""
    campaign = config.campaign
    for phase in ("preview", "announcement", "deprecation"):
        if getattr(campaign.phases, phase) <= day < getattr(campaign.phases, phase) + PHASE_WEEK:
            return True
    return any(notice.sends_on == day for notice in due_notices(campaign, day))


def waiting(engine: Engine, campaign: str) -> bool:
    """Whether any ledger row is planned and not yet sent."""
    with engine.connect() as conn:
        return bool(planning.planned_rows(conn, campaign=campaign))
