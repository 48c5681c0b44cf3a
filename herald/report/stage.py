"""Where the campaign stands on a report's day: not started, running (which phase, and what
comes next), or closed (after the last sunset deadline).

"Not started" means nothing has been sent by the end of the day; the report then shows what
is scheduled and no chart. The upcoming dates are the broadcast phases, each segment's
notices (on the day they go, :meth:`CampaignConfig.notice_schedule`) and the sunset
deadlines, all from ``campaign.yaml``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date, timedelta

from sqlalchemy import Connection, func, select

from herald.config import HeraldConfig
from herald.config.campaign import NoticeSlot
from herald.delivery.calendar import start_of
from herald.models import DELIVERY, DeliveryState

NOT_STARTED = "not started"
RUNNING = "running"
CLOSED = "closed"

PHASE_LABELS = {
    "preview": "Early-adopter preview",
    "announcement": "Broad announcement",
    "deprecation": "Deprecation timeline",
    "sunset": "Sunset notices",
}
UPCOMING = 5


@dataclass(frozen=True)
class Upcoming:
    """One scheduled date."""

    day: date
    what: str


@dataclass(frozen=True)
class Stage:
    """The campaign on the report's day."""

    state: str
    phase: str | None  # the phase under way (label), None before the first
    upcoming: list[Upcoming] = field(default_factory=list)
    first_sent: date | None = None
    last_deadline: date | None = None

    @property
    def started(self) -> bool:
        """Whether anything has been sent."""
        return self.state != NOT_STARTED


def _segment(name: str) -> str:
    return name.replace("_", " ")


def schedule(config: HeraldConfig, slots: list[NoticeSlot]) -> list[Upcoming]:
    """Every dated step of the campaign, in order (``slots``: its notice schedule)."""
    campaign = config.campaign
    steps = [
        Upcoming(getattr(campaign.phases, phase), PHASE_LABELS[phase])
        for phase in ("preview", "announcement", "deprecation")
    ]
    for slot in slots:
        if slot.sends_on is None:
            continue
        when = (
            "on the deadline"
            if slot.offset == 0
            else f"{slot.offset} day{'s' if slot.offset != 1 else ''} before"
        )
        steps.append(Upcoming(slot.sends_on, f"Sunset notice to {_segment(slot.segment)} ({when})"))
    steps += [
        Upcoming(day, f"Sunset deadline of {_segment(segment)}")
        for segment, day in campaign.sunset.items()
    ]
    return sorted(steps, key=lambda step: (step.day, step.what))


def stage(conn: Connection, *, config: HeraldConfig, as_of: date) -> Stage:
    """The campaign's stage at the end of ``as_of`` (UTC)."""
    campaign = config.campaign
    first = conn.execute(
        select(func.min(DELIVERY.c.sent_at)).where(
            DELIVERY.c.campaign == campaign.id,
            DELIVERY.c.state == DeliveryState.ACCEPTED.value,
            DELIVERY.c.sent_at < start_of(as_of + timedelta(days=1)),
        )
    ).scalar()
    first_sent = None if first is None else first.date()
    last_deadline = max(campaign.sunset.values())
    slots = campaign.notice_schedule()
    upcoming = [step for step in schedule(config, slots) if step.day > as_of][:UPCOMING]
    if first_sent is None:
        return Stage(NOT_STARTED, None, upcoming, None, last_deadline)
    if as_of >= last_deadline:
        return Stage(CLOSED, None, [], first_sent, last_deadline)
    notices = [slot.sends_on for slot in slots if slot.sends_on is not None]
    phase = "preview"
    for name in ("announcement", "deprecation"):
        if getattr(campaign.phases, name) <= as_of:
            phase = name
    if notices and min(notices) <= as_of:
        phase = "sunset"
    return Stage(RUNNING, PHASE_LABELS[phase], upcoming, first_sent, last_deadline)
