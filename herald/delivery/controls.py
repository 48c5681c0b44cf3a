"""Whether a phase may send: paused (by an operator or the circuit breaker) and approved.

Both are the state of the phase's ``phase_control`` row, upserted on (campaign, message),
and each change is also appended to the audit log with who and why. A row for the message
``*`` (:data:`CAMPAIGN_WIDE`) pauses every phase and notice of the campaign; it carries no
approval (a real send is approved phase by phase), and pausing or resuming leaves a phase's
approval as it is.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from herald import audit
from herald.db import dialect_insert
from herald.models import PHASE_CONTROL, utcnow

CAMPAIGN_WIDE = "*"


def paused_reason(conn: Connection, *, campaign: str, message: str) -> str | None:
    """Why the phase (or the whole campaign, message ``*``) is paused; None when it may send."""
    for name in (CAMPAIGN_WIDE, message):
        row = conn.execute(
            select(PHASE_CONTROL.c.paused, PHASE_CONTROL.c.reason).where(
                PHASE_CONTROL.c.campaign == campaign, PHASE_CONTROL.c.message == name
            )
        ).first()
        if row is not None and row.paused:
            return str(row.reason or "paused")
    return None


def _upsert(
    conn: Connection, *, campaign: str, message: str, who: str, now: datetime, **state: Any
) -> None:
    """Set ``state`` on the control of (campaign, message), creating it (not paused) if new."""
    created = {"paused": False, "changed_by": who, "changed_at": now, **state}
    statement = dialect_insert(conn.dialect.name)(PHASE_CONTROL).values(
        campaign=campaign, message=message, **created
    )
    conn.execute(
        statement.on_conflict_do_update(index_elements=["campaign", "message"], set_=state)
    )


def set_paused(
    engine: Engine,
    *,
    campaign: str,
    message: str,
    paused: bool,
    reason: str,
    who: str | None = None,
) -> None:
    """Pause or resume a phase, recording who and why in the audit log."""
    _change(
        engine,
        campaign=campaign,
        message=message,
        who=who,
        action="phase.paused" if paused else "phase.resumed",
        detail={"reason": reason},
        by="changed_by",
        at="changed_at",
        paused=paused,
        reason=reason,
    )


def _change(
    engine: Engine,
    *,
    campaign: str,
    message: str,
    who: str | None,
    action: str,
    detail: dict[str, str],
    by: str,
    at: str,
    **values: Any,
) -> str:
    """Set ``values`` on the phase's control, with who and when in its ``by`` and ``at``
    columns, and record ``action`` in the audit log, in one transaction; returns who."""
    who = who or audit.actor()
    now = utcnow()
    with engine.begin() as conn:
        _upsert(
            conn,
            campaign=campaign,
            message=message,
            who=who,
            now=now,
            **values,
            **{by: who, at: now},
        )
        audit.record(conn, action, campaign=campaign, phase=message, detail=detail, who=who)
    return who


@dataclass(frozen=True)
class Approval:
    """Who approved a phase's real send, when, and what they noted."""

    by: str
    at: datetime
    note: str


def approve(
    engine: Engine, *, campaign: str, message: str, note: str = "", who: str | None = None
) -> str:
    """Record that ``who`` approved the real send of a phase (on its control, and in the
    audit log); returns who. A later approval replaces an earlier one."""
    if message == CAMPAIGN_WIDE:
        raise ValueError("a real send is approved phase by phase, not campaign-wide")
    return _change(
        engine,
        campaign=campaign,
        message=message,
        who=who,
        action="phase.approved",
        detail={"note": note},
        by="approved_by",
        at="approved_at",
        approval_note=note,
    )


def approval(conn: Connection, *, campaign: str, message: str) -> Approval | None:
    """Who approved the phase's real send, and when (the latest approval), if anyone did."""
    row = conn.execute(
        select(
            PHASE_CONTROL.c.approved_by,
            PHASE_CONTROL.c.approved_at,
            PHASE_CONTROL.c.approval_note,
        ).where(PHASE_CONTROL.c.campaign == campaign, PHASE_CONTROL.c.message == message)
    ).first()
    if row is None or row.approved_by is None or row.approved_at is None:
        return None
    return Approval(by=str(row.approved_by), at=row.approved_at, note=row.approval_note or "")
