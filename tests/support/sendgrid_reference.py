"""SendGrid request bodies built entirely with the official Mail helper objects, as Herald
built them before it built each personalization as a plain dict (the helpers cost about 4x
per body). The tests hold the transport's bodies to this one, byte for byte."""

from __future__ import annotations

import base64
from typing import Any

from sendgrid.helpers.mail import (
    Asm,
    Attachment,
    Category,
    Content,
    ContentId,
    CustomArg,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    GroupId,
    Header,
    Mail,
    MailSettings,
    Personalization,
    ReplyTo,
    SandBoxMode,
    Section,
    Substitution,
    To,
)

from herald.config import Sending
from herald.delivery.messages import substitutions
from herald.delivery.transports import HeaderValues, OutgoingBatch, Recipient, header_values
from herald.delivery.transports.sendgrid import BODY_HTML, BODY_TEXT


def one_at_a_time(
    batch: OutgoingBatch,
) -> tuple[list[tuple[Recipient, HeaderValues]], dict[int, str]]:
    """Each recipient of ``batch`` checked alone (:func:`header_values`): those that go, with
    their header values, and those refused, with why: what the transports must decide."""
    going, refused = [], {}
    for recipient in batch.recipients:
        try:
            going.append((recipient, header_values(batch, recipient)))
        except ValueError as error:
            refused[recipient.delivery_id] = f"not sent: {error}"
    return going, refused


def helper_body(
    sending: Sending, batch: OutgoingBatch, recipients: list[tuple[Recipient, HeaderValues]]
) -> dict[str, Any]:
    """The request body for ``recipients`` of ``batch``, every part a Mail helper object."""
    mail = Mail()
    mail.from_email = From(batch.sender.email, batch.sender.name)
    if batch.sender.reply_to:
        mail.reply_to = ReplyTo(batch.sender.reply_to)
    sections: dict[Any, tuple[str, str]] = {}
    for index, (variant, rendered) in enumerate(batch.variants.items()):
        html_key, text_key = f"-section_{index}_html-", f"-section_{index}_text-"
        mail.add_section(Section(html_key, rendered.html))
        mail.add_section(Section(text_key, rendered.text))
        sections[variant] = (html_key, text_key)
    mail.add_content(Content("text/plain", BODY_TEXT))
    mail.add_content(Content("text/html", BODY_HTML))
    for recipient, header in recipients:
        html_key, text_key = sections[recipient.variant]
        personalization = Personalization()
        personalization.add_to(To(header.email, header.name))
        personalization.subject = header.subject
        values = {BODY_HTML: html_key, BODY_TEXT: text_key, **substitutions(recipient.values)}
        for key, value in values.items():
            personalization.add_substitution(Substitution(key, value))
        for key, value in header.headers.items():
            personalization.add_header(Header(key, value))
        personalization.add_custom_arg(CustomArg("herald_key", recipient.key))
        personalization.add_custom_arg(CustomArg("herald_batch", batch.batch_id))
        mail.add_personalization(personalization, index=len(mail.personalizations or []))
    for category in batch.categories:
        mail.add_category(Category(category))
    for item in batch.attachments:
        mail.add_attachment(
            Attachment(
                FileContent(base64.b64encode(item.content).decode("ascii")),
                FileName(item.filename),
                FileType(item.mime_type),
                Disposition("inline" if item.content_id else "attachment"),
                ContentId(item.content_id) if item.content_id else None,
            )
        )
    if sending.asm_group_id is not None:
        mail.asm = Asm(GroupId(sending.asm_group_id))
    if sending.sandbox:
        mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
    body: dict[str, Any] = mail.get()
    return body
