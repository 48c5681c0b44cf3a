"""Delivery tasks: check templates, count and plan the audience, the sender's steps, publish.

A task run covers a batch of up to ``sending.batch_size`` (1,000) recipients, never one
recipient: Prefect's bookkeeping stays a small share of a phase's wall time.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, datetime
from pathlib import Path
from typing import Any

from prefect import task
from prefect.artifacts import create_markdown_artifact
from prefect.cache_policies import NO_CACHE
from prefect.context import TaskRunContext

from herald import audit
from herald.config import HeraldConfig, MessageKind, PhaseName
from herald.delivery import controls, ledger, planning
from herald.delivery.calendar import Notice, parse_message
from herald.delivery.ledger import Worker
from herald.delivery.messages import check_templates, templates_fingerprint
from herald.delivery.preview import Sample, sample_renders
from herald.delivery.recovery import finish_worker
from herald.delivery.sender import BatchOutcome, Opened, PhaseSender, open_sender
from herald.settings import get_settings
from tasks.common import database


def _templates_unchanged(context: TaskRunContext, parameters: dict[str, Any]) -> str:
    """The check's cache key: the digest of what it reads (templates, catalogs, config,
    rendering code). A failed check is never cached; a passed one is reused until any of
    those changes, so each hourly run need not render every variant again."""
    del context
    return "templates-" + templates_fingerprint(parameters["config"], get_settings().templates_dir)


@task(name="check-templates", cache_key_fn=_templates_unchanged, persist_result=True)
def check_templates_task(config: HeraldConfig) -> int:
    """Render every variant of every template; any error fails the run before anything is sent."""
    return check_templates(config, get_settings().templates_dir)


@task(name="count-audience", cache_policy=NO_CACHE)
def count_audience_task(
    config: HeraldConfig, phase: PhaseName, as_of: date
) -> planning.CountedAudience:
    """The phase's audience by segment and role (a finished plan's own count, if current)."""
    return planning.count_audience(database(), config=config, phase=phase, as_of=as_of)


@task(name="render-samples", cache_policy=NO_CACHE)
def sample_renders_task(
    config: HeraldConfig, phase: PhaseName, as_of: date, output_dir: Path
) -> list[Sample]:
    """One real contact's message per segment and role, written for people to read."""
    return sample_renders(
        database(), config, phase, as_of, output_dir, get_settings().templates_dir
    )


@task(name="plan-ledger", cache_policy=NO_CACHE)
def plan_ledger_task(
    config: HeraldConfig,
    phase: PhaseName,
    as_of: date,
    counted: planning.CountedAudience | None = None,
) -> planning.PlanResult:
    """Insert the audience as planned ledger rows in one statement (skipped when nothing it
    reads changed since the last plan: it would add nothing)."""
    return planning.plan(database(), config=config, phase=phase, as_of=as_of, counted=counted)


@task(name="follow-deadlines", cache_policy=NO_CACHE)
def follow_deadlines_task(config: HeraldConfig, as_of: date) -> planning.Rescheduled:
    """A moved deadline: expire notices planned for the old one, plan "deadline extended"."""
    return planning.follow_deadlines(database(), config=config, as_of=as_of)


@task(name="plan-notices", cache_policy=NO_CACHE)
def plan_notices_task(config: HeraldConfig, as_of: date) -> list[tuple[Notice, int]]:
    """Plan every notice due as of the day (a rerun adds nothing)."""
    return planning.plan_notices(database(), config=config, as_of=as_of)


@task(name="plan-thank-you", cache_policy=NO_CACHE)
def plan_thank_you_task(config: HeraldConfig, as_of: date) -> int:
    """Plan a thank-you to contacts of accounts that migrated (once per contact)."""
    return planning.plan_thank_you(database(), config=config, as_of=as_of)


