"""Planning the ledger: each phase's audience as planned rows, notices on their days, and
planned rows that may no longer go (suppressed, expired) taken out before a send.

A phase's audience is inserted as ``planned`` rows in one INSERT ... SELECT ... ON CONFLICT
DO NOTHING on the unique key (campaign, message, contact): a rerun adds nothing, and nothing
is sent that is not in the ledger. On Postgres a large audience is inserted in parts side by
side, one statement per span of contact ids (one statement holds one core), each committed
before the plan's stamp. Rows leave ``planned`` only through
:func:`herald.delivery.ledger.move`.

Each plan leaves a stamp (:mod:`herald.delivery.stamps`): a rerun of the same plan whose
audience's inputs did not change since skips the INSERT ... SELECT (it would add nothing),
and the phase's audience count is the stamp's, less the contacts suppressed since. The
thank-you and "deadline extended" plans read the ledger itself and always run.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any, cast

from sqlalchemy import (
    Boolean,
    Connection,
    DateTime,
    Engine,
    Integer,
    String,
    and_,
    exists,
    func,
    literal,
    or_,
    select,
    true,
)
from sqlalchemy.exc import OperationalError

from herald.config import DEADLINE_EXTENDED, THANK_YOU, HeraldConfig, MessageKind, PhaseName
from herald.db import SIDE_BY_SIDE, dialect_insert, id_spans, refresh_statistics
from herald.delivery import stamps
from herald.delivery.audience import (
    AudienceCount,
    address_suppressed,
    audience,
    counts_of,
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
from herald.delivery.ledger import PLANNED, move, phase_rows
from herald.models import (
    ACCOUNT,
    CONTACT,
    DELIVERY,
    SUPPRESSION,
    AccountLifecycle,
    DeliveryState,
    MigrationState,
    SuppressionReason,
    utcnow,
)

# Postgres: an audience over at least this many contact ids is planned in parts side by side
# (at most one per core this process may use, up to 4), each on a connection of its own.
PLAN_PARTS_FROM = 100_000
PLAN_PARTS = SIDE_BY_SIDE
SUPPRESSED_CHUNK = 5_000  # addresses per statement when a count takes off new suppressions
SQLITE_BUSY_MS = 30_000  # herald.db's busy timeout, restored after a count's short one


@dataclass(frozen=True)
class PlanResult:
    """What planning added: new ledger rows, and the segmentation they were chosen from.
    ``reused``: nothing the audience reads changed since the last plan of the same
    statement, so it was not run again (it would have added nothing)."""

    planned: int
    segmented_on: date
    reused: bool = False


@dataclass(frozen=True)
class CountBasis:
    """What a live count of a phase's audience read, so the plan can stamp the count: the
    plan's digest, the inputs' data version taken before counting, the highest suppression
    id counted."""

    digest: str
    data_version: str
    suppressed_through: int


@dataclass(frozen=True)
class CountedAudience:
    """A phase's audience by segment and role; ``basis`` when counted now (None: the count
    of a current stamp, less the contacts suppressed since)."""

    counts: list[AudienceCount]
    segmented_on: date
    basis: CountBasis | None = None


def plan(
    engine: Engine,
    *,
    config: HeraldConfig,
    phase: PhaseName,
    as_of: date,
    message: str | None = None,
    segments: list[str] | None = None,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
    critical: bool = False,
    counted: CountedAudience | None = None,
) -> PlanResult:
    """Insert the audience as planned rows; rows already in the ledger stay as they are.

    ``message`` is the ledger's name for it (default: the phase; a notice: ``sunset-t30``);
    ``segments`` narrows the phase's segments; ``not_before`` / ``not_after`` bound when it
    may go (a notice is due on a day and superseded by the next one); ``critical`` exempts
    it from the frequency cap. ``counted``: the audience counted just before (by
    :func:`count_audience`), kept on the plan's stamp for the reruns.

    When the last plan of ``message`` was this same statement and nothing it reads has
    changed since (:mod:`herald.delivery.stamps`), the statement is not run: ``reused``.
    """
    campaign, name = config.campaign.id, message or phase
    with engine.begin() as conn:
        # First: a change committed after it, seen by the INSERT or not, leaves the stamp
        # stale (the next run plans again); never one the plan missed and the stamp hides.
        version = stamps.data_version(conn)
        day = segmentation_day(conn, as_of)
        chosen = audience(config, phase, day, segments=segments)
        digest = _plan_digest(conn, chosen, campaign, name, not_before, not_after, critical)
        if stamps.current_stamp(conn, campaign=campaign, message=name, digest=digest):
            return PlanResult(planned=0, segmented_on=day, reused=True)
        rows: dict[str, Any] = {
            "campaign": campaign,
            "message": name,
            "not_before": not_before,
            "not_after": not_after,
            "critical": critical,
        }
        spans = _contact_spans(conn)
        if len(spans) == 1:
            added = _insert_planned(conn, source=chosen.subquery(), refresh=False, **rows)
        else:
            added = _insert_in_parts(engine, chosen, cast(list[tuple[int, int]], spans), **rows)
        # Fresh statistics before the claims (_insert_planned says why).
        refresh_statistics(conn, added, "delivery")
        basis = counted.basis if counted is not None else None
        if basis is not None and basis.digest == digest and counted is not None:
            # The count's version is older than the plan's: a change between the two leaves
            # the stamp stale, and the next run plans and counts again.
            stamp = stamps.Stamp(
                digest=digest,
                segmented_on=day,
                data_version=basis.data_version,
                suppressed_through=basis.suppressed_through,
                audience=[(c.segment, c.role, c.contacts) for c in counted.counts],
            )
        else:
            stamp = stamps.Stamp(digest=digest, segmented_on=day, data_version=version)
        stamps.write_stamp(conn, campaign=campaign, message=name, stamp=stamp)
    return PlanResult(planned=max(added, 0), segmented_on=day)


def count_audience(
    engine: Engine, *, config: HeraldConfig, phase: PhaseName, as_of: date
) -> CountedAudience:
    """The phase's audience by segment and role, in rollout order.

    From the phase's stamp when its plan is current (its count, less the contacts whose
    address was suppressed since: a few indexed reads), else counted now (with the
    :class:`CountBasis` that lets the plan that follows stamp it).
    """
    campaign = config.campaign.id
    version = _version_soon(engine)  # before counting: a change from here on is seen later
    with engine.connect() as conn:
        day = segmentation_day(conn, as_of)
        chosen = audience(config, phase, day)
        digest = _plan_digest(conn, chosen, campaign, phase, None, None, False)
        stamp = stamps.current_stamp(conn, campaign=campaign, message=phase, digest=digest)
        if stamp is not None and stamp.audience is not None:
            counts = [AudienceCount(*c) for c in stamp.audience]
            return CountedAudience(
                _less_suppressed_since(conn, config, phase, day, counts, stamp), day
            )
        through = _latest_suppression(conn)
        # Suppressions up to ``through`` only: one committed meanwhile is taken off later.
        counts = counts_of(conn, config, audience(config, phase, day, suppressed_through=through))
    basis = None if version is None else CountBasis(digest, version, through)
    return CountedAudience(counts, day, basis)


def _version_soon(engine: Engine) -> str | None:
    """The data version, or None when SQLite's write lock (to clear the dirty flag) is not
    free within a second: a count, unlike a plan, does not wait for a long import."""
    if engine.dialect.name != "sqlite":
        with engine.connect() as conn:
            return stamps.data_version(conn)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA busy_timeout = 1000")
        conn.commit()
        try:
            with conn.begin():
                return stamps.data_version(conn)
        except OperationalError:
            return None  # counted all the same; the plan just does not keep this count
        finally:
            conn.exec_driver_sql(f"PRAGMA busy_timeout = {SQLITE_BUSY_MS}")
            conn.commit()


def _plan_digest(
    conn: Connection,
    chosen: Any,
    campaign: str,
    message: str,
    not_before: datetime | None,
    not_after: datetime | None,
    critical: bool,
) -> str:
    return stamps.digest(conn, chosen, campaign, message, not_before, not_after, critical)


def _latest_suppression(conn: Connection) -> int:
    return int(conn.execute(select(func.coalesce(func.max(SUPPRESSION.c.id), 0))).scalar_one())


def _less_suppressed_since(
    conn: Connection,
    config: HeraldConfig,
    phase: PhaseName,
    day: date,
    counts: list[AudienceCount],
    stamp: stamps.Stamp,
) -> list[AudienceCount]:
    """``counts`` (the stamp's) less the contacts whose address got a suppression for the
    phase after the stamp's count: found from those suppressions, by index."""
    through = stamp.suppressed_through
    if through is None or _latest_suppression(conn) <= through:
        return counts
    newer = SUPPRESSION.c.id > through
    # The addresses first (a range of ids), then their contacts by the e-mail index: as one
    # statement, SQLite's planner would rather scan every contact.
    emails = sorted(set(conn.execute(select(SUPPRESSION.c.email).where(newer)).scalars()))
    gone: dict[tuple[str, str], int] = {}
    for start in range(0, len(emails), SUPPRESSED_CHUNK):
        lost = counts_of(
            conn,
            config,
            audience(config, phase, day, suppressed_through=through).where(
                CONTACT.c.email.in_(emails[start : start + SUPPRESSED_CHUNK]),
                address_suppressed(config, phase, newer),
            ),
        )
        for c in lost:
            gone[(c.segment, c.role)] = gone.get((c.segment, c.role), 0) + c.contacts
    return [
        AudienceCount(c.segment, c.role, c.contacts - gone.get((c.segment, c.role), 0))
        for c in counts
    ]


def _contact_spans(conn: Connection) -> list[tuple[int, int] | None]:
    """The spans of contact ids a plan is inserted in, side by side: on Postgres, up to
    ``PLAN_PARTS`` of about as many contacts when there are ``PLAN_PARTS_FROM`` or more;
    else one, None (every contact)."""
    if conn.dialect.name != "postgresql":
        return [None]
    spans = id_spans(conn, CONTACT.c.id, PLAN_PARTS, at_least=PLAN_PARTS_FROM)
    return [*spans] if len(spans) > 1 else [None]


def _insert_in_parts(engine: Engine, chosen: Any, spans: list[tuple[int, int]], **rows: Any) -> int:
    """The audience ``chosen`` inserted as planned rows one span of contact ids at a time,
    the spans side by side, each in a transaction of its own. Returns the rows added.

    Each part commits on its own: a plan cut short leaves some parts' rows planned and no
    stamp, so the next run plans again and adds only the rest."""

    def part(span: tuple[int, int]) -> int:
        of_span = chosen.where(CONTACT.c.id.between(*span))
        with engine.begin() as conn:
            return _insert_planned(conn, source=of_span.subquery(), refresh=False, **rows)

    with ThreadPoolExecutor(len(spans), thread_name_prefix="plan") as pool:
        return sum(pool.map(part, spans))


def _insert_planned(
    conn: Connection,
    *,
    campaign: str,
    message: str,
    source: Any,
    not_before: datetime | None,
    not_after: datetime | None,
    critical: bool,
    refresh: bool = True,
) -> int:
    """INSERT ... SELECT the rows of ``source`` (contact_id, segment, role, locale, timezone)
    as planned; a row already in the ledger stays as it is. Returns the rows added.

    ``refresh``: fresh planner statistics after a bulk insert (the caller's, when False)."""
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
    # Fresh statistics before the claims: with the table's old ones (say, empty) the planner
    # joins every claim against whole tables (measured: 0.6 s per claim at 1M).
    if refresh:
        refresh_statistics(conn, added, "delivery")
    return added


def plan_thank_you(engine: Engine, *, config: HeraldConfig, as_of: date) -> int:
    """Plan one thank-you for each contact who was mailed by the campaign and whose account
    has migrated by ``as_of`` (active, not suppressed). Returns the rows added."""
    with engine.begin() as conn:
        day = segmentation_day(conn, as_of)
        source = thank_you_audience(config, day, as_of, DELIVERY.alias("earlier")).subquery()
        return _insert_planned(
            conn,
            campaign=config.campaign.id,
            message=THANK_YOU_MESSAGE,
            source=source,
            not_before=None,
            not_after=None,
            critical=False,
        )


def plan_notices(engine: Engine, *, config: HeraldConfig, as_of: date) -> list[tuple[Notice, int]]:
    """Plan every sunset notice due and not yet superseded as of ``as_of`` (a missed one is
    caught up here), each for its segment, bounded by its validity; rows added per notice."""
    return [
        (
            notice,
            plan(
                engine,
                config=config,
                phase="sunset",
                as_of=as_of,
                message=notice.message,
                segments=[notice.segment],
                not_before=start_of(notice.sends_on),
                not_after=start_of(notice.until),
                critical=notice.critical,
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


def follow_deadlines(engine: Engine, *, config: HeraldConfig, as_of: date) -> Rescheduled:
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
            expired += move(
                conn,
                DELIVERY,
                DELIVERY.c.campaign == campaign.id,
                DELIVERY.c.segment == segment,
                is_notice(name),
                notice_deadline(name) != deadline.isoformat(),
                to=DeliveryState.EXPIRED,
                error=f"expired: the {segment} deadline moved to {deadline.isoformat()}",
                updated_at=now,
            )
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
                    campaign=campaign.id,
                    message=message,
                    source=source,
                    not_before=None,
                    not_after=start_of(deadline),
                    critical=False,
                )
    return Rescheduled(expired=expired, extended=extended)


def planned_rows(conn: Connection, *, campaign: str) -> dict[str, int]:
    """Rows still planned, per message, in message order."""
    rows = conn.execute(
        select(DELIVERY.c.message, func.count())
        .where(
            DELIVERY.c.campaign == campaign,
            PLANNED,
        )
        .group_by(DELIVERY.c.message)
        .order_by(DELIVERY.c.message)
    )
    return {str(message): int(count) for message, count in rows}


def accepted_rows(conn: Connection, *, campaign: str) -> dict[str, int]:
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


@dataclass(frozen=True)
class NoticeSent:
    """One notice of one segment as the ledger has it: how many went, on which days."""

    message: str
    segment: str
    sent: int
    first: date | None
    last: date | None


def notices_sent(conn: Connection, *, campaign: str) -> list[NoticeSent]:
    """Every notice by segment: rows accepted and the first and last day they went (UTC)."""
    rows = conn.execute(
        select(
            DELIVERY.c.message,
            DELIVERY.c.segment,
            func.count(DELIVERY.c.sent_at),
            func.min(DELIVERY.c.sent_at),
            func.max(DELIVERY.c.sent_at),
        )
        .where(
            DELIVERY.c.campaign == campaign,
            DELIVERY.c.state == DeliveryState.ACCEPTED.value,
            is_notice(DELIVERY.c.message),
        )
        .group_by(DELIVERY.c.message, DELIVERY.c.segment)
        .order_by(func.min(DELIVERY.c.sent_at), DELIVERY.c.segment)
    )

    def day(value: object) -> date | None:
        if value is None:
            return None
        moment = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
        return moment.date()

    return [
        NoticeSent(str(message), str(segment), int(count), day(first), day(last))
        for message, segment, count, first, last in rows
    ]


def never_sent_notices(conn: Connection, *, campaign: str) -> dict[str, int]:
    """Notice rows that expired unsent and were not superseded: no later notice of the same
    deadline was planned or sent to that contact (the sunset-day notice, or a notice whose
    successors never came). Each is a notice somebody did not get: an error, never silence."""
    later = DELIVERY.alias("later")
    name = DELIVERY.c.message
    rows = conn.execute(
        select(name, func.count())
        .where(
            DELIVERY.c.campaign == campaign,
            DELIVERY.c.state == DeliveryState.EXPIRED.value,
            is_notice(name),
            ~exists().where(
                later.c.campaign == DELIVERY.c.campaign,
                later.c.contact_id == DELIVERY.c.contact_id,
                later.c.id > DELIVERY.c.id,
                is_notice(later.c.message),
                notice_deadline(later.c.message) == notice_deadline(name),
                later.c.state.in_(
                    [
                        DeliveryState.PLANNED.value,
                        DeliveryState.SENDING.value,
                        DeliveryState.ACCEPTED.value,
                        DeliveryState.UNKNOWN.value,
                    ]
                ),
            ),
            # A deadline that moved expired its notices on purpose (and said so).
            ~DELIVERY.c.error.like("expired: the % deadline moved to %"),
        )
        .group_by(name)
        .order_by(name)
    )
    return {str(message): int(count) for message, count in rows}


def expire(engine: Engine, *, campaign: str, message: str, now: datetime) -> int:
    """Planned rows past their ``not_after`` (a later notice superseded them) expire."""
    with engine.begin() as conn:
        return move(
            conn,
            DELIVERY,
            phase_rows(campaign, message),
            DELIVERY.c.not_after.isnot(None),
            DELIVERY.c.not_after <= now,
            to=DeliveryState.EXPIRED,
            error="expired: superseded before it could be sent",
            updated_at=now,
        )


def waiting_zones(conn: Connection, *, campaign: str, message: str) -> list[str]:
    """The recipients' time zones among the phase's planned rows."""
    return [
        zone_name or ""
        for zone_name in conn.execute(
            select(DELIVERY.c.timezone)
            .where(
                phase_rows(campaign, message),
                PLANNED,
            )
            .distinct()
        ).scalars()
    ]


def suppress_ineligible(
    engine: Engine, *, config: HeraldConfig, phase: MessageKind, message: str | None = None
) -> dict[str, int]:
    """Mark planned rows that may no longer be sent as ``suppressed``, with the reason.

    Run before every send: an address unsubscribed, bounced or reported spam since
    planning, an account that churned, or (where the phase says so) one that migrated.
    """
    campaign = config.campaign.id
    of_phase = phase_rows(campaign, message or phase)  # planned ones: move() restricts
    counts: dict[str, int] = {}
    now = utcnow()
    with engine.begin() as conn:
        # One pass finds the rows any reason stops (usually none): at a million planned rows
        # a pass per reason read them all three times (1.5 s on SQLite). Each reason then
        # moves its own among those, in order: a row stopped for two takes the first.
        found = list(conn.execute(_ineligible_rows(config, phase, of_phase)).scalars())
        for name, condition, error in _ineligible(config, phase) if found else []:
            moved = 0
            for start in range(0, len(found), SUPPRESSED_CHUNK):
                moved += move(
                    conn,
                    DELIVERY,
                    of_phase,
                    DELIVERY.c.id.in_(found[start : start + SUPPRESSED_CHUNK]),
                    condition,
                    to=DeliveryState.SUPPRESSED,
                    error=error,
                    updated_at=now,
                )
            if moved:
                counts[name] = moved
    return counts


def _ineligible_rows(config: HeraldConfig, phase: MessageKind, of_phase: Any) -> Any:
    """SQL: the ids of the planned rows of ``of_phase`` that any reason of
    :func:`_ineligible` stops, read in one join of the ledger with contacts and accounts."""
    honoured = config.campaign.unsubscribe.honours(phase)
    listed = [SUPPRESSION.c.email == CONTACT.c.email]
    if not honoured:
        listed.append(SUPPRESSION.c.reason != SuppressionReason.UNSUBSCRIBE.value)
    reasons: list[Any] = [
        exists().where(*listed).correlate(CONTACT),
        ACCOUNT.c.lifecycle != AccountLifecycle.ACTIVE.value,
    ]
    if _excludes_migrated(config, phase):
        reasons.append(ACCOUNT.c.migration_state == MigrationState.MIGRATED.value)
    return (
        select(DELIVERY.c.id)
        .select_from(
            DELIVERY.join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id).join(
                ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id
            )
        )
        .where(of_phase, PLANNED, or_(*reasons))
        .order_by(DELIVERY.c.id)
    )


def _excludes_migrated(config: HeraldConfig, phase: MessageKind) -> bool:
    """Whether ``phase`` skips migrated accounts (a thank-you goes to them; a phase skips them
    where its audience says so)."""
    audience_of = "sunset" if phase == DEADLINE_EXTENDED else phase
    return (
        phase != THANK_YOU
        and config.campaign.audiences[cast(PhaseName, audience_of)].exclude_migrated
    )


def suppress_newly(
    engine: Engine, *, config: HeraldConfig, phase: MessageKind, message: str, after: int
) -> tuple[int, int]:
    """Suppress the planned rows of ``message`` whose address got a suppression with an id
    above ``after`` (one that came while the message was being sent: an unsubscribe, a
    bounce); returns (rows suppressed, the highest suppression id seen). Run before each
    batch: cheap when nothing came (one look at the newest suppression ids)."""
    with engine.begin() as conn:
        newest = conn.execute(
            select(func.max(SUPPRESSION.c.id)).where(SUPPRESSION.c.id > after)
        ).scalar_one()
        if newest is None:
            return 0, after
        recent = and_(SUPPRESSION.c.id > after, SUPPRESSION.c.id <= newest)
        condition, error = _address_suppressed(config, phase, recent)
        reached = select(CONTACT.c.id).where(
            CONTACT.c.email.in_(select(SUPPRESSION.c.email).where(recent))
        )
        moved = move(
            conn,
            DELIVERY,
            phase_rows(config.campaign.id, message),
            DELIVERY.c.contact_id.in_(reached),  # the few rows it can be, by index
            condition,
            to=DeliveryState.SUPPRESSED,
            error=error,
            updated_at=utcnow(),
        )
    return moved, int(newest)


def latest_suppression(engine: Engine) -> int:
    """The highest suppression id now (0 when there is none)."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.coalesce(func.max(SUPPRESSION.c.id), 0))).scalar_one())


def _address_suppressed(config: HeraldConfig, phase: MessageKind, *only: Any) -> tuple[Any, Any]:
    """SQL on DELIVERY: the row's address is suppressed for messages of ``phase`` (``only``
    narrows the suppressions that count), and the error it records (with the reason)."""
    honoured = config.campaign.unsubscribe.honours(phase)
    counted = [
        CONTACT.c.id == DELIVERY.c.contact_id,
        SUPPRESSION.c.email == CONTACT.c.email,
        *only,
    ]
    if not honoured:  # a service notice: an unsubscribe does not stop it
        counted.append(SUPPRESSION.c.reason != SuppressionReason.UNSUBSCRIBE.value)
    suppressed_reason = (
        select(func.min(SUPPRESSION.c.reason)).where(*counted).correlate(DELIVERY).scalar_subquery()
    )
    return (
        exists().where(*counted).correlate(DELIVERY),
        literal("address suppressed: ") + suppressed_reason,
    )


def _ineligible(config: HeraldConfig, phase: MessageKind) -> list[tuple[str, Any, Any]]:
    """Why a planned row of ``phase`` may no longer go: (name, SQL condition on DELIVERY, the
    error it records)."""

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
        ("address suppressed", *_address_suppressed(config, phase)),
        (
            "account churned",
            account_is(ACCOUNT.c.lifecycle != AccountLifecycle.ACTIVE.value),
            literal("account churned"),
        ),
    ]
    if _excludes_migrated(config, phase):
        checks.append(
            (
                "account migrated",
                account_is(ACCOUNT.c.migration_state == MigrationState.MIGRATED.value),
                literal("account migrated"),
            )
        )
    return checks
