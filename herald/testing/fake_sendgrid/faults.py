"""The fault model: what a valid request is answered, from a scripted queue first, then from
random draws with the :class:`Faults` probabilities."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Final, Literal

RATE_LIMIT: Final = 600
"""The ``X-RateLimit-Limit`` of a 429."""

OutcomeKind = Literal["accept", "429", "500", "reset"]


@dataclass(frozen=True)
class Outcome:
    """What to answer a valid request, how long to wait first, and whether to hold it until
    :meth:`FakeSendGrid.release` (``"hold"``)."""

    kind: OutcomeKind
    delay: float = 0.0
    hold: bool = False


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


def parse_outcome(text: str) -> Outcome:
    """A scripted outcome: what to answer, how long to wait first, whether to hold it."""
    kinds: dict[str, OutcomeKind] = {"accept": "accept", "429": "429", "500": "500"}
    kinds["reset"] = "reset"
    if text in kinds:
        return Outcome(kinds[text])
    if text == "hold":
        return Outcome("accept", hold=True)
    if text.startswith("slow:"):
        try:
            seconds = float(text.removeprefix("slow:"))
        except ValueError:
            seconds = -1.0
        if seconds >= 0 and math.isfinite(seconds):
            return Outcome("accept", seconds)
    raise ValueError(
        f"unknown scripted outcome {text!r}: expected '429', '500', 'reset', 'accept', "
        "'hold' or 'slow:<seconds>'"
    )
