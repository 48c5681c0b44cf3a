"""What valid SendGrid events do to the campaign, applied in bulk with each failure isolated.

The valid events of a batch are applied together, as one bulk of statements:

- each is inserted once by ``sg_event_id`` (SendGrid re-delivers the same batch many times)
  and linked to its ledger row through ``custom_args.herald_key``;
- bounce (not ``blocked``, which is temporary), dropped, spam report, unsubscribe and group
  unsubscribe add a Suppression of the canonical address
  (:func:`herald.addresses.canonical_email`), so the next send skips it;
- any event carrying Herald's ledger key proves SendGrid accepted that message: an
  ``unknown`` delivery becomes ``accepted`` (the reconciliation a crash leaves to do);
- opens and clicks are kept for the engagement metrics.

The bulk runs inside a SAVEPOINT. Should the database still refuse it, the events are
applied again one at a time, each inside a SAVEPOINT of its own, so only the event the
database refuses is left out; the caller keeps what failed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Final

from sqlalchemy import Connection, select, tuple_
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError

from herald.db import dialect_insert
from herald.delivery.ledger import settle_proven
from herald.models import DELIVERY, EMAIL_EVENT, SUPPRESSION, utcnow
from herald.telemetry.events import BadEvent, ValidEvent, validate_event

logger = logging.getLogger(__name__)

MAX_ERROR: Final = 2000  # characters of an error kept in the database
CHUNK: Final = 500  # ledger keys per lookup


@dataclass(frozen=True)
class Processed:
    """What one batch (or one call of :func:`apply_events`) did.

    ``events`` counts every event given, ``failed`` those of them that could not be applied
    (kept in ``webhook_event_failure`` when they came in a batch); ``error`` says why a
    batch, or part of it, was not applied, and ``pending`` is True when the batch stays
    unprocessed for a later try.
    """

    events: int
    stored: int
    suppressed: int
    settled: int
    failed: int = 0
    batch_id: int | None = None
    error: str | None = None
    pending: bool = False

    def plus(self, more: Processed) -> Processed:
        """These counts with ``more``'s added (what else this one says is kept)."""
        return replace(
            self,
            events=self.events + more.events,
            stored=self.stored + more.stored,
            suppressed=self.suppressed + more.suppressed,
            settled=self.settled + more.settled,
        )


@dataclass(frozen=True)
class EventFailure:
    """An event that could not be applied: where it was, and why."""

    position: int  # its index among the events given
    raw: Any
    error: str


def clip(text: str, limit: int = MAX_ERROR) -> str:
    """Text fit for a Text column: no NUL or lone surrogate, at most ``limit`` chars."""
    text = text.replace("\x00", "\\x00").encode("utf-8", "backslashreplace").decode("utf-8")
    return text if len(text) <= limit else text[: limit - 3] + "..."


def describe_error(error: BaseException) -> str:
    """One line saying why a statement failed (the driver's message; no SQL, no values)."""
    cause: BaseException = error
    if isinstance(error, StatementError) and error.orig is not None:
        cause = error.orig
    text = str(cause).strip()
    line = text.splitlines()[0] if text else ""
    name = type(cause).__name__
    return clip(f"{name}: {line}" if line else name, 500)


def _transient(error: BaseException) -> bool:
    """True for a failure of the database rather than of an event (a lost connection, a
    lock, a deadlock): the whole batch is tried again later instead."""
    if isinstance(error, DBAPIError) and error.connection_invalidated:
        return True
    orig = getattr(error, "orig", None)
    state = str(getattr(orig, "sqlstate", "") or "")
    if state[:2] in ("08", "40", "53", "57") or state in ("55P03", "55006"):
        return True  # connection, rollback/deadlock, resources, operator, lock not available
    text = str(orig or "").lower()
    return "database is locked" in text or "database is busy" in text


