"""Stored webhook batches: kept before the answer, processed once, their failures kept.

A stored webhook batch (:class:`herald.models.WebhookBatch`) is processed in one
transaction: its events are validated (:mod:`herald.telemetry.events`) and applied
(:mod:`herald.telemetry.event_effects`). An event that is invalid or that the database
refuses is kept in ``webhook_event_failure`` with its error (one row per batch and
position): the batch's other events take effect, the batch is marked processed
(``webhook_batch.error`` summarises what failed), ``herald webhooks failures`` lists the
failures and ``herald webhooks retry`` validates and applies them again after a fix.

Processing is idempotent: a batch processed twice changes nothing the second time.
:func:`process_pending` never stops at a batch: one whose processing raises is logged and
keeps the error on its row, stays unprocessed for a later try, and the next batch goes on.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any, Final

from sqlalchemy import ColumnElement, Connection, Engine, func, select, update

from herald.db import dialect_insert
from herald.models import WEBHOOK_BATCH, WEBHOOK_EVENT_FAILURE, utcnow
from herald.telemetry.event_effects import (
    EventFailure,
    Processed,
    apply_items,
    begin_writing,
    clip,
    describe_error,
)
from herald.telemetry.events import (
    MAX_DEPTH,
    MAX_EVENT,
    MAX_SG_EVENT_ID,
    BadEvents,
    load_events,
    on_fresh_stack,
    parse_json,
    text_problem,
)

logger = logging.getLogger(__name__)

RETRY_CHUNK: Final = 500  # failures per retry transaction


def store_batch(engine: Engine, *, body: bytes, signed_at: datetime | None, events: int) -> int:
    """Keep a verified webhook body (committed before the sender hears 2xx); its id."""
    with engine.begin() as conn:
        batch_id = conn.execute(
            WEBHOOK_BATCH.insert()
            .values(body=body, signed_at=signed_at, events=events, received_at=utcnow())
            .returning(WEBHOOK_BATCH.c.id)
        ).scalar_one()
    return int(batch_id)


def _raw_text(item: Any) -> str:
    """An event as ASCII JSON (NUL and surrogates escaped; NaN kept as NaN)."""
    try:
        return json.dumps(item, ensure_ascii=True)
    except RecursionError:
        try:
            return on_fresh_stack(json.dumps, item)
        except RecursionError:
            return json.dumps(_shallow(item, MAX_DEPTH * 2), ensure_ascii=True)


def _shallow(value: Any, depth: int) -> Any:
    """``value`` cut at ``depth`` levels (what is deeper becomes null)."""
    if depth <= 0:
        return None
    if isinstance(value, dict):
        return {str(k): _shallow(v, depth - 1) for k, v in value.items()}
    if isinstance(value, list):
        return [_shallow(v, depth - 1) for v in value]
    return value


def _column_text(item: Any, field: str, limit: int) -> str | None:
    """``item[field]`` for a column of a failure row, when it fits there as it is."""
    value = item.get(field) if isinstance(item, dict) else None
    if isinstance(value, str) and 0 < len(value) <= limit and text_problem(value) is None:
        return value
    return None


def _record_failures(
    conn: Connection, *, batch_id: int, found: Sequence[EventFailure], now: datetime
) -> None:
    """Keep each failure once per (batch, position); again: attempts + 1, the new error."""
    if not found:
        return
    insert = dialect_insert(conn.dialect.name)
    statement = insert(WEBHOOK_EVENT_FAILURE)
    conn.execute(
        statement.on_conflict_do_update(
            index_elements=["batch_id", "position"],
            set_={
                "error": statement.excluded.error,
                "raw": statement.excluded.raw,
                "attempts": WEBHOOK_EVENT_FAILURE.c.attempts + 1,
                "failed_at": statement.excluded.failed_at,
                "resolved_at": None,
            },
        ),
        [
            {
                "batch_id": batch_id,
                "position": failure.position,
                "sg_event_id": _column_text(failure.raw, "sg_event_id", MAX_SG_EVENT_ID),
                "event": _column_text(failure.raw, "event", MAX_EVENT),
                "raw": _raw_text(failure.raw),
                "error": failure.error,
                "attempts": 1,
                "failed_at": now,
                "resolved_at": None,
            }
            for failure in found
        ],
    )


def _summary(found: Sequence[EventFailure], total: int) -> str:
    first = found[0]
    return clip(
        f"{len(found)} of {total} event(s) could not be applied (herald webhooks failures); "
        f"first, position {first.position}: {first.error}",
        500,
    )


def process_batch(engine: Engine, batch_id: int) -> Processed | None:
    """Process one stored batch (None when it was already processed).

    Its valid events take effect, the others are kept in ``webhook_event_failure``, and the
    batch is marked processed. A failure of the database itself is raised (the transaction
    rolls back; the batch stays unprocessed).
    """
    with engine.begin() as conn:
        begin_writing(conn)
        row = conn.execute(
            select(WEBHOOK_BATCH.c.body, WEBHOOK_BATCH.c.processed_at)
            .where(WEBHOOK_BATCH.c.id == batch_id)
            .with_for_update()  # Postgres: one processor per batch at a time
        ).first()
        if row is None or row.processed_at is not None:
            return None
        now = utcnow()
        try:
            items = load_events(bytes(row.body))
        except BadEvents as error:  # verified but unusable: keep it, say why
            conn.execute(
                update(WEBHOOK_BATCH)
                .where(WEBHOOK_BATCH.c.id == batch_id)
                .values(processed_at=now, error=str(error))
            )
            return Processed(0, 0, 0, 0, batch_id=batch_id, error=str(error))
        result, found = apply_items(conn, items)
        _record_failures(conn, batch_id=batch_id, found=found, now=now)
        # Processed again (after a crash or by hand): what applies now is no longer open.
        conn.execute(
            update(WEBHOOK_EVENT_FAILURE)
            .where(
                WEBHOOK_EVENT_FAILURE.c.batch_id == batch_id,
                WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None),
                WEBHOOK_EVENT_FAILURE.c.position.not_in([failure.position for failure in found]),
            )
            .values(resolved_at=now)
        )
        summary = _summary(found, len(items)) if found else None
        conn.execute(
            update(WEBHOOK_BATCH)
            .where(WEBHOOK_BATCH.c.id == batch_id)
            .values(processed_at=now, error=summary)
        )
    if found:
        logger.warning(
            "webhook batch %d: %d of %d event(s) could not be applied "
            "(listed by herald webhooks failures)",
            batch_id,
            len(found),
            len(items),
        )
    return replace(result, batch_id=batch_id, error=summary)


def process_batch_safely(engine: Engine, *, batch_id: int) -> Processed | None:
    """:func:`process_batch` that never raises: an unexpected error is logged and kept on the
    batch's row (``error``), and the batch stays unprocessed for a later try."""
    try:
        return process_batch(engine, batch_id)
    except Exception as error:  # one bad batch must stop nothing else
        reason = f"processing failed, will be tried again: {describe_error(error)}"
        logger.error("webhook batch %d: %s", batch_id, reason)
        logger.debug("webhook batch %d: traceback", batch_id, exc_info=True)
        try:
            with engine.begin() as conn:
                conn.execute(
                    update(WEBHOOK_BATCH)
                    .where(WEBHOOK_BATCH.c.id == batch_id, WEBHOOK_BATCH.c.processed_at.is_(None))
                    .values(error=reason)
                )
        except Exception as unrecorded:  # the database may be the problem
            logger.error(
                "webhook batch %d: the error could not be recorded: %s",
                batch_id,
                describe_error(unrecorded),
            )
        return Processed(0, 0, 0, 0, batch_id=batch_id, error=reason, pending=True)


