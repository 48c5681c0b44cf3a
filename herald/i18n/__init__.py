"""Languages: every customer message in the recipient's language.

The templates are written in English (the *source language*) and mark each sentence with
Jinja's i18n extension (``{% trans %}`` blocks, ``_()``); Babel extracts those sentences into
``templates/locales/messages.pot`` and keeps one gettext catalog per language beside it,
``templates/locales/<ll_CC>/LC_MESSAGES/messages.po`` (``make i18n-extract``, ``make
i18n-update``); ``make`` compiles each into its ``.mo`` (``make catalogs``, run by every
target that installs). The compiled files are not in the repository: they are built, and a
missing or stale one stops a run before anything is sent (:mod:`herald.i18n.catalogs`).

A message is written in one language and declares that one (``<html lang>`` and
``Content-Language``): the contact's locale when a catalog exists for it, else the
campaign's default locale (the first of ``campaign.locales``), else English. Dates, numbers
and percentages are formatted by Babel for that language (:mod:`herald.i18n.formatting`).
"""

from __future__ import annotations

from babel import Locale, UnknownLocaleError

SOURCE_LANGUAGE = "en"  # the language the templates are written in
DOMAIN = "messages"
CATALOGS = "locales"  # the catalogs' folder, inside the templates folder


def babel_locale(tag: str) -> Locale:
    """Babel's locale for a language tag like ``pt-BR`` (ValueError naming it if unknown)."""
    try:
        return Locale.parse(tag, sep="-")
    except (UnknownLocaleError, ValueError) as error:
        raise ValueError(f"{tag!r} is not a language Babel knows ({error})") from None


def catalog_name(tag: str) -> str:
    """The catalog folder of a language tag: ``pt-BR`` -> ``pt_BR`` (gettext's spelling)."""
    return str(babel_locale(tag))


def campaign_locale(tag: str | None, locales: list[str]) -> str | None:
    """The campaign locale of a locale: the same tag, else the first of the same language
    (``de-AT`` -> ``de``, ``pt`` -> ``pt-BR``), else None."""
    if tag in locales:
        return tag
    language = (tag or "").partition("-")[0].lower()
    for locale in locales:
        if language and locale.partition("-")[0].lower() == language:
            return locale
    return None


def match_locale(tag: str | None, locales: list[str]) -> str:
    """The campaign locale a contact's locale maps to: :func:`campaign_locale`, else the
    default (the first). :func:`herald.delivery.audience.locale_expression` is the same rule
    in SQL."""
    return campaign_locale(tag, locales) or locales[0]
