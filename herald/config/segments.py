"""``segments.yaml``: the segments in rollout order, the rules that place each account in one,
and the readiness axis of the rollout priority matrix."""

from __future__ import annotations

from typing import Any, Self

from pydantic import Field, model_validator

from herald.config.base import AttributeKey, Scalar, Slug, StrictModel
from herald.config.names import AccountField

_COMPARISONS = ("gt", "gte", "lt", "lte")
_OPERATORS = ("equals", "not_equals", "in", "not_in", *_COMPARISONS, "exists")


class Condition(StrictModel):
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


class SegmentDef(StrictModel):
    """A segment the rollout treats alike (messages, timing, sunset date)."""

    name: Slug
    label: str = Field(min_length=1)
    description: str = ""


class SegmentRule(StrictModel):
    """Accounts matching ``when`` join ``segment``; the first matching rule wins."""

    name: Slug
    segment: Slug
    when: Condition


class ReadinessLevel(StrictModel):
    """A level of readiness to migrate, ordered from most to least ready."""

    name: Slug
    label: str = Field(min_length=1)


class ReadinessRule(StrictModel):
    """Accounts matching ``when`` get readiness ``level``; first match wins."""

    name: Slug
    level: Slug
    when: Condition


class Readiness(StrictModel):
    """The readiness axis of the rollout priority matrix."""

    levels: list[ReadinessLevel] = Field(min_length=1)
    default: Slug
    rules: list[ReadinessRule] = Field(default_factory=list)


class SegmentsConfig(StrictModel):
    """``segments.yaml``: segments in rollout order, the rules that place accounts, readiness."""

    segments: list[SegmentDef] = Field(min_length=1)
    default: Slug
    rules: list[SegmentRule] = Field(default_factory=list)
    readiness: Readiness

    @property
    def names(self) -> list[str]:
        """Segment names in rollout order."""
        return [segment.name for segment in self.segments]