def unprocessed_batches(engine: Engine) -> int:
    """Stored batches not yet processed (0: every event taken in has been acted on)."""
    return _count(engine, WEBHOOK_BATCH.c.processed_at.is_(None))


def process_pending(engine: Engine, *, limit: int | None = None) -> list[Processed]:
    """Process every stored batch not yet processed, oldest first (after a crash, at start).

    A batch whose processing raises does not stop the others: it is reported in the result
    (``pending``), keeps its error, and stays unprocessed for a later try.
    """
    with engine.connect() as conn:
        query = (
            select(WEBHOOK_BATCH.c.id)
            .where(WEBHOOK_BATCH.c.processed_at.is_(None))
            .order_by(WEBHOOK_BATCH.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        pending = list(conn.execute(query).scalars())
    results = [process_batch_safely(engine, batch_id=batch_id) for batch_id in pending]
    return [result for result in results if result is not None]


# --------------------------------------------------------------------------- failures


@dataclass(frozen=True)
class StoredFailure:
    """A row of ``webhook_event_failure``, as listed."""

    id: int
    batch_id: int
    position: int
    event: str | None
    sg_event_id: str | None
    error: str
    attempts: int
    failed_at: datetime
    resolved_at: datetime | None


def open_failures(engine: Engine) -> int:
    """Events kept as failures and not applied since."""
    return _count(engine, WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None))


def _count(engine: Engine, where: ColumnElement[bool]) -> int:
    """Rows of the table ``where`` is about that meet it."""
    with engine.connect() as conn:
        return int(conn.execute(select(func.count()).where(where)).scalar_one())


def list_failures(
    engine: Engine, *, include_resolved: bool = False, limit: int | None = None
) -> list[StoredFailure]:
    """Failures by batch and position (open ones only unless ``include_resolved``)."""
    query = select(
        WEBHOOK_EVENT_FAILURE.c.id,
        WEBHOOK_EVENT_FAILURE.c.batch_id,
        WEBHOOK_EVENT_FAILURE.c.position,
        WEBHOOK_EVENT_FAILURE.c.event,
        WEBHOOK_EVENT_FAILURE.c.sg_event_id,
        WEBHOOK_EVENT_FAILURE.c.error,
        WEBHOOK_EVENT_FAILURE.c.attempts,
        WEBHOOK_EVENT_FAILURE.c.failed_at,
        WEBHOOK_EVENT_FAILURE.c.resolved_at,
    ).order_by(WEBHOOK_EVENT_FAILURE.c.batch_id, WEBHOOK_EVENT_FAILURE.c.position)
    if not include_resolved:
        query = query.where(WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None))
    if limit is not None:
        query = query.limit(limit)
    with engine.connect() as conn:
        return [StoredFailure(**row._mapping) for row in conn.execute(query)]


