"""The fake itself: its lifecycle, the controls a test scripts it with, what it recorded,
and the state the request handler (:mod:`herald.testing.fake_sendgrid.handler`) shares."""

from __future__ import annotations

import random
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from herald.testing.event_webhook import EventPoster
from herald.testing.fake_sendgrid.faults import Faults, Outcome, OutcomeKind, parse_outcome
from herald.testing.fake_sendgrid.gathering import DEFAULT_WAIT, Gathering
from herald.testing.fake_sendgrid.handler import Server
from herald.testing.fake_sendgrid.records import Accepted, RequestLog
from herald.testing.fake_sendgrid.schema import mail_send_violations
from herald.testing.lifecycle import Service


class FakeSendGrid(Service):
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
        requests_path: Path | None = None,
        port: int = 0,
        expand: bool = True,
        events: EventPoster | None = None,
        validate_every: int = 1,
    ) -> None:
        if latency < 0 or jitter < 0:
            raise ValueError("latency and jitter must not be negative")
        self.api_key = api_key
        self.latency = latency
        self.jitter = jitter
        self.max_body_bytes = max_body_bytes
        self.faults = faults or Faults()
        self.record_path = record_path
        self.requests_path = requests_path  # every request's log line, as JSON lines
        self.expand = expand  # False: records carry no subject or bodies (benchmarks)
        if validate_every < 1:
            raise ValueError("validate_every must be at least 1")
        # 1 (the default, every test): every body is checked against SendGrid's schema. A
        # benchmark may check one request in N, so the fake's CPU (about 0.16 s per
        # 1,000-recipient body) does not eat the cores of what is measured.
        self.validate_every = validate_every
        self.events = events  # given: the accepted recipients' events go to a webhook
        self._port = port
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        # Notified whenever a request starts or ends, is held or released, a connection
        # opens or closes, a gathering fills up, or the fake stops (see the wait_* methods).
        self._changed = threading.Condition(self._lock)
        self._stopping = threading.Event()
        self._script: deque[Outcome] = deque()
        self._gatherings: deque[Gathering] = deque()
        self._held: list[int] = []  # numbers of the requests held by a "hold" outcome
        self._held_batches: dict[int, str] = {}  # their Herald batch ids (custom_args)
        self._active = 0  # requests begun (a first byte read) and not yet answered
        self._connections = 0  # client connections open
        self._accepted: list[Accepted] = []
        self._requests: list[RequestLog] = []
        self._internal_errors: list[str] = []
        self._received = 0
        self._server: Server | None = None
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
        server = Server(("127.0.0.1", self._port), self)
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
        parsed = [parse_outcome(outcome) for outcome in outcomes]
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

    @property
    def held_batches(self) -> list[str]:
        """The Herald batch ids (``herald_batch`` custom arg) of the requests held now: which
        sender's request is certainly in flight."""
        with self._lock:
            return [self._held_batches[no] for no in self._held if no in self._held_batches]

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

    def validates(self, no: int) -> bool:
        """Whether request ``no`` (1-based) is checked against the schema (one in
        ``validate_every``, the first included)."""
        return (no - 1) % self.validate_every == 0

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

    def _hold(self, no: int, batch: str | None = None) -> bool:
        """Keep request ``no`` (of Herald batch ``batch``) until :meth:`release` lets it go;
        False when stopping."""
        with self._changed:
            if batch is not None:
                self._held_batches[no] = batch
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
            if self.requests_path is not None:
                with self.requests_path.open("a", encoding="utf-8") as out:
                    out.write(entry.to_json() + "\n")
            if not records:
                return
            self._accepted.extend(records)
            if self.record_path is not None:
                with self.record_path.open("a", encoding="utf-8") as out:
                    out.writelines(record.to_json() + "\n" for record in records)
        if self.events is not None:
            self.events.accepted(records)

    def _draw(self) -> Outcome:
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
                return Outcome(kind)
            draw -= rate
        return Outcome("accept")

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
