"""What a contact would receive in a phase, or why they would not; sample renders for dry runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import date
from pathlib import Path
from typing import Any, Literal

from sqlalchemy import Connection, Engine, func, select

from herald.config import HeraldConfig, MessageKind, PhaseName
from herald.customers.rows import normalize_email
from herald.delivery.audience import audience, segmentation_day
from herald.delivery.calendar import (
    THANK_YOU_MESSAGE,
    Notice,
    due_notices,
    extended_message,
    is_notice,
    notice_deadline,
    notices,
)
from herald.delivery.messages import Rendered, Variant, render
from herald.i18n import match_locale
from herald.i18n.environment import TEMPLATES
from herald.models import (
    ACCOUNT,
    CONTACT,
    DELIVERY,
    SEGMENT_ASSIGNMENT,
    SUPPRESSION,
    AccountLifecycle,
    DeliveryState,
    MigrationState,
    SuppressionReason,
)
from herald.privacy import mask_email


@dataclass
class Preview:
    """One contact in one phase: the message they would get, or every reason they would not."""

    email: str
    phase: PhaseName | Literal["thank_you", "deadline_extended"]
    variant: Variant | None = None
    message: Rendered | None = None
    reasons: list[str] = field(default_factory=list)
    ledger_state: str | None = None
    notice: str | None = None  # the sunset notice that goes on the day (phase sunset)
    locale: str | None = None  # the contact's own locale (the variant's may differ: a reviewer's
    # override, or the campaign's locale it maps to)

    @property
    def would_send(self) -> bool:
        """True when a send of the phase would deliver ``message`` to this contact."""
        return self.message is not None and not self.reasons


def preview(
    engine: Engine,
    config: HeraldConfig,
    phase: PhaseName | Literal["thank_you", "deadline_extended"],
    email: str,
    as_of: date,
    templates: Path = TEMPLATES,
    locale: str | None = None,
) -> Preview:
    """Exactly what ``email`` would receive in ``phase`` (or the thank-you) as of a day, or
    every reason why not; ``locale`` renders it in another of the campaign's locales (a
    reviewer reading a translation), leaving the reasons as they are."""
    try:
        address = normalize_email(email)
    except ValueError:
        address = email.strip().lower()
    result = Preview(email=address, phase=phase)
    kind: MessageKind = phase
    with engine.connect() as conn:
        contact = conn.execute(
            select(
                CONTACT.c.id,
                CONTACT.c.name,
                CONTACT.c.role,
                CONTACT.c.locale,
                ACCOUNT.c.id.label("account_id"),
                ACCOUNT.c.name.label("account_name"),
                ACCOUNT.c.lifecycle,
                ACCOUNT.c.migration_state,
                ACCOUNT.c.migrated_on,
            )
            .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
            .where(CONTACT.c.email == address)
        ).first()
        if contact is None:
            result.reasons.append("no contact has this address")
            return result
        honoured = config.campaign.unsubscribe.honours(kind)
        for (reason,) in conn.execute(
            select(SUPPRESSION.c.reason).where(SUPPRESSION.c.email == address)
        ):
            if honoured or reason != SuppressionReason.UNSUBSCRIBE.value:
                result.reasons.append(f"address suppressed ({reason})")
        if contact.lifecycle != AccountLifecycle.ACTIVE.value:
            result.reasons.append(f"account is {contact.lifecycle}")
        day = segmentation_day(conn, as_of)
        segment = conn.execute(
            select(SEGMENT_ASSIGNMENT.c.segment).where(
                SEGMENT_ASSIGNMENT.c.account_id == contact.account_id,
                SEGMENT_ASSIGNMENT.c.as_of == day,
            )
        ).scalar_one_or_none()
        if segment is None:
            result.reasons.append(f"account has no segment in the segmentation of {day}")
        message: str = phase
        days_left: int | None = None
        if phase == "thank_you":
            message = THANK_YOU_MESSAGE
            result.reasons += _thank_you_reasons(conn, config, contact, as_of)
        elif phase == "deadline_extended":
            result.reasons += _audience_reasons(config, "sunset", contact, segment)
            if segment is not None:
                deadline = config.campaign.sunset[segment]
                message = extended_message(deadline)
                result.reasons += _extended_reasons(conn, config, contact, deadline, as_of)
        else:
            result.reasons += _audience_reasons(config, phase, contact, segment)
            if phase == "sunset" and segment is not None:
                notice, why_not = _notice_on(config, segment, as_of)
                if notice is None:
                    result.reasons.append(why_not)
                else:
                    message, days_left = notice.message, (notice.deadline - as_of).days
                    result.notice = notice.message
        row = conn.execute(
            select(DELIVERY.c.state, DELIVERY.c.sent_at, DELIVERY.c.error).where(
                DELIVERY.c.campaign == config.campaign.id,
                DELIVERY.c.message == message,
                DELIVERY.c.contact_id == contact.id,
            )
        ).first()
    if row is not None:
        result.ledger_state = row.state
        if row.state == DeliveryState.ACCEPTED.value:
            result.reasons.append(f"already sent ({row.sent_at:%Y-%m-%d %H:%M} UTC)")
        elif row.state in (DeliveryState.SENDING.value, DeliveryState.UNKNOWN.value):
            result.reasons.append(
                f"a send is {row.state} (settle it with `herald deliveries resolve`)"
            )
        elif row.state in (
            DeliveryState.SUPPRESSED.value,
            DeliveryState.FAILED.value,
            DeliveryState.EXPIRED.value,
        ):
            result.reasons.append(f"ledger says {row.state}: {row.error}")
    if segment is not None:
        result.locale = contact.locale
        chosen = locale or match_locale(contact.locale, config.campaign.locales)
        result.variant = Variant(kind, segment, contact.role, chosen, days_left)
        result.message = render(config, result.variant, templates).to(
            name=contact.name,
            email=address,
            account_name=contact.account_name,
            unsubscribe_url=_link_shown(config, kind),
        )
    return result


def _link_shown(config: HeraldConfig, kind: MessageKind) -> str:
    """What a preview shows for the recipient's own unsubscribe link (never a live token)."""
    unsubscribe = config.campaign.unsubscribe
    return f"{str(unsubscribe.url).rstrip('/')}/<token>" if unsubscribe.honours(kind) else ""


