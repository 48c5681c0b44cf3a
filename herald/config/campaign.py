"""``campaign.yaml``: what the campaign is about, when each part happens, and how it sends."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date, timedelta
from functools import cache
from typing import Annotated, Self

from pydantic import Field, HttpUrl, field_validator, model_validator

from herald.config.base import (
    Address,
    AttributeKey,
    HeaderText,
    Slug,
    StrictModel,
    TimezoneName,
)
from herald.config.names import PHASES, WEEKDAYS, MessageKind, PhaseName, RoleName, Weekday

# Five cron fields (minute hour day month weekday); Prefect checks each fully at deploy.
CronText = Annotated[
    str, Field(pattern=r"^\s*\S+(\s+\S+){4}\s*$", description="A cron expression.")
]


class Products(StrictModel):
    """The product customers leave and the one they move to."""

    legacy: str = Field(min_length=1)
    new: str = Field(min_length=1)


class Links(StrictModel):
    """Where messages send people."""

    migration_guide: HttpUrl
    support: HttpUrl
    benchmark_kit: HttpUrl | None = None
    release_notes: HttpUrl | None = None


class PhaseDates(StrictModel):
    """The first day of each broadcast phase (the sunset is per segment)."""

    preview: date
    announcement: date
    deprecation: date

    @model_validator(mode="after")
    def _in_order(self) -> Self:
        if not self.preview < self.announcement < self.deprecation:
            raise ValueError(
                "phases must run in order: preview < announcement < deprecation "
                f"(got {self.preview}, {self.announcement}, {self.deprecation})"
            )
        return self


class Notices(StrictModel):
    """Deadline notices: days before each account's sunset date (0 is the sunset day)."""

    offsets_days: list[Annotated[int, Field(ge=0, le=365)]] = Field(
        default_factory=lambda: [90, 30, 7, 1, 0], min_length=1
    )
    critical_offsets: list[Annotated[int, Field(ge=0, le=365)]] = Field(
        default_factory=lambda: [1, 0],
        description="Notices the frequency cap never holds back.",
    )
    thank_you: bool = Field(
        default=True, description="Thank accounts that migrate (once), instead of notices."
    )
    deadline_extended: bool = Field(
        default=True,
        description="When a segment's sunset moves later, tell each contact who already had "
        "a notice for the earlier date (once per new date).",
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if len(set(self.offsets_days)) != len(self.offsets_days):
            raise ValueError(f"offsets must be distinct (got {self.offsets_days})")
        return self


class DeliveryWindow(StrictModel):
    """When messages may land, in each recipient's own time zone."""

    days: list[Weekday] = Field(default_factory=lambda: ["tue", "wed", "thu"], min_length=1)  # type: ignore[arg-type]
    start: str = Field(default="09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(default="17:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    region_timezones: dict[str, TimezoneName] = Field(
        default_factory=dict,
        description="A contact with no time zone gets their account region's.",
    )
    default_timezone: TimezoneName = "UTC"
    holidays: list[str] = Field(
        default_factory=list,
        description="Countries (or country-subdivision, e.g. DE-BY) whose public holidays "
        "are closed days for every recipient (the `holidays` package's calendars).",
    )
    blackout_dates: list[date] = Field(
        default_factory=list, description="More closed days (a company shutdown, say)."
    )

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if not self.start < self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        for code in self.holidays:
            _holiday_calendar(code, 2027)  # an unknown country fails here, named
        return self

    def is_open_day(self, day: date) -> bool:
        """Whether messages may land on ``day`` (a recipient's local date): a window weekday
        that is neither a listed country's public holiday nor a blackout date."""
        if WEEKDAYS[day.weekday()] not in self.days or day in self.blackout_dates:
            return False
        return not any(day in _holiday_calendar(code, day.year) for code in self.holidays)

    def last_open_day(self, day: date, *, within: int = 28) -> date | None:
        """The latest open day on or before ``day`` (looking back ``within`` days), or None."""
        for back in range(within):
            candidate = day - timedelta(days=back)
            if self.is_open_day(candidate):
                return candidate
        return None


@cache
def _holiday_calendar(code: str, year: int) -> frozenset[date]:
    """The public holidays of a country (``US``) or subdivision (``DE-BY``) in ``year``."""
    import holidays

    country, _, subdivision = code.partition("-")
    try:
        found = holidays.country_holidays(country, subdiv=subdivision or None, years=year)
    except NotImplementedError:
        raise ValueError(
            f"holidays: {code!r} is not a country (or country-subdivision) the holidays "
            "package knows (ISO 3166 codes such as US, GB, DE-BY)"
        ) from None
    return frozenset(found.keys())


class FrequencyCap(StrictModel):
    """At most ``max_messages`` per contact in any ``per_days`` days (critical ones aside)."""

    max_messages: int = Field(default=2, ge=1)
    per_days: int = Field(default=7, ge=1)


class Sender(StrictModel):
    """The From and Reply-To of every message, and who sends it: the organization and its
    postal address appear in every footer (CAN-SPAM asks for a valid physical address)."""

    email: Address
    name: HeaderText = Field(min_length=1)
    reply_to: Address | None = None
    organization: HeaderText = Field(min_length=1, description="The legal sender's name.")
    postal_address: str = Field(
        min_length=10, max_length=300, description="A physical postal address, one line."
    )


class Unsubscribe(StrictModel):
    """How a recipient leaves the campaign's mail: Herald's one-click endpoint (RFC 8058)."""

    url: HttpUrl = Field(
        description="Herald's unsubscribe endpoint as recipients reach it (https), e.g. "
        "https://mail.example.com/unsubscribe; each message's link adds its token."
    )
    mailto: Address | None = Field(
        default=None, description="Also offered in List-Unsubscribe (handled by a person)."
    )
    honoured_by: list[MessageKind] | None = Field(
        default=None,
        description="The messages an unsubscribe stops (and that carry the link); default: "
        "all. A message left out is a service notice: it still goes, without the link.",
    )

    @model_validator(mode="after")
    def _https(self) -> Self:
        if self.url.scheme != "https":
            raise ValueError("unsubscribe.url must be https (mail clients require it)")
        if self.url.query or self.url.fragment:
            raise ValueError("unsubscribe.url takes no query or fragment (the token is added)")
        return self

    def honours(self, kind: MessageKind) -> bool:
        """Whether an unsubscribe stops messages of ``kind`` (and they carry the link)."""
        return self.honoured_by is None or kind in self.honoured_by


class Audience(StrictModel):
    """Who receives one phase's message."""

    segments: list[Slug] = Field(min_length=1)
    roles: list[RoleName] = Field(min_length=1)
    exclude_migrated: bool = Field(
        default=True, description="Skip accounts that have already migrated."
    )


class Breaker(StrictModel):
    """When a phase pauses itself: rates over its own sends, once the sample is large enough."""

    max_failure_rate: float = Field(default=0.05, gt=0, le=1)
    max_hard_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    min_sample: int = Field(default=200, ge=1, description="Sends before the rates count.")


class Sending(StrictModel):
    """How messages leave: batch size, pace, retries, SendGrid options."""

    batch_size: int = Field(
        default=1000, ge=1, le=1000, description="Recipients per request (SendGrid: <= 1000)."
    )
    rate_per_second: float | None = Field(
        default=None,
        ge=2,
        description="Messages per second never exceeded in any second, by all senders "
        "together (a Prefect global rate limit; docs/deploy.md); null: no cap.",
    )
    senders: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Sender flow runs a phase's real send starts through the work pool "
        "(1: the phase's own run sends). More than one needs a Prefect server and workers.",
    )
    asm_group_id: int | None = Field(
        default=None, ge=1, description="SendGrid unsubscribe group (ASM) of every message."
    )
    sandbox: bool = Field(default=False, description="SendGrid sandbox mode: validate only.")
    max_attempts: int = Field(
        default=6, ge=1, le=20, description="Tries per request on 5xx or connect errors."
    )
    backoff_seconds: float = Field(default=1.0, gt=0, description="First retry delay.")
    backoff_max_seconds: float = Field(default=60.0, gt=0)
    max_rate_limit_wait_seconds: float = Field(
        default=900.0, gt=0, description="Longest wait for a 429's X-RateLimit-Reset."
    )
    request_timeout_seconds: float = Field(default=30.0, gt=0)
    in_flight: int = Field(
        default=6,
        ge=1,
        le=8,
        description="Batches a sender works on at once: the next is claimed and built while "
        "one waits for SendGrid's answer.",
    )
    worker_lease_seconds: float = Field(
        default=300.0,
        gt=0,
        description="A sender on another host with no heartbeat for this long is gone.",
    )
    breaker: Breaker = Field(default_factory=Breaker)


class AtRisk(StrictModel):
    """Which accounts the weekly report lists for account teams: active, not migrated, and
    near their deadline, or with many support tickets, or with low satisfaction."""

    deadline_within_days: int = Field(default=30, ge=0)
    min_tickets: int = Field(default=3, ge=1, description="This many tickets or more.")
    max_average_csat: float = Field(
        default=3.0, ge=1, le=5, description="Average survey CSAT at or below this."
    )


class Stories(StrictModel):
    """Which accounts the report proposes as case-study candidates."""

    consent_attribute: AttributeKey | None = Field(
        default="case_study_consent",
        description="An account is proposed only when this imported attribute is true "
        "(null: no consent needed).",
    )
    use_case_attribute: AttributeKey | None = Field(
        default="use_case", description="The imported attribute naming the account's use case."
    )
    min_speedup: float = Field(
        default=2.0, gt=1, description="Import at least this many times faster (latest report)."
    )
    min_average_csat: float = Field(
        default=4.0, ge=1, le=5, description="Survey answers average at least this..."
    )
    min_responses: int = Field(default=1, ge=1, description="...over at least this many.")
    candidates: int = Field(default=10, ge=1, description="Shown in the report (CSV: all).")


class EscalationStep(StrictModel):
    """One level of the support escalation path."""

    level: str = Field(min_length=1, description="e.g. 'Customer success manager'.")
    contact: str = Field(min_length=1, description="Who or which queue: a name, team or address.")
    within: str | None = Field(default=None, description="e.g. '1 business day'.")


class Escalation(StrictModel):
    """At-risk accounts that need the support escalation path, and the path."""

    open_ticket_days: int = Field(
        default=14, ge=1, description="A ticket still open after this many days escalates."
    )
    low_csat: int = Field(default=2, ge=1, le=5, description="A survey answer at or below this...")
    low_csat_answers: int = Field(default=2, ge=1, description="...this many times escalates.")
    path: list[EscalationStep] = Field(
        default_factory=list, description="In order: who takes an escalated account."
    )


class Report(StrictModel):
    """The weekly leadership report: who receives it and what it lists."""

    leadership: list[Address] = Field(
        default_factory=list, description="Who receives the weekly report."
    )
    trend_weeks: int = Field(default=12, ge=2, le=104, description="Weeks of trend it shows.")
    at_risk: AtRisk = Field(default_factory=AtRisk)
    at_risk_rows: int = Field(
        default=50, ge=1, description="At-risk accounts shown in the e-mail (the CSV has all)."
    )
    owner_attribute: AttributeKey | None = Field(
        default="account_owner",
        description="The imported account attribute naming its owner or team (at-risk rows).",
    )
    base_url: HttpUrl | None = Field(
        default=None,
        description="Where var/reports/ is published: the Prefect artifact links the report "
        "there (without it, the artifact carries the charts inline and no link).",
    )
    stories: Stories = Field(default_factory=Stories)
    escalation: Escalation = Field(default_factory=Escalation)


class Proof(StrictModel):
    """Proof sends (``herald phase proof``): where they go when no ``--to`` is given."""

    seeds: list[Address] = Field(
        default_factory=list,
        max_length=100,
        description="Seed addresses every proof goes to unless --to names others (reviewers' "
        "own inboxes, seed accounts of inbox-placement tools); never customers.",
    )

    @field_validator("seeds")
    @classmethod
    def _distinct(cls, seeds: list[str]) -> list[str]:
        duplicates = sorted({seed for seed in seeds if seeds.count(seed) > 1})
        if duplicates:
            raise ValueError(f"listed twice: {', '.join(duplicates)}")
        return seeds


class Schedules(StrictModel):
    """When Prefect runs each flow (``herald deploy`` builds the deployments from these and the
    phase dates); cron expressions in the campaign's time zone."""

    telemetry_ingest: CronText = Field(
        default="0 5 * * *", description="Check and load the telemetry inbox."
    )
    segment_refresh: CronText = Field(
        default="0 6 * * *", description="Re-segment every account (before the day's sends)."
    )
    notices: CronText = Field(
        default="5 * * * *",
        description="Plan and send the sunset notices due (hourly: every recipient's window).",
    )
    weekly_report: CronText = Field(
        default="0 8 * * 1", description="The leadership report (Mondays 08:00)."
    )
    phase_days: int = Field(
        default=7,
        ge=1,
        le=28,
        description="Each phase runs hourly for this many days from its date, so every "
        "recipient's delivery window comes round (the first real send waits for approval).",
    )


class CampaignConfig(StrictModel):
    """``campaign.yaml``: what the campaign is about and when each part happens."""

    id: Slug
    name: HeaderText = Field(min_length=1)
    timezone: TimezoneName = "UTC"
    products: Products
    links: Links
    phases: PhaseDates
    sunset: dict[Slug, date] = Field(min_length=1)
    notices: Notices = Field(default_factory=Notices)
    sender: Sender
    unsubscribe: Unsubscribe
    audiences: dict[PhaseName, Audience]
    locales: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        description="The languages messages are written in, as tags like en or pt-BR; the "
        "first is the default. A contact's locale maps to the same tag, else the first of "
        "its language, else the default; a locale without a catalog is written in the "
        "default's language (templates/locales).",
    )
    sending: Sending = Field(default_factory=Sending)
    delivery_window: DeliveryWindow = Field(default_factory=DeliveryWindow)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    report: Report = Field(default_factory=Report)
    proof: Proof = Field(default_factory=Proof)
    schedules: Schedules = Field(default_factory=Schedules)

    @field_validator("locales")
    @classmethod
    def _language_tags(cls, locales: list[str]) -> list[str]:
        from herald.i18n import babel_locale

        for tag in locales:
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Z]{2})?", tag):
                raise ValueError(f"{tag!r}: write language tags like en or pt-BR")
            babel_locale(tag)  # ValueError naming the tag
        duplicates = sorted({tag for tag in locales if locales.count(tag) > 1})
        if duplicates:
            raise ValueError(f"listed twice: {', '.join(duplicates)}")
        return locales

    @model_validator(mode="after")
    def _every_phase_has_an_audience(self) -> Self:
        missing = [phase for phase in PHASES if phase not in self.audiences]
        if missing:
            raise ValueError(f"audiences: no audience for phase(s) {', '.join(missing)}")
        return self

    @model_validator(mode="after")
    def _every_notice_has_its_own_day(self) -> Self:
        problems = []
        for slot in self.notice_schedule():
            if slot.sends_on is None:
                problems.append(
                    f"the {slot.offset}-day notice of {slot.segment} (due {slot.due}) has no "
                    "open delivery day in the 4 weeks before it: widen delivery_window"
                )
            elif slot.until <= slot.sends_on:
                problems.append(
                    f"the {slot.offset}-day notice of {slot.segment} would go on "
                    f"{slot.sends_on}, the day the next notice goes (open days move each to "
                    "the last one on or before its due day): drop one of the offsets or "
                    "open more days"
                )
        if problems:
            raise ValueError("notices: " + "; ".join(problems))
        return self

    def phase_days(self, phase: str) -> list[date]:
        """The days a broadcast phase's schedule runs on (none for the sunset phase, which
        is sent by hand; its notices have their own schedule)."""
        first: date | None = getattr(self.phases, phase, None)
        if first is None:
            return []
        return [first + timedelta(days=n) for n in range(self.schedules.phase_days)]

    def phase_days_include(self, phase: str, day: date) -> bool:
        """Whether ``day`` is one of the days ``phase``'s schedule runs on."""
        return day in self.phase_days(phase)

    def notice_schedule(self) -> list[NoticeSlot]:
        """When each segment's notices go: a critical notice on its due day (inside the
        window's hours whatever the weekday or holiday), any other on the last open day on
        or before it (early beats late for a deadline); each valid until the next one goes
        (the sunset-day notice: until the end of that day)."""
        slots = []
        offsets = sorted(set(self.notices.offsets_days), reverse=True)
        critical = set(self.notices.critical_offsets)
        for segment, sunset in self.sunset.items():
            dues = [sunset - timedelta(days=offset) for offset in offsets]
            sends = [
                due if offset in critical else self.delivery_window.last_open_day(due)
                for offset, due in zip(offsets, dues, strict=True)
            ]
            for index, offset in enumerate(offsets):
                later = [day for day in sends[index + 1 :] if day is not None]
                until = later[0] if later else sunset + timedelta(days=1)
                slots.append(
                    NoticeSlot(
                        segment, offset, dues[index], sends[index], until, offset in critical
                    )
                )
        return slots


@dataclass(frozen=True)
class NoticeSlot:
    """One notice of one segment: due ``offset`` days before the sunset, going on
    ``sends_on`` (None: no open day for it), valid until ``until`` (exclusive)."""

    segment: str
    offset: int
    due: date
    sends_on: date | None
    until: date
    critical: bool
