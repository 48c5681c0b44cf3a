"""Reliability: pausing and resuming a phase many times in the middle of sending loses
nothing and sends nothing twice (the failure listmonk users reported as issues 2070 and
2313), checked against the fake SendGrid's own record of accepted recipients."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import pytest

from flows.send_phase import PhaseRun, send_phase
from herald import ledger
from herald.testing.fake_sendgrid import FakeSendGrid
from herald.testing.synthetic import set_sending
from tests.bases import DAY, eligible, load_base
from tests.conftest import Database

pytestmark = pytest.mark.usefixtures("prefect_server")


class TestPauseResume:
    def test_twelve_pauses_mid_phase_then_every_contact_exactly_once(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """Batches of 40 with 20 ms of latency; another thread pauses the campaign and
        resumes it 12 times while the phase is sent; the operator reruns the phase after
        each pause. At the end: each eligible contact accepted once, nobody else, no row
        left planned, sending or unknown."""
        fake = sendgrid_env
        fake.latency = 0.02
        set_sending(fast_config, batch_size=40)
        loaded = load_base(db, tmp_path, accounts=500)
        expected = eligible(db, loaded, "announcement")
        campaign = loaded.campaign.id
        pauses = 12
        # Pause n comes once the fake has answered n steps of requests, so every pause
        # lands while sending is under way, however slowly the run starts on a loaded
        # machine, and the last one still leaves requests to send.
        step = max(1, -(-len(expected) // 40) // (pauses + 1))
        stop = threading.Event()
        paused_times: list[int] = []

        def operator() -> None:
            for n in range(pauses):
                deadline = time.monotonic() + 120
                while fake.request_count() < (n + 1) * step:
                    if stop.wait(0.01) or time.monotonic() > deadline:
                        return
                ledger.set_paused(db.engine, campaign, ledger.CAMPAIGN_WIDE, True, f"pause {n}")
                paused_times.append(fake.request_count())
                stop.wait(0.1)
                ledger.set_paused(db.engine, campaign, ledger.CAMPAIGN_WIDE, False, f"resume {n}")

        thread = threading.Thread(target=operator)
        thread.start()
        runs = 0
        try:
            while True:
                runs += 1
                summary = send_phase(
                    PhaseRun(phase="announcement", as_of=DAY, send=True, window=False)
                )
                if summary.ledger["planned"] == 0 and not thread.is_alive():
                    break
                assert runs < 200
        finally:
            stop.set()
            thread.join()

        accepted = fake.accepted_emails()
        assert set(accepted) == expected
        assert set(accepted.values()) == {1}
        counts = summary.ledger
        assert counts["accepted"] == len(expected)
        assert counts["planned"] == counts["sending"] == counts["unknown"] == 0
        assert len(paused_times) == pauses
        # The pauses landed while sending was under way, not all before or after it.
        assert all(n > 0 for n in paused_times)
        assert any(n < fake.request_count() for n in paused_times)
        assert runs > 1
