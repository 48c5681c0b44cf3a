"""The campaign calendar: when each message is due, and when each recipient may receive it.

- A broadcast phase is due on its date in ``campaign.yaml``.
- A sunset notice for a segment is due ``offset`` days before the segment's sunset date. A
  critical notice (``notices.critical_offsets``, e.g. T-1 and the sunset day) goes on its due
  day, inside the window's hours whatever the weekday or holiday; any other goes on the last
  *open* day on or before it (a window weekday, not a holiday or blackout date): early beats
  late for a deadline. Each stays valid until the next one goes (the sunset-day notice:
  until the end of that day); ``config check`` refuses a calendar where a notice has no day
  of its own. A notice missed while Herald was down is planned by the next run inside that
  validity, and never after: a later notice has superseded it.
- A notice's ledger name carries its deadline (``sunset-t30@2027-09-30``): moving a deadline
  in config makes new notices (sent again on the new dates), and the old deadline's notices
  still waiting expire. A contact who already had a notice for an earlier deadline gets one
  ``deadline-extended@<new date>`` message (if ``notices.deadline_extended``).
- A message lands only inside the delivery window (e.g. Tue-Thu 09:00-17:00) of the
  recipient's time zone: the contact's own, else their account region's, else the default.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from functools import cache
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from sqlalchemy import ColumnElement, and_, case, func, literal

from herald.config import (
    DEADLINE_EXTENDED,
    PHASES,
    THANK_YOU,
    CampaignConfig,
    DeliveryWindow,
    MessageKind,
)

NOTICE_PREFIX = "sunset-t"
THANK_YOU_MESSAGE = "thank-you"
EXTENDED_PREFIX = "deadline-extended"


@cache
def zone(name: str) -> ZoneInfo | None:
    """The IANA zone, or None when the name is not one."""
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def _hm(value: str) -> time:
    hours, minutes = value.split(":")
    return time(int(hours), int(minutes))


def local_time(window: DeliveryWindow, timezone: str | None, at: datetime) -> datetime:
    """``at`` in the recipient's time zone (the window's default for an unknown one)."""
    return at.astimezone(zone(timezone or "") or ZoneInfo(window.default_timezone))


def in_window(
    window: DeliveryWindow, timezone: str, at: datetime, *, any_day: bool = False
) -> bool:
    """Whether ``at`` falls inside the window in ``timezone``: an open day (a window weekday,
    no holiday or blackout) between start and end; ``any_day``: the hours only (critical
    notices)."""
    local = local_time(window, timezone, at)
    if not (any_day or window.is_open_day(local.date())):
        return False
    return _hm(window.start) <= local.time() < _hm(window.end)


def open_zones(
    window: DeliveryWindow, zones: Iterable[str], at: datetime, *, any_day: bool = False
) -> list[str]:
    """The zones among ``zones`` whose window is open at ``at`` (``any_day``: hours only)."""
    return sorted(z for z in set(zones) if in_window(window, z, at, any_day=any_day))


def openings(
    window: DeliveryWindow,
    zones: Iterable[str],
    start: datetime,
    end: datetime,
    *,
    any_day: bool = False,
) -> list[datetime]:
    """Every moment in [start, end) at which some zone's window opens (UTC, sorted); on open
    days only, unless ``any_day`` (the hours of every day: critical notices)."""
    moments: set[datetime] = set()
    opening = _hm(window.start)
    for name in set(zones):
        tz = zone(name) or ZoneInfo(window.default_timezone)
        day = start.astimezone(tz).date() - timedelta(days=1)
        while True:
            local = datetime.combine(day, opening, tzinfo=tz)
            moment = local.astimezone(UTC)
            if moment >= end:
                break
            if moment >= start and (any_day or window.is_open_day(day)):
                moments.add(moment)
            day += timedelta(days=1)
    return sorted(moments)


def timezone_expression(
    window: DeliveryWindow, contact_tz: ColumnElement[str], region: ColumnElement[str]
) -> ColumnElement[str]:
    """SQL: the contact's time zone if set, else their region's, else the default."""
    default = literal(window.default_timezone)
    by_region: ColumnElement[str] = default
    if window.region_timezones:
        by_region = case(
            *((region == name, literal(tz)) for name, tz in window.region_timezones.items()),
            else_=default,
        )
    return case(
        (and_(contact_tz.isnot(None), func.length(contact_tz) > 0), contact_tz),
        else_=by_region,
    )


@dataclass(frozen=True)
class Notice:
    """One sunset notice of one segment: when it is due, the day it goes, and until when it
    may still go."""

    segment: str
    offset: int
    due: date
    sends_on: date  # the due day, or the last open day before it (see the module's rules)
    until: date  # exclusive
    deadline: date
    critical: bool = False

    @property
    def message(self) -> str:
        """The ledger's message name, e.g. ``sunset-t30@2027-09-30``."""
        return notice_message(self.offset, self.deadline)


