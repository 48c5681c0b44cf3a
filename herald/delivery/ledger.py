"""The delivery ledger's state machine, and what a batch does to its rows: claim, request,
record, release.

Exactly once rests on three rules, each enforced in the database:

1. *Plan before sending.* A phase's audience is inserted as ``planned`` rows in one
   INSERT ... SELECT ... ON CONFLICT DO NOTHING on the unique key (campaign, message,
   contact): a rerun adds nothing, and nothing is sent that is not in the ledger
   (:mod:`herald.delivery.planning`).
2. *Claim before requesting.* A batch claims up to a request's worth of planned rows
   (``sending``, with its batch id) in one statement; on Postgres the candidate rows are
   locked with SKIP LOCKED, so two workers never claim the same row, and a phase's claims
   take turns on a transaction advisory lock (SQLite's write lock does the same), so each
   takes the lowest rows left and only a phase's last batch is short. The batch is marked
   ``requesting`` and committed *before* the request leaves the process.
3. *Never guess.* When a worker dies, its batches that never reached ``requesting`` go
   back to ``planned`` (nothing left the process); those that did become ``unknown``: the
   provider may have accepted them, so they are not re-sent until an operator or SendGrid's
   events settle them (:mod:`herald.delivery.recovery`).

Every change of state, of a ledger row (``delivery``, ``report_delivery``) or of a batch
(``send_batch``), goes through :func:`move`, which knows the allowed moves
(:data:`DELIVERY_MOVES`, :data:`BATCH_MOVES`): its UPDATE only touches rows in a state the
target may follow, so a row that something else moved meanwhile is left alone, and a move
the machine does not have raises :class:`IllegalMove` before anything is written.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from types import MappingProxyType
from typing import Any, Final, NamedTuple

from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Table,
    and_,
    bindparam,
    exists,
    func,
    insert,
    literal_column,
    or_,
    select,
    update,
)
from sqlalchemy.sql import Select
from sqlalchemy.sql.dml import Update

from herald.delivery.keys import Outcome
from herald.models import (
    ACCOUNT,
    CONTACT,
    DELIVERY,
    EMAIL_EVENT,
    REPORT_DELIVERY,
    SEND_BATCH,
    SEND_WORKER,
    BatchState,
    DeliveryState,
    utcnow,
)

# The tables whose rows a batch claims: customer messages and the leadership report's.
# Both go through the same batches, states and recovery.
BATCH_ROWS = (DELIVERY, REPORT_DELIVERY)

SETTLED_BY_EVENTS = "settled: SendGrid reported an event for it"

LAST_ID: Final = 2**63 - 1  # above every row id: a batch with no recorded range

# The first key of the Postgres advisory lock a phase's claims take turns on (the second is
# a hash of the phase's campaign and message): "HRLD".
CLAIM_LOCK: Final = 0x48524C44

# --------------------------------------------------------------------------- state machine

_D = DeliveryState
_B = BatchState

# Where a ledger row may go from each state (the diagram is DeliveryState's docstring).
DELIVERY_MOVES: Final[Mapping[DeliveryState, frozenset[DeliveryState]]] = MappingProxyType(
    {
        _D.PLANNED: frozenset({_D.SENDING, _D.SUPPRESSED, _D.EXPIRED}),
        _D.SENDING: frozenset({_D.PLANNED, _D.ACCEPTED, _D.FAILED, _D.UNKNOWN}),
        _D.UNKNOWN: frozenset({_D.PLANNED, _D.ACCEPTED}),  # settled by hand or by events
        _D.FAILED: frozenset({_D.PLANNED, _D.ACCEPTED, _D.SENDING}),  # sending: a report's rerun
        _D.ACCEPTED: frozenset(),
        _D.SUPPRESSED: frozenset(),
        _D.EXPIRED: frozenset(),
    }
)

# Where a batch may go from each state (the diagram is BatchState's docstring).
BATCH_MOVES: Final[Mapping[BatchState, frozenset[BatchState]]] = MappingProxyType(
    {
        _B.CLAIMED: frozenset({_B.REQUESTING, _B.RELEASED, _B.FAILED}),
        _B.REQUESTING: frozenset({_B.ACCEPTED, _B.FAILED, _B.UNKNOWN}),
        _B.ACCEPTED: frozenset(),
        _B.FAILED: frozenset(),
        _B.UNKNOWN: frozenset(),
        _B.RELEASED: frozenset(),
    }
)


class IllegalMove(ValueError):
    """A change of state the ledger's state machine does not have: a bug, never data."""


