"""Phases through SendGrid: the real client against the project's fake SendGrid on 127.0.0.1.

Every request the fake receives is validated against SendGrid's official OpenAPI schema; the
fake's record of accepted recipients is the ground truth for "exactly once".
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from pydantic import SecretStr
from typer.testing import CliRunner

from flows.send_phase import send_phase
from herald.cli.app import app
from herald.config import load_config
from herald.delivery import planning
from herald.delivery.messages import Variant, recipient_values, render
from herald.delivery.transports import OutgoingBatch, Recipient, TransportError
from herald.delivery.transports.sendgrid import SendGridTransport
from herald.models import DELIVERY
from herald.settings import get_settings
from herald.testing.fake_sendgrid import RESET_STATUS, FakeSendGrid, Faults
from herald.testing.synthetic import set_sending
from tests.support.bases import DAY, eligible, ledger_emails, load_base
from tests.support.environment import KEY, Database

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow(seconds=60)]


def all_valid(fake: FakeSendGrid) -> bool:
    """Every request the fake received validated against the official schema."""
    return all(request.valid for request in fake.requests)


class TestRequests:
    def test_a_mixed_batch_is_one_valid_request_and_each_recipient_gets_their_variant(
        self, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """Sections carry each variant once; what SendGrid delivers equals the outbox's render."""
        fake = sendgrid_env
        loaded = load_config(fast_config)
        people = [
            ("standard", "executive", "en", "<script>alert(1)</script> Zoë", "zoe@a.example"),
            ("conservative", "technical", "de", "Jürgen Groß", "jurgen@b.example"),
            ("early_adopter", "other", "ja", None, "anon@c.example"),
        ]
        variants = {}
        recipients = []
        for number, (segment, role, locale, name, address) in enumerate(people, start=1):
            variant = Variant("announcement", segment, role, locale)
            variants[variant] = render(loaded, variant)
            values = recipient_values(name=name, email=address, account_name="Acme & Sons")
            recipients.append(
                Recipient(number, f"c/announcement/{number}", address, name, variant, values)
            )
        batch = OutgoingBatch(
            "batch-1",
            loaded.campaign.id,
            "announcement",
            loaded.campaign.sender,
            variants,
            recipients,
            ["modular-migration-2027", "announcement"],
        )
        transport = SendGridTransport(SecretStr(KEY), fake.url, loaded.campaign.sending)

        assert fake.schema_errors(transport.build(batch)) == []
        result = transport.send(transport.prepare(batch))

        assert (result.outcome, result.requests, result.http_status) == ("accepted", 1, 202)
        assert result.provider_message_id
        by_email = {record.email: record for record in fake.accepted}
        for recipient in recipients:
            expected = variants[recipient.variant].personalize(recipient.values)
            got = by_email[recipient.email]
            assert (got.subject, got.html, got.text) == (
                expected.subject,
                expected.html,
                expected.text,
            )
            assert got.custom_args == {"herald_key": recipient.key, "herald_batch": "batch-1"}
            # Each recipient's message declares its own language (de, ja, en here).
            assert got.headers["Content-Language"] == recipient.variant.locale
            assert sorted(got.categories) == ["announcement", "modular-migration-2027"]
        zoe = by_email["zoe@a.example"]
        assert zoe.html is not None and zoe.text is not None
        assert "&lt;script&gt;" in zoe.html and "<script>" not in zoe.html
        assert "<script>alert(1)</script>" in zoe.text

    def test_asm_group_and_sandbox_mode_come_from_config(
        self, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """The unsubscribe group travels on every request; sandbox answers 200, records none."""
        fake = sendgrid_env
        set_sending(fast_config, asm_group_id=4242, sandbox=True)
        loaded = load_config(fast_config)
        variant = Variant("announcement", "standard", "executive", "en")
        values = recipient_values(name="A", email="a@x.example", account_name="X")
        batch = OutgoingBatch(
            "b",
            loaded.campaign.id,
            "announcement",
            loaded.campaign.sender,
            {variant: render(loaded, variant)},
            [Recipient(1, "k", "a@x.example", "A", variant, values)],
        )
        transport = SendGridTransport(SecretStr(KEY), fake.url, loaded.campaign.sending)
        body = transport.build(batch)
        assert body["asm"] == {"group_id": 4242}
        assert body["mail_settings"] == {"sandbox_mode": {"enable": True}}
        result = transport.send(transport.prepare(batch))
        assert (result.outcome, result.http_status) == ("accepted", 200)
        assert fake.accepted == [] and fake.request_count(200) == 1


class TestPhaseThroughSendGrid:
    def test_phase_2_with_injected_faults_reaches_everyone_exactly_once(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """2% 500s and 1% 429s (plus scripted ones): each eligible contact once, few requests."""
        fake = sendgrid_env
        fake.faults = Faults(server_error=0.02, rate_limited=0.01, reset_after=0.0)
        fake.script("500", "429", "accept", "500", "500")
        set_sending(fast_config, batch_size=250)
        loaded = load_base(db, tmp_path, accounts=700)
        expected = eligible(db, loaded, "announcement")

        summary = send_phase(phase="announcement", as_of=DAY, send=True, window=False)

        accepted = fake.accepted_emails()
        assert set(accepted) == expected and set(accepted.values()) == {1}
        retries = fake.request_count(429) + fake.request_count(500)
        assert retries >= 4
        assert fake.request_count() <= -(-len(expected) // 250) + retries
        assert summary.delivery.requests == fake.request_count()
        assert all_valid(fake)
        assert summary.ledger["accepted"] == len(expected)
        assert summary.delivery.failed == summary.delivery.unknown == 0

    def test_a_refused_request_fails_its_rows_with_sendgrids_words_and_is_not_retried(
        self,
        db: Database,
        tmp_path: Path,
        sendgrid_env: FakeSendGrid,
        fast_config: Path,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """A 401 (a revoked key) is a 4xx: one request per batch, rows failed with the reason."""
        fake = sendgrid_env
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.revoked")
        get_settings.cache_clear()
        set_sending(fast_config, breaker={"max_failure_rate": 1.0, "min_sample": 1})
        load_base(db, tmp_path)

        summary = send_phase(phase="announcement", as_of=DAY, send=True, window=False)

        assert (
            summary.delivery.accepted == 0
            and summary.delivery.failed == summary.ledger["failed"] > 0
        )
        assert fake.request_count(401) == fake.request_count() == summary.delivery.batches
        with db.engine.connect() as conn:
            errors = set(
                conn.execute(DELIVERY.select().with_only_columns(DELIVERY.c.error)).scalars().all()
            )
        assert errors == {
            "HTTP 401 from SendGrid: The provided authorization grant is invalid, expired, "
            "or revoked"
        }

    def test_a_missing_api_key_stops_the_run_before_anything_is_planned(
        self,
        db: Database,
        tmp_path: Path,
        sendgrid_env: FakeSendGrid,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """No SENDGRID_API_KEY: a clear error, exit 2, nothing planned, no request made."""
        monkeypatch.delenv("SENDGRID_API_KEY")
        get_settings.cache_clear()
        load_base(db, tmp_path)
        with pytest.raises(TransportError, match="SENDGRID_API_KEY is not set"):
            send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        result = CliRunner().invoke(
            app, ["phase", "send", "announcement", "--send", "--ignore-window"]
        )
        assert result.exit_code == 2 and "SENDGRID_API_KEY is not set" in result.output
        assert db.count("delivery") == 0 and sendgrid_env.request_count() == 0

    def test_an_ambiguous_answer_makes_its_batch_unknown_and_it_is_never_resent(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """A reset after SendGrid accepted: rows unknown, listed, and a rerun does not resend.
        (Batches go four at a time: the second request to arrive may be any of them, the
        short last one included; its recipients are the ones that must be unknown.)"""
        fake = sendgrid_env
        fake.script("accept", "reset")
        set_sending(fast_config, batch_size=100)
        loaded = load_base(db, tmp_path)
        expected = eligible(db, loaded, "announcement")

        first = send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        rerun = send_phase(phase="announcement", as_of=DAY, send=True, window=False)

        (reset,) = [log for log in fake.requests if log.status == RESET_STATUS]
        held = reset.recipients  # the batch whose answer was lost: 100, or the short last one
        assert held > 0 and first.delivery.unknown == held and rerun.delivery.accepted == 0
        accepted = fake.accepted_emails()
        assert set(accepted) == expected and set(accepted.values()) == {1}
        unknown = set(ledger_emails(db, "announcement", "unknown"))
        assert len(unknown) == held and unknown <= set(accepted)
        listing = CliRunner().invoke(app, ["deliveries", "unknown", "--limit", "500"])
        assert listing.exit_code == 3
        assert f"{held} unknown in 1 batch(es)" in listing.output

        settled = CliRunner().invoke(app, ["deliveries", "resolve", "announcement", "--mark-sent"])
        assert settled.exit_code == 0 and f"{held} delivery(ies) of announcement marked sent" in (
            settled.output
        )
        assert ledger_emails(db, "announcement", "unknown") == []


WAIT = 300  # seconds: a safety net against hanging for the processes below, never relied on


def _herald(env: dict[str, str], *args: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "herald.cli", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )


@pytest.fixture
def child_env(sendgrid_env: FakeSendGrid, fast_config: Path) -> dict[str, str]:  # noqa: ARG001
    # (sendgrid_env first: it sets the variables this copies)
    """The environment of a separate `herald` process: same database, fake and Prefect server."""
    env = dict(os.environ)
    env["PREFECT_API_URL"] = str(PREFECT_API_URL.value())
    env["HERALD_CONFIG_DIR"] = str(fast_config)
    env["COLUMNS"] = "400"  # keep each printed line on one line
    return env


class TestCrashesAndConcurrency:
    def test_kill_9_mid_phase_then_rerun_sends_nobody_twice_and_reports_the_rest_unknown(
        self,
        db: Database,
        tmp_path: Path,
        sendgrid_env: FakeSendGrid,
        fast_config: Path,
        child_env: dict[str, str],
    ) -> None:
        """SIGKILL while a request is in flight (held by the fake until after the kill); the
        rerun finishes and reports it unknown; SendGrid took it; nobody appears twice."""
        fake = sendgrid_env
        set_sending(fast_config, batch_size=50, request_timeout_seconds=WAIT)
        loaded = load_base(db, tmp_path, accounts=200)
        expected = eligible(db, loaded, "announcement")
        fake.script("accept", "accept", "accept", "hold")  # the fourth request is kept

        run = _herald(child_env, "phase", "send", "announcement", "--send", "--ignore-window")
        try:
            held = fake.wait_held(1, timeout=WAIT)
        finally:
            run.send_signal(signal.SIGKILL)  # the fourth request is in flight now
            first_output, _ = run.communicate(timeout=WAIT)
        assert held, f"the run never sent a fourth request:\n{first_output}"
        assert run.returncode == -signal.SIGKILL
        (in_flight,) = fake.held

        rerun = _herald(child_env, "phase", "send", "announcement", "--send", "--ignore-window")
        output, _ = rerun.communicate(timeout=WAIT)
        assert rerun.returncode in (0, 3), output

        # SendGrid answers the request the killed run left in flight only now, after the
        # rerun: it was accepted all the same (the client was gone).
        assert fake.release() == 1
        assert fake.wait_idle(timeout=WAIT, disconnected=True)
        accepted = fake.accepted_emails()
        assert max(accepted.values()) == 1
        unknown = set(ledger_emails(db, "announcement", "unknown"))
        sent = set(ledger_emails(db, "announcement", "accepted"))
        assert sent | unknown == expected
        assert sent <= set(accepted)
        assert set(accepted) - sent <= unknown
        assert re.search(r"in-flight row\(s\) now unknown", output) or not unknown
        # The batch in flight at the kill is among the unknown rows, never re-sent.
        in_flight_batch = {r.email.lower() for r in fake.accepted if r.request_no == in_flight}
        assert in_flight_batch and in_flight_batch <= unknown

    def test_two_runs_of_the_same_phase_at_once_send_nobody_twice(
        self,
        db: Database,
        tmp_path: Path,
        sendgrid_env: FakeSendGrid,
        fast_config: Path,
        child_env: dict[str, str],
    ) -> None:
        """Two processes claim from one ledger at the same moment: every eligible contact
        exactly once, and both runs sent some."""
        fake = sendgrid_env
        # One request in flight per process, so the two requests the fake gathers (each held
        # until the other has arrived) come from the two processes: both are sending at once,
        # however slowly either starts.
        set_sending(fast_config, batch_size=25, in_flight=1, request_timeout_seconds=WAIT)
        loaded = load_base(db, tmp_path, accounts=250)
        expected = eligible(db, loaded, "announcement")
        # both runs find it planned
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        together = fake.gather(2, timeout=WAIT)

        runs = [
            _herald(child_env, "phase", "send", "announcement", "--send", "--ignore-window")
            for _ in range(2)
        ]
        with ThreadPoolExecutor(len(runs)) as pool:  # read both outputs as they come
            outputs = list(pool.map(lambda run: run.communicate(timeout=WAIT)[0], runs))

        assert together.met, f"the runs never requested at the same moment: {outputs}"
        assert [run.returncode for run in runs] == [0, 0], outputs
        accepted = fake.accepted_emails()
        assert set(accepted) == expected and set(accepted.values()) == {1}
        sent_by_run = [
            int(re.search(r"sent (\d+) in", output).group(1))  # type: ignore[union-attr]
            for output in outputs
        ]
        assert sum(sent_by_run) == len(expected) and min(sent_by_run) > 0
        assert Counter(ledger_emails(db, "announcement", "accepted")) == Counter(expected)
