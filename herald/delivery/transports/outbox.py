"""The outbox: every message as an ``.eml`` file a person can open in a mail client.

Layout: ``<root>/<campaign>/<message>/<delivery id>.eml`` plus ``index.jsonl`` in the same
folder, one line per message (ledger key, recipient as sent and as people read it, subject,
file, batch, variant). Every message is built (and each recipient checked) before any file
is written; each file is written to a temporary name and renamed, so a file that exists
is complete; the index lines of a batch are appended, flushed and synced after its files.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import asdict, dataclass
from email.errors import MessageError
from email.message import EmailMessage
from email.policy import EmailPolicy
from email.utils import formataddr, formatdate, make_msgid
from pathlib import Path

from herald.addresses import display_email
from herald.delivery.keys import Outcome
from herald.delivery.transports import (
    BatchResult,
    OutgoingBatch,
    Prepared,
    Recipient,
    header_values,
    without,
)
from herald.models import utcnow


class _Policy(EmailPolicy):
    """The default policy, except that ``List-Unsubscribe`` is never folded into encoded
    words: its URLs are longer than a 78-character line, and a mail client must read them as
    they are (RFC 2369). It stays one line (the limit is 998 characters)."""

    def fold(self, name: str, value: str) -> str:
        if name.lower() in _AS_IS:
            return str(EmailPolicy.fold(self.clone(max_line_length=998), name, value))
        return str(super().fold(name, value))

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() in _AS_IS:
            return EmailPolicy.fold_binary(self.clone(max_line_length=998), name, value)
        return super().fold_binary(name, value)


_AS_IS = frozenset({"list-unsubscribe"})
POLICY = _Policy()


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


@dataclass(frozen=True)
class _File:
    """One message of a prepared batch: its bytes and its index line."""

    name: str
    content: bytes
    index: str


class OutboxTransport:
    """Writes each message to disk instead of sending it."""

    name = "outbox"

    def __init__(self, root: Path) -> None:
        self.root = root

    def folder(self, campaign: str, message: str) -> Path:
        """Where a phase's messages go."""
        return self.root / campaign / message

    def prepare(self, batch: OutgoingBatch) -> Prepared:
        """Build every message of the batch in memory; a recipient whose values cannot make
        a valid message is refused alone."""
        domain = batch.sender.email.rpartition("@")[2]
        at = utcnow().isoformat()
        files: list[_File] = []
        refused: dict[int, str] = {}
        for recipient in batch.recipients:
            try:
                files.append(self._message(batch, recipient, domain, at))
            except (ValueError, UnicodeError, MessageError) as error:
                refused[recipient.delivery_id] = f"not sent: {error}"
        return Prepared(without(batch, refused), refused, files)

    def _message(self, batch: OutgoingBatch, recipient: Recipient, domain: str, at: str) -> _File:
        checked = header_values(batch, recipient)
        rendered = batch.variants[recipient.variant].personalize(recipient.values)
        mail = EmailMessage(policy=POLICY)
        mail["From"] = formataddr((batch.sender.name, batch.sender.email))
        mail["To"] = formataddr((checked.name or "", checked.email))
        if batch.sender.reply_to:
            mail["Reply-To"] = batch.sender.reply_to
        mail["Subject"] = checked.subject
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
        # After the body: setting content drops the Content-* headers (Content-Language).
        for key, value in checked.headers.items():
            mail[key] = value
        index = json.dumps(
            {
                "key": recipient.key,
                "delivery_id": recipient.delivery_id,
                "email": checked.email,
                "display": display_email(checked.email),
                "subject": checked.subject,
                "file": f"{recipient.delivery_id}.eml",
                "message_id": message_id,
                "batch": batch.batch_id,
                "variant": asdict(recipient.variant),
                "at": at,
            },
            ensure_ascii=False,
        )
        return _File(f"{recipient.delivery_id}.eml", bytes(mail), index)

    def send(
        self,
        prepared: Prepared,
        before_retry: Callable[[], object] | None = None,  # noqa: ARG002 (never retries)
    ) -> BatchResult:
        """Write every message of the batch, then its index lines."""
        batch = prepared.batch
        files: list[_File] = prepared.payload
        folder = self.folder(batch.campaign, batch.message)
        folder.mkdir(parents=True, exist_ok=True)
        for item in files:
            path = folder / item.name
            temporary = path.with_suffix(".eml.tmp")
            temporary.write_bytes(item.content)
            os.replace(temporary, path)
        with (folder / "index.jsonl").open("a", encoding="utf-8") as index:
            index.write("".join(item.index + "\n" for item in files))
            index.flush()
            os.fsync(index.fileno())
        return BatchResult(
            outcome=Outcome.ACCEPTED, requests=1, provider_message_id=f"outbox-{batch.batch_id}"
        )
