"""The campaign on one screen: every phase and notice with its ledger counts, what waits and
why, when it goes next, whether it is approved or paused, telemetry health, and what needs a
person. Senders that have not finished are listed with what they did so far and whether
they still look alive; one that looks dead needs a person (a rerun settles what it left).

:func:`campaign_status` reads it in a handful of grouped queries (never row by row), so it
answers in the same time for a thousand rows or a million. ``herald status`` prints it (or
its JSON); every flow run publishes it as the Prefect artifact ``herald-status``
(:func:`status_markdown`), so the Prefect UI is the dashboard.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from typing import Any
from zoneinfo import ZoneInfo

from sqlalchemy import Connection, and_, func, or_, select

from herald.config import PHASES, SOURCES, HeraldConfig
from herald.delivery.calendar import notices, open_zones, openings, parse_message
from herald.delivery.controls import CAMPAIGN_WIDE, approval, paused_reason
from herald.delivery.recovery import looks_alive
from herald.models import (
    DELIVERY,
    WEBHOOK_EVENT_FAILURE,
    DeliveryState,
    as_utc,
)
from herald.scaleout.senders import SenderStats, sender_stats, short_id
from herald.telemetry.health import source_status

BROADCAST_PHASES = ("preview", "announcement", "deprecation", "sunset")
# How far ahead the next opening of a recipient's delivery window is looked for.
LOOKAHEAD = timedelta(days=21)


@dataclass
class Waiting:
    """Planned rows not sent yet, by why: not due yet, outside their recipients' delivery
    window now, held back by the frequency cap, or ready for the next run."""

    not_due: int = 0
    window: int = 0
    cap: int = 0
    ready: int = 0

    @property
    def total(self) -> int:
        """Every planned row."""
        return self.not_due + self.window + self.cap + self.ready


@dataclass
class MessageStatus:
    """One phase, or one notice of one segment: its ledger rows by state and what comes next."""

    message: str
    kind: str
    segment: str | None = None
    deadline: date | None = None
    offset: int | None = None
    starts: date | None = None  # the day it is due (a phase's date, a notice's send day)
    rows: int = 0
    states: dict[str, int] = field(default_factory=lambda: {s.value: 0 for s in DeliveryState})
    waiting: Waiting = field(default_factory=Waiting)
    next_due: datetime | None = None
    paused: str | None = None
    approved_by: str | None = None
    approved_at: datetime | None = None
    needs_approval: bool = False

    @property
    def label(self) -> str:
        """How a person reads the line: ``announcement``, ``T-30 standard (2027-09-30)``."""
        if self.offset is not None:
            return f"T-{self.offset} {self.segment} ({self.deadline})"
        return self.message if self.segment is None else f"{self.message} {self.segment}"


@dataclass(frozen=True)
class TelemetryStatus:
    """A telemetry source's last batch."""

    source: str
    status: str
    received_at: datetime
    healthy: bool
    problem: str | None


@dataclass(frozen=True)
class LiveSender:
    """A sender of the campaign that has not finished, and whether it still looks alive."""

    stats: SenderStats
    alive: bool
    heartbeat_age: float  # seconds since its last heartbeat, at the status's ``now``

    def as_json(self) -> dict[str, Any]:
        """A plain structure (moments as ISO-8601 text, the rate rounded)."""
        s = self.stats

        def iso(moment: datetime | None) -> str | None:
            return moment.isoformat() if moment else None

        return {
            "worker_id": s.worker_id,
            "message": s.message,
            "host": s.host,
            "pid": s.pid,
            "flow_run_id": s.flow_run_id,
            "transport": s.transport,
            "started_at": iso(s.started_at),
            "heartbeat_at": iso(s.heartbeat_at),
            "heartbeat_age_seconds": round(self.heartbeat_age, 1),
            "batches": s.batches,
            "requests": s.requests,
            "accepted": s.accepted,
            "failed": s.failed,
            "unknown": s.unknown,
            "in_flight": s.in_flight,
            "first_request_at": iso(s.first_request_at),
            "last_answer_at": iso(s.last_answer_at),
            "seconds": round(s.seconds, 1),
            "rate": round(s.rate, 2),
            "alive": self.alive,
        }


