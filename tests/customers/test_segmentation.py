"""Segmentation: rules compile to SQL, first match wins, every active account gets one segment."""

from __future__ import annotations

import csv
from datetime import date
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, update

from herald.config import Condition, SegmentsConfig, load_config
from herald.customers.rules import compile_condition, first_match, rule_inputs
from herald.customers.segmentation import assign_segments, priority_matrix
from herald.models import ACCOUNT, SEGMENT_ASSIGNMENT
from tests.support.environment import ROOT, Database

DAY = date(2026, 11, 24)


def add_accounts(db: Database, *accounts: dict[str, Any]) -> None:
    rows = []
    for n, overrides in enumerate(accounts, start=1):
        row = {
            "external_id": f"A{n}",
            "name": f"Account {n}",
            "tier": "business",
            "region": "emea",
            "industry": "software",
            "lifecycle": "active",
            "migration_state": "not_started",
            "attributes": {},
        }
        row.update(overrides)
        rows.append(row)
    with db.engine.begin() as conn:
        conn.execute(insert(ACCOUNT), rows)


def matching(db: Database, condition: dict[str, Any]) -> list[str]:
    compiled = compile_condition(Condition.model_validate(condition))
    with db.engine.connect() as conn:
        return list(
            conn.execute(
                select(ACCOUNT.c.external_id).where(compiled).order_by(ACCOUNT.c.id)
            ).scalars()
        )


def segments_config() -> SegmentsConfig:
    return load_config(ROOT / "config").segments


class TestRuleCompiler:
    @pytest.fixture
    def accounts(self, db: Database) -> Database:
        add_accounts(
            db,
            {
                "tier": "enterprise",
                "attributes": {"performance_focused": True, "legacy_version": 4.2},
            },
            {
                "tier": "enterprise",
                "attributes": {"performance_focused": False, "legacy_version": 4},
            },
            {
                "industry": None,
                "attributes": {"legacy_version": "n/a", "change_policy": "conservative"},
            },
            {"industry": "banking", "attributes": {"legacy_version": 3.2}},
        )
        return db

    def test_boolean_attribute(self, accounts: Database) -> None:
        """`equals: true` matches JSON true only, not false or a missing key."""
        assert matching(accounts, {"attribute": "performance_focused", "equals": True}) == ["A1"]

    def test_numeric_comparison_ignores_mistyped_values(self, accounts: Database) -> None:
        """A text value where a number is expected does not match and does not fail the query."""
        assert matching(accounts, {"attribute": "legacy_version", "gte": 4.0}) == ["A1", "A2"]
        assert matching(accounts, {"attribute": "legacy_version", "lt": 4}) == ["A4"]

    def test_not_equals_counts_missing_values_as_different(self, accounts: Database) -> None:
        """An account without the attribute is "not equal" to any value."""
        assert matching(accounts, {"attribute": "change_policy", "not_equals": "conservative"}) == [
            "A1",
            "A2",
            "A4",
        ]

    def test_field_membership_and_null_fields(self, accounts: Database) -> None:
        """`not_in` on a nullable column keeps the NULL row (it is in no listed industry)."""
        assert matching(accounts, {"field": "industry", "in": ["banking", "insurance"]}) == ["A4"]
        assert matching(accounts, {"field": "industry", "not_in": ["banking"]}) == [
            "A1",
            "A2",
            "A3",
        ]
        assert matching(accounts, {"field": "industry", "exists": False}) == ["A3"]

    def test_combinators(self, accounts: Database) -> None:
        """all/any/not compose like boolean logic."""
        assert matching(
            accounts,
            {
                "all": [
                    {"field": "tier", "equals": "enterprise"},
                    {"not": {"attribute": "performance_focused", "equals": True}},
                ]
            },
        ) == ["A2"]
        assert matching(
            accounts,
            {
                "any": [
                    {"attribute": "change_policy", "exists": True},
                    {"field": "industry", "equals": "banking"},
                ]
            },
        ) == ["A3", "A4"]

    def test_values_that_look_like_sql_are_data(self, accounts: Database) -> None:
        """A value with quotes and SQL in it is bound as a parameter and matches nothing."""
        assert matching(accounts, {"field": "tier", "equals": "x' OR '1'='1"}) == []

    def test_rules_over_rule_inputs_match_like_rules_over_the_table(
        self, accounts: Database
    ) -> None:
        """Conditions compiled against rule_inputs' subquery select the same accounts."""
        conditions = [
            Condition.model_validate(raw)
            for raw in (
                {"attribute": "performance_focused", "equals": True},
                {"attribute": "legacy_version", "gte": 4},
                {"attribute": "change_policy", "not_equals": "conservative"},
                {"any": [{"field": "industry", "in": ["banking"]}, {"field": "tier", "exists": 1}]},
                {"not": {"attribute": "legacy_version", "exists": True}},
            )
        ]
        inputs, source = rule_inputs(conditions, where=ACCOUNT.c.lifecycle == "active")
        with accounts.engine.connect() as conn:
            for condition in conditions:
                through_inputs = conn.execute(
                    select(inputs.c.id).where(compile_condition(condition, source=source))
                ).scalars()
                direct = conn.execute(
                    select(ACCOUNT.c.id).where(compile_condition(condition))
                ).scalars()
                assert sorted(through_inputs) == sorted(direct), condition

    def test_rule_inputs_read_each_attribute_once(self, db: Database) -> None:
        """The compiled segmentation reads each (attribute, type) the rules test once a row."""
        config = segments_config()
        conditions = [r.when for r in config.rules] + [r.when for r in config.readiness.rules]
        inputs, source = rule_inputs(conditions, where=ACCOUNT.c.lifecycle == "active")
        segment, _ = first_match(
            [(r.name, r.when, r.segment) for r in config.rules],
            default=config.default,
            source=source,
        )
        sql = str(select(segment).select_from(inputs).compile(db.engine))
        # legacy_version is tested by four rules, always as a number: one accessor, not four.
        assert sql.count("legacy_version") == 2  # its type test and its value
        assert "OFFSET" in sql  # kept apart, so no database copies it into each test


