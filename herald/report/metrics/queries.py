"""The SQL of the metrics: aggregate queries that count, per segment, everything the metrics
are ratios of. Each is built here and run by :mod:`herald.report.metrics.compute`.

``cutoff`` is the first instant after the as-of day (UTC): only rows before it count.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from typing import Any

from sqlalchemy import (
    BigInteger,
    Column,
    ColumnElement,
    FromClause,
    Integer,
    MetaData,
    Select,
    Table,
    and_,
    case,
    false,
    func,
    or_,
    select,
    true,
)

from herald.config import PHASES
from herald.customers.rules import attribute_value
from herald.db import stored
from herald.delivery.audience import assigned_on
from herald.models import (
    ACCOUNT,
    ADOPTION_EVENT,
    CONTACT,
    DELIVERY,
    DELIVERY_EVENT_SUMMARY,
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

# The accounts one part of a computation covers: the first and the last account id (None:
# every account). Every count is a sum over accounts, so parts over disjoint spans add up to
# the whole (SQLite computes them side by side: compute._partitioned).
Span = tuple[int, int]


def _within(account_id: ColumnElement[int], span: Span | None) -> ColumnElement[bool]:
    return true() if span is None else account_id.between(*span)


def _n(*conditions: ColumnElement[bool]) -> ColumnElement[Any]:
    """COUNT(*) FILTER (WHERE ...): rows for which every condition holds.

    Per row, a FILTER that does not hold skips the aggregate's step, where SUM(CASE ...)
    steps for every row: at 1.2M deliveries and ~25 counts per account, the difference is
    most of what counting them costs on SQLite (and FILTER is Postgres's own syntax too).
    """
    return func.count().filter(and_(*conditions))


BROADCAST_PHASES: tuple[str, ...] = tuple(phase for phase in PHASES if phase != "sunset")


def in_phase(message: ColumnElement[str], phase: str) -> ColumnElement[bool]:
    """SQL: whether a ledger message belongs to ``phase`` (sunset notices: 'sunset-t30')."""
    notice = message.like("sunset%")
    if phase == "sunset":
        return notice
    if phase == OTHER_PHASE:
        return ~or_(message.in_(BROADCAST_PHASES), notice)
    return message == phase


# Each event flag of a delivery and the time of ``delivery_event_summary`` that sets it.
EVENT_FLAGS: dict[str, str] = {
    "delivered": "delivered_at",
    "opened": "opened_at",
    "clicked": "clicked_at",
    "hard": "hard_bounced_at",
    "spam": "spam_reported_at",
    "unsub": "unsubscribed_at",
}


FUNNEL_COUNTS = ("sent", "delivered", "opened", "clicked")
DELIVERABILITY_COUNTS = ("hard", "spam", "unsub")


def phase_index(message: ColumnElement[str]) -> ColumnElement[int]:
    """SQL: the position in ``FUNNEL_PHASES`` of the phase a ledger message belongs to."""
    named = [name for name in FUNNEL_PHASES if name != OTHER_PHASE]
    return case(
        *((in_phase(message, name), FUNNEL_PHASES.index(name)) for name in named),
        else_=FUNNEL_PHASES.index(OTHER_PHASE),
    )


# --------------------------------------------------------------------------- per account
#
# The campaign's counts take two steps. First, four per-account stages are each worked out
# once into a temporary table keyed by account (:func:`stages`, filled by
# ``compute._staged``): what the campaign sent each account and what came of it, its
# contacts, whether it adopted, its latest performance report. Then :func:`campaign_query`
# sums what each account adds, per segment (on SQLite one statement per segment). That is
# SQLite's way; Postgres hashes its joins and groups, and one statement with the stages
# as subqueries (:func:`inline_stages`) costs it less than filling tables (at 1M events,
# about 1.4 s against 1.9 s).
#
# Why (SQLite, bench/metrics.py's campaign): as subqueries of one statement, the stages
# were materialized and then copied again into automatic indexes of every column they
# carry, and the grouping by segment sorted each account's ~50 values; as tables keyed by
# account they are found by their key, and a statement over one segment's accounts (read
# in segment order from ``ix_segment_assignment_as_of_segment``) sums without sorting.
# Counted with callgrind at 1M events (instructions: the same every run, where seconds
# on a shared 2-core machine spread by a third), the computation went from 7,947M to
# 7,360M instructions, against 687M for one grouped pass over the events; at 10M events,
# 23.2 s to 20.4 s against a 4.4 s grouped pass (docs/benchmarks.md).

_STAGES = MetaData()


def _stage(name: str, *counts: str) -> Table:
    """A temporary table of per-account values (``account_id``: SQLite's rowid)."""
    return Table(
        name,
        _STAGES,
        Column("account_id", Integer, primary_key=True, autoincrement=False),
        *(Column(count, BigInteger) for count in counts),
        prefixes=["TEMPORARY"],
    )


SENT_COUNTS: tuple[str, ...] = (
    *(f"{count}_{name}" for name in FUNNEL_PHASES for count in FUNNEL_COUNTS),
    *DELIVERABILITY_COUNTS,
    "contacts_reached",
    "contacts_engaged",
)
SENT = _stage("herald_metrics_sent", *SENT_COUNTS)
CONTACTS = _stage("herald_metrics_contacts", "contacts", "writable")
ADOPTED = _stage("herald_metrics_adopted")
REPORTED = _stage("herald_metrics_reported", "faster")


def sent_per_account(campaign: str, cutoff: Any, span: Span | None = None) -> Select[Any]:
    """Per account with an accepted delivery: funnel counts per phase, reach and engagement.

    Only accepted deliveries (sent by the cutoff) are read, so every row is a message sent.
    Each delivery's events come from its one ``delivery_event_summary`` row (kept by the
    database as events come in: migration 0014), not from a fold of every event: a flag is
    set when the first event of its kind happened before the cutoff.

    Two levels: the first reads each delivery once and works out its phase and its flags,
    the second counts them per account. Kept apart (OFFSET 0), the first runs as a
    co-routine whose values the second reads: merged, SQLite evaluated the phase test (a
    LIKE for the sunset notices) and the flag tests again inside every one of the ~25
    aggregates. Each count is a COUNT(*) FILTER (:func:`_n`), stepped only for the rows
    it counts (measured at 10M events on SQLite, this level: 8.6 s merged with SUM(CASE),
    4.1 s as two levels, 3.1 s with FILTER). Contacts are counted DISTINCT here rather than
    through a per-contact level: one grouping of the deliveries instead of two (and fewer
    instructions than a grouping per account and phase, or per contact, measured). None is
    computed that another implies: an account reached a phase when it was sent one of its
    messages, and engaged when one of its contacts did.
    """
    d, summary = DELIVERY, DELIVERY_EVENT_SUMMARY
    sent = (
        select(
            CONTACT.c.account_id.label("account_id"),
            d.c.contact_id.label("contact_id"),
            phase_index(d.c.message).label("phase"),
            *(
                case((stored(summary.c[column]) < cutoff, 1), else_=0).label(flag)
                for flag, column in EVENT_FLAGS.items()
            ),
        )
        .select_from(
            d.join(CONTACT, CONTACT.c.id == d.c.contact_id).outerjoin(
                summary, summary.c.delivery_id == d.c.id
            )
        )
        .where(
            d.c.campaign == campaign,
            d.c.state == DeliveryState.ACCEPTED.value,
            stored(d.c.sent_at) < cutoff,
            _within(CONTACT.c.account_id, span),
        )
        .offset(0)
        .subquery("sent")
    )
    engaged = or_(sent.c.opened == 1, sent.c.clicked == 1)
    columns: list[Any] = [sent.c.account_id]
    for position, name in enumerate(FUNNEL_PHASES):
        phase = sent.c.phase == position
        columns += [
            _n(phase).label(f"sent_{name}"),
            _n(phase, sent.c.delivered == 1).label(f"delivered_{name}"),
            _n(phase, sent.c.opened == 1).label(f"opened_{name}"),
            _n(phase, sent.c.clicked == 1).label(f"clicked_{name}"),
        ]
    columns += [
        _n(sent.c.hard == 1).label("hard"),
        _n(sent.c.spam == 1).label("spam"),
        _n(sent.c.unsub == 1).label("unsub"),
        func.count(sent.c.contact_id.distinct()).label("contacts_reached"),
        func.count(sent.c.contact_id.distinct()).filter(engaged).label("contacts_engaged"),
    ]
    return select(*columns).group_by(sent.c.account_id)


def contacts_per_account(cutoff: Any, span: Span | None = None) -> Select[Any]:
    """Per account with contacts: how many, and how many not suppressed by the cutoff."""
    suppressed = (
        select(SUPPRESSION.c.email.label("email"))
        .where(stored(SUPPRESSION.c.created_at) < cutoff)
        .group_by(SUPPRESSION.c.email)
        .subquery("sup")
    )
    return (
        select(
            CONTACT.c.account_id.label("account_id"),
            func.count().label("contacts"),
            func.count(case((suppressed.c.email.is_(None), 1))).label("writable"),
        )
        .select_from(CONTACT.outerjoin(suppressed, suppressed.c.email == CONTACT.c.email))
        .where(_within(CONTACT.c.account_id, span))
        .group_by(CONTACT.c.account_id)
    )


def adopted_accounts(as_of: date, span: Span | None = None) -> Select[Any]:
    """Accounts that reported some adoption of the new product by ``as_of``."""
    return (
        select(ADOPTION_EVENT.c.account_id.label("account_id"))
        .where(
            ADOPTION_EVENT.c.observed_on <= as_of,
            ADOPTION_EVENT.c.adoption_pct > 0,
            _within(ADOPTION_EVENT.c.account_id, span),
        )
        .group_by(ADOPTION_EVENT.c.account_id)
    )


def latest_reports(cutoff: Any, span: Span | None = None) -> Select[Any]:
    """Per account, whether its latest performance report by the cutoff found the new
    product faster to import."""
    report = PERFORMANCE_REPORT
    ranked = (
        select(
            report.c.account_id.label("account_id"),
            case((report.c.new_import_ms < report.c.legacy_import_ms, 1), else_=0).label("faster"),
            func.row_number()
            .over(
                partition_by=report.c.account_id,
                order_by=(report.c.reported_at.desc(), report.c.id.desc()),
            )
            .label("latest"),
        )
        .where(stored(report.c.reported_at) < cutoff, _within(report.c.account_id, span))
        .subquery("reports")
    )
    return select(ranked.c.account_id, ranked.c.faster).where(ranked.c.latest == 1)


@dataclass(frozen=True)
class Stages:
    """Where :func:`campaign_query` reads each per-account stage from: its filled table, or
    its query as a subquery of the same statement (with the table's name and columns)."""

    sent: FromClause
    contacts: FromClause
    adopted: FromClause
    reported: FromClause


STAGED = Stages(sent=SENT, contacts=CONTACTS, adopted=ADOPTED, reported=REPORTED)


def _stage_queries(
    campaign: str, as_of: date, cutoff: Any, span: Span | None = None
) -> dict[str, Select[Any]]:
    """The query of each stage, by its name in :class:`Stages`."""
    return {
        "sent": sent_per_account(campaign, cutoff, span),
        "contacts": contacts_per_account(cutoff, span),
        "adopted": adopted_accounts(as_of, span),
        "reported": latest_reports(cutoff, span),
    }


def stages(
    campaign: str, as_of: date, cutoff: Any, span: Span | None = None
) -> list[tuple[Table, Select[Any]]]:
    """Each per-account stage's table and the query that fills it (over ``span``'s accounts)."""
    return [
        (getattr(STAGED, name), query)
        for name, query in _stage_queries(campaign, as_of, cutoff, span).items()
    ]


def inline_stages(campaign: str, as_of: date, cutoff: Any) -> Stages:
    """The stages as subqueries: nothing to fill (Postgres)."""
    queries = _stage_queries(campaign, as_of, cutoff)
    return Stages(
        **{name: query.subquery(getattr(STAGED, name).name) for name, query in queries.items()}
    )


def segments_query(segmented_on: date | None) -> Select[Any]:
    """The segments of the segmentation on ``segmented_on`` (none without one)."""
    assigned = SEGMENT_ASSIGNMENT
    day = assigned.c.as_of == segmented_on if segmented_on is not None else false()
    return select(assigned.c.segment).where(day).distinct().order_by(assigned.c.segment)


def _per_account(when: ColumnElement[bool] | None, value: ColumnElement[Any] | None) -> Any:
    """What one account adds: ``value`` (None: 1) when ``when`` holds (None: always), else 0."""
    if when is None:
        if value is None:
            raise ValueError("a count without a condition counts every account: use accounts")
        return value
    return case((when, 1 if value is None else value), else_=0)


def campaign_query(
    as_of: date,
    segmented_on: date | None,
    segment: str | None = None,
    *,
    grouped: bool = False,
    sources: Stages = STAGED,
    span: Span | None = None,
) -> Select[Any]:
    """Every account-level and delivery-level count of the campaign, read from the
    per-account stages (``sources``: by default their tables, which must be filled);
    ``accounts`` is how many accounts a row covers.

    One row over one segment's accounts (``segment`` None: the accounts the segmentation
    did not assign), or with ``grouped`` a row per segment, its ``segment`` column None for
    the unassigned. SQLite groups by sorting every row with all its values, so it runs one
    statement per segment, each reading its accounts in segment order; Postgres groups by
    hashing, and one grouped statement costs it less than four. ``span``: only those
    accounts (their stages must cover them)."""
    a, sent, contacts = ACCOUNT, sources.sent, sources.contacts
    active = a.c.lifecycle == AccountLifecycle.ACTIVE.value
    migrated = and_(
        active,
        a.c.migration_state == MigrationState.MIGRATED.value,
        stored(a.c.migrated_on) <= as_of,
    )
    early = and_(active, attribute_value(PERFORMANCE_ATTRIBUTE, "bool") == true())
    reached = and_(active, sent.c.account_id.is_not(None))
    unreached = and_(active, sent.c.account_id.is_(None))
    account_engaged = sent.c.contacts_engaged > 0
    # Not held against reach: no contact left to write to, or moved before any message.
    unreachable = and_(unreached, func.coalesce(contacts.c.writable, 0) == 0)
    moved_first = and_(unreached, func.coalesce(contacts.c.writable, 0) > 0, migrated)

    # Per account: what it adds to each count of its segment, as (name, when, value): the
    # account adds ``value`` (None: 1) when ``when`` holds (None: always, with a value).
    adds: list[tuple[str, ColumnElement[bool] | None, ColumnElement[Any] | None]] = [
        ("active", active, None),
        ("active_contacts", active, func.coalesce(contacts.c.contacts, 0)),
        ("reached", reached, None),
        ("unreachable", unreachable, None),
        ("moved_first", moved_first, None),
        ("engaged", and_(reached, account_engaged), None),
        ("contacts_reached", reached, sent.c.contacts_reached),
        ("contacts_engaged", reached, sent.c.contacts_engaged),
        ("migrated", migrated, None),
        ("early", early, None),
        (
            "early_engaged",
            and_(early, or_(account_engaged, sources.adopted.c.account_id.is_not(None))),
            None,
        ),
        ("reported", and_(migrated, sources.reported.c.account_id.is_not(None)), None),
        ("validated", and_(migrated, sources.reported.c.faster == 1), None),
    ]
    for name in FUNNEL_PHASES:
        in_phase = and_(active, sent.c[f"sent_{name}"] > 0)
        adds += [
            (f"reached_{name}", in_phase, None),
            (f"migrated_{name}", and_(in_phase, migrated), None),
        ]
        adds += [(f"{count}_{name}", None, sent.c[f"{count}_{name}"]) for count in FUNNEL_COUNTS]
    adds += [(name, None, sent.c[name]) for name in DELIVERABILITY_COUNTS]
    assigned = SEGMENT_ASSIGNMENT
    if grouped:
        accounts: Any = a.outerjoin(assigned, assigned_on(segmented_on))
        chosen: Any = true()
    elif segment is None:
        # Accounts with no row in the segmentation (every account without one).
        accounts = a.outerjoin(assigned, assigned_on(segmented_on))
        chosen = assigned.c.id.is_(None)
    else:
        # Driven by the segmentation's index: one segment's accounts, in one pass.
        accounts = assigned.join(a, a.c.id == assigned.c.account_id)
        chosen = and_(assigned.c.as_of == segmented_on, assigned.c.segment == segment)
    chosen = and_(chosen, _within(a.c.id, span))
    joined = (
        accounts.outerjoin(sent, sent.c.account_id == a.c.id)
        .outerjoin(contacts, contacts.c.account_id == a.c.id)
        .outerjoin(sources.adopted, sources.adopted.c.account_id == a.c.id)
        .outerjoin(sources.reported, sources.reported.c.account_id == a.c.id)
    )
    if not grouped:
        # One segment's accounts summed as they are read, each count stepped only for the
        # accounts it counts (COUNT(*) FILTER, SUM(...) FILTER: see _n), without a
        # co-routine handing ~50 values an account to an outer query.
        sums: list[Any] = [func.count().label("accounts")]
        for name, when, value in adds:
            if value is None:
                total: Any = func.count()
            else:
                total = func.sum(value)
            sums.append((total if when is None else total.filter(when)).label(name))
        return select(*sums).select_from(joined).where(chosen)
    # Grouped (Postgres): each value worked out once per account, kept apart (OFFSET 0),
    # then summed per segment.
    per_account = (
        select(
            assigned.c.segment.label("segment"),
            *(_per_account(when, value).label(name) for name, when, value in adds),
        )
        .select_from(joined)
        .where(chosen)
        .offset(0)
        .subquery("per_account")
    )
    return select(
        per_account.c.segment,
        func.count().label("accounts"),
        *(
            func.sum(column).label(column.name)
            for column in per_account.c
            if column.name != "segment"
        ),
    ).group_by(per_account.c.segment)


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
