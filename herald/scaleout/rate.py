"""One send rate for every sender of a campaign: a Prefect global rate limit, in strict mode.

``sending.rate_per_second`` is a promise to SendGrid and to the mailbox providers: never more
than that many messages in any second, however many senders share the work. One process could
keep it alone; several, on several hosts, need a count they all share, and Herald uses
Prefect's own: a global concurrency limit with slot decay (a rate limit) named
``herald-send-<campaign id>``, from which every request takes ``occupy = its recipients``
(:func:`prefect.concurrency.sync.rate_limit`, ``strict=True``) before it leaves, retries
included.

A Prefect rate limit is a leaky bucket: ``limit`` slots, freed at ``slot_decay_per_second``.
In any second it grants at most ``limit + slot_decay_per_second`` (the bucket's content plus
what drains meanwhile), so a bucket of one second's rate would allow twice the rate. Herald
therefore sizes it from the configured rate R (:meth:`GlobalRate.of`):

- a request carries at most a tenth of R (``limit``: the largest request, and the batch size
  while the rate is on; at most ``sending.batch_size``; at least 1);
- slots drain at ``0.9 R - limit``, so grants in any second stay under 0.9 R, and the last
  tenth covers the moment between a grant and the request's arrival at SendGrid (a database
  commit and a connection: under 0.11 s even on a loaded machine).

The cluster sustains about 0.8 R (0.9 R less one request), and never exceeds R in any second.
Prefect adds two facts of its own: ``occupy`` above the limit is refused (HTTP 422), which the
batch size rules out, and a refused attempt resets the bucket's decay clock, so contention
makes the limit slower, never faster.

Where the limit lives: with a Prefect server (``PREFECT_API_URL``), on the server, made and
kept equal to the config by ``herald deploy`` (or by hand: :meth:`GlobalRate.create_command`);
a run that finds it missing, disabled or different from the config stops before any request
(:class:`RateLimitError`), because a missing limit would be skipped and a disabled one passed,
silently. Without a server, a command runs on a temporary Prefect server of its own, which
no other process shares: Herald makes the limit there itself.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import TYPE_CHECKING

from herald.errors import HeraldError

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.client.schemas.responses import GlobalConcurrencyLimitResponse

    from herald.config.campaign import CampaignConfig

PREFIX = "herald-send-"
HEADROOM = 0.9  # share of the rate granted in any second; the rest covers grant-to-arrival time
BURST_SHARE = 0.1  # the largest request, as a share of a second's rate


class RateLimitError(HeraldError):
    """The campaign's global rate limit is missing, disabled or not what the config says."""

    outcome = "Nothing was sent."


@dataclass(frozen=True)
class GlobalRate:
    """The Prefect rate limit that holds a campaign to ``sending.rate_per_second``."""

    name: str
    rate: float  # messages per second never exceeded in any second (the config)
    limit: int  # Prefect's limit: the largest request, in recipients
    decay: float  # Prefect's slot_decay_per_second

    @classmethod
    def of(cls, campaign: CampaignConfig) -> GlobalRate | None:
        """The limit for ``campaign``'s sending section; None when it sets no rate."""
        rate = campaign.sending.rate_per_second
        if rate is None:
            return None
        burst = max(1, min(campaign.sending.batch_size, math.floor(rate * BURST_SHARE)))
        decay = round(rate * HEADROOM - burst, 3)
        return cls(name=PREFIX + campaign.id, rate=rate, limit=burst, decay=decay)

    @property
    def batch_size(self) -> int:
        """Recipients per request while the rate is on (one request never exceeds the limit)."""
        return self.limit

    def create_command(self) -> str:
        """The Prefect command that makes this limit by hand."""
        return (
            f"prefect gcl create {self.name} --limit {self.limit} "
            f"--slot-decay-per-second {self.decay:g}"
        )

    def update_command(self) -> str:
        """The Prefect command that brings an existing limit to this one."""
        return (
            f"prefect gcl update {self.name} --limit {self.limit} "
            f"--slot-decay-per-second {self.decay:g} --enable"
        )

    def matches(self, found: GlobalConcurrencyLimitResponse) -> bool:
        """Whether a limit read from Prefect has this one's size and decay."""
        return found.limit == self.limit and math.isclose(
            found.slot_decay_per_second, self.decay, rel_tol=1e-6
        )


