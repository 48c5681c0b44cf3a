"""SendGrid events: check each, store each once, let them act on the campaign, keep the rest.

A stored webhook batch (:class:`herald.models.WebhookBatch`) is processed in one
transaction. Every event is **validated first** (:func:`validate_event`), before any value
reaches the database: its type, the size of every column it fills, the range of its
timestamp and of the contact id in its ledger key, and no NUL byte, lone surrogate, NaN or
Infinity anywhere in it, nor nesting deeper than :data:`MAX_DEPTH` levels. The valid events
are then applied together, as one bulk of statements:

- each is inserted once by ``sg_event_id`` (SendGrid re-delivers the same batch many times)
  and linked to its ledger row through ``custom_args.herald_key``;
- bounce (not ``blocked``, which is temporary), dropped, spam report, unsubscribe and group
  unsubscribe add a Suppression of the canonical address
  (:func:`herald.addresses.canonical_email`), so the next send skips it;
- any event carrying Herald's ledger key proves SendGrid accepted that message: an
  ``unknown`` delivery becomes ``accepted`` (the reconciliation a crash leaves to do);
- opens and clicks are kept for the engagement metrics.

The bulk runs inside a SAVEPOINT. Should the database still refuse it, the batch's events
are applied again one at a time, each inside a SAVEPOINT of its own, so only the event the
database refuses is left out. An event that is invalid or refused is kept in
``webhook_event_failure`` with its error (one row per batch and position): the batch's other
events take effect, the batch is marked processed (``webhook_batch.error`` summarises what
failed), ``herald webhooks failures`` lists the failures and ``herald webhooks retry``
validates and applies them again after a fix.

Processing is idempotent: a batch processed twice changes nothing the second time.
:func:`process_pending` never stops at a batch: one whose processing raises is logged and
keeps the error on its row, stays unprocessed for a later try, and the next batch goes on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import threading
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeVar

from sqlalchemy import Connection, Engine, func, select, tuple_, update
from sqlalchemy.exc import DBAPIError, SQLAlchemyError, StatementError

from herald.addresses import BadAddress, canonical_email, describe
from herald.db import dialect_insert
from herald.models import (
    EMAIL_EVENT,
    SUPPRESSION,
    WEBHOOK_BATCH,
    WEBHOOK_EVENT_FAILURE,
    SuppressionReason,
    utcnow,
)

logger = logging.getLogger(__name__)
T = TypeVar("T")


# Events after which an address must not be mailed again, and why.
SUPPRESSING = {
    "bounce": SuppressionReason.BOUNCE,
    "dropped": SuppressionReason.BOUNCE,
    "spamreport": SuppressionReason.SPAM_REPORT,
    "unsubscribe": SuppressionReason.UNSUBSCRIBE,
    "group_unsubscribe": SuppressionReason.UNSUBSCRIBE,
}

MAX_DEPTH: Final = 32  # nesting levels of an event (the event object itself is level 1)
MAX_TIMESTAMP: Final = 253_402_300_799  # 9999-12-31T23:59:59Z
MAX_CONTACT_ID: Final = 2_147_483_647  # the INTEGER column of contact.id
# Columns of email_event a value goes to, and their sizes.
MAX_EVENT: Final = 32
MAX_SG_EVENT_ID: Final = 100
MAX_SG_MESSAGE_ID: Final = 200
MAX_EMAIL: Final = 320
MAX_HERALD_KEY: Final = 300
MAX_ERROR: Final = 2000  # characters of an error kept in the database
CHUNK: Final = 500  # ledger keys per lookup, failures per retry transaction


class BadEvents(ValueError):
    """The body is not a JSON array of event objects."""


class BadEvent(ValueError):
    """One event that cannot be applied; the message names the field and the problem."""


def on_fresh_stack(function: Callable[..., T], *args: Any) -> T:
    """``function(*args)`` run in a new thread, whose stack is empty.

    Python's JSON parser and encoder count nesting against the recursion limit, minus the
    frames already on the stack. A body the receiver parsed near the top of its stack might
    not parse again deep inside processing; on a fresh stack it always does.
    """
    outcome: list[T] = []
    failure: list[BaseException] = []

    def run() -> None:
        try:
            outcome.append(function(*args))
        except BaseException as error:  # handed back to the caller as it is
            failure.append(error)

    thread = threading.Thread(target=run, name="herald-json", daemon=True)
    thread.start()
    thread.join()
    if failure:
        raise failure[0]
    return outcome[0]


def _json(body: bytes | str) -> Any:
    """``json.loads``; nested deeper than this stack allows: again, on a fresh stack."""
    try:
        return json.loads(body)
    except RecursionError:
        return on_fresh_stack(json.loads, body)


def _loads(body: bytes | str) -> Any:
    try:
        return _json(body)
    except RecursionError:
        raise BadEvents("not JSON: nested too deeply to parse") from None
    except (ValueError, UnicodeDecodeError) as error:
        raise BadEvents(f"not JSON: {error}") from None


def parse_events(body: bytes) -> list[dict[str, Any]]:
    """The events of a webhook body (a JSON array of objects), or BadEvents."""
    events = _loads(body)
    if not isinstance(events, list) or not all(isinstance(e, dict) for e in events):
        raise BadEvents("expected a JSON array of event objects")
    return events


def load_events(body: bytes) -> list[Any]:
    """The items of a stored body (a JSON array; each item is validated on its own)."""
    events = _loads(body)
    if not isinstance(events, list):
        raise BadEvents("expected a JSON array of event objects")
    return events


# --------------------------------------------------------------------------- validation


def _preview(value: Any) -> str:
    """A value as it may appear in an error: ASCII only (NUL escaped), at most ~40 chars."""
    if value is None:
        return "null"
    try:
        shown = ascii(value)
    except RecursionError:
        return "(nested too deeply to show)"
    return shown if len(shown) <= 40 else shown[:37] + "..."


def _got(value: Any) -> str:
    if value is None:
        return "got null"
    return f"got {type(value).__name__} {_preview(value)}"


def _text_problem(value: str) -> str | None:
    """Why a string may not be stored (a NUL byte, a lone surrogate), or None."""
    if "\x00" in value:
        return f"contains {describe(chr(0))}"
    if not value.isascii():
        try:
            value.encode("utf-8")
        except UnicodeEncodeError as error:
            return f"contains a lone surrogate U+{ord(value[error.start]):04X}"
    return None


def _name(key: str) -> str:
    return key if key and key.isascii() and key.isprintable() else ascii(key)


class _Bad(Exception):
    """A value found deep in an event that may not be stored (path built while unwinding)."""

    def __init__(self, message: str, *, top_only: bool = False) -> None:
        super().__init__(message)
        self.message = message
        self.top_only = top_only
        self.path: list[str] = []  # innermost first


def _check_value(value: Any, depth: int) -> None:
    """Raise _Bad for a NUL, lone surrogate, NaN or Infinity anywhere in ``value``, or for
    containers nested deeper than MAX_DEPTH (``depth``: the level ``value`` sits at)."""
    kind = type(value)
    if kind is str:
        problem = _text_problem(value)
        if problem is not None:
            raise _Bad(problem)
        return
    if kind is float:
        if not math.isfinite(value):
            shown = "NaN" if math.isnan(value) else ("Infinity" if value > 0 else "-Infinity")
            raise _Bad(f"{shown} is not a JSON number (Postgres refuses it)")
        return
    if kind is dict or kind is list:
        if depth > MAX_DEPTH:
            raise _Bad(f"nested deeper than {MAX_DEPTH} levels", top_only=True)
        if kind is dict:
            for key, item in value.items():
                problem = _text_problem(key)
                if problem is not None:
                    raise _Bad(f"key {key!a} {problem}")
                try:
                    _check_value(item, depth + 1)
                except _Bad as bad:
                    bad.path.append("." + _name(key))
                    raise
        else:
            for index, item in enumerate(value):
                try:
                    _check_value(item, depth + 1)
                except _Bad as bad:
                    bad.path.append(f"[{index}]")
                    raise


def _string(event: dict[str, Any], field: str, limit: int, problems: dict[str, str]) -> str | None:
    """The optional string ``field`` (None when absent, null or empty), or a problem."""
    value = event.get(field)
    if value is None or field in problems:
        return None
    if not isinstance(value, str):
        problems[field] = f"expected a string, {_got(value)}"
        return None
    if len(value) > limit:
        problems[field] = f"longer than {limit} characters ({len(value)})"
        return None
    return value or None


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


def _ledger_key(value: str) -> tuple[str, str, int] | None:
    """``campaign/message/contact id`` as a key, None when ``value`` is not Herald's; a
    contact id outside the INTEGER range is a BadEvent (it must not reach a query)."""
    campaign, _, rest = value.partition("/")
    message, _, contact = rest.partition("/")
    if not (campaign and message and contact.isascii() and contact.isdigit()):
        return None
    number = int(contact)
    if not 1 <= number <= MAX_CONTACT_ID:
        shown = contact if len(contact) <= 30 else contact[:27] + "..."
        raise BadEvent(f"herald_key: contact id {shown} is outside 1..{MAX_CONTACT_ID}")
    return campaign, message, number


def event_id(event: dict[str, Any]) -> str:
    """SendGrid's ``sg_event_id``; an event without one gets a stable id from its content."""
    given = event.get("sg_event_id")
    if isinstance(given, str) and given:
        return given
    digest = hashlib.sha256(json.dumps(event, sort_keys=True).encode()).hexdigest()
    return f"herald-{digest[:64]}"


