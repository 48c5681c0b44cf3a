"""``evidence.yaml``: the performance evidence messages quote, never typed into templates."""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from herald.config.base import StrictModel
from herald.config.names import EvidenceKey


class Figure(StrictModel):
    """A measured figure, with where it comes from and how it was measured."""

    value: float
    unit: Literal["x", "percent"]
    display: str = Field(min_length=1, description="How messages print it, e.g. '101.76x'.")
    claim: str = Field(min_length=1, description="The sentence the figure supports.")
    source: str = Field(min_length=1)
    method: str = Field(min_length=1)


class EvidenceConfig(StrictModel):
    """``evidence.yaml``: the performance evidence messages quote, never typed into templates."""

    source_document: str = Field(min_length=1)
    figures: dict[EvidenceKey, Figure]

    @model_validator(mode="after")
    def _complete(self) -> Self:
        missing = sorted(set(EvidenceKey.__args__) - set(self.figures))  # type: ignore[attr-defined]
        if missing:
            raise ValueError(f"missing figures: {', '.join(missing)}")
        return self
