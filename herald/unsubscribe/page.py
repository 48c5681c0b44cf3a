"""The unsubscribe page (``templates/unsubscribe/page.html``), in the contact's language.

A link that verifies belongs to a contact: the page speaks the language their messages are
written in. A link that does not verify names nobody, so the page follows the browser's
``Accept-Language`` among the campaign's languages.
"""

from __future__ import annotations

import gettext
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, select

from herald.config import CampaignConfig
from herald.i18n import campaign_locale, match_locale
from herald.i18n.catalogs import language_for
from herald.i18n.environment import environment, in_language
from herald.models import CONTACT

PAGE = "unsubscribe/page.html"
State = Literal["ask", "done", "invalid"]
STATES: tuple[State, ...] = ("ask", "done", "invalid")


def render_page(
    templates: Path,
    state: State,
    campaign: CampaignConfig,
    language: str,
    words: gettext.NullTranslations | None = None,
) -> str:
    """The page in one state, in ``language`` (translated by ``words``, by default the
    language's compiled catalog)."""
    return (
        environment(templates)
        .get_template(PAGE)
        .render(
            state=state,
            legacy=campaign.products.legacy,
            sender=campaign.sender,
            **in_language(templates, language, words),
        )
    )


def language_of(templates: Path, campaign: CampaignConfig, locale: str | None) -> str:
    """The language of the messages a contact of ``locale`` receives."""
    locales = campaign.locales
    return language_for(templates, match_locale(locale, locales), locales[0])


def contact_language(
    engine: Engine, templates: Path, campaign: CampaignConfig, contact_id: int
) -> str:
    """The language of a contact's messages (the default's for a contact no longer known)."""
    with engine.connect() as conn:
        locale = conn.execute(select(CONTACT.c.locale).where(CONTACT.c.id == contact_id)).scalar()
    return language_of(templates, campaign, locale)


def browser_language(templates: Path, campaign: CampaignConfig, accept_language: str) -> str:
    """The campaign language a browser prefers most (``Accept-Language``, by quality), or
    the default."""
    preferred: list[tuple[float, int, str]] = []
    for index, item in enumerate(accept_language.split(",")[:20]):
        tag, _, parameters = item.strip().partition(";")
        quality = 1.0
        if parameters.strip().startswith("q="):
            try:
                quality = float(parameters.strip()[2:])
            except ValueError:
                continue
        if tag and tag != "*" and quality > 0:
            preferred.append((-quality, index, tag.strip()))
    for _, _, tag in sorted(preferred):
        if campaign_locale(tag, campaign.locales) is not None:
            return language_of(templates, campaign, tag)
    return language_of(templates, campaign, None)
