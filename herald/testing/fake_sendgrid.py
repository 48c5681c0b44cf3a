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
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import random
import re
import secrets
import signal
import socket
import struct
import sys
import threading
import time
import traceback
from collections import Counter, deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from functools import cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import FrameType, TracebackType
from typing import Any, Final, Literal, cast
from urllib.parse import urlsplit

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

from herald.testing.event_webhook import EventPoster

SCHEMA_FILE: Final = Path(__file__).with_name("sendgrid-mail-v3.openapi.json")
"""The vendored copy of SendGrid's Mail Send OpenAPI document."""

MAIL_SEND_PATH: Final = "/v3/mail/send"
RESET_STATUS: Final = 0
"""The :attr:`RequestLog.status` of a request answered by a connection reset."""

MAX_RECIPIENTS: Final = 1000
MAX_PERSONALIZATION_BYTES: Final = 10_000
RATE_LIMIT: Final = 600

_SPEC_URI: Final = "urn:sendgrid:mail-v3.openapi.json"
_BODY_POINTER: Final = "#/components/requestBodies/PostMailSend/content/application~1json/schema"
_DRAIN_LIMIT: Final = 256 * 1024 * 1024  # beyond this a refused body is not read, just cut off
_CHUNK: Final = 64 * 1024

# SendGrid's own words for the rules the schema does not express.
INVALID_KEY: Final = "The provided authorization grant is invalid, expired, or revoked"
NO_PERSONALIZATIONS: Final = (
    "The personalizations field is required and must have at least one personalization."
)
NO_TO: Final = (
    "The to array is required for all personalization objects, and must have at least one "
    "email object with a valid email address."
)
DUPLICATE_RECIPIENT: Final = (
    "Each email address in the personalization block should be unique between to, cc, and bcc. "
    "We found the first duplicate instance of [{email}] in the personalizations.{index}.{kind} "
    "field."
)
SUBJECT_REQUIRED: Final = (
    "The subject is required. You can get around this requirement if you use a template with "
    "a subject defined or if every personalization has a subject defined."
)
CONTENT_REQUIRED: Final = (
    "Unless a valid template_id is provided, the content parameter is required. There must be "
    "at least one defined content block. We typically suggest both text/plain and text/html "
    "blocks are included, but only one block is required."
)
CONTENT_ORDER: Final = (
    "If present, text/plain content must be first, followed by text/html, followed by any "
    "other content."
)
TOO_MANY_RECIPIENTS: Final = (
    "The total number of recipients must be no more than 1000. This includes all recipients "
    "defined within the to, cc, and bcc parameters, across each object that you include in "
    "the personalizations array."
)
SUBSTITUTIONS_TOO_BIG: Final = (
    "Substitutions may not exceed 10000 bytes per personalization object."
)
CUSTOM_ARGS_TOO_BIG: Final = (
    "The custom arguments may not exceed 10000 bytes per personalization object."
)
SECTIONS_INVALID: Final = "The sections parameter must be an object of strings."

OutcomeKind = Literal["accept", "429", "500", "reset"]

DEFAULT_WAIT: Final = 300.0
"""The safety-net timeout (seconds) of the synchronisation helpers: generous enough for a
loaded 2-core machine, only there so that a broken test fails instead of hanging."""


@dataclass(frozen=True)
class _Outcome:
    """What to answer a valid request, how long to wait first, and whether to hold it until
    :meth:`FakeSendGrid.release` (``"hold"``)."""

    kind: OutcomeKind
    delay: float = 0.0
    hold: bool = False


# --------------------------------------------------------------------------- records


@dataclass(frozen=True)
class Faults:
    """Probabilities of the faults drawn for each authenticated, valid request.

    One draw per request decides among them (so they must add up to at most 1):
    ``rate_limited`` answers 429 with ``X-RateLimit-Reset`` ``reset_after`` seconds ahead,
    ``server_error`` answers 500 (neither records anything), and ``reset_after_accept``
    records the request like a 202 and then resets the connection without answering.
    """

    rate_limited: float = 0.0
    reset_after: float = 1.0
    server_error: float = 0.0
    reset_after_accept: float = 0.0

    def __post_init__(self) -> None:
        rates = (self.rate_limited, self.server_error, self.reset_after_accept)
        if any(not 0.0 <= rate <= 1.0 for rate in rates) or sum(rates) > 1.0 + 1e-9:
            raise ValueError(f"fault probabilities must be in [0, 1] and add up to <= 1: {self}")
        if self.reset_after < 0:
            raise ValueError(f"reset_after must not be negative: {self.reset_after}")