def _audience_reasons(
    config: HeraldConfig, phase: PhaseName, contact: Any, segment: str | None
) -> list[str]:
    """Why the contact is outside the phase's audience (segments, roles, migrated)."""
    wanted = config.campaign.audiences[phase]
    reasons = []
    if wanted.exclude_migrated and contact.migration_state == MigrationState.MIGRATED.value:
        on = f" on {contact.migrated_on}" if contact.migrated_on else ""
        reasons.append(f"account already migrated{on}")
    if segment is not None and segment not in wanted.segments:
        reasons.append(
            f"segment {segment} is not in the {phase} audience ({', '.join(wanted.segments)})"
        )
    if contact.role not in wanted.roles:
        reasons.append(
            f"role {contact.role} is not in the {phase} audience ({', '.join(wanted.roles)})"
        )
    return reasons


def _extended_reasons(
    conn: Connection, config: HeraldConfig, contact: Any, deadline: date, as_of: date
) -> list[str]:
    """Why the contact would get no "more time" message for ``deadline``: it goes once to
    those who were sent a notice for an earlier deadline, until the new one."""
    reasons = []
    if not config.campaign.notices.deadline_extended:
        reasons.append("deadline-extended messages are off (notices.deadline_extended)")
    if as_of >= deadline:
        reasons.append(f"the deadline ({deadline}) has passed")
    earlier = conn.execute(
        select(func.count()).where(
            DELIVERY.c.campaign == config.campaign.id,
            DELIVERY.c.contact_id == contact.id,
            DELIVERY.c.state == DeliveryState.ACCEPTED.value,
            is_notice(DELIVERY.c.message),
            notice_deadline(DELIVERY.c.message) < deadline.isoformat(),
        )
    ).scalar_one()
    if not earlier:
        reasons.append(
            f"no notice for a deadline before {deadline} was sent to this contact: the "
            "deadline did not move for them"
        )
    return reasons


