"""The chaos run in short (``make chaos`` runs it at 50,000 contacts, 20 trials, 3 kills each):
a phase sent by `herald` processes killed with SIGKILL, against a fake SendGrid with 429s,
500s, resets after accepting and jittery latency; then reconciled. Here each kill lands while
the fake holds a request of the run (a random one of the batches left): every kill catches a
request in flight, whatever the machine's speed, so nothing below depends on timing."""

from __future__ import annotations

import random
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL

from tests.support.chaos import Tally, run_database
from tests.support.environment import Database

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow(seconds=90)]


def assert_clean(tally: Tally) -> None:
    assert tally.problems == []
    assert tally.lost == 0, "a contact was never accepted"
    assert tally.strays == 0, "someone outside the base was accepted"
    assert tally.ledger_open == 0, "ledger rows left unsettled"
    assert tally.silent == 0, "a duplicate that was not reported unknown first"


class TestChaos:
    def test_killed_mid_phase_with_faults_then_reconciled_nothing_lost_or_sent_twice(
        self, db: Database, tmp_path: Path
    ) -> None:
        """1,000 contacts, batches of 100, two kills with a request in flight per trial. With
        the webhook evidence: each contact accepted exactly once. Without it: duplicates only
        among the rows in flight at a kill or answered by a reset, each reported unknown
        before it was re-sent."""
        lines: list[str] = []
        evidence, withheld = run_database(
            db.url,
            tmp_path,
            str(PREFECT_API_URL.value()),
            contacts=1000,
            trials=1,
            kills=2,
            withheld=1,
            batch_size=100,
            rng=random.Random(8),
            output=lines.append,
            moments="held",
        )

        assert_clean(evidence)
        assert evidence.recipients == 1000
        assert evidence.duplicates == 0
        assert evidence.kills == 2 and evidence.runs > evidence.kills
        assert evidence.line().startswith(f"chaos: db={db.backend} trials=1 ")

        assert_clean(withheld)
        assert withheld.recipients == 1000
        assert withheld.duplicates <= withheld.bound
        assert withheld.settled == 0  # no evidence: nothing was settled by events
        assert withheld.kills == 2
        # Each kill caught a request in flight (so the ambiguous path was exercised).
        assert evidence.in_flight > 0 and withheld.in_flight > 0
        assert len(lines) == 4  # a line per trial and its result
