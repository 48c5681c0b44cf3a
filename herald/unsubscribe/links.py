"""Each recipient's unsubscribe link and headers (RFC 2369 ``List-Unsubscribe``, RFC 8058
``List-Unsubscribe-Post``), for the messages that honour unsubscribes."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import NamedTuple
from urllib.parse import quote

from herald.config import CampaignConfig, MessageKind
from herald.settings import Settings
from herald.unsubscribe.tokens import Subscriber, TokenSigner, signer

ONE_CLICK = "List-Unsubscribe=One-Click"
MAILTO_SUBJECT = quote("unsubscribe ", safe="")


class Link(NamedTuple):
    """One recipient's unsubscribe URL and the headers that carry it (one per recipient: a
    named tuple costs less than half a frozen dataclass)."""

    url: str
    headers: dict[str, str]


@dataclass(frozen=True)
class UnsubscribeLinks:
    """Makes each recipient's link: ``<unsubscribe.url>/<token>``."""

    signer: TokenSigner
    campaign: CampaignConfig

    @classmethod
    def configured(cls, settings: Settings, campaign: CampaignConfig) -> UnsubscribeLinks:
        """The links for these settings (UnsubscribeKeyError when no key may be used)."""
        return cls(signer(settings), campaign)

    def link(self, kind: MessageKind, message: str, contact_id: int) -> Link | None:
        """The link for one contact in ``message`` (of ``kind``); None when that kind of
        message does not honour unsubscribes (a service notice)."""
        make = self.maker(kind, message)
        return make(contact_id) if make is not None else None

    def maker(self, kind: MessageKind, message: str) -> Callable[[int], Link] | None:
        """What makes each contact's link in ``message`` (of ``kind``), with what every
        link of the message shares worked out once; None when that kind of message does
        not honour unsubscribes (a service notice)."""
        config = self.campaign.unsubscribe
        if not config.honours(kind):
            return None
        campaign, make_token = self.campaign.id, self.signer.make
        base = f"{str(config.url).rstrip('/')}/"
        # A token is URL-safe already (letters, digits, "-", "_", "."): only the space needs
        # quoting (as quote() would: the same bytes, without a pass per character).
        mailto = f">, <mailto:{config.mailto}?subject={MAILTO_SUBJECT}" if config.mailto else ""

        def make(contact_id: int) -> Link:
            token = make_token(Subscriber(campaign, contact_id, message))
            url = base + token
            targets = f"<{url}{mailto}{token}>" if mailto else f"<{url}>"
            return Link(url, {"List-Unsubscribe": targets, "List-Unsubscribe-Post": ONE_CLICK})

        return make
