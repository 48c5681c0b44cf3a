"""The HTTP side: a threading server that tracks its connections (to hang up on them when
the fake stops) and the handler that answers ``POST /v3/mail/send`` as SendGrid does."""

from __future__ import annotations

import contextlib
import io
import json
import math
import secrets
import socket
import struct
import sys
import threading
import time
import traceback
from collections.abc import Mapping
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import TYPE_CHECKING, Any, Final, cast
from urllib.parse import urlsplit

import orjson

from herald.testing.fake_sendgrid.faults import RATE_LIMIT
from herald.testing.fake_sendgrid.records import (
    RESET_STATUS,
    RequestLog,
    accepted_records,
    is_sandbox,
    recipient_count,
)
from herald.testing.fake_sendgrid.schema import INVALID_KEY, Violation, mail_send_violations

if TYPE_CHECKING:
    from herald.testing.fake_sendgrid.fake import FakeSendGrid

MAIL_SEND_PATH: Final = "/v3/mail/send"
_DRAIN_LIMIT: Final = 256 * 1024 * 1024  # beyond this a refused body is not read, just cut off
_CHUNK: Final = 64 * 1024


def _errors(message: str) -> dict[str, Any]:
    return {"errors": [Violation(message).as_error()]}


class Server(ThreadingHTTPServer):
    """The HTTP server behind a :class:`FakeSendGrid`; it tracks connections to hang up."""

    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = 256  # the default backlog (5) makes concurrent clients wait a second

    def __init__(self, address: tuple[str, int], fake: FakeSendGrid) -> None:
        self.fake = fake
        self._connections: set[socket.socket] = set()
        self._connections_lock = threading.Lock()
        super().__init__(address, Handler)

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


class Handler(BaseHTTPRequestHandler):
    """One connection: answers ``POST /v3/mail/send`` as SendGrid does; 404/405 otherwise."""

    server: Server
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
        if problem is not None and problem[0] == RESET_STATUS:
            # Stopped while its body was still coming (under load a body may be read only
            # after stop() began): hung up on, as a request waiting for its answer is.
            self._hung_up(no, 0, length, False, at)
            return

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
        elif not _is_json(self.headers.get("Content-Type")):
            # SendGrid's answer to any other media type (a charset parameter is fine).
            refused = 415, [Violation("Content-Type should be application/json.")]
        else:
            try:
                parsed = _parse(body or b"")
            except ValueError:
                refused = 400, [Violation("Bad Request")]
            else:
                violations = mail_send_violations(parsed) if fake.validates(no) else []
                if violations:
                    refused = 400, violations
        if refused is None:
            self._answer(parsed, no, length, at)
            return
        status, items = refused
        errors = [str(item) for item in items]
        fake._log(RequestLog(no, status, recipient_count(parsed), length, False, errors, at))
        if not fake._pause(fake._delay()):
            self.close_connection = True
            return
        headers = {"Allow": "POST"} if status == 405 else {}
        self._reply(status, {"errors": [item.as_error() for item in items]}, headers)

    def _answer(self, body: dict[str, Any], no: int, length: int, at: float) -> None:
        """An authenticated, valid request: a fault, or accepted (sandbox: 200, no record)."""
        fake = self.server.fake
        recipients = recipient_count(body)
        # Held in a gathering, then drawn; held until released; the latency: each of these
        # waits ends early when the fake stops, and then nothing is answered.
        outcome = fake._draw() if fake._gather(no) else None
        if (
            outcome is None
            or (outcome.hold and not fake._hold(no, _herald_batch(body)))
            or not fake._pause(fake._delay() + outcome.delay)
        ):
            self._hung_up(no, recipients, length, True, at)
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
        sandbox = is_sandbox(body)
        message_id = secrets.token_urlsafe(16)
        records = [] if sandbox else accepted_records(body, message_id, no, expand=fake.expand)
        status = RESET_STATUS if kind == "reset" else 200 if sandbox else 202
        fake._log(RequestLog(no, status, recipients, length, True, [], at), records)
        if kind == "reset":
            self._reset()
        elif sandbox:
            self._reply(200, None)
        else:
            self._reply(202, None, {"X-Message-Id": message_id})

    # ----------------------------------------------------------------------- I/O

    def _hung_up(self, no: int, recipients: int, length: int, valid: bool, at: float) -> None:
        """The fake stopped before answering: logged as a reset, and nothing is answered."""
        self.server.fake._log(
            RequestLog(no, RESET_STATUS, recipients, length, valid, ["stopped"], at)
        )
        self.close_connection = True

    def _read_body(self) -> tuple[bytes | None, int, tuple[int, str] | None]:
        """The body, its length, and why it cannot be used (a status and message), if so:
        :data:`RESET_STATUS` when the fake stopped before the whole body came."""
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
        try:
            body = self.rfile.read(length)
        except OSError:  # reset mid-body
            body = b""
        if len(body) < length:
            self.close_connection = True
            if self.server.fake._stopping.is_set():  # the fake hung up on it: a reset
                return None, len(body), (RESET_STATUS, "stopped")
            return None, len(body), (400, "Bad Request")  # the client hung up mid-body
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


def _herald_batch(body: dict[str, Any]) -> str | None:
    """The Herald batch id a request carries (its first personalization's custom args)."""
    personalizations = body.get("personalizations") or [{}]
    value = (personalizations[0].get("custom_args") or {}).get("herald_batch")
    return str(value) if value is not None else None


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type is JSON's media type (parameters such as charset aside)."""
    media = (content_type or "").partition(";")[0].strip().lower()
    return media == "application/json"


def _parse(body: bytes) -> Any:
    """A request body's JSON: orjson's parse (a 1,000-recipient body in a fraction of
    json.loads's time: the fake shares the machine it measures), json.loads's for what
    orjson refuses and json takes (integers past 64 bits, lone surrogates): the same
    values either way, ValueError for what neither reads."""
    try:
        return orjson.loads(body)
    except orjson.JSONDecodeError:
        return json.loads(body)
