"""Sending a message, one batch at a time: claim, render, pace, request, record, watch the rates.

:class:`PhaseSender` holds what every batch of one sending process shares (the transport,
the variants rendered so far, the pace, the running counts the circuit breaker reads); its
:meth:`PhaseSender.send_batch` is the unit a Prefect task runs: about 1,000 recipients.

A delivery of one message has three steps: :func:`open_sender` (register, settle what dead
senders left, drop rows no longer sendable), batches until nothing is left or the message
pauses, and :func:`~herald.delivery.recovery.finish_worker`. The ``deliver`` flow runs each
step as a task run; :func:`deliver_message` runs them as plain calls (the rehearsal, which
delivers hundreds of times a campaign, runs a whole simulated day in one task run).
"""

from __future__ import annotations

import gc
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from datetime import datetime
from pathlib import Path
from typing import Any, Protocol

from pydantic import BaseModel, Field
from sqlalchemy import Engine, and_, func, select

from herald.config import HeraldConfig, MessageKind
from herald.db import refresh_statistics
from herald.delivery import ledger
from herald.delivery.calendar import local_time, open_zones, parse_message
from herald.delivery.controls import paused_reason, set_paused
from herald.delivery.keys import LedgerKey, Outcome
from herald.delivery.messages import Rendered, Variant, recipient_values, render
from herald.delivery.planning import (
    expire,
    latest_suppression,
    suppress_ineligible,
    suppress_newly,
    waiting_zones,
)
from herald.delivery.recovery import Recovery, finish_worker, recover, start_worker
from herald.delivery.transports import OutgoingBatch, Recipient, Transport
from herald.i18n.environment import TEMPLATES
from herald.models import DELIVERY, EMAIL_EVENT, DeliveryState, utcnow
from herald.settings import get_settings
from herald.unsubscribe.links import UnsubscribeLinks


class Renderer:
    """Renders each variant once per sending process; ``subject_prefix`` goes before every
    subject (a rehearsal's messages say so)."""

    def __init__(
        self, config: HeraldConfig, templates: Path = TEMPLATES, *, subject_prefix: str = ""
    ) -> None:
        self.config = config
        self.templates = templates
        self.subject_prefix = subject_prefix
        self._cache: dict[Variant, Rendered] = {}

    def __call__(self, variant: Variant) -> Rendered:
        """The variant's subject and bodies, with per-recipient tags left in."""
        rendered = self._cache.get(variant)
        if rendered is None:
            rendered = render(self.config, variant, self.templates)
            if self.subject_prefix:
                rendered = replace(rendered, subject=self.subject_prefix + rendered.subject)
            self._cache[variant] = rendered
        return rendered


class Pace(Protocol):
    """What holds a sender to the campaign's rate: each request's recipients are taken from
    it before the request leaves (:class:`RateLimiter` in one process; the Prefect global
    rate limit, :class:`herald.scaleout.rate.GlobalPace`, across every sender)."""

    @property
    def largest(self) -> int | None:
        """The most recipients one request may take (None: no bound)."""
        ...

    def acquire(self, count: int) -> float:
        """Block until ``count`` more recipients may go; the seconds waited."""
        ...