@dataclass
class CampaignStatus:
    """The whole campaign at ``now``."""

    campaign: str
    name: str
    now: datetime
    today: date  # in the campaign's time zone
    paused: str | None
    messages: list[MessageStatus]
    telemetry: list[TelemetryStatus]
    webhook_failures: int
    attention: list[str]
    senders: list[LiveSender] = field(default_factory=list)

    @property
    def ledger_rows(self) -> int:
        """Every ledger row of the campaign (the messages' rows add up to it)."""
        return sum(m.rows for m in self.messages)

    def totals(self) -> dict[str, int]:
        """Rows by state over the whole campaign."""
        out = {s.value: 0 for s in DeliveryState}
        for line in self.messages:
            for state, count in line.states.items():
                out[state] += count
        return out

    def as_json(self) -> dict[str, Any]:
        """A plain structure for ``--json`` (dates and moments as ISO-8601 text)."""

        def plain(value: Any) -> Any:
            if isinstance(value, datetime | date):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        messages = []
        for line in self.messages:
            item = asdict(line)
            item["label"] = line.label
            item["waiting"]["total"] = line.waiting.total
            messages.append(plain(item))
        return {
            "campaign": self.campaign,
            "name": self.name,
            "now": self.now.isoformat(),
            "today": self.today.isoformat(),
            "paused": self.paused,
            "ledger_rows": self.ledger_rows,
            "totals": self.totals(),
            "messages": messages,
            "telemetry": [plain(asdict(t)) for t in self.telemetry],
            "webhook_failures": self.webhook_failures,
            "senders": [sender.as_json() for sender in self.senders],
            "needs_attention": self.attention,
        }


def campaign_status(conn: Connection, *, config: HeraldConfig, now: datetime) -> CampaignStatus:
    """Everything ``herald status`` shows, as of ``now``."""
    campaign = config.campaign
    today = now.astimezone(ZoneInfo(campaign.timezone)).date()
    lines = _config_lines(config)
    pending = _count(conn, config, lines, now)
    messages = sorted(lines.values(), key=_order)
    for line in messages:
        line.paused = paused_reason(conn, campaign=campaign.id, message=line.message)
        if line.kind in BROADCAST_PHASES and line.offset is None:
            found = approval(conn, campaign=campaign.id, message=line.message)
            if found:
                line.approved_by, line.approved_at = found.by, found.at
            # Approval matters before a real send: while rows wait, or before the first.
            days = campaign.schedules.phase_days
            ahead = not line.rows and line.starts and line.starts + timedelta(days=days) > today
            line.needs_approval = (
                found is None and line.message != "sunset" and bool(line.waiting.total or ahead)
            )
        line.next_due = _next_due(config, line, pending.get(id(line), Pending()), now, today)
    telemetry = [
        TelemetryStatus(
            s.source, s.status, s.received_at, s.healthy, None if s.healthy else s.problem
        )
        for s in source_status(conn, sources=SOURCES)
    ]
    failures = int(
        conn.execute(
            select(func.count()).where(WEBHOOK_EVENT_FAILURE.c.resolved_at.is_(None))
        ).scalar_one()
    )
    status = CampaignStatus(
        campaign=campaign.id,
        name=campaign.name,
        now=now,
        today=today,
        paused=paused_reason(conn, campaign=campaign.id, message=CAMPAIGN_WIDE),
        messages=messages,
        telemetry=telemetry,
        webhook_failures=failures,
        attention=[],
        senders=_live_senders(conn, config=config, now=now),
    )
    status.attention = _attention(status)
    return status


