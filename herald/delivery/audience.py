"""Who receives a phase's message, as one SQL query (never a Python loop over contacts).

A phase's audience, as of a day: contacts of *active* accounts whose segment (from the most
recent segmentation on or before that day) and role are in the phase's audience in
``campaign.yaml``, minus suppressed addresses, minus migrated accounts where the phase says
so. Each row carries the variant the contact gets (segment, role, locale), the locale mapped
to one the templates are checked in.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

from sqlalchemy import (
    ColumnElement,
    Connection,
    FromClause,
    Select,
    and_,
    case,
    exists,
    false,
    func,
    literal,
    or_,
    select,
)

from herald.config import DEADLINE_EXTENDED, THANK_YOU, HeraldConfig, MessageKind, PhaseName
from herald.delivery.calendar import is_notice, notice_deadline, timezone_expression
from herald.errors import HeraldError
from herald.models import (
    ACCOUNT,
    CONTACT,
    SEGMENT_ASSIGNMENT,
    SUPPRESSION,
    AccountLifecycle,
    DeliveryState,
    MigrationState,
    SuppressionReason,
)


class NoSegmentation(HeraldError):
    """No segmentation exists on or before the day: the audience cannot be chosen."""

    def __init__(self, as_of: date) -> None:
        super().__init__(
            f"no segmentation on or before {as_of}: run `herald segment --as-of {as_of}` first"
        )


def segmentation_day(conn: Connection, as_of: date) -> date:
    """The day of the most recent segmentation on or before ``as_of``."""
    day = conn.execute(
        select(func.max(SEGMENT_ASSIGNMENT.c.as_of)).where(SEGMENT_ASSIGNMENT.c.as_of <= as_of)
    ).scalar_one()
    if day is None:
        raise NoSegmentation(as_of)
    return day if isinstance(day, date) else date.fromisoformat(str(day))


def assigned_on(segmented_on: date | None) -> ColumnElement[bool]:
    """SQL join condition: the account's ``segment_assignment`` row of the segmentation on
    ``segmented_on`` (None: no segmentation, so no row)."""
    if segmented_on is None:
        return and_(SEGMENT_ASSIGNMENT.c.account_id == ACCOUNT.c.id, false())
    return and_(
        SEGMENT_ASSIGNMENT.c.account_id == ACCOUNT.c.id, SEGMENT_ASSIGNMENT.c.as_of == segmented_on
    )


def locale_expression(config: HeraldConfig) -> ColumnElement[str]:
    """The campaign locale of the contact's locale (:func:`herald.i18n.match_locale` in SQL):
    the same tag, else the first configured locale of its language, else the default.
    Contacts' locales are stored as ``ll`` or ``ll-RR`` (the importer normalises them)."""
    locales = config.campaign.locales
    first_of_language: dict[str, str] = {}
    for locale in locales:
        first_of_language.setdefault(locale.partition("-")[0].lower(), locale)
    same_language = [
        (
            or_(CONTACT.c.locale == language, CONTACT.c.locale.like(f"{language}-%")),
            literal(locale),
        )
        for language, locale in first_of_language.items()
    ]
    return case(
        (CONTACT.c.locale.in_(locales), CONTACT.c.locale),
        *same_language,
        else_=literal(locales[0]),
    )


def address_suppressed(
    config: HeraldConfig, kind: MessageKind, *only: ColumnElement[bool]
) -> ColumnElement[bool]:
    """SQL: the contact's address (``CONTACT.email``) is suppressed for messages of ``kind``:
    a bounce, a spam report or a manual suppression stops everything; an unsubscribe stops
    the messages that honour it (``unsubscribe.honoured_by``). ``only`` narrows the
    suppressions that count (say, to ids up to one)."""
    condition = exists().where(SUPPRESSION.c.email == CONTACT.c.email, *only)
    if not config.campaign.unsubscribe.honours(kind):
        condition = condition.where(SUPPRESSION.c.reason != SuppressionReason.UNSUBSCRIBE.value)
    return condition


