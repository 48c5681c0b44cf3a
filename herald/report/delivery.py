"""Sending the weekly report to leadership, once per address and report.

``report_delivery`` holds one row per (campaign, report, e-mail) and goes through the same
states, batches and recovery as the customer ledger (:mod:`herald.delivery.ledger`,
:mod:`herald.delivery.recovery`):

1. each leadership address is planned (a row already there stays as it is; a suppressed
   address, unsubscribed or bounced, is not planned and is reported);
2. a sender registers (``send_worker``), settles what a dead sender of this report left
   (rows claimed but never requested go back to planned; rows whose request was in flight
   become ``unknown``), then claims the planned rows (and ones that failed before: nothing
   was accepted) as one ``send_batch``;
3. the transport checks each address (one it cannot put in a header fails alone); the batch
   is committed ``requesting`` before the request leaves, and the answer marks the rows
   ``accepted``, ``failed`` or ``unknown``. An ``unknown`` row is never sent again by a
   rerun: it is reported for a person to check, because the provider may have accepted it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select

from herald import audit
from herald.addresses import canonical_email
from herald.config import WEEKLY_REPORT, HeraldConfig
from herald.db import dialect_insert
from herald.delivery import ledger, recovery
from herald.delivery.keys import LedgerKey, Outcome
from herald.delivery.messages import Rendered, Variant, recipient_values
from herald.delivery.transports import OutgoingBatch, Recipient, Transport
from herald.i18n.environment import TEMPLATES
from herald.models import (
    REPORT_DELIVERY,
    SUPPRESSION,
    DeliveryState,
    utcnow,
)
from herald.report.metrics.results import ALL
from herald.report.render import email_parts
from herald.report.weekly import WeeklyReport

LEADERSHIP = Variant(WEEKLY_REPORT, ALL, "leadership", "en")
LEADERSHIP_NAME = "Leadership team"


@dataclass
class ReportSent:
    """What one send of a report did."""

    report: str
    sent: list[str] = field(default_factory=list)
    already: list[str] = field(default_factory=list)
    suppressed: list[str] = field(default_factory=list)
    failed: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    error: str | None = None

    def describe(self) -> str:
        """One line for people: sent, already had it, suppressed, failed, unknown."""
        return (
            f"Sent to {len(self.sent)} address(es); {len(self.already)} had it already"
            + (f"; {len(self.suppressed)} suppressed" if self.suppressed else "")
            + (f"; {len(self.failed)} failed: {self.error or ''}" if self.failed else "")
            + (
                f"; {len(self.unknown)} unknown (may have been accepted: check before resending)"
                if self.unknown
                else ""
            )
        )


def report_name(report: WeeklyReport) -> str:
    """The report's ledger name, e.g. ``weekly-2027-03-01``."""
    return f"weekly-{report.as_of.isoformat()}"


def send_report(
    engine: Engine,
    config: HeraldConfig,
    transport: Transport,
    report: WeeklyReport,
    charts: dict[str, bytes],
    saved: Path,
    templates: Path = TEMPLATES,
) -> ReportSent:
    """Send the report to every leadership address that has not had it yet."""
    campaign = config.campaign.id
    name = report_name(report)
    outcome = ReportSent(report=name)
    addresses = list(
        dict.fromkeys(canonical_email(str(a)) for a in config.campaign.report.leadership)
    )
    if not addresses:
        return outcome
    wanted = _plan(engine, campaign, name, addresses, saved, outcome)
    worker = recovery.start_worker(
        engine, campaign=campaign, message=name, transport=transport.name
    )
    finished = "failed"
    try:
        recovery.recover(
            engine,
            campaign=campaign,
            message=name,
            lease_seconds=config.campaign.sending.worker_lease_seconds,
            by=worker,
        )
        batch_id, claimed = _claim(engine, worker, name, wanted, saved)
        if claimed:
            _send(engine, config, transport, report, charts, templates, batch_id, claimed)
        finished = "finished"
    finally:
        recovery.finish_worker(engine, worker=worker, outcome=finished)
    with engine.connect() as conn:
        rows = conn.execute(
            select(REPORT_DELIVERY.c.email, REPORT_DELIVERY.c.state, REPORT_DELIVERY.c.error)
            .where(
                REPORT_DELIVERY.c.campaign == campaign,
                REPORT_DELIVERY.c.report == name,
                REPORT_DELIVERY.c.email.in_(wanted),
            )
            .order_by(REPORT_DELIVERY.c.email)
        ).all()
    claimed_now = {email for _, email in claimed} if claimed else set()
    for email, state, error in rows:
        if state == DeliveryState.ACCEPTED.value:
            (outcome.sent if email in claimed_now else outcome.already).append(email)
        elif state == DeliveryState.FAILED.value:
            outcome.failed.append(email)
            outcome.error = outcome.error or error
        elif state in (DeliveryState.SENDING.value, DeliveryState.UNKNOWN.value):
            outcome.unknown.append(email)
            if email in claimed_now:
                outcome.error = outcome.error or error
    return outcome