def _live_senders(conn: Connection, *, config: HeraldConfig, now: datetime) -> list[LiveSender]:
    """The campaign's unfinished senders (one grouped query), each judged alive or not."""
    lease = config.campaign.sending.worker_lease_seconds
    return [
        LiveSender(
            stats=s,
            alive=looks_alive(s.host, s.pid, s.heartbeat_at, lease, now, this_process=True),
            heartbeat_age=max((now - s.heartbeat_at).total_seconds(), 0.0),
        )
        for s in sender_stats(conn, campaign=config.campaign.id, unfinished_only=True, now=now)
    ]


def _key(message: str, segment: str | None) -> tuple[str, str | None]:
    return (message, segment)


def _config_lines(config: HeraldConfig) -> dict[tuple[str, str | None], MessageStatus]:
    """A line for every phase and every notice of every segment, ledger rows or not."""
    campaign = config.campaign
    lines: dict[tuple[str, str | None], MessageStatus] = {}
    for phase in BROADCAST_PHASES:
        starts = getattr(campaign.phases, phase, None)
        lines[_key(phase, None)] = MessageStatus(message=phase, kind=phase, starts=starts)
    for notice in notices(campaign):
        lines[_key(notice.message, notice.segment)] = MessageStatus(
            message=notice.message,
            kind="notice",
            segment=notice.segment,
            deadline=notice.deadline,
            offset=notice.offset,
            starts=notice.sends_on,
        )
    return lines


def _line(
    lines: dict[tuple[str, str | None], MessageStatus], message: str, segment: str
) -> MessageStatus:
    """The line a ledger group belongs to (made on first sight for a message the config no
    longer names: a moved deadline's notices, a thank-you, a "deadline extended")."""
    try:
        name = parse_message(message)
    except ValueError:
        name = None
    per_segment = name is not None and name.offset is not None
    key = _key(message, segment if per_segment else None)
    if key not in lines:
        lines[key] = MessageStatus(
            message=message,
            kind="notice" if per_segment else (name.kind if name else "other"),
            segment=segment if per_segment else None,
            deadline=name.deadline if name else None,
            offset=name.offset if name else None,
        )
    return lines[key]


def _count(
    conn: Connection,
    config: HeraldConfig,
    lines: dict[tuple[str, str | None], MessageStatus],
    now: datetime,
) -> dict[int, Pending]:
    """Fill each line's counts from grouped queries over the ledger; what each line's
    planned rows wait on, by ``id(line)``."""
    campaign = config.campaign
    d = DELIVERY.c
    for message, segment, state, count in conn.execute(
        select(d.message, d.segment, d.state, func.count())
        .where(d.campaign == campaign.id)
        .group_by(d.message, d.segment, d.state)
    ):
        line = _line(lines, str(message), str(segment))
        line.states[str(state)] = line.states.get(str(state), 0) + int(count)
        line.rows += int(count)
    # Planned rows by why they wait: due or not, their zone's window open now or not.
    window = campaign.delivery_window
    due = and_(
        or_(d.not_before.is_(None), d.not_before <= now),
        or_(d.not_after.is_(None), d.not_after > now),
    )
    planned = conn.execute(
        select(
            d.message,
            d.segment,
            d.timezone,
            d.critical,
            due.label("due"),
            func.count(),
            func.min(d.not_before),
        )
        .where(d.campaign == campaign.id, d.state == DeliveryState.PLANNED.value)
        .group_by(d.message, d.segment, d.timezone, d.critical, due)
    ).all()
    zones = {str(row.timezone or window.default_timezone) for row in planned}
    open_now = set(open_zones(window, zones, now))
    open_critical = set(open_zones(window, zones, now, any_day=True))
    capped = _capped(conn, config, now, open_now) if open_now else {}
    pending: dict[int, Pending] = {}
    for message, segment, timezone, critical, is_due, count, first in planned:
        line = _line(lines, str(message), str(segment))
        zone = str(timezone or window.default_timezone)
        waits = pending.setdefault(id(line), Pending())
        waits.zones.add(zone)
        if first is not None:
            moment = as_utc(first)
            waits.first = moment if waits.first is None else min(waits.first, moment)
        if not is_due:
            line.waiting.not_due += int(count)
        elif zone not in (open_critical if critical else open_now):
            line.waiting.window += int(count)
        else:
            held = 0 if critical else capped.get((str(message), str(segment), zone), 0)
            line.waiting.cap += held
            line.waiting.ready += int(count) - held
    return pending


