"""Customer files: their columns, the check of a header, and the check of each row.

The files are streamed (:mod:`herald.tabular`), never loaded whole: each row is checked on
its own (format, e-mail, role, timezone, encoding) and comes out either as the values to
stage or as the reason it is rejected, with its line. Checks that need the whole file or the
database (duplicates, unknown accounts) are the import's (:mod:`herald.customers.importer`).

Values that may reach a mail header follow :mod:`herald.addresses`: in names (and
attribute values) a line break or tab becomes a space, any other control character or a
bidirectional override rejects the row; identifiers, tier, region and industry take no
control or line-breaking character at all. E-mail addresses are stored in their canonical
ASCII form (an internationalised domain as its A-label); a non-ASCII local part is rejected.
"""

from __future__ import annotations

import csv
import io
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from functools import cache
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from herald.addresses import (
    BadAddress,
    UnsafeText,
    canonical_email,
    clean_text,
    describe,
    unsafe_char,
)
from herald.errors import HeraldError
from herald.models import AccountLifecycle, ContactRole, MigrationState
from herald.tabular import (
    ByteCounter,
    CsvReader,
    CsvRecord,
    header_names,
    open_text,
    undecodable,
    utf16_or_binary,
)

ATTRIBUTE_PREFIX = "attr."
ACCOUNT_REQUIRED = ("external_id", "name", "tier", "region")
ACCOUNT_OPTIONAL = ("industry", "lifecycle", "migration_state", "migrated_on")
CONTACT_REQUIRED = ("account_external_id", "email")
CONTACT_OPTIONAL = ("name", "role", "timezone", "locale")

_ATTRIBUTE_KEY = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,63}$")
_INTEGER = re.compile(r"^[+-]?\d{1,15}$")
_DECIMAL = re.compile(r"^[+-]?(\d+\.\d*|\.\d+|\d+)([eE][+-]?\d+)?$")
_LOCALE = re.compile(r"^([a-zA-Z]{2,3})(?:[-_]([a-zA-Z]{2}|\d{3}))?$")


class ImportError_(HeraldError):
    """The import cannot start (a file is missing, or its header is wrong); nothing changed."""

    outcome = "Nothing was imported."


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Header:
    """A checked header: the column names, and which columns are attributes."""

    columns: list[str]
    attributes: dict[int, str]  # column index -> attribute key


RowCheck = Callable[[int, list[str], Header], dict[str, Any]]


@dataclass(frozen=True)
class CustomerFile:
    """One kind of customer file: its columns and the check of one of its rows."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    attributes_allowed: bool
    check: RowCheck


@dataclass(frozen=True)
class CheckedRow:
    """A data row of a customer file: the values to stage, or why it is rejected."""

    line: int
    raw: str  # the row as CSV text for the rejects file
    values: dict[str, Any] | None  # None when rejected
    reason: str = ""


def read_header(path: Path, kind: CustomerFile) -> Header:
    """Check the file's header (ImportError_ saying what is wrong with it)."""
    if not path.is_file():
        raise ImportError_(f"{path}: file not found")
    if utf16_or_binary(path):
        raise ImportError_(
            f"{path}:1: the file is UTF-16 or binary, not text in UTF-8: save it as CSV UTF-8"
        )
    # The names are checked as a lenient reading gives them, so a message shows what the
    # file says; a header only a strict reading refuses is unreadable (checked last).
    header = _first_record(path, strict=False)
    if header is None:
        raise ImportError_(f"{path}: the file is empty (expected a header line)")
    required, optional = kind.required, kind.optional
    columns = header_names(header)
    problems: list[str] = []
    attributes: dict[int, str] = {}
    seen: set[str] = set()
    for index, name in enumerate(columns):
        if undecodable(name):
            problems.append(f"column {index + 1} is not valid UTF-8")
            continue
        if name in seen:
            problems.append(f"column {name!r} appears twice")
        seen.add(name)
        if kind.attributes_allowed and name.startswith(ATTRIBUTE_PREFIX):
            key = header[index].strip()[len(ATTRIBUTE_PREFIX) :]
            if not _ATTRIBUTE_KEY.match(key):
                problems.append(f"attribute column {name!r}: name must be letters, digits and '_'")
            attributes[index] = key
        elif name not in required and name not in optional:
            hint = (
                f" or '{ATTRIBUTE_PREFIX}NAME' for an attribute" if kind.attributes_allowed else ""
            )
            known = ", ".join((*required, *optional))
            problems.append(f"unknown column {name!r} (expected {known}{hint})")
    missing = [name for name in required if name not in columns]
    if missing:
        problems.append(f"missing required column(s): {', '.join(missing)}")
    if problems:
        raise ImportError_(f"{path}:1: bad header: " + "; ".join(problems))
    _first_record(path, strict=True)
    return Header(columns=columns, attributes=attributes)


