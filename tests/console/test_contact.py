"""`herald contact show EMAIL`: a contact's whole history, checked against the ledger, on
both databases.

The base is the demo's (``load_base``), and the campaign runs the way a rehearsal runs it
(the preview and announcement days planned, sent through the outbox and answered by
synthetic SendGrid events: :mod:`herald.sandbox.rehearsal`, without Prefect). The command
runs through ``herald`` itself, with typer's CliRunner.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import func, select, update
from typer.testing import CliRunner, Result

from herald.cli import app
from herald.config import HeraldConfig, MessageKind
from herald.console.contact import contact_history
from herald.customers.segmentation import assign_segments
from herald.delivery import planning
from herald.delivery.keys import LedgerKey
from herald.delivery.sender import Renderer, deliver_message
from herald.delivery.transports.outbox import OutboxTransport
from herald.models import ACCOUNT, CONTACT, DELIVERY, EMAIL_EVENT, SEGMENT_ASSIGNMENT, as_utc
from herald.sandbox.rehearsal import Behaviour, Draws, plan_day, send_day, telemetry_day
from herald.settings import get_settings
from herald.telemetry.event_effects import apply_events
from herald.unsubscribe.links import UnsubscribeLinks
from tests.support.bases import load_base
from tests.support.environment import Database

CAMPAIGN = "modular-migration-2027"
PREVIEW, ANNOUNCEMENT, DEPRECATION = date(2027, 1, 12), date(2027, 2, 9), date(2027, 3, 16)
RESEGMENTED = date(2027, 1, 5)


def herald(*args: str) -> Result:
    """Run `herald ARGS` (a wide terminal: tables do not wrap)."""
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


@dataclass(frozen=True)
class Rehearsed:
    """A campaign rehearsed on a demo base, and the contact the tests look at."""

    config: HeraldConfig
    email: str
    contact_id: int
    account_id: int


def rehearse(db: Database, tmp_path: Path) -> Rehearsed:
    """The demo base, segmented twice, its preview and announcement days rehearsed through
    the outbox with synthetic events, the deprecation planned; then the contact with the
    most ledger rows and events has its account migrated by telemetry, a bounce, and a
    manual suppression added through the CLI."""
    loaded = load_base(db, tmp_path, accounts=30)
    assign_segments(engine=db.engine, config=loaded.segments, as_of=RESEGMENTED)
    transport = OutboxTransport(tmp_path / "outbox")
    renderer = Renderer(loaded)
    links = UnsubscribeLinks.configured(get_settings(), loaded.campaign)
    log = logging.getLogger("tests.console.rehearsal")

    def deliver(phase: MessageKind, message: str, at: datetime) -> int:
        done = deliver_message(
            db.engine,
            config=loaded,
            phase=phase,
            message=message,
            transport=transport,
            renderer=renderer,
            links=links,
            log=log,
            at=at,
        )
        return done.accepted

    draws, behaviour = Draws(7), Behaviour()
    for day in (PREVIEW, ANNOUNCEMENT):
        plan_day(db.engine, loaded, day)
        assert send_day(db.engine, loaded, day, deliver)
        telemetry_day(db.engine, loaded, day, behaviour, draws)
    planning.plan(db.engine, config=loaded, phase="deprecation", as_of=DEPRECATION)

    with db.engine.begin() as conn:
        contact_id, account_id, email = conn.execute(
            select(CONTACT.c.id, CONTACT.c.account_id, CONTACT.c.email)
            .join(DELIVERY, DELIVERY.c.contact_id == CONTACT.c.id)
            .outerjoin(EMAIL_EVENT, EMAIL_EVENT.c.delivery_id == DELIVERY.c.id)
            .group_by(CONTACT.c.id, CONTACT.c.account_id, CONTACT.c.email)
            .order_by(
                func.count(DELIVERY.c.id.distinct()).desc(),
                func.count(EMAIL_EVENT.c.id).desc(),
                CONTACT.c.id,
            )
            .limit(1)
        ).one()
        conn.execute(
            update(ACCOUNT)
            .where(ACCOUNT.c.id == account_id)
            .values(
                migration_state="migrated",
                migrated_on=date(2027, 2, 20),
                migration_source="telemetry",
                crm_migration_state="in_progress",
            )
        )
        sent = (
            conn.execute(
                select(DELIVERY.c.message)
                .where(DELIVERY.c.contact_id == contact_id, DELIVERY.c.state == "accepted")
                .order_by(DELIVERY.c.id)
            )
            .scalars()
            .first()
        )
        assert sent is not None
        apply_events(
            conn,
            events=[
                {
                    "email": email,
                    "event": "bounce",
                    "type": "bounce",
                    "reason": "552 mailbox full",
                    "sg_event_id": f"test-bounce-{contact_id}",
                    "herald_key": LedgerKey(CAMPAIGN, sent, contact_id).format(),
                    "timestamp": int(datetime(2027, 2, 10, 9, tzinfo=UTC).timestamp()),
                }
            ],
        )
    added = herald("suppressions", "add", email, "--why", "legal hold", "--by", "ops")
    assert added.exit_code == 0, added.output
    return Rehearsed(loaded, email, contact_id, account_id)


def ledger(db: Database, contact_id: int) -> list[dict[str, Any]]:
    """The contact's ledger rows in the campaign, as the JSON output gives them."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(DELIVERY)
            .where(DELIVERY.c.contact_id == contact_id, DELIVERY.c.campaign == CAMPAIGN)
            .order_by(DELIVERY.c.id)
        ).all()

    def moment(value: datetime | None) -> str | None:
        return None if value is None else as_utc(value).isoformat()

    return [
        {
            "delivery_id": row.id,
            "message": row.message,
            "segment": row.segment,
            "role": row.role,
            "locale": row.locale,
            "timezone": row.timezone,
            "critical": bool(row.critical),
            "state": row.state,
            "planned_at": moment(row.planned_at),
            "not_before": moment(row.not_before),
            "not_after": moment(row.not_after),
            "claimed_at": moment(row.claimed_at),
            "sent_at": moment(row.sent_at),
            "batch_id": row.batch_id,
            "provider_message_id": row.provider_message_id,
            "attempts": row.attempts,
            "error": row.error,
        }
        for row in rows
    ]


