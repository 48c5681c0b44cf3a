"""A fake SendGrid v3 Mail Send server for tests and benchmarks.

:class:`FakeSendGrid` is a real HTTP server on 127.0.0.1 (an ephemeral port, a background
thread) that answers ``POST /v3/mail/send`` the way SendGrid does, so the official client
(and Herald's transport on top of it) can be exercised end to end::

    with FakeSendGrid(api_key="SG.fake-key") as fake:
        client = sendgrid.SendGridAPIClient(api_key="SG.fake-key", host=fake.url)
        client.send(mail)
        assert fake.accepted_emails()["ada@example.com"] == 1

Each request is authenticated (``Authorization: Bearer <api_key>``), size-checked, parsed and
validated against the request-body schema of the official OpenAPI document (vendored next to
this module) plus the SendGrid rules that the schema cannot express. A valid request is
answered 202 with an ``X-Message-Id`` and recorded as one :class:`Accepted` per ``to``
recipient, holding the subject, text and HTML *as that recipient would receive them*
(substitutions and sections applied); sandbox mode answers 200 and records nothing.

Faults apply only to requests that are authenticated and valid: a scripted queue
(:meth:`FakeSendGrid.script`) is consumed first, then random draws with the
:class:`Faults` probabilities: 429 with rate-limit headers, 500, or a connection reset
*after* the request was accepted and recorded (what the client cannot tell apart from a
lost request). Every request, whatever became of it, is logged as a :class:`RequestLog`.
Given an :class:`~herald.testing.event_webhook.EventPoster`, the fake also reports each
accepted recipient's events to a webhook receiver, signed, as SendGrid's Event Webhook does.

Tests never sleep to let something happen: the fake synchronises with them explicitly.
:meth:`FakeSendGrid.gather` holds the next N valid requests until all N have arrived (proof
that N clients were requesting at the same moment); the scripted outcome ``"hold"`` keeps a
request unanswered until :meth:`FakeSendGrid.release`, and :meth:`FakeSendGrid.wait_held`
returns once it is held (a request certainly in flight); :meth:`FakeSendGrid.wait_idle`
returns once every request received has been answered and logged. Their timeouts are safety
nets against hanging forever, never part of what a test checks::

    fake.script("accept", "hold")        # the second request waits for release()
    start_the_sender()
    assert fake.wait_held(1, timeout=300)
    kill_the_sender()                    # with a request certainly in flight
    fake.release()
    assert fake.wait_idle(timeout=300)   # its answer is in fake.requests now

Run it on its own with ``python -m herald.testing.fake_sendgrid --port 0 --api-key KEY``.

The package's public face is this module (``from herald.testing.fake_sendgrid import ...``);
its modules: ``schema`` (validating a body as SendGrid does), ``records`` (what it keeps),
``faults`` (what a valid request is answered), ``gathering`` (synchronising with a test),
``fake`` (the :class:`FakeSendGrid` itself), ``handler`` (the HTTP side), ``cli``.
"""

from herald.testing.fake_sendgrid.cli import main
from herald.testing.fake_sendgrid.fake import FakeSendGrid
from herald.testing.fake_sendgrid.faults import RATE_LIMIT, Faults, OutcomeKind
from herald.testing.fake_sendgrid.gathering import DEFAULT_WAIT, Gathering
from herald.testing.fake_sendgrid.handler import MAIL_SEND_PATH
from herald.testing.fake_sendgrid.records import (
    RESET_STATUS,
    Accepted,
    RequestLog,
    busiest_second,
    load_records,
    load_requests,
)
from herald.testing.fake_sendgrid.schema import (
    CONTENT_ORDER,
    CONTENT_REQUIRED,
    CUSTOM_ARGS_TOO_BIG,
    DUPLICATE_RECIPIENT,
    INVALID_KEY,
    MAX_PERSONALIZATION_BYTES,
    MAX_RECIPIENTS,
    NO_PERSONALIZATIONS,
    NO_TO,
    SCHEMA_FILE,
    SECTIONS_INVALID,
    SUBJECT_REQUIRED,
    SUBSTITUTIONS_TOO_BIG,
    TOO_MANY_RECIPIENTS,
    Violation,
    mail_send_violations,
)

__all__ = [
    "CONTENT_ORDER",
    "CONTENT_REQUIRED",
    "CUSTOM_ARGS_TOO_BIG",
    "DEFAULT_WAIT",
    "DUPLICATE_RECIPIENT",
    "INVALID_KEY",
    "MAIL_SEND_PATH",
    "MAX_PERSONALIZATION_BYTES",
    "MAX_RECIPIENTS",
    "NO_PERSONALIZATIONS",
    "NO_TO",
    "RATE_LIMIT",
    "RESET_STATUS",
    "SCHEMA_FILE",
    "SECTIONS_INVALID",
    "SUBJECT_REQUIRED",
    "SUBSTITUTIONS_TOO_BIG",
    "TOO_MANY_RECIPIENTS",
    "Accepted",
    "FakeSendGrid",
    "Faults",
    "Gathering",
    "OutcomeKind",
    "RequestLog",
    "Violation",
    "busiest_second",
    "load_records",
    "load_requests",
    "mail_send_violations",
    "main",
]