@dataclass(frozen=True)
class Accepted:
    """One ``to`` recipient of an accepted personalization, as SendGrid would deliver it."""

    email: str
    name: str | None
    subject: str | None
    text: str | None
    html: str | None
    custom_args: dict[str, Any]
    categories: list[str]
    message_id: str
    request_no: int
    asm_group_id: int | None
    sandbox: bool = False

    def to_json(self) -> str:
        """One JSON line (the ``record_path`` format)."""
        return json.dumps(asdict(self), ensure_ascii=False, sort_keys=True)

    @classmethod
    def from_json(cls, line: str) -> Accepted:
        """The record that :meth:`to_json` wrote."""
        return cls(**json.loads(line))


@dataclass(frozen=True)
class RequestLog:
    """What became of one request (every request is logged, whatever its answer).

    ``status`` is the HTTP status answered, or :data:`RESET_STATUS` (0) when the connection
    was reset instead; ``valid`` means authenticated and valid (what faults apply to);
    ``errors`` holds the error messages answered (``"field: message"`` for a 400).
    """

    no: int
    status: int
    recipients: int
    bytes: int
    valid: bool
    errors: list[str]
    at: float


@dataclass(frozen=True)
class Violation:
    """One reason a Mail Send body is refused: an ``errors`` item of SendGrid's 400."""

    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_error(self) -> dict[str, Any]:
        """The item of SendGrid's ``errors`` array."""
        return {"message": self.message, "field": self.field, "help": None}


def load_records(path: Path) -> list[Accepted]:
    """The :class:`Accepted` records a fake appended to ``path`` (its ``record_path``)."""
    with path.open(encoding="utf-8") as lines:
        return [Accepted.from_json(line) for line in lines if line.strip()]


# --------------------------------------------------------------------------- validation


