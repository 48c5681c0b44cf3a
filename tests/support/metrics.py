"""A small campaign with known success metrics as of AS_OF, built row by row."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from typing import Any

from sqlalchemy import Engine, insert

from herald.models import (
    ACCOUNT,
    ADOPTION_EVENT,
    CONTACT,
    DELIVERY,
    EMAIL_EVENT,
    PERFORMANCE_REPORT,
    SATISFACTION_RESPONSE,
    SEGMENT_ASSIGNMENT,
    SUPPORT_TICKET,
    TELEMETRY_BATCH,
)

AS_OF = date(2027, 4, 11)


CAMPAIGN = "modular-migration-2027"


SEGMENTS = ["all", "early_adopter", "standard", "conservative", "unsegmented"]


def at(month: int, day: int, hour: int = 10, minute: int = 0, second: int = 0) -> datetime:
    """A moment of 2027, UTC."""
    return datetime(2027, month, day, hour, minute, second, tzinfo=UTC)


AFTER = at(4, 12, 0, 0, 0)  # the first instant that must not count


def build(engine: Engine) -> None:
    """Insert the campaign described in the module docstring."""
    accounts = [
        # id, lifecycle, migration_state, migrated_on, attributes
        (1, "active", "migrated", date(2027, 3, 1), {"performance_focused": True}),
        (2, "active", "migrated", date(2027, 4, 20), {"performance_focused": True}),
        (3, "active", "in_progress", None, {"performance_focused": False}),
        (4, "active", "not_started", None, {"performance_focused": True}),
        (5, "active", "migrated", date(2027, 2, 20), {"performance_focused": "yes"}),
        (6, "churned", "not_started", None, {"performance_focused": True}),
        (7, "active", "not_started", None, {"performance_focused": True}),
    ]
    contacts = {1: 1, 2: 1, 3: 2, 4: 3, 5: 3, 6: 4, 7: 5, 8: 6, 9: 7, 10: 7}
    latest = {1: "early_adopter", 2: "early_adopter", 3: "standard", 4: "standard"}
    latest |= {5: "conservative", 7: "conservative"}
    deliveries = [
        # id, contact, message, state, sent_at, campaign
        (1, 1, "preview", "accepted", at(1, 12), CAMPAIGN),
        (2, 3, "preview", "accepted", at(1, 12), CAMPAIGN),
        (3, 9, "preview", "failed", None, CAMPAIGN),
        (4, 8, "preview", "accepted", at(1, 12), CAMPAIGN),
        (5, 1, "announcement", "accepted", at(2, 9), CAMPAIGN),
        (6, 2, "announcement", "accepted", at(2, 9), CAMPAIGN),
        (7, 4, "announcement", "accepted", at(2, 9), CAMPAIGN),
        (8, 5, "announcement", "failed", None, CAMPAIGN),
        (9, 6, "announcement", "accepted", at(4, 12, 9), CAMPAIGN),
        (10, 7, "announcement", "accepted", at(2, 9), CAMPAIGN),
        (11, 9, "announcement", "planned", None, CAMPAIGN),
        (12, 10, "announcement", "accepted", at(2, 9), CAMPAIGN),
        (13, 3, "sunset-t90", "accepted", at(4, 1), CAMPAIGN),
        (14, 5, "deprecation", "accepted", at(3, 16), CAMPAIGN),
        (15, 4, "announcement", "accepted", at(2, 9), "other-campaign"),
    ]
    events: list[tuple[int | None, str, datetime, dict[str, Any]]] = [
        (1, "delivered", at(1, 12, 10, 1), {}),
        (1, "open", at(1, 12, 12), {}),
        (1, "open", at(1, 13, 9), {}),
        (1, "unsubscribe", at(2, 1), {}),
        (2, "bounce", at(1, 12, 10, 2), {"type": "blocked"}),
        (2, "click", at(4, 12, 8), {}),  # after AS_OF
        (4, "delivered", at(1, 12, 10, 1), {}),
        (4, "open", at(1, 14), {}),
        (5, "processed", at(2, 9, 10), {}),
        (5, "delivered", at(2, 9, 10, 1), {}),
        (5, "click", at(2, 10), {}),
        (6, "delivered", at(2, 9, 10, 1), {}),
        (6, "open", at(2, 11), {}),
        (6, "unsubscribe", at(4, 12, 7), {}),  # after AS_OF
        (7, "bounce", at(2, 9, 10, 2), {"type": "bounce"}),
        (7, "deferred", at(2, 9, 10, 1), {}),
        (9, "delivered", at(4, 12, 9, 1), {}),  # after AS_OF
        (9, "open", at(4, 12, 10), {}),  # after AS_OF
        (10, "delivered", at(2, 9, 10, 1), {}),
        (10, "click", at(2, 10), {}),
        (12, "delivered", at(2, 9, 10, 1), {}),
        (12, "open", at(2, 10), {}),
        (12, "spamreport", at(2, 10, 11), {}),
        (13, "delivered", at(4, 1, 10, 1), {}),
        (13, "group_unsubscribe", at(4, 11, 23, 59, 59), {}),  # the last second that counts
        (14, "bounce", at(3, 16, 10, 2), {}),  # no type: a hard bounce
        (15, "open", at(2, 10), {}),  # another campaign
        (None, "click", at(2, 10), {}),  # not Herald's
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(ACCOUNT),
            [
                {
                    "id": account_id,
                    "external_id": f"A{account_id}",
                    "name": f"Account {account_id}",
                    "tier": "pro",
                    "region": "na",
                    "lifecycle": lifecycle,
                    "migration_state": state,
                    "migrated_on": migrated_on,
                    "attributes": attributes,
                }
                for account_id, lifecycle, state, migrated_on, attributes in accounts
            ],
        )
        conn.execute(
            insert(CONTACT),
            [
                {"id": contact, "account_id": account, "email": f"c{contact}@example.com"}
                for contact, account in contacts.items()
            ],
        )
        assignments = [
            (account, date(2026, 12, 1), "standard") for account in range(1, 7)
        ]  # older: ignored
        assignments += [(account, date(2027, 1, 5), segment) for account, segment in latest.items()]
        assignments += [  # later than AS_OF: ignored
            (account, date(2027, 5, 1), "conservative") for account in latest
        ]
        conn.execute(
            insert(SEGMENT_ASSIGNMENT),
            [
                {
                    "account_id": account,
                    "as_of": day,
                    "segment": segment,
                    "rule": "test",
                    "readiness": "ready",
                    "readiness_rule": "test",
                }
                for account, day, segment in assignments
            ],
        )
        conn.execute(
            insert(DELIVERY),
            [
                {
                    "id": delivery,
                    "campaign": campaign,
                    "message": message,
                    "contact_id": contact,
                    "segment": "standard",
                    "role": "technical",
                    "locale": "en",
                    "state": state,
                    "sent_at": sent_at,
                }
                for delivery, contact, message, state, sent_at, campaign in deliveries
            ],
        )
        conn.execute(
            insert(EMAIL_EVENT),
            [
                {
                    "sg_event_id": f"ev{number}",
                    "event": kind,
                    "email": "someone@example.com",
                    "occurred_at": moment,
                    "delivery_id": delivery,
                    "raw": {"event": kind, **raw},
                }
                for number, (delivery, kind, moment, raw) in enumerate(events)
            ],
        )
        conn.execute(
            insert(ADOPTION_EVENT),
            [
                {"account_id": account, "observed_on": day, "adoption_pct": pct}
                for account, day, pct in [
                    (1, date(2027, 2, 28), 100.0),
                    (2, date(2027, 3, 10), 0.0),  # zero is not adoption
                    (2, date(2027, 4, 15), 30.0),  # after AS_OF
                    (4, date(2027, 3, 20), 40.0),
                    (6, date(2027, 3, 1), 50.0),  # churned
                ]
            ],
        )
        conn.execute(
            insert(SUPPORT_TICKET),
            [
                {"ticket_id": f"T{n}", "account_id": account, "opened_at": moment, "category": cat}
                for n, (account, moment, cat) in enumerate(
                    [
                        (1, at(2, 10), "install"),
                        (1, at(2, 12), "performance"),
                        (3, at(3, 1), "install"),
                        (5, at(4, 12, 1), "install"),  # after AS_OF
                        (6, at(2, 10), "install"),  # churned account
                        (7, at(4, 11, 12), "performance"),
                    ]
                )
            ],
        )
        conn.execute(
            insert(SATISFACTION_RESPONSE),
            [
                {
                    "response_id": f"R{n}",
                    "account_id": account,
                    "responded_at": moment,
                    "csat": csat,
                    "comment": comment,
                }
                for n, (account, moment, csat, comment) in enumerate(
                    [
                        (1, at(2, 20), 5, "Much faster imports"),
                        (2, at(3, 1), 4, "   "),  # blank: not feedback
                        (3, at(3, 5), 3, None),
                        (5, at(3, 10), 5, "ok"),
                        (6, at(2, 15), 2, "leaving"),  # churned: unsegmented
                        (7, at(4, 12, 10), 1, "bad"),  # after AS_OF
                    ]
                )
            ],
        )
        conn.execute(
            insert(PERFORMANCE_REPORT),
            [
                {
                    "report_id": f"P{n}",
                    "account_id": account,
                    "reported_at": moment,
                    "legacy_import_ms": legacy,
                    "new_import_ms": new,
                    "legacy_memory_mb": 100.0,
                    "new_memory_mb": 1.0,
                }
                for n, (account, moment, legacy, new) in enumerate(
                    [
                        (1, at(1, 20), 1000.0, 1200.0),  # older, slower
                        (1, at(3, 5), 1000.0, 10.0),  # latest by AS_OF: faster
                        (1, at(4, 20), 1000.0, 2000.0),  # after AS_OF
                        (2, at(3, 5), 1000.0, 10.0),  # not migrated by AS_OF
                    ]
                )
            ],
        )


def reject(engine: Engine, source: str = "adoption") -> None:
    """Record a rejected last batch of ``source`` (its columns did not match the contract)."""
    with engine.begin() as conn:
        conn.execute(
            insert(TELEMETRY_BATCH).values(
                id=str(uuid.uuid4()),
                source=source,
                file=f"/data/{source}-2027-04-11.csv",
                received_at=at(4, 11, 6),
                status="rejected",
                rows=10,
                failed_check="expect_table_columns_to_match_set",
                failed_column="adoption_pct",
                detail="column adoption_pct is missing",
            )
        )
