"""The SendGrid Event Webhook receiver: signatures, once-only storage, crashes, effects, and
poisoned batches (events that cannot be applied are kept with their error; nothing blocks)."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from flows.send_phase import send_phase
from herald.cli import app as cli
from herald.cli.common import ExitCode
from herald.delivery import ledger, planning, recovery
from herald.telemetry import webhook as webhook_module
from herald.telemetry import webhook_batches as events_module
from herald.telemetry.webhook import PATH, SIGNATURE_HEADER, TIMESTAMP_HEADER
from herald.telemetry.webhook_batches import (
    list_failures,
    process_pending,
    retry_failures,
    store_batch,
)
from herald.testing.processes import free_port, served
from tests.support.bases import DAY, config, ledger_emails, load_base, some_contacts
from tests.support.environment import Database
from tests.support.webhooks import (
    GOOD,
    GOOD_SUPPRESSIONS,
    NOW,
    POISONS,
    SAMPLE,
    Signer,
    client_for,
    event,
    nested,
    poisoned_batch,
)

# The good part of a poisoned batch: each becomes a suppression.


def suppressions(db: Database) -> list[tuple[str, str, str]]:
    """Every suppression as (email, reason, source), sorted."""
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT email, reason, source FROM suppression ORDER BY 1, 2"))
        return [(row[0], row[1], row[2]) for row in rows]


def stored_event_ids(db: Database) -> list[str]:
    """The sg_event_id of every stored event, sorted."""
    with db.engine.connect() as conn:
        return sorted(conn.execute(text("SELECT sg_event_id FROM email_event")).scalars())


def open_failures(db: Database) -> list[tuple[int, str]]:
    """(position, error) of every open failure, in batch and position order."""
    return [(row.position, row.error) for row in list_failures(db.engine)]


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 120) -> None:
    """Poll ``condition`` until it holds; fail naming ``what`` after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(0.05)


