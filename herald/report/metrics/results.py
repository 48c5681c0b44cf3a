"""What a metrics computation returns: every value per segment, the funnel, the definitions,
and the statuses a value can have against its target."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date

from herald.config import PHASES

ALL = "all"
UNSEGMENTED = "unsegmented"
OTHER_PHASE = "other"
FUNNEL_PHASES: tuple[str, ...] = (*PHASES, OTHER_PHASE)

ON_TRACK = "on track"
AT_RISK = "at risk"
OFF_TRACK = "off track"
NO_DATA = "no data"
NOT_STARTED = "not started"  # before the target's first day (its judged_from phase)
MONITORED = "monitored"  # a value, but no target to hold it against
MET = "met"  # the campaign has closed with its headline targets met...
MISSED = "missed"  # ...or not


@dataclass(frozen=True)
class MetricValue:
    """One metric for one segment ('all' = overall), beside its target, and how it stands."""

    metric: str
    segment: str
    value: float | None
    target: float | None
    comparison: str | None
    status: str
    numerator: int | None
    denominator: int | None
    limit: float | None = None
    line: float | None = None  # a dated target's trajectory on the day
    tolerance: float = 0.0


@dataclass(frozen=True)
class FunnelRow:
    """One phase's funnel, overall: messages sent, delivered, opened, clicked, then migrated."""

    phase: str
    sent: int
    delivered: int
    opened: int
    clicked: int
    migrated_accounts: int


@dataclass(frozen=True)
class MetricsResult:
    """Every success metric as of a day, per segment, with the funnel and the definitions."""

    as_of: date
    values: list[MetricValue]
    funnel: list[FunnelRow]
    definitions: dict[str, str]
    campaign: str = ""
    segmented_on: date | None = None
    segments: list[str] = field(default_factory=list)

    def get(self, metric: str, segment: str = ALL) -> MetricValue:
        """The value of ``metric`` for ``segment`` (KeyError if it was not computed)."""
        for value in self.values:
            if value.metric == metric and value.segment == segment:
                return value
        raise KeyError(f"{metric} / {segment}")

    def metrics(self) -> list[str]:
        """Metric names in report order."""
        return list(dict.fromkeys(value.metric for value in self.values))

    def overall(self) -> list[MetricValue]:
        """The values for segment 'all', in report order."""
        return [value for value in self.values if value.segment == ALL]
