"""A phase sent by several sender runs on a real cluster: `herald cluster up` (a Prefect
server on Postgres, two process workers), Herald's database on Postgres, the fake SendGrid
(every body validated against SendGrid's schema, every request's arrival logged).

The senders compete for batches through the ledger's claims: no recipient twice, none
skipped; each request takes its recipients from the campaign's Prefect rate limit, so the
fake never sees more than the configured rate in any second; a missing or disabled limit
stops the phase before any request; a worker killed with SIGKILL mid-run leaves its request
in flight ``unknown`` and the others finish the phase.

Nothing here waits on time: the fake gathers the senders' first requests (proof they ran at
once) and holds the request a kill must catch in flight; timeouts are safety nets.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path

import pytest
from sqlalchemy import Engine, func, select

from herald.config import load_config
from herald.db import get_engine
from herald.models import DELIVERY, SEND_BATCH, SEND_WORKER
from herald.scaleout.cluster import parent_pid
from herald.scaleout.rate import GlobalRate
from herald.telemetry.event_effects import apply_events
from herald.testing.event_webhook import events_for
from herald.testing.fake_sendgrid import FakeSendGrid, busiest_second, load_requests
from herald.testing.processes import free_port
from herald.testing.synthetic import (
    all_emails,
    cluster_environment,
    copy_config,
    reset_sends,
    seed_base,
    temporary_database,
)
from tests.support.environment import POSTGRES_URL

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parents[2]
KEY = "SG.scale-key"
AS_OF = date(2027, 2, 9)  # the announcement's day: it goes to every segment
CONTACTS = 2_000
RATE = 1_000  # messages per second: the Prefect limit is 100 per request, 800/s drained
WAIT = 600.0  # seconds: safety nets on a loaded machine, never relied on
HERALD = (sys.executable, "-m", "herald.cli")
AT_EVENT = 1_800_000_000  # when SendGrid reports the events (Unix time)


@dataclass
class Cluster:
    """The running cluster, its databases, the fake, and the environment to reach them."""

    env: dict[str, str]
    url: str
    engine: Engine
    fake: FakeSendGrid
    requests: Path
    rate_name: str

    def herald(self, *args: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*HERALD, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )

    def send(self, senders: int) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [
                *(*HERALD, "phase", "send", "announcement", "--send", "--senders", str(senders)),
                *("--as-of", AS_OF.isoformat(), "--ignore-window"),
            ],
            env=self.env,
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )

    def python(self, code: str, *args: str) -> subprocess.CompletedProcess[str]:
        """Python code against the cluster's Prefect server (its settings are read from the
        environment at import: a process of its own)."""
        return subprocess.run(
            [sys.executable, "-c", code, *args],
            env=self.env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )

    def states(self) -> Counter[str]:
        with self.engine.connect() as conn:
            return Counter(
                dict(
                    conn.execute(
                        select(DELIVERY.c.state, func.count()).group_by(DELIVERY.c.state)
                    ).all()
                )
            )


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    work = tmp_path_factory.mktemp("cluster")
    config = copy_config(
        ROOT / "config",
        work / "config",
        rate_per_second=RATE,
        in_flight=1,
        backoff_seconds=0.01,
        backoff_max_seconds=0.05,
    )
    requests = work / "requests.jsonl"
    with (
        temporary_database("postgres", work, POSTGRES_URL) as url,
        temporary_database("postgres", work, POSTGRES_URL) as prefect_url,
        FakeSendGrid(KEY, requests_path=requests) as fake,
    ):
        seed_base(url, CONTACTS, AS_OF, config)
        env = cluster_environment(
            work=work,
            config=config,
            url=url,
            prefect_url=prefect_url,
            sendgrid_url=fake.url,
            key=KEY,
            unsubscribe_secret="scale-unsubscribe-secret",
        )
        port = free_port()
        up = subprocess.run(
            [*HERALD, "cluster", "up", "--workers", "2", "--port", str(port)],
            env=env,
            cwd=ROOT,
            capture_output=True,
            text=True,
            timeout=WAIT,
            check=False,
        )
        assert up.returncode == 0, up.stdout + up.stderr
        env["PREFECT_API_URL"] = f"http://127.0.0.1:{port}/api"
        engine = get_engine(url)
        try:
            rate = GlobalRate.of(load_config(config).campaign)
            assert rate is not None and rate.limit == RATE // 10
            yield Cluster(env, url, engine, fake, requests, rate.name)
        finally:
            down = subprocess.run(
                [*HERALD, "cluster", "down"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=WAIT,
                check=False,
            )
            engine.dispose()
            assert down.returncode == 0, down.stdout + down.stderr


SET_LIMIT = """
import sys
from prefect.client.orchestration import get_client
from prefect.client.schemas.actions import GlobalConcurrencyLimitUpdate
name, what = sys.argv[1], sys.argv[2]
with get_client(sync_client=True) as client:
    if what == "delete":
        client.delete_global_concurrency_limit_by_name(name)
    else:
        client.update_global_concurrency_limit(name, GlobalConcurrencyLimitUpdate(active=False))
