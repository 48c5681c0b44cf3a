"""The SendGrid Event Webhook receiver: verify, keep, answer, then process.

``POST /webhooks/sendgrid``:

1. a body over ``webhook.max_body_bytes`` is refused with 413 (read no further);
2. the signature (ECDSA P-256 over the timestamp header + the raw body bytes, headers
   ``X-Twilio-Email-Event-Webhook-Signature`` / ``-Timestamp``, SendGrid's public key from
   ``HERALD_WEBHOOK_PUBLIC_KEY``) must verify and the timestamp be within
   ``webhook.tolerance_seconds`` of the receiver's clock: otherwise 403, nothing stored;
3. the body must be a JSON array of event objects: otherwise 400 (JSON nested too deeply
   to parse included);
4. the raw body is committed to ``webhook_batch``, and only then the answer is 200;
5. after the answer the batch is processed (:mod:`herald.telemetry.webhook_batches`): each event is
   validated and applied on its own terms, and one that cannot be applied is kept as a
   failure while the others take effect. A crash in between loses nothing: stored batches
   not yet processed are processed when the receiver starts again, or by
   ``herald webhooks process``.

Nothing a batch holds can stop the receiver: processing after the answer, and the
processing of what a crash left when it starts, log their errors and go on; the receiver
always starts and answers ``/health``.
"""

from __future__ import annotations

import base64
import binascii
import logging
import time
from collections.abc import AsyncIterator, Callable, Sequence
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from functools import cache

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_der_public_key
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import BaseRoute, Route

from herald.config import WebhookConfig
from herald.telemetry.event_effects import describe_error
from herald.telemetry.events import BadEvents, parse_events
from herald.telemetry.webhook_batches import process_batch_safely, process_pending, store_batch

SIGNATURE_HEADER = "X-Twilio-Email-Event-Webhook-Signature"
TIMESTAMP_HEADER = "X-Twilio-Email-Event-Webhook-Timestamp"
PATH = "/webhooks/sendgrid"

logger = logging.getLogger(__name__)


class WebhookKeyError(ValueError):
    """The configured verification key is not a P-256 public key in base64 DER."""


@cache
def public_key(encoded: str) -> ec.EllipticCurvePublicKey:
    """SendGrid's verification key (base64 DER SubjectPublicKeyInfo), loaded once."""
    try:
        key = load_der_public_key(base64.b64decode(encoded, validate=True))
    except (ValueError, binascii.Error) as error:
        raise WebhookKeyError(
            f"HERALD_WEBHOOK_PUBLIC_KEY is not a base64 DER public key: {error}"
        ) from None
    if not isinstance(key, ec.EllipticCurvePublicKey):
        raise WebhookKeyError("HERALD_WEBHOOK_PUBLIC_KEY is not an elliptic-curve key")
    return key


def verify(key: ec.EllipticCurvePublicKey, body: bytes, signature: str, timestamp: str) -> bool:
    """True when ``signature`` (base64 DER ECDSA) signs ``timestamp + body`` with SHA-256."""
    try:
        raw = base64.b64decode(signature, validate=True)
        key.verify(raw, timestamp.encode("utf-8") + body, ec.ECDSA(hashes.SHA256()))
    except (InvalidSignature, ValueError, binascii.Error):
        return False
    return True


def _refuse(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def _process_left_over(engine: Engine) -> None:
    """Process what a crash left (at start); never raises, so the receiver always starts."""
    try:
        left = process_pending(engine)
    except Exception as error:  # e.g. the database is unreachable: start anyway
        logger.error(
            "webhook batches left unprocessed could not be processed at start (herald "
            "webhooks process tries again): %s",
            describe_error(error),
        )
        return
    pending = [result for result in left if result.pending]
    if pending:
        logger.error(
            "%d webhook batch(es) still unprocessed after the start (herald webhooks process "
            "tries again)",
            len(pending),
        )


def create_app(
    engine: Engine,
    key: str,
    config: WebhookConfig,
    *,
    clock: Callable[[], float] = time.time,
    process: bool = True,
    routes: Sequence[BaseRoute] = (),
) -> Starlette:
    """The receiver as an ASGI app; ``process=False`` keeps batches stored but unprocessed;
    ``routes`` are served beside it (the unsubscribe endpoint)."""
    verifying_key = public_key(key)

    async def receive(request: Request) -> JSONResponse:
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > config.max_body_bytes:
            return _refuse(413, f"body over {config.max_body_bytes} bytes")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > config.max_body_bytes:
                return _refuse(413, f"body over {config.max_body_bytes} bytes")
            chunks.append(chunk)
        body = b"".join(chunks)
        signature = request.headers.get(SIGNATURE_HEADER)
        timestamp = request.headers.get(TIMESTAMP_HEADER)
        if not signature or not timestamp:
            return _refuse(403, "missing signature")
        try:
            signed_at = int(timestamp)
        except ValueError:
            return _refuse(403, "bad timestamp")
        if abs(clock() - signed_at) > config.tolerance_seconds:
            return _refuse(403, "timestamp outside the accepted window")
        if not verify(verifying_key, body, signature, timestamp):
            return _refuse(403, "bad signature")
        try:
            events = parse_events(body)
        except BadEvents as error:
            return _refuse(400, str(error))
        batch_id = await run_in_threadpool(
            store_batch,
            engine,
            body=body,
            signed_at=datetime.fromtimestamp(signed_at, UTC),
            events=len(events),
        )
        background = (
            BackgroundTask(process_batch_safely, engine, batch_id=batch_id) if process else None
        )
        return JSONResponse(
            {"stored": batch_id, "events": len(events)}, status_code=200, background=background
        )

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    @asynccontextmanager
    async def lifespan(_: Starlette) -> AsyncIterator[None]:
        if process:  # whatever a crash left stored but unprocessed
            await run_in_threadpool(_process_left_over, engine)
        yield

    return Starlette(
        routes=[Route(PATH, receive, methods=["POST"]), Route("/health", health), *routes],
        lifespan=lifespan,
    )
