"""SendGrid events: store each once, then let them act on the campaign.

A stored webhook batch (:class:`herald.models.WebhookBatch`) is processed in one
transaction: its events are inserted once by ``sg_event_id`` (SendGrid re-delivers the same
batch many times), linked to their ledger row through ``custom_args.herald_key``, and then

- bounce (not ``blocked``, which is temporary), dropped, spam report, unsubscribe and group
  unsubscribe add a Suppression, so the next send skips the address;
- any event carrying Herald's ledger key proves SendGrid accepted that message: an
  ``unknown`` delivery becomes ``accepted`` (the reconciliation a crash leaves to do);
- opens and clicks are kept for the engagement metrics.

Processing is idempotent: a batch processed twice changes nothing the second time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Connection, Engine, func, select, tuple_, update

from herald.db import dialect_insert
from herald.models import (
    EmailEvent,
    Suppression,
    SuppressionReason,
    WebhookBatch,
    table,
    utcnow,
)

email_events = table(EmailEvent)
suppressions = table(Suppression)
webhook_batches = table(WebhookBatch)

# Events after which an address must not be mailed again, and why.
SUPPRESSING = {
    "bounce": SuppressionReason.BOUNCE,
    "dropped": SuppressionReason.BOUNCE,
    "spamreport": SuppressionReason.SPAM_REPORT,
    "unsubscribe": SuppressionReason.UNSUBSCRIBE,
    "group_unsubscribe": SuppressionReason.UNSUBSCRIBE,
}


class BadEvents(ValueError):
    """The body is not a JSON array of event objects."""


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The events of a webhook body (a JSON array of objects), or BadEvents."""
    try:
        events = json.loads(body)
    except (ValueError, UnicodeDecodeError) as error:
        raise BadEvents(f"not JSON: {error}") from None
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadEvents("expected a JSON array of event objects")
    return events


def event_id(event: dict[str, Any]) -> str:
    """SendGrid's ``sg_event_id``; an event without one gets a stable id from its content."""
    given = event.get("sg_event_id")
    if isinstance(given, str) and given:
        return given[:100]
    digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
    return f"herald-{digest[:64]}"


def _occurred_at(event: dict[str, Any]) -> datetime:
    try:
        return datetime.fromtimestamp(int(event["timestamp"]), UTC)
    except (KeyError, TypeError, ValueError, OverflowError, OSError):
        return utcnow()


def _suppression_reason(event: dict[str, Any]) -> SuppressionReason | None:
    kind = str(event.get("event", ""))
    if kind == "bounce" and str(event.get("type", "bounce")) == "blocked":
        return None  # a block is temporary: the address itself is fine
    if kind == "dropped":
        reason = str(event.get("reason", ""))
        if "Unsubscribed" in reason:
            return SuppressionReason.UNSUBSCRIBE
        if "Spam" in reason:
            return SuppressionReason.SPAM_REPORT
    return SUPPRESSING.get(kind)


def _ledger_key(value: Any) -> tuple[str, str, int] | None:
    if not isinstance(value, str):
        return None
    campaign, _, rest = value.partition("/")
    message, _, contact = rest.partition("/")
    if not (campaign and message and contact.isdigit()):
        return None
    return campaign, message, int(contact)


@dataclass(frozen=True)
class Processed:
    """What one batch did."""

    events: int
    stored: int
    suppressed: int
    settled: int