class ValidEvent(NamedTuple):
    """An event that passed :func:`validate_event`: its ``email_event`` row and effects."""

    row: dict[str, Any]  # the email_event row (delivery_id still None)
    key: tuple[str, str, int] | None  # the ledger key it carries, if Herald's
    reason: SuppressionReason | None  # the suppression it adds, if any


def validate_event(event: Any, received_at: datetime | None = None) -> ValidEvent:
    """Check one event before anything of it reaches the database; BadEvent says what is
    wrong, field by field (``sg_event_id: longer than 100 characters (137)``)."""
    if not isinstance(event, dict):
        raise BadEvent(f"not a JSON object: {_got(event)}")
    problems: dict[str, str] = {}
    for key, value in event.items():
        if key.isascii() and "\x00" not in key:
            # The common case first, inline: a plain ASCII string or a number.
            value_type = type(value)
            if value_type is int or (value_type is str and value.isascii() and "\x00" not in value):
                continue
        else:
            problem = _text_problem(key)
            if problem is not None:
                problems[f"key {key!a}"] = problem
                continue
        try:
            _check_value(value, 2)
        except _Bad as bad:
            inner = "" if bad.top_only else "".join(reversed(bad.path))
            problems[_name(key) + inner] = bad.message

    kind = event.get("event")
    if "event" not in problems:
        if not isinstance(kind, str):
            problems["event"] = "missing" if kind is None else f"expected a string, {_got(kind)}"
        elif not kind:
            problems["event"] = "empty"
        elif len(kind) > MAX_EVENT:
            problems["event"] = f"longer than {MAX_EVENT} characters ({len(kind)})"
    given_id = event.get("sg_event_id")
    if given_id == "" and "sg_event_id" not in problems:
        problems["sg_event_id"] = "empty"
    sg_event_id = _string(event, "sg_event_id", MAX_SG_EVENT_ID, problems)
    sg_message_id = _string(event, "sg_message_id", MAX_SG_MESSAGE_ID, problems)
    herald_key = _string(event, "herald_key", MAX_HERALD_KEY, problems)

    occurred_at = received_at
    stamp = event.get("timestamp")
    if stamp is not None and "timestamp" not in problems:
        if isinstance(stamp, bool) or not isinstance(stamp, (int, float)):
            problems["timestamp"] = f"expected a Unix time in seconds, {_got(stamp)}"
        elif not 0 <= stamp <= MAX_TIMESTAMP:
            problems["timestamp"] = f"{_preview(stamp)} is outside 0..{MAX_TIMESTAMP}"
        else:
            occurred_at = datetime.fromtimestamp(int(stamp), UTC)

    reason = _suppression_reason(event) if isinstance(kind, str) else None
    email = ""
    given_email = event.get("email")
    if "email" not in problems:
        if given_email is None:
            if reason is not None:
                problems["email"] = f"missing (a {kind} event suppresses an address)"
        elif not isinstance(given_email, str):
            problems["email"] = f"expected a string, {_got(given_email)}"
        elif len(given_email) > MAX_EMAIL:
            problems["email"] = f"longer than {MAX_EMAIL} characters ({len(given_email)})"
        else:
            email = given_email.strip().lower()
            if reason is not None or not email.isascii():
                try:
                    email = canonical_email(given_email)
                except BadAddress as error:
                    if reason is not None:
                        problems["email"] = f"not a valid address for a {kind} event: {error}"
            if len(email) > MAX_EMAIL and "email" not in problems:
                problems["email"] = f"longer than {MAX_EMAIL} characters once normalised"

    key = None
    if herald_key is not None:
        try:
            key = _ledger_key(herald_key)
        except BadEvent as error:
            problems["herald_key"] = str(error).removeprefix("herald_key: ")
    if problems:
        raise BadEvent("; ".join(f"{field}: {problem}" for field, problem in problems.items()))
    now = received_at or utcnow()
    return ValidEvent(
        row={
            "sg_event_id": sg_event_id or event_id(event),
            "event": kind,
            "email": email,
            "occurred_at": occurred_at or now,
            "sg_message_id": sg_message_id,
            "herald_key": herald_key,
            "raw": event,
            "received_at": now,
            "delivery_id": None,
        },
        key=key,
        reason=reason,
    )


