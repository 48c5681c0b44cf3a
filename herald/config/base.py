"""What every config model shares: strict parsing and the checked kinds of value.

A typo must not be silently ignored, so every model forbids unknown keys; a config is read
once and shared by every task, so every model is frozen.
"""

from __future__ import annotations

import re
from typing import Annotated
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import AfterValidator, BaseModel, ConfigDict


class StrictModel(BaseModel):
    """A config section: unknown keys are errors, values never change once loaded."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


_SLUG = re.compile(r"^[a-z][a-z0-9_-]{0,49}$")
_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")


def _slug(value: str) -> str:
    if not _SLUG.match(value):
        raise ValueError("must be lower-case letters, digits, '-' or '_', starting with a letter")
    return value


def _timezone(value: str) -> str:
    try:
        ZoneInfo(value)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(f"unknown IANA timezone {value!r}") from None
    return value


def _attribute_key(value: str) -> str:
    if not _ATTRIBUTE_KEY.match(value):
        raise ValueError("attribute names are letters, digits and '_', starting with a letter")
    return value


def _address(value: str) -> str:
    from herald.addresses import BadAddress, canonical_email

    try:
        return canonical_email(value)
    except BadAddress as error:
        raise ValueError(f"not an address Herald can send to: {error}") from None


def _header_text(value: str) -> str:
    from herald.addresses import check_header_text

    return check_header_text(value, "the text")


Slug = Annotated[str, AfterValidator(_slug)]
# An e-mail address in its canonical form (lower-case ASCII, A-label domain).
Address = Annotated[str, AfterValidator(_address)]
# Text that goes into a mail header: no line break, control or bidi override.
HeaderText = Annotated[str, AfterValidator(_header_text)]
TimezoneName = Annotated[str, AfterValidator(_timezone)]
AttributeKey = Annotated[str, AfterValidator(_attribute_key)]
Scalar = bool | int | float | str
