"""Synchronising with a test without sleeping: a :class:`Gathering` holds requests until all
of them have arrived (proof that that many clients were requesting at the same moment)."""

from __future__ import annotations

import threading
import time
from typing import Final

DEFAULT_WAIT: Final = 300.0
"""The safety-net timeout (seconds) of the synchronisation helpers: generous enough for a
loaded 2-core machine, only there so that a broken test fails instead of hanging."""


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