def _machine(state: DeliveryState | BatchState) -> Mapping[Any, frozenset[Any]]:
    return DELIVERY_MOVES if isinstance(state, DeliveryState) else BATCH_MOVES


def check_move(from_: DeliveryState | BatchState, to: DeliveryState | BatchState) -> None:
    """Raise :class:`IllegalMove` unless a row in ``from_`` may move to ``to``.

    The two machines share some names (``accepted``, ``failed``, ``unknown``), and a StrEnum
    compares equal to its text, so the states must also be of the same kind."""
    if type(from_) is not type(to) or to not in _machine(from_)[from_]:
        raise IllegalMove(f"{type(from_).__name__} {from_} cannot move to {to}")


def sources(to: DeliveryState | BatchState) -> frozenset[Any]:
    """The states a row may move to ``to`` from."""
    return frozenset(state for state, targets in _machine(to).items() if to in targets)


def moving(
    rows: Table,
    *where: Any,
    to: DeliveryState | BatchState,
    from_: Iterable[DeliveryState | BatchState] | None = None,
    **values: Any,
) -> Update:
    """The UPDATE that moves the rows of ``rows`` matching ``where`` to state ``to``, setting
    ``values`` too (what :func:`move` runs; a claim puts it inside a larger statement).

    ``rows`` is a table of :data:`BATCH_ROWS` (``to`` a DeliveryState) or ``send_batch``
    (``to`` a BatchState). Only rows in ``from_`` move (default: every state ``to`` may
    follow); a state in ``from_`` that ``to`` may not follow raises :class:`IllegalMove`
    before anything is written.
    """
    if rows is SEND_BATCH:
        if not isinstance(to, BatchState):
            raise IllegalMove(f"a send batch takes a BatchState, not {to!r}")
    elif not any(rows is table for table in BATCH_ROWS) or not isinstance(to, DeliveryState):
        raise IllegalMove(f"{rows.name} rows take no move to {to!r}")
    if "state" in values:
        raise IllegalMove("the state is set by `to`, not among the values")
    expected = sources(to) if from_ is None else frozenset(from_)
    for state in expected:
        check_move(state, to)
    if not expected:
        raise IllegalMove(f"nothing may move to {to}")
    states = sorted(state.value for state in expected)
    return update(rows).where(*where, state_in(rows, states)).values(state=to.value, **values)


def move(
    conn: Connection,
    rows: Table,
    *where: Any,
    to: DeliveryState | BatchState,
    from_: Iterable[DeliveryState | BatchState] | None = None,
    params: Sequence[Mapping[str, Any]] | None = None,
    **values: Any,
) -> int:
    """Move the rows of ``rows`` matching ``where`` to state ``to`` (the statement is
    :func:`moving`'s), setting ``values`` too; returns how many moved. ``params``: run once
    per mapping (bound parameters)."""
    statement = moving(rows, *where, to=to, from_=from_, **values)
    if params is None:
        return max(conn.execute(statement).rowcount, 0)
    # SQLAlchemy keeps an executemany's rowcount only when asked.
    statement = statement.execution_options(preserve_rowcount=True)
    return max(conn.execute(statement, list(params)).rowcount, 0)


def state_in(rows: Table, states: Iterable[str]) -> ColumnElement[bool]:
    """SQL: the rows of ``rows`` in one of ``states``, the states written in the statement
    (they are the ledger's own names, never input): SQLite reads its partial index of planned
    rows (``ix_delivery_planned``) only for a condition it sees, not a bound parameter."""
    names = [str(state) for state in states]  # a StrEnum's str() is its value
    if not all(name.isidentifier() for name in names):
        raise ValueError(f"not a state: {names}")
    written: list[ColumnElement[str]] = [literal_column(f"'{name}'") for name in names]
    return rows.c.state == written[0] if len(written) == 1 else rows.c.state.in_(written)


