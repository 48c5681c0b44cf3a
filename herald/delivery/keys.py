"""What the ledger, the transports and SendGrid's events share: a request's outcome and the
key a recipient is known by.

Both are kept in a module of their own, below the ledger and the transports, so that the
telemetry wing can read a key back without importing the ledger's machinery.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from enum import StrEnum
from typing import Final

MAX_CONTACT_ID: Final = 2_147_483_647  # the INTEGER column of contact.id
_REPORT_RECIPIENT = re.compile(r"leadership-[0-9]+", re.ASCII)


class Outcome(StrEnum):
    """What became of a provider request: the state its batch and its rows take.

    The values are those of :class:`herald.models.DeliveryState` and
    :class:`herald.models.BatchState` of the same name, so what is stored stays the same.
    """

    ACCEPTED = "accepted"  # the provider took it (2xx)
    FAILED = "failed"  # rejected, or it never left: not retried
    UNKNOWN = "unknown"  # it may or may not have been accepted: never re-sent until settled


@dataclass(frozen=True)
class LedgerKey:
    """The key a recipient's message carries (SendGrid's ``custom_args.herald_key``), by
    which its events find the ledger row: ``campaign/message/recipient``.

    ``recipient`` is the contact id of a customer message, or ``leadership-<row id>`` for a
    leadership report (whose rows are not contacts, so events do not settle them).
    """

    campaign: str
    message: str
    recipient: int | str

    @classmethod
    def of_report(cls, campaign: str, report: str, row_id: int) -> LedgerKey:
        """The key of one leadership recipient of a report."""
        return cls(campaign, report, f"leadership-{row_id}")

    @property
    def contact_id(self) -> int | None:
        """The contact a customer message went to; None for a report's recipient."""
        return self.recipient if isinstance(self.recipient, int) else None

    def format(self) -> str:
        """The key as it travels: ``campaign/message/recipient``."""
        return f"{self.prefix(self.campaign, self.message)}{self.recipient}"

    @staticmethod
    def prefix(campaign: str, message: str) -> str:
        """What every key of one message starts with (a batch adds each recipient to it)."""
        return f"{campaign}/{message}/"

    @classmethod
    def parse(cls, value: str) -> LedgerKey | None:
        """The key in ``value``; None when ``value`` is not one of Herald's keys.

        A contact id outside the INTEGER range raises ValueError: such a value must not
        reach a query, and the caller reports it.
        """
        campaign, _, rest = value.partition("/")
        message, _, recipient = rest.partition("/")
        if not (campaign and message and recipient.isascii()):
            return None
        if _REPORT_RECIPIENT.fullmatch(recipient):
            return cls(campaign, message, recipient)
        if not recipient.isdigit():
            return None
        number = int(recipient)
        if not 1 <= number <= MAX_CONTACT_ID:
            shown = recipient if len(recipient) <= 30 else recipient[:27] + "..."
            raise ValueError(f"contact id {shown} is outside 1..{MAX_CONTACT_ID}")
        return cls(campaign, message, number)
