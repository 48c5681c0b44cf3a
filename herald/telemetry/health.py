"""Source health: a flow must not run on a source whose last batch broke its contract.

A source is unhealthy while its most recent ``telemetry_batch`` is ``rejected`` and no
operator override (audit action ``telemetry.override``, detail ``{"source", "reason"}``) was
recorded after it. A good batch, or an override, makes it healthy again.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, Engine, select

from herald.audit import record
from herald.config import HeraldConfig
from herald.errors import HeraldError
from herald.models import AUDIT_LOG, TELEMETRY_BATCH, as_utc

OVERRIDE_ACTION = "telemetry.override"


class SourceRejected(HeraldError):
    """A source a flow depends on has a rejected last batch and no override."""

    def __init__(self, flow_name: str, problems: list[str]) -> None:
        self.flow_name = flow_name
        self.problems = problems
        lines = "\n".join(f"  - {problem}" for problem in problems)
        super().__init__(
            f"{flow_name} will not run: telemetry it depends on failed its data contract:\n"
            f"{lines}\n"
            "Load a good batch of the source, or, once the data is understood, override: "
            "herald telemetry override SOURCE --reason TEXT"
        )


@dataclass(frozen=True)
class Override:
    """An operator's decision to run despite a rejected batch."""

    at: datetime
    actor: str
    reason: str


@dataclass(frozen=True)
class SourceStatus:
    """A source's most recent batch, and whether an override followed it."""

    source: str
    batch_id: str
    file: str
    received_at: datetime
    status: str
    rows: int
    loaded: int
    quarantined: int
    failed_check: str | None
    failed_column: str | None
    detail: str | None
    data_docs: str | None
    override: Override | None

    @property
    def healthy(self) -> bool:
        """Loaded, or rejected and overridden since."""
        return self.status != "rejected" or self.override is not None

    @property
    def problem(self) -> str:
        """What is wrong, naming the source, the check, the column and the file."""
        column = f" on column '{self.failed_column}'" if self.failed_column else ""
        return (
            f"{self.source}: the last batch ({self.file}, received "
            f"{self.received_at:%Y-%m-%d %H:%M} UTC, batch {self.batch_id}) was rejected by "
            f"{self.failed_check}{column}: {self.detail or 'no detail'}"
        )


def source_status(conn: Connection, *, sources: Iterable[str]) -> list[SourceStatus]:
    """The most recent batch of each source that has one, with the override after it."""
    statuses: list[SourceStatus] = []
    for source in sources:
        batch = (
            conn.execute(
                select(TELEMETRY_BATCH)
                .where(TELEMETRY_BATCH.c.source == source)
                .order_by(TELEMETRY_BATCH.c.received_at.desc())
                .limit(1)
            )
            .mappings()
            .first()
        )
        if batch is None:
            continue
        override = None
        if batch["status"] == "rejected":
            override = _override_after(conn, source=source, since=batch["received_at"])
        statuses.append(
            SourceStatus(
                source=source,
                batch_id=batch["id"],
                file=batch["file"],
                received_at=as_utc(batch["received_at"]),
                status=batch["status"],
                rows=batch["rows"],
                loaded=batch["loaded"],
                quarantined=batch["quarantined"],
                failed_check=batch["failed_check"],
                failed_column=batch["failed_column"],
                detail=batch["detail"],
                data_docs=batch["data_docs"],
                override=override,
            )
        )
    return statuses


def _override_after(conn: Connection, *, source: str, since: Any) -> Override | None:
    rows = conn.execute(
        select(AUDIT_LOG.c.at, AUDIT_LOG.c.actor, AUDIT_LOG.c.detail)
        .where(AUDIT_LOG.c.action == OVERRIDE_ACTION, AUDIT_LOG.c.at > since)
        .order_by(AUDIT_LOG.c.at.desc())
    )
    for at, actor, detail in rows:
        if isinstance(detail, dict) and detail.get("source") == source:
            return Override(at=as_utc(at), actor=actor, reason=str(detail.get("reason", "")))
    return None


def source_problems(conn: Connection, *, sources: Iterable[str]) -> list[str]:
    """One message per source whose last batch was rejected and not overridden since."""
    return [status.problem for status in source_status(conn, sources=sources) if not status.healthy]


def require_healthy(engine: Engine, *, config: HeraldConfig, flow_name: str) -> None:
    """Raise SourceRejected if a source ``flow_name`` depends on (telemetry.yaml) is unhealthy."""
    sources = config.telemetry.depends_on.get(flow_name, [])
    if not sources:
        return
    with engine.connect() as conn:
        problems = source_problems(conn, sources=sources)
    if problems:
        raise SourceRejected(flow_name, problems)


def record_override(conn: Connection, *, source: str, reason: str, who: str | None = None) -> None:
    """Record an operator override of ``source``'s rejected last batch (audit log)."""
    reason = reason.strip()
    if not reason:
        raise ValueError("an override needs a reason")
    record(conn, OVERRIDE_ACTION, detail={"source": source, "reason": reason}, who=who)