def recipients(
    config: HeraldConfig,
    segmented_on: date,
    kind: MessageKind,
    *,
    suppressed_through: int | None = None,
) -> Select[tuple[int, str, str, str, str]]:
    """Contacts of active accounts, not suppressed for ``kind``, with the variant and time
    zone each gets: contact_id, segment, role, locale, timezone. Every audience narrows
    this one. ``suppressed_through``: only suppressions with an id up to it count."""
    through = [] if suppressed_through is None else [SUPPRESSION.c.id <= suppressed_through]
    return (
        select(
            CONTACT.c.id.label("contact_id"),
            SEGMENT_ASSIGNMENT.c.segment.label("segment"),
            CONTACT.c.role.label("role"),
            locale_expression(config).label("locale"),
            timezone_expression(
                config.campaign.delivery_window, CONTACT.c.timezone, ACCOUNT.c.region
            ).label("timezone"),
        )
        .select_from(CONTACT)
        .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
        .join(SEGMENT_ASSIGNMENT, assigned_on(segmented_on))
        .where(
            ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value,
            ~address_suppressed(config, kind, *through),
        )
    )


def audience(
    config: HeraldConfig,
    phase: PhaseName,
    segmented_on: date,
    *,
    segments: list[str] | None = None,
    kind: MessageKind | None = None,
    suppressed_through: int | None = None,
) -> Select[tuple[int, str, str, str, str]]:
    """The phase's audience: contact_id, segment, role, locale, timezone (one row per contact).

    ``segments`` narrows the phase's segments (a sunset notice is per segment); ``kind`` is
    the message sent to it when that is not the phase's own (a "deadline extended");
    ``suppressed_through`` counts only the suppressions up to that id.
    """
    wanted = config.campaign.audiences[phase]
    chosen = [s for s in wanted.segments if segments is None or s in segments]
    conditions: list[ColumnElement[bool]] = [
        SEGMENT_ASSIGNMENT.c.segment.in_(chosen),
        CONTACT.c.role.in_(wanted.roles),
    ]
    if wanted.exclude_migrated:
        conditions.append(ACCOUNT.c.migration_state != MigrationState.MIGRATED.value)
    return recipients(
        config, segmented_on, kind or phase, suppressed_through=suppressed_through
    ).where(*conditions)


def thank_you_audience(
    config: HeraldConfig, segmented_on: date, as_of: date, mailed: FromClause
) -> Select[tuple[int, str, str, str, str]]:
    """Contacts the campaign mailed (an accepted row in ``mailed``, the ledger) whose account
    has migrated by ``as_of``."""
    return recipients(config, segmented_on, THANK_YOU).where(
        ACCOUNT.c.migration_state == MigrationState.MIGRATED.value,
        ACCOUNT.c.migrated_on <= as_of,
        exists().where(
            mailed.c.contact_id == CONTACT.c.id,
            mailed.c.campaign == config.campaign.id,
            mailed.c.state == DeliveryState.ACCEPTED.value,
        ),
    )


def extended_audience(
    config: HeraldConfig, segmented_on: date, segment: str, mailed: FromClause
) -> Select[tuple[int, str, str, str, str]]:
    """The sunset audience of ``segment`` narrowed to contacts who were sent a notice (an
    accepted row in ``mailed``) for a deadline earlier than the segment's current one."""
    deadline = config.campaign.sunset[segment].isoformat()
    name = mailed.c.message
    chosen = audience(config, "sunset", segmented_on, segments=[segment], kind=DEADLINE_EXTENDED)
    return chosen.where(
        exists().where(
            mailed.c.contact_id == CONTACT.c.id,
            mailed.c.campaign == config.campaign.id,
            mailed.c.state == DeliveryState.ACCEPTED.value,
            is_notice(name),
            notice_deadline(name) < deadline,
        )
    )


@dataclass(frozen=True)
class AudienceCount:
    """Contacts of one segment and role in a phase's audience."""

    segment: str
    role: str
    contacts: int


def audience_counts(
    conn: Connection, config: HeraldConfig, phase: PhaseName, as_of: date
) -> list[AudienceCount]:
    """The audience counted by segment and role, in rollout order."""
    return counts_of(conn, config, audience(config, phase, segmentation_day(conn, as_of)))


def counts_of(
    conn: Connection, config: HeraldConfig, chosen: Select[tuple[int, str, str, str, str]]
) -> list[AudienceCount]:
    """The contacts of an audience query counted by segment and role, in rollout order."""
    query = chosen.subquery()
    rows = conn.execute(
        select(query.c.segment, query.c.role, func.count())
        .group_by(query.c.segment, query.c.role)
        .order_by(query.c.segment, query.c.role)
    ).all()
    order = {name: index for index, name in enumerate(config.segments.names)}
    counted = [AudienceCount(segment, role, count) for segment, role, count in rows]
    return sorted(counted, key=lambda c: (order.get(c.segment, len(order)), c.role))
