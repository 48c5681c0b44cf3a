"""Messages: render a phase's templates for one variant (segment x role x locale).

A message is rendered once per *variant*, never once per recipient: what differs between
recipients (their name, their account) is left in the output as substitution tags, which
SendGrid fills per personalization and the outbox fills locally, so both send exactly the
same thing. Each per-recipient value has an HTML tag and a text tag: the HTML value is
escaped (a contact named ``<script>`` shows as text), the text value is left as it is.

Templates are edited by non-engineers: they run in Jinja's immutable sandbox, with
``StrictUndefined`` (a misspelt variable is an error, not a blank) and HTML autoescape.
File lookup, most specific first, lets anyone add a variant without touching code:
``<phase>/<segment>/<role>/<file>``, ``<phase>/<role>/<file>``, ``<phase>/<segment>/<file>``,
``<phase>/<file>``, each tried first as ``<name>.<locale>.<ext>`` and then ``<name>.<ext>``.

Each variant is written in one language (:mod:`herald.i18n`): the templates mark their
sentences for translation (Jinja's i18n extension), and the environment of that language
fills them from its gettext catalog and formats dates and figures its way. The greeting
depends on whether the contact has a name, so it is a per-recipient value too, written in
the variant's language.
"""

from __future__ import annotations

import gettext
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from markupsafe import escape

from herald.config import HeraldConfig, MessageKind
from herald.errors import HeraldError
from herald.i18n import SOURCE_LANGUAGE
from herald.i18n.catalogs import (
    CheckedTranslations,
    TranslationProblem,
    compiled_problem,
    language_for,
    translations,
)
from herald.i18n.environment import (
    SOURCE_WORDS,
    TEMPLATES,
    clear_caches,
    environment,
    in_language,
)

# Per-recipient values; every one is filled for every recipient (``unsubscribe_url`` is empty
# where the message does not honour unsubscribes, and in the leadership report).
RECIPIENT_FIELDS = ("greeting", "name", "email", "account_name", "unsubscribe_url")
_TAG = re.compile(r"-(" + "|".join(RECIPIENT_FIELDS) + r")_(html|text)-")
# Each field's two substitution keys, in the order a personalization carries them.
_KEYS = tuple((field, f"-{field}_html-", f"-{field}_text-") for field in RECIPIENT_FIELDS)
# The characters markupsafe's escape() changes: a value without them is its own escape.
_HTML_SPECIAL = re.compile("[&<>'\"]")


@dataclass(frozen=True)
class Placeholder:
    """A per-recipient value inside a rendered variant: a tag, filled at send time."""

    field: str

    def __html__(self) -> str:
        return f"-{self.field}_html-"

    def __str__(self) -> str:
        return f"-{self.field}_text-"


@dataclass(frozen=True)
class Variant:
    """What a rendering depends on besides the recipient."""

    phase: MessageKind
    segment: str
    role: str
    locale: str
    # A sunset notice's days left until the deadline, counted from the recipient's own date
    # on the day it goes (a notice that goes early says so: 9 days, not 7).
    days_left: int | None = None


@dataclass(frozen=True)
class Greetings:
    """How a message in one language greets a contact: by name, or without one."""

    named: str  # with %(name)s
    anonymous: str

    @classmethod
    def of(cls, language: gettext.NullTranslations) -> Greetings:
        """The greetings of a language (from its catalog)."""
        return cls(language.gettext("Hello %(name)s,"), language.gettext("Hello,"))

    def greet(self, name: str | None) -> str:
        """The greeting line for a contact of this name (or of none)."""
        full = " ".join((name or "").split())
        return self.named % {"name": full} if full else self.anonymous


ENGLISH = Greetings.of(SOURCE_WORDS)


