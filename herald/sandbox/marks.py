"""How synthetic data is told apart from real data, and how what it produces is marked.

Every telemetry row a rehearsal makes up (adoption, tickets, surveys, performance reports)
carries ``batch_id = SYNTHETIC_BATCH``; :func:`synthetic_sources` finds them, so a report
built on such data says so whoever runs it. A report made inside a rehearsal says so anyway.
"""

from __future__ import annotations

from sqlalchemy import Connection, select

from herald.models import ADOPTION_EVENT, PERFORMANCE_REPORT, SATISFACTION_RESPONSE, SUPPORT_TICKET

SYNTHETIC_BATCH = "rehearsal"
REHEARSAL_MARK = "Rehearsal: synthetic data, not real customers"
SYNTHETIC_MARK = "Synthetic data: made up by a rehearsal, not real customers"
SUBJECT_PREFIX = "[Rehearsal] "

_TABLES = {
    "adoption": ADOPTION_EVENT,
    "support": SUPPORT_TICKET,
    "survey": SATISFACTION_RESPONSE,
    "performance": PERFORMANCE_REPORT,
}


def synthetic_sources(conn: Connection) -> list[str]:
    """The telemetry sources holding rows a rehearsal made up."""
    return [
        name
        for name, table in _TABLES.items()
        if conn.execute(
            select(table.c.id).where(table.c.batch_id == SYNTHETIC_BATCH).limit(1)
        ).first()
        is not None
    ]


def mark(*, rehearsal: bool, synthetic: list[str]) -> str | None:
    """The banner a page, chart or subject carries (None: real data)."""
    if rehearsal:
        return REHEARSAL_MARK
    if synthetic:
        return SYNTHETIC_MARK
    return None