class RateLimiter:
    """Never more than ``rate`` messages per second since the first one, counted per process.

    A batch of n waits until (sent + n) / rate seconds have passed since the start: the
    cumulative count never runs ahead of the configured pace.
    """

    def __init__(
        self,
        rate: float | None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.rate = rate
        self._clock = clock
        self._sleep = sleep
        self._start: float | None = None
        self._sent = 0
        self._lock = threading.Lock()

    @property
    def largest(self) -> int | None:
        """Any batch size: the pace is kept over time, not per request."""
        return None

    def acquire(self, count: int) -> float:
        """Block until ``count`` more messages may go; return the seconds waited."""
        if self.rate is None:
            return 0.0
        with self._lock:
            now = self._clock()
            if self._start is None:
                self._start = now
            self._sent += count
            due = self._start + self._sent / self.rate
            wait = max(0.0, due - now)
        if wait:
            self._sleep(wait)
        return wait


@dataclass
class BatchOutcome:
    """What one batch did."""

    batch_id: str | None
    recipients: int = 0  # rows claimed, the refused ones included
    outcome: Outcome | None = None  # of the request (the refused rows failed before it)
    requests: int = 0
    error: str | None = None
    paused: str | None = None
    refused: int = 0  # rows the transport refused before the request: failed


@dataclass
class RunningCounts:
    """The phase's accepted and failed rows, kept current without re-counting the ledger."""

    accepted: int = 0
    failed: int = 0
    bounced: int = 0
    bounces_checked_at: float = field(default=0.0)


class PhaseSender:
    """Sends one phase's planned rows, batch by batch, for one worker."""

    def __init__(
        self,
        *,
        engine: Engine,
        config: HeraldConfig,
        phase: MessageKind,
        worker: ledger.Worker,
        transport: Transport,
        renderer: Renderer,
        limiter: Pace | None = None,
        clock: Callable[[], datetime] | None = None,
        window: bool = True,
        links: UnsubscribeLinks | None = None,
        suppressions_through: int | None = None,
    ) -> None:
        self.engine = engine
        self.config = config
        self.phase = phase
        self.message = worker.message  # the ledger's name: the phase, or e.g. sunset-t30
        # A sunset notice's deadline (from its ledger name): its days left are counted to it.
        self.deadline = parse_message(self.message).deadline if phase == "sunset" else None
        self.clock = clock or utcnow
        self.window = window
        self.worker = worker
        self.transport = transport
        self.renderer = renderer
        self.limiter: Pace = limiter or RateLimiter(config.campaign.sending.rate_per_second)
        self.links = links or UnsubscribeLinks.configured(get_settings(), config.campaign)
        self.sending = config.campaign.sending
        # A request never takes more than the pace allows at once (the global rate limit's
        # size): Prefect refuses an occupy above its limit.
        self.batch_size = min(self.sending.batch_size, self.limiter.largest or 1000)
        # A claim proves the sender alive when a tenth of its lease has passed.
        self.heartbeat_every = self.sending.worker_lease_seconds / 10
        with engine.connect() as conn:
            # Zones of the rows waiting now; rows planned later by another run wait for a rerun.
            self.zones = waiting_zones(conn, campaign=worker.campaign, message=worker.message)
        # The phase's accepted and failed rows so far: read at this sender's first claim
        # (_count_earlier), before any of its own is recorded; a sender that finds nothing
        # to claim (a finished phase's rerun) does not count a million rows for nothing.
        self.counts = RunningCounts()
        self._counted = False
        self._counts_lock = threading.Lock()  # batches of one sender may run in threads
        self._after = 0  # the highest id this sender claimed: the next claim starts above it
        self._claimed = 0  # rows this sender claimed
        # Of those, the rows claimed when it last refreshed the planner's statistics: the
        # ledger rows it moved that the statistics already know (see _refresh_statistics).
        self.refreshed_rows = 0
        self._refresh_lock = threading.Lock()
        # Suppressions up to this id are settled (open_sender read it before its
        # suppress_ineligible pass: ``suppressions_through``); one that comes later (an
        # unsubscribe, a bounce) takes effect before the next batch.
        self._suppressions = (
            latest_suppression(engine) if suppressions_through is None else suppressions_through
        )

    def send_batch(self) -> BatchOutcome:
        """Claim, render, send and record one batch; ``batch_id`` None when nothing was left."""
        campaign = self.worker.campaign
        with self.engine.connect() as conn:
            paused = paused_reason(conn, campaign=campaign, message=self.message)
        if paused:
            return BatchOutcome(batch_id=None, paused=paused)
        with self._counts_lock:
            seen = self._suppressions
        _, newest = suppress_newly(
            self.engine, config=self.config, phase=self.phase, message=self.message, after=seen
        )
        with self._counts_lock:
            self._suppressions = max(self._suppressions, newest)
        claimed = self._claim()
        if claimed is None and self._settle_dead_peers():
            claimed = self._claim()  # what they had claimed but not requested is planned again
        if claimed is None:
            return BatchOutcome(batch_id=None)
        self._count_earlier()
        with self._counts_lock:
            self._after = max(self._after, max(row.delivery_id for row in claimed.rows))
            self._claimed += len(claimed.rows)
        try:
            batch = self._outgoing(claimed)
        except Exception as error:
            ledger.release(
                self.engine, batch_id=claimed.batch_id, reason=f"rendering failed: {error}"
            )
            raise
        try:
            prepared = self.transport.prepare(batch)
        except Exception as error:  # nothing left Herald: the batch failed, and we know it
            return self._failed_whole(
                claimed.batch_id,
                len(batch.recipients),
                f"the request could not be built: {type(error).__name__}: {error}",
            )
        refused = ledger.refuse(self.engine, batch_id=claimed.batch_id, refused=prepared.refused)
        going = len(prepared.batch.recipients)
        if not going:
            return self._failed_whole(
                claimed.batch_id, refused, "every recipient of the batch was refused", refused
            )
        try:
            self.limiter.acquire(going)
        except BaseException:
            ledger.release(self.engine, batch_id=claimed.batch_id, reason="no send rate to take")
            raise
        ledger.mark_requesting(self.engine, batch_id=claimed.batch_id)
        try:
            # A retry is another request: it takes its recipients from the pace again.
            result = self.transport.send(prepared, before_retry=lambda: self.limiter.acquire(going))
        except Exception as error:
            # A transport bug after the request may have left: say so, never guess.
            ledger.record(
                self.engine,
                batch_id=claimed.batch_id,
                outcome=Outcome.UNKNOWN,
                requests=1,
                error=f"transport error: {type(error).__name__}: {error}",
            )
            raise
        ledger.record(
            self.engine,
            batch_id=claimed.batch_id,
            outcome=result.outcome,
            requests=result.requests,
            http_status=result.http_status,
            provider_message_id=result.provider_message_id,
            error=result.error,
            at=self.clock(),
        )
        with self._counts_lock:
            self.counts.failed += refused
            if result.outcome == Outcome.ACCEPTED:
                self.counts.accepted += going
            elif result.outcome == Outcome.FAILED:
                self.counts.failed += going
        return self._trip(
            BatchOutcome(
                batch_id=claimed.batch_id,
                recipients=going + refused,
                outcome=result.outcome,
                requests=result.requests,
                error=result.error,
                refused=refused,
            )
        )

    def _count_earlier(self) -> None:
        """Once, at the first claim (before this sender records anything): the phase's rows
        accepted and failed so far, which the circuit breaker's rates start from."""
        with self._counts_lock:
            if self._counted:
                return
            with self.engine.connect() as conn:
                counts = ledger.state_counts(
                    conn, campaign=self.worker.campaign, message=self.worker.message
                )
            self.counts.accepted += counts[DeliveryState.ACCEPTED.value]
            self.counts.failed += counts[DeliveryState.FAILED.value]
            self._counted = True

    def _claim(self) -> ledger.Claim | None:
        after = self._after
        claimed = ledger.claim(
            self.engine,
            worker=self.worker,
            limit=self.batch_size,
            gate=self.gate(),
            after=after,
            heartbeat_every=self.heartbeat_every,
        )
        if claimed is None and after:
            # Rows below the watermark may be planned again (released by a recovery, or
            # outside a window that has opened since): one pass from the start.
            self._refresh_statistics()
            claimed = ledger.claim(
                self.engine,
                worker=self.worker,
                limit=self.batch_size,
                gate=self.gate(),
                heartbeat_every=self.heartbeat_every,
            )
        return claimed

    def _refresh_statistics(self) -> None:
        """Before a pass over the ledger from the start, on Postgres: fresh statistics when
        this sender claimed many rows since they were taken (:func:`herald.db.refresh_statistics`).

        The statistics still say what the plan left, every row planned; the planner then
        looks for the few rows still planned by walking the primary key through every row
        sent (two such passes of 0.5-0.9 s at the end of a 1M send). One batch in flight
        refreshes them; the others wait for it and find them fresh. The sender's finish then
        counts only the rows moved since (``refreshed_rows``), so it does not analyze again.
        """
        with self._refresh_lock:
            with self._counts_lock:
                claimed = self._claimed
            if refresh_statistics(self.engine, claimed - self.refreshed_rows, "delivery"):
                self.refreshed_rows = claimed

    def _settle_dead_peers(self) -> bool:
        """Nothing left to claim: settle what senders of this message that died left
        (their unrequested rows planned again, their requests in flight ``unknown``); True
        when rows came back for this sender to take."""
        found = recover(
            self.engine,
            campaign=self.worker.campaign,
            message=self.message,
            lease_seconds=self.sending.worker_lease_seconds,
            by=self.worker,
        )
        return found.released > 0

    def _failed_whole(
        self, batch_id: str, recipients: int, reason: str, refused: int = 0
    ) -> BatchOutcome:
        """A batch none of whose rows could go (nothing was requested): failed, with why."""
        ledger.record(
            self.engine,
            batch_id=batch_id,
            outcome=Outcome.FAILED,
            requests=0,
            error=reason,
            at=self.clock(),
        )
        with self._counts_lock:
            self.counts.failed += recipients
        return self._trip(
            BatchOutcome(
                batch_id=batch_id,
                recipients=recipients,
                outcome=Outcome.FAILED,
                error=reason,
                refused=refused,
            )
        )

    def _trip(self, outcome: BatchOutcome) -> BatchOutcome:
        """Pause the phase when the circuit breaker says so (the outcome says why)."""
        with self._counts_lock:
            tripped = self.breaker_reason()
        if tripped:
            set_paused(
                self.engine,
                campaign=self.worker.campaign,
                message=self.message,
                paused=True,
                reason=tripped,
                who="herald circuit breaker",
            )
            outcome.paused = tripped
        return outcome

    def gate(self) -> ledger.Gate:
        """What may be claimed now: due, inside recipients' windows, within the cap."""
        now = self.clock()
        if not self.window:
            return ledger.Gate(now=now)
        cap = self.config.campaign.frequency_cap
        window = self.config.campaign.delivery_window
        return ledger.Gate(
            now=now,
            zones=open_zones(window, self.zones, now),
            critical_zones=open_zones(window, self.zones, now, any_day=True),
            cap_messages=cap.max_messages,
            cap_days=cap.per_days,
        )

    def _outgoing(self, claimed: ledger.Claim) -> OutgoingBatch:
        campaign = self.worker.campaign
        recipients: list[Recipient] = []
        variants: dict[Variant, Rendered] = {}
        default_locale = self.config.campaign.locales[0]
        window = self.config.campaign.delivery_window
        now = self.clock()
        days_left: dict[str | None, int | None] = {}  # per time zone: a batch has few
        # The batch's variants, each found once: (segment, role, locale, days left) -> it.
        chosen: dict[tuple[str, str, str, int | None], tuple[Variant, Rendered]] = {}
        make_link = self.links.maker(self.phase, self.message)
        prefix = LedgerKey.prefix(campaign, self.message)
        for row in claimed.rows:
            if row.timezone not in days_left:
                days_left[row.timezone] = (
                    None
                    if self.deadline is None  # on the recipient's own calendar, today
                    else max((self.deadline - local_time(window, row.timezone, now).date()).days, 0)
                )
            found = (row.segment, row.role, row.locale or default_locale, days_left[row.timezone])
            picked = chosen.get(found)
            if picked is None:
                variant = Variant(self.phase, *found)
                if variant not in variants:
                    variants[variant] = self.renderer(variant)
                picked = chosen[found] = (variant, variants[variant])
            variant, rendered = picked
            link = make_link(row.contact_id) if make_link is not None else None
            recipients.append(
                Recipient(
                    delivery_id=row.delivery_id,
                    key=f"{prefix}{row.contact_id}",
                    email=row.email,
                    name=row.name,
                    variant=variant,
                    values=recipient_values(
                        name=row.name,
                        email=row.email,
                        account_name=row.account_name,
                        unsubscribe_url=link.url if link else "",
                        greetings=rendered.greetings,
                    ),
                    headers=link.headers if link else {},
                )
            )
        return OutgoingBatch(
            batch_id=claimed.batch_id,
            campaign=campaign,
            message=self.message,
            sender=self.config.campaign.sender,
            variants=variants,
            recipients=recipients,
            categories=[campaign, self.phase],
        )

    def breaker_reason(self) -> str | None:
        """Why the phase must pause (a rate past its threshold), or None."""
        breaker = self.sending.breaker
        done = self.counts.accepted + self.counts.failed
        if done >= breaker.min_sample and self.counts.failed / done > breaker.max_failure_rate:
            return (
                f"circuit breaker: failure rate {self.counts.failed / done:.1%} over {done} "
                f"sends is above {breaker.max_failure_rate:.1%}"
            )
        accepted = self.counts.accepted
        if accepted >= breaker.min_sample:
            bounced = self._hard_bounces()
            if bounced / accepted > breaker.max_hard_bounce_rate:
                return (
                    f"circuit breaker: hard-bounce rate {bounced / accepted:.1%} over "
                    f"{accepted} accepted is above {breaker.max_hard_bounce_rate:.1%}"
                )
        return None

    def _hard_bounces(self) -> int:
        """Hard bounces reported for this phase (re-counted at most every 5 seconds)."""
        now = time.monotonic()
        if now - self.counts.bounces_checked_at < 5.0:
            return self.counts.bounced
        with self.engine.connect() as conn:
            self.counts.bounced = conn.execute(
                select(func.count(func.distinct(EMAIL_EVENT.c.delivery_id)))
                .select_from(EMAIL_EVENT)
                .join(DELIVERY, DELIVERY.c.id == EMAIL_EVENT.c.delivery_id)
                .where(
                    and_(
                        EMAIL_EVENT.c.event == "bounce",
                        DELIVERY.c.campaign == self.worker.campaign,
                        DELIVERY.c.message == self.message,
                    )
                )
            ).scalar_one()
        self.counts.bounces_checked_at = now
        return self.counts.bounced


# --------------------------------------------------------------------------- memory

_collections_lock = threading.Lock()
_collections_depth = 0
_saved_threshold: tuple[int, int, int] = gc.get_threshold()
# Allocations between two young collections while sending (Python's default is 700).
SENDING_GC_THRESHOLD = 50_000


@contextmanager
def sending_memory() -> Iterator[None]:
    """While a sender sends, the garbage collector leaves alone what the process held before
    (``gc.freeze``) and looks for cycles every 50,000 allocations instead of 700.

    A batch makes some ten thousand short-lived dicts and strings (freed by reference
    counting: they hold no cycles). With Python's defaults they start a collection every 700
    allocations, and every hundredth one scans every object the process has (Prefect's,
    pydantic's, SQLAlchemy's: some 350,000): measured in a 100,000-recipient send, 5.2 s of
    collections, 4.3 s of them full ones at 0.36 s each. Nested and concurrent senders in
    one process share one setting; the last one out restores the defaults and unfreezes."""
    global _collections_depth, _saved_threshold
    with _collections_lock:
        if _collections_depth == 0:
            _saved_threshold = gc.get_threshold()
            gc.freeze()
            gc.set_threshold(max(_saved_threshold[0], SENDING_GC_THRESHOLD), *_saved_threshold[1:])
        _collections_depth += 1
    try:
        yield
    finally:
        with _collections_lock:
            _collections_depth -= 1
            if _collections_depth == 0:
                gc.set_threshold(*_saved_threshold)
                gc.unfreeze()


# --------------------------------------------------------------------------- one message

Log = logging.Logger | logging.LoggerAdapter[Any]


@dataclass(frozen=True)
class Opened:
    """A sender registered for one message, and what it settled before its first batch."""

    worker: ledger.Worker
    recovery: Recovery
    suppressed: dict[str, int]
    expired: int
    # The highest suppression id before the pass that stopped suppressed rows: the sender
    # takes any later one before each batch (one committed during the pass included).
    suppressions_through: int | None = None


def open_sender(
    engine: Engine,
    *,
    config: HeraldConfig,
    phase: MessageKind,
    message: str,
    transport: str,
    now: datetime,
    flow_run_id: str | None = None,
) -> Opened:
    """Register this process as a sender of ``message`` (its heartbeat proves it alive), then
    settle what senders that died left behind (unrequested rows back to planned, in-flight
    rows ``unknown``), stop planned rows that are no longer sendable (unsubscribed, bounced,
    churned, migrated) and expire rows whose day has passed."""
    campaign = config.campaign.id
    worker = start_worker(
        engine, campaign=campaign, message=message, transport=transport, flow_run_id=flow_run_id
    )
    try:
        recovery = recover(
            engine,
            campaign=campaign,
            message=message,
            lease_seconds=config.campaign.sending.worker_lease_seconds,
            by=worker,
        )
        through = latest_suppression(engine)
        suppressed = suppress_ineligible(engine, config=config, phase=phase, message=message)
        expired = expire(engine, campaign=campaign, message=message, now=now)
    except BaseException:
        finish_worker(engine, worker=worker, outcome="failed")
        raise
    return Opened(
        worker=worker,
        recovery=recovery,
        suppressed=suppressed,
        expired=expired,
        suppressions_through=through,
    )


class Delivered(BaseModel):
    """What delivering one message's planned rows did in this run."""

    message: str
    recovered_unknown: int = Field(default=0, description="In-flight rows of dead senders.")
    recovered_released: int = Field(default=0, description="Unrequested rows given back.")
    suppressed_now: dict[str, int] = Field(default_factory=dict)
    expired: int = 0
    batches: int = 0
    requests: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    paused: str | None = None

    @classmethod
    def opened(cls, message: str, opened: Opened) -> Delivered:
        """The count of a delivery that has settled what it found (nothing sent yet)."""
        return cls(
            message=message,
            recovered_unknown=opened.recovery.unknown,
            recovered_released=opened.recovery.released,
            suppressed_now=opened.suppressed,
            expired=opened.expired,
        )

    @property
    def moved(self) -> int:
        """The ledger rows this run moved out of planned or sending, whatever their end."""
        stopped = self.recovered_unknown + self.recovered_released + self.expired
        stopped += sum(self.suppressed_now.values())
        return stopped + self.accepted + self.failed + self.unknown

    def unrefreshed(self, sender: PhaseSender | None) -> int:
        """Of the rows this run moved, those the planner's statistics do not know yet: all of
        them, less those ``sender`` (None when it never started) refreshed them for."""
        return self.moved - (sender.refreshed_rows if sender else 0)

    def add(self, batch: BatchOutcome) -> None:
        """Count one sent batch (its refused recipients count as failed)."""
        self.batches += 1
        self.requests += batch.requests
        requested = batch.recipients - batch.refused
        self.failed += batch.refused
        if batch.outcome == Outcome.ACCEPTED:
            self.accepted += requested
        elif batch.outcome == Outcome.FAILED:
            self.failed += requested
        else:
            self.unknown += requested

    def take(self, batch: BatchOutcome, log: Log) -> bool:
        """Count and log what one batch did; True when it found nothing left to claim."""
        if batch.batch_id is not None:
            self.add(batch)
            if batch.refused:
                log.warning(
                    f"Batch {batch.batch_id}: {batch.refused} recipient(s) refused "
                    "before the request (their values cannot go in a header; see "
                    "herald phase status)"
                )
            if batch.outcome == Outcome.FAILED:
                log.warning(f"Batch {batch.batch_id} failed: {batch.error}")
            elif batch.outcome == Outcome.UNKNOWN:
                log.error(f"Batch {batch.batch_id} is unknown: {batch.error}")
        if batch.paused and self.paused is None:
            self.paused = batch.paused
            log.warning(f"{self.message} paused: {batch.paused}")
        return batch.batch_id is None


def deliver_message(
    engine: Engine,
    *,
    config: HeraldConfig,
    phase: MessageKind,
    message: str,
    transport: Transport,
    renderer: Renderer,
    links: UnsubscribeLinks,
    log: Log,
    at: datetime | None = None,
    window: bool = True,
) -> Delivered:
    """Deliver what is planned for ``message`` in plain calls, one batch after another, until
    nothing is left or it pauses (the ``deliver`` flow's steps, without a task run each)."""

    def clock() -> datetime:
        return at if at is not None else utcnow()

    opened = open_sender(
        engine, config=config, phase=phase, message=message, transport=transport.name, now=clock()
    )
    done = Delivered.opened(message, opened)
    finished = "failed"
    sender: PhaseSender | None = None
    try:
        sender = PhaseSender(
            engine=engine,
            config=config,
            phase=phase,
            worker=opened.worker,
            transport=transport,
            renderer=renderer,
            clock=clock,
            window=window,
            links=links,
            suppressions_through=opened.suppressions_through,
        )
        with sending_memory():
            while done.paused is None and not done.take(sender.send_batch(), log):
                pass
        finished = "paused" if done.paused else "finished"
    finally:
        finish_worker(
            engine, worker=opened.worker, outcome=finished, moved=done.unrefreshed(sender)
        )
    return done