@pytest.fixture
def signer() -> Signer:
    return Signer()


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
        timeout=120,
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
            f"{served_receiver}{PATH}", content=body, headers=signer.headers(body, now), timeout=120
        )
        assert response.status_code == 200
        wait_for(lambda: db.count("suppression") > 0, "the spam report's suppression")
        assert db.count("suppression WHERE reason = 'spam_report'") == 1

    def test_serve_refuses_to_start_without_a_key(self) -> None:
        """No HERALD_WEBHOOK_PUBLIC_KEY: exit 2 and why."""
        env = {k: v for k, v in os.environ.items() if k != "HERALD_WEBHOOK_PUBLIC_KEY"}
        result = subprocess.run(
            [sys.executable, "-m", "herald.cli", "webhooks", "serve"],
            env=env,
            capture_output=True,
            text=True,
            timeout=300,
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
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        planned_then_gone, never_planned = some_contacts(db, 6, offset=12)[::3]
        body = json.dumps(
            [
                event("unsubscribe", planned_then_gone, 1),
                event("group_unsubscribe", never_planned.upper(), 2, asm_group_id=42),
            ]
        ).encode()
        with client_for(db, signer.public) as client:
            assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200

        send_phase(phase="announcement", as_of=DAY, send=True, window=False)

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
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = recovery.start_worker(
            db.engine, campaign=loaded.campaign.id, message="announcement", transport="sendgrid"
        )
        claim = ledger.claim(db.engine, worker=worker, limit=3)
        assert claim is not None
        ledger.record(
            db.engine, batch_id=claim.batch_id, outcome="unknown", requests=1, error="reset"
        )
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


# --------------------------------------------------------------------------- poisoned batches


def post(client: httpx.Client, signer: Signer, batch: list[dict[str, Any]]) -> httpx.Response:
    """Post ``batch`` signed at the tests' clock."""
    body = json.dumps(batch).encode()
    return client.post(PATH, content=body, headers=signer.headers(body))


def batch_rows(db: Database) -> list[tuple[int, bool, str | None]]:
    """(id, processed, error) of every stored batch."""
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, processed_at, error FROM webhook_batch ORDER BY id"))
        return [(row[0], row[1] is not None, row[2]) for row in rows]


class TestPoisonedBatches:
    def test_poison_events_are_kept_with_their_error_and_the_good_ones_take_effect(
        self, db: Database, signer: Signer
    ) -> None:
        """A signed batch mixing every poison class with a bounce, an unsubscribe and a spam
        report: 200, the three good events become suppressions, each poison event is kept
        with its exact error, and nothing else is stored."""
        batch, expected = poisoned_batch()
        with client_for(db, signer.public) as client:
            assert post(client, signer, batch).status_code == 200

        assert suppressions(db) == GOOD_SUPPRESSIONS
        assert stored_event_ids(db) == sorted(item["sg_event_id"] for item in GOOD)
        assert open_failures(db) == expected
        [(_, processed, error)] = batch_rows(db)
        assert processed
        assert error is not None and error.startswith(
            f"{len(POISONS)} of {len(batch)} event(s) could not be applied"
        )
        stored = {row.position: row for row in list_failures(db.engine)}
        assert stored[0].sg_event_id is None  # too long for the column: not cut to fit
        assert stored[2].event == "bounce" and stored[2].sg_event_id == "evt-bounce-102"
        with db.engine.connect() as conn:
            query = text("SELECT position, raw FROM webhook_event_failure")
            raws = {row[0]: row[1] for row in conn.execute(query)}
        assert all(raw.isascii() and "\x00" not in raw for raw in raws.values())
        assert json.loads(raws[2]) == batch[2]  # the NUL kept, escaped
        assert process_pending(db.engine) == []  # the batch is done: nothing waits behind it

    def test_retry_with_nothing_changed_keeps_every_failure_open(
        self, db: Database, signer: Signer
    ) -> None:
        """Retrying poison events that still cannot be applied keeps them open with one more
        attempt and the same error, and changes nothing stored."""
        batch, expected = poisoned_batch()
        with client_for(db, signer.public) as client:
            assert post(client, signer, batch).status_code == 200
        before = (suppressions(db), stored_event_ids(db))

        result = retry_failures(db.engine)

        assert (result.retried, result.resolved, result.remaining) == (
            len(POISONS),
            0,
            len(POISONS),
        )
        assert open_failures(db) == expected
        assert {row.attempts for row in list_failures(db.engine)} == {2}
        assert (suppressions(db), stored_event_ids(db)) == before

    def test_a_batch_processed_again_records_each_failure_once(self, db: Database) -> None:
        """Processing a poisoned batch twice (its processed mark reset) keeps one failure row
        per event, counts the attempt, and stores each good event once."""
        batch, expected = poisoned_batch()
        batch_id = store_batch(
            db.engine, body=json.dumps(batch).encode(), signed_at=None, events=len(batch)
        )
        [first] = process_pending(db.engine)
        assert (first.batch_id, first.failed, first.suppressed) == (batch_id, len(POISONS), 3)
        with db.engine.begin() as conn:
            conn.execute(text("UPDATE webhook_batch SET processed_at = NULL"))

        [again] = process_pending(db.engine)

        assert (again.failed, again.stored, again.suppressed) == (len(POISONS), 0, 0)
        assert open_failures(db) == expected
        assert {row.attempts for row in list_failures(db.engine)} == {2}
        assert db.count("webhook_event_failure") == len(POISONS)
        assert suppressions(db) == GOOD_SUPPRESSIONS

    def test_an_event_the_database_refuses_is_isolated_and_applies_on_retry_after_a_fix(
        self, db: Database, signer: Signer
    ) -> None:
        """A valid event the database still refuses (a trigger here) is applied one at a time
        inside a SAVEPOINT: only it fails, the rest of its batch takes effect, and
        `herald webhooks retry` applies it once the cause is gone."""
        refused = event("bounce", "refused@x.example", 50)
        batch = [GOOD[0], refused, GOOD[1], GOOD[2]]
        _refuse_event(db, "evt-bounce-50")
        try:
            with client_for(db, signer.public) as client:
                assert post(client, signer, batch).status_code == 200
            [(position, error)] = open_failures(db)
            assert position == 1
            assert error.startswith("database: ") and "refused by the test trigger" in error
            assert suppressions(db) == GOOD_SUPPRESSIONS
            assert stored_event_ids(db) == sorted(item["sg_event_id"] for item in GOOD)

            still = CliRunner().invoke(cli, ["webhooks", "retry"])
            assert still.exit_code == ExitCode.PARTIAL, still.output
            assert "Retried 1 event(s): 0 applied" in still.output
        finally:
            _allow_events(db)

        retried = CliRunner().invoke(cli, ["webhooks", "retry"])

        assert retried.exit_code == ExitCode.OK, retried.output
        assert "Retried 1 event(s): 1 applied" in retried.output
        assert "1 suppressions" in retried.output
        assert open_failures(db) == []
        assert ("refused@x.example", "bounce", "sendgrid:bounce") in suppressions(db)
        assert "evt-bounce-50" in stored_event_ids(db)
        [row] = list_failures(db.engine, include_resolved=True)
        assert row.resolved_at is not None and row.attempts == 2
        listed = CliRunner().invoke(cli, ["webhooks", "failures"])
        assert listed.exit_code == ExitCode.OK, listed.output
        assert "No open webhook event failures." in listed.output
        everything = CliRunner().invoke(cli, ["webhooks", "failures", "--all"])
        assert everything.exit_code == ExitCode.OK, everything.output
        assert "batch 1 position 1: event=bounce sg_event_id=evt-bounce-50" in everything.output
        assert " resolved " in everything.output

    def test_a_body_is_parsed_however_deep_in_the_stack_processing_runs(self, db: Database) -> None:
        """An event nested nearly as deep as the JSON parser allows, processed from deep in
        the stack (where parsing it in place fails), is kept as a failure and its batch's
        good event applies."""
        deep = event("click", "deep@x.example", 70, payload=nested(sys.getrecursionlimit() - 250))
        body = json.dumps([deep, GOOD[0]]).encode()
        store_batch(db.engine, body=body, signed_at=None, events=2)

        def from_depth(frames: int) -> Any:
            return process_pending(db.engine) if frames == 0 else from_depth(frames - 1)

        [result] = from_depth(500)

        assert (result.events, result.failed, result.suppressed, result.pending) == (2, 1, 1, False)
        assert open_failures(db) == [(0, "payload: nested deeper than 32 levels")]
        assert suppressions(db) == [GOOD_SUPPRESSIONS[1]]

    def test_a_body_nested_too_deeply_to_parse_is_400(self, db: Database, signer: Signer) -> None:
        """JSON nested so deeply that the parser gives up is a bad request, not a crash."""
        body = b"[" * 100_000 + b"]" * 100_000
        with client_for(db, signer.public) as client:
            answer = client.post(PATH, content=body, headers=signer.headers(body))
        assert answer.status_code == 400
        assert answer.json() == {"error": "not JSON: nested too deeply to parse"}
        assert db.count("webhook_batch") == 0


def _refuse_event(db: Database, sg_event_id: str) -> None:
    """A trigger that makes the database refuse to store the event ``sg_event_id``."""
    with db.engine.begin() as conn:
        if db.backend == "sqlite":
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_event BEFORE INSERT ON email_event "
                f"WHEN NEW.sg_event_id = '{sg_event_id}' "
                "BEGIN SELECT RAISE(ABORT, 'refused by the test trigger'); END"
            )
        else:
            conn.exec_driver_sql(
                "CREATE FUNCTION refuse_event() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN "
                f"IF NEW.sg_event_id = '{sg_event_id}' THEN "
                "RAISE EXCEPTION 'refused by the test trigger'; END IF; RETURN NEW; END $$"
            )
            conn.exec_driver_sql(
                "CREATE TRIGGER refuse_event BEFORE INSERT ON email_event "
                "FOR EACH ROW EXECUTE FUNCTION refuse_event()"
            )