def event_ids(db: Database, rehearsed: Rehearsed) -> list[str]:
    """The sg_event_ids of the contact's events (its address or its ledger rows)."""
    with db.engine.connect() as conn:
        rows = select(DELIVERY.c.id).where(DELIVERY.c.contact_id == rehearsed.contact_id)
        return sorted(
            conn.execute(
                select(EMAIL_EVENT.c.sg_event_id).where(
                    (EMAIL_EVENT.c.email == rehearsed.email) | EMAIL_EVENT.c.delivery_id.in_(rows)
                )
            ).scalars()
        )


def test_the_json_lists_every_ledger_row_of_the_contact(db: Database, tmp_path: Path) -> None:
    """`contact show --json` parses, and its messages equal the contact's ledger rows (every
    message the rehearsal sent, the planned one too, each with its state and provider id);
    its events, segments, suppressions, migration and audit entries are the stored ones,
    and contact_history returns the same for another spelling of the address."""
    rehearsed = rehearse(db, tmp_path)

    result = herald("contact", "show", rehearsed.email.upper(), "--json")

    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    expected = ledger(db, rehearsed.contact_id)
    assert sorted(found["messages"], key=lambda m: m["delivery_id"]) == expected
    states = {row["message"]: row["state"] for row in expected}
    assert states["preview"] == states["announcement"] == "accepted"
    assert states["deprecation"] == "planned"
    assert all(row["provider_message_id"] for row in expected if row["state"] == "accepted")
    assert sorted(e["sg_event_id"] for e in found["events"]) == event_ids(db, rehearsed)
    bounce = next(e for e in found["events"] if e["event"] == "bounce")
    assert bounce["detail"] == {"type": "bounce", "reason": "552 mailbox full"}
    assert found["contact"]["id"] == rehearsed.contact_id
    assert found["contact"]["email"] == rehearsed.email
    assert [(s["as_of"], s["segment"]) for s in found["segments"]] == segments(db, rehearsed)
    assert found["account"]["migration_state"] == "migrated"
    assert found["account"]["migration_source"] == "telemetry"
    assert found["account"]["migrated_on"] == "2027-02-20"
    assert found["account"]["crm_migration_state"] == "in_progress"
    assert {(s["reason"], s["source"]) for s in found["suppressions"]} == {
        ("bounce", "sendgrid:bounce"),
        ("manual", "manual"),
    }
    [logged] = found["audit"]
    assert (logged["actor"], logged["action"]) == ("ops", "suppression.added")
    assert logged["detail"]["why"] == "legal hold"

    with db.engine.connect() as conn:  # the function, by another form of the address
        history = contact_history(conn, campaign=CAMPAIGN, email=f" {rehearsed.email.title()} ")
    assert history is not None and history.as_json() == found
    planned = [message.planned_at for message in history.messages]
    assert planned == sorted(planned)


