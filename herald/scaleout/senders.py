"""What each sender of a message did: its batches, requests, recipients by outcome, and rate.

A message sent by several senders (Prefect child flow runs, each registered as a
``send_worker`` row) is read back here in one grouped query: every sender of the campaign
(or of one message, one set of flow runs, only the unfinished ones) with the aggregate of
its ``send_batch`` rows. :func:`senders_markdown` makes the per-sender section of a phase's
Prefect artifact; ``herald status`` lists the unfinished senders, each judged alive or not
by :func:`herald.delivery.recovery.looks_alive`.

Nothing here reads or prints an e-mail address: the counts come from ``send_batch`` alone,
and a sender's free-text outcome has anything shaped like an address masked.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime

from sqlalchemy import Connection, case, func, select

from herald.models import SEND_BATCH, SEND_WORKER, BatchState, as_utc
from herald.privacy import mask_email

# Anything shaped like an address in a sender's outcome text (masked, never shown whole).
_ADDRESS_LIKE = re.compile(r"[^\s@<>()\[\]{},;:\"'`|]+@[^\s@<>()\[\]{},;:\"'`|]+")


@dataclass(frozen=True)
class SenderStats:
    """One sender (a ``send_worker`` row) and the sum of its batches, read at ``as_of``.

    ``accepted``, ``failed`` and ``unknown`` count the recipients of batches in that state;
    ``in_flight`` the recipients of batches still ``claimed`` or ``requesting``. Released
    batches (rows put back to planned) count only in ``batches``.
    """

    worker_id: str
    message: str
    host: str
    pid: int
    flow_run_id: str | None
    transport: str
    started_at: datetime
    heartbeat_at: datetime
    finished_at: datetime | None
    outcome: str | None
    batches: int
    requests: int
    accepted: int
    failed: int
    unknown: int
    in_flight: int
    first_request_at: datetime | None  # the first batch's created_at
    last_answer_at: datetime | None  # the latest batch's finished_at
    as_of: datetime  # the moment it was read: where a running sender's span ends

    @property
    def running(self) -> bool:
        """Whether the sender has not finished (it may still be sending, or be dead)."""
        return self.finished_at is None

    @property
    def seconds(self) -> float:
        """From its first batch to its last answer, or to ``as_of`` while it runs; 0 with
        no batch."""
        if self.first_request_at is None:
            return 0.0
        end = self.last_answer_at or self.first_request_at
        if self.running:
            end = max(end, self.as_of)
        return max((end - self.first_request_at).total_seconds(), 0.0)

    @property
    def rate(self) -> float:
        """Accepted recipients per second over :attr:`seconds` (0 when there is no span)."""
        seconds = self.seconds
        return self.accepted / seconds if seconds > 0 else 0.0


def sender_stats(
    conn: Connection,
    *,
    campaign: str,
    message: str | None = None,
    worker_ids: Sequence[str] | None = None,
    flow_run_ids: Sequence[str] | None = None,
    unfinished_only: bool = False,
    now: datetime,
) -> list[SenderStats]:
    """The senders of a campaign with their batches summed, oldest start first.

    One query however many senders: ``send_worker`` left-joined to its ``send_batch`` rows
    grouped by sender. ``message``, ``worker_ids``, ``flow_run_ids`` (an empty sequence
    matches nothing) and ``unfinished_only`` narrow the senders; ``now`` is ``as_of``.
    """
    b = SEND_BATCH.c
    recipients_in = {
        name: func.coalesce(
            func.sum(case((b.state.in_([s.value for s in states]), b.recipients), else_=0)), 0
        ).label(name)
        for name, states in (
            ("accepted", [BatchState.ACCEPTED]),
            ("failed", [BatchState.FAILED]),
            ("unknown", [BatchState.UNKNOWN]),
            ("in_flight", [BatchState.CLAIMED, BatchState.REQUESTING]),
        )
    }
    per_worker = select(
        b.worker_id,
        func.count().label("batches"),
        func.coalesce(func.sum(b.requests), 0).label("requests"),
        *recipients_in.values(),
        func.min(b.created_at).label("first_request_at"),
        func.max(b.finished_at).label("last_answer_at"),
    ).where(b.campaign == campaign)
    if message is not None:
        per_worker = per_worker.where(b.message == message)
    if worker_ids is not None:
        per_worker = per_worker.where(b.worker_id.in_(list(worker_ids)))
    batches = per_worker.group_by(b.worker_id).subquery("per_worker")

    w = SEND_WORKER.c
    query = (
        select(
            w.id,
            w.message,
            w.host,
            w.pid,
            w.flow_run_id,
            w.transport,
            w.started_at,
            w.heartbeat_at,
            w.finished_at,
            w.outcome,
            *(
                func.coalesce(batches.c[name], 0).label(name)
                for name in ("batches", "requests", "accepted", "failed", "unknown", "in_flight")
            ),
            batches.c.first_request_at,
            batches.c.last_answer_at,
        )
        .select_from(SEND_WORKER.outerjoin(batches, batches.c.worker_id == w.id))
        .where(w.campaign == campaign)
        .order_by(w.started_at, w.id)
    )
    if message is not None:
        query = query.where(w.message == message)
    if worker_ids is not None:
        query = query.where(w.id.in_(list(worker_ids)))
    if flow_run_ids is not None:
        query = query.where(w.flow_run_id.in_(list(flow_run_ids)))
    if unfinished_only:
        query = query.where(w.finished_at.is_(None))
    return [
        SenderStats(
            worker_id=str(row.id),
            message=str(row.message),
            host=str(row.host),
            pid=int(row.pid),
            flow_run_id=row.flow_run_id,
            transport=str(row.transport),
            started_at=as_utc(row.started_at),
            heartbeat_at=as_utc(row.heartbeat_at),
            finished_at=_utc(row.finished_at),
            outcome=_masked(row.outcome),
            batches=int(row.batches),
            requests=int(row.requests),
            accepted=int(row.accepted),
            failed=int(row.failed),
            unknown=int(row.unknown),
            in_flight=int(row.in_flight),
            first_request_at=_utc(row.first_request_at),
            last_answer_at=_utc(row.last_answer_at),
            as_of=now,
        )
        for row in conn.execute(query)
    ]


def short_id(value: str | None) -> str:
    """The first 8 characters of an id (a UUID's first group), or empty."""
    return (value or "")[:8]


def senders_markdown(stats: Iterable[SenderStats], *, now: datetime) -> str:
    """The senders as a Markdown table and a total line (the per-sender section of a
    phase's Prefect artifact).

    The total's rate is every sender's accepted recipients over the span from the earliest
    first batch to the latest answer (to ``now`` while a sender still runs).
    """
    senders = list(stats)
    lines = [f"Senders as of {now:%Y-%m-%d %H:%M:%S} UTC.", ""]
    if not senders:
        return "\n".join([*lines, "No senders."])
    lines += [
        "| sender | host:pid | flow run | batches | requests | accepted | failed | unknown "
        "| in flight | seconds | per second | outcome |",
        "|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|---|",
    ]
    for s in senders:
        cells = [
            f"`{short_id(s.worker_id)}`",
            _cell(f"{s.host}:{s.pid}"),
            f"`{short_id(s.flow_run_id)}`" if s.flow_run_id else "",
            str(s.batches),
            str(s.requests),
            str(s.accepted),
            str(s.failed),
            str(s.unknown),
            str(s.in_flight),
            f"{s.seconds:.1f}",
            f"{s.rate:.1f}",
            _cell(s.outcome or ("running" if s.running else "")),
        ]
        lines.append("| " + " | ".join(cells) + " |")
    accepted = sum(s.accepted for s in senders)
    seconds = total_seconds(senders, now=now)
    rate = accepted / seconds if seconds > 0 else 0.0
    lines += [
        "",
        f"**Total**: {accepted} accepted by {len(senders)} sender(s) in {seconds:.1f} s: "
        f"{rate:.1f} per second.",
    ]
    return "\n".join(lines)


def total_seconds(stats: Iterable[SenderStats], *, now: datetime) -> float:
    """The senders' combined span: from the earliest first batch to the latest answer, or
    to ``now`` while any of them runs; 0 with no batch."""
    senders = list(stats)
    starts = [s.first_request_at for s in senders if s.first_request_at is not None]
    if not starts:
        return 0.0
    ends = [s.last_answer_at for s in senders if s.last_answer_at is not None]
    if any(s.running for s in senders):
        ends.append(now)
    start = min(starts)
    return max((max(ends, default=start) - start).total_seconds(), 0.0)


def _utc(moment: datetime | None) -> datetime | None:
    return None if moment is None else as_utc(moment)


def _masked(text: str | None) -> str | None:
    if text is None:
        return None
    return _ADDRESS_LIKE.sub(lambda match: mask_email(match.group(0)), text)


def _cell(text: str) -> str:
    """Text safe inside a Markdown table cell (no pipe, no line break)."""
    return " ".join(text.replace("|", "\\|").split())
