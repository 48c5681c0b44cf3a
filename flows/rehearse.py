"""Flow: rehearse the whole campaign calendar on a simulated clock, in one flow run.

Every simulated day on which something is due (a phase's week, a notice's due day, rows
waiting for a window, the day Herald comes back from a downtime) runs what the deployments
would run that day (planning, then at each window opening the delivery of every message due
there: the ``deliver`` flow's steps as plain calls, one task run for the day's sends), then
synthetic telemetry answers. Every Monday the weekly report covers
the week up to Sunday and goes to leadership through the outbox. Sends go to the outbox only.
"""

from __future__ import annotations

from datetime import date, timedelta

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.run_names import rehearsal_run
from flows.status import STATUS_HOOKS
from flows.weekly_report import produce_report
from herald.delivery.planning import NoticeSent
from herald.sandbox.rehearsal import Behaviour, Day, Draws, due_today, waiting
from herald.settings import get_settings
from tasks.common import database, preflight
from tasks.delivery import check_templates_task
from tasks.rehearsal import accepted_rows_task, plan_day_task, send_day_task, telemetry_day_task
from tasks.segmentation import assign_segments_task

REPORT_WEEKDAY = 0  # Monday, as the weekly-report deployment


class RehearsalSummary(BaseModel):
    """What the rehearsal did, day by day."""

    start: date
    end: date
    days_visited: int
    sent: dict[str, int] = Field(description="Messages sent by this run, per message.")
    accepted: dict[str, int] = Field(
        default_factory=dict,
        description="Every message the campaign's ledger holds as sent (this run and earlier).",
    )
    notices: list[NoticeSent] = Field(
        default_factory=list, description="Each notice by segment: how many went, and when."
    )
    never_sent: dict[str, int] = Field(
        default_factory=dict,
        description="Notices that expired unsent with nothing later to supersede them.",
    )
    migrated: int
    events: int
    outbox: str
    ledger: str
    reports: list[str] = Field(default_factory=list)


@flow(
    name="rehearse",
    flow_run_name=rehearsal_run,
    on_completion=STATUS_HOOKS,
    on_failure=STATUS_HOOKS,
)
def rehearse(
    start: date,
    end: date,
    down_from: date | None = None,
    down_to: date | None = None,
    seed: int = 7,
    weekly_reports: bool = True,
) -> RehearsalSummary:
    """Run the calendar from ``start`` to ``end`` on a simulated clock, against the outbox.

    Args:
        start: First simulated day.
        end: Last simulated day.
        down_from: Herald is down from this day...
        down_to: ...to this day, inclusive.
        seed: Seed of the synthetic telemetry.
        weekly_reports: Produce (and send to the outbox) the report every Monday.
    """
    logger = get_run_logger()
    settings = get_settings()
    config = preflight("rehearse")
    check_templates_task(config)
    engine = database()
    draw = Draws(seed)
    behaviour = Behaviour()
    assign_segments_task(config.segments, start)

    def down(day: date) -> bool:
        return bool(down_from and down_to and down_from <= day <= down_to)

    days: list[Day] = []
    day = start
    back = down_to + timedelta(days=1) if down_to else None
    reports: list[str] = []
    while day <= end:
        report_day = weekly_reports and day.weekday() == REPORT_WEEKDAY and day > start
        if down(day) or not (
            due_today(config, day)
            or day == back
            or report_day
            or waiting(engine, config.campaign.id)
        ):
            day += timedelta(days=1)
            continue
        if report_day:  # Monday 08:00: the week up to Sunday, before the day's sends
            made = produce_report(config, day - timedelta(days=1), send=True, rehearsal=True)
            reports.append(str(made.path))
        today = Day(day=day, planned=plan_day_task(config, day))
        today.sent = send_day_task(config, day)
        today.events, today.migrated = telemetry_day_task(config, day, behaviour, draw)
        if today.sent:
            logger.info(
                f"{day}: sent "
                + ", ".join(f"{m} {n}" for m, n in sorted(today.sent.items()))
                + f"; {today.migrated} account(s) migrated"
            )
        days.append(today)
        day += timedelta(days=1)
    sent: dict[str, int] = {}
    for visited in days:
        for message, count in visited.sent.items():
            sent[message] = sent.get(message, 0) + count
    accepted, notices, never_sent = accepted_rows_task(config)
    return RehearsalSummary(
        start=start,
        end=end,
        days_visited=len(days),
        sent=sent,
        accepted=accepted,
        notices=notices,
        never_sent=never_sent,
        migrated=sum(d.migrated for d in days),
        events=sum(d.events for d in days),
        outbox=str(settings.var_dir / "outbox" / config.campaign.id),
        ledger=settings.effective_database_url,
        reports=reports,
    )