@dataclass(frozen=True)
class Rendered:
    """A rendered message: subject, HTML and text, with per-recipient tags still in them,
    written in ``language`` (what its ``lang`` and ``Content-Language`` declare)."""

    subject: str
    html: str
    text: str
    language: str = SOURCE_LANGUAGE
    greetings: Greetings = ENGLISH

    def personalize(self, recipient: dict[str, str]) -> Rendered:
        """The message one recipient gets (tags filled the way SendGrid fills them)."""
        values = substitutions(recipient)
        return Rendered(
            subject=_fill(self.subject, values),
            html=_fill(self.html, values),
            text=_fill(self.text, values),
            language=self.language,
            greetings=self.greetings,
        )

    def to(
        self, *, name: str | None, email: str, account_name: str, unsubscribe_url: str = ""
    ) -> Rendered:
        """The message one contact gets, greeted in the message's language."""
        values = recipient_values(
            name=name,
            email=email,
            account_name=account_name,
            unsubscribe_url=unsubscribe_url,
            greetings=self.greetings,
        )
        return self.personalize(values)

    def subject_for(self, values: dict[str, str]) -> str:
        """Only the subject, filled with one recipient's :func:`substitutions` (the bodies
        travel once per batch, as SendGrid sections)."""
        return _fill(self.subject, values) if "-" in self.subject else self.subject


def _fill(body: str, values: dict[str, str]) -> str:
    return _TAG.sub(lambda match: values[match.group(0)], body)


def substitutions(recipient: dict[str, str]) -> dict[str, str]:
    """The SendGrid substitutions for one recipient: each field escaped for HTML, raw for text."""
    out: dict[str, str] = {}
    search = _HTML_SPECIAL.search
    for field, html_key, text_key in _KEYS:
        value = recipient.get(field) or ""
        out[html_key] = str(escape(value)) if search(value) else value
        out[text_key] = value
    return out


def recipient_values(
    *,
    name: str | None,
    email: str,
    account_name: str,
    unsubscribe_url: str = "",
    greetings: Greetings = ENGLISH,
) -> dict[str, str]:
    """The per-recipient values of one contact, greeted in the message's language (by name,
    or generically when the name is missing)."""
    full = (name or "").strip()
    return {
        "greeting": greetings.greet(full),
        "name": full,
        "email": email,
        "account_name": account_name,
        "unsubscribe_url": unsubscribe_url,
    }


def candidates(variant: Variant, filename: str, language: str | None = None) -> list[str]:
    """Template names for one file of a variant, most specific first (``<name>.<language>``
    before ``<name>``: a file written for one language)."""
    language = language or variant.locale
    stem, _, ext = filename.rpartition(".")
    phase, segment, role = variant.phase, variant.segment, variant.role
    folders = [f"{phase}/{segment}/{role}", f"{phase}/{role}", f"{phase}/{segment}", phase]
    names: list[str] = []
    for folder in folders:
        names.append(f"{folder}/{stem}.{language}.{ext}")
        names.append(f"{folder}/{filename}")
    return names


def language_of(config: HeraldConfig, variant: Variant, directory: Path = TEMPLATES) -> str:
    """The language a variant is written in: its locale's, or the campaign default's."""
    return language_for(directory, variant.locale, config.campaign.locales[0])


def context(
    config: HeraldConfig, variant: Variant, language: str = SOURCE_LANGUAGE
) -> dict[str, Any]:
    """Everything a template may use: config values and recipient placeholders, and short
    names for what most sentences mention (``new``, ``legacy``, ``account``)."""
    campaign = config.campaign
    segments = {s.name: s for s in config.segments.segments}
    deadline = campaign.sunset[variant.segment]
    return {
        "campaign": campaign,
        "products": campaign.products,
        "links": campaign.links,
        "sender": campaign.sender,
        # Whether this message offers (and honours) an unsubscribe: its footer shows the link.
        "unsubscribe": campaign.unsubscribe.honours(variant.phase),
        "dates": campaign.phases,
        "phase": variant.phase,
        "role": variant.role,
        "locale": variant.locale,
        "language": language,
        "segment": segments[variant.segment],
        "deadline": deadline,
        "days_left": variant.days_left,
        "extended_compatibility": deadline > min(campaign.sunset.values()),
        "evidence": config.evidence.figures,
        "evidence_source": config.evidence.source_document,
        "recipient": {field: Placeholder(field) for field in RECIPIENT_FIELDS},
        "new": campaign.products.new,
        "legacy": campaign.products.legacy,
        "account": Placeholder("account_name"),
    }


