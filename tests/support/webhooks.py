"""Event Webhook helpers: signed batches at a fixed clock, poison events, a served receiver."""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from herald.config import WebhookConfig
from herald.telemetry.webhook import create_app
from herald.testing import event_webhook
from tests.support.environment import Database
from tests.support.http import client_of

SAMPLE = json.loads(
    (
        Path(__file__).resolve().parents[1] / "data" / "sendgrid-event-webhook-signed-sample.json"
    ).read_text(encoding="utf-8")
)


NOW = 1_790_000_000


class Signer(event_webhook.Signer):
    """SendGrid's signature, made at the tests' fixed clock unless told otherwise."""

    def headers(self, body: bytes, timestamp: int | None = NOW) -> dict[str, str]:
        return super().headers(body, timestamp)


def event(kind: str, email: Any, number: int, **extra: Any) -> dict[str, Any]:
    """A SendGrid event as the webhook posts it (``email`` may be anything, for poison)."""
    return {
        "email": email,
        "event": kind,
        "sg_event_id": f"evt-{kind}-{number}",
        "sg_message_id": f"msg{number}.filter",
        "timestamp": NOW - 60,
        **extra,
    }


def nested(levels: int) -> Any:
    """A value of ``levels`` nested JSON arrays."""
    value: Any = "deep"
    for _ in range(levels):
        value = [value]
    return value


@dataclass(frozen=True)
class Poison:
    """An event that cannot be applied, and the exact error it is kept with."""

    name: str
    event: dict[str, Any]
    error: str


POISONS = [
    Poison(
        "oversized-sg_event_id",
        event("open", "p1@x.example", 101, sg_event_id="e" * 137),
        "sg_event_id: longer than 100 characters (137)",
    ),
    Poison(
        "nul-in-reason",
        event("bounce", "p2@x.example", 102, reason="550 5.1.1 \x00 unknown user"),
        "reason: contains U+0000 NULL",
    ),
    Poison(
        "nul-in-a-nested-key",
        event("click", "p3@x.example", 103, url_offset={"ty\x00pe": "html"}),
        "url_offset: key 'ty\\x00pe' contains U+0000 NULL",
    ),
    Poison(
        "lone-surrogate",
        event("open", "p4@x.example", 104, useragent="Mozilla \ud800"),
        "useragent: contains a lone surrogate U+D800",
    ),
    Poison(
        "timestamp-not-a-number",
        event("delivered", "p5@x.example", 105, timestamp="abc"),
        "timestamp: expected a Unix time in seconds, got str 'abc'",
    ),
    Poison(
        "timestamp-out-of-range",
        event("delivered", "p6@x.example", 106, timestamp=10**20),
        "timestamp: 100000000000000000000 is outside 0..253402300799",
    ),
    Poison(
        "email-not-a-string",
        event("unsubscribe", 42, 107),
        "email: expected a string, got int 42",
    ),
    Poison(
        "bounce-without-an-address",
        event("bounce", "not-an-address", 108),
        "email: not a valid address for a bounce event: An email address must have an @-sign.",
    ),
    Poison(
        "contact-id-out-of-range",
        event(
            "processed",
            "p9@x.example",
            109,
            herald_key="modular-migration-2027/announcement/99999999999",
        ),
        "herald_key: contact id 99999999999 is outside 1..2147483647",
    ),
    Poison(
        "nan",
        event("open", "p10@x.example", 110, score=float("nan")),
        "score: NaN is not a JSON number (Postgres refuses it)",
    ),
    Poison(
        "infinity",
        event("open", "p11@x.example", 111, score=float("-inf")),
        "score: -Infinity is not a JSON number (Postgres refuses it)",
    ),
    Poison(
        "deep-nesting",
        event("click", "p12@x.example", 112, payload=nested(40)),
        "payload: nested deeper than 32 levels",
    ),
    Poison(
        "event-too-long",
        event("x" * 40, "p13@x.example", 113),
        "event: longer than 32 characters (40)",
    ),
    Poison(
        "not-an-object-field-type",
        event("open", "p14@x.example", 114, sg_message_id=["a", "b"]),
        "sg_message_id: expected a string, got list ['a', 'b']",
    ),
]


GOOD = [
    event("bounce", "Bounced@X.example", 1, reason="550 5.1.1 unknown user"),
    event("unsubscribe", "left@x.example", 2),
    event("spamreport", "angry@x.example", 3),
]


GOOD_SUPPRESSIONS = [
    ("angry@x.example", "spam_report", "sendgrid:spamreport"),
    ("bounced@x.example", "bounce", "sendgrid:bounce"),
    ("left@x.example", "unsubscribe", "sendgrid:unsubscribe"),
]


def poisoned_batch() -> tuple[list[dict[str, Any]], list[tuple[int, str]]]:
    """Every poison event with the three good ones among them, and the (position, exact
    error) each poison event is to be kept with."""
    batch: list[dict[str, Any]] = []
    expected: list[tuple[int, str]] = []
    for number, poison in enumerate(POISONS):
        expected.append((len(batch), poison.error))
        batch.append(poison.event)
        if number < len(GOOD):
            batch.append(GOOD[number])
    return batch, expected


@contextmanager
def client_for(
    db: Database, key: str, clock: float = NOW, process: bool = True, **limits: int
) -> Iterator[httpx.Client]:
    """The receiver served by uvicorn on 127.0.0.1 (its startup runs), and a client for it.

    Leaving the block waits for the batches' processing (it runs after each answer) and
    stops the server.
    """
    app = create_app(db.engine, key, WebhookConfig(**limits), clock=lambda: clock, process=process)
    with client_of(app) as client:
        yield client