@dataclass
class Pending:
    """A line's planned rows as :func:`_next_due` needs them: their recipients' zones and
    the earliest moment any of them may go."""

    zones: set[str] = field(default_factory=set)
    first: datetime | None = None


def _capped(
    conn: Connection, config: HeraldConfig, now: datetime, zones: set[str]
) -> dict[tuple[str, str, str], int]:
    """Due, non-critical planned rows in an open zone that the frequency cap holds back."""
    cap = config.campaign.frequency_cap
    d = DELIVERY.c
    earlier = DELIVERY.alias("earlier")
    recent = (
        select(func.count())
        .where(
            earlier.c.contact_id == d.contact_id,
            earlier.c.state == DeliveryState.ACCEPTED.value,
            earlier.c.sent_at > now - timedelta(days=cap.per_days),
        )
        .correlate(DELIVERY)
        .scalar_subquery()
    )
    default = config.campaign.delivery_window.default_timezone
    zone = func.coalesce(d.timezone, default)
    rows = conn.execute(
        select(d.message, d.segment, zone, func.count())
        .where(
            d.campaign == config.campaign.id,
            d.state == DeliveryState.PLANNED.value,
            d.critical.is_(False),
            or_(d.not_before.is_(None), d.not_before <= now),
            or_(d.not_after.is_(None), d.not_after > now),
            zone.in_(sorted(zones)),
            recent >= cap.max_messages,
        )
        .group_by(d.message, d.segment, zone)
    )
    return {(str(m), str(s), str(z)): int(c) for m, s, z, c in rows}


def _next_due(
    config: HeraldConfig, line: MessageStatus, waits: Pending, now: datetime, today: date
) -> datetime | None:
    """When the line next has something to send: its first day (not started yet), the next
    opening of a waiting recipient's window, or now when rows are ready."""
    campaign = config.campaign
    if line.waiting.ready:
        return now
    if line.starts is not None and line.starts > today and not line.rows:
        tz = ZoneInfo(campaign.timezone)
        return datetime.combine(line.starts, time(0), tzinfo=tz).astimezone(UTC)
    if not line.waiting.total:
        return None
    if line.waiting.window or line.waiting.cap:
        critical = line.offset is not None and line.offset in campaign.notices.critical_offsets
        window = campaign.delivery_window
        moments = openings(window, waits.zones, now, now + LOOKAHEAD, any_day=critical)
        if moments:
            return moments[0]
    return waits.first


def _order(line: MessageStatus) -> tuple[date, int, str, str]:
    far = date.max
    return (
        line.starts or line.deadline or far,
        -(line.offset or 0),
        line.segment or "",
        line.message,
    )


def _attention(status: CampaignStatus) -> list[str]:
    """What a person must look at, each with the command that shows or settles it."""
    out: list[str] = []
    if status.paused:
        out.append(f"the campaign is paused ({status.paused}): herald campaign resume")
    for line in status.messages:
        unknown = line.states.get(DeliveryState.UNKNOWN.value, 0)
        failed = line.states.get(DeliveryState.FAILED.value, 0)
        if unknown:
            out.append(
                f"{line.label}: {unknown} unknown (may have been accepted; never re-sent until "
                f"settled): herald deliveries unknown --phase {line.message}"
            )
        if failed:
            out.append(f"{line.label}: {failed} failed: herald phase status {line.message}")
        if line.paused and line.paused != status.paused:
            out.append(
                f"{line.label} is paused ({line.paused}): herald phase resume {line.message}"
            )
    for sender in status.senders:
        if not sender.alive:
            out.append(_dead_sender(sender))
    for source in status.telemetry:
        if not source.healthy:
            out.append(f"telemetry {source.problem}")
    if status.webhook_failures:
        out.append(
            f"{status.webhook_failures} webhook event(s) failed to apply: herald webhooks failures"
        )
    return out


