"""Campaign as code: the YAML files in ``config/``, validated before anything runs.

``load_config(directory)`` reads ``campaign.yaml``, ``segments.yaml``, ``evidence.yaml`` and
``targets.yaml``, validates each against its pydantic model, checks the references between
them, and either returns one :class:`HeraldConfig` or raises :class:`ConfigError` listing every
problem as ``file:line: key.path: reason``. Unknown keys are errors (a typo must not be
silently ignored).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Annotated, Any, Literal, Self, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    HttpUrl,
    ValidationError,
    model_validator,
)

from herald.errors import HeraldError

# --------------------------------------------------------------------------- errors


@dataclass(frozen=True)
class ConfigProblem:
    """One thing wrong in one config file."""

    file: Path
    path: str
    reason: str
    line: int | None = None

    def __str__(self) -> str:
        where = f"{self.file}:{self.line}" if self.line else str(self.file)
        return f"{where}: {self.path or '(top level)'}: {self.reason}"


class ConfigError(HeraldError):
    """The configuration is invalid; nothing may run until every problem is fixed."""

    def __init__(self, problems: list[ConfigProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"invalid configuration ({len(problems)} problem(s)):\n{lines}")


# --------------------------------------------------------------------------- shared types


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_SLUG = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


def _attribute_key(value: str) -> str:
    if not _ATTRIBUTE_KEY.match(value):
        raise ValueError("attribute names are letters, digits and '_', starting with a letter")
    return value


def _address(value: str) -> str:
    from herald.addresses import BadAddress, canonical_email

    try:
        return canonical_email(value)
    except BadAddress as error:
        raise ValueError(f"not an address Herald can send to: {error}") from None


def _header_text(value: str) -> str:
    from herald.addresses import check_header_text

    return check_header_text(value, "the text")


Slug = Annotated[str, AfterValidator(_slug)]
# An e-mail address in its canonical form (lower-case ASCII, A-label domain).
Address = Annotated[str, AfterValidator(_address)]
# Text that goes into a mail header: no line break, control or bidi override.
HeaderText = Annotated[str, AfterValidator(_header_text)]
TimezoneName = Annotated[str, AfterValidator(_timezone)]
AttributeKey = Annotated[str, AfterValidator(_attribute_key)]
Scalar = bool | int | float | str


# --------------------------------------------------------------------------- campaign.yaml


class Products(_Strict):
    """The product customers leave and the one they move to."""

    legacy: str = Field(min_length=1)
    new: str = Field(min_length=1)


class Links(_Strict):
    """Where messages send people."""

    migration_guide: HttpUrl
    support: HttpUrl
    benchmark_kit: HttpUrl | None = None
    release_notes: HttpUrl | None = None


class PhaseDates(_Strict):
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


class Notices(_Strict):
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


Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")


class DeliveryWindow(_Strict):
    """When messages may land, in each recipient's own time zone."""

    days: list[Weekday] = Field(default_factory=lambda: ["tue", "wed", "thu"], min_length=1)  # type: ignore[arg-type]
    start: str = Field(default="09:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    end: str = Field(default="17:00", pattern=r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
    region_timezones: dict[str, TimezoneName] = Field(
        default_factory=dict,
        description="A contact with no time zone gets their account region's.",
    )
    default_timezone: TimezoneName = "UTC"

    @model_validator(mode="after")
    def _start_before_end(self) -> Self:
        if not self.start < self.end:
            raise ValueError(f"start {self.start} must be before end {self.end}")
        return self


class FrequencyCap(_Strict):
    """At most ``max_messages`` per contact in any ``per_days`` days (critical ones aside)."""

    max_messages: int = Field(default=2, ge=1)
    per_days: int = Field(default=7, ge=1)


class Sender(_Strict):
    """The From and Reply-To of every message."""

    email: Address
    name: HeaderText = Field(min_length=1)
    reply_to: Address | None = None


PhaseName = Literal["preview", "announcement", "deprecation", "sunset"]
PHASES: tuple[PhaseName, ...] = ("preview", "announcement", "deprecation", "sunset")
# What a message can be: a phase, the thank-you an account gets when it migrates, the
# notice that its deadline moved later, or the weekly report to leadership.
MessageKind = Literal[
    "preview",
    "announcement",
    "deprecation",
    "sunset",
    "thank_you",
    "deadline_extended",
    "weekly_report",
]
THANK_YOU: MessageKind = "thank_you"
DEADLINE_EXTENDED: MessageKind = "deadline_extended"
WEEKLY_REPORT: MessageKind = "weekly_report"  # to leadership, not customers
RoleName = Literal["executive", "technical", "other"]


class Audience(_Strict):
    """Who receives one phase's message."""

    segments: list[Slug] = Field(min_length=1)
    roles: list[RoleName] = Field(min_length=1)
    exclude_migrated: bool = Field(
        default=True, description="Skip accounts that have already migrated."
    )


class Breaker(_Strict):
    """When a phase pauses itself: rates over its own sends, once the sample is large enough."""

    max_failure_rate: float = Field(default=0.05, gt=0, le=1)
    max_hard_bounce_rate: float = Field(default=0.05, gt=0, le=1)
    min_sample: int = Field(default=200, ge=1, description="Sends before the rates count.")


class Sending(_Strict):
    """How messages leave: batch size, pace, retries, SendGrid options."""

    batch_size: int = Field(
        default=1000, ge=1, le=1000, description="Recipients per request (SendGrid: <= 1000)."
    )
    rate_per_second: float | None = Field(
        default=None, gt=0, description="Messages per second never exceeded; null: no cap."
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
        default=2,
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


class AtRisk(_Strict):
    """Which accounts the weekly report lists for account teams: active, not migrated, and
    near their deadline, or with many support tickets, or with low satisfaction."""

    deadline_within_days: int = Field(default=30, ge=0)
    min_tickets: int = Field(default=3, ge=1, description="This many tickets or more.")
    max_average_csat: float = Field(
        default=3.0, ge=1, le=5, description="Average survey CSAT at or below this."
    )


class Report(_Strict):
    """The weekly leadership report: who receives it and what it lists."""

    leadership: list[Address] = Field(
        default_factory=list, description="Who receives the weekly report."
    )
    trend_weeks: int = Field(default=12, ge=2, le=104, description="Weeks of trend it shows.")
    at_risk: AtRisk = Field(default_factory=AtRisk)
    at_risk_rows: int = Field(
        default=50, ge=1, description="At-risk accounts shown in the e-mail (the CSV has all)."
    )


class CampaignConfig(_Strict):
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
    audiences: dict[PhaseName, Audience]
    locales: list[str] = Field(
        default_factory=lambda: ["en"],
        min_length=1,
        description="Locales the templates are checked in (a missing translation falls back).",
    )
    sending: Sending = Field(default_factory=Sending)
    delivery_window: DeliveryWindow = Field(default_factory=DeliveryWindow)
    frequency_cap: FrequencyCap = Field(default_factory=FrequencyCap)
    report: Report = Field(default_factory=Report)

    @model_validator(mode="after")
    def _every_phase_has_an_audience(self) -> Self:
        missing = [phase for phase in PHASES if phase not in self.audiences]
        if missing:
            raise ValueError(f"audiences: no audience for phase(s) {', '.join(missing)}")
        return self


# --------------------------------------------------------------------------- segments.yaml

# Account columns a rule may test; everything else lives in the free-form attributes.
AccountField = Literal["external_id", "tier", "region", "industry", "migration_state"]
_COMPARISONS = ("gt", "gte", "lt", "lte")
_OPERATORS = ("equals", "not_equals", "in", "not_in", *_COMPARISONS, "exists")


class Condition(_Strict):
    """A test on one account: a field or attribute with one operator, or all/any/not of others.

    ``{field: tier, in: [enterprise]}``, ``{attribute: legacy_version, gte: 4.2}``,
    ``{all: [...]}``, ``{any: [...]}``, ``{not: {...}}``.
    """

    field: AccountField | None = None
    attribute: AttributeKey | None = None
    equals: Scalar | None = None
    not_equals: Scalar | None = None
    in_: list[Scalar] | None = Field(default=None, alias="in", min_length=1)
    not_in: list[Scalar] | None = Field(default=None, min_length=1)
    gt: float | None = None
    gte: float | None = None
    lt: float | None = None
    lte: float | None = None
    exists: bool | None = None
    all: list[Condition] | None = Field(default=None, min_length=1)
    any: list[Condition] | None = Field(default=None, min_length=1)
    not_: Condition | None = Field(default=None, alias="not")

    @model_validator(mode="after")
    def _one_test(self) -> Self:
        combinators = [name for name in ("all", "any", "not_") if getattr(self, name) is not None]
        subjects = [name for name in ("field", "attribute") if getattr(self, name) is not None]
        operators = [self._key(op) for op in _OPERATORS if getattr(self, self._key(op)) is not None]
        if combinators:
            if len(combinators) > 1 or subjects or operators:
                raise ValueError("a condition is either one of all/any/not, or one test")
            return self
        if len(subjects) != 1:
            raise ValueError("a test names exactly one of 'field' or 'attribute'")
        if len(operators) != 1:
            raise ValueError(f"a test has exactly one operator of {', '.join(_OPERATORS)}")
        if self.field is not None:
            if operators[0] in _COMPARISONS:
                raise ValueError(
                    f"field {self.field!r} is text: use equals, not_equals, in, not_in or exists"
                )
            values = self.operand if isinstance(self.operand, list) else [self.operand]
            if operators[0] != "exists" and not all(isinstance(v, str) for v in values):
                raise ValueError(f"field {self.field!r} is text: compare it with text values")
        return self

    @staticmethod
    def _key(operator: str) -> str:
        return "in_" if operator == "in" else operator

    @property
    def operator(self) -> str:
        """The operator of a single test (``in`` for ``in_``)."""
        for op in _OPERATORS:
            if getattr(self, self._key(op)) is not None:
                return op
        raise ValueError("combinator conditions have no operator")

    @property
    def operand(self) -> Any:
        """The operand of a single test."""
        return getattr(self, self._key(self.operator))


class SegmentDef(_Strict):
    """A segment the rollout treats alike (messages, timing, sunset date)."""

    name: Slug
    label: str = Field(min_length=1)
    description: str = ""


class SegmentRule(_Strict):
    """Accounts matching ``when`` join ``segment``; the first matching rule wins."""

    name: Slug
    segment: Slug
    when: Condition


class ReadinessLevel(_Strict):
    """A level of readiness to migrate, ordered from most to least ready."""

    name: Slug
    label: str = Field(min_length=1)


class ReadinessRule(_Strict):
    """Accounts matching ``when`` get readiness ``level``; first match wins."""

    name: Slug
    level: Slug
    when: Condition


class Readiness(_Strict):
    """The readiness axis of the rollout priority matrix."""

    levels: list[ReadinessLevel] = Field(min_length=1)
    default: Slug
    rules: list[ReadinessRule] = Field(default_factory=list)


class SegmentsConfig(_Strict):
    """``segments.yaml``: segments in rollout order, the rules that place accounts, readiness."""

    segments: list[SegmentDef] = Field(min_length=1)
    default: Slug
    rules: list[SegmentRule] = Field(default_factory=list)
    readiness: Readiness

    @property
    def names(self) -> list[str]:
        """Segment names in rollout order."""
        return [segment.name for segment in self.segments]


# --------------------------------------------------------------------------- evidence.yaml

EvidenceKey = Literal[
    "import_speedup", "import_memory_reduction", "execution_speedup", "average_improvement"
]


class Figure(_Strict):
    """A measured figure, with where it comes from and how it was measured."""

    value: float
    unit: Literal["x", "percent"]
    display: str = Field(min_length=1, description="How messages print it, e.g. '101.76x'.")
    claim: str = Field(min_length=1, description="The sentence the figure supports.")
    source: str = Field(min_length=1)
    method: str = Field(min_length=1)


class EvidenceConfig(_Strict):
    """``evidence.yaml``: the performance evidence messages quote, never typed into templates."""

    source_document: str = Field(min_length=1)
    figures: dict[EvidenceKey, Figure]

    @model_validator(mode="after")
    def _complete(self) -> Self:
        missing = sorted(set(EvidenceKey.__args__) - set(self.figures))  # type: ignore[attr-defined]
        if missing:
            raise ValueError(f"missing figures: {', '.join(missing)}")
        return self


# --------------------------------------------------------------------------- targets.yaml

MetricKey = Literal[
    "message_reach",
    "engagement_rate",
    "early_adopter_engagement",
    "migration_rate",
    "support_satisfaction",
    "support_utilization",
    "performance_validation",
    "feedback_quality",
    "hard_bounce_rate",
    "spam_complaint_rate",
    "unsubscribe_rate",
]


class Target(_Strict):
    """A success metric's target; ``value: null`` means monitored without a target."""

    label: str = Field(min_length=1)
    value: float | None
    comparison: Literal[">", ">=", "<", "<="] | None = None
    unit: Literal["share", "per_100_accounts", "score"] = "share"
    within_days: int | None = Field(default=None, gt=0)
    limit: float | None = Field(default=None, description="A line never to cross.")
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _comparison_with_value(self) -> Self:
        if (self.value is None) != (self.comparison is None):
            raise ValueError("'value' and 'comparison' go together (both set, or both null)")
        return self


class TargetsConfig(_Strict):
    """``targets.yaml``: the success targets from the strategy document."""

    targets: dict[MetricKey, Target] = Field(min_length=1)


# --------------------------------------------------------------------------- telemetry.yaml

SourceName = Literal["adoption", "support", "survey", "performance"]
SOURCES: tuple[SourceName, ...] = ("adoption", "support", "survey", "performance")


class WebhookConfig(_Strict):
    """The SendGrid Event Webhook receiver."""

    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    tolerance_seconds: int = Field(
        default=300, gt=0, description="How far a signature's timestamp may be from now."
    )


class RowCountCheck(_Strict):
    """A batch's row count against the median of the source's recent loaded batches."""

    recent_batches: int = Field(default=5, ge=1)
    min_ratio: float = Field(default=0.2, ge=0)
    max_ratio: float = Field(default=5.0, gt=0)


class ContractsConfig(_Strict):
    """What rejects a whole batch instead of quarantining its bad rows."""

    max_bad_row_share: float = Field(default=0.05, ge=0, le=1)
    row_count: RowCountCheck = Field(default_factory=RowCountCheck)


class AdoptionRules(_Strict):
    """How adoption figures move an account's migration state."""

    migrated_at_pct: float = Field(
        default=100.0, gt=0, le=100, description="At or above: the account has migrated."
    )


class TelemetryConfig(_Strict):
    """``telemetry.yaml``: the webhook receiver, data-contract thresholds, adoption rules."""

    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    contracts: ContractsConfig = Field(default_factory=ContractsConfig)
    adoption: AdoptionRules = Field(default_factory=AdoptionRules)
    depends_on: dict[str, list[SourceName]] = Field(
        default_factory=dict,
        description="Flow -> sources whose last batch must have passed its contract.",
    )


# --------------------------------------------------------------------------- loading


@dataclass(frozen=True)
class HeraldConfig:
    """Every config file, validated and cross-checked."""

    directory: Path
    campaign: CampaignConfig
    segments: SegmentsConfig
    evidence: EvidenceConfig
    targets: TargetsConfig
    telemetry: TelemetryConfig


_FILES: dict[str, type[BaseModel]] = {
    "campaign.yaml": CampaignConfig,
    "segments.yaml": SegmentsConfig,
    "evidence.yaml": EvidenceConfig,
    "targets.yaml": TargetsConfig,
    "telemetry.yaml": TelemetryConfig,
}

M = TypeVar("M", bound=BaseModel)


class _Loader(yaml.SafeLoader):
    """SafeLoader that leaves dates as text, so pydantic reports a bad one with its key path."""


def _timestamp_as_text(loader: yaml.SafeLoader, node: yaml.Node) -> str:
    assert isinstance(node, yaml.ScalarNode)
    return str(loader.construct_scalar(node))


_Loader.add_constructor("tag:yaml.org,2002:timestamp", _timestamp_as_text)


def load_config(directory: Path) -> HeraldConfig:
    """Load and validate every file in ``directory``; raise ConfigError naming each problem."""
    problems: list[ConfigProblem] = []
    models: dict[str, Any] = {}
    lines: dict[str, dict[tuple[str | int, ...], int]] = {}
    for filename, model in _FILES.items():
        path = directory / filename
        loaded = _load_file(path, model, problems)
        if loaded is not None:
            models[filename], lines[filename] = loaded
    if problems:
        raise ConfigError(problems)
    config = HeraldConfig(
        directory=directory,
        campaign=models["campaign.yaml"],
        segments=models["segments.yaml"],
        evidence=models["evidence.yaml"],
        targets=models["targets.yaml"],
        telemetry=models["telemetry.yaml"],
    )
    problems.extend(_cross_check(config, lines))
    if problems:
        raise ConfigError(problems)
    return config


def _load_file(
    path: Path, model: type[M], problems: list[ConfigProblem]
) -> tuple[M, dict[tuple[str | int, ...], int]] | None:
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        problems.append(ConfigProblem(path, "", "file not found"))
        return None
    except (OSError, UnicodeDecodeError) as error:
        problems.append(ConfigProblem(path, "", f"cannot read: {error}"))
        return None
    try:
        node = yaml.compose(text, Loader=_Loader)
        data = yaml.load(text, Loader=_Loader)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        line = mark.line + 1 if mark is not None else None
        reason = getattr(error, "problem", None) or str(error)
        problems.append(ConfigProblem(path, "", f"not valid YAML: {reason}", line))
        return None
    line_map = dict(_node_lines(node, ())) if node is not None else {}
    duplicates = list(_duplicate_keys(node, ())) if node is not None else []
    for key_path, first, again in duplicates:
        problems.append(
            ConfigProblem(
                path,
                _dotted(key_path),
                f"key given twice (lines {first} and {again}): YAML would keep only the last",
                again,
            )
        )
    if duplicates:
        return None
    if not isinstance(data, dict):
        problems.append(ConfigProblem(path, "", "expected a mapping of keys at the top level", 1))
        return None
    try:
        return model.model_validate(data), line_map
    except ValidationError as error:
        for item in error.errors():
            loc = tuple(part for part in item["loc"] if isinstance(part, str | int))
            problems.append(
                ConfigProblem(path, _dotted(loc), _reason(item), _line_for(line_map, loc))
            )
        return None


def _reason(item: Any) -> str:
    message = str(item["msg"]).removeprefix("Value error, ")
    if item["type"] in {"extra_forbidden"}:
        return "unknown key (check its spelling)"
    if item["type"] == "literal_error" and "input" in item:
        return f"{message} (got {item['input']!r})"
    return message


def _cross_check(
    config: HeraldConfig, lines: dict[str, dict[tuple[str | int, ...], int]]
) -> Iterator[ConfigProblem]:
    directory = config.directory

    def problem(filename: str, loc: tuple[str | int, ...], reason: str) -> ConfigProblem:
        return ConfigProblem(
            directory / filename, _dotted(loc), reason, _line_for(lines[filename], loc)
        )

    segments = config.segments
    names = segments.names
    if len(set(names)) != len(names):
        yield problem("segments.yaml", ("segments",), "segment names must be unique")
    if segments.default not in names:
        yield problem(
            "segments.yaml", ("default",), f"unknown segment {segments.default!r} ({_of(names)})"
        )
    for index, rule in enumerate(segments.rules):
        if rule.segment not in names:
            yield problem(
                "segments.yaml",
                ("rules", index, "segment"),
                f"unknown segment {rule.segment!r} ({_of(names)})",
            )
    rule_names = [rule.name for rule in segments.rules]
    if len(set(rule_names)) != len(rule_names):
        yield problem("segments.yaml", ("rules",), "rule names must be unique")
    levels = [level.name for level in segments.readiness.levels]
    if segments.readiness.default not in levels:
        yield problem(
            "segments.yaml",
            ("readiness", "default"),
            f"unknown readiness level {segments.readiness.default!r} ({_of(levels)})",
        )
    for index, readiness_rule in enumerate(segments.readiness.rules):
        if readiness_rule.level not in levels:
            yield problem(
                "segments.yaml",
                ("readiness", "rules", index, "level"),
                f"unknown readiness level {readiness_rule.level!r} ({_of(levels)})",
            )

    campaign = config.campaign
    for phase, audience in campaign.audiences.items():
        for index, segment in enumerate(audience.segments):
            if segment not in names:
                yield problem(
                    "campaign.yaml",
                    ("audiences", phase, "segments", index),
                    f"unknown segment {segment!r} ({_of(names)})",
                )
    for name in names:
        if name not in campaign.sunset:
            yield problem("campaign.yaml", ("sunset",), f"no sunset date for segment {name!r}")
    for name, day in campaign.sunset.items():
        if name not in names:
            yield problem(
                "campaign.yaml", ("sunset", name), f"unknown segment {name!r} ({_of(names)})"
            )
        elif day <= campaign.phases.deprecation:
            yield problem(
                "campaign.yaml",
                ("sunset", name),
                f"sunset {day} must come after the deprecation phase "
                f"({campaign.phases.deprecation})",
            )


def _of(names: list[str]) -> str:
    return "one of " + ", ".join(names)


def _dotted(loc: tuple[str | int, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _node_lines(
    node: yaml.Node, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], int]]:
    yield path, node.start_mark.line + 1
    if isinstance(node, yaml.MappingNode):
        for key, value in node.value:
            child = (*path, str(key.value))
            yield child, key.start_mark.line + 1
            for sub_path, line in _node_lines(value, child):
                if sub_path != child:
                    yield sub_path, line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _node_lines(item, (*path, index))


def _duplicate_keys(
    node: yaml.Node, path: tuple[str | int, ...]
) -> Iterator[tuple[tuple[str | int, ...], int, int]]:
    """(key path, first line, repeated line) of every key a mapping gives twice."""
    if isinstance(node, yaml.MappingNode):
        seen: dict[str, int] = {}
        for key, value in node.value:
            name, line = str(key.value), key.start_mark.line + 1
            if name in seen:
                yield (*path, name), seen[name], line
            seen.setdefault(name, line)
            yield from _duplicate_keys(value, (*path, name))
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            yield from _duplicate_keys(item, (*path, index))


def _line_for(line_map: dict[tuple[str | int, ...], int], loc: tuple[str | int, ...]) -> int | None:
    for end in range(len(loc), -1, -1):
        if loc[:end] in line_map:
            return line_map[loc[:end]]
    return None