def begin_writing(conn: Connection) -> None:
    """Make sure a real transaction is open before a SAVEPOINT.

    pysqlite emits BEGIN only before its first INSERT/UPDATE/DELETE; a SAVEPOINT issued
    before that starts a transaction of its own, whose RELEASE commits. On SQLite this
    begins an IMMEDIATE transaction (the write lock now, so a read never has to be upgraded
    later); elsewhere the driver has begun one already.
    """
    if conn.dialect.name != "sqlite":
        return
    raw = conn.connection.dbapi_connection
    if raw is not None and not getattr(raw, "in_transaction", True):
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _bulk(conn: Connection, *, events: Sequence[ValidEvent]) -> Processed:
    """Store valid events once and act on them (the statements, in bulk)."""
    rows: dict[str, dict[str, Any]] = {}
    keys: dict[str, tuple[str, str, int]] = {}
    for valid in events:
        row = dict(valid.row)
        identifier = row["sg_event_id"]
        rows[identifier] = row
        if valid.key is not None:
            keys[identifier] = valid.key
        else:
            keys.pop(identifier, None)
    if not rows:
        return Processed(0, 0, 0, 0)
    delivery_ids: dict[tuple[str, str, int], int] = {}
    wanted = sorted(set(keys.values()))
    for start in range(0, len(wanted), CHUNK):
        chunk = wanted[start : start + CHUNK]
        found = conn.execute(
            select(
                DELIVERY.c.id,
                DELIVERY.c.campaign,
                DELIVERY.c.message,
                DELIVERY.c.contact_id,
            ).where(
                tuple_(DELIVERY.c.campaign, DELIVERY.c.message, DELIVERY.c.contact_id).in_(chunk)
            )
        )
        for delivery_id, campaign, message, contact_id in found:
            delivery_ids[(campaign, message, contact_id)] = delivery_id
    for identifier, key in keys.items():
        rows[identifier]["delivery_id"] = delivery_ids.get(key)

    insert = dialect_insert(conn.dialect.name)
    stored = conn.execute(
        insert(EMAIL_EVENT)
        .on_conflict_do_nothing(index_elements=["sg_event_id"])
        .execution_options(preserve_rowcount=True),
        list(rows.values()),
    ).rowcount

    suppress_rows = {}
    reasons = {valid.row["sg_event_id"]: valid.reason for valid in events}
    for identifier, row in rows.items():
        reason = reasons[identifier]
        if reason is not None and row["email"]:
            suppress_rows[(row["email"], reason.value)] = {
                "email": row["email"],
                "reason": reason.value,
                "source": f"sendgrid:{row['event']}",
                "detail": str(row["raw"].get("reason") or "")[:2000] or None,
                "created_at": row["occurred_at"],
            }
    suppressed = 0
    if suppress_rows:
        suppressed = conn.execute(
            insert(SUPPRESSION)
            .on_conflict_do_nothing(index_elements=["email", "reason"])
            .execution_options(preserve_rowcount=True),
            list(suppress_rows.values()),
        ).rowcount

    # The events are stored (with their delivery) by now: the rows they prove settle.
    proven = sorted({row["delivery_id"] for row in rows.values() if row["delivery_id"]})
    settled = sum(
        settle_proven(conn, DELIVERY.c.id.in_(proven[start : start + CHUNK]))
        for start in range(0, len(proven), CHUNK)
    )
    return Processed(len(rows), max(stored, 0), max(suppressed, 0), settled)


# What a statement may raise because of the values it was given (not a lost database).
_DATA_ERRORS = (SQLAlchemyError, ValueError, TypeError, ArithmeticError)


def apply_items(conn: Connection, items: Sequence[Any]) -> tuple[Processed, list[EventFailure]]:
    """Validate and apply events in the caller's transaction, each failure isolated.

    Valid events go in bulk inside a SAVEPOINT; if the database refuses the bulk, they are
    applied one at a time, each in a SAVEPOINT of its own. Returns what was done and the
    events that could not be applied (invalid, or refused by the database). A failure of the
    database itself (connection, lock, deadlock) is raised: nothing of it is an event's fault.
    """
    received_at = utcnow()
    valid: list[tuple[int, ValidEvent]] = []
    failed: list[EventFailure] = []
    for position, item in enumerate(items):
        try:
            valid.append((position, validate_event(item, received_at)))
        except BadEvent as error:
            failed.append(EventFailure(position, item, clip(str(error))))
    result = Processed(0, 0, 0, 0)
    if valid:
        begin_writing(conn)
        try:
            with conn.begin_nested():
                result = _bulk(conn, events=[event for _, event in valid])
        except _DATA_ERRORS as error:
            if _transient(error):
                raise
            logger.warning(
                "webhook events refused in bulk (%s): applying them one at a time",
                describe_error(error),
            )
            for position, event in valid:
                try:
                    with conn.begin_nested():
                        result = result.plus(_bulk(conn, events=[event]))
                except _DATA_ERRORS as single:
                    if _transient(single):
                        raise
                    failed.append(
                        EventFailure(
                            position, event.row["raw"], f"database: {describe_error(single)}"
                        )
                    )
    failed.sort(key=lambda failure: failure.position)
    return replace(result, events=len(items), failed=len(failed)), failed


def apply_events(conn: Connection, *, events: Iterable[Any]) -> Processed:
    """Store events once and act on them, in the caller's transaction.

    Events that cannot be applied are left out and counted in ``failed`` (outside a batch
    there is nowhere to keep them: :func:`herald.telemetry.webhook_batches.process_batch`
    keeps them).
    """
    result, _ = apply_items(conn, list(events))
    return result
