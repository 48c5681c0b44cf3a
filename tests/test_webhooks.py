"""The SendGrid Event Webhook receiver: signatures, once-only storage, crashes, effects."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from sqlalchemy import text

from flows.send_phase import PhaseRun, send_phase
from herald import ledger
from herald.config import WebhookConfig
from herald.telemetry.events import process_pending
from herald.telemetry.webhook import PATH, SIGNATURE_HEADER, TIMESTAMP_HEADER, create_app
from herald.testing import event_webhook
from herald.testing.processes import free_port, served
from tests.bases import DAY, config, ledger_emails, load_base, some_contacts
from tests.conftest import Database

SAMPLE = json.loads(
    (Path(__file__).parent / "data" / "sendgrid-event-webhook-signed-sample.json").read_text(
        encoding="utf-8"
    )
)
NOW = 1_790_000_000


class Signer(event_webhook.Signer):
    """SendGrid's signature, made at the tests' fixed clock unless told otherwise."""

    def headers(self, body: bytes, timestamp: int | None = NOW) -> dict[str, str]:
        return super().headers(body, timestamp)


def event(kind: str, email: str, number: int, **extra: Any) -> dict[str, Any]:
    return {
        "email": email,
        "event": kind,
        "sg_event_id": f"evt-{kind}-{number}",
        "sg_message_id": f"msg{number}.filter",
        "timestamp": NOW - 60,
        **extra,
    }


@pytest.fixture
def signer() -> Signer:
    return Signer()


@contextmanager
def client_for(
    db: Database, key: str, clock: float = NOW, process: bool = True, **limits: int
) -> Iterator[httpx.Client]:
    """The receiver served by uvicorn on 127.0.0.1 (its startup runs), and a client for it.

    Leaving the block waits for the batches' processing (it runs after each answer) and
    stops the server.
    """
    app = create_app(db.engine, key, WebhookConfig(**limits), clock=lambda: clock, process=process)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=30)


class TestSignatures:
    def test_the_real_signed_sample_verifies_and_one_changed_byte_is_refused(
        self, db: Database
    ) -> None:
        """SendGrid's own signed sample is accepted; the same body with a byte changed is not."""
        body = SAMPLE["raw_body"].encode()
        headers = {
            SIGNATURE_HEADER: SAMPLE["signature"],
            TIMESTAMP_HEADER: SAMPLE["timestamp"],
        }
        with client_for(db, SAMPLE["public_key"], clock=int(SAMPLE["timestamp"]) + 10) as client:
            accepted = client.post(PATH, content=body, headers=headers)
            tampered = client.post(
                PATH, content=body.replace(b"hello@world", b"hellO@world"), headers=headers
            )
        assert accepted.status_code == 200
        assert tampered.status_code == 403
        assert db.count("webhook_batch") == 1
        assert db.count("email_event") == 1
        with db.engine.connect() as conn:
            suppression = conn.execute(text("SELECT email, reason, source FROM suppression")).all()
        assert [tuple(row) for row in suppression] == [
            ("hello@world.com", "bounce", "sendgrid:dropped")
        ]

    def test_refusals_store_nothing(self, db: Database, signer: Signer) -> None:
        """Missing or bad signature, stale timestamp: 403; too big: 413; not JSON: 400."""
        body = json.dumps([event("open", "a@x.example", 1)]).encode()
        with client_for(db, signer.public, max_body_bytes=2000) as client:
            assert client.post(PATH, content=body).status_code == 403
            stale = signer.headers(body, timestamp=NOW - 301)
            assert client.post(PATH, content=body, headers=stale).status_code == 403
            future = signer.headers(body, timestamp=NOW + 301)
            assert client.post(PATH, content=body, headers=future).status_code == 403
            other = Signer().headers(body)
            assert client.post(PATH, content=body, headers=other).status_code == 403
            big = json.dumps([event("open", f"{n}@x.example", n) for n in range(40)]).encode()
            assert client.post(PATH, content=big, headers=signer.headers(big)).status_code == 413
            bad = b'[{"email": "a@x.example", "event": "open"'
            assert client.post(PATH, content=bad, headers=signer.headers(bad)).status_code == 400
            good = client.post(PATH, content=body, headers=signer.headers(body, NOW - 299))
            assert good.status_code == 200
        assert db.count("webhook_batch") == 1 and db.count("email_event") == 1


class TestOnceAndDurable:
    def test_a_batch_posted_46_times_stores_each_event_once(
        self, db: Database, signer: Signer
    ) -> None:
        """SendGrid re-delivers: 46 posts of 5 events leave exactly 5 events."""
        events = [
            event(kind, f"{n}@x.example", n)
            for n, kind in enumerate(["processed", "delivered", "open", "click", "deferred"])
        ]
        body = json.dumps(events).encode()
        with client_for(db, signer.public) as client:
            for _ in range(46):
                assert (
                    client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
                )
        assert db.count("webhook_batch") == 46
        assert db.count("email_event") == 5
        with db.engine.connect() as conn:
            raw = conn.execute(
                text("SELECT raw FROM email_event WHERE event = 'click'")
            ).scalar_one()
        stored = raw if isinstance(raw, dict) else json.loads(raw)
        assert stored == events[3]

    def test_a_crash_between_accepting_and_processing_loses_no_event(
        self, db: Database, signer: Signer
    ) -> None:
        """Answered 200 then 'crashed' before processing: the next start processes the batch."""
        body = json.dumps([event("unsubscribe", "gone@x.example", 1)]).encode()
        with client_for(db, signer.public, process=False) as client:
            assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
        assert db.count("webhook_batch") == 1 and db.count("email_event") == 0

        with client_for(db, signer.public):  # starting again processes what was left
            pass

        assert db.count("email_event") == 1
        assert db.count("suppression WHERE email = 'gone@x.example'") == 1
        assert db.count("webhook_batch WHERE processed_at IS NULL") == 0
        assert process_pending(db.engine) == []


