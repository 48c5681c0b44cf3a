"""Compile declarative rules (``config/segments.yaml``) to SQL.

A rule list becomes one ``CASE WHEN ... THEN ... END`` over the ``account`` table, so placing
a million accounts is one set-based statement: no per-row Python and no ``eval``. Attribute
tests read the JSON ``attributes`` column through typed accessors that yield NULL, never an
error, when an account's value has another type (``"n/a"`` where a number is expected simply
does not match).

Conditions read an account through a :class:`RuleSource`: the ``account`` table itself by
default, or (:func:`rule_inputs`) a subquery that reads each attribute the rules test once per
account, so a dozen tests of three attributes cost three JSON look-ups per row, not a dozen.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any, Literal

from sqlalchemy import (
    Boolean,
    ColumnElement,
    Float,
    String,
    Subquery,
    and_,
    case,
    false,
    literal,
    literal_column,
    not_,
    or_,
    select,
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


class RuleSource:
    """Where compiled conditions read an account's fields and typed attributes.

    The default reads the ``account`` table directly (any statement over ``account`` can use
    the condition); :func:`rule_inputs` gives one that reads the columns of a subquery.
    """

    def field(self, name: str) -> ColumnElement[Any]:
        """The column of account field ``name``."""
        return ACCOUNT.c[name]

    def attribute(self, key: str, kind: AttributeKind) -> ColumnElement[Any]:
        """The typed value of attribute ``key`` (NULL if absent or of another kind)."""
        return attribute_value(key, kind)


ACCOUNT_SOURCE = RuleSource()


class _Recorder(RuleSource):
    """Reads the account table like the default, noting every field and attribute asked for."""

    def __init__(self) -> None:
        self.fields: dict[str, None] = {}  # insertion-ordered sets: the SQL is deterministic
        self.attributes: dict[tuple[str, AttributeKind], None] = {}

    def field(self, name: str) -> ColumnElement[Any]:
        self.fields[name] = None
        return super().field(name)

    def attribute(self, key: str, kind: AttributeKind) -> ColumnElement[Any]:
        self.attributes[(key, kind)] = None
        return super().attribute(key, kind)


class _SubquerySource(RuleSource):
    def __init__(self, subquery: Subquery, labels: dict[tuple[str, AttributeKind], str]) -> None:
        self._subquery = subquery
        self._labels = labels

    def field(self, name: str) -> ColumnElement[Any]:
        return self._subquery.c[name]

    def attribute(self, key: str, kind: AttributeKind) -> ColumnElement[Any]:
        return self._subquery.c[self._labels[(key, kind)]]


def rule_inputs(
    conditions: Iterable[Condition], *, where: ColumnElement[bool]
) -> tuple[Subquery, RuleSource]:
    """The accounts matching ``where`` with ``id`` and every value ``conditions`` read, each
    computed once per account, and the source that compiles conditions against them.

    SQLite's JSON functions re-find a key in the text at every call, and both databases would
    copy an attribute's expression into every test of it if they merged the subquery into the
    statement reading it: ``OFFSET 0`` keeps it apart (SQLite does not flatten a subquery with
    an OFFSET, Postgres does not pull one up), so each attribute is read once per row.
    """
    recorder = _Recorder()
    for condition in conditions:
        compile_condition(condition, source=recorder)
    labels = {
        subject: f"attr_{index}" for index, subject in enumerate(recorder.attributes, start=1)
    }
    columns: list[ColumnElement[Any]] = [ACCOUNT.c.id]
    columns += [ACCOUNT.c[name] for name in recorder.fields if name != "id"]
    columns += [attribute_value(key, kind).label(labels[(key, kind)]) for key, kind in labels]
    subquery = select(*columns).where(where).offset(0).subquery("rule_input")
    return subquery, _SubquerySource(subquery, labels)


def _kind_of(value: Any) -> AttributeKind:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int | float):
        return "number"
    return "text"


def _equals(subject: Condition, value: Any, source: RuleSource) -> ColumnElement[bool]:
    if subject.field is not None:
        return source.field(subject.field) == literal(value)
    assert subject.attribute is not None
    return source.attribute(subject.attribute, _kind_of(value)) == literal(value)


def _member(subject: Condition, values: Sequence[Any], source: RuleSource) -> ColumnElement[bool]:
    if subject.field is not None:
        return source.field(subject.field).in_(values)
    assert subject.attribute is not None
    by_kind: dict[AttributeKind, list[Any]] = {}
    for value in values:
        by_kind.setdefault(_kind_of(value), []).append(value)
    return or_(*(source.attribute(subject.attribute, k).in_(v) for k, v in by_kind.items()))


def _exists(subject: Condition, source: RuleSource) -> ColumnElement[bool]:
    if subject.field is not None:
        return source.field(subject.field).is_not(None)
    assert subject.attribute is not None
    return source.attribute(subject.attribute, "exists") == true()


def compile_condition(
    condition: Condition, *, source: RuleSource = ACCOUNT_SOURCE
) -> ColumnElement[bool]:
    """The SQL boolean for ``condition`` (NULL counts as no match), reading ``source``."""
    if condition.all is not None:
        return and_(*(compile_condition(c, source=source) for c in condition.all))
    if condition.any is not None:
        return or_(*(compile_condition(c, source=source) for c in condition.any))
    if condition.not_ is not None:
        return not_(_definite(compile_condition(condition.not_, source=source)))
    operator, operand = condition.operator, condition.operand
    if operator == "equals":
        return _equals(condition, operand, source)
    if operator == "not_equals":
        # An account without the value is "not equal": NULL must not swallow the test.
        return not_(_definite(_equals(condition, operand, source)))
    if operator == "in":
        return _member(condition, operand, source)
    if operator == "not_in":
        return not_(_definite(_member(condition, operand, source)))
    if operator == "exists":
        return _exists(condition, source) if operand else not_(_exists(condition, source))
    assert condition.attribute is not None  # comparisons are attribute-only (config checks)
    number = source.attribute(condition.attribute, "number")
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
    rules: Sequence[tuple[str, Condition, str]],
    *,
    default: str,
    default_rule: str = "default",
    source: RuleSource = ACCOUNT_SOURCE,
) -> tuple[ColumnElement[str], ColumnElement[str]]:
    """Two CASE expressions over ``source``: the outcome of the first matching rule and its name.

    ``rules`` are ``(rule_name, condition, outcome)`` in priority order.
    """
    if not rules:
        return literal(default), literal(default_rule)
    whens = [compile_condition(condition, source=source) for _, condition, _ in rules]
    outcome = case(*((w, o) for w, (_, _, o) in zip(whens, rules, strict=True)), else_=default)
    rule = case(*((w, n) for w, (n, _, _) in zip(whens, rules, strict=True)), else_=default_rule)
    return outcome, rule
