"""Delivery tasks: check templates, count and plan the audience, send one batch, publish.

A task run covers a batch of up to ``sending.batch_size`` (1,000) recipients, never one
recipient: Prefect's bookkeeping stays a small share of a phase's wall time.
"""

from __future__ import annotations

from datetime import date
from pathlib import Path

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE

from herald import ledger
from herald.audience import AudienceCount, audience_counts
from herald.config import HeraldConfig, PhaseName
from herald.messages import check_templates
from herald.preview import Sample, sample_renders
from herald.sender import BatchOutcome, PhaseSender
from herald.settings import get_settings
from tasks.common import database


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
def suppress_ineligible_task(config: HeraldConfig, phase: PhaseName) -> dict[str, int]:
    """Planned rows no longer sendable (unsubscribed, bounced, churned, migrated) stop here."""
    return ledger.suppress_ineligible(database(), config, phase)


@task(name="recover-senders", cache_policy=NO_CACHE)
def recover_task(config: HeraldConfig, phase: PhaseName, worker: ledger.Worker) -> ledger.Recovery:
    """Settle what senders that died left behind: unrequested rows back, in-flight unknown."""
    return ledger.recover(
        database(),
        config.campaign.id,
        phase,
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