def notice_message(offset: int, deadline: date) -> str:
    """The ledger's name of the notice ``offset`` days before ``deadline``."""
    return f"{NOTICE_PREFIX}{offset}@{deadline.isoformat()}"


def is_notice(name: ColumnElement[str]) -> ColumnElement[bool]:
    """SQL: the ledger message ``name`` is a notice (made by :func:`notice_message`)."""
    return name.like(f"{NOTICE_PREFIX}%@%")


def notice_deadline(name: ColumnElement[str]) -> ColumnElement[str]:
    """SQL: the deadline a notice's ledger ``name`` ends in, as ISO text (comparable as
    text: ISO dates sort as they read)."""
    return func.substr(name, func.length(name) - 9)


def extended_message(deadline: date) -> str:
    """The ledger's name of the "deadline extended" message for the new ``deadline``."""
    return f"{EXTENDED_PREFIX}@{deadline.isoformat()}"


@dataclass(frozen=True)
class MessageName:
    """What a ledger message name stands for: its kind and, for a notice, its offset and
    deadline (a "deadline extended" message: the new deadline)."""

    kind: MessageKind
    offset: int | None = None
    deadline: date | None = None


def parse_message(message: str) -> MessageName:
    """Read a ledger message name back (raises ValueError for one Herald does not make)."""
    if message == THANK_YOU_MESSAGE:
        return MessageName(THANK_YOU)
    if message in PHASES:
        return MessageName(message)
    name, _, deadline = message.partition("@")
    if name.startswith(NOTICE_PREFIX) and deadline:
        offset = name.removeprefix(NOTICE_PREFIX)
        if offset.isdigit():
            return MessageName("sunset", int(offset), date.fromisoformat(deadline))
    if name == EXTENDED_PREFIX and deadline:
        return MessageName(DEADLINE_EXTENDED, None, date.fromisoformat(deadline))
    raise ValueError(f"not a message name Herald makes: {message!r}")


def notices(campaign: CampaignConfig) -> list[Notice]:
    """Every sunset notice of every segment, in the order they go (config validation has
    made sure each has a day of its own)."""
    out = [
        Notice(
            slot.segment,
            slot.offset,
            slot.due,
            slot.sends_on or slot.due,
            slot.until,
            campaign.sunset[slot.segment],
            slot.critical,
        )
        for slot in campaign.notice_schedule()
    ]
    return sorted(out, key=lambda n: (n.sends_on, n.segment, -n.offset))


def due_notices(campaign: CampaignConfig, as_of: date) -> list[Notice]:
    """The notices a run on ``as_of`` plans: going on or before it and not yet superseded."""
    return [n for n in notices(campaign) if n.sends_on <= as_of < n.until]


def start_of(day: date) -> datetime:
    """The first instant of a calendar day, UTC."""
    return datetime.combine(day, time(0), tzinfo=UTC)


@dataclass(frozen=True)
class Entry:
    """One thing the calendar does on a day."""

    day: date
    message: str
    phase: str
    segments: list[str]
    until: date | None = None
    due: date | None = None  # a notice going before its due day (a closed day): that day


def calendar(campaign: CampaignConfig, start: date, end: date) -> list[Entry]:
    """Phases and notices due in [start, end], in date order."""
    entries = [
        Entry(
            getattr(campaign.phases, phase), phase, phase, list(campaign.audiences[phase].segments)
        )
        for phase in ("preview", "announcement", "deprecation")
    ]
    entries += [
        Entry(
            n.sends_on,
            n.message,
            "sunset",
            [n.segment],
            n.until,
            n.due if n.due != n.sends_on else None,
        )
        for n in notices(campaign)
    ]
    return sorted((e for e in entries if start <= e.day <= end), key=lambda e: (e.day, e.message))
