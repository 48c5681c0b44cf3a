"""Deliver what is planned for one message, batch by batch, exactly once: in the run that
asks (:func:`deliver_here`), or as one of several sender runs (:func:`phase_sender`).

:func:`deliver_here` is how ``send-phase`` and ``send-notices`` send with one sender: its
steps are task runs of their own run (not a subflow run: on a 2-core machine a subflow run
costs about a second of Prefect's bookkeeping; twelve paused runs of a phase took 62 s as
subflows against 28 s inline). The rehearsal, which delivers some 800 times over a campaign,
runs the same steps as plain calls (:func:`herald.delivery.sender.deliver_message`), one task
run per simulated day.

:func:`phase_sender` is the flow a phase fans out (``flows/fan_out.py``): the ``sender``
deployment, which a worker of the ``herald`` pool runs as a child run of the phase's run, as
many at once as the phase asks; the senders compete for batches through the ledger's claims.

The steps: open a sender (one task run: register this process as the message's sender,
settle what dead senders left, drop what became ineligible or expired), then one task run
per batch (``sending.in_flight`` at a time) until nothing is left, the message is paused or
``max_batches`` is reached; the sender is finished in any case. Each request takes its
recipients from the campaign's global rate limit (:mod:`herald.scaleout.rate`) when it sends
through SendGrid with a rate; the outbox keeps a pace of its own.
"""

from __future__ import annotations

from collections import deque
from datetime import UTC, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.futures import PrefectFuture
from prefect.runtime import flow_run
from pydantic import Field

from flows.run_names import sender_run
from herald.config import HeraldConfig, MessageKind, PhaseName
from herald.delivery.sender import (
    BatchOutcome,
    Delivered,
    Pace,
    PhaseSender,
    Renderer,
    sending_memory,
)
from herald.delivery.transports import get_transport
from herald.errors import HeraldError
from herald.scaleout.rate import GlobalPace, GlobalRate, require
from herald.settings import Settings, TransportName, get_settings
from herald.unsubscribe.links import UnsubscribeLinks
from tasks.common import as_is, database, preflight
from tasks.delivery import (
    approved_task,
    finish_sender_task,
    open_sender_task,
    send_batch_task,
)


class NotApproved(HeraldError):
    """A sender run of a phase whose real send nobody approved."""

    outcome = "Nothing was sent."


def pace_for(settings: Settings, config: HeraldConfig) -> Pace | None:
    """The campaign's global rate limit when requests go to SendGrid with a rate (checked
    before anything is sent: missing, disabled or not the config's → RateLimitError);
    None: the sender's own pace (the outbox, or no rate)."""
    rate = GlobalRate.of(config.campaign)
    if rate is None or settings.transport != TransportName.SENDGRID:
        return None
    require(rate)
    return GlobalPace(rate)


def deliver_here(
    config: HeraldConfig,
    phase: MessageKind,
    message: str,
    *,
    at: datetime | None = None,
    window: bool = True,
    max_batches: int | None = None,
    transport: TransportName | None = None,
) -> Delivered:
    """Send what is planned for ``message`` (of ``phase``; a notice's ledger name carries its
    deadline, to which its days left are counted), in the calling flow run.

    ``at`` fixes the clock (a rehearsal's simulated moment; default: now); ``window`` keeps
    sends inside recipients' delivery windows and the frequency cap; ``transport`` overrides
    the configured one (the rehearsal always writes to the outbox).
    """
    settings = get_settings()
    if transport is not None:
        settings = settings.model_copy(update={"transport": transport})
    sending = get_transport(settings, config)
    links = UnsubscribeLinks.configured(settings, config.campaign)  # no key: nothing is sent
    pace = pace_for(settings, config)

    def clock() -> datetime:
        return at if at is not None else datetime.now(UTC)

    opened = open_sender_task(config, phase, message, sending.name, clock(), flow_run.get_id())
    worker = opened.worker
    done = Delivered.opened(message, opened)
    finished = "failed"
    sender: PhaseSender | None = None
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
            limiter=pace,
            suppressions_through=opened.suppressions_through,
        )
        with sending_memory():
            _send_batches(sender, done, config.campaign.sending.in_flight, max_batches)
        finished = "paused" if done.paused else "finished"
    finally:
        finish_sender_task(worker, finished, done.unrefreshed(sender))
    return done


@flow(name="phase-sender", flow_run_name=sender_run)
def phase_sender(
    phase: PhaseName,
    message: str | None = None,
    at: datetime | None = None,
    window: bool = True,
    max_batches: Annotated[int | None, Field(ge=1)] = None,
    sender: int = 1,
    senders: int = 1,
) -> Delivered:
    """One of a phase's senders: send planned rows of the phase until none is left.

    Args:
        phase: preview, announcement, deprecation or sunset.
        message: The ledger's name of what is sent (default: the phase).
        at: The moment to act at (a rehearsal's clock; default now).
        window: Send only inside recipients' delivery windows, within the cap.
        max_batches: Stop after this many batches of this sender.
        sender: Which sender this run is (1..senders), for its name.
        senders: How many senders the phase started.
    """
    del sender, senders  # in the run's name only
    config = preflight("phase-sender")
    if not approved_task(config.campaign.id, phase):
        raise NotApproved(
            f"Phase {phase} has no approval: a sender run sends only what its phase's run "
            f"planned after approval (`herald approve {phase}`, or answer the paused run)."
        )
    done = deliver_here(
        config, phase, message or phase, at=at, window=window, max_batches=max_batches
    )
    get_run_logger().info(
        f"Sender of {done.message}: {done.batches} batches, accepted {done.accepted}, "
        f"failed {done.failed}, unknown {done.unknown}"
        + (f"; paused: {done.paused}" if done.paused else ".")
    )
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
            if batch.recipients >= sender.batch_size:
                width = in_flight_limit
            exhausted = done.take(batch, log) or exhausted
    finally:
        for future in in_flight:  # never leave a batch half-recorded behind
            future.wait()
