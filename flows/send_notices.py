"""Flow: the daily sunset notices (phase 4), each account on its own segment's deadline.

An account that has migrated gets no more notices; if ``notices.thank_you`` is on, each of
its contacts who was mailed by the campaign gets one thank-you with next steps instead.

As of a day, every notice that is due and not yet superseded (see :mod:`herald.delivery.calendar`)
is planned for the contacts of its segment's accounts that have not migrated (the sunset
phase's audience), then everything planned for any notice is sent: inside recipients'
windows, within the frequency cap (critical notices aside). A notice missed while Herald
was down is planned by the next run as long as the next notice is not yet due; a notice a
later one superseded before it could go expires unsent.

Each notice's ledger name carries its deadline (``sunset-t30@2027-09-30``). When a segment's
sunset date moves in config, the old date's notices still waiting expire, the new date's
notices are planned on their own days, and a contact who already had a notice for an
earlier date gets one "deadline extended" message. Dry unless ``send``.
"""

from __future__ import annotations

from datetime import UTC, date, datetime

from prefect import flow, get_run_logger
from pydantic import BaseModel, Field

from flows.deliver import deliver_here
from flows.run_names import notices_run
from flows.status import STATUS_HOOKS
from herald.delivery.calendar import due_notices, parse_message
from herald.delivery.transports import get_transport
from herald.settings import get_settings
from herald.unsubscribe.tokens import signing_keys
from tasks.common import preflight
from tasks.delivery import (
    check_templates_task,
    follow_deadlines_task,
    never_sent_task,
    plan_notices_task,
    plan_thank_you_task,
    planned_notices_task,
)


class NoticeLine(BaseModel):
    """One due notice of one segment."""

    message: str
    segment: str
    due: date
    sends_on: date
    until: date
    planned_new: int = 0


class NoticeSummary(BaseModel):
    """What a run of the notices found and did."""

    as_of: date
    dry_run: bool
    due: list[NoticeLine]
    sent: dict[str, int] = Field(default_factory=dict)
    expired: dict[str, int] = Field(default_factory=dict)
    failed: int = 0
    unknown: int = 0
    waiting: int = 0
    paused: str | None = None
    thank_you_planned: int = 0
    extended_planned: dict[str, int] = Field(default_factory=dict)
    expired_for_moved_deadline: int = 0
    never_sent: dict[str, int] = Field(
        default_factory=dict,
        description="Notice rows that expired unsent with no later notice to supersede them "
        "(over the whole campaign): each is somebody who did not get a deadline notice.",
    )


@flow(
    name="send-notices",
    flow_run_name=notices_run,
    on_completion=STATUS_HOOKS,
    on_failure=STATUS_HOOKS,
)
def send_notices(
    send: bool = False,
    as_of: date | None = None,
    window: bool = True,
    at: datetime | None = None,
) -> NoticeSummary:
    """Plan the notices due as of a day and send every planned notice (dry unless ``send``).

    Args:
        send: Really send; without it the run is dry.
        as_of: Day to act as of (default today).
        window: Only inside recipients' delivery windows.
        at: The moment to act at (a rehearsal's clock).
    """
    logger = get_run_logger()
    as_of = as_of or datetime.now(UTC).date()
    config = preflight("send-notices")  # a rejected telemetry batch stops the run here
    check_templates_task(config)
    campaign = config.campaign
    due = due_notices(campaign, as_of)
    summary = NoticeSummary(
        as_of=as_of,
        dry_run=not send,
        due=[
            NoticeLine(
                message=n.message,
                segment=n.segment,
                due=n.due,
                sends_on=n.sends_on,
                until=n.until,
            )
            for n in due
        ],
    )
    if not send:
        logger.info(f"Dry run: {len(due)} notice(s) due as of {as_of}. Nothing was sent.")
        return summary
    get_transport(get_settings(), config)  # a missing key stops the run here
    signing_keys(get_settings())  # so does a missing unsubscribe key
    moved = follow_deadlines_task(config, as_of)
    summary.expired_for_moved_deadline = moved.expired
    summary.extended_planned = moved.extended
    for line, (_, added) in zip(summary.due, plan_notices_task(config, as_of), strict=True):
        line.planned_new = added
    if campaign.notices.thank_you:
        summary.thank_you_planned = plan_thank_you_task(config, as_of)
    for message in planned_notices_task(config):
        name = parse_message(message)
        done = deliver_here(config, name.kind, message, at=at, window=window)
        summary.sent[message] = done.accepted
        summary.expired[message] = done.expired
        summary.failed += done.failed
        summary.unknown += done.unknown
        if done.paused:
            summary.paused = done.paused
            break
    summary.waiting = sum(planned_notices_task(config).values())
    summary.never_sent = never_sent_task(config)
    for message, count in summary.never_sent.items():
        logger.error(
            f"{message}: {count} contact(s) never got this notice and nothing later superseded "
            "it (it expired unsent; see herald phase status / the ledger)"
        )
    logger.info(
        f"Notices as of {as_of}: {len(due)} due; sent "
        + (", ".join(f"{m} {n}" for m, n in summary.sent.items()) or "none")
        + f"; {summary.waiting} waiting for a window or the cap."
    )
    return summary


if __name__ == "__main__":
    send_notices()
