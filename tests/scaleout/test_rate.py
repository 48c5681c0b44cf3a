"""The global send rate: how Herald sizes the Prefect rate limit from ``rate_per_second``, why
that size never lets a second hold more than the rate, and that a sender takes every
request's recipients (retries included) from it, in requests no larger than it allows."""

from __future__ import annotations

import heapq
import math
import random
from dataclasses import replace
from pathlib import Path

import pytest

from herald.config import load_config
from herald.delivery import planning
from herald.delivery.recovery import start_worker
from herald.delivery.sender import PhaseSender, Renderer
from herald.delivery.transports.sendgrid import SendGridTransport
from herald.scaleout.rate import HEADROOM, GlobalRate
from herald.settings import get_settings
from herald.testing.fake_sendgrid import FakeSendGrid, RequestLog, busiest_second
from tests.support.bases import DAY, eligible, load_base
from tests.support.environment import ROOT, Database

RATES = [2, 3, 7.5, 10, 99, 250, 1000, 2000, 9999, 10_000, 50_000, 1_000_000]


BASE = load_config(ROOT / "config").campaign


def _rate(rate: float, batch_size: int = 1000) -> GlobalRate:
    sending = BASE.sending.model_copy(update={"rate_per_second": rate, "batch_size": batch_size})
    found = GlobalRate.of(BASE.model_copy(update={"id": "acme", "sending": sending}))
    assert found is not None
    return found


def prefect_bucket(
    rate: GlobalRate, senders: int, seconds: float, rng: random.Random
) -> list[tuple[float, int]]:
    """Greedy senders against Prefect's rate limit as its server computes it
    (concurrency_limits_v2): slots decay by floor(decay x seconds since the row's last
    update); a grant needs active + n <= limit; a refusal updates the row too (its denied
    slots), which restarts the decay clock without lowering the active slots, and answers
    Retry-After of about n / decay (Prefect's client waits that, with jitter). Each sender
    asks again 10 ms after a grant, for any size up to the limit. Returns the grants."""
    active, updated = 0, 0.0
    grants: list[tuple[float, int]] = []
    asks = [(rng.uniform(0, 0.01), sender, rng.randint(1, rate.limit)) for sender in range(senders)]
    heapq.heapify(asks)
    while asks:
        at, sender, n = heapq.heappop(asks)
        if at > seconds:
            break
        after = max(0, active - math.floor(rate.decay * (at - updated)))
        if after + n <= rate.limit:
            active, updated = after + n, at
            grants.append((at, n))
            heapq.heappush(asks, (at + 0.01, sender, rng.randint(1, rate.limit)))
        else:
            updated = at
            heapq.heappush(asks, (at + n / rate.decay * rng.uniform(0.5, 1.5), sender, n))
    return grants


class TestSizing:
    @pytest.mark.parametrize("rate", RATES)
    @pytest.mark.parametrize("batch_size", [1, 100, 1000])
    def test_a_second_never_holds_more_than_the_rate(self, rate: float, batch_size: int) -> None:
        """Whatever the rate and batch size: a request fits in the limit (Prefect refuses
        more), slots drain, and the bucket plus a second's drain stays under the headroom,
        leaving a tenth of a second for a granted request to reach SendGrid."""
        limit = _rate(rate, batch_size)
        assert 1 <= limit.limit <= batch_size
        assert limit.batch_size == limit.limit
        assert limit.decay > 0
        assert limit.limit + limit.decay <= HEADROOM * rate + 1e-6
        # Grants spread over 1.1 s still fit in one second of the configured rate.
        assert limit.limit + limit.decay * 1.1 <= rate + 1e-6

    def test_the_limit_is_named_for_the_campaign_and_made_by_one_command(self) -> None:
        """The limit is ``herald-send-<campaign>`` and the command that makes it by hand
        carries its size and decay."""
        limit = _rate(2000)
        assert (limit.name, limit.limit, limit.decay) == ("herald-send-acme", 200, 1600)
        assert limit.create_command() == (
            "prefect gcl create herald-send-acme --limit 200 --slot-decay-per-second 1600"
        )

    @pytest.mark.parametrize("rate", [10, 1000, 2000, 50_000])
    def test_greedy_senders_against_prefects_bucket_stay_under_the_rate(self, rate: float) -> None:
        """Senders asking as often as they can, for any request size up to the limit, get
        grants that never hold more than the rate in any second (a refusal restarting the
        decay clock only slows them)."""
        limit = _rate(rate)
        rng = random.Random(rate)
        grants = prefect_bucket(limit, senders=4, seconds=20, rng=rng)

        # Each granted request reaches SendGrid up to 0.1 s later, in any order.
        arrivals = [
            RequestLog(i, 202, n, 0, True, [], at + rng.uniform(0, 0.1))
            for i, (at, n) in enumerate(grants)
        ]
        busiest, _ = busiest_second(arrivals)
        assert busiest <= rate
        assert grants  # (refusals restarting the decay clock slow contenders, never speed them)


class RecordingPace:
    """A pace that lets everything through and remembers what each request took."""

    def __init__(self, largest: int) -> None:
        self.taken: list[int] = []
        self._largest = largest

    @property
    def largest(self) -> int | None:
        return self._largest

    def acquire(self, count: int) -> float:
        self.taken.append(count)
        return 0.0


class TestASenderTakesItsRequestsFromThePace:
    def test_every_request_and_retry_takes_its_recipients_in_requests_no_larger_than_allowed(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid
    ) -> None:
        """With a pace that allows 7 recipients at once, the phase goes in requests of at
        most 7; each request the fake receives, the retry after a 500 included, took its
        recipients from the pace first; every recipient was accepted once."""
        fake = sendgrid_env
        loaded = load_base(db, tmp_path)
        sending = loaded.campaign.sending.model_copy(
            update={"backoff_seconds": 0.01, "backoff_max_seconds": 0.02, "rate_per_second": None}
        )
        loaded = replace(loaded, campaign=loaded.campaign.model_copy(update={"sending": sending}))
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = start_worker(
            db.engine, campaign=loaded.campaign.id, message="announcement", transport="sendgrid"
        )
        pace = RecordingPace(largest=7)
        sender = PhaseSender(
            engine=db.engine,
            config=loaded,
            phase="announcement",
            worker=worker,
            transport=SendGridTransport.from_settings(get_settings(), sending),
            renderer=Renderer(loaded),
            window=False,
            limiter=pace,
        )
        fake.script("500")
        while sender.send_batch().batch_id is not None:
            pass
        requests = fake.requests
        assert requests[0].status == 500
        assert [r.recipients for r in requests] == pace.taken
        assert max(pace.taken) <= 7
        audience = eligible(db, loaded, "announcement")
        assert sorted(fake.accepted_emails().values()) == [1] * len(audience)
