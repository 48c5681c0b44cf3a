"""What the in-process services of :mod:`herald.testing` share: run by ``with``, started on
entry and stopped on exit whatever happened, so a failing test never leaves a thread or a
port behind."""

from __future__ import annotations

from abc import ABC, abstractmethod
from types import TracebackType
from typing import Self


class Service(ABC):
    """A background service: :meth:`start` it (or enter ``with``), :meth:`stop` it (idempotent)."""

    @abstractmethod
    def start(self) -> Self:
        """Start serving in the background; the service itself."""

    @abstractmethod
    def stop(self) -> None:
        """Stop serving and join the background thread (a second call does nothing)."""

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