# --------------------------------------------------------------------------- applying


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


@dataclass(frozen=True)
class EventFailure:
    """An event that could not be applied: where it was, and why."""

    position: int  # its index among the events given
    raw: Any
    error: str


def _clip(text: str, limit: int = MAX_ERROR) -> str:
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
    return _clip(f"{name}: {line}" if line else name, 500)


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


def _begin_writing(conn: Connection) -> None:
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


def _bulk(conn: Connection, events: Sequence[ValidEvent]) -> Processed:
    """Store valid events once and act on them (the statements, in bulk)."""
    from herald.delivery.ledger import settle_proven
    from herald.models import DELIVERY

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


def _add(total: Processed, more: Processed) -> Processed:
    return replace(
        total,
        events=total.events + more.events,
        stored=total.stored + more.stored,
        suppressed=total.suppressed + more.suppressed,
        settled=total.settled + more.settled,
    )


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
            failed.append(EventFailure(position, item, _clip(str(error))))
    result = Processed(0, 0, 0, 0)
    if valid:
        _begin_writing(conn)
        try:
            with conn.begin_nested():
                result = _bulk(conn, [event for _, event in valid])
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
                        result = _add(result, _bulk(conn, [event]))
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


def apply_events(conn: Connection, events: Iterable[Any]) -> Processed:
    """Store events once and act on them, in the caller's transaction.

    Events that cannot be applied are left out and counted in ``failed`` (outside a batch
    there is nowhere to keep them: :func:`process_batch` keeps them).
    """
    result, _ = apply_items(conn, list(events))
    return result


