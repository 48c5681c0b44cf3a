"""Flow: one communication phase (preview, announcement, deprecation, sunset), dry by default.

A dry run (the default) checks the templates, counts the audience by segment and role and
writes one sample render per segment and role; nothing is planned or sent. ``send=True``
then plans the ledger in one statement, settles what dead senders left, and sends batch by
batch (one task run per batch of up to 1,000 recipients) until nothing is planned, the
phase is paused (by an operator or the circuit breaker) or ``max_batches`` is reached.
A rerun whose audience's inputs did not change since the last plan neither counts nor
plans it again (the plan's stamp has both: :mod:`herald.delivery.stamps`).
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from typing import Annotated

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment
from pydantic import BaseModel, Field

from flows.deliver import deliver_here, pace_for
from flows.fan_out import FannedOut, check_fan_out, fan_out
from flows.run_names import phase_run
from flows.status import STATUS_HOOKS
from herald.config import PhaseName
from herald.delivery.sender import Delivered
from herald.delivery.transports import get_transport
from herald.models import DeliveryState
from herald.scaleout.senders import senders_markdown
from herald.settings import get_settings
from herald.unsubscribe.tokens import signing_keys
from tasks.common import preflight
from tasks.delivery import (
    approve_task,
    approved_task,
    check_templates_task,
    count_audience_task,
    ledger_counts_task,
    plan_ledger_task,
    publish_summary_task,
    reject_task,
    sample_renders_task,
)


class PhaseSummary(BaseModel):
    """What a run of a phase found and did."""

    campaign: str
    phase: PhaseName
    as_of: date
    dry_run: bool
    transport: str
    audience: list[dict[str, str | int]]
    audience_total: int
    templates_checked: int
    planned_new: int = 0
    plan_reused: bool = Field(
        default=False,
        description="Nothing the audience reads changed since the last plan: not run again.",
    )
    delivery: Delivered | None = Field(
        default=None, description="What sending did (None: a dry run, or not approved)."
    )
    refused: str | None = Field(default=None, description="Why the real send did not go.")
    waiting: int = Field(default=0, description="Planned rows left for a later window or cap.")
    timezone_fallbacks: int = Field(
        default=0, description="Recipients without a time zone, sent in their region's window."
    )
    ledger: dict[str, int] = Field(default_factory=dict)
    senders: int = Field(default=1, description="Sender runs that sent (1: this run).")
    fanned_out: FannedOut | None = Field(
        default=None, description="What each sender did, when several sent."
    )
    samples: list[dict[str, str]] = Field(default_factory=list)
    outbox: str | None = None

    @property
    def paused(self) -> str | None:
        """Why this run stopped before its end: not approved, or the phase paused."""
        return self.refused or (self.delivery.paused if self.delivery else None)


@flow(
    name="send-phase", flow_run_name=phase_run, on_completion=STATUS_HOOKS, on_failure=STATUS_HOOKS
)
def send_phase(
    phase: PhaseName,
    send: bool = False,
    as_of: date | None = None,
    max_batches: Annotated[int | None, Field(ge=1)] = None,
    window: bool = True,
    at: datetime | None = None,
    approval_timeout_seconds: Annotated[int, Field(gt=0)] = 24 * 3600,
    scheduled: bool = False,
    senders: Annotated[int | None, Field(ge=1, le=64)] = None,
) -> PhaseSummary:
    """Run one phase: dry (counts and samples) unless ``send``.

    Args:
        phase: preview, announcement, deprecation or sunset.
        send: Really send; without it the run is dry.
        as_of: Day to act as of (default today, UTC).
        max_batches: Stop after this many batches (the rest stays planned).
        window: Send only inside recipients' delivery windows, within the cap.
        at: The moment to act at (a rehearsal's clock).
        approval_timeout_seconds: How long a deployment run waits for approval.
        scheduled: Set by the phase's schedule: the run acts only in the phase's days
            (campaign.yaml), since a cron repeats every year.
        senders: Sender runs to start through the work pool (default sending.senders;
            1: this run sends). max_batches then counts per sender.
    """
    logger = get_run_logger()
    settings = get_settings()
    as_of = as_of or datetime.now(UTC).date()
    config = preflight("send-phase")  # a rejected telemetry batch stops the run here
    if scheduled and not config.campaign.phase_days_include(phase, as_of):
        logger.info(
            f"Phase {phase} is scheduled on its days in campaign.yaml; {as_of} is not one of "
            "them. Nothing to do."
        )
        return PhaseSummary(
            campaign=config.campaign.id,
            phase=phase,
            as_of=as_of,
            dry_run=not send,
            transport=settings.transport.value,
            audience=[],
            audience_total=0,
            templates_checked=0,
            refused=f"not one of {phase}'s scheduled days",
        )
    # The template check renders (CPU) while the audience is counted (the database): both
    # finish before anything else happens, and a broken template stops the run here, its
    # error first.
    check = check_templates_task.submit(config)
    try:
        counted = count_audience_task(config, phase, as_of)
    finally:
        checked = check.result()
    counts = counted.counts
    summary = PhaseSummary(
        campaign=config.campaign.id,
        phase=phase,
        as_of=as_of,
        dry_run=not send,
        transport=settings.transport.value,
        audience=[{"segment": c.segment, "role": c.role, "contacts": c.contacts} for c in counts],
        audience_total=sum(c.contacts for c in counts),
        templates_checked=checked,
    )
    if not send:
        output = settings.var_dir / "previews" / config.campaign.id / phase
        samples = sample_renders_task(config, phase, as_of, output)
        summary.samples = [
            {
                "segment": s.segment,
                "role": s.role,
                "contact": s.contact,
                "subject": s.subject,
                "html": str(s.html),
            }
            for s in samples
        ]
        _finish(summary)
        logger.info(
            f"Dry run of {phase}: {summary.audience_total} contacts in the audience; "
            f"{len(samples)} sample renders in {output}. Nothing was sent."
        )
        return summary

    transport = get_transport(settings, config)  # a missing key stops the run here
    signing_keys(settings)  # so does a missing unsubscribe key
    pace_for(settings, config)  # so does a missing or disabled global rate limit
    summary.senders = senders or config.campaign.sending.senders
    if summary.senders > 1:
        check_fan_out()  # and a missing server, sender deployment or worker
    summary.refused = _approval(config.campaign.id, phase, approval_timeout_seconds)
    if summary.refused:
        _finish(summary)
        return summary
    planned = plan_ledger_task(config, phase, as_of, counted)
    summary.planned_new, summary.plan_reused = planned.planned, planned.reused
    if summary.senders > 1:
        summary.fanned_out = fan_out(
            config, phase, senders=summary.senders, at=at, window=window, max_batches=max_batches
        )
        done = summary.delivery = summary.fanned_out.delivered
    else:
        done = summary.delivery = deliver_here(
            config, phase, phase, at=at, window=window, max_batches=max_batches
        )
    if transport.name == "outbox":
        summary.outbox = str(settings.var_dir / "outbox" / config.campaign.id / phase)
    _finish(summary)
    logger.info(
        f"Phase {phase}: planned {summary.planned_new} new, sent {done.accepted} in "
        f"{done.requests} request(s), failed {done.failed}, unknown {done.unknown}."
    )
    return summary


class PhaseApproval(RunInput):
    """An operator's answer to a paused real send (Prefect UI or `prefect flow-run resume`)."""

    approve: bool
    approver: str = Field(min_length=1)
    note: str = ""


def _approval(campaign: str, phase: PhaseName, timeout: int) -> str | None:
    """Make sure a real send is approved; None when it may go, else why it may not.

    An approval recorded beforehand (`herald approve PHASE`) lets a scheduled run send at
    once. Otherwise a run from a deployment pauses and waits for a :class:`PhaseApproval`;
    a run started by hand with ``--send`` is the operator's approval, recorded as such.
    """
    if approved_task(campaign, phase):
        return None
    if deployment.get_id() is None:
        approve_task(campaign, phase, "started by hand with --send")
        return None
    get_run_logger().warning(
        f"Phase {phase} waits for approval: answer this paused run with approve/approver, "
        f"or run `herald approve {phase}` before the next scheduled run."
    )
    answer = pause_flow_run(
        wait_for_input=PhaseApproval,
        timeout=timeout,
        key=f"approve-{phase}",
    )
    if not answer.approve:
        reject_task(campaign, phase, answer.note, answer.approver)
        return f"not approved by {answer.approver}: {answer.note or 'no reason given'}"
    approve_task(campaign, phase, answer.note, answer.approver)
    return None


def _finish(summary: PhaseSummary) -> None:
    counts = ledger_counts_task(summary.campaign, summary.phase)
    summary.ledger, summary.timezone_fallbacks = counts.states, counts.timezone_fallbacks
    if not (summary.dry_run or summary.paused):
        summary.waiting = summary.ledger[DeliveryState.PLANNED.value]
    publish_summary_task(summary.phase, _markdown(summary))


def _markdown(summary: PhaseSummary) -> str:
    mode = "dry run: nothing was sent" if summary.dry_run else f"sent via {summary.transport}"
    lines = [
        f"# Phase `{summary.phase}` of `{summary.campaign}` as of {summary.as_of} ({mode})",
        "",
        f"Templates checked: {summary.templates_checked} variants.",
        "",
        "| segment | role | contacts |",
        "|---|---|---:|",
        *(f"| {a['segment']} | {a['role']} | {a['contacts']} |" for a in summary.audience),
        f"| **total** | | **{summary.audience_total}** |",
        "",
        "| ledger state | rows |",
        "|---|---:|",
        *(f"| {state} | {count} |" for state, count in summary.ledger.items()),
    ]
    if not summary.dry_run:
        done = summary.delivery or Delivered(message=summary.phase)
        lines += [
            "",
            (
                "This run: the plan was current (nothing its audience reads changed), "
                if summary.plan_reused
                else f"This run: planned {summary.planned_new} new rows, "
            )
            + f"{done.batches} batches, "
            f"{done.requests} requests; accepted {done.accepted}, failed "
            f"{done.failed}, unknown {done.unknown}.",
        ]
        if summary.paused:
            lines += ["", f"**Paused:** {summary.paused}"]
        if summary.fanned_out:
            fanned = summary.fanned_out
            lines += [
                "",
                f"## {summary.senders} senders",
                "",
                senders_markdown(fanned.senders, now=datetime.now(UTC)),
                "",
                "Sender runs: " + ", ".join(f"{name} {end}" for name, end in fanned.runs.items()),
            ]
            if fanned.found_dead:
                lines += [
                    "",
                    f"{fanned.found_dead} sender(s) died: their unrequested rows were planned "
                    f"again ({fanned.swept} sent by the phase's run at the end), their requests "
                    "in flight are unknown until SendGrid's events or a person settle them.",
                ]
    if summary.timezone_fallbacks:
        lines += [
            "",
            f"{summary.timezone_fallbacks} recipient(s) have no time zone: their account "
            "region's delivery window is used.",
        ]
    if summary.samples:
        lines += ["", "| sample | subject |", "|---|---|"]
        lines += [f"| {s['segment']} / {s['role']} | {s['subject']} |" for s in summary.samples]
    return "\n".join(lines)


if __name__ == "__main__":
    send_phase(phase="preview")
