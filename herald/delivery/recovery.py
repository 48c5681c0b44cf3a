"""Senders and what they leave behind: register a worker, settle a dead one's batches, and
let a person settle the rows whose fate is unknown.

*Never guess.* When a worker dies, its batches that never reached ``requesting`` go back to
``planned`` (nothing left the process); those that did become ``unknown``: the provider may
have accepted them, so they are not re-sent until an operator or SendGrid's events settle
them (``herald deliveries resolve``).
"""

from __future__ import annotations

import os
import socket
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Literal

from sqlalchemy import Connection, Engine, insert, or_, select, update

from herald import audit
from herald.db import refresh_statistics
from herald.delivery.ledger import (
    Worker,
    batch_rows,
    move,
    move_batch_rows,
    phase_rows,
    replan_batch_rows,
    settle_proven,
)
from herald.models import (
    CONTACT,
    DELIVERY,
    SEND_BATCH,
    SEND_WORKER,
    BatchState,
    DeliveryState,
    as_utc,
    utcnow,
)

# --------------------------------------------------------------------------- workers


def start_worker(
    engine: Engine, *, campaign: str, message: str, transport: str, flow_run_id: str | None = None
) -> Worker:
    """Register this process as a sender of the phase (in the Prefect flow run
    ``flow_run_id``, when it runs in one)."""
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
                flow_run_id=flow_run_id,
            )
        )
    return worker


def finish_worker(engine: Engine, *, worker: Worker, outcome: str, moved: int = 0) -> None:
    """Mark this process's sending finished (cleanly or not: ``outcome`` says which).

    Batches it leaves open (stopped by an interrupt between claim and answer) are settled as
    a recovery would: never requested, back to planned; requested, unknown. ``moved``, the
    ledger rows this sender moved on (sent, failed, suppressed, ...), refreshes the planner's
    statistics when there were many (:func:`herald.db.refresh_statistics`): the next run's
    look for planned rows is then an index read, not a scan of every row it sent."""
    with engine.begin() as conn:
        _settle_worker(conn, worker_id=worker.id, outcome=outcome)
    refresh_statistics(engine, moved, "delivery", "send_batch")


def _settle_worker(conn: Connection, *, worker_id: str, outcome: str) -> tuple[int, int]:
    """Settle a stopped sender's open batches and mark it finished; (released, unknown).

    Rows of a batch that never reached ``requesting`` go back to planned (nothing left the
    process); rows of one that did become unknown (the provider may have accepted them),
    unless SendGrid already reported an event for them."""
    now = utcnow()
    open_batches = conn.execute(
        select(SEND_BATCH.c.id, SEND_BATCH.c.state).where(
            SEND_BATCH.c.worker_id == worker_id,
            SEND_BATCH.c.state.in_([BatchState.CLAIMED.value, BatchState.REQUESTING.value]),
        )
    ).all()
    released = unknown = 0
    # Each open batch's rows by its id range (the ledger has no index on batch_id): a
    # sender leaves at most its batches in flight open.
    for batch_id, state in open_batches:
        if state == BatchState.CLAIMED.value:
            released += replan_batch_rows(conn, batch_id, now=now)
        else:
            unknown += move_batch_rows(
                conn,
                batch_id,
                to=DeliveryState.UNKNOWN,
                error=f"request in flight when sender {worker_id} stopped",
                updated_at=now,
            )
            unknown -= settle_proven(conn, batch_rows(DELIVERY, batch_id))
    mine = SEND_BATCH.c.worker_id == worker_id
    move(
        conn,
        SEND_BATCH,
        mine,
        to=BatchState.RELEASED,
        from_=[BatchState.CLAIMED],
        finished_at=now,
    )
    move(
        conn,
        SEND_BATCH,
        mine,
        to=BatchState.UNKNOWN,
        from_=[BatchState.REQUESTING],
        finished_at=now,
    )
    conn.execute(
        update(SEND_WORKER)
        .where(SEND_WORKER.c.id == worker_id, SEND_WORKER.c.finished_at.is_(None))
        .values(finished_at=now, outcome=outcome[:200])
    )
    return released, unknown


