"""The outbox: every message as an ``.eml`` file a person can open in a mail client.

Layout: ``<root>/<campaign>/<message>/<delivery id>.eml`` plus ``index.jsonl`` in the same
folder, one line per message (ledger key, recipient, subject, file, batch, variant). Each
file is written to a temporary name and renamed, so a file that exists is complete; the
index lines of a batch are appended, flushed and synced after its files.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict
from email.message import EmailMessage
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path

from herald.models import utcnow
from herald.transports import BatchResult, OutgoingBatch


def _attach(mail: EmailMessage, batch: OutgoingBatch) -> None:
    """Inline files go beside the HTML part (multipart/related), the others after it."""
    html = mail.get_body(("html",))
    for item in batch.attachments:
        maintype, _, subtype = item.mime_type.partition("/")
        if item.content_id is not None and html is not None:
            html.add_related(
                item.content, maintype, subtype, cid=f"<{item.content_id}>", filename=item.filename
            )
        else:
            mail.add_attachment(item.content, maintype, subtype, filename=item.filename)


class OutboxTransport:
    """Writes each message to disk instead of sending it."""

    name = "outbox"

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, campaign: str, message: str) -> Path:
        """Where a phase's messages go."""
        return self.root / campaign / message

    def send(self, batch: OutgoingBatch) -> BatchResult:
        """Write every message of the batch, then its index lines."""
        folder = self.folder(batch.campaign, batch.message)
        folder.mkdir(parents=True, exist_ok=True)
        domain = batch.sender.email.rpartition("@")[2]
        lines: list[str] = []
        at = utcnow().isoformat()
        for recipient in batch.recipients:
            rendered = batch.variants[recipient.variant].personalize(recipient.values)
            mail = EmailMessage()
            mail["From"] = formataddr((batch.sender.name, batch.sender.email))
            mail["To"] = formataddr((recipient.name or "", recipient.email))
            if batch.sender.reply_to:
                mail["Reply-To"] = batch.sender.reply_to
            mail["Subject"] = rendered.subject
            mail["Date"] = formatdate(usegmt=True)
            message_id = make_msgid(idstring=f"{recipient.delivery_id}", domain=domain)
            mail["Message-ID"] = message_id
            mail["X-Herald-Key"] = recipient.key
            mail["X-Herald-Batch"] = batch.batch_id
            for category in batch.categories:
                mail["X-Herald-Category"] = category
            mail.set_content(rendered.text)
            mail.add_alternative(rendered.html, subtype="html")
            _attach(mail, batch)
            path = folder / f"{recipient.delivery_id}.eml"
            temporary = path.with_suffix(".eml.tmp")
            temporary.write_bytes(bytes(mail))
            os.replace(temporary, path)
            lines.append(
                json.dumps(
                    {
                        "key": recipient.key,
                        "delivery_id": recipient.delivery_id,
                        "email": recipient.email,
                        "subject": rendered.subject,
                        "file": path.name,
                        "message_id": message_id,
                        "batch": batch.batch_id,
                        "variant": asdict(recipient.variant),
                        "at": at,
                    },
                    ensure_ascii=False,
                )
            )
        with (folder / "index.jsonl").open("a", encoding="utf-8") as index:
            index.write("\n".join(lines) + "\n")
            index.flush()
            os.fsync(index.fileno())
        return BatchResult(
            outcome="accepted", requests=1, provider_message_id=f"outbox-{batch.batch_id}"
        )
