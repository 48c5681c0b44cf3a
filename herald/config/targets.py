"""``targets.yaml``: the success targets from the strategy document."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from herald.config.base import StrictModel
from herald.config.names import MetricKey


class Target(StrictModel):
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


class TargetsConfig(StrictModel):
    """``targets.yaml``: the success targets from the strategy document."""

    targets: dict[MetricKey, Target] = Field(min_length=1)
