"""Compile declarative rules (``config/segments.yaml``) to SQL.

A rule list becomes one ``CASE WHEN ... THEN ... END`` over the ``account`` table, so placing
a million accounts is one set-based statement: no per-row Python and no ``eval``. Attribute
tests read the JSON ``attributes`` column through typed accessors that yield NULL, never an
error, when an account's value has another type (``"n/a"`` where a number is expected simply
does not match).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    String,
    and_,
    case,
    false,
    literal,
    literal_column,
    not_,
    or_,
    true,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlalchemy.types import TypeEngine

from herald.config import Condition
from herald.models import ACCOUNT

AttributeKind = Literal["number", "text", "bool", "exists"]
_TYPES: dict[str, TypeEngine[Any]] = {
    "number": Float(),
    "text": String(),
    "bool": Boolean(),
    "exists": Boolean(),
}


class attribute_value(FunctionElement[Any]):
    """The typed value of one key of ``account.attributes``, or NULL if absent or mistyped."""

    inherit_cache = True

    def __init__(self, key: str, kind: AttributeKind) -> None:
        # The key is validated by the config model ([A-Za-z_][A-Za-z0-9_]*), so it is safe to
        # render inline; as a literal column it is part of the statement's cache key.
        self.type = _TYPES[kind]
        super().__init__(
            ACCOUNT.c.attributes,
            literal_column(f"'{key}'"),
            literal_column(f"'{kind}'"),
        )


def _parts(element: attribute_value, compiler: SQLCompiler, **kw: Any) -> tuple[str, str, str]:
    column, key, kind = list(element.clauses)
    return compiler.process(column, **kw), str(key).strip("'"), str(kind).strip("'")


@compiles(attribute_value, "sqlite")
def _sqlite(element: attribute_value, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, kind = _parts(element, compiler, **kw)
    path = f"'$.\"{key}\"'"
    json_type = f"json_type({column}, {path})"
    value = f"json_extract({column}, {path})"
    if kind == "number":
        return f"(CASE WHEN {json_type} IN ('integer', 'real') THEN {value} END)"
    if kind == "text":
        return f"(CASE WHEN {json_type} = 'text' THEN {value} END)"
    if kind == "bool":
        return f"(CASE {json_type} WHEN 'true' THEN 1 WHEN 'false' THEN 0 END)"
    return f"(COALESCE({json_type}, 'null') <> 'null')"


@compiles(attribute_value, "postgresql")
def _postgresql(element: attribute_value, compiler: SQLCompiler, **kw: Any) -> str:
    column, key, kind = _parts(element, compiler, **kw)
    json_type = f"jsonb_typeof({column} -> '{key}')"
    text = f"({column} ->> '{key}')"
    if kind == "number":
        return f"(CASE WHEN {json_type} = 'number' THEN CAST({text} AS DOUBLE PRECISION) END)"
    if kind == "text":
        return f"(CASE WHEN {json_type} = 'string' THEN {text} END)"
    if kind == "bool":
        return f"(CASE WHEN {json_type} = 'boolean' THEN CAST({text} AS BOOLEAN) END)"
    return f"(COALESCE({json_type}, 'null') <> 'null')"


def _kind_of(value: Any) -> AttributeKind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "text"


def _equals(subject: Condition, value: Any) -> ColumnElement[bool]:
    if subject.field is not None:
        return ACCOUNT.c[subject.field] == literal(value)
    assert subject.attribute is not None
    return attribute_value(subject.attribute, _kind_of(value)) == literal(value)


def _member(subject: Condition, values: Sequence[Any]) -> ColumnElement[bool]:
    if subject.field is not None:
        return ACCOUNT.c[subject.field].in_(values)
    assert subject.attribute is not None
    by_kind: dict[AttributeKind, list[Any]] = {}
    for value in values:
        by_kind.setdefault(_kind_of(value), []).append(value)
    return or_(*(attribute_value(subject.attribute, k).in_(v) for k, v in by_kind.items()))


def _exists(subject: Condition) -> ColumnElement[bool]:
    if subject.field is not None:
        return ACCOUNT.c[subject.field].is_not(None)
    assert subject.attribute is not None
    return attribute_value(subject.attribute, "exists") == true()


def compile_condition(condition: Condition) -> ColumnElement[bool]:
    """The SQL boolean for ``condition`` (NULL counts as no match)."""
    if condition.all is not None:
        return and_(*(compile_condition(c) for c in condition.all))
    if condition.any is not None:
        return or_(*(compile_condition(c) for c in condition.any))
    if condition.not_ is not None:
        return not_(_definite(compile_condition(condition.not_)))
    operator, operand = condition.operator, condition.operand
    if operator == "equals":
        return _equals(condition, operand)
    if operator == "not_equals":
        # An account without the value is "not equal": NULL must not swallow the test.
        return not_(_definite(_equals(condition, operand)))
    if operator == "in":
        return _member(condition, operand)
    if operator == "not_in":
        return not_(_definite(_member(condition, operand)))
    if operator == "exists":
        return _exists(condition) if operand else not_(_exists(condition))
    assert condition.attribute is not None  # comparisons are attribute-only (config checks)
    number = attribute_value(condition.attribute, "number")
    comparisons: dict[str, ColumnElement[bool]] = {
        "gt": number > operand,
        "gte": number >= operand,
        "lt": number < operand,
        "lte": number <= operand,
    }
    return comparisons[operator]


def _definite(expression: ColumnElement[bool]) -> ColumnElement[bool]:
    """``expression`` with NULL read as false, so that negating it is two-valued."""
    return case((expression, true()), else_=false())


def first_match(
    rules: Sequence[tuple[str, Condition, str]], *, default: str, default_rule: str = "default"
) -> tuple[ColumnElement[str], ColumnElement[str]]:
    """Two CASE expressions over ``account``: the outcome of the first matching rule and its name.

    ``rules`` are ``(rule_name, condition, outcome)`` in priority order.
    """
    if not rules:
        return literal(default), literal(default_rule)
    whens = [compile_condition(condition) for _, condition, _ in rules]
    outcome = case(*((w, o) for w, (_, _, o) in zip(whens, rules, strict=True)), else_=default)
    rule = case(*((w, n) for w, (n, _, _) in zip(whens, rules, strict=True)), else_=default_rule)
    return outcome, rule
