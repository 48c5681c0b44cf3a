"""Transports: how a batch of rendered messages leaves Herald.

A batch leaves in two steps, so that what cannot be sent is known before anything goes:

1. :meth:`Transport.prepare` checks each recipient's values (address, name, subject: see
   :func:`header_values`) and builds the request from the ones that pass. A recipient
   that fails is *refused* alone, with the reason; nothing has left Herald, so the ledger
   records it ``failed``, never ``unknown``. An exception here means nothing left either.
2. :meth:`Transport.send` makes the request and answers one :class:`BatchResult`: the
   batch accepted, failed (the provider refused it; retrying would not help) or unknown
   (the request may have been accepted: the sender must not guess). An exception here
   may come after the request left: the sender records the batch ``unknown``.

Retrying what can safely be retried is the transport's own business; pacing and the
ledger are the sender's.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Any, NamedTuple, Protocol

from herald.addresses import (
    all_addresses,
    all_header_safe,
    check_address,
    check_header_text,
    unsafe_char,
)
from herald.config import HeraldConfig, Sender
from herald.delivery.keys import Outcome
from herald.delivery.messages import Rendered, Variant, substitutions
from herald.errors import HeraldError
from herald.settings import Settings, TransportName


class Recipient(NamedTuple):
    """One recipient of a batch: the ledger row, the address and the per-recipient values
    (a named tuple: a batch makes 1,000 of them, at less than half a frozen dataclass's
    cost each; nothing changes its values or its headers)."""

    delivery_id: int
    key: str  # the ledger key, "<campaign>/<message>/<contact id>"
    email: str
    name: str | None
    variant: Variant
    values: dict[str, str]
    # Headers of this recipient's message only (List-Unsubscribe and its One-Click POST).
    headers: Mapping[str, str] = MappingProxyType({})


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

    outcome: Outcome
    requests: int
    http_status: int | None = None
    provider_message_id: str | None = None
    error: str | None = None


@dataclass(frozen=True)
class Prepared:
    """A batch's request, built and checked, not yet sent: nothing has left Herald."""

    batch: OutgoingBatch  # with only the recipients that go
    refused: dict[int, str]  # delivery id -> why that recipient cannot be sent
    payload: Any  # the transport's own request (a SendGrid body, the outbox's files)


class HeaderValues(NamedTuple):
    """What of one recipient goes into headers, each value checked (a named tuple: one per
    recipient, at less than half a frozen dataclass's cost)."""

    email: str
    name: str | None
    subject: str
    headers: dict[str, str]
    # The recipient's substitutions (messages.substitutions), made once: the subject was
    # filled from them, and a SendGrid personalization carries them.
    substitutions: dict[str, str]


def header_values(batch: OutgoingBatch, recipient: Recipient) -> HeaderValues:
    """The recipient's address, display name, subject and own headers (with the message's
    ``Content-Language``), each safe in a header; ValueError (BadAddress or UnsafeText,
    naming the value and the character) when one is not."""
    check_address(recipient.email)
    if recipient.name:
        check_header_text(recipient.name, "the contact's name")
    found = _header_values(batch, recipient)
    check_header_text(found.subject, "the subject")
    for key, value in recipient.headers.items():
        if unsafe_char(value) is not None:  # the header's name is put in words only then
            check_header_text(value, f"the {key} header")
    return found


def _header_values(batch: OutgoingBatch, recipient: Recipient) -> HeaderValues:
    """:func:`header_values` without its checks."""
    rendered = batch.variants[recipient.variant]
    values = substitutions(recipient.values)
    # The language the message is written in (RFC 3282), the same as its HTML's lang.
    headers = {**recipient.headers, "Content-Language": rendered.language}
    subject = rendered.subject_for(values)
    return HeaderValues(recipient.email, recipient.name or None, subject, headers, values)


def checked_recipients(
    batch: OutgoingBatch,
) -> tuple[list[tuple[Recipient, HeaderValues]], dict[int, str]]:
    """Each recipient of ``batch`` that may go, with its :func:`header_values`; and those
    refused (delivery id -> why), as one :func:`header_values` call per recipient decides.

    Each check runs first over the whole batch at once (:func:`~herald.addresses.all_addresses`,
    :func:`~herald.addresses.all_header_safe`: C loops, not a Python call per value), and
    the values are then taken as they are. Only a batch where a check fails goes through
    :func:`header_values` one recipient at a time, which names the value and the character
    of each one refused; the others go as they would anyway."""
    recipients = batch.recipients
    if (
        all_addresses([r.email for r in recipients])
        and all_header_safe([r.name for r in recipients if r.name])
        and all_header_safe([value for r in recipients for value in r.headers.values()])
    ):
        going = [(recipient, _header_values(batch, recipient)) for recipient in recipients]
        if all_header_safe([values.subject for _, values in going]):
            return going, {}
    going, refused = [], {}
    for recipient in recipients:
        try:
            going.append((recipient, header_values(batch, recipient)))
        except ValueError as error:
            refused[recipient.delivery_id] = f"not sent: {error}"
    return going, refused


def without(batch: OutgoingBatch, refused: dict[int, str]) -> OutgoingBatch:
    """The batch without its refused recipients."""
    if not refused:
        return batch
    kept = [r for r in batch.recipients if r.delivery_id not in refused]
    return replace(batch, recipients=kept)


class Transport(Protocol):
    """Sends batches; one instance per sending process."""

    name: str

    def prepare(self, batch: OutgoingBatch) -> Prepared:
        """Check every recipient and build the request; nothing leaves Herald here."""
        ...

    def send(
        self, prepared: Prepared, before_retry: Callable[[], object] | None = None
    ) -> BatchResult:
        """Deliver a prepared batch (with the transport's own safe retries, each after
        ``before_retry``: another request takes its recipients from the send rate again)
        and say what happened. Called only with at least one recipient."""
        ...


class TransportError(HeraldError):
    """The transport cannot be used as configured (nothing was sent)."""


def get_transport(settings: Settings, config: HeraldConfig) -> Transport:
    """The configured transport, ready to send (raises TransportError when it is not)."""
    if settings.transport == TransportName.SENDGRID:
        from herald.delivery.transports.sendgrid import SendGridTransport

        return SendGridTransport.from_settings(settings, config.campaign.sending)
    from herald.delivery.transports.outbox import OutboxTransport

    return OutboxTransport(settings.var_dir / "outbox")