# The ledger's planned rows (a WHERE clause that SQLite answers from ix_delivery_planned).
PLANNED: Final = state_in(DELIVERY, [DeliveryState.PLANNED])


def phase_rows(campaign: str, message: str) -> Any:
    """The ledger rows of one message of a campaign (a WHERE clause)."""
    return and_(DELIVERY.c.campaign == campaign, DELIVERY.c.message == message)


# --------------------------------------------------------------------------- claims


@dataclass(frozen=True)
class Worker:
    """This process, sending one phase (registered by :func:`recovery.start_worker`)."""

    id: str
    campaign: str
    message: str


class ClaimedRow(NamedTuple):
    """One claimed ledger row with what rendering and sending need (a named tuple: a batch
    makes 1,000 of them, at less than half a frozen dataclass's cost each)."""

    delivery_id: int
    contact_id: int
    segment: str
    role: str
    locale: str
    email: str
    name: str | None
    account_name: str
    timezone: str | None = None  # the recipient's (as planned): their own date counts


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
    # Zones inside the window's hours on any day: where critical rows may go now.
    critical_zones: list[str] | None = None
    cap_messages: int | None = None
    cap_days: int = 7


def claim(
    engine: Engine,
    *,
    worker: Worker,
    limit: int,
    gate: Gate | None = None,
    after: int = 0,
    heartbeat_every: float = 0.0,
) -> Claim | None:
    """Claim up to ``limit`` planned rows of the worker's phase, lowest ids first; None if none.

    ``after``: only rows with a higher id (a sender's watermark: it need not walk again past
    the rows it already sent, which Postgres keeps as dead index entries until a vacuum).

    The rows are claimed and the batch that holds them recorded (with their count and id
    range) in one transaction, which also proves the worker alive: its heartbeat, written
    when ``heartbeat_every`` seconds have passed since the last one (a sender passes a tenth
    of its lease; 0: every claim writes it)."""
    batch_id = str(uuid.uuid4())
    now = gate.now if gate else utcnow()
    claimable = (
        phase_rows(worker.campaign, worker.message),
        PLANNED,
        DELIVERY.c.id > after,
        *_gated(gate),
    )
    candidates = select(DELIVERY.c.id).where(*claimable).order_by(DELIVERY.c.id).limit(limit)
    postgres = engine.dialect.name == "postgresql"
    with engine.begin() as conn:
        if postgres:
            # Claims of one phase take turns: racing SKIP LOCKED scans would take alternate
            # rows, and the phase would end in several short batches (more requests).
            phase = f"{worker.campaign}\x1f{worker.message}"
            conn.execute(select(func.pg_advisory_xact_lock(CLAIM_LOCK, func.hashtext(phase))))
        # Written by every claim, the heartbeat made a sender's claims in flight queue on its
        # worker row; on SQLite the statement takes the write lock even when it writes nothing.
        stale = now - timedelta(seconds=heartbeat_every)
        conn.execute(
            update(SEND_WORKER)
            .where(SEND_WORKER.c.id == worker.id, SEND_WORKER.c.heartbeat_at <= stale)
            .values(heartbeat_at=now)
        )
        if postgres:
            rows = _claim_postgres(conn, candidates, batch_id=batch_id, now=now)
            taken = (len(rows), rows[0].delivery_id, rows[-1].delivery_id) if rows else None
        else:
            taken = _claim_sqlite(conn, candidates, claimable, batch_id=batch_id, now=now)
        if taken is None:
            return None
        count, low, high = taken
        open_batch(
            conn,
            batch_id=batch_id,
            worker=worker,
            now=now,
            recipients=count,
            first_row_id=low,
            last_row_id=high,
        )
    if not postgres:
        # Read after the commit: the write lock is not held while the rows are read.
        with engine.connect() as conn:
            found = _claimed_rows(
                DELIVERY, DELIVERY.c.id.between(low, high), DELIVERY.c.batch_id == batch_id
            )
            rows = [ClaimedRow._make(row) for row in conn.execute(found)]
    return Claim(batch_id, rows)


# What a claimed row carries: the ledger's columns, then its contact's and account's.
_CLAIMED_LEDGER = (
    DELIVERY.c.id,
    DELIVERY.c.contact_id,
    DELIVERY.c.segment,
    DELIVERY.c.role,
    DELIVERY.c.locale,
    DELIVERY.c.timezone,
)