class TestAssignSegments:
    def test_first_matching_rule_wins_and_default_catches_the_rest(self, db: Database) -> None:
        """Each active account gets exactly one segment, from the first rule it matches."""
        add_accounts(
            db,
            # performance-focused comes before regulated-industry: early adopter
            {"industry": "banking", "attributes": {"performance_focused": True}},
            {"industry": "banking"},  # conservative by industry
            {"tier": "enterprise", "attributes": {"legacy_version": 4.3}},  # early adopter
            {"attributes": {"legacy_version": 3.6}},  # no rule: standard
            {"lifecycle": "churned", "attributes": {"performance_focused": True}},  # not assigned
        )
        result = assign_segments(engine=db.engine, config=segments_config(), as_of=DAY)

        assert result.active_accounts == 4
        assert result.by_segment == {"early_adopter": 2, "standard": 1, "conservative": 1}
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    ACCOUNT.c.external_id,
                    SEGMENT_ASSIGNMENT.c.segment,
                    SEGMENT_ASSIGNMENT.c.rule,
                    SEGMENT_ASSIGNMENT.c.readiness,
                )
                .join(SEGMENT_ASSIGNMENT, SEGMENT_ASSIGNMENT.c.account_id == ACCOUNT.c.id)
                .order_by(ACCOUNT.c.id)
            ).all()
        assert [tuple(r) for r in rows] == [
            ("A1", "early_adopter", "performance-focused", "not_ready"),
            ("A2", "conservative", "regulated-industry", "not_ready"),
            ("A3", "early_adopter", "enterprise-on-recent-version", "ready"),
            ("A4", "standard", "default", "needs_support"),
        ]

    def test_history_is_kept_per_day_and_a_rerun_replaces_its_day(self, db: Database) -> None:
        """A new day adds rows; re-running a day replaces it (a churned account drops out)."""
        add_accounts(db, {}, {"industry": "banking"})
        config = segments_config()
        assign_segments(engine=db.engine, config=config, as_of=date(2026, 11, 1))
        with db.engine.begin() as conn:
            conn.execute(
                update(ACCOUNT).where(ACCOUNT.c.external_id == "A2").values(lifecycle="churned")
            )
        assign_segments(engine=db.engine, config=config, as_of=DAY)
        again = assign_segments(engine=db.engine, config=config, as_of=DAY)

        assert again.by_segment == {"early_adopter": 0, "standard": 1, "conservative": 0}
        with db.engine.connect() as conn:
            days = conn.execute(
                select(SEGMENT_ASSIGNMENT.c.as_of, SEGMENT_ASSIGNMENT.c.account_id).order_by(
                    SEGMENT_ASSIGNMENT.c.as_of, SEGMENT_ASSIGNMENT.c.account_id
                )
            ).all()
        assert [tuple(r) for r in days] == [
            (date(2026, 11, 1), 1),
            (date(2026, 11, 1), 2),
            (DAY, 1),
        ]

    def test_priority_matrix_counts_each_cell(self, db: Database, tmp_path: Path) -> None:
        """The matrix has a row per segment, a column per readiness level and correct totals."""
        add_accounts(
            db,
            {"attributes": {"performance_focused": True, "legacy_version": 4.1}},
            {"attributes": {"performance_focused": True, "legacy_version": 3.6}},
            {"migration_state": "in_progress", "attributes": {"legacy_version": 3.0}},
            {"attributes": {"legacy_version": 3.9}},
        )
        config = segments_config()
        assign_segments(engine=db.engine, config=config, as_of=DAY)
        matrix = priority_matrix(engine=db.engine, config=config, as_of=DAY)
        path = matrix.write_csv(tmp_path / "matrix.csv")

        with path.open() as handle:
            rows = {row["segment"]: row for row in csv.DictReader(handle)}
        assert rows["early_adopter"]["ready"] == "1"
        assert rows["early_adopter"]["needs_support"] == "1"
        assert rows["conservative"]["ready"] == "1"  # very old version, but already moving
        assert rows["standard"]["needs_support"] == "1"
        assert rows["total"]["total"] == "4"