@task(name="planned-notices", cache_policy=NO_CACHE)
def planned_notices_task(config: HeraldConfig) -> dict[str, int]:
    """Notices, thank-yous and "deadline extended" messages with rows still planned (waiting
    for a window or the cap)."""
    with database().connect() as conn:
        planned = planning.planned_rows(conn, campaign=config.campaign.id)
    return {
        message: count
        for message, count in planned.items()
        if parse_message(message).kind in ("sunset", "thank_you", "deadline_extended")
    }


@task(name="open-sender", cache_policy=NO_CACHE)
def open_sender_task(
    config: HeraldConfig,
    phase: MessageKind,
    message: str,
    transport: str,
    now: datetime,
    flow_run_id: str | None = None,
) -> Opened:
    """Register this process as a sender of ``message``, settle what dead senders left, drop
    rows no longer sendable and expire those whose day has passed (one task run)."""
    return open_sender(
        database(),
        config=config,
        phase=phase,
        message=message,
        transport=transport,
        now=now,
        flow_run_id=flow_run_id,
    )


@task(name="finish-sender", cache_policy=NO_CACHE)
def finish_sender_task(worker: Worker, outcome: str, moved: int = 0) -> None:
    """Mark this process's sending finished (``outcome``: finished, paused or failed), with
    the ledger rows it moved (many refresh the planner's statistics)."""
    finish_worker(database(), worker=worker, outcome=outcome, moved=moved)


@task(name="send-batch", cache_policy=NO_CACHE)
def send_batch_task(sender: PhaseSender) -> BatchOutcome:
    """Claim, render, send and record one batch of up to 1,000 recipients."""
    return sender.send_batch()


@task(name="approved", cache_policy=NO_CACHE)
def approved_task(campaign: str, phase: PhaseName) -> bool:
    """Whether the phase's real send is approved (the phase control holds the approval)."""
    with database().connect() as conn:
        return controls.approval(conn, campaign=campaign, message=phase) is not None


@task(name="approve", cache_policy=NO_CACHE)
def approve_task(campaign: str, phase: PhaseName, note: str, who: str | None = None) -> None:
    """Record an approval of the phase's real send (on its control and in the audit log)."""
    controls.approve(database(), campaign=campaign, message=phase, note=note, who=who)


@task(name="reject", cache_policy=NO_CACHE)
def reject_task(campaign: str, phase: PhaseName, note: str, who: str) -> None:
    """Record that an operator answered a paused real send with "no" (audit log)."""
    with database().begin() as conn:
        audit.record(
            conn, "phase.rejected", campaign=campaign, phase=phase, detail={"note": note}, who=who
        )


@task(name="never-sent-notices", cache_policy=NO_CACHE)
def never_sent_task(config: HeraldConfig) -> dict[str, int]:
    """Notice rows that expired unsent with nothing later to supersede them, per notice."""
    with database().connect() as conn:
        return planning.never_sent_notices(conn, campaign=config.campaign.id)


@dataclass(frozen=True)
class LedgerCounts:
    """A message's rows by state, and how many recipients fell back to a region's window."""

    states: dict[str, int]
    timezone_fallbacks: int


@task(name="count-ledger", cache_policy=NO_CACHE)
def ledger_counts_task(campaign: str, message: str) -> LedgerCounts:
    """The message's ledger rows by state, and the time-zone fallbacks among them."""
    with database().connect() as conn:
        return LedgerCounts(
            states=ledger.state_counts(conn, campaign=campaign, message=message),
            timezone_fallbacks=ledger.timezone_fallbacks(conn, campaign=campaign, message=message),
        )


@task(name="publish-phase-summary", cache_policy=NO_CACHE)
def publish_summary_task(phase: PhaseName, markdown: str) -> None:
    """The run's summary as a Prefect markdown artifact (no e-mail addresses in it)."""
    create_markdown_artifact(
        key=f"phase-{phase}",
        markdown=markdown,
        description=f"Herald phase {phase}: audience, ledger and what this run sent.",
    )