# --------------------------------------------------------------------------- batches


def store_batch(engine: Engine, body: bytes, signed_at: datetime | None, events: int) -> int:
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
    if isinstance(value, str) and 0 < len(value) <= limit and _text_problem(value) is None:
        return value
    return None


def _record_failures(
    conn: Connection, batch_id: int, found: Sequence[EventFailure], now: datetime
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
    return _clip(
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
        _begin_writing(conn)
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
        _record_failures(conn, batch_id, found, now)
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


def process_batch_safely(engine: Engine, batch_id: int) -> Processed | None:
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
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(WEBHOOK_BATCH.c.processed_at.is_(None))
            ).scalar_one()
        )


def process_pending(engine: Engine, limit: int | None = None) -> list[Processed]:
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
    results = [process_batch_safely(engine, batch_id) for batch_id in pending]
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
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None))
            ).scalar_one()
        )


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
            _begin_writing(conn)
            rows = conn.execute(
                select(WEBHOOK_EVENT_FAILURE.c.id, WEBHOOK_EVENT_FAILURE.c.raw)
                .where(
                    WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None),
                    WEBHOOK_EVENT_FAILURE.c.id > last_id,
                )
                .order_by(WEBHOOK_EVENT_FAILURE.c.id)
                .limit(CHUNK)
                .with_for_update()
            ).all()
            if not rows:
                break
            last_id = rows[-1].id
            items: list[Any] = []
            unreadable: dict[int, str] = {}
            for index, row in enumerate(rows):
                try:
                    items.append(_json(row.raw))
                except (ValueError, RecursionError) as error:
                    unreadable[index] = _clip(f"raw: not JSON: {error}")
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
            applied = _add(applied, result)
    return Retried(retried, resolved, retried - resolved, applied)