def _first_record(path: Path, *, strict: bool) -> list[str] | None:
    with open_text(path) as handle:
        try:
            return CsvReader(handle, strict=strict).header()
        except csv.Error as error:
            raise ImportError_(f"{path}:1: unreadable header: {error}") from None


def checked_rows(
    path: Path, header: Header, kind: CustomerFile, *, on_bytes: ByteCounter | None = None
) -> Iterator[CheckedRow]:
    """Every non-blank data row of the file, checked, in file order; line is 1-based.

    A record that fails and spans several lines (a quote opened and never closed where it
    should be) is reported on its first line, and the lines after it are read again.
    """
    with open_text(path, on_bytes=on_bytes) as handle:
        reader = CsvReader(handle, reread_failed=True)
        reader.header()  # checked already
        for record in reader.records(len(header.columns)):
            yield _checked(record, header, kind.check)


def _checked(record: CsvRecord, header: Header, check: RowCheck) -> CheckedRow:
    raw = _raw(record.fields)
    if record.failed or record.fields is None:
        if record.malformed is not None:
            reason = f"malformed CSV: {record.malformed}"
        else:
            reason = record.wrong_width or ""
        if record.reread:
            reason += f" (a quote opened on line {record.line} is not closed on it)"
        return CheckedRow(record.line, raw, None, reason)
    if any(undecodable(value) for value in record.fields):
        reason = "not valid UTF-8 (the file must be UTF-8, with or without BOM)"
        return CheckedRow(record.line, raw, None, reason)
    try:
        values = check(record.line, record.fields, header)
    except _RowError as problem:
        return CheckedRow(record.line, raw, None, str(problem))
    values["raw"] = raw
    return CheckedRow(record.line, raw, values)


_RAW_ESCAPES = {
    code: f"\\x{code:02x}" if code < 0x100 else f"\\u{code:04x}"
    for code in [*range(0x20), 0x7F, *range(0x80, 0xA0), 0x2028, 0x2029]
    if chr(code) not in "\t\n\r"
}


def _raw(fields: list[str] | None) -> str:
    """The row as CSV text for the rejects file: undecodable bytes and control characters
    written as escapes (a NUL cannot be stored in Postgres text, nor read in a report)."""
    if fields is None:
        return ""
    buffer = io.StringIO()
    csv.writer(buffer).writerow(fields)
    text = buffer.getvalue().rstrip("\r\n").encode("utf-8", "backslashreplace").decode("utf-8")
    return text.translate(_RAW_ESCAPES)


# --------------------------------------------------------------------------- row checks


class _RowError(ValueError):
    pass


def _text(
    value: str, column: str, *, limit: int, required: bool, display: bool = False
) -> str | None:
    """A text field, trimmed. ``display`` (names): line breaks become spaces and other
    controls reject the row; otherwise any control or line-breaking character rejects it."""
    if display:
        try:
            value = clean_text(value, column)
        except UnsafeText as error:
            raise _RowError(str(error)) from None
    else:
        value = value.strip()
        if (char := unsafe_char(value)) is not None:
            raise _RowError(f"{column} contains {describe(char)}")
    if not value:
        if required:
            raise _RowError(f"{column} is empty")
        return None
    if len(value) > limit:
        raise _RowError(f"{column} is longer than {limit} characters")
    return value


def _choice(value: str, column: str, allowed: type[Any], default: Any) -> str:
    value = value.strip().lower()
    if not value:
        return str(default.value)
    names = [member.value for member in allowed]
    if value not in names:
        raise _RowError(f"unknown {column} {value!r} (expected one of {', '.join(names)})")
    return value


