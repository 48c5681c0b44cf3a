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
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any

from jinja2 import FileSystemLoader, StrictUndefined, Undefined, select_autoescape
from jinja2.sandbox import ImmutableSandboxedEnvironment
from markupsafe import escape

from herald.config import HeraldConfig, MessageKind
from herald.errors import HeraldError

TEMPLATES = Path(__file__).resolve().parents[2] / "templates"

# Per-recipient values; every one is filled for every recipient (``unsubscribe_url`` is empty
# where the message does not honour unsubscribes, and in the leadership report).
RECIPIENT_FIELDS = ("first_name", "name", "email", "account_name", "unsubscribe_url")
_TAG = re.compile(r"-(" + "|".join(RECIPIENT_FIELDS) + r")_(html|text)-")


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
class Rendered:
    """A rendered message: subject, HTML and text, with per-recipient tags still in them."""

    subject: str
    html: str
    text: str

    def personalize(self, recipient: dict[str, str]) -> Rendered:
        """The message one recipient gets (tags filled the way SendGrid fills them)."""
        values = substitutions(recipient)
        return Rendered(
            subject=_fill(self.subject, values),
            html=_fill(self.html, values),
            text=_fill(self.text, values),
        )

    def subject_for(self, values: dict[str, str]) -> str:
        """Only the subject, filled with one recipient's :func:`substitutions` (the bodies
        travel once per batch, as SendGrid sections)."""
        return _fill(self.subject, values)


def _fill(body: str, values: dict[str, str]) -> str:
    return _TAG.sub(lambda match: values[match.group(0)], body)


def substitutions(recipient: dict[str, str]) -> dict[str, str]:
    """The SendGrid substitutions for one recipient: each field escaped for HTML, raw for text."""
    out: dict[str, str] = {}
    for field in RECIPIENT_FIELDS:
        value = recipient.get(field) or ""
        out[f"-{field}_html-"] = str(escape(value))
        out[f"-{field}_text-"] = value
    return out


def recipient_values(
    *, name: str | None, email: str, account_name: str, unsubscribe_url: str = ""
) -> dict[str, str]:
    """The per-recipient values of one contact (a missing name greets them generically)."""
    full = (name or "").strip()
    return {
        "first_name": full.split()[0] if full else "there",
        "name": full,
        "email": email,
        "account_name": account_name,
        "unsubscribe_url": unsubscribe_url,
    }


def _long_date(value: date) -> str:
    if isinstance(value, Undefined):
        value._fail_with_undefined_error()  # name the missing variable, not a format error
    if not isinstance(value, date):
        raise TypeError(f"long_date needs a date, got {type(value).__name__}")
    return f"{value:%B} {value.day}, {value.year}"


@cache
def environment(directory: Path = TEMPLATES) -> ImmutableSandboxedEnvironment:
    """The one template environment: sandboxed, strict, autoescaping HTML."""
    env = ImmutableSandboxedEnvironment(
        loader=FileSystemLoader(directory),
        undefined=StrictUndefined,
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters["long_date"] = _long_date
    return env


def candidates(variant: Variant, filename: str) -> list[str]:
    """Template names for one file of a variant, most specific first."""
    stem, _, ext = filename.rpartition(".")
    phase, segment, role = variant.phase, variant.segment, variant.role
    folders = [f"{phase}/{segment}/{role}", f"{phase}/{role}", f"{phase}/{segment}", phase]
    names: list[str] = []
    for folder in folders:
        names.append(f"{folder}/{stem}.{variant.locale}.{ext}")
        names.append(f"{folder}/{filename}")
    return names


def context(config: HeraldConfig, variant: Variant) -> dict[str, Any]:
    """Everything a template may use: config values and recipient placeholders."""
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
        "segment": segments[variant.segment],
        "deadline": deadline,
        "days_left": variant.days_left,
        "extended_compatibility": deadline > min(campaign.sunset.values()),
        "evidence": config.evidence.figures,
        "evidence_source": config.evidence.source_document,
        "recipient": {field: Placeholder(field) for field in RECIPIENT_FIELDS},
    }


MESSAGE_FILES = ("subject.txt", "body.html", "body.txt")


def render_file(
    config: HeraldConfig, variant: Variant, filename: str, directory: Path = TEMPLATES
) -> str:
    """Render one of a variant's files (``subject.txt``, ``body.html`` or ``body.txt``)."""
    template = environment(directory).select_template(candidates(variant, filename))
    return template.render(context(config, variant))


def render(config: HeraldConfig, variant: Variant, directory: Path = TEMPLATES) -> Rendered:
    """Render the subject, HTML body and text body of one variant."""
    subject, html, text = (render_file(config, variant, f, directory) for f in MESSAGE_FILES)
    # The subject is one line, whatever the template's layout.
    return Rendered(subject=" ".join(subject.split()), html=html, text=text)


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
    """Some templates fail to render: nothing may be sent until they are fixed."""

    def __init__(self, problems: list[TemplateProblem]) -> None:
        self.problems = problems
        lines = "\n".join(f"  {problem}" for problem in problems)
        super().__init__(f"templates do not render ({len(problems)} problem(s)):\n{lines}")


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


def check_templates(config: HeraldConfig, directory: Path = TEMPLATES) -> int:
    """Render every variant; raise TemplateError naming each failing template, else the count."""
    import traceback

    from jinja2 import TemplateSyntaxError

    environment.cache_clear()  # a check reads the files as they are now
    found: dict[tuple[str, int | None, str], list[Variant]] = {}
    variants = all_variants(config)
    for variant, filename in ((v, f) for v in variants for f in MESSAGE_FILES):
        try:
            if not render_file(config, variant, filename, directory).strip():
                raise ValueError(f"{variant.phase}/{filename} renders empty")
        except TemplateSyntaxError as error:
            key: tuple[str, int | None, str] = (
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
    if found:
        raise TemplateError(
            [
                TemplateProblem(template, line, reason, len(hits), hits[0])
                for (template, line, reason), hits in found.items()
            ]
        )
    return len(variants)