@dataclass(frozen=True)
class Retried:
    """What :func:`retry_failures` did."""

    retried: int
    resolved: int
    remaining: int
    applied: Processed


def retry_failures(engine: Engine) -> Retried:
    """Validate and apply every open failure again (in chunks, a transaction each): one that
    applies now is resolved; one that does not counts an attempt and keeps its new error."""
    retried = resolved = 0
    applied = Processed(0, 0, 0, 0)
    last_id = 0
    while True:
        with engine.begin() as conn:
            begin_writing(conn)
            rows = conn.execute(
                select(WEBHOOK_EVENT_FAILURE.c.id, WEBHOOK_EVENT_FAILURE.c.raw)
                .where(
                    WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None),
                    WEBHOOK_EVENT_FAILURE.c.id > last_id,
                )
                .order_by(WEBHOOK_EVENT_FAILURE.c.id)
                .limit(RETRY_CHUNK)
                .with_for_update()
            ).all()
            if not rows:
                break
            last_id = rows[-1].id
            items: list[Any] = []
            unreadable: dict[int, str] = {}
            for index, row in enumerate(rows):
                try:
                    items.append(parse_json(row.raw))
                except (ValueError, RecursionError) as error:
                    unreadable[index] = clip(f"raw: not JSON: {error}")
                    items.append(None)
            result, found = apply_items(conn, items)
            errors = {failure.position: failure.error for failure in found}
            errors.update(unreadable)
            now = utcnow()
            for index, row in enumerate(rows):
                if index in errors:
                    conn.execute(
                        update(WEBHOOK_EVENT_FAILURE)
                        .where(WEBHOOK_EVENT_FAILURE.c.id == row.id)
                        .values(
                            error=errors[index],
                            attempts=WEBHOOK_EVENT_FAILURE.c.attempts + 1,
                            failed_at=now,
                        )
                    )
                else:
                    conn.execute(
                        update(WEBHOOK_EVENT_FAILURE)
                        .where(WEBHOOK_EVENT_FAILURE.c.id == row.id)
                        .values(resolved_at=now)
                    )
            retried += len(rows)
            resolved += len(rows) - len(errors)
            applied = applied.plus(result)
    return Retried(retried, resolved, retried - resolved, applied)
