"""``evidence.yaml``: the performance evidence messages quote, never typed into templates.

Messages print ``value`` in the recipient's notation (Babel: 101.76x, 101,76x; 99.7%, 99,7 %)
inside sentences of their own, which are translated with the rest of the templates
(``partials/evidence.*``); ``source`` and ``method`` record where each figure comes from.
"""

from __future__ import annotations

from typing import Literal, Self

from pydantic import Field, model_validator

from herald.config.base import StrictModel
from herald.config.names import EvidenceKey


class Figure(StrictModel):
    """A measured figure, with where it comes from and how it was measured."""

    value: float
    unit: Literal["x", "percent"]
    source: str = Field(min_length=1, description="Where the figure was measured.")
    method: str = Field(min_length=1, description="How it was measured.")


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