def apply_events(conn: Connection, events: Iterable[dict[str, Any]]) -> Processed:
    """Store events once and act on them, in the caller's transaction."""
    from herald.ledger import deliveries, settle_proven

    rows: dict[str, dict[str, Any]] = {}
    keys: dict[str, tuple[str, str, int]] = {}
    for event in events:
        identifier = event_id(event)
        key = _ledger_key(event.get("herald_key"))
        if key is not None:
            keys[identifier] = key
        rows[identifier] = {
            "sg_event_id": identifier,
            "event": str(event.get("event", "unknown"))[:32],
            "email": str(event.get("email", "")).strip().lower()[:320],
            "occurred_at": _occurred_at(event),
            "sg_message_id": (
                str(event["sg_message_id"])[:200] if event.get("sg_message_id") else None
            ),
            "herald_key": str(event["herald_key"])[:300] if event.get("herald_key") else None,
            "raw": event,
            "received_at": utcnow(),
            "delivery_id": None,
        }
    if not rows:
        return Processed(0, 0, 0, 0)
    delivery_ids: dict[tuple[str, str, int], int] = {}
    wanted = sorted(set(keys.values()))
    for start in range(0, len(wanted), 500):
        chunk = wanted[start : start + 500]
        found = conn.execute(
            select(
                deliveries.c.id,
                deliveries.c.campaign,
                deliveries.c.message,
                deliveries.c.contact_id,
            ).where(
                tuple_(deliveries.c.campaign, deliveries.c.message, deliveries.c.contact_id).in_(
                    chunk
                )
            )
        )
        for delivery_id, campaign, message, contact_id in found:
            delivery_ids[(campaign, message, contact_id)] = delivery_id
    for identifier, key in keys.items():
        rows[identifier]["delivery_id"] = delivery_ids.get(key)

    insert = dialect_insert(conn.dialect.name)
    stored = conn.execute(
        insert(email_events)
        .on_conflict_do_nothing(index_elements=["sg_event_id"])
        .execution_options(preserve_rowcount=True),
        list(rows.values()),
    ).rowcount

    suppress_rows = {}
    for row in rows.values():
        reason = _suppression_reason(row["raw"])
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
            insert(suppressions)
            .on_conflict_do_nothing(index_elements=["email", "reason"])
            .execution_options(preserve_rowcount=True),
            list(suppress_rows.values()),
        ).rowcount

    # The events are stored (with their delivery) by now: the rows they prove settle.
    proven = sorted({row["delivery_id"] for row in rows.values() if row["delivery_id"]})
    settled = sum(
        settle_proven(conn, deliveries.c.id.in_(proven[start : start + 500]))
        for start in range(0, len(proven), 500)
    )
    return Processed(len(rows), max(stored, 0), max(suppressed, 0), settled)


def store_batch(engine: Engine, body: bytes, signed_at: datetime | None, events: int) -> int:
    """Keep a verified webhook body (committed before the sender hears 2xx); its id."""
    with engine.begin() as conn:
        batch_id = conn.execute(
            webhook_batches.insert()
            .values(body=body, signed_at=signed_at, events=events, received_at=utcnow())
            .returning(webhook_batches.c.id)
        ).scalar_one()
    return int(batch_id)


def process_batch(engine: Engine, batch_id: int) -> Processed | None:
    """Process one stored batch (None when it was already processed)."""
    with engine.begin() as conn:
        row = conn.execute(
            select(webhook_batches.c.body, webhook_batches.c.processed_at)
            .where(webhook_batches.c.id == batch_id)
            .with_for_update()  # Postgres: one processor per batch at a time
        ).first()
        if row is None or row.processed_at is not None:
            return None
        try:
            result = apply_events(conn, parse_events(bytes(row.body)))
        except BadEvents as error:  # verified but unusable: keep it, say why
            conn.execute(
                update(webhook_batches)
                .where(webhook_batches.c.id == batch_id)
                .values(processed_at=utcnow(), error=str(error))
            )
            return Processed(0, 0, 0, 0)
        conn.execute(
            update(webhook_batches)
            .where(webhook_batches.c.id == batch_id)
            .values(processed_at=utcnow())
        )
    return result


def unprocessed_batches(engine: Engine) -> int:
    """Stored batches not yet processed (0: every event taken in has been acted on)."""
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(webhook_batches.c.processed_at.is_(None))
            ).scalar_one()
        )


def process_pending(engine: Engine, limit: int | None = None) -> list[Processed]:
    """Process every stored batch not yet processed, oldest first (after a crash, at start)."""
    with engine.connect() as conn:
        query = (
            select(webhook_batches.c.id)
            .where(webhook_batches.c.processed_at.is_(None))
            .order_by(webhook_batches.c.id)
        )
        if limit is not None:
            query = query.limit(limit)
        pending = list(conn.execute(query).scalars())
    results = [process_batch(engine, batch_id) for batch_id in pending]
    return [result for result in results if result is not None]
