"""Flow: deliver what is planned for one message, batch by batch, exactly once.

A flow of its own (one message, runnable and deployable alone: the unit a scale-out fans out),
which ``send-phase``, ``send-notices`` and ``rehearse`` compose by calling :func:`deliver.fn`
inside their own run: its tasks then are theirs. Not as a subflow run: on a 2-core machine a
subflow run costs about a second of Prefect's bookkeeping (measured: twelve paused runs of
a phase took 62 s as subflows against 28 s inline), and the rehearsal delivers 838 times.

The steps: open a sender (one task run: register this process as the message's sender,
settle what dead senders left, drop what became ineligible or expired), then one task run
per batch (``sending.in_flight`` at a time) until nothing is
left, the message is paused or ``max_batches`` is reached; the sender is finished in any case.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from pydantic import BaseModel, Field

from herald.config import HeraldConfig, MessageKind
from herald.delivery.keys import Outcome
from herald.delivery.sender import BatchOutcome, PhaseSender, Renderer
from herald.delivery.transports import get_transport
from herald.settings import TransportName, get_settings
from tasks.common import as_is, database
from tasks.delivery import (
    finish_sender_task,
    open_sender_task,
    send_batch_task,
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


@flow(name="deliver", flow_run_name="deliver-{message}")
def deliver(
    config: HeraldConfig,
    phase: MessageKind,
    message: str,
    notice: int | None = None,
    at: datetime | None = None,
    window: bool = True,
    max_batches: int | None = None,
    transport: TransportName | None = None,
) -> Delivered:
    """Send what is planned for ``message`` (of ``phase``; ``notice`` days before a deadline).

    ``at`` fixes the clock (a rehearsal's simulated moment; default: now); ``window`` keeps
    sends inside recipients' delivery windows and the frequency cap; ``transport`` overrides
    the configured one (the rehearsal always writes to the outbox).
    """
    settings = get_settings()
    if transport is not None:
        settings = settings.model_copy(update={"transport": transport})
    sending = get_transport(settings, config)

    def clock() -> datetime:
        return at if at is not None else datetime.now(UTC)

    opened = open_sender_task(config, phase, message, sending.name, clock())
    worker = opened.worker
    done = Delivered(
        message=message,
        recovered_unknown=opened.recovery.unknown,
        recovered_released=opened.recovery.released,
        suppressed_now=opened.suppressed,
        expired=opened.expired,
    )
    finished = "failed"
    try:
        sender = PhaseSender(
            engine=database(),
            config=config,
            phase=phase,
            worker=worker,
            transport=sending,
            renderer=Renderer(config, settings.templates_dir),
            notice=notice,
            clock=clock,
            window=window,
        )
        _send_batches(sender, done, config.campaign.sending.in_flight, max_batches)
        finished = "paused" if done.paused else "finished"
    finally:
        finish_sender_task(worker, finished)
    return done


def _send_batches(
    sender: PhaseSender,
    done: Delivered,
    in_flight_limit: int,
    max_batches: int | None,
) -> None:
    """One task run per batch until nothing is left, the message pauses or ``max_batches``.

    Up to ``in_flight_limit`` batches at once: the next is claimed and built while the
    previous one waits for SendGrid's answer (each batch is its own claim in the ledger).
    One at a time until a full batch shows there is more than one batch's worth.
    """
    log = get_run_logger()
    batch_size = sender.config.campaign.sending.batch_size
    in_flight: deque[PrefectFuture[BatchOutcome]] = deque()
    width, submitted, exhausted = 1, 0, False

    def may_submit() -> bool:
        return (
            not exhausted
            and done.paused is None
            and (max_batches is None or submitted < max_batches)
        )

    try:
        while True:
            while width > 1 and may_submit() and len(in_flight) < width:
                in_flight.append(send_batch_task.submit(as_is(sender)))
                submitted += 1
            if in_flight:
                batch = in_flight.popleft().result()
            elif may_submit():
                submitted += 1
                batch = send_batch_task(sender)  # one at a time: no thread hand-off
            else:
                break
            if batch.recipients >= batch_size:
                width = in_flight_limit
            if batch.batch_id is None:
                exhausted = True
            else:
                done.add(batch)
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
            if batch.paused and done.paused is None:
                done.paused = batch.paused
                log.warning(f"{done.message} paused: {batch.paused}")
    finally:
        for future in in_flight:  # never leave a batch half-recorded behind
            future.wait()
