"""``targets.yaml``: the success targets from the strategy document, and how the weekly
report judges them (see docs/report.md for the rule in full)."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from herald.config.base import StrictModel
from herald.config.names import MetricKey

# The phases a target's trajectory may start from (the sunset has one date per segment).
StartPhase = Literal["preview", "announcement", "deprecation"]
DEFAULT_HEADLINE: tuple[MetricKey, ...] = ("migration_rate", "message_reach")


class Target(StrictModel):
    """A success metric's target; ``value: null`` means monitored without a target.

    A target with ``within_days`` is *dated*: it should be reached that many days after
    ``judged_from`` (its phase's first day), along a straight line from zero, and the report
    judges it against that line and the recent pace. Any other target is a level to hold.
    """

    label: str = Field(min_length=1)
    value: float | None
    comparison: Literal[">", ">=", "<", "<="] | None = None
    unit: Literal["share", "per_100_accounts", "score"] = "share"
    within_days: int | None = Field(default=None, gt=0)
    judged_from: StartPhase | None = Field(
        default=None,
        description="Not judged before this phase's first day (null: from the first send).",
    )
    tolerance: float = Field(
        default=0.0,
        ge=0,
        description="The target counts as met this close to it (for 100%-by-definition targets).",
    )
    min_sample: int = Field(
        default=0,
        ge=0,
        description="Fewer than this many in the denominator: too early to judge.",
    )
    limit: float | None = Field(default=None, description="A line never to cross.")
    source: str = Field(min_length=1)

    @model_validator(mode="after")
    def _comparison_with_value(self) -> Self:
        if (self.value is None) != (self.comparison is None):
            raise ValueError("'value' and 'comparison' go together (both set, or both null)")
        if self.within_days is not None and self.comparison not in (">", ">="):
            raise ValueError("'within_days' needs a target to reach ('>' or '>=')")
        if self.within_days is not None and self.judged_from is None:
            raise ValueError("'within_days' counts from a phase: set 'judged_from'")
        return self

    @property
    def dated(self) -> bool:
        """Whether it has a date to be reached by (a trajectory)."""
        return self.within_days is not None and self.value is not None


class TargetsConfig(StrictModel):
    """``targets.yaml``: the success targets from the strategy document."""

    targets: dict[MetricKey, Target] = Field(min_length=1)
    headline: list[MetricKey] = Field(
        default_factory=lambda: list(DEFAULT_HEADLINE),
        min_length=1,
        description="The targets the report's headline verdict follows (the others are listed "
        "as needing attention, not counted).",
    )

    @model_validator(mode="after")
    def _headline_targets_exist(self) -> Self:
        for metric in self.headline:
            target = self.targets.get(metric)
            if target is None or target.value is None:
                raise ValueError(f"headline: {metric!r} is not a target with a value")
        return self
