"""SendGrid: one ``/v3/mail/send`` request per batch, sent with the official client.

The body's batch-wide parts (sender, sections, content, categories, attachments, settings)
are built with the official Mail helpers; each personalization is the plain dict those
helpers would make (the helper objects cost about 4x per recipient), held to them byte for
byte by tests/delivery/test_sendgrid_bodies.py.

Each recipient's address, name and subject are checked first (:func:`herald.delivery.transports.
checked_recipients`, over the whole batch at once); one that fails is refused alone and the
rest of the batch goes.
A batch mixes variants (segment x role x locale) but SendGrid takes one body per request,
so each variant's rendered HTML and text travel once as a *section*, and each
personalization points its ``-body_html-`` / ``-body_text-`` substitutions at its
variant's sections; its own values (name, account) are substitutions too, and its ledger
key a ``custom_args`` entry, which SendGrid echoes in every event for reconciliation.

What is retried, and what is not:

- 429: wait until ``X-RateLimit-Reset``, then again (SendGrid accepted nothing);
- 5xx, and connection errors before the request was written: exponential backoff with
  jitter, up to ``sending.max_attempts`` requests, then ``failed``;
- any other 4xx: ``failed`` with SendGrid's error text, not retried;
- no answer after the request was written (reset, timeout): ``unknown``, never retried
  here: SendGrid may have accepted it, and it has no idempotency key.
"""

from __future__ import annotations

import base64
import http.client
import json
import logging
import random
import time
import urllib.request
from collections.abc import Callable
from email.utils import parseaddr
from typing import Any
from urllib.error import URLError

import orjson
from pydantic import SecretStr
from python_http_client.client import Response
from python_http_client.exceptions import HTTPError
from sendgrid import SendGridAPIClient
from sendgrid.helpers.mail import (
    Asm,
    Attachment,
    Category,
    Content,
    ContentId,
    Disposition,
    FileContent,
    FileName,
    FileType,
    From,
    GroupId,
    Mail,
    MailSettings,
    ReplyTo,
    SandBoxMode,
    Section,
)

from herald.config import Sending
from herald.delivery.keys import Outcome
from herald.delivery.transports import (
    BatchResult,
    HeaderValues,
    OutgoingBatch,
    Prepared,
    Recipient,
    TransportError,
    checked_recipients,
    without,
)
from herald.settings import Settings

# The HTTP client logs request headers (the API key among them) at DEBUG: never let it.
logging.getLogger("python_http_client").setLevel(logging.INFO)

BODY_HTML = "-body_html-"
BODY_TEXT = "-body_text-"


