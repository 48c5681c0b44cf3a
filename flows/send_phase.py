"""Flow: one communication phase (preview, announcement, deprecation, sunset), dry by default.

A dry run (the default) checks the templates, counts the audience by segment and role and
writes one sample render per segment and role; nothing is planned or sent. ``send=True``
then plans the ledger in one statement, settles what dead senders left, and sends batch by
batch (one task run per batch of up to 1,000 recipients) until nothing is planned, the
phase is paused (by an operator or the circuit breaker) or ``max_batches`` is reached.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from prefect import flow, get_run_logger
from prefect.flow_runs import pause_flow_run
from prefect.input import RunInput
from prefect.runtime import deployment
from pydantic import BaseModel, Field

from herald import audit
from herald.config import PhaseName
from herald.delivery import ledger
from herald.delivery.transports import get_transport
from herald.models import DeliveryState
from herald.settings import get_settings
from herald.telemetry.health import require_healthy
from tasks.common import database, load_campaign_config
from tasks.delivery import (
    check_templates_task,
    count_audience_task,
    deliver,
    plan_ledger_task,
    publish_summary_task,
    sample_renders_task,
)


class PhaseRun(BaseModel):
    """Parameters of one run of a phase."""

    phase: PhaseName
    as_of: date | None = Field(default=None, description="Day to act as of (default today, UTC).")
    send: bool = Field(default=False, description="Really send; without it the run is dry.")
    max_batches: int | None = Field(
        default=None, ge=1, description="Stop after this many batches (the rest stays planned)."
    )
    window: bool = Field(
        default=True,
        description="Send only inside recipients' delivery windows, within the frequency cap.",
    )
    at: datetime | None = Field(
        default=None, description="The moment to act at (a rehearsal's simulated clock)."
    )
    approval_timeout_seconds: int = Field(
        default=24 * 3600, gt=0, description="How long a deployment run waits for approval."
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
    suppressed_now: dict[str, int] = Field(default_factory=dict)
    recovered_unknown: int = 0
    recovered_released: int = 0
    expired: int = 0
    waiting: int = Field(default=0, description="Planned rows left for a later window or cap.")
    timezone_fallbacks: int = Field(
        default=0, description="Recipients without a time zone, sent in their region's window."
    )
    batches: int = 0
    requests: int = 0
    accepted: int = 0
    failed: int = 0
    unknown: int = 0
    paused: str | None = None
    ledger: dict[str, int] = Field(default_factory=dict)
    samples: list[dict[str, str]] = Field(default_factory=list)
    outbox: str | None = None


@flow(name="send-phase")
def send_phase(params: PhaseRun) -> PhaseSummary:
    """Run one phase: dry (counts and samples) unless ``params.send``."""
    logger = get_run_logger()
    settings = get_settings()
    phase = params.phase
    as_of = params.as_of or datetime.now(UTC).date()
    config = load_campaign_config()
    require_healthy(database(), config, "send-phase")  # a rejected telemetry batch stops the run
    checked = check_templates_task(config)  # a broken template stops the run here
    counts = count_audience_task(config, phase, as_of)
    summary = PhaseSummary(
        campaign=config.campaign.id,
        phase=phase,
        as_of=as_of,
        dry_run=not params.send,
        transport=settings.transport.value,
        audience=[{"segment": c.segment, "role": c.role, "contacts": c.contacts} for c in counts],
        audience_total=sum(c.contacts for c in counts),
        templates_checked=checked,
    )
    if not params.send:
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
    refused = _approval(config.campaign.id, phase, params)
    if refused:
        summary.paused = refused
        _finish(summary)
        return summary
    fixed = params.at

    def clock() -> datetime:
        return fixed if fixed is not None else datetime.now(UTC)

    summary.planned_new = plan_ledger_task(config, phase, as_of).planned
    done = deliver(
        config,
        phase,
        transport,
        clock=clock,
        window=params.window,
        max_batches=params.max_batches,
    )
    summary.recovered_unknown = done.recovered_unknown
    summary.recovered_released = done.recovered_released
    summary.suppressed_now = done.suppressed_now
    summary.expired = done.expired
    summary.batches, summary.requests = done.batches, done.requests
    summary.accepted, summary.failed, summary.unknown = done.accepted, done.failed, done.unknown
    summary.paused = done.paused
    if transport.name == "outbox":
        summary.outbox = str(settings.var_dir / "outbox" / config.campaign.id / phase)
    _finish(summary)
    logger.info(
        f"Phase {phase}: planned {summary.planned_new} new, sent {summary.accepted} in "
        f"{summary.requests} request(s), failed {summary.failed}, unknown {summary.unknown}."
    )
    return summary


class PhaseApproval(RunInput):
    """An operator's answer to a paused real send (Prefect UI or `prefect flow-run resume`)."""

    approve: bool
    approver: str = Field(min_length=1)
    note: str = ""


def _approval(campaign: str, phase: PhaseName, params: PhaseRun) -> str | None:
    """Make sure a real send is approved; None when it may go, else why it may not.

    An approval recorded beforehand (`herald approve PHASE`) lets a scheduled run send at
    once. Otherwise a run from a deployment pauses and waits for a :class:`PhaseApproval`;
    a run started by hand with ``--send`` is the operator's approval, recorded as such.
    """
    engine = database()
    with engine.connect() as conn:
        if ledger.approval(conn, campaign, phase) is not None:
            return None
    if deployment.get_id() is None:
        ledger.approve(engine, campaign, phase, "started by hand with --send")
        return None
    get_run_logger().warning(
        f"Phase {phase} waits for approval: answer this paused run with approve/approver, "
        f"or run `herald approve {phase}` before the next scheduled run."
    )
    answer = pause_flow_run(
        wait_for_input=PhaseApproval,
        timeout=params.approval_timeout_seconds,
        key=f"approve-{phase}",
    )
    if not answer.approve:
        with engine.begin() as conn:
            audit.record(
                conn,
                "phase.rejected",
                campaign=campaign,
                phase=phase,
                detail={"note": answer.note},
                who=answer.approver,
            )
        return f"not approved by {answer.approver}: {answer.note or 'no reason given'}"
    ledger.approve(engine, campaign, phase, answer.note, who=answer.approver)
    return None


def _finish(summary: PhaseSummary) -> None:
    with database().connect() as conn:
        summary.ledger = ledger.state_counts(conn, summary.campaign, summary.phase)
        if not (summary.dry_run or summary.paused):
            summary.waiting = summary.ledger[DeliveryState.PLANNED.value]
        summary.timezone_fallbacks = ledger.timezone_fallbacks(
            conn, summary.campaign, summary.phase
        )
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
        lines += [
            "",
            f"This run: planned {summary.planned_new} new rows, {summary.batches} batches, "
            f"{summary.requests} requests; accepted {summary.accepted}, failed "
            f"{summary.failed}, unknown {summary.unknown}.",
        ]
        if summary.paused:
            lines += ["", f"**Paused:** {summary.paused}"]
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
    send_phase(PhaseRun(phase="preview"))
