"""Validating a Mail Send body as SendGrid does: the request-body schema of the official
OpenAPI document (vendored next to this module), then the rules the schema cannot express,
each refused with SendGrid's own words."""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any, Final

from jsonschema import Draft202012Validator  # type: ignore[import-untyped]
from referencing import Registry
from referencing.jsonschema import DRAFT202012

SCHEMA_FILE: Final = Path(__file__).with_name("sendgrid-mail-v3.openapi.json")
"""The vendored copy of SendGrid's Mail Send OpenAPI document."""

MAX_RECIPIENTS: Final = 1000
MAX_PERSONALIZATION_BYTES: Final = 10_000
_SPEC_URI: Final = "urn:sendgrid:mail-v3.openapi.json"
_BODY_POINTER: Final = "#/components/requestBodies/PostMailSend/content/application~1json/schema"

# SendGrid's own words for the rules the schema does not express.
INVALID_KEY: Final = "The provided authorization grant is invalid, expired, or revoked"
NO_PERSONALIZATIONS: Final = (
    "The personalizations field is required and must have at least one personalization."
)
NO_TO: Final = (
    "The to array is required for all personalization objects, and must have at least one "
    "email object with a valid email address."
)
DUPLICATE_RECIPIENT: Final = (
    "Each email address in the personalization block should be unique between to, cc, and bcc. "
    "We found the first duplicate instance of [{email}] in the personalizations.{index}.{kind} "
    "field."
)
SUBJECT_REQUIRED: Final = (
    "The subject is required. You can get around this requirement if you use a template with "
    "a subject defined or if every personalization has a subject defined."
)
CONTENT_REQUIRED: Final = (
    "Unless a valid template_id is provided, the content parameter is required. There must be "
    "at least one defined content block. We typically suggest both text/plain and text/html "
    "blocks are included, but only one block is required."
)
CONTENT_ORDER: Final = (
    "If present, text/plain content must be first, followed by text/html, followed by any "
    "other content."
)
TOO_MANY_RECIPIENTS: Final = (
    "The total number of recipients must be no more than 1000. This includes all recipients "
    "defined within the to, cc, and bcc parameters, across each object that you include in "
    "the personalizations array."
)
SUBSTITUTIONS_TOO_BIG: Final = (
    "Substitutions may not exceed 10000 bytes per personalization object."
)
CUSTOM_ARGS_TOO_BIG: Final = (
    "The custom arguments may not exceed 10000 bytes per personalization object."
)
SECTIONS_INVALID: Final = "The sections parameter must be an object of strings."


@dataclass(frozen=True)
class Violation:
    """One reason a Mail Send body is refused: an ``errors`` item of SendGrid's 400."""

    message: str
    field: str | None = None

    def __str__(self) -> str:
        return f"{self.field}: {self.message}" if self.field else self.message

    def as_error(self) -> dict[str, Any]:
        """The item of SendGrid's ``errors`` array."""
        return {"message": self.message, "field": self.field, "help": None}


@cache
def _validator() -> Any:
    """A validator for the Mail Send request body, its ``$ref``s resolved in the document."""
    spec = json.loads(SCHEMA_FILE.read_text(encoding="utf-8"))
    # Fail here, clearly, if the document lacks the schema (rather than on the first request).
    _ = spec["components"]["requestBodies"]["PostMailSend"]["content"]["application/json"]
    registry: Registry[Any] = Registry().with_resource(_SPEC_URI, DRAFT202012.create_resource(spec))
    return Draft202012Validator(
        {"$ref": _SPEC_URI + _BODY_POINTER},
        registry=registry,
        format_checker=Draft202012Validator.FORMAT_CHECKER,
    )


def _dotted(path: Iterable[Any]) -> str | None:
    return ".".join(str(part) for part in path) or None


def _summary(value: Any) -> str:
    if isinstance(value, list):
        return f"[array of {len(value)} items]"
    if isinstance(value, dict):
        return f"{{object with {len(value)} properties}}"
    if isinstance(value, str):
        return repr(value[:60] + "...")
    return repr(value)[:60] + "..."