def _claimed_rows(source: Any, *where: Any) -> Select[Any]:
    """The claimed rows of ``source`` (the ledger, or a statement returning its columns)
    with their contact's address and name and their account's name, in id order."""
    return (
        select(
            source.c.id,
            source.c.contact_id,
            source.c.segment,
            source.c.role,
            source.c.locale,
            CONTACT.c.email,
            CONTACT.c.name,
            ACCOUNT.c.name,
            source.c.timezone,
        )
        .select_from(source)
        .join(CONTACT, CONTACT.c.id == source.c.contact_id)
        .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
        .where(*where)
        .order_by(source.c.id)
    )


def _claim_postgres(
    conn: Connection, candidates: Select[Any], *, batch_id: str, now: datetime
) -> list[ClaimedRow]:
    """Postgres: one statement locks the candidates (skipping rows another worker holds),
    claims them and returns them with their contact and account.

    The candidates are a ``MATERIALIZED`` CTE, locked once: inside ``IN (subquery)`` or an
    inlined CTE, Postgres may re-run a ``SKIP LOCKED`` query per row and claim more than the
    limit."""
    chosen = candidates.with_for_update(skip_locked=True).cte("candidates")
    chosen = chosen.prefix_with("MATERIALIZED")
    claimed = (
        claiming(
            DELIVERY,
            DELIVERY.c.id == chosen.c.id,
            batch_id=batch_id,
            now=now,
            from_=[DeliveryState.PLANNED],
        )
        .returning(*_CLAIMED_LEDGER)
        .cte("claimed")
    )
    return [ClaimedRow._make(row) for row in conn.execute(_claimed_rows(claimed))]


def _claim_sqlite(
    conn: Connection,
    candidates: Select[Any],
    claimable: tuple[Any, ...],
    *,
    batch_id: str,
    now: datetime,
) -> tuple[int, int, int] | None:
    """SQLite: claim the candidates; how many, and the lowest and highest id (None: none).

    The transaction holds the database's write lock since its first statement (the
    heartbeat's), so no other writer moves a row between the candidates' read and their
    claim. The candidates are the first rows by id that are ``claimable``: every claimable
    row between the lowest and the highest of them is one of them, so the claim takes the
    claimable rows of that id range (one aggregate read and one range update, instead of
    a thousand ids read and sent back as parameters)."""
    chosen = candidates.subquery()
    count, low, high = conn.execute(
        select(func.count(), func.min(chosen.c.id), func.max(chosen.c.id))
    ).one()
    if not count:
        return None
    claimed = claim_rows(
        conn,
        DELIVERY,
        DELIVERY.c.id.between(low, high),
        *claimable,
        batch_id=batch_id,
        now=now,
        from_=[DeliveryState.PLANNED],
    )
    if claimed != count:  # cannot happen under the write lock: never record a wrong range
        raise RuntimeError(f"claimed {claimed} rows of {count} candidates")
    return count, low, high


def batch_rows(rows: Table, batch_id: str) -> ColumnElement[bool]:
    """SQL: the rows of ``rows`` (a table of :data:`BATCH_ROWS`) in the batch ``batch_id``.

    The ledger has no index on ``batch_id`` (a send's updates then write no index entry):
    its rows are looked up within the id range the batch's claim recorded, by primary key.
    A batch without one (a report's, or one claimed before the range was recorded) is
    looked up everywhere."""
    bound = SEND_BATCH.c.id == batch_id
    low = select(SEND_BATCH.c.first_row_id).where(bound).scalar_subquery()
    high = select(SEND_BATCH.c.last_row_id).where(bound).scalar_subquery()
    return and_(
        rows.c.id.between(func.coalesce(low, 0), func.coalesce(high, LAST_ID)),
        rows.c.batch_id == batch_id,
    )


def move_batch_rows(
    conn: Connection,
    batch_id: str,
    /,
    *,
    to: DeliveryState,
    from_: Iterable[DeliveryState] | None = None,
    **values: Any,
) -> int:
    """:func:`move` the rows of the batch ``batch_id``, whichever table of :data:`BATCH_ROWS`
    holds them (found by :func:`batch_rows`); returns how many moved."""
    return sum(
        move(conn, rows, batch_rows(rows, batch_id), to=to, from_=from_, **values)
        for rows in BATCH_ROWS
    )