MESSAGE_FILES = ("subject.txt", "body.html", "body.txt")


def render_file(
    config: HeraldConfig,
    variant: Variant,
    filename: str,
    directory: Path = TEMPLATES,
    *,
    language: str | None = None,
    words: gettext.NullTranslations | None = None,
) -> str:
    """Render one of a variant's files (``subject.txt``, ``body.html`` or ``body.txt``) in its
    language (:func:`language_of`, unless the caller already knows it), translated by
    ``words`` (default: the language's compiled catalog)."""
    language = language or language_of(config, variant, directory)
    template = environment(directory).select_template(candidates(variant, filename, language))
    return template.render(
        {**context(config, variant, language), **in_language(directory, language, words)}
    )


def render(config: HeraldConfig, variant: Variant, directory: Path = TEMPLATES) -> Rendered:
    """Render the subject, HTML body and text body of one variant, in its language."""
    language = language_of(config, variant, directory)
    subject, html, text = (
        render_file(config, variant, f, directory, language=language) for f in MESSAGE_FILES
    )
    # The subject is one line, whatever the template's layout.
    return Rendered(
        subject=" ".join(subject.split()),
        html=html,
        text=text,
        language=language,
        greetings=Greetings.of(translations(directory, language)),
    )


@dataclass(frozen=True)
class TemplateProblem:
    """A template that fails to render, with where and for which variants."""

    template: str
    line: int | None
    reason: str
    variants: int
    example: Variant

    def __str__(self) -> str:
        where = f"templates/{self.template}" + (f":{self.line}" if self.line else "")
        ex = self.example
        return (
            f"{where}: {self.reason} (in {self.variants} variant(s), e.g. phase {ex.phase}, "
            f"segment {ex.segment}, role {ex.role}, locale {ex.locale})"
        )


class TemplateError(HeraldError):
    """Some templates fail to render, or a catalog does not translate what they say: nothing
    may be sent until they are fixed."""

    outcome = "Nothing was sent."

    def __init__(
        self,
        problems: list[TemplateProblem],
        translations: list[TranslationProblem] | None = None,
        catalogs: list[str] | None = None,
    ) -> None:
        self.problems = problems
        self.translations = translations or []
        self.catalogs = catalogs or []
        parts = []
        if problems:
            lines = "\n".join(f"  {problem}" for problem in problems)
            parts.append(f"templates do not render ({len(problems)} problem(s)):\n{lines}")
        if self.translations:
            lines = "\n".join(f"  {problem}" for problem in self.translations)
            parts.append(
                f"catalogs do not translate what the templates say "
                f"({len(self.translations)} problem(s)):\n{lines}"
            )
        parts.extend(self.catalogs)
        super().__init__("\n".join(parts))


def all_variants(config: HeraldConfig) -> list[Variant]:
    """Every phase x segment x role x locale the campaign can send."""
    from herald.config import PHASES
    from herald.models import ContactRole

    # The counts a notice carries: its offset, or more when it goes early (one more stands
    # for them all: the texts differ by 0, 1, "days" and whether more than a week is left).
    offsets = config.campaign.notices.offsets_days
    notices: list[int | None] = [None, *sorted({d + k for d in offsets for k in (0, 1)})]
    kinds: list[MessageKind] = [*PHASES]
    if config.campaign.notices.thank_you:
        kinds.append("thank_you")
    if config.campaign.notices.deadline_extended:
        kinds.append("deadline_extended")
    return [
        Variant(phase, segment, role.value, locale, notice)
        for phase in kinds
        for notice in (notices if phase == "sunset" else [None])
        for segment in config.segments.names
        for role in ContactRole
        for locale in config.campaign.locales
    ]