def _schema_violation(error: Any) -> Violation:
    """A jsonschema error as SendGrid reports one: short message, dotted field path."""
    message: str = error.message
    shown = repr(error.instance)
    if len(shown) > 80 and message.startswith(shown):
        message = _summary(error.instance) + message[len(shown) :]
    path = list(error.absolute_path)
    if error.validator == "required":  # name the missing property, as SendGrid does
        for name in error.validator_value:
            if message.startswith(repr(name)):
                path.append(name)
                break
    return Violation(message[:500], _dotted(path))


def _json_size(value: Any) -> int:
    return len(json.dumps(value, ensure_ascii=False, separators=(",", ":")).encode("utf-8"))


def _nonempty(value: Any) -> bool:
    return isinstance(value, str) and value != ""


def _rule_violations(body: Any) -> list[Violation]:
    """SendGrid's rules beyond the schema (each check skips what the schema already refused)."""
    if not isinstance(body, dict):
        return []
    found: list[Violation] = []
    has_template = _nonempty(body.get("template_id"))
    personalizations = body.get("personalizations")
    if isinstance(personalizations, list):
        if not personalizations:
            found.append(Violation(NO_PERSONALIZATIONS, "personalizations"))
        recipients = 0
        for index, personalization in enumerate(personalizations):
            if not isinstance(personalization, dict):
                continue
            where = f"personalizations.{index}"
            to = personalization.get("to")
            if isinstance(to, list) and not to:
                found.append(Violation(NO_TO, f"{where}.to"))
            seen: set[str] = set()
            for kind in ("to", "cc", "bcc"):
                entries = personalization.get(kind)
                if not isinstance(entries, list):
                    continue
                recipients += len(entries)
                for number, entry in enumerate(entries):
                    email = entry.get("email") if isinstance(entry, dict) else None
                    if not isinstance(email, str):
                        continue
                    if email.lower() in seen:
                        message = DUPLICATE_RECIPIENT.format(email=email, index=index, kind=kind)
                        found.append(Violation(message, f"{where}.{kind}.{number}.email"))
                    seen.add(email.lower())
            for key, message in (
                ("substitutions", SUBSTITUTIONS_TOO_BIG),
                ("custom_args", CUSTOM_ARGS_TOO_BIG),
            ):
                value = personalization.get(key)
                if value is not None and _json_size(value) >= MAX_PERSONALIZATION_BYTES:
                    found.append(Violation(message, f"{where}.{key}"))
        if recipients > MAX_RECIPIENTS:
            found.append(Violation(TOO_MANY_RECIPIENTS, "personalizations"))
        every_subject = all(
            isinstance(p, dict) and _nonempty(p.get("subject")) for p in personalizations
        )
        subject = _nonempty(body.get("subject"))
        if personalizations and not has_template and not subject and not every_subject:
            found.append(Violation(SUBJECT_REQUIRED, "subject"))
    content = body.get("content")
    if not has_template and not (isinstance(content, list) and content):
        found.append(Violation(CONTENT_REQUIRED, "content"))
    if isinstance(content, list):
        types = [block.get("type") if isinstance(block, dict) else None for block in content]
        both = "text/plain" in types and "text/html" in types
        if both and types.index("text/plain") > types.index("text/html"):
            found.append(Violation(CONTENT_ORDER, "content"))
    sections = body.get("sections")
    if sections is not None and not (
        isinstance(sections, dict) and all(isinstance(v, str) for v in sections.values())
    ):
        found.append(Violation(SECTIONS_INVALID, "sections"))
    return found


def mail_send_violations(body: Any) -> list[Violation]:
    """Every reason SendGrid would refuse this Mail Send body with a 400 (none: it is valid).

    The schema's violations come first (message from jsonschema, ``field`` the dotted path
    such as ``personalizations.0.to.0.email``), then SendGrid's other rules: at least one
    personalization, each with a ``to``, no address twice in one personalization, a subject
    (top level, or in every personalization, unless a template is used), content or a
    template (text/plain before text/html), at most 1,000 recipients, substitutions and
    custom_args under 10,000 bytes per personalization, and ``sections`` mapping to strings.
    """
    found = [_schema_violation(error) for error in _validator().iter_errors(body)]
    return found + _rule_violations(body)