def replan_batch_rows(conn: Connection, batch_id: str, /, *, now: datetime) -> int:
    """Put the rows of the claimed batch ``batch_id`` back to planned, out of the batch
    (nothing was requested: a release, or a stopped sender's settling); returns how many."""
    return move_batch_rows(
        conn,
        batch_id,
        to=DeliveryState.PLANNED,
        from_=[DeliveryState.SENDING],
        batch_id=None,
        updated_at=now,
    )


def open_batch(
    conn: Connection,
    *,
    batch_id: str,
    worker: Worker,
    now: datetime,
    recipients: int = 0,
    first_row_id: int | None = None,
    last_row_id: int | None = None,
) -> None:
    """Record a new claim of ``worker`` (``claimed``), in the transaction that takes its rows
    (with their id range, when they are ledger rows: :func:`batch_rows` finds them by it)."""
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
            first_row_id=first_row_id,
            last_row_id=last_row_id,
        )
    )


def claiming(
    rows: Table,
    *where: Any,
    batch_id: str,
    now: datetime,
    from_: Iterable[DeliveryState],
    **values: Any,
) -> Update:
    """The UPDATE that claims the rows of ``rows`` (a table of :data:`BATCH_ROWS`) matching
    ``where`` and in ``from_`` for the batch: sending, in this batch, one more attempt."""
    return moving(
        rows,
        *where,
        to=DeliveryState.SENDING,
        from_=from_,
        batch_id=batch_id,
        claimed_at=now,
        attempts=rows.c.attempts + 1,
        updated_at=now,
        **values,
    )


def claim_rows(
    conn: Connection,
    rows: Table,
    *where: Any,
    batch_id: str,
    now: datetime,
    from_: Iterable[DeliveryState],
    **values: Any,
) -> int:
    """Claim the rows of ``rows`` matching ``where`` (:func:`claiming`); returns how many."""
    statement = claiming(rows, *where, batch_id=batch_id, now=now, from_=from_, **values)
    return max(conn.execute(statement).rowcount, 0)


def _gated(gate: Gate | None) -> list[Any]:
    if gate is None:
        return []
    conditions: list[Any] = [
        or_(DELIVERY.c.not_before.is_(None), DELIVERY.c.not_before <= gate.now),
        or_(DELIVERY.c.not_after.is_(None), DELIVERY.c.not_after > gate.now),
    ]
    if gate.zones is not None:
        zoned: ColumnElement[bool] = DELIVERY.c.timezone.in_(gate.zones)
        if gate.critical_zones:
            zoned = or_(
                zoned,
                and_(DELIVERY.c.critical.is_(True), DELIVERY.c.timezone.in_(gate.critical_zones)),
            )
        conditions.append(zoned)
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


# --------------------------------------------------------------------------- a batch's request


def mark_requesting(engine: Engine, *, batch_id: str) -> None:
    """Commit that the batch's request is about to leave: from now on a crash means unknown.

    Raises :class:`IllegalMove` when the batch is no longer claimed (a recovery released
    it, and its rows may be claimed by another sender): its request must not leave."""
    with engine.begin() as conn:
        moved = move(conn, SEND_BATCH, SEND_BATCH.c.id == batch_id, to=BatchState.REQUESTING)
    if not moved:
        raise IllegalMove(f"batch {batch_id} is no longer claimed: its request must not leave")


def release(engine: Engine, *, batch_id: str, reason: str) -> None:
    """Put a claimed batch's rows back to planned (nothing was requested)."""
    now = utcnow()
    with engine.begin() as conn:
        replan_batch_rows(conn, batch_id, now=now)
        move(
            conn,
            SEND_BATCH,
            SEND_BATCH.c.id == batch_id,
            to=BatchState.RELEASED,
            error=reason,
            finished_at=now,
        )


