"""Reliability: pausing and resuming a phase many times in the middle of sending loses
nothing and sends nothing twice (the failure listmonk users reported as issues 2070 and
2313), checked against the fake SendGrid's own record of accepted recipients."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from flows.send_phase import PhaseSummary, send_phase
from herald.delivery import controls
from herald.testing.fake_sendgrid import FakeSendGrid
from herald.testing.synthetic import set_sending
from tests.support.bases import DAY, eligible, load_base
from tests.support.environment import Database

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow(seconds=50)]


WAIT = 300  # seconds: a safety net against hanging, never what the test relies on


class TestPauseResume:
    def test_twelve_pauses_mid_phase_then_every_contact_exactly_once(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """Batches of 20, four in flight (so twelve runs, each stopped a few batches in,
        leave contacts for the next). Twelve times, another thread pauses the campaign while
        a request of the run is in flight (the fake holds the run's 2nd, 3rd or 4th request
        until the pause is in), the run stops, and the operator resumes and reruns the
        phase. At the end: each eligible contact accepted once, nobody else, no row left
        planned, sending or unknown."""
        fake = sendgrid_env
        set_sending(fast_config, batch_size=20, in_flight=4)
        loaded = load_base(db, tmp_path, accounts=500)
        expected = eligible(db, loaded, "announcement")
        campaign = loaded.campaign.id
        pauses = 12
        paused_times: list[int] = []  # requests answered when each pause came
        errors: list[BaseException] = []
        runs = 0

        def pause_while_held(n: int, done: threading.Event) -> None:
            try:
                while not done.is_set():  # the run ended without the held request: give up
                    if fake.wait_held(1, timeout=1):
                        controls.set_paused(
                            db.engine,
                            campaign=campaign,
                            message=controls.CAMPAIGN_WIDE,
                            paused=True,
                            reason=f"pause {n}",
                        )
                        paused_times.append(fake.request_count())
                        return
            except BaseException as error:
                errors.append(error)
            finally:
                fake.release()  # the request in flight is answered after the pause

        def run() -> PhaseSummary:
            nonlocal runs
            runs += 1
            return send_phase(phase="announcement", as_of=DAY, send=True, window=False)

        for n in range(pauses):
            fake.script(*["accept"] * (1 + n % 3), "hold")
            done = threading.Event()
            operator = threading.Thread(target=pause_while_held, args=(n, done))
            operator.start()
            try:
                summary = run()
            finally:
                done.set()
                operator.join(WAIT)
            assert errors == []
            assert f"pause {n}" in (summary.paused or ""), f"run {runs} was not paused: {summary}"
            assert fake.scripted == 0
            controls.set_paused(
                db.engine,
                campaign=campaign,
                message=controls.CAMPAIGN_WIDE,
                paused=False,
                reason=f"resume {n}",
            )
        summary = run()
        assert summary.paused is None

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
