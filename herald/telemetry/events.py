"""SendGrid events: parse a webhook body, and check each event before it reaches the database.

Every event is **validated first** (:func:`validate_event`), before any value reaches the
database: its type, the size of every column it fills, the range of its timestamp and of
the contact id in its ledger key, and no NUL byte, lone surrogate, NaN or Infinity anywhere
in it, nor nesting deeper than :data:`MAX_DEPTH` levels. What a valid event does is
:mod:`herald.telemetry.event_effects`; stored batches and their failures are
:mod:`herald.telemetry.webhook_batches`.
"""

from __future__ import annotations

import hashlib
import json
import math
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, Final, NamedTuple, TypeVar

from herald.addresses import BadAddress, canonical_email, describe
from herald.delivery.keys import LedgerKey
from herald.models import SuppressionReason, utcnow

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
# Columns of email_event a value goes to, and their sizes.
MAX_EVENT: Final = 32
MAX_SG_EVENT_ID: Final = 100
MAX_SG_MESSAGE_ID: Final = 200
MAX_EMAIL: Final = 320
MAX_HERALD_KEY: Final = 300


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


def parse_json(body: bytes | str) -> Any:
    """``json.loads``; nested deeper than this stack allows: again, on a fresh stack."""
    try:
        return json.loads(body)
    except RecursionError:
        return on_fresh_stack(json.loads, body)


def _loads(body: bytes | str) -> Any:
    try:
        return parse_json(body)
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


def text_problem(value: str) -> str | None:
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
        problem = text_problem(value)
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
                problem = text_problem(key)
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
    """(campaign, message, contact id) of a customer message's key, None when ``value`` is
    not one (a report's key settles nothing); a contact id outside the INTEGER range is a
    BadEvent (it must not reach a query)."""
    try:
        key = LedgerKey.parse(value)
    except ValueError as error:
        raise BadEvent(f"herald_key: {error}") from None
    if key is None or key.contact_id is None:
        return None
    return key.campaign, key.message, key.contact_id


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
            problem = text_problem(key)
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