def _attribute(value: str, column: str) -> bool | int | float | str | None:
    try:
        value = clean_text(value, column)
    except UnsafeText as error:
        raise _RowError(str(error)) from None
    if not value:
        return None
    lowered = value.lower()
    if lowered in {"true", "yes"}:
        return True
    if lowered in {"false", "no"}:
        return False
    if _INTEGER.match(value):
        return int(value)
    if _DECIMAL.match(value):
        return float(value)
    return value


@cache
def _timezones() -> frozenset[str]:
    return frozenset(available_timezones())


def _account_row(line: int, fields: list[str], header: Header) -> dict[str, Any]:
    values = dict(zip(header.columns, fields, strict=True))
    state = _choice(
        values.get("migration_state", ""),
        "migration_state",
        MigrationState,
        MigrationState.NOT_STARTED,
    )
    migrated_on: date | None = None
    if raw_date := values.get("migrated_on", "").strip():
        try:
            migrated_on = date.fromisoformat(raw_date)
        except ValueError:
            raise _RowError(f"migrated_on {raw_date!r} is not a date (YYYY-MM-DD)") from None
    if state == MigrationState.MIGRATED and migrated_on is None:
        raise _RowError("migration_state is migrated but migrated_on is empty")
    if state != MigrationState.MIGRATED and migrated_on is not None:
        raise _RowError(f"migrated_on is set but migration_state is {state}")
    attributes = {
        key: parsed
        for index, key in sorted(header.attributes.items(), key=lambda item: item[1])
        if (parsed := _attribute(fields[index], f"{ATTRIBUTE_PREFIX}{key}")) is not None
    }
    return {
        "line": line,
        "external_id": _text(values["external_id"], "external_id", limit=100, required=True),
        "name": _text(values["name"], "name", limit=300, required=True, display=True),
        "tier": (_text(values["tier"], "tier", limit=50, required=True) or "").lower(),
        "region": (_text(values["region"], "region", limit=50, required=True) or "").lower(),
        "industry": (
            _text(values.get("industry", ""), "industry", limit=100, required=False) or ""
        ).lower()
        or None,
        "lifecycle": _choice(
            values.get("lifecycle", ""), "lifecycle", AccountLifecycle, AccountLifecycle.ACTIVE
        ),
        "crm_migration_state": state,
        "crm_migrated_on": migrated_on,
        "attributes": attributes,
    }


def normalize_email(value: str) -> str:
    """The canonical form of an e-mail address (see :func:`herald.addresses.canonical_email`),
    or ValueError (BadAddress) saying why there is none."""
    return canonical_email(value)


def _contact_row(line: int, fields: list[str], header: Header) -> dict[str, Any]:
    values = dict(zip(header.columns, fields, strict=True))
    raw_email = values["email"].strip()
    if not raw_email:
        raise _RowError("email is empty")
    try:
        email = canonical_email(raw_email)
    except BadAddress as error:
        shown = (
            raw_email.encode("unicode_escape").decode("ascii")
            if unsafe_char(raw_email)
            else raw_email
        )
        raise _RowError(f"invalid e-mail {shown!r}: {error}") from None
    timezone = values.get("timezone", "").strip() or None
    if timezone is not None and timezone not in _timezones():
        raise _RowError(f"unknown timezone {timezone!r} (expected an IANA name like Europe/Paris)")
    locale = "en"
    if raw_locale := values.get("locale", "").strip():
        match = _LOCALE.match(raw_locale)
        if not match:
            raise _RowError(f"locale {raw_locale!r} is not a language tag like en or pt-BR")
        language, region = match.groups()
        locale = language.lower() + (f"-{region.upper()}" if region else "")
    return {
        "line": line,
        "account_external_id": _text(
            values["account_external_id"], "account_external_id", limit=100, required=True
        ),
        "email": email,
        "name": _text(values.get("name", ""), "name", limit=300, required=False, display=True),
        "role": _choice(values.get("role", ""), "role", ContactRole, ContactRole.OTHER),
        "timezone": timezone,
        "locale": locale,
    }


ACCOUNT_FILE = CustomerFile(
    name="accounts",
    required=ACCOUNT_REQUIRED,
    optional=ACCOUNT_OPTIONAL,
    attributes_allowed=True,
    check=_account_row,
)
CONTACT_FILE = CustomerFile(
    name="contacts",
    required=CONTACT_REQUIRED,
    optional=CONTACT_OPTIONAL,
    attributes_allowed=False,
    check=_contact_row,
)