def templates_fingerprint(config: HeraldConfig, directory: Path = TEMPLATES) -> str:
    """A digest of everything :func:`check_templates` reads: every file under the templates
    folder (catalogs included), the config files, and the code that renders. Equal
    digests give the same verdict, so a run may reuse an earlier run's passed check."""
    import hashlib

    import herald

    digest = hashlib.sha256()
    digest.update(herald.__version__.encode())
    code = Path(__file__).resolve().parents[1]
    sources = [Path(__file__).resolve(), *sorted((code / "i18n").glob("*.py"))]
    sources += sorted((code / "unsubscribe").glob("page.py"))
    sources += sorted(p for p in config.directory.glob("*.yaml"))
    for path in sources + sorted(p for p in directory.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(path.anchor)).encode())
        digest.update(hashlib.sha256(path.read_bytes()).digest())
    return digest.hexdigest()


def check_templates(config: HeraldConfig, directory: Path = TEMPLATES) -> int:
    """Render every variant in its language, with every sentence looked up in that language's
    catalog; raise TemplateError naming each failing template and each message a catalog
    lacks or cannot use (CatalogError for a catalog not compiled), else the count."""
    import traceback

    from jinja2 import TemplateSyntaxError

    from herald.unsubscribe.page import PAGE, STATES, render_page

    clear_caches()  # a check reads the files as they are now
    found: dict[tuple[str, int | None, str], list[Variant]] = {}
    variants = all_variants(config)
    default = config.campaign.locales[0]
    language_by_locale = {
        locale: language_for(directory, locale, default) for locale in config.campaign.locales
    }
    languages = set(language_by_locale.values())
    checked = {
        language: CheckedTranslations(directory, language)
        for language in sorted(languages - {SOURCE_LANGUAGE})
    }
    words_of: dict[str, gettext.NullTranslations] = {
        language: checked.get(language) or SOURCE_WORDS for language in languages
    }
    for words in checked.values():  # the greeting, written in Herald's code
        Greetings.of(words)
    key: tuple[str, int | None, str]
    for language in sorted(languages):  # the unsubscribe page, in every state
        for state in STATES:
            try:
                render_page(directory, state, config.campaign, language, words_of[language])
            except Exception as error:  # as for a message's template: report, stop none
                key = (PAGE, None, f"{type(error).__name__}: {error}")
                found.setdefault(key, []).append(variants[0])
    for variant, filename in ((v, f) for v in variants for f in MESSAGE_FILES):
        try:
            language = language_by_locale[variant.locale]
            rendered = render_file(
                config, variant, filename, directory, language=language, words=words_of[language]
            )
            if not rendered.strip():
                raise ValueError(f"{variant.phase}/{filename} renders empty")
        except TemplateSyntaxError as error:
            key = (
                error.name or "?",
                error.lineno,
                f"syntax error: {error.message}",
            )
            found.setdefault(key, []).append(variant)
        except Exception as error:  # a template may fail in any way: report each, stop none
            template, line = "?", None
            for frame in traceback.extract_tb(error.__traceback__):
                if frame.filename.startswith(str(directory)):
                    template = str(Path(frame.filename).relative_to(directory))
                    line = frame.lineno
            key = (template, line, f"{type(error).__name__}: {error}")
            found.setdefault(key, []).append(variant)
    untranslated = sorted({p for words in checked.values() for p in words.problems})
    stale = [
        problem
        for language in sorted(checked)
        if (problem := compiled_problem(directory, language)) is not None
    ]
    if found or untranslated or stale:
        raise TemplateError(
            [
                TemplateProblem(template, line, reason, len(hits), hits[0])
                for (template, line, reason), hits in found.items()
            ],
            untranslated,
            stale,
        )
    return len(variants)