def _plan(
    engine: Engine,
    campaign: str,
    name: str,
    addresses: list[str],
    saved: Path,
    outcome: ReportSent,
) -> list[str]:
    """Plan a row per address not suppressed; the addresses that may have it."""
    with engine.begin() as conn:
        suppressed = set(
            conn.execute(
                select(SUPPRESSION.c.email).where(SUPPRESSION.c.email.in_(addresses))
            ).scalars()
        )
        outcome.suppressed = [a for a in addresses if a in suppressed]
        wanted = [a for a in addresses if a not in suppressed]
        if wanted:
            now = utcnow()
            statement = dialect_insert(conn.dialect.name)(REPORT_DELIVERY)
            conn.execute(
                statement.on_conflict_do_nothing(index_elements=["campaign", "report", "email"]),
                [
                    {
                        "campaign": campaign,
                        "report": name,
                        "email": email,
                        "state": DeliveryState.PLANNED.value,
                        "path": str(saved),
                        "attempts": 0,
                        "planned_at": now,
                        "updated_at": now,
                    }
                    for email in wanted
                ],
            )
    return wanted


def _claim(
    engine: Engine, worker: ledger.Worker, name: str, wanted: list[str], saved: Path
) -> tuple[str, list[tuple[int, str]]]:
    """Claim the rows that may go (planned, or failed before) as one batch of this worker."""
    batch_id = str(uuid.uuid4())
    now = utcnow()
    rows = REPORT_DELIVERY
    with engine.begin() as conn:
        claimable = list(
            conn.execute(
                select(rows.c.id, rows.c.email)
                .where(
                    rows.c.campaign == worker.campaign,
                    rows.c.report == name,
                    rows.c.email.in_(wanted),
                    rows.c.state.in_([DeliveryState.PLANNED.value, DeliveryState.FAILED.value]),
                )
                .order_by(rows.c.id)
            ).tuples()
        )
        if not claimable:
            return batch_id, []
        ledger.open_batch(
            conn, batch_id=batch_id, worker=worker, now=now, recipients=len(claimable)
        )
        ledger.claim_rows(
            conn,
            rows,
            rows.c.id.in_([row_id for row_id, _ in claimable]),
            batch_id=batch_id,
            now=now,
            from_=[DeliveryState.PLANNED, DeliveryState.FAILED],
            error=None,
            path=str(saved),
        )
    return batch_id, claimable


def _send(
    engine: Engine,
    config: HeraldConfig,
    transport: Transport,
    report: WeeklyReport,
    charts: dict[str, bytes],
    templates: Path,
    batch_id: str,
    claimed: list[tuple[int, str]],
) -> None:
    """Build, check, request and record one claimed batch of the report."""
    campaign = config.campaign.id
    name = report_name(report)
    try:
        subject, html, text, attachments = email_parts(report, charts, templates)
    except Exception as error:
        ledger.release(engine, batch_id=batch_id, reason=f"rendering failed: {error}")
        raise
    batch = OutgoingBatch(
        batch_id=batch_id,
        campaign=campaign,
        message=name,
        sender=config.campaign.sender,
        variants={LEADERSHIP: Rendered(subject=subject, html=html, text=text)},
        recipients=[
            Recipient(
                delivery_id=row_id,
                key=LedgerKey.of_report(campaign, name, row_id).format(),
                email=email,
                name=LEADERSHIP_NAME,  # a named To (a bare address scores as spam)
                variant=LEADERSHIP,
                values=recipient_values(name=None, email=email, account_name=config.campaign.name),
            )
            for row_id, email in claimed
        ],
        categories=[campaign, WEEKLY_REPORT],
        attachments=attachments,
    )
    try:
        prepared = transport.prepare(batch)
    except Exception as error:  # nothing left Herald
        ledger.record(
            engine,
            batch_id=batch_id,
            outcome=Outcome.FAILED,
            requests=0,
            error=f"the request could not be built: {type(error).__name__}: {error}",
        )
        return
    ledger.refuse(engine, batch_id=batch_id, refused=prepared.refused)
    if not prepared.batch.recipients:
        ledger.record(
            engine,
            batch_id=batch_id,
            outcome=Outcome.FAILED,
            requests=0,
            error="every address was refused",
        )
        return
    ledger.mark_requesting(engine, batch_id=batch_id)
    try:
        result = transport.send(prepared)
    except Exception as error:
        ledger.record(
            engine,
            batch_id=batch_id,
            outcome=Outcome.UNKNOWN,
            requests=1,
            error=f"transport error: {type(error).__name__}: {error}",
        )
        raise
    ledger.record(
        engine,
        batch_id=batch_id,
        outcome=result.outcome,
        requests=result.requests,
        http_status=result.http_status,
        provider_message_id=result.provider_message_id,
        error=result.error,
    )
    with engine.begin() as conn:
        audit.record(
            conn,
            f"report.{result.outcome}",
            campaign=campaign,
            phase=name,
            detail={
                "recipients": len(prepared.batch.recipients),
                "refused": len(prepared.refused),
                "error": result.error,
            },
        )