def server_configured() -> bool:
    """Whether commands talk to a Prefect server (else each starts a temporary one)."""
    from prefect.settings import get_current_settings

    return bool(get_current_settings().api.url)


def ensure(rate: GlobalRate) -> str:
    """Create the limit, or bring it to the config (size, decay, enabled); what was done."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.actions import (
        GlobalConcurrencyLimitCreate,
        GlobalConcurrencyLimitUpdate,
    )
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            found = client.read_global_concurrency_limit_by_name(rate.name)
        except ObjectNotFound:
            client.create_global_concurrency_limit(
                GlobalConcurrencyLimitCreate(
                    name=rate.name, limit=rate.limit, slot_decay_per_second=rate.decay
                )
            )
            return "created"
        if found.active and rate.matches(found):
            return "unchanged"
        client.update_global_concurrency_limit(
            rate.name,
            GlobalConcurrencyLimitUpdate(
                limit=rate.limit, slot_decay_per_second=rate.decay, active=True
            ),
        )
        return "updated"


def require(rate: GlobalRate) -> None:
    """Stop unless the limit exists on the server, is enabled and is what the config says.

    Without a Prefect server (a temporary one of this process only) the limit is made here.
    """
    if not server_configured():
        ensure(rate)
        return
    from prefect.exceptions import ObjectNotFound

    with _client() as client:
        try:
            found = client.read_global_concurrency_limit_by_name(rate.name)
        except ObjectNotFound:
            raise RateLimitError(
                f"The global rate limit {rate.name!r} does not exist on the Prefect server: "
                f"without it the senders would not be held to {rate.rate:g} messages per "
                f"second. Create it with `herald deploy` (which makes it from campaign.yaml) "
                f"or `{rate.create_command()}`."
            ) from None
    if not found.active:
        raise RateLimitError(
            f"The global rate limit {rate.name!r} is disabled, and Prefect lets every "
            f"request through a disabled limit. Enable it with `prefect gcl enable "
            f"{rate.name}` or `herald deploy`."
        )
    if not rate.matches(found):
        raise RateLimitError(
            f"The global rate limit {rate.name!r} has limit {found.limit} and decay "
            f"{found.slot_decay_per_second:g}/s, but sending.rate_per_second "
            f"{rate.rate:g} needs limit {rate.limit} and decay {rate.decay:g}/s. Run "
            f"`herald deploy` or `{rate.update_command()}`."
        )


def _client() -> SyncPrefectClient:
    from prefect.client.orchestration import get_client

    return get_client(sync_client=True)


class GlobalPace:
    """Takes each request's recipients from the campaign's Prefect rate limit (strict)."""

    def __init__(self, rate: GlobalRate) -> None:
        self.rate = rate

    @property
    def largest(self) -> int | None:
        """Prefect refuses to take more than the limit at once."""
        return self.rate.limit

    def acquire(self, count: int) -> float:
        """Block until ``count`` recipients may go; the seconds waited.

        Raises :class:`RateLimitError` when the limit is gone (deleted while sending):
        the request must not leave unpaced."""
        from prefect.concurrency._asyncio import ConcurrencySlotAcquisitionError
        from prefect.concurrency.sync import rate_limit

        started = time.monotonic()
        try:
            rate_limit(self.rate.name, occupy=count, strict=True)
        except ConcurrencySlotAcquisitionError as error:
            raise RateLimitError(
                f"The global rate limit {self.rate.name!r} could not be taken ({error}). "
                f"Create it with `herald deploy` or `{self.rate.create_command()}`."
            ) from error
        return time.monotonic() - started