"""

RESTORE_LIMIT = """
from herald.config import load_config
from herald.settings import get_settings
from herald.scaleout.rate import GlobalRate, ensure
rate = GlobalRate.of(load_config(get_settings().config_dir).campaign)
print(ensure(rate))
"""


class TestTheGlobalRateLimit:
    @pytest.mark.parametrize("what", ["delete", "disable"])
    def test_a_missing_or_disabled_limit_stops_the_phase_before_any_request(
        self, cluster: Cluster, what: str
    ) -> None:
        """Without its rate limit (deleted, or disabled, which Prefect would let every
        request through) a real send stops with exit 2 naming the limit and the command
        that makes it; no request reaches SendGrid and nothing is planned."""
        reset_sends(cluster.url)
        before = cluster.fake.received
        changed = cluster.python(SET_LIMIT, cluster.rate_name, what)
        assert changed.returncode == 0, changed.stderr
        try:
            done = cluster.herald(
                *("phase", "send", "announcement", "--send", "--senders", "2"),
                *("--as-of", AS_OF.isoformat(), "--ignore-window"),
            )
        finally:
            restored = cluster.python(RESTORE_LIMIT)
        assert restored.returncode == 0, restored.stderr
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert cluster.rate_name in output
        if what == "delete":
            assert f"prefect gcl create {cluster.rate_name} --limit 100" in " ".join(output.split())
        else:
            assert "disabled" in output
        assert "Traceback" not in output
        assert cluster.fake.received == before
        assert sum(cluster.states().values()) == 0


class TestSendersShareAPhase:
    def test_three_senders_send_every_recipient_once_within_the_rate(
        self, cluster: Cluster
    ) -> None:
        """Three sender runs through the pool's two workers request at the same time (the
        fake gathers their first requests), every contact is accepted exactly once, the
        ledger is all accepted, each sender is counted, and no second of arrivals holds more
        than the configured rate."""
        reset_sends(cluster.url)
        cluster.requests.unlink(missing_ok=True)
        start = len(cluster.fake.accepted)
        together = cluster.fake.gather(3, timeout=WAIT)
        run = cluster.send(3)
        output, _ = run.communicate(timeout=WAIT)
        assert run.returncode == 0, output
        assert together.met, "the three senders never had requests in flight at once"
        accepted = Counter(r.email.lower() for r in cluster.fake.accepted[start:])
        assert set(accepted) == all_emails(cluster.url)
        assert max(accepted.values()) == 1
        assert cluster.states() == Counter(accepted=CONTACTS)
        with cluster.engine.connect() as conn:
            senders = conn.execute(
                select(SEND_WORKER.c.flow_run_id, func.count(SEND_BATCH.c.id))
                .join(SEND_BATCH, SEND_BATCH.c.worker_id == SEND_WORKER.c.id)
                .group_by(SEND_WORKER.c.flow_run_id)
            ).all()
        assert len(senders) >= 3 and all(batches for _, batches in senders)
        busiest, _ = busiest_second(load_requests(cluster.requests))
        assert 0 < busiest <= RATE
        assert "sender" in output


class TestAWorkerKilledMidRun:
    def test_the_others_finish_and_only_its_request_in_flight_is_unknown(
        self, cluster: Cluster
    ) -> None:
        """A worker and the sender run it hosts are killed with SIGKILL while that sender's
        request is certainly in flight: the other senders finish the phase; nothing is lost;
        the rows of that request are ``unknown`` (exit 3), reported before anything is
        re-sent; SendGrid's events settle the ones they prove accepted, and re-sending the
        rest duplicates only those rows."""
        reset_sends(cluster.url)
        start = len(cluster.fake.accepted)
        cluster.fake.script("accept", "accept", "accept", "hold")
        run = cluster.send(3)
        try:
            assert cluster.fake.wait_held(1, timeout=WAIT)
            (batch,) = cluster.fake.held_batches
            with cluster.engine.connect() as conn:
                pid = conn.execute(
                    select(SEND_WORKER.c.pid)
                    .join(SEND_BATCH, SEND_BATCH.c.worker_id == SEND_WORKER.c.id)
                    .where(SEND_BATCH.c.id == batch)
                ).scalar_one()
            worker = parent_pid(pid)
            assert worker is not None
            os.kill(pid, signal.SIGKILL)
            os.kill(worker, signal.SIGKILL)
            cluster.fake.release()
            output, _ = run.communicate(timeout=WAIT)
        finally:
            if run.poll() is None:
                run.kill()
                run.wait()
        assert run.returncode == 3, output
        with cluster.engine.connect() as conn:
            unknown = set(
                conn.execute(
                    select(DELIVERY.c.batch_id).where(DELIVERY.c.state == "unknown").distinct()
                ).scalars()
            )
            in_flight = conn.execute(
                select(SEND_BATCH.c.recipients).where(SEND_BATCH.c.id == batch)
            ).scalar_one()
        states = cluster.states()
        assert states["unknown"] == in_flight and unknown == {batch}
        assert states["accepted"] == CONTACTS - in_flight
        accepted = Counter(r.email.lower() for r in cluster.fake.accepted[start:])
        assert set(accepted) == all_emails(cluster.url)  # the held request was accepted too
        assert max(accepted.values()) == 1
        # SendGrid's events come in for half of them (what the webhook receiver applies):
        # those rows are settled accepted and will never be sent again.
        held = sorted(
            (r for r in cluster.fake.accepted[start:] if r.custom_args["herald_batch"] == batch),
            key=lambda r: r.email,
        )
        evidenced = held[: len(held) // 2]
        with cluster.engine.begin() as conn:
            applied = apply_events(
                conn,
                events=[event for record in evidenced for event in events_for(record, AT_EVENT)],
            )
        assert applied.settled == len(evidenced) > 0
        assert cluster.states()["unknown"] == in_flight - len(evidenced)
        # An operator re-sends the rows still unknown: duplicates only among them.
        unknown_emails = _emails_in_state(cluster.engine, "unknown")
        assert not unknown_emails & {r.email.lower() for r in evidenced}
        resent = cluster.herald("deliveries", "resolve", "announcement", "--resend")
        assert resent.returncode == 0, resent.stdout + resent.stderr
        again = cluster.send(2)
        output, _ = again.communicate(timeout=WAIT)
        assert again.returncode == 0, output
        accepted = Counter(r.email.lower() for r in cluster.fake.accepted[start:])
        duplicates = {email for email, times in accepted.items() if times > 1}
        assert duplicates and duplicates <= unknown_emails
        assert cluster.states() == Counter(accepted=CONTACTS)


def _emails_in_state(engine: Engine, state: str) -> set[str]:
    from herald.models import CONTACT

    with engine.connect() as conn:
        return {
            str(email).lower()
            for (email,) in conn.execute(
                select(CONTACT.c.email)
                .join(DELIVERY, DELIVERY.c.contact_id == CONTACT.c.id)
                .where(DELIVERY.c.state == state)
            )
        }