def looks_alive(
    host: str,
    pid: int,
    heartbeat_at: datetime,
    lease_seconds: float,
    now: datetime,
    *,
    this_process: bool,
) -> bool:
    """Whether a sender still looks alive: on this host, whether its pid runs; on another,
    whether its heartbeat is younger than ``lease_seconds`` at ``now``.

    ``this_process`` is what a row with this process's own pid means: to a recovering
    sender, an earlier process that had the same pid (gone); to a reader such as ``herald
    status`` or a flow's status artifact, which may run inside the sender, itself (alive).
    """
    if host == socket.gethostname():
        if pid == os.getpid():
            return this_process
        if pid <= 0:
            return False  # no process of its own: os.kill would signal a process group
        try:
            os.kill(pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # running, as another user
        return True
    return now - as_utc(heartbeat_at) < timedelta(seconds=lease_seconds)


@dataclass(frozen=True)
class Recovery:
    """What was found of senders that died: rows put back, rows now unknown."""

    workers: int
    released: int
    unknown: int


def recover(
    engine: Engine,
    *,
    campaign: str,
    message: str,
    lease_seconds: float,
    by: Worker | None = None,
) -> Recovery:
    """Settle the batches of senders of this phase that died without finishing."""
    now = utcnow()
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
        and not looks_alive(
            row.host, row.pid, row.heartbeat_at, lease_seconds, now, this_process=False
        )
    ]
    return _settle_dead(
        engine,
        campaign=campaign,
        message=message,
        dead=dead,
        outcome=f"lost: found dead by {by.id if by else 'an operator'}",
    )


def settle_flow_runs(
    engine: Engine, *, campaign: str, message: str, flow_run_ids: Sequence[str], why: str
) -> Recovery:
    """Settle the unfinished senders of flow runs that Prefect reports ended (crashed,
    failed, cancelled), without waiting for their lease: their process is gone. Safe even
    were it not: a released batch's request can no longer leave (:func:`ledger.
    mark_requesting` refuses it), and a request in flight becomes ``unknown``, never re-sent."""
    if not flow_run_ids:
        return Recovery(workers=0, released=0, unknown=0)
    with engine.connect() as conn:
        dead = list(
            conn.execute(
                select(SEND_WORKER.c.id).where(
                    SEND_WORKER.c.campaign == campaign,
                    SEND_WORKER.c.message == message,
                    SEND_WORKER.c.flow_run_id.in_(list(flow_run_ids)),
                    SEND_WORKER.c.finished_at.is_(None),
                )
            ).scalars()
        )
    return _settle_dead(engine, campaign=campaign, message=message, dead=dead, outcome=why)


def _settle_dead(
    engine: Engine, *, campaign: str, message: str, dead: Sequence[str], outcome: str
) -> Recovery:
    released = unknown = 0
    for worker_id in dead:
        with engine.begin() as conn:
            back, lost = _settle_worker(conn, worker_id=worker_id, outcome=outcome)
        released += back
        unknown += lost
    if dead:
        with engine.begin() as conn:
            audit.record(
                conn,
                "sender.recovered",
                campaign=campaign,
                phase=message,
                detail={"workers": list(dead), "released": released, "unknown": unknown},
            )
    return Recovery(workers=len(dead), released=released, unknown=unknown)


# --------------------------------------------------------------------------- settling by hand


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
    conn: Connection,
    *,
    campaign: str,
    message: str | None = None,
    limit: int | None = None,
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
    *,
    campaign: str,
    message: str,
    resolution: Resolution,
    batch_ids: Sequence[str] | None = None,
    include_failed: bool = False,
) -> int:
    """Settle unknown rows: ``resend`` puts them back to planned, ``mark-sent`` accepts them."""
    states = [DeliveryState.UNKNOWN]
    if include_failed:
        states.append(DeliveryState.FAILED)
    where = [phase_rows(campaign, message)]
    if batch_ids:
        where.append(or_(*(batch_rows(DELIVERY, batch_id) for batch_id in batch_ids)))
    now = utcnow()
    who = audit.actor()
    if resolution == "resend":
        to = DeliveryState.PLANNED
        values: dict[str, Any] = {
            "batch_id": None,
            "error": f"re-send approved by {who}",
            "updated_at": now,
        }
    else:
        to = DeliveryState.ACCEPTED
        values = {
            "error": f"marked sent by {who}",
            "sent_at": DELIVERY.c.claimed_at,
            "updated_at": now,
        }
    with engine.begin() as conn:
        # Rows SendGrid already reported an event for were accepted: never send them again.
        proven = settle_proven(conn, *where)
        count = move(conn, DELIVERY, *where, to=to, from_=states, **values)
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
                "states": [s.value for s in states],
            },
            who=who,
        )
    return count
