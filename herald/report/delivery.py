"""Sending the weekly report to leadership, once per address and report.

``report_delivery`` is the report's own small ledger, keyed (campaign, report, e-mail):

1. each leadership address is planned (a row already there stays as it is; a suppressed
   address, unsubscribed or bounced, is not planned and is reported);
2. the planned rows (and ones that failed before: nothing was accepted) are marked
   ``sending`` in the same transaction that claims them, then go in one request;
3. the answer marks them ``accepted``, ``failed`` or ``unknown``. A row left ``sending`` by a
   crash, or ``unknown``, is never sent again by a rerun: it is reported for a person to
   check, because the provider may have accepted it.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, field
from pathlib import Path

from sqlalchemy import Engine, select, update

from herald import audit
from herald.config import WEEKLY_REPORT, HeraldConfig
from herald.db import dialect_insert
from herald.messages import TEMPLATES, Rendered, Variant, recipient_values
from herald.metrics import ALL
from herald.models import DeliveryState, ReportDelivery, Suppression, table, utcnow
from herald.report.render import email_parts
from herald.report.weekly import WeeklyReport
from herald.transports import OutgoingBatch, Recipient, Transport

REPORT_DELIVERY = table(ReportDelivery)
SUPPRESSION = table(Suppression)
LEADERSHIP = Variant(WEEKLY_REPORT, ALL, "leadership", "en")


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
    addresses = list(dict.fromkeys(str(a).lower() for a in config.campaign.report.leadership))
    if not addresses:
        return outcome
    now = utcnow()
    with engine.begin() as conn:
        suppressed = set(
            conn.execute(
                select(SUPPRESSION.c.email).where(SUPPRESSION.c.email.in_(addresses))
            ).scalars()
        )
        outcome.suppressed = [a for a in addresses if a in suppressed]
        wanted = [a for a in addresses if a not in suppressed]
        if wanted:
            insert = dialect_insert(conn.dialect.name)(REPORT_DELIVERY)
            conn.execute(
                insert.on_conflict_do_nothing(index_elements=["campaign", "report", "email"]),
                [
                    {
                        "campaign": campaign,
                        "report": name,
                        "email": email,
                        "state": DeliveryState.PLANNED.value,
                        "path": str(saved),
                        "planned_at": now,
                    }
                    for email in wanted
                ],
            )
        rows = conn.execute(
            select(REPORT_DELIVERY.c.id, REPORT_DELIVERY.c.email, REPORT_DELIVERY.c.state).where(
                REPORT_DELIVERY.c.campaign == campaign,
                REPORT_DELIVERY.c.report == name,
                REPORT_DELIVERY.c.email.in_(wanted),
            )
        ).all()
        sendable = {DeliveryState.PLANNED.value, DeliveryState.FAILED.value}
        claimed = [(row.id, row.email) for row in rows if row.state in sendable]
        outcome.already = [row.email for row in rows if row.state == DeliveryState.ACCEPTED.value]
        outcome.unknown = [
            row.email
            for row in rows
            if row.state in (DeliveryState.SENDING.value, DeliveryState.UNKNOWN.value)
        ]
        if claimed:
            conn.execute(
                update(REPORT_DELIVERY)
                .where(REPORT_DELIVERY.c.id.in_([id_ for id_, _ in claimed]))
                .values(state=DeliveryState.SENDING.value, error=None, path=str(saved))
            )
    if not claimed:
        return outcome

    subject, html, text, attachments = email_parts(report, charts, templates)
    batch = OutgoingBatch(
        batch_id=f"report-{uuid.uuid4().hex[:12]}",
        campaign=campaign,
        message=name,
        sender=config.campaign.sender,
        variants={LEADERSHIP: Rendered(subject=subject, html=html, text=text)},
        recipients=[
            Recipient(
                delivery_id=id_,
                key=f"{campaign}/{name}/leadership-{id_}",
                email=email,
                name=None,
                variant=LEADERSHIP,
                values=recipient_values(name=None, email=email, account_name=config.campaign.name),
            )
            for id_, email in claimed
        ],
        categories=[campaign, WEEKLY_REPORT],
        attachments=attachments,
    )
    result = transport.send(batch)
    state = {
        "accepted": DeliveryState.ACCEPTED,
        "failed": DeliveryState.FAILED,
        "unknown": DeliveryState.UNKNOWN,
    }[result.outcome]
    emails = [email for _, email in claimed]
    with engine.begin() as conn:
        conn.execute(
            update(REPORT_DELIVERY)
            .where(REPORT_DELIVERY.c.id.in_([id_ for id_, _ in claimed]))
            .values(
                state=state.value,
                error=result.error,
                sent_at=utcnow() if state is DeliveryState.ACCEPTED else None,
            )
        )
        audit.record(
            conn,
            f"report.{result.outcome}",
            campaign=campaign,
            phase=name,
            detail={"recipients": len(emails), "path": str(saved), "error": result.error},
        )
    if state is DeliveryState.ACCEPTED:
        outcome.sent = emails
    elif state is DeliveryState.FAILED:
        outcome.failed, outcome.error = emails, result.error
    else:
        outcome.unknown += emails
        outcome.error = result.error
    return outcome