@cache
def _validator() -> Any:
    """A validator for the Mail Send request body, its ``$ref``s resolved in the document."""
    spec = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # Fail here, clearly, if the document lacks the schema (rather than on the first request).
    _ = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT202012.create_resource(spec))
    return Draft202012Validator(
        {"$ref": _SPEC_URI + _BODY_POINTER},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _dotted(path: Iterable[Any]) -> str | None:
    return ".".join(str(part) for part in path) or None


def _summary(value: Any) -> str:
    if isinstance(value, list):
        return f"[array of {len(value)} items]"
    if isinstance(value, dict):
        return f"{{object with {len(value)} properties}}"
    if isinstance(value, str):
        return repr(value[:60] + "...")
    return repr(value)[:60] + "..."


def _schema_violation(error: Any) -> Violation:
    """A jsonschema error as SendGrid reports one: short message, dotted field path."""
    message: str = error.message
    shown = repr(error.instance)
    if len(shown) > 80 and message.startswith(shown):
        message = _summary(error.instance) + message[len(shown) :]
    path = list(error.absolute_path)
    if error.validator == "required":  # name the missing property, as SendGrid does
        for name in error.validator_value:
            if message.startswith(repr(name)):
                path.append(name)
                break
    return Violation(message[:500], _dotted(path))


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _rule_violations(body: Any) -> list[Violation]:
    """SendGrid's rules beyond the schema (each check skips what the schema already refused)."""
    if not isinstance(body, dict):
        return []
    found: list[Violation] = []
    has_template = _nonempty(body.get("template_id"))
    personalizations = body.get("personalizations")
    if isinstance(personalizations, list):
        if not personalizations:
            found.append(Violation(NO_PERSONALIZATIONS, "personalizations"))
        recipients = 0
        for index, personalization in enumerate(personalizations):
            if not isinstance(personalization, dict):
                continue
            where = f"personalizations.{index}"
            to = personalization.get("to")
            if isinstance(to, list) and not to:
                found.append(Violation(NO_TO, f"{where}.to"))
            seen: set[str] = set()
            for kind in ("to", "cc", "bcc"):
                entries = personalization.get(kind)
                if not isinstance(entries, list):
                    continue
                recipients += len(entries)
                for number, entry in enumerate(entries):
                    email = entry.get("email") if isinstance(entry, dict) else None
                    if not isinstance(email, str):
                        continue
                    if email.lower() in seen:
                        message = DUPLICATE_RECIPIENT.format(email=email, index=index, kind=kind)
                        found.append(Violation(message, f"{where}.{kind}.{number}.email"))
                    seen.add(email.lower())
            for key, message in (
                ("substitutions", SUBSTITUTIONS_TOO_BIG),
                ("custom_args", CUSTOM_ARGS_TOO_BIG),
            ):
                value = personalization.get(key)
                if value is not None and _json_size(value) >= MAX_PERSONALIZATION_BYTES:
                    found.append(Violation(message, f"{where}.{key}"))
        if recipients > MAX_RECIPIENTS:
            found.append(Violation(TOO_MANY_RECIPIENTS, "personalizations"))
        every_subject = all(
            isinstance(p, dict) and _nonempty(p.get("subject")) for p in personalizations
        )
        subject = _nonempty(body.get("subject"))
        if personalizations and not has_template and not subject and not every_subject:
            found.append(Violation(SUBJECT_REQUIRED, "subject"))
    content = body.get("content")
    if not has_template and not (isinstance(content, list) and content):
        found.append(Violation(CONTENT_REQUIRED, "content"))
    if isinstance(content, list):
        types = [block.get("type") if isinstance(block, dict) else None for block in content]
        both = "text/plain" in types and "text/html" in types
        if both and types.index("text/plain") > types.index("text/html"):
            found.append(Violation(CONTENT_ORDER, "content"))
    sections = body.get("sections")
    if sections is not None and not (
        isinstance(sections, dict) and all(isinstance(v, str) for v in sections.values())
    ):
        found.append(Violation(SECTIONS_INVALID, "sections"))
    return found


def mail_send_violations(body: Any) -> list[Violation]:
    """Every reason SendGrid would refuse this Mail Send body with a 400 (none: it is valid).

    The schema's violations come first (message from jsonschema, ``field`` the dotted path
    such as ``personalizations.0.to.0.email``), then SendGrid's other rules: at least one
    personalization, each with a ``to``, no address twice in one personalization, a subject
    (top level, or in every personalization, unless a template is used), content or a
    template (text/plain before text/html), at most 1,000 recipients, substitutions and
    custom_args under 10,000 bytes per personalization, and ``sections`` mapping to strings.
    """
    found = [_schema_violation(error) for error in _validator().iter_errors(body)]
    return found + _rule_violations(body)


# --------------------------------------------------------------------------- expansion


def _substitute(text: str, values: Mapping[str, str]) -> str:
    """Each key of ``values`` replaced in ``text``, longer keys first, in a single pass."""
    keys = sorted((key for key in values if key), key=len, reverse=True)
    if not keys:
        return text
    pattern = re.compile("|".join(re.escape(key) for key in keys))
    return pattern.sub(lambda match: values[match.group(0)], text)


def _accepted(
    body: dict[str, Any], message_id: str, request_no: int, *, expand: bool = True
) -> list[Accepted]:
    """The records of a valid, accepted body: one per ``to`` of each personalization.

    A substitution whose value names a key of the top-level ``sections`` stands for that
    section, itself with the personalization's substitutions applied (one level deep).
    With ``expand`` False (benchmarks) the subject and bodies are not rebuilt: None.
    """
    sections: dict[str, str] = body.get("sections") or {}
    bodies: dict[str, str] = {}
    for block in body.get("content") or []:
        bodies.setdefault(block["type"], block["value"])
    asm = body.get("asm")
    asm_group_id = asm.get("group_id") if isinstance(asm, dict) else None
    categories = list(body.get("categories") or [])
    records: list[Accepted] = []
    for personalization in body["personalizations"]:
        subject = text = html = None
        if expand:  # once per personalization, whatever its number of recipients
            own: dict[str, str] = personalization.get("substitutions") or {}
            values = {
                key: _substitute(sections[value], own) if value in sections else value
                for key, value in own.items()
            }

            def fill(template: str | None, values: dict[str, str] = values) -> str | None:
                return None if template is None else _substitute(template, values)

            subject = fill(personalization.get("subject", body.get("subject")))
            text, html = fill(bodies.get("text/plain")), fill(bodies.get("text/html"))
        records += [
            Accepted(
                email=to["email"],
                name=to.get("name"),
                subject=subject,
                text=text,
                html=html,
                custom_args=dict(personalization.get("custom_args") or {}),
                categories=list(categories),
                message_id=message_id,
                request_no=request_no,
                asm_group_id=asm_group_id,
            )
            for to in personalization["to"]
        ]
    return records


def _recipients(body: Any) -> int:
    """to + cc + bcc across the personalizations (0 for what is not a Mail Send body)."""
    if not isinstance(body, dict) or not isinstance(body.get("personalizations"), list):
        return 0
    return sum(
        len(p[kind])
        for p in body["personalizations"]
        if isinstance(p, dict)
        for kind in ("to", "cc", "bcc")
        if isinstance(p.get(kind), list)
    )


def _sandbox(body: dict[str, Any]) -> bool:
    settings = body.get("mail_settings") or {}
    return bool((settings.get("sandbox_mode") or {}).get("enable"))


def _parse_outcome(text: str) -> _Outcome:
    """A scripted outcome: what to answer, how long to wait first, whether to hold it."""
    kinds: dict[str, OutcomeKind] = {"accept": "accept", "429": "429", "500": "500"}
    kinds["reset"] = "reset"
    if text in kinds:
        return _Outcome(kinds[text])
    if text == "hold":
        return _Outcome("accept", hold=True)
    if text.startswith("slow:"):
        try:
            seconds = float(text.removeprefix("slow:"))
        except ValueError:
            seconds = -1.0
        if seconds >= 0 and math.isfinite(seconds):
            return _Outcome("accept", seconds)
    raise ValueError(
        f"unknown scripted outcome {text!r}: expected '429', '500', 'reset', 'accept', "
        "'hold' or 'slow:<seconds>'"
    )


def _errors(message: str) -> dict[str, Any]:
    return {"errors": [Violation(message).as_error()]}


class Gathering:
    """The requests of one :meth:`FakeSendGrid.gather`: each is held until all ``count``
    have arrived, then all are answered together.

    Thread-safe; its state is guarded by its fake's lock. ``met`` is True once all ``count``
    arrived (the proof that that many clients were requesting at the same moment); a
    gathering that gave up (its safety ``timeout`` ran out after its first request arrived,
    or the fake stopped) lets the requests it held go on and leaves ``met`` False.
    """

    def __init__(self, count: int, timeout: float, changed: threading.Condition) -> None:
        self.count = count
        self.timeout = timeout
        self._changed = changed
        self._request_nos: list[int] = []
        self._deadline: float | None = None  # set when the first request arrives
        self._met = False
        self._gave_up = False

    def __repr__(self) -> str:
        with self._changed:
            state = "met" if self._met else "gave up" if self._gave_up else "waiting"
            return f"Gathering({len(self._request_nos)}/{self.count}, {state})"

    @property
    def met(self) -> bool:
        """All ``count`` requests arrived and were held together."""
        with self._changed:
            return self._met

    @property
    def request_nos(self) -> list[int]:
        """The numbers (:attr:`RequestLog.no`) of the requests gathered so far."""
        with self._changed:
            return list(self._request_nos)

    def wait(self, timeout: float = DEFAULT_WAIT) -> bool:
        """Return once all ``count`` requests have arrived (True), or the gathering gave up or
        ``timeout`` seconds passed (False)."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not (self._met or self._gave_up):
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)
            return self._met

    # Called by the fake with its lock held.

    @property
    def _open(self) -> bool:
        return not (self._met or self._gave_up) and len(self._request_nos) < self.count

    @property
    def _over(self) -> bool:
        return self._met or self._gave_up

    def _join(self, no: int) -> None:
        self._request_nos.append(no)
        if self._deadline is None:
            self._deadline = time.monotonic() + self.timeout
        if len(self._request_nos) == self.count:
            self._met = True
            self._changed.notify_all()

    def _give_up(self) -> None:
        if not self._over:
            self._gave_up = True
            self._changed.notify_all()


# --------------------------------------------------------------------------- the server


class FakeSendGrid:
    """SendGrid's v3 Mail Send API on 127.0.0.1, for tests and benchmarks.

    Use as a context manager, or call :meth:`start` and :meth:`stop`. All the accessors are
    thread-safe snapshots.
    """

    def __init__(
        self,
        api_key: str,
        *,
        latency: float = 0.0,
        jitter: float = 0.0,
        max_body_bytes: int = 30 * 1024 * 1024,
        faults: Faults | None = None,
        seed: int | None = None,
        record_path: Path | None = None,
        port: int = 0,
        expand: bool = True,
        events: EventPoster | None = None,
    ) -> None:
        if latency < 0 or jitter < 0:
            raise ValueError("latency and jitter must not be negative")
        self.api_key = api_key
        self.latency = latency
        self.jitter = jitter
        self.max_body_bytes = max_body_bytes
        self.faults = faults or Faults()
        self.record_path = record_path
        self.expand = expand  # False: records carry no subject or bodies (benchmarks)
        self.events = events  # given: the accepted recipients' events go to a webhook
        self._port = port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # Notified whenever a request starts or ends, is held or released, a connection
        # opens or closes, a gathering fills up, or the fake stops (see the wait_* methods).
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._script: deque[_Outcome] = deque()
        self._gatherings: deque[Gathering] = deque()
        self._held: list[int] = []  # numbers of the requests held by a "hold" outcome
        self._active = 0  # requests begun (a first byte read) and not yet answered
        self._connections = 0  # client connections open
        self._accepted: list[Accepted] = []
        self._requests: list[RequestLog] = []
        self._internal_errors: list[str] = []
        self._received = 0
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None

    def __repr__(self) -> str:  # never the key
        where = self.url if self._server is not None else "stopped"
        return f"FakeSendGrid({where})"

    # ----------------------------------------------------------------------- lifecycle

    def start(self) -> FakeSendGrid:
        """Bind 127.0.0.1 (an ephemeral port unless one was given) and serve in a thread."""
        if self._server is not None:
            raise RuntimeError("this FakeSendGrid is already running")
        self._stopping.clear()
        server = _Server(("127.0.0.1", self._port), self)
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name=f"fake-sendgrid-{server.server_address[1]}",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, hang up on open connections and join the thread (idempotent).

        Never waits for a held or gathered request: each is let go and answered with nothing
        (a reset, logged as :data:`RESET_STATUS` with the error ``"stopped"``).
        """
        server, thread = self._server, self._thread
        if server is None:
            return
        with self._changed:
            self._stopping.set()  # wakes requests that wait out their latency, held ones too
            self._held.clear()
            for gathering in self._gatherings:
                gathering._give_up()
            self._gatherings.clear()
            self._changed.notify_all()
        server.shutdown()
        server.hang_up()
        server.server_close()
        if thread is not None:
            thread.join()
        self._server = self._thread = None

    def __enter__(self) -> FakeSendGrid:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        """The port the server listens on (once started)."""
        if self._server is None:
            raise RuntimeError("FakeSendGrid is not running: call start() or use `with`")
        return int(self._server.server_address[1])

    @property
    def url(self) -> str:
        """What a client uses as its API host: ``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    # ----------------------------------------------------------------------- control

    def script(self, *outcomes: str) -> None:
        """Queue outcomes for the next authenticated, valid requests, in order.

        Each is ``"429"``, ``"500"``, ``"reset"`` (accept and record, then reset the
        connection), ``"accept"``, ``"slow:<seconds>"`` (accept after that long) or
        ``"hold"`` (keep the request unanswered, nothing recorded, until :meth:`release`;
        then accept it; :meth:`wait_held` tells when it is held). Queued outcomes are used
        before any random :class:`Faults` draw.
        """
        parsed = [_parse_outcome(outcome) for outcome in outcomes]
        with self._lock:
            self._script.extend(parsed)

    @property
    def scripted(self) -> int:
        """How many scripted outcomes are still queued."""
        with self._lock:
            return len(self._script)

    def clear_script(self) -> int:
        """Drop the scripted outcomes still queued; how many there were."""
        with self._lock:
            dropped = len(self._script)
            self._script.clear()
            return dropped

    def gather(self, count: int, timeout: float = DEFAULT_WAIT) -> Gathering:
        """Hold each of the next ``count`` authenticated, valid requests, unanswered, until
        all ``count`` have arrived; then answer them together (each with its own outcome:
        script, faults, latency).

        So a test proves that ``count`` clients were requesting at the same moment: a client
        with one request in flight at a time cannot send two of them. ``timeout`` (seconds,
        counted from the first request's arrival) is only a safety net: past it the requests
        held go on and the returned :class:`Gathering` is not ``met``. Gatherings asked for
        one after another take the requests that follow, in order.
        """
        if count < 1:
            raise ValueError(f"gather needs at least one request, not {count}")
        if not timeout > 0:
            raise ValueError(f"the timeout must be positive: {timeout}")
        gathering = Gathering(count, timeout, self._changed)
        with self._lock:
            self._gatherings.append(gathering)
        return gathering

    def wait_received(self, count: int, timeout: float = DEFAULT_WAIT) -> bool:
        """Return True once ``count`` requests in all have been received (their headers
        read, answered or not); False if ``timeout`` seconds pass first (a safety net)."""
        return self._wait_for(lambda: self._received >= count, timeout, stop_ends=False)

    @property
    def held(self) -> list[int]:
        """The numbers (:attr:`RequestLog.no`) of the requests a ``"hold"`` keeps waiting."""
        with self._lock:
            return list(self._held)

    def wait_held(self, count: int = 1, timeout: float = DEFAULT_WAIT) -> bool:
        """Return True once at least ``count`` requests are held (scripted ``"hold"``):
        each is certainly in flight, its client waiting for the answer. False if ``timeout``
        seconds pass first (a safety net) or the fake stops."""
        return self._wait_for(lambda: len(self._held) >= count, timeout)

    def release(self, count: int | None = None) -> int:
        """Let the held requests go (the ``count`` held longest, or all of them): each is
        then accepted as ``"accept"`` would be. Returns how many were let go; a request
        held after this call waits for the next one."""
        with self._changed:
            let_go = len(self._held) if count is None else max(0, min(count, len(self._held)))
            del self._held[:let_go]
            self._changed.notify_all()
            return let_go

    def wait_idle(self, timeout: float = DEFAULT_WAIT, *, disconnected: bool = False) -> bool:
        """Return True once no request is being handled: every request received (from its
        first byte on) has been answered and logged, its records and events handed on.

        A held or gathered request is not answered: release it first. With ``disconnected``,
        also wait until every client connection is closed: use it once the clients have
        exited (a killed client's last bytes may still be on their way to the server until
        its connection closes). False if ``timeout`` seconds pass first (a safety net).
        """
        return self._wait_for(
            lambda: self._active == 0 and not (disconnected and self._connections),
            timeout,
            stop_ends=False,
        )

    # ----------------------------------------------------------------------- records

    @property
    def accepted(self) -> list[Accepted]:
        """Every recipient accepted so far, in the order recorded."""
        with self._lock:
            return list(self._accepted)

    @property
    def requests(self) -> list[RequestLog]:
        """Every request received so far (any answer, resets too), by request number."""
        with self._lock:
            return sorted(self._requests, key=lambda entry: entry.no)

    @property
    def internal_errors(self) -> list[str]:
        """Tracebacks of the fake's own failures while handling a request (should be none)."""
        with self._lock:
            return list(self._internal_errors)

    @property
    def received(self) -> int:
        """Requests received so far, those still being answered included."""
        with self._lock:
            return self._received

    def accepted_emails(self) -> Counter[str]:
        """How many times each address (lower-cased) was accepted."""
        with self._lock:
            return Counter(record.email.lower() for record in self._accepted)

    def request_count(self, status: int | None = None) -> int:
        """Requests received, or those answered with ``status`` (:data:`RESET_STATUS`: resets)."""
        with self._lock:
            return sum(1 for entry in self._requests if status is None or entry.status == status)

    def schema_errors(self, body: Any) -> list[str]:
        """Why this server would refuse ``body`` with a 400, as ``"field: message"`` strings.

        The schema and SendGrid's other rules both count (see :func:`mail_send_violations`);
        an empty list means the body would be accepted.
        """
        return [str(violation) for violation in mail_send_violations(body)]

    # ----------------------------------------------------------------------- internals

    def _next_request_no(self) -> int:
        with self._changed:
            self._received += 1
            self._changed.notify_all()
            return self._received

    def _wait_for(
        self, condition: Callable[[], bool], timeout: float, *, stop_ends: bool = True
    ) -> bool:
        """Wait (lock held while checking) until ``condition()``; False on timeout, or when
        the fake stops if ``stop_ends``."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while not condition():
                left = deadline - time.monotonic()
                if left <= 0 or (stop_ends and self._stopping.is_set()):
                    return False
                self._changed.wait(left)
            return True

    def _count(self, *, requests: int = 0, connections: int = 0) -> None:
        """A request began (+1) or ended (-1); a connection opened or closed."""
        with self._changed:
            self._active += requests
            self._connections += connections
            self._changed.notify_all()

    def _gather(self, no: int) -> bool:
        """Hold request ``no`` in the open gathering, if any, until it is met or gives up;
        False when the fake is stopping (then answer nothing)."""
        with self._changed:
            gathering = next((g for g in self._gatherings if g._open), None)
            if gathering is None:
                return not self._stopping.is_set()
            gathering._join(no)
            while not gathering._over and not self._stopping.is_set():
                assert gathering._deadline is not None
                left = gathering._deadline - time.monotonic()
                if left <= 0:
                    gathering._give_up()
                    break
                self._changed.wait(left)
            if gathering in self._gatherings and gathering._over:
                self._gatherings.remove(gathering)
            return not self._stopping.is_set()

    def _hold(self, no: int) -> bool:
        """Keep request ``no`` until :meth:`release` lets it go; False when stopping."""
        with self._changed:
            self._held.append(no)
            self._changed.notify_all()
            while no in self._held and not self._stopping.is_set():
                self._changed.wait()
            if no in self._held:
                self._held.remove(no)
            return not self._stopping.is_set()

    def _log(self, entry: RequestLog, records: Sequence[Accepted] = ()) -> None:
        with self._lock:
            self._requests.append(entry)
            if not records:
                return
            self._accepted.extend(records)
            if self.record_path is not None:
                with self.record_path.open("a", encoding="utf-8") as out:
                    out.writelines(record.to_json() + "\n" for record in records)
        if self.events is not None:
            self.events.accepted(records)

    def _draw(self) -> _Outcome:
        """The outcome for an authenticated, valid request (with its extra delay)."""
        with self._lock:
            if self._script:
                return self._script.popleft()
            draw = self._rng.random()
        faults = self.faults
        rates: tuple[tuple[OutcomeKind, float], ...] = (
            ("429", faults.rate_limited),
            ("500", faults.server_error),
            ("reset", faults.reset_after_accept),
        )
        for kind, rate in rates:
            if draw < rate:
                return _Outcome(kind)
            draw -= rate
        return _Outcome("accept")

    def _delay(self) -> float:
        if not self.jitter:
            return self.latency
        with self._lock:
            return self.latency + self._rng.uniform(0.0, self.jitter)

    def _pause(self, seconds: float) -> bool:
        """Wait ``seconds``; False when the server is stopping (then answer nothing)."""
        if seconds <= 0:
            return not self._stopping.is_set()
        return not self._stopping.wait(seconds)

    def _crashed(self, text: str) -> None:
        with self._lock:
            self._internal_errors.append(text)


class _Server(ThreadingHTTPServer):
    """The HTTP server behind a :class:`FakeSendGrid`; it tracks connections to hang up."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog (5) makes concurrent clients wait a second

    def __init__(self, address: tuple[str, int], fake: FakeSendGrid) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self._connections_lock:
            self._connections.add(request)
        self.fake._count(connections=1)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self._connections_lock:
            known = request in self._connections
            self._connections.discard(request)
        super().shutdown_request(request)
        if known:
            self.fake._count(connections=-1)

    def hang_up(self) -> None:
        """Shut down every open connection (idle keep-alive ones included)."""
        with self._connections_lock:
            connections = list(self._connections)
        for connection in connections:
            with contextlib.suppress(OSError):
                connection.shutdown(socket.SHUT_RDWR)

    def handle_error(self, request: Any, client_address: Any) -> None:  # noqa: ARG002
        """A client hanging up is routine; anything else is the fake's bug: keep it and say so."""
        error = sys.exc_info()[1]
        if isinstance(error, OSError):
            return
        text = traceback.format_exc()
        self.fake._crashed(text)
        sys.stderr.write(f"FakeSendGrid: error while handling a request:\n{text}")


class _Handler(BaseHTTPRequestHandler):
    """One connection: answers ``POST /v3/mail/send`` as SendGrid does; 404/405 otherwise."""

    server: _Server
    protocol_version = "HTTP/1.1"
    timeout = 60  # an idle keep-alive connection is closed after this long
    server_version = "FakeSendGrid/1.0"

    def version_string(self) -> str:
        """The ``Server`` header: no Python version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log is :attr:`FakeSendGrid.requests`."""

    def handle_one_request(self) -> None:
        """One request, counted as being handled from its first byte until it is answered
        (so :meth:`FakeSendGrid.wait_idle` waits for it); an idle keep-alive connection
        is not a request."""
        try:
            begun = bool(cast(io.BufferedReader, self.rfile).peek(1))
        except OSError:  # a timeout or a reset while idle: the client is gone
            begun = False
        if not begun:
            self.close_connection = True
            return
        fake = self.server.fake
        fake._count(requests=1)
        try:
            super().handle_one_request()
        finally:
            fake._count(requests=-1)

    def do_POST(self) -> None:
        """Every method goes through :meth:`_handle` (only POST is allowed)."""
        self._handle()

    do_GET = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = do_POST

    # ----------------------------------------------------------------------- flow

    def _handle(self) -> None:
        fake = self.server.fake
        at = time.time()
        no = fake._next_request_no()
        body, length, problem = self._read_body()

        refused: tuple[int, list[Violation]] | None = None
        parsed: Any = None
        if urlsplit(self.path).path != MAIL_SEND_PATH:
            refused = 404, [Violation("resource not found")]
        elif self.command != "POST":
            refused = 405, [Violation("method not allowed")]
        elif self.headers.get("Authorization") != f"Bearer {fake.api_key}":
            refused = 401, [Violation(INVALID_KEY)]
        elif problem is not None:
            refused = problem[0], [Violation(problem[1])]
        else:
            try:
                parsed = json.loads(body or b"")
            except ValueError:
                refused = 400, [Violation("Bad Request")]
            else:
                violations = mail_send_violations(parsed)
                if violations:
                    refused = 400, violations
        if refused is None:
            self._answer(parsed, no, length, at)
            return
        status, items = refused
        errors = [str(item) for item in items]
        fake._log(RequestLog(no, status, _recipients(parsed), length, False, errors, at))
        if not fake._pause(fake._delay()):
            self.close_connection = True
            return
        headers = {"Allow": "POST"} if status == 405 else {}
        self._reply(status, {"errors": [item.as_error() for item in items]}, headers)

    def _answer(self, body: dict[str, Any], no: int, length: int, at: float) -> None:
        """An authenticated, valid request: a fault, or accepted (sandbox: 200, no record)."""
        fake = self.server.fake
        recipients = _recipients(body)
        # Held in a gathering, then drawn; held until released; the latency: each of these
        # waits ends early when the fake stops, and then nothing is answered.
        outcome = fake._draw() if fake._gather(no) else None
        if (
            outcome is None
            or (outcome.hold and not fake._hold(no))
            or not fake._pause(fake._delay() + outcome.delay)
        ):
            fake._log(RequestLog(no, RESET_STATUS, recipients, length, True, ["stopped"], at))
            self.close_connection = True
            return
        kind = outcome.kind
        if kind == "429":
            reset = math.ceil(time.time() + fake.faults.reset_after)
            fake._log(RequestLog(no, 429, recipients, length, True, ["too many requests"], at))
            headers = {
                "X-RateLimit-Limit": str(RATE_LIMIT),
                "X-RateLimit-Remaining": "0",
                "X-RateLimit-Reset": str(reset),
            }
            self._reply(429, _errors("too many requests"), headers)
            return
        if kind == "500":
            message = "An internal server error occurred."
            fake._log(RequestLog(no, 500, recipients, length, True, [message], at))
            self._reply(500, _errors(message))
            return
        sandbox = _sandbox(body)
        message_id = secrets.token_urlsafe(16)
        records = [] if sandbox else _accepted(body, message_id, no, expand=fake.expand)
        status = RESET_STATUS if kind == "reset" else 200 if sandbox else 202
        fake._log(RequestLog(no, status, recipients, length, True, [], at), records)
        if kind == "reset":
            self._reset()
        elif sandbox:
            self._reply(200, None)
        else:
            self._reply(202, None, {"X-Message-Id": message_id})

    # ----------------------------------------------------------------------- I/O

    def _read_body(self) -> tuple[bytes | None, int, tuple[int, str] | None]:
        """The body, its length, and why it cannot be used (a status and message), if so."""
        if self.headers.get("Transfer-Encoding"):
            self.close_connection = True  # a chunked body is not read: the stream is lost
            return None, 0, (411, "Content-Length is required")
        raw = self.headers.get("Content-Length")
        if raw is None:
            return None, 0, (411, "Content-Length is required")
        try:
            length = int(raw)
            if length < 0:
                raise ValueError(raw)
        except ValueError:
            self.close_connection = True
            return None, 0, (400, "Bad Request")
        if length > self.server.fake.max_body_bytes:
            self._drain(length)
            limit = self.server.fake.max_body_bytes
            return None, length, (413, f"Payload too large: the limit is {limit} bytes.")
        body = self.rfile.read(length)
        if len(body) < length:  # the client hung up mid-body
            self.close_connection = True
            return None, len(body), (400, "Bad Request")
        return body, length, None

    def _drain(self, length: int) -> None:
        """Read and drop a refused body, so the client can read the answer (else close)."""
        if length > _DRAIN_LIMIT:
            self.close_connection = True
            return
        left = length
        while left > 0:
            chunk = self.rfile.read(min(left, _CHUNK))
            if not chunk:
                self.close_connection = True
                return
            left -= len(chunk)

    def _reply(
        self, status: int, payload: dict[str, Any] | None, headers: Mapping[str, str] | None = None
    ) -> None:
        data = b"" if payload is None else json.dumps(payload).encode("utf-8")
        self.send_response(status)
        if data:
            self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if data and self.command != "HEAD":
            self.wfile.write(data)

    def _reset(self) -> None:
        """Hang up without an answer: SO_LINGER 0 makes the close send a RST, not a FIN."""
        self.close_connection = True
        self.connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        # The socket really closes (and resets) once the handler's files are closed too.
        self.connection.close()


# --------------------------------------------------------------------------- the CLI


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m herald.testing.fake_sendgrid",
        description="Serve a fake SendGrid v3 Mail Send API on 127.0.0.1 until SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--api-key", required=True, help="the key clients must present")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra 0..JITTER seconds")
    parser.add_argument("--max-body-bytes", type=int, default=30 * 1024 * 1024)
    parser.add_argument("--record", type=Path, help="append accepted recipients as JSON lines")
    parser.add_argument(
        "--no-expand",
        action="store_true",
        help="record recipients without rebuilding their subject and bodies (benchmarks)",
    )
    parser.add_argument("--rate-limited", type=float, default=0.0, help="probability of 429")
    parser.add_argument("--reset-after", type=float, default=1.0, help="429's reset, seconds")
    parser.add_argument("--server-error", type=float, default=0.0, help="probability of 500")
    parser.add_argument(
        "--reset-after-accept",
        type=float,
        default=0.0,
        help="probability of accepting, then resetting the connection without an answer",
    )
    parser.add_argument("--seed", type=int, help="seed for the fault and jitter draws")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake until SIGTERM or SIGINT; print its URL first."""
    args = _parser().parse_args(argv)
    faults = Faults(
        rate_limited=args.rate_limited,
        reset_after=args.reset_after,
        server_error=args.server_error,
        reset_after_accept=args.reset_after_accept,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeSendGrid(
        args.api_key,
        latency=args.latency,
        jitter=args.jitter,
        max_body_bytes=args.max_body_bytes,
        faults=faults,
        seed=args.seed,
        record_path=args.record,
        port=args.port,
        expand=not args.no_expand,
    )
    with fake:
        sys.stdout.write(f"listening on {fake.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            pass
    sys.stdout.write(
        f"stopped after {fake.request_count()} requests, {len(fake.accepted)} recipients accepted\n"
    )
    sys.stdout.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
