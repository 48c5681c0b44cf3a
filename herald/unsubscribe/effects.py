"""What an unsubscribe does: the contact's address is suppressed, once, and the audit log says
who asked, from which message, by which way."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import Engine, select

from herald import audit
from herald.db import dialect_insert
from herald.models import CONTACT, SUPPRESSION, SuppressionReason, utcnow
from herald.privacy import mask_email
from herald.unsubscribe.tokens import Subscriber


@dataclass(frozen=True)
class Unsubscribed:
    """The outcome of one unsubscribe request."""

    known: bool  # the token's contact exists
    new: bool  # this request made the suppression (False: it was there already)


def unsubscribe(engine: Engine, subscriber: Subscriber, *, source: str) -> Unsubscribed:
    """Suppress the address of the token's contact (idempotent: a second request changes
    nothing). ``source``: how it came (``one-click``, ``page``, ``mailto``)."""
    with engine.begin() as conn:
        email = conn.execute(
            select(CONTACT.c.email).where(CONTACT.c.id == subscriber.contact_id)
        ).scalar_one_or_none()
        if email is None:
            return Unsubscribed(known=False, new=False)
        inserted = conn.execute(
            dialect_insert(conn.dialect.name)(SUPPRESSION)
            .values(
                email=email,
                reason=SuppressionReason.UNSUBSCRIBE.value,
                source=f"herald:{source}",
                detail=f"{subscriber.campaign}/{subscriber.message}",
                created_at=utcnow(),
            )
            .on_conflict_do_nothing(index_elements=["email", "reason"])
            .returning(SUPPRESSION.c.id)
        ).first()
        if inserted is not None:
            audit.record(
                conn,
                "contact.unsubscribed",
                campaign=subscriber.campaign,
                phase=subscriber.message,
                detail={
                    "contact_id": subscriber.contact_id,
                    "email": mask_email(email),
                    "via": source,
                },
                who=f"contact {subscriber.contact_id}",
            )
    return Unsubscribed(known=True, new=inserted is not None)
