"""SendGrid's side of the Signed Event Webhook, for tests and the chaos run.

:class:`Signer` holds a P-256 key pair standing in for SendGrid's and signs a body the way
SendGrid does (ECDSA over the timestamp header followed by the raw body, SHA-256, base64 DER).
Its :attr:`Signer.public` is what Herald's receiver is given as ``HERALD_WEBHOOK_PUBLIC_KEY``.

:class:`EventPoster` is what SendGrid does after accepting a message: it queues a
``processed`` and a ``delivered`` event per accepted recipient (the personalization's
``custom_args`` copied onto each event, as SendGrid does) and posts them, signed, in batches of
up to ``batch_size`` to the receiver from a background thread. A post that fails (no answer,
or not 2xx) is retried until it is taken, as SendGrid retries for 24 hours, so every event
arrives at least once::

    signer = Signer()
    with EventPoster(f"{receiver}/webhooks/sendgrid", signer) as events, FakeSendGrid(
        api_key=KEY, events=events
    ) as fake:
        ...
        events.drain(timeout=60)  # every accepted recipient's events were answered 200
"""

from __future__ import annotations

import base64
import http.client
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Iterable
from typing import TYPE_CHECKING, Any, Final
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from herald.telemetry.webhook import SIGNATURE_HEADER, TIMESTAMP_HEADER
from herald.testing.lifecycle import Service

if TYPE_CHECKING:
    from herald.testing.fake_sendgrid.records import Accepted

EVENTS_PER_RECIPIENT: Final = ("processed", "delivered")


class Signer:
    """A key pair standing in for SendGrid's, signing bodies the way SendGrid does."""

    def __init__(self) -> None:
        self.private = ec.generate_private_key(ec.SECP256R1())
        der = self.private.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        self.public = base64.b64encode(der).decode()
        """The verification key, base64 DER: Herald's ``HERALD_WEBHOOK_PUBLIC_KEY``."""

    def headers(self, body: bytes, timestamp: int | None = None) -> dict[str, str]:
        """The headers SendGrid sends with ``body`` (signed at ``timestamp``, default now)."""
        stamp = int(time.time()) if timestamp is None else timestamp
        signature = self.private.sign(str(stamp).encode() + body, ec.ECDSA(hashes.SHA256()))
        return {
            SIGNATURE_HEADER: base64.b64encode(signature).decode(),
            TIMESTAMP_HEADER: str(stamp),
            "Content-Type": "application/json",
        }


def events_for(record: Accepted, at: int) -> list[dict[str, Any]]:
    """The events SendGrid reports for one accepted recipient."""
    return [
        {
            **record.custom_args,
            "email": record.email,
            "timestamp": at,
            "event": kind,
            "sg_event_id": secrets.token_urlsafe(16),
            "sg_message_id": f"{record.message_id}.{record.request_no}",
            "category": record.categories,
        }
        for kind in EVENTS_PER_RECIPIENT
    ]


class EventPoster(Service):
    """Posts the events of accepted recipients to an Event Webhook URL, signed, retried."""

    def __init__(
        self,
        url: str,
        signer: Signer,
        *,
        batch_size: int = 1000,
        interval: float = 0.1,
        retry_after: float = 0.5,
        timeout: float = 30.0,
    ) -> None:
        parts = urlsplit(url)
        if parts.scheme != "http" or not parts.hostname:
            raise ValueError(f"EventPoster posts over plain HTTP to a local receiver, not {url!r}")
        self.url = url
        self.signer = signer
        self.batch_size = batch_size
        self.interval = interval
        self.retry_after = retry_after
        self.timeout = timeout
        self._host, self._port = parts.hostname, parts.port or 80
        self._path = parts.path or "/"
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._in_hand = 0  # events taken from the queue, not yet answered 200
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self.posted_events = 0
        self.posts = 0
        self.failed_posts = 0

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> EventPoster:
        """Post from a background thread until :meth:`stop`."""
        if self._thread is not None:
            raise RuntimeError("this EventPoster is already running")
        self._stopping.clear()
        self._thread = threading.Thread(target=self._run, name="event-poster", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop posting (events still queued stay queued: :attr:`pending` says how many)."""
        self._stopping.set()
        if self._thread is not None:
            self._thread.join()
        self._thread = None

    # ----------------------------------------------------------------------- use

    def accepted(self, records: Iterable[Accepted]) -> None:
        """Queue the events of recipients SendGrid just accepted."""
        at = int(time.time())
        events = [event for record in records for event in events_for(record, at)]
        with self._lock:
            self._queue.extend(events)

    @property
    def pending(self) -> int:
        """Events queued or being posted, not yet answered 200."""
        with self._lock:
            return len(self._queue) + self._in_hand

    def drain(self, timeout: float) -> bool:
        """Wait until every queued event was taken by the receiver; False on timeout."""
        deadline = time.monotonic() + timeout
        with self._idle:
            while self._queue or self._in_hand:
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._idle.wait(min(left, 0.1))
        return True

    # ----------------------------------------------------------------------- internals

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            count = min(self.batch_size, len(self._queue))
            batch = [self._queue.popleft() for _ in range(count)]
            self._in_hand = count
            return batch

    def _done(self, batch: list[dict[str, Any]], taken: bool) -> None:
        with self._idle:
            if not taken:  # back to the front, in order: retried first
                self._queue.extendleft(reversed(batch))
            self._in_hand = 0
            self._idle.notify_all()

    def _run(self) -> None:
        while not self._stopping.is_set():
            batch = self._take()
            if not batch:
                self._done(batch, True)
                self._stopping.wait(self.interval)
                continue
            taken = self._post(json.dumps(batch).encode("utf-8"))
            self._done(batch, taken)
            if taken:
                self.posts += 1
                self.posted_events += len(batch)
            else:
                self.failed_posts += 1
                self._stopping.wait(self.retry_after)

    def _post(self, body: bytes) -> bool:
        connection = http.client.HTTPConnection(self._host, self._port, timeout=self.timeout)
        try:
            connection.request("POST", self._path, body=body, headers=self.signer.headers(body))
            response = connection.getresponse()
            response.read()
            return 200 <= response.status < 300
        except OSError:
            return False
        finally:
            connection.close()
