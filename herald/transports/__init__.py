"""Transports: how a batch of rendered messages leaves Herald.

Every transport takes one :class:`OutgoingBatch` (up to 1,000 recipients, any mix of
variants) and answers one :class:`BatchResult`: the whole batch accepted, failed (the
provider refused it; retrying would not help) or unknown (the request may have been
accepted: the sender must not guess). Retrying what can safely be retried is the
transport's own business; pacing and the ledger are the sender's.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal, Protocol

from herald.config import HeraldConfig, Sender
from herald.messages import Rendered, Variant
from herald.settings import Settings, TransportName


@dataclass(frozen=True)
class Recipient:
    """One recipient of a batch: the ledger row, the address and the per-recipient values."""

    delivery_id: int
    key: str  # the ledger key, "<campaign>/<message>/<contact id>"
    email: str
    name: str | None
    variant: Variant
    values: dict[str, str]


@dataclass(frozen=True)
class Attachment:
    """A file sent with every message of a batch; with a ``content_id`` it is inline: the
    HTML shows it as ``<img src="cid:<content_id>">`` (the report's charts)."""

    filename: str
    content: bytes
    mime_type: str
    content_id: str | None = None


@dataclass(frozen=True)
class OutgoingBatch:
    """What one request carries: each variant rendered once, and its recipients."""

    batch_id: str
    campaign: str
    message: str
    sender: Sender
    variants: dict[Variant, Rendered]
    recipients: list[Recipient]
    categories: list[str] = field(default_factory=list)
    attachments: list[Attachment] = field(default_factory=list)


@dataclass(frozen=True)
class BatchResult:
    """What became of a batch's request."""

    outcome: Literal["accepted", "failed", "unknown"]
    requests: int
    http_status: int | None = None
    provider_message_id: str | None = None
    error: str | None = None


class Transport(Protocol):
    """Sends batches; one instance per sending process."""

    name: str

    def send(self, batch: OutgoingBatch) -> BatchResult:
        """Deliver the batch (with the transport's own safe retries) and say what happened."""
        ...


class TransportError(Exception):
    """The transport cannot be used as configured (nothing was sent)."""


def get_transport(settings: Settings, config: HeraldConfig) -> Transport:
    """The configured transport, ready to send (raises TransportError when it is not)."""
    if settings.transport == TransportName.SENDGRID:
        from herald.transports.sendgrid import SendGridTransport

        return SendGridTransport.from_settings(settings, config.campaign.sending)
    from herald.transports.outbox import OutboxTransport

    return OutboxTransport(settings.var_dir / "outbox")
