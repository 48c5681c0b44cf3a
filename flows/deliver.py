"""Flow: deliver what is planned for one message, batch by batch, exactly once.

A flow of its own (one message, runnable and deployable alone: the unit a scale-out fans out),
which ``send-phase`` and ``send-notices`` compose by calling :func:`deliver.fn` inside their
own run: its tasks then are theirs. Not as a subflow run: on a 2-core machine a subflow run
costs about a second of Prefect's bookkeeping (measured: twelve paused runs of a phase took
62 s as subflows against 28 s inline). The rehearsal, which delivers some 800 times over a
campaign, runs the same steps as plain calls (:func:`herald.delivery.sender.deliver_message`),
one task run per simulated day.

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

from herald.config import HeraldConfig, MessageKind
from herald.delivery.sender import BatchOutcome, Delivered, PhaseSender, Renderer
from herald.delivery.transports import get_transport
from herald.settings import TransportName, get_settings
from herald.unsubscribe.links import UnsubscribeLinks
from tasks.common import as_is, database
from tasks.delivery import (
    finish_sender_task,
    open_sender_task,
    send_batch_task,
)


@flow(name="deliver", flow_run_name="deliver-{message}")
def deliver(
    config: HeraldConfig,
    phase: MessageKind,
    message: str,
    at: datetime | None = None,
    window: bool = True,
    max_batches: int | None = None,
    transport: TransportName | None = None,
) -> Delivered:
    """Send what is planned for ``message`` (of ``phase``; a notice's ledger name carries its
    deadline, to which its days left are counted).

    ``at`` fixes the clock (a rehearsal's simulated moment; default: now); ``window`` keeps
    sends inside recipients' delivery windows and the frequency cap; ``transport`` overrides
    the configured one (the rehearsal always writes to the outbox).
    """
    settings = get_settings()
    if transport is not None:
        settings = settings.model_copy(update={"transport": transport})
    sending = get_transport(settings, config)
    links = UnsubscribeLinks.configured(settings, config.campaign)  # no key: nothing is sent

    def clock() -> datetime:
        return at if at is not None else datetime.now(UTC)

    opened = open_sender_task(config, phase, message, sending.name, clock())
    worker = opened.worker
    done = Delivered.opened(message, opened)
    finished = "failed"
    try:
        sender = PhaseSender(
            engine=database(),
            config=config,
            phase=phase,
            worker=worker,
            transport=sending,
            renderer=Renderer(config, settings.templates_dir),
            links=links,
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
            exhausted = done.take(batch, log) or exhausted
    finally:
        for future in in_flight:  # never leave a batch half-recorded behind
            future.wait()