def _allow_events(db: Database) -> None:
    """Drop the trigger of :func:`_refuse_event` (the Postgres database outlives the test)."""
    with db.engine.begin() as conn:
        if db.backend == "sqlite":
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS refuse_event")
        else:
            conn.exec_driver_sql("DROP TRIGGER IF EXISTS refuse_event ON email_event")
            conn.exec_driver_sql("DROP FUNCTION IF EXISTS refuse_event()")


class TestNothingBlocks:
    def test_process_reports_failed_events_and_exits_3(self, db: Database, signer: Signer) -> None:
        """`herald webhooks process` applies a poisoned batch a crash left, says how many
        events failed, exits 3, and `failures` lists each with its error (exit 3)."""
        batch, expected = poisoned_batch()
        with client_for(db, signer.public, process=False) as client:
            assert post(client, signer, batch).status_code == 200
        runner = CliRunner()

        processed = runner.invoke(cli, ["webhooks", "process"])

        assert processed.exit_code == ExitCode.PARTIAL, processed.output
        assert (
            f"Processed 1 batch(es): {len(batch)} events, 3 new, 3 suppressions, 0 unknown "
            f"deliveries settled, {len(POISONS)} failed." in processed.output
        )
        assert "Traceback" not in processed.output
        assert suppressions(db) == GOOD_SUPPRESSIONS
        listed = runner.invoke(cli, ["webhooks", "failures"])
        assert listed.exit_code == ExitCode.PARTIAL, listed.output
        for position, error in expected:
            assert f"batch 1 position {position}: " in listed.output
            assert error in listed.output
        assert f"{len(POISONS)} open failure(s)" in listed.output
        limited = runner.invoke(cli, ["webhooks", "failures", "--limit", "2"])
        assert limited.output.count("batch 1 position") == 2
        again = runner.invoke(cli, ["webhooks", "process"])
        assert again.exit_code == ExitCode.OK, again.output
        assert "Processed 0 batch(es)" in again.output

    def test_a_batch_whose_processing_raises_does_not_stop_the_next(
        self, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unexpected error in one batch is recorded on it (it stays unprocessed) and the
        next batch is processed; a later run processes the first one."""
        first = store_batch(
            db.engine, body=json.dumps([GOOD[0]]).encode(), signed_at=None, events=1
        )
        second = store_batch(
            db.engine, body=json.dumps([GOOD[1], GOOD[2]]).encode(), signed_at=None, events=2
        )
        real = events_module.apply_items

        def broken(conn: Any, items: Any) -> Any:
            if items == [GOOD[0]]:
                raise RuntimeError("a bug met in batch one")
            return real(conn, items)

        monkeypatch.setattr(events_module, "apply_items", broken)
        results = process_pending(db.engine)

        assert [(r.batch_id, r.pending) for r in results] == [(first, True), (second, False)]
        assert batch_rows(db) == [
            (
                first,
                False,
                "processing failed, will be tried again: RuntimeError: a bug met in batch one",
            ),
            (second, True, None),
        ]
        assert suppressions(db) == GOOD_SUPPRESSIONS[:1] + GOOD_SUPPRESSIONS[2:]
        cli_run = CliRunner().invoke(cli, ["webhooks", "process"])
        assert cli_run.exit_code == ExitCode.PARTIAL
        assert f"batch {first} stays unprocessed" in cli_run.stdout + cli_run.stderr
        assert "Traceback" not in cli_run.stdout + cli_run.stderr

        monkeypatch.setattr(events_module, "apply_items", real)
        [done] = process_pending(db.engine)
        assert (done.batch_id, done.pending, done.suppressed) == (first, False, 1)
        assert suppressions(db) == GOOD_SUPPRESSIONS
        assert batch_rows(db) == [(first, True, None), (second, True, None)]

    def test_the_receiver_starts_and_answers_when_processing_raises(
        self, db: Database, signer: Signer, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Processing that raises at start and after each answer neither stops the receiver
        from starting nor from answering: /health is 200 and every batch is stored."""

        def unreachable(*_: Any) -> Any:
            raise RuntimeError("the database went away")

        monkeypatch.setattr(webhook_module, "process_pending", unreachable)
        monkeypatch.setattr(events_module, "process_batch", unreachable)
        with client_for(db, signer.public) as client:
            assert client.get("/health").json() == {"ok": True}
            for item in GOOD:
                assert post(client, signer, [item]).status_code == 200
            assert client.get("/health").status_code == 200
        assert [processed for _, processed, _ in batch_rows(db)] == [False, False, False]
        assert {error for _, _, error in batch_rows(db)} == {
            "processing failed, will be tried again: RuntimeError: the database went away"
        }

        monkeypatch.undo()
        with client_for(db, signer.public):  # the next start processes them
            pass
        assert suppressions(db) == GOOD_SUPPRESSIONS

    def test_a_poisoned_batch_left_unprocessed_does_not_stop_the_next_start(
        self, db: Database, signer: Signer
    ) -> None:
        """A poisoned batch a crash left unprocessed is processed when the receiver starts:
        the start succeeds, its good events take effect, new batches are taken."""
        batch, expected = poisoned_batch()
        with client_for(db, signer.public, process=False) as client:
            assert post(client, signer, batch).status_code == 200

        late = event("bounce", "late@x.example", 60)
        with client_for(db, signer.public) as client:
            assert client.get("/health").status_code == 200
            assert post(client, signer, [late]).status_code == 200

        assert suppressions(db) == sorted(
            [*GOOD_SUPPRESSIONS, ("late@x.example", "bounce", "sendgrid:bounce")]
        )
        assert open_failures(db) == expected
        assert [processed for _, processed, _ in batch_rows(db)] == [True, True]


class TestServedReceiverSurvivesPoison:
    def test_a_poisoned_batch_then_sigkill_then_restart(
        self, db: Database, signer: Signer, tmp_path: Path
    ) -> None:
        """`herald webhooks serve` takes a poisoned batch (200), is killed with SIGKILL,
        starts again (/health answers), takes a new batch, and the good events of both are
        suppressions while the poison events are listed as failures."""
        env = dict(os.environ, HERALD_WEBHOOK_PUBLIC_KEY=signer.public)
        batch, expected = poisoned_batch()
        body = json.dumps(batch).encode()
        log = (tmp_path / "receiver.log").open("wb")
        port = free_port()
        command = [sys.executable, "-m", "herald.cli", "webhooks", "serve", "--port", str(port)]
        url = f"http://127.0.0.1:{port}"
        with served(
            command, health=f"{url}/health", what="the receiver", env=env, output=log, timeout=120
        ) as receiver:
            now = int(time.time())
            answer = httpx.post(
                f"{url}{PATH}", content=body, headers=signer.headers(body, now), timeout=120
            )
            assert answer.status_code == 200
            receiver.send_signal(signal.SIGKILL)
            assert receiver.wait(timeout=120) == -signal.SIGKILL

        late = json.dumps([event("spamreport", "late@x.example", 61)]).encode()
        with served(
            command, health=f"{url}/health", what="the receiver", env=env, output=log, timeout=120
        ):
            assert httpx.get(f"{url}/health", timeout=120).json() == {"ok": True}
            now = int(time.time())
            answer = httpx.post(
                f"{url}{PATH}", content=late, headers=signer.headers(late, now), timeout=120
            )
            assert answer.status_code == 200
            wait_for(
                lambda: (
                    db.count("webhook_batch WHERE processed_at IS NULL") == 0
                    and db.count("webhook_batch") == 2
                ),
                "both batches to be processed",
            )
        log.close()

        assert suppressions(db) == sorted(
            [*GOOD_SUPPRESSIONS, ("late@x.example", "spam_report", "sendgrid:spamreport")]
        )
        assert open_failures(db) == expected
        assert "Application startup failed" not in (tmp_path / "receiver.log").read_text()
