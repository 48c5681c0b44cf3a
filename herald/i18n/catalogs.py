"""The gettext catalogs: which languages have one, their compiled translations, and the check
that each is complete for what the templates say.

Runs load the compiled ``.mo`` (built by ``make catalogs``); a catalog whose ``.mo`` is
missing or older than its ``.po`` is an error that names the file and the command, raised
while the templates are checked, before anything is sent. The check reads the ``.po`` itself:
a message the templates use that a catalog lacks, leaves empty, marks fuzzy (``pybabel
compile`` leaves fuzzy entries out) or translates with other placeholders or other HTML tags
than its source is a :class:`TranslationProblem` naming the catalog, the message and the
language.
"""

from __future__ import annotations

import gettext
import io
import re
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from babel.messages.catalog import Catalog, Message
from babel.messages.mofile import write_mo
from babel.messages.pofile import read_po
from babel.support import Translations

from herald.errors import HeraldError
from herald.i18n import CATALOGS, DOMAIN, SOURCE_LANGUAGE, catalog_name

_PLACEHOLDER = re.compile(r"%\((\w+)\)[sd]|%[sd]")
_TAG = re.compile(r"</?[a-zA-Z][\w-]*")


class CatalogError(HeraldError):
    """A catalog cannot be used as it is (nothing was sent)."""

    outcome = "Nothing was sent."


def catalog_root(templates: Path) -> Path:
    """The folder holding ``messages.pot`` and one folder per language."""
    return templates / CATALOGS


def po_file(templates: Path, tag: str) -> Path:
    """A language's editable catalog."""
    return catalog_root(templates) / catalog_name(tag) / "LC_MESSAGES" / f"{DOMAIN}.po"


def has_catalog(templates: Path, tag: str) -> bool:
    """Whether messages can be written in ``tag`` (English needs no catalog)."""
    return tag == SOURCE_LANGUAGE or po_file(templates, tag).is_file()


def language_for(templates: Path, locale: str, default: str) -> str:
    """The language a message to a contact of ``locale`` is written in: theirs when a catalog
    exists for it, else the campaign's default, else English."""
    for tag in (locale, default):
        if has_catalog(templates, tag):
            return tag
    return SOURCE_LANGUAGE


def _compiled(templates: Path, tag: str) -> Path:
    po = po_file(templates, tag)
    mo = po.with_suffix(".mo")
    if not mo.is_file():
        raise CatalogError(
            f"{mo} is missing: compile the catalogs with `make catalogs` "
            f"(pybabel compile -d {catalog_root(templates)})"
        )
    if mo.stat().st_mtime < po.stat().st_mtime:
        raise CatalogError(
            f"{mo} is older than {po.name}: compile the catalogs again with `make catalogs`"
        )
    return mo


def compiled_problem(templates: Path, tag: str) -> str | None:
    """Why a language's compiled catalog cannot be used as it is (missing, stale), or None."""
    if tag == SOURCE_LANGUAGE:
        return None
    try:
        _compiled(templates, tag)
    except CatalogError as error:
        return str(error)
    return None


@cache
def translations(templates: Path, tag: str) -> gettext.NullTranslations:
    """A language's compiled translations (none for English, the templates' own language)."""
    if tag == SOURCE_LANGUAGE:
        return gettext.NullTranslations()
    with _compiled(templates, tag).open("rb") as file:
        return Translations(file, domain=DOMAIN)


def read_catalog(path: Path, tag: str) -> Catalog:
    """A ``.po`` file as Babel reads it."""
    with path.open("rb") as file:
        return read_po(file, locale=catalog_name(tag), domain=DOMAIN)


@dataclass(frozen=True, order=True)
class TranslationProblem:
    """A message a catalog does not translate usably."""

    catalog: str
    locale: str
    msgid: str
    reason: str

    def __str__(self) -> str:
        return f"{self.catalog}: locale {self.locale}: msgid {self.msgid!r}: {self.reason}"


def _marks(text: str) -> tuple[list[str], list[str]]:
    return sorted(_PLACEHOLDER.findall(text)), sorted(_TAG.findall(text))


def _forms(value: object) -> tuple[str, ...]:
    """A message's id or string as a tuple of forms (one, or one per plural form)."""
    if isinstance(value, (tuple, list)):
        return tuple(str(form or "") for form in value)
    return (str(value or ""),)


def judge(message: Message | None) -> str | None:
    """Why a catalog entry cannot be used, or None when it can."""
    if message is None:
        return "missing: the catalog has no translation for it (run `make i18n-update`)"
    forms = _forms(message.string)
    if not all(form.strip() for form in forms):
        return "empty translation"
    if message.fuzzy:
        return "fuzzy: marked for review, so it is not compiled"
    sources = _forms(message.id)
    placeholders = sorted({p for source in sources for p in _PLACEHOLDER.findall(source)})
    tags = _marks(sources[0])[1]
    for form in forms:
        found, found_tags = _marks(form)
        if sorted(set(found)) != placeholders:
            return (
                f"placeholders differ: the source has {_listed(placeholders)}, "
                f"the translation {_listed(sorted(set(found)))}"
            )
        if found_tags != tags:
            return (
                f"HTML tags differ: the source has {_listed(tags)}, "
                f"the translation {_listed(found_tags)}"
            )
    return None


def _listed(items: list[str]) -> str:
    return ", ".join(f"%({item})s" if item and item[0] != "<" else item for item in items) or "none"


class CheckedTranslations(gettext.NullTranslations):
    """A language's translations for the check, read from its ``.po`` file: every message
    looked up is judged, and each one that cannot be used is recorded."""

    def __init__(self, templates: Path, tag: str) -> None:
        super().__init__()
        self.tag = tag
        self.po = po_file(templates, tag)
        self.catalog = read_catalog(self.po, tag)
        # Compiled here from the .po as `pybabel compile` would (fuzzy entries left out), so
        # that what the check renders is what the catalog says now.
        compiled = io.BytesIO()
        write_mo(compiled, self.catalog)
        compiled.seek(0)
        self.compiled = Translations(compiled, domain=DOMAIN)
        self.problems: set[TranslationProblem] = set()
        self._judged: set[tuple[str, str | None]] = set()

    def _judge(self, msgid: str, context: str | None = None) -> None:
        if (msgid, context) in self._judged:  # every variant asks again: judge each once
            return
        self._judged.add((msgid, context))
        reason = judge(self.catalog.get(msgid, context=context))
        if reason is not None:
            self.problems.add(TranslationProblem(str(self.po), self.tag, msgid, reason))

    def gettext(self, message: str) -> str:
        self._judge(message)
        return self.compiled.gettext(message)

    def ngettext(self, msgid1: str, msgid2: str, n: int) -> str:
        self._judge(msgid1)
        return self.compiled.ngettext(msgid1, msgid2, n)

    def pgettext(self, context: str, message: str) -> str:
        self._judge(message, context)
        return str(self.compiled.pgettext(context, message))

    def npgettext(self, context: str, msgid1: str, msgid2: str, n: int) -> str:
        self._judge(msgid1, context)
        return str(self.compiled.npgettext(context, msgid1, msgid2, n))