def segments(db: Database, rehearsed: Rehearsed) -> list[tuple[str, str]]:
    """The account's segment history, oldest first."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(SEGMENT_ASSIGNMENT.c.as_of, SEGMENT_ASSIGNMENT.c.segment)
            .where(SEGMENT_ASSIGNMENT.c.account_id == rehearsed.account_id)
            .order_by(SEGMENT_ASSIGNMENT.c.as_of)
        ).all()
    return [(as_of.isoformat(), segment) for as_of, segment in rows]


def test_the_tables_show_messages_states_events_segments_and_suppressions(
    db: Database, tmp_path: Path
) -> None:
    """The terminal view names each ledger row with its state and provider id, each event,
    both segmentations in order, the suppressions, and who set the migration state."""
    rehearsed = rehearse(db, tmp_path)

    result = herald("contact", "show", rehearsed.email)

    assert result.exit_code == 0, result.output
    out = result.stdout
    for row in ledger(db, rehearsed.contact_id):
        line = next(line for line in out.splitlines() if f"│ {row['message']} " in line)
        assert row["state"] in line
        if row["provider_message_id"]:
            assert row["provider_message_id"] in line
    assert out.index(RESEGMENTED.isoformat()) > out.index("2026-11-24")
    assert "Segment history" in out
    for event in ("delivered", "bounce"):
        assert f"│ {event} " in out
    assert "552 mailbox full" in out
    assert "sendgrid:bounce" in out and "legal hold" in out
    assert "migrated on 2027-02-20" in out
    assert "telemetry" in out and "in_progress" in out


def test_an_internationalised_address_is_found_in_either_form(db: Database) -> None:
    """A contact stored with an A-label domain is found by its Unicode form and shown in it."""
    with db.engine.begin() as conn:
        account_id = conn.execute(
            ACCOUNT.insert()
            .values(
                external_id="A1",
                name="Bücher GmbH",
                tier="business",
                region="emea",
                lifecycle="active",
                migration_state="not_started",
                attributes={},
                created_at=datetime(2026, 11, 1, tzinfo=UTC),
                updated_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
            .returning(ACCOUNT.c.id)
        ).scalar_one()
        conn.execute(
            CONTACT.insert().values(
                account_id=account_id,
                email="jana@xn--bcher-kva.example",
                role="executive",
                locale="de",
                created_at=datetime(2026, 11, 1, tzinfo=UTC),
                updated_at=datetime(2026, 11, 1, tzinfo=UTC),
            )
        )

    result = herald("contact", "show", "Jana@BÜCHER.example", "--json", "--campaign", CAMPAIGN)

    assert result.exit_code == 0, result.output
    found = json.loads(result.stdout)
    assert found["contact"]["email"] == "jana@xn--bcher-kva.example"
    assert found["contact"]["display_email"] == "jana@bücher.example"
    assert found["messages"] == [] and found["segments"] == []


def test_an_unknown_or_invalid_address_exits_2_with_one_line(db: Database) -> None:
    """An address no contact has, or no address at all, exits 2 with one line on stderr
    and no traceback."""
    for argument, message in (
        ("nobody@example.com", "no contact has the address nobody@example.com"),
        ("nobody", "invalid e-mail 'nobody'"),
    ):
        result = herald("contact", "show", argument)
        assert result.exit_code == 2
        assert result.stdout == ""
        assert len(result.stderr.strip().splitlines()) == 1
        assert message in result.stderr
        assert "Traceback" not in result.output
    assert db.count("audit_log") == 0
