"""Place every active account in exactly one segment (and one readiness level) as of a day.

One ``INSERT ... SELECT`` with the compiled rule CASE expressions does the work for any number
of accounts; the rows for each day are kept, so ``segment_assignment`` is the history.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from datetime import date
from pathlib import Path

from sqlalchemy import Connection, Engine, delete, func, insert, literal, select

from herald.config import SegmentsConfig
from herald.customers.rules import first_match, rule_inputs
from herald.models import (
    ACCOUNT,
    SEGMENT_ASSIGNMENT,
    AccountLifecycle,
    utcnow,
)


@dataclass(frozen=True)
class SegmentationResult:
    """What one segmentation run assigned."""

    as_of: date
    active_accounts: int
    by_segment: dict[str, int]

    @property
    def assigned(self) -> int:
        """Accounts assigned a segment (equals ``active_accounts``)."""
        return sum(self.by_segment.values())


@dataclass(frozen=True)
class PriorityMatrix:
    """Accounts per (segment, readiness) as of a day: the rollout priority matrix."""

    as_of: date
    segments: list[tuple[str, str]]  # (name, label) in rollout order
    levels: list[tuple[str, str]]  # (name, label), most ready first
    counts: dict[tuple[str, str], int] = field(default_factory=dict)

    def count(self, segment: str, level: str) -> int:
        """Accounts in one cell."""
        return self.counts.get((segment, level), 0)

    def rows(self) -> list[dict[str, str | int]]:
        """One row per segment (plus a total row), a column per readiness level."""
        out: list[dict[str, str | int]] = []
        for name, label in self.segments:
            row: dict[str, str | int] = {"segment": name, "label": label}
            for level, _ in self.levels:
                row[level] = self.count(name, level)
            row["total"] = sum(self.count(name, level) for level, _ in self.levels)
            out.append(row)
        total: dict[str, str | int] = {"segment": "total", "label": "All active accounts"}
        for level, _ in self.levels:
            total[level] = sum(self.count(name, level) for name, _ in self.segments)
        total["total"] = sum(self.counts.values())
        out.append(total)
        return out

    def write_csv(self, path: Path) -> Path:
        """Write the matrix as CSV (a row per segment, a column per readiness level)."""
        path.parent.mkdir(parents=True, exist_ok=True)
        rows = self.rows()
        with path.open("w", newline="", encoding="utf-8") as handle:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
        return path


def assign_segments(*, engine: Engine, config: SegmentsConfig, as_of: date) -> SegmentationResult:
    """Give every active account one segment and readiness as of ``as_of``, replacing that day."""
    readiness = config.readiness
    is_active = ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value
    accounts, reads = rule_inputs(
        [r.when for r in config.rules] + [r.when for r in readiness.rules], where=is_active
    )
    segment, rule = first_match(
        [(r.name, r.when, r.segment) for r in config.rules], default=config.default, source=reads
    )
    level, level_rule = first_match(
        [(r.name, r.when, r.level) for r in readiness.rules],
        default=readiness.default,
        source=reads,
    )
    source = select(
        accounts.c.id,
        literal(as_of),
        segment,
        rule,
        level,
        level_rule,
        literal(utcnow(), SEGMENT_ASSIGNMENT.c.assigned_at.type),
    )
    with engine.begin() as conn:
        # Re-running a day replaces it whole: an account churned since then loses its row.
        conn.execute(delete(SEGMENT_ASSIGNMENT).where(SEGMENT_ASSIGNMENT.c.as_of == as_of))
        conn.execute(
            insert(SEGMENT_ASSIGNMENT).from_select(
                [
                    "account_id",
                    "as_of",
                    "segment",
                    "rule",
                    "readiness",
                    "readiness_rule",
                    "assigned_at",
                ],
                source,
            )
        )
        by_segment = _counts_by_segment(conn, as_of=as_of)
        active = conn.execute(
            select(func.count()).where(ACCOUNT.c.lifecycle == AccountLifecycle.ACTIVE.value)
        ).scalar_one()
    ordered = {name: by_segment.get(name, 0) for name in config.names}
    return SegmentationResult(as_of=as_of, active_accounts=active, by_segment=ordered)


def _counts_by_segment(conn: Connection, *, as_of: date) -> dict[str, int]:
    rows = conn.execute(
        select(SEGMENT_ASSIGNMENT.c.segment, func.count())
        .where(SEGMENT_ASSIGNMENT.c.as_of == as_of)
        .group_by(SEGMENT_ASSIGNMENT.c.segment)
    )
    return dict(rows.tuples().all())


def priority_matrix(*, engine: Engine, config: SegmentsConfig, as_of: date) -> PriorityMatrix:
    """Count the accounts of each (segment, readiness) cell assigned as of ``as_of``."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SEGMENT_ASSIGNMENT.c.segment, SEGMENT_ASSIGNMENT.c.readiness, func.count())
            .where(SEGMENT_ASSIGNMENT.c.as_of == as_of)
            .group_by(SEGMENT_ASSIGNMENT.c.segment, SEGMENT_ASSIGNMENT.c.readiness)
        )
        counts = {(segment, level): count for segment, level, count in rows}
    return PriorityMatrix(
        as_of=as_of,
        segments=[(s.name, s.label) for s in config.segments],
        levels=[(level.name, level.label) for level in config.readiness.levels],
        counts=counts,
    )