def _thank_you_reasons(
    conn: Connection, config: HeraldConfig, contact: Any, as_of: date
) -> list[str]:
    """Why the contact would get no thank-you as of the day: it goes once, to contacts the
    campaign mailed, of accounts that moved before that day."""
    reasons = []
    if not config.campaign.notices.thank_you:
        reasons.append("thank-yous are off (notices.thank_you)")
    moved = contact.migration_state == MigrationState.MIGRATED.value and contact.migrated_on
    if not moved or contact.migrated_on >= as_of:
        reasons.append("the account has not moved to the new product before this day")
    mailed = conn.execute(
        select(func.count()).where(
            DELIVERY.c.campaign == config.campaign.id,
            DELIVERY.c.contact_id == contact.id,
            DELIVERY.c.state == DeliveryState.ACCEPTED.value,
            DELIVERY.c.message != THANK_YOU_MESSAGE,
        )
    ).scalar_one()
    if not mailed:
        reasons.append("the campaign never mailed this contact (a thank-you follows a message)")
    return reasons


def _notice_on(config: HeraldConfig, segment: str, as_of: date) -> tuple[Notice | None, str]:
    """The segment's sunset notice that may go on ``as_of``, or None and why none may."""
    campaign = config.campaign
    deadline = campaign.sunset[segment]
    if as_of > deadline:
        return None, f"the {segment} deadline ({deadline}) has passed: no notice goes after it"
    going = [n for n in due_notices(campaign, as_of) if n.segment == segment]
    if going:
        return going[0], ""
    later = [n for n in notices(campaign) if n.segment == segment and n.sends_on > as_of]
    when = f"; the next goes on {later[0].sends_on} ({later[0].message})" if later else ""
    return None, f"no {segment} notice goes on {as_of}{when}"


@dataclass(frozen=True)
class Sample:
    """One real contact's rendered message for a segment and role, written to disk."""

    segment: str
    role: str
    contact: str  # masked
    subject: str
    html: Path
    text: Path


def sample_renders(
    engine: Engine,
    config: HeraldConfig,
    phase: PhaseName,
    as_of: date,
    output_dir: Path,
    templates: Path = TEMPLATES,
) -> list[Sample]:
    """For each segment and role in the audience, the message its first contact would get."""
    with engine.connect() as conn:
        source = audience(config, phase, segmentation_day(conn, as_of)).subquery()
        firsts = (
            select(func.min(source.c.contact_id))
            .group_by(source.c.segment, source.c.role)
            .scalar_subquery()
        )
        rows = conn.execute(
            select(
                source.c.segment,
                source.c.role,
                source.c.locale,
                CONTACT.c.email,
                CONTACT.c.name,
                ACCOUNT.c.name,
            )
            .join(CONTACT, CONTACT.c.id == source.c.contact_id)
            .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
            .where(source.c.contact_id.in_(firsts))
            .order_by(source.c.segment, source.c.role)
        ).all()
    output_dir.mkdir(parents=True, exist_ok=True)
    samples = []
    for segment, role, locale, email, name, account_name in rows:
        message = render(config, Variant(phase, segment, role, locale), templates).to(
            name=name,
            email=email,
            account_name=account_name,
            unsubscribe_url=_link_shown(config, phase),
        )
        html = output_dir / f"{segment}-{role}.html"
        text = output_dir / f"{segment}-{role}.txt"
        html.write_text(message.html, encoding="utf-8")
        text.write_text(f"Subject: {message.subject}\n\n{message.text}", encoding="utf-8")
        samples.append(Sample(segment, role, mask_email(email), message.subject, html, text))
    return samples