def _dead_sender(sender: LiveSender) -> str:
    """What needs a person about a sender that looks dead: the rerun that settles what it
    left (its unrequested rows back to planned, its requested ones unknown)."""
    s = sender.stats
    message = s.message
    unknown = "herald deliveries unknown"
    if message in PHASES:
        rerun = f"herald phase send {message} --send"
        unknown += f" --phase {message}"
    elif message.startswith("weekly-"):
        rerun = f"herald report weekly --as-of {message.removeprefix('weekly-')} --send"
        unknown = ""  # its rerun lists a report's unknown rows itself
    else:
        try:
            parse_message(message)
            rerun = "herald notices send --send"
        except ValueError:
            rerun = f"rerun what sends {message}"
    what = (
        f"{message}: sender {short_id(s.worker_id)} ({s.host}:{s.pid}) looks dead "
        f"(last heartbeat {age(sender.heartbeat_age)} ago, {s.in_flight} row(s) in flight); "
        f"a rerun puts its unrequested rows back"
    )
    if unknown:
        what += f" and makes its requested ones unknown ({unknown})"
    return f"{what}: {rerun}"


def age(seconds: float) -> str:
    """A duration as a person reads it: ``42 s``, ``12 min``, ``3 h``, ``2 d``."""
    if seconds < 120:
        return f"{seconds:.0f} s"
    if seconds < 2 * 3600:
        return f"{seconds / 60:.0f} min"
    if seconds < 2 * 86400:
        return f"{seconds / 3600:.0f} h"
    return f"{seconds / 86400:.0f} d"


def status_markdown(status: CampaignStatus) -> str:
    """The status as the Markdown of the Prefect artifact ``herald-status``."""
    state = f"**paused**: {status.paused}" if status.paused else "running"
    lines = [
        f"# `{status.campaign}`: {status.name}",
        "",
        f"As of {status.now:%Y-%m-%d %H:%M} UTC (campaign day {status.today}); {state}; "
        f"{status.ledger_rows} ledger rows.",
        "",
        "| message | planned | waiting (due later / window / cap / ready) | sent | failed "
        "| unknown | suppressed | expired | next | control |",
        "|---|---:|---|---:|---:|---:|---:|---:|---|---|",
    ]
    for line in status.messages:
        w = line.waiting
        control = "paused" if line.paused else ""
        if line.needs_approval:
            control = (control + " not approved").strip()
        elif line.approved_by:
            control = (control + f" approved by {line.approved_by}").strip()
        next_due = f"{line.next_due:%Y-%m-%d %H:%M}" if line.next_due else ""
        s = line.states
        lines.append(
            f"| {line.label} | {line.rows} | {w.total} ({w.not_due} / {w.window} / {w.cap} / "
            f"{w.ready}) | {s['accepted']} | {s['failed']} | {s['unknown']} | "
            f"{s['suppressed']} | {s['expired']} | {next_due} | {control} |"
        )
    lines += ["", "## Telemetry", ""]
    if status.telemetry:
        lines += [
            f"- {t.source}: {t.status} ({t.received_at:%Y-%m-%d %H:%M} UTC)"
            + ("" if t.healthy else f": {t.problem}")
            for t in status.telemetry
        ]
    else:
        lines.append("No telemetry received yet.")
    lines += ["", "## Needs a person", ""]
    lines += [f"- {item}" for item in status.attention] or ["Nothing."]
    return "\n".join(lines)
