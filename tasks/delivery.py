"""Delivery tasks: check templates, count and plan the audience, send one batch, publish.

A task run covers a batch of up to ``sending.batch_size`` (1,000) recipients, never one
recipient: Prefect's bookkeeping stays a small share of a phase's wall time.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import date, datetime
from pathlib import Path

from prefect import get_run_logger, task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.futures import PrefectFuture

from herald.config import HeraldConfig, MessageKind, PhaseName
from herald.delivery import ledger
from herald.delivery.audience import AudienceCount, audience_counts
from herald.delivery.messages import check_templates
from herald.delivery.preview import Sample, sample_renders
from herald.delivery.sender import BatchOutcome, PhaseSender, Renderer
from herald.delivery.transports import Transport
from herald.settings import get_settings
from tasks.common import as_is, database


@task(name="check-templates", cache_policy=NO_CACHE)
def check_templates_task(config: HeraldConfig) -> int:
    """Render every variant of every template; any error fails the run before anything is sent."""
    return check_templates(config, get_settings().templates_dir)


@task(name="count-audience", cache_policy=NO_CACHE)
def count_audience_task(config: HeraldConfig, phase: PhaseName, as_of: date) -> list[AudienceCount]:
    """The phase's audience by segment and role."""
    with database().connect() as conn:
        return audience_counts(conn, config, phase, as_of)


@task(name="render-samples", cache_policy=NO_CACHE)
def sample_renders_task(
    config: HeraldConfig, phase: PhaseName, as_of: date, output_dir: Path
) -> list[Sample]:
    """One real contact's message per segment and role, written for people to read."""
    return sample_renders(
        database(), config, phase, as_of, output_dir, get_settings().templates_dir
    )


@task(name="plan-ledger", cache_policy=NO_CACHE)
def plan_ledger_task(config: HeraldConfig, phase: PhaseName, as_of: date) -> ledger.PlanResult:
    """Insert the audience as planned ledger rows in one statement (a rerun adds nothing)."""
    return ledger.plan(database(), config, phase, as_of)


@task(name="suppress-ineligible", cache_policy=NO_CACHE)
def suppress_ineligible_task(
    config: HeraldConfig, phase: MessageKind, message: str
) -> dict[str, int]:
    """Planned rows no longer sendable (unsubscribed, bounced, churned, migrated) stop here."""
    return ledger.suppress_ineligible(database(), config, phase, message)


@task(name="recover-senders", cache_policy=NO_CACHE)
def recover_task(config: HeraldConfig, worker: ledger.Worker) -> ledger.Recovery:
    """Settle what senders that died left behind: unrequested rows back, in-flight unknown."""
    return ledger.recover(
        database(),
        config.campaign.id,
        worker.message,
        config.campaign.sending.worker_lease_seconds,
        by=worker,
    )


@task(name="send-batch", cache_policy=NO_CACHE)
def send_batch_task(sender: PhaseSender) -> BatchOutcome:
    """Claim, render, send and record one batch of up to 1,000 recipients."""
    return sender.send_batch()


@task(name="publish-phase-summary", cache_policy=NO_CACHE)
def publish_summary_task(phase: PhaseName, markdown: str) -> None:
    """The run's summary as a Prefect markdown artifact (no e-mail addresses in it)."""
    create_markdown_artifact(
        key=f"phase-{phase}",
        markdown=markdown,
        description=f"Herald phase {phase}: audience, ledger and what this run sent.",
    )


@dataclass
class Delivered:
    """What sending one message's planned rows did."""

    message: str
    recovered_unknown: int = 0
    recovered_released: int = 0
    suppressed_now: dict[str, int] = field(default_factory=dict)
    expired: int = 0
    batches: int = 0
    requests: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    paused: str | None = None


def deliver(
    config: HeraldConfig,
    phase: MessageKind,
    transport: Transport,
    *,
    message: str | None = None,
    notice: int | None = None,
    clock: Callable[[], datetime],
    window: bool = True,
    max_batches: int | None = None,
) -> Delivered:
    """Send what is planned for one message: settle dead senders, drop what became ineligible
    or expired, then one task run per batch (``sending.in_flight`` at a time) until nothing
    is left, the message is paused or ``max_batches`` is reached. Runs inside a flow run."""
    logger = get_run_logger()
    engine = database()
    name = message or phase
    worker = ledger.start_worker(engine, config.campaign.id, name, transport.name)
    done = Delivered(message=name)
    outcome = "failed"
    try:
        recovery = recover_task(config, worker)
        done.recovered_unknown, done.recovered_released = recovery.unknown, recovery.released
        done.suppressed_now = suppress_ineligible_task(config, phase, name)
        done.expired = ledger.expire(engine, config.campaign.id, name, clock())
        sender = PhaseSender(
            engine=engine,
            config=config,
            phase=phase,
            worker=worker,
            transport=transport,
            renderer=Renderer(config, get_settings().templates_dir),
            notice=notice,
            clock=clock,
            window=window,
        )
        # Up to `sending.in_flight` batches at once: the next is claimed and built while the
        # previous one waits for SendGrid's answer (each batch is its own claim in the ledger).
        # One at a time until a full batch shows there is more than one batch's worth.
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
                if batch.recipients >= config.campaign.sending.batch_size:
                    width = config.campaign.sending.in_flight
                if batch.batch_id is None:
                    exhausted = True
                else:
                    done.batches += 1
                    done.requests += batch.requests
                    requested = batch.recipients - batch.refused
                    done.failed += batch.refused
                    if batch.refused:
                        logger.warning(
                            f"Batch {batch.batch_id}: {batch.refused} recipient(s) refused "
                            "before the request (their values cannot go in a header; see "
                            "herald phase status)"
                        )
                    if batch.outcome == "accepted":
                        done.accepted += requested
                    elif batch.outcome == "failed":
                        done.failed += requested
                        logger.warning(f"Batch {batch.batch_id} failed: {batch.error}")
                    else:
                        done.unknown += requested
                        logger.error(f"Batch {batch.batch_id} is unknown: {batch.error}")
                if batch.paused and done.paused is None:
                    done.paused = batch.paused
                    logger.warning(f"{name} paused: {batch.paused}")
        finally:
            for future in in_flight:  # never leave a batch half-recorded behind
                future.wait()
        outcome = "paused" if done.paused else "finished"
    finally:
        ledger.finish_worker(engine, worker, outcome)
    return done