@pytest.fixture
def served_receiver(db: Database, signer: Signer) -> Iterator[str]:  # noqa: ARG001 (db: the env)
    """`herald webhooks serve` in its own process, on a free port."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with served(
        [sys.executable, "-m", "herald.cli", "webhooks", "serve", "--port", str(port)],
        health=f"{url}/health",
        what="the webhook receiver",
        env=dict(os.environ, HERALD_WEBHOOK_PUBLIC_KEY=signer.public),
        timeout=60,
    ):
        yield url


class TestServedReceiver:
    def test_the_served_receiver_accepts_a_signed_batch_over_http(
        self, db: Database, signer: Signer, served_receiver: str
    ) -> None:
        """A real uvicorn server: a signed batch is stored and processed."""
        now = int(time.time())
        body = json.dumps([event("spamreport", "angry@x.example", 9, timestamp=now)]).encode()
        response = httpx.post(
            f"{served_receiver}{PATH}", content=body, headers=signer.headers(body, now), timeout=10
        )
        assert response.status_code == 200
        deadline = time.monotonic() + 10
        while db.count("suppression") == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert db.count("suppression WHERE reason = 'spam_report'") == 1

    def test_serve_refuses_to_start_without_a_key(self) -> None:
        """No HERALD_WEBHOOK_PUBLIC_KEY: exit 2 and why."""
        env = {k: v for k, v in os.environ.items() if k != "HERALD_WEBHOOK_PUBLIC_KEY"}
        result = subprocess.run(
            [sys.executable, "-m", "herald.cli", "webhooks", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert result.returncode == 2
        assert "HERALD_WEBHOOK_PUBLIC_KEY is not set" in result.stderr


class TestEventsActOnTheCampaign:
    @pytest.mark.usefixtures("prefect_server")
    def test_an_unsubscribe_before_a_phase_run_means_nothing_is_sent_to_that_contact(
        self, db: Database, tmp_path: Path, signer: Signer, herald_env: Path
    ) -> None:
        """Unsubscribed after planning and before the send: suppressed, no message."""
        loaded = load_base(db, tmp_path)
        ledger.plan(db.engine, loaded, "announcement", DAY)
        planned_then_gone, never_planned = some_contacts(db, 6, offset=12)[::3]
        body = json.dumps(
            [
                event("unsubscribe", planned_then_gone, 1),
                event("group_unsubscribe", never_planned.upper(), 2, asm_group_id=42),
            ]
        ).encode()
        with client_for(db, signer.public) as client:
            assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200

        send_phase(PhaseRun(phase="announcement", as_of=DAY, send=True, window=False))

        index = (herald_env / "outbox/modular-migration-2027/announcement/index.jsonl").read_text()
        sent = {json.loads(line)["email"] for line in index.splitlines()}
        assert planned_then_gone not in sent and never_planned not in sent
        assert planned_then_gone in ledger_emails(db, "announcement", "suppressed")
        assert len(sent) > 300
        assert config().campaign.id == "modular-migration-2027"

    def test_events_with_the_ledger_key_settle_unknown_deliveries(
        self, db: Database, tmp_path: Path, signer: Signer
    ) -> None:
        """processed/delivered carrying custom_args.herald_key turn unknown into accepted."""
        loaded = load_base(db, tmp_path)
        ledger.plan(db.engine, loaded, "announcement", DAY)
        worker = ledger.start_worker(db.engine, loaded.campaign.id, "announcement", "sendgrid")
        claim = ledger.claim(db.engine, worker, 3)
        assert claim is not None
        ledger.record(db.engine, claim.batch_id, "unknown", requests=1, error="reset")
        rows = claim.rows
        events = [
            event(
                "processed",
                rows[0].email,
                1,
                herald_key=f"{loaded.campaign.id}/announcement/{rows[0].contact_id}",
            ),
            event(
                "delivered",
                rows[1].email,
                2,
                herald_key=f"{loaded.campaign.id}/announcement/{rows[1].contact_id}",
            ),
            event("open", "stranger@x.example", 3, herald_key="not-a-key"),
        ]
        body = json.dumps(events).encode()
        with client_for(db, signer.public) as client:
            assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200

        assert sorted(ledger_emails(db, "announcement", "accepted")) == sorted(
            [rows[0].email, rows[1].email]
        )
        assert ledger_emails(db, "announcement", "unknown") == [rows[2].email]
        assert db.count("email_event WHERE delivery_id IS NOT NULL") == 2
