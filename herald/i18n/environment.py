"""The template environment: Jinja's immutable sandbox (templates are edited by non-engineers),
``StrictUndefined`` (a misspelt variable is an error, not a blank), HTML autoescape, the i18n
extension, and filters that write dates and figures the way a language does.

One environment (so one compiled copy of each template) serves every language: what is
language-specific travels in the render context (:func:`in_language`): the message's
``language``, read by the filters, and its ``translations``, which the gettext functions
the i18n extension calls look up. Messages, the unsubscribe page, the weekly report and
story drafts all render through it (the last two in English, with no translations).
"""

from __future__ import annotations

import gettext
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, pass_context, select_autoescape
from jinja2.runtime import Context
from jinja2.sandbox import ImmutableSandboxedEnvironment

from herald.i18n.catalogs import translations
from herald.i18n.formatting import FILTERS

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"
SOURCE_WORDS = gettext.NullTranslations()  # the templates' own language needs no catalog


def in_language(
    directory: Path, language: str, words: gettext.NullTranslations | None = None
) -> dict[str, Any]:
    """The render-context entries that make a template speak ``language``, translated by
    ``words`` (by default the language's compiled catalog; a check passes its own)."""
    if words is None:
        words = translations(directory, language)
    return {"language": language, "translations": words}


def _words(context: Context) -> gettext.NullTranslations:
    words = context.get("translations")
    return words if isinstance(words, gettext.NullTranslations) else SOURCE_WORDS


@pass_context
def _gettext(context: Context, message: str) -> str:
    return _words(context).gettext(message)


@pass_context
def _ngettext(context: Context, singular: str, plural: str, n: int) -> str:
    return _words(context).ngettext(singular, plural, n)


@pass_context
def _pgettext(context: Context, message_context: str, message: str) -> str:
    return str(_words(context).pgettext(message_context, message))


@pass_context
def _npgettext(context: Context, message_context: str, singular: str, plural: str, n: int) -> str:
    return str(_words(context).npgettext(message_context, singular, plural, n))


@cache
def environment(directory: Path = TEMPLATES) -> ImmutableSandboxedEnvironment:
    """The template environment of a templates folder (English unless a render's context
    says otherwise: :func:`in_language`)."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(directory),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
        extensions=["jinja2.ext.i18n"],
    )
    # A sentence's message id ignores how the template wraps it (as `pybabel extract` does
    # with babel.cfg's `trimmed = true`).
    env.policies["ext.i18n.trimmed"] = True
    env.install_gettext_callables(  # type: ignore[attr-defined]
        _gettext, _ngettext, newstyle=True, pgettext=_pgettext, npgettext=_npgettext
    )
    env.filters.update(FILTERS)
    return env


def clear_caches() -> None:
    """Forget the environments and compiled catalogs (a check reads the files as they are)."""
    environment.cache_clear()
    translations.cache_clear()