def refuse(engine: Engine, *, batch_id: str, refused: dict[int, str]) -> int:
    """Rows of a claimed batch that its transport refused (a value it cannot put in a
    header): ``failed``, each with its reason, before the request leaves. Returns how many."""
    if not refused:
        return 0
    now = utcnow()
    params = [{"row_id": row_id, "reason": reason[:2000]} for row_id, reason in refused.items()]
    count = 0
    with engine.begin() as conn:
        for rows in BATCH_ROWS:
            count += move(
                conn,
                rows,
                rows.c.id == bindparam("row_id"),
                rows.c.batch_id == batch_id,
                to=DeliveryState.FAILED,
                from_=[DeliveryState.SENDING],
                params=params,
                error=bindparam("reason"),
                updated_at=now,
            )
    return count


def record(
    engine: Engine,
    *,
    batch_id: str,
    outcome: Outcome,
    requests: int,
    http_status: int | None = None,
    provider_message_id: str | None = None,
    error: str | None = None,
    at: datetime | None = None,
) -> None:
    """Record what became of a batch's request, on the batch and on every one of its rows.

    Only rows still ``sending`` take the outcome (a recovery may have settled some), and
    only a batch still claimed or requesting (a batch a recovery settled keeps its state)."""
    outcome = Outcome(outcome)
    now = at or utcnow()
    values: dict[str, Any] = {"error": error, "updated_at": now}
    if outcome is Outcome.ACCEPTED:
        values.update(provider_message_id=provider_message_id, sent_at=now)
    with engine.begin() as conn:
        move_batch_rows(
            conn, batch_id, to=DeliveryState(outcome.value), from_=[DeliveryState.SENDING], **values
        )
        if outcome is Outcome.UNKNOWN:
            settle_proven(conn, batch_rows(DELIVERY, batch_id))
        move(
            conn,
            SEND_BATCH,
            SEND_BATCH.c.id == batch_id,
            to=BatchState(outcome.value),
            requests=requests,
            http_status=http_status,
            provider_message_id=provider_message_id,
            error=error,
            finished_at=now,
        )


def settle_proven(conn: Connection, *where: Any) -> int:
    """Unknown rows (among ``where``) that SendGrid already reported an event for were
    accepted: mark them so. Events can arrive before the request's answer, or before a
    crashed sender's rows are found; without this they would wait for a person, who might
    send them again."""
    proven = exists().where(EMAIL_EVENT.c.delivery_id == DELIVERY.c.id)
    return move(
        conn,
        DELIVERY,
        *where,
        proven,
        to=DeliveryState.ACCEPTED,
        from_=[DeliveryState.UNKNOWN],
        error=SETTLED_BY_EVENTS,
        sent_at=DELIVERY.c.claimed_at,
        updated_at=utcnow(),
    )


# --------------------------------------------------------------------------- reading


def state_counts(conn: Connection, *, campaign: str, message: str) -> dict[str, int]:
    """Ledger rows of a phase per state (every state present, zeros included)."""
    counts = {state.value: 0 for state in DeliveryState}
    for state, count in conn.execute(
        select(DELIVERY.c.state, func.count())
        .where(phase_rows(campaign, message))
        .group_by(DELIVERY.c.state)
    ):
        counts[state] = count
    return counts


def failure_reasons(
    conn: Connection, *, campaign: str, message: str, limit: int = 20
) -> list[tuple[str, int]]:
    """Why a phase's rows failed: each distinct reason with its row count, most rows first."""
    count = func.count().label("rows")
    rows = conn.execute(
        select(func.coalesce(DELIVERY.c.error, "no reason recorded"), count)
        .where(phase_rows(campaign, message), DELIVERY.c.state == DeliveryState.FAILED.value)
        .group_by(DELIVERY.c.error)
        .order_by(count.desc())
        .limit(limit)
    )
    return [(str(reason), int(rows_)) for reason, rows_ in rows]


def timezone_fallbacks(conn: Connection, *, campaign: str, message: str) -> int:
    """Rows of a message whose contact has no time zone (their region's window is used)."""
    return int(
        conn.execute(
            select(func.count())
            .select_from(DELIVERY)
            .join(CONTACT, CONTACT.c.id == DELIVERY.c.contact_id)
            .where(
                phase_rows(campaign, message),
                or_(CONTACT.c.timezone.is_(None), CONTACT.c.timezone == ""),
            )
        ).scalar_one()
    )