class SendGridTransport:
    """Sends batches through SendGrid's v3 Mail Send API."""

    name = "sendgrid"

    def __init__(
        self,
        api_key: SecretStr,
        host: str,
        sending: Sending,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self.sending = sending
        self._client = SendGridAPIClient(api_key=api_key.get_secret_value(), host=host)
        # The client waits forever unless told otherwise.
        self._client.client.timeout = sending.request_timeout_seconds
        self._mail_send = self._client.client.mail.send
        self._url = self._mail_send._build_url(None)
        self._headers = {**self._mail_send.request_headers, "Content-Type": "application/json"}
        self._sleep = sleep
        self._clock = clock
        self._rng = rng or random.Random()

    @classmethod
    def from_settings(cls, settings: Settings, sending: Sending) -> SendGridTransport:
        """The transport for these settings; TransportError when the API key is missing."""
        if settings.sendgrid_api_key is None:
            raise TransportError(
                "SENDGRID_API_KEY is not set: HERALD_TRANSPORT=sendgrid needs it in the "
                "environment (or loaded from a Prefect Secret block). Nothing was sent."
            )
        return cls(settings.sendgrid_api_key, settings.sendgrid_api_host, sending)

    def __repr__(self) -> str:  # never the key
        return f"SendGridTransport(host={self._client.host!r})"

    # ----------------------------------------------------------------------- request

    def prepare(self, batch: OutgoingBatch) -> Prepared:
        """Check each recipient (address, name, subject) and build the request body from
        those that pass; a recipient that fails is refused alone, with the reason."""
        checked, refused = checked_recipients(batch)
        kept = without(batch, refused)
        return Prepared(kept, refused, self._body(kept, checked) if checked else None)

    def build(self, batch: OutgoingBatch) -> dict[str, Any]:
        """The request body for a batch (its refused recipients left out)."""
        body: dict[str, Any] = self.prepare(batch).payload
        return body

    def _body(
        self, batch: OutgoingBatch, recipients: list[tuple[Recipient, HeaderValues]]
    ) -> dict[str, Any]:
        """The request body: what is the batch's (sender, each variant's sections, content,
        categories, attachments, settings) through the official Mail helpers, once per batch;
        each personalization as the plain dict the helpers would make of it (they cost about
        4x per recipient; tests/support/sendgrid_reference.py holds the two byte for byte)."""
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
        if self.sending.asm_group_id is not None:
            mail.asm = Asm(GroupId(self.sending.asm_group_id))
        if self.sending.sandbox:
            mail.mail_settings = MailSettings(sandbox_mode=SandBoxMode(True))
        personalizations = [
            _personalization(header, sections[recipient.variant], recipient, batch.batch_id)
            for recipient, header in recipients
        ]
        body: dict[str, Any] = {}
        for key, value in mail.get().items():  # the helpers' order: from, subject, then these
            if key not in ("from", "subject") and "personalizations" not in body:
                body["personalizations"] = personalizations
            body[key] = value
        body.setdefault("personalizations", personalizations)
        return body

    # ----------------------------------------------------------------------- sending

    def send(
        self, prepared: Prepared, before_retry: Callable[[], object] | None = None
    ) -> BatchResult:
        """One batch, one request (plus the retries that cannot duplicate anything)."""
        body = serialize(prepared.payload)
        requests = failures = rate_limited = 0
        while True:
            if requests and before_retry is not None:
                before_retry()
            requests += 1
            try:
                response = self._post(body)
            except HTTPError as error:
                status = int(error.status_code)
                text = _error_text(status, error.body)
                if status == 429:
                    rate_limited += 1
                    if rate_limited > 50:
                        return BatchResult(Outcome.FAILED, requests, status, error=text)
                    self._sleep(self._until_reset(error.headers, rate_limited))
                    continue
                if status >= 500:
                    failures += 1
                    if failures >= self.sending.max_attempts:
                        return BatchResult(
                            Outcome.FAILED,
                            requests,
                            status,
                            error=f"{text} (after {failures} tries)",
                        )
                    self._sleep(self._backoff(failures))
                    continue
                return BatchResult(Outcome.FAILED, requests, status, error=text)
            except URLError as error:
                # The request never left (refused, unreachable, timed out connecting).
                failures += 1
                if failures >= self.sending.max_attempts:
                    return BatchResult(
                        Outcome.FAILED,
                        requests,
                        error=f"cannot connect: {error.reason} (after {failures} tries)",
                    )
                self._sleep(self._backoff(failures))
                continue
            except (OSError, http.client.HTTPException) as error:
                return BatchResult(
                    Outcome.UNKNOWN,
                    requests,
                    error=(
                        f"no answer after the request was sent ({type(error).__name__}: "
                        f"{error}); SendGrid may have accepted it"
                    ),
                )
            status = int(response.status_code)
            message_id = response.headers.get("X-Message-Id")
            if 200 <= status < 300:
                return BatchResult(
                    Outcome.ACCEPTED,
                    requests,
                    status,
                    provider_message_id=message_id or ("sandbox" if status == 200 else None),
                )
            return BatchResult(
                Outcome.FAILED, requests, status, error=f"unexpected HTTP {status} from SendGrid"
            )

    def _post(self, body: bytes) -> Response:
        """POST a serialized body to /v3/mail/send through the official client's own request
        path: its URL, headers (the key, its User-Agent), timeout, and its errors
        (python_http_client's ``_make_request`` raises the same HTTPError classes). Only
        the client's ``post()`` wrapper is left out: it formats every body into a debug
        string (a repr of some 1.5 MB per 1,000 recipients) whether or not anything logs
        it, and serializes with json.dumps."""
        request = urllib.request.Request(self._url, data=body, headers=self._headers, method="POST")
        opened = self._mail_send._make_request(
            urllib.request.build_opener(), request, timeout=self._mail_send.timeout
        )
        return Response(opened)

    def _backoff(self, failures: int) -> float:
        """Exponential backoff with equal jitter: half fixed, half random."""
        ceiling: float = min(
            self.sending.backoff_max_seconds,
            self.sending.backoff_seconds * 2.0 ** (failures - 1),
        )
        return ceiling / 2 + self._rng.uniform(0, ceiling / 2)

    def _until_reset(self, headers: Any, times: int) -> float:
        """Seconds until the rate limit resets (its header is a Unix time in seconds)."""
        reset: Any = headers.get("X-RateLimit-Reset") if headers is not None else None
        try:
            wait = float(reset) - self._clock()
        except (TypeError, ValueError):
            wait = self._backoff(times)
        # A little past the reset, so a fleet of senders does not return in the same instant.
        wait = max(0.0, wait) + self._rng.uniform(0, 0.25)
        return float(min(wait, self.sending.max_rate_limit_wait_seconds))


def serialize(body: dict[str, Any]) -> bytes:
    """A request body as the JSON that goes: orjson's (the same JSON value as json.dumps's,
    compact, non-ASCII as UTF-8) in about a fifth of json.dumps's time."""
    return orjson.dumps(body)


def _personalization(
    header: HeaderValues, section: tuple[str, str], recipient: Recipient, batch_id: str
) -> dict[str, Any]:
    """One recipient's personalization, as ``Personalization.get()`` makes it: to, subject,
    headers, substitutions (the variant's sections, then the recipient's values), custom
    args (ledger key and batch)."""
    html_key, text_key = section
    out: dict[str, Any] = {"to": [_address(header.email, header.name)]}
    if header.subject:
        out["subject"] = header.subject
    # Every key and value here is a str (never None): the helpers' dropping of unset
    # values changes nothing, so the dicts go as they are.
    if header.headers:
        out["headers"] = header.headers
    out["substitutions"] = {BODY_HTML: html_key, BODY_TEXT: text_key, **header.substitutions}
    out["custom_args"] = {"herald_key": recipient.key, "herald_batch": batch_id}
    return out


def _address(email: str, name: str | None) -> dict[str, str]:
    """``To(email, name).get()``: without a name the helper parses the address
    ("Name <a@b>" form), so this does too."""
    if not name:
        name, parsed = parseaddr(email)
        if "@" not in parsed:
            name, parsed = parsed, ""
        out: dict[str, str] = {}
        if name:
            out["name"] = name
        if parsed:
            out["email"] = parsed
        return out
    return {"name": name, "email": email}


def _error_text(status: int, body: Any) -> str:
    """SendGrid's own words for a refused request ("field: message; ...")."""
    raw = body.decode("utf-8", "replace") if isinstance(body, bytes) else str(body or "")
    try:
        errors = json.loads(raw).get("errors") or []
        parts = [
            f"{item['field']}: {item['message']}" if item.get("field") else str(item["message"])
            for item in errors
            if isinstance(item, dict) and "message" in item
        ]
    except (ValueError, AttributeError):
        parts = []
    detail = "; ".join(parts) or raw.strip()[:500] or "no detail"
    return f"HTTP {status} from SendGrid: {detail}"[:2000]
