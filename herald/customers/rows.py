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
import json
import re
import unicodedata
from collections.abc import Callable, Generator, Iterable, Iterator
from dataclasses import dataclass, field
from datetime import date
from functools import cache
from operator import itemgetter
from pathlib import Path
from typing import Any
from zoneinfo import available_timezones

from herald.addresses import (
    UNSAFE_PATTERN,
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
_SPACES = re.compile(r" {2,}")  # as herald.addresses.clean_text collapses them


class ImportError_(HeraldError):
    """The import cannot start (a file is missing, or its header is wrong); nothing changed."""

    outcome = "Nothing was imported."


# --------------------------------------------------------------------------- reading


@dataclass(frozen=True)
class Header:
    """A checked header: the column names, and which columns are attributes."""

    columns: list[str]
    attributes: dict[int, str]  # column index -> attribute key
    # Column name -> index, and the attribute columns in key order (for the plain checks).
    positions: dict[str, int] = field(init=False, repr=False, compare=False)
    by_key: list[tuple[int, str]] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "positions", {name: i for i, name in enumerate(self.columns)})
        ordered = sorted(self.attributes.items(), key=lambda item: item[1])
        object.__setattr__(self, "by_key", ordered)


RowCheck = Callable[[int, list[str], Header], dict[str, Any]]
# The bulk checks of a kind of file under a header (see PlainChecks).
PlainCheck = Callable[[Header], "PlainChecks"]


@dataclass(frozen=True)
class CustomerFile:
    """One kind of customer file: its columns and the check of one of its rows."""

    name: str
    required: tuple[str, ...]
    optional: tuple[str, ...]
    attributes_allowed: bool
    check: RowCheck
    plain: PlainCheck | None = None


@dataclass(frozen=True)
class CheckedRow:
    """A data row of a customer file: the values to stage, or why it is rejected."""

    line: int
    raw: str  # the row as CSV text for the rejects file
    values: dict[str, Any] | None  # None when rejected
    reason: str = ""


def plain_fields(text: str) -> bool:
    """Whether fields (joined by commas) need none of the full checks' Unicode work: no
    character any check refuses or normalises (controls, line breaks, bidi controls,
    undecodable bytes), and already in NFC."""
    return _NOT_PLAIN.search(text) is None and (
        text.isascii() or unicodedata.is_normalized("NFC", text)
    )


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
    for record in records(path, header, on_bytes=on_bytes):
        yield check_record(record, header, kind)


def records(
    path: Path, header: Header, *, on_bytes: ByteCounter | None = None
) -> Generator[CsvRecord, None, None]:
    """Every non-blank data record of the file, unchecked, in file order (see checked_rows)."""
    with open_text(path, on_bytes=on_bytes) as handle:
        reader = CsvReader(handle, reread_failed=True)
        reader.header()  # checked already
        yield from reader.records(len(header.columns))


def check_record(record: CsvRecord, header: Header, kind: CustomerFile) -> CheckedRow:
    """One record checked: its values to stage, or why it is rejected (the full check,
    which words every reason; :class:`PlainChecks` is the import's bulk path)."""
    return _checked(record, header, kind.check)


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


def raw_record(record: CsvRecord) -> str:
    """A record's text for the rejects file, as the checks write it (see _raw)."""
    return _raw(record.fields)


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
    return _typed(value)


def _typed(value: str) -> bool | int | float | str:
    """An attribute's value (cleaned, not empty) as its type: boolean, integer, decimal or text."""
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


def _timezone(value: str) -> str | None:
    timezone = value.strip() or None
    if timezone is not None and timezone not in _timezones():
        raise _RowError(f"unknown timezone {timezone!r} (expected an IANA name like Europe/Paris)")
    return timezone


def _locale(value: str) -> str:
    if not (raw_locale := value.strip()):
        return "en"
    match = _LOCALE.match(raw_locale)
    if not match:
        raise _RowError(f"locale {raw_locale!r} is not a language tag like en or pt-BR")
    language, region = match.groups()
    return language.lower() + (f"-{region.upper()}" if region else "")


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
    timezone = _timezone(values.get("timezone", ""))
    locale = _locale(values.get("locale", ""))
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


# --------------------------------------------------------------------------- plain rows
#
# The import checks most rows in bulk (PlainChecks): rows whose fields need none of the
# full checks' Unicode work (plain_fields: no character refused or normalised, already NFC),
# so what is left is trimming, collapsing runs of spaces in names, the limits, the choices
# and the types. The columns whose values repeat (tier, region, industry and lifecycle;
# migration state and date; role, time zone and locale; each attribute cell) are checked by
# the full check's own functions once per distinct combination (a memo); the few that do
# not repeat (identifiers, names, the address) are checked inline as the full check would
# on such text. Whatever the bulk checks cannot pass
# goes to the full check, which words the reason; tests/customers/test_plain_rows.py holds
# the two together.

# What the full checks refuse or normalise, as one character class (the plain test).
_NOT_PLAIN = re.compile(UNSAFE_PATTERN)

StagedRow = tuple[Any, ...]
PlainRow = tuple[int, int, list[str]]  # line, digest, fields


class _Memo(dict[Any, Any]):
    """A verdict computed once per distinct key (the full check's functions); None when
    the full check refuses it. Cleared when it holds ``limit`` keys."""

    def __init__(self, compute: Callable[..., Any], limit: int = 1 << 16) -> None:
        super().__init__()
        self._compute, self._limit = compute, limit

    def __missing__(self, key: Any) -> Any:
        if len(self) >= self._limit:
            self.clear()
        try:
            value = self._compute(*key) if isinstance(key, tuple) else self._compute(key)
        except _RowError:
            value = None
        self[key] = value
        return value


class PlainChecks:
    """The bulk checks of one kind of file under one header.

    Called with rows whose fields are plain (:func:`plain_fields`), it gives the staged rows
    of those it passes (:func:`staged_row` of what the full check gives: every value as the
    staging table takes it) and the rows left to the full check; blank rows (one field,
    white space only) are counted and dropped."""

    def __init__(self, header: Header, optional: tuple[str, ...]) -> None:
        self.width = len(header.columns)
        at = header.positions
        # A missing optional column reads as the empty field appended to each row.
        self.pad = any(name not in at for name in optional)
        self.at = {name: at.get(name, self.width) for name in (*header.columns, *optional)}
        self.blank = 0

    def __call__(self, rows: Iterable[PlainRow]) -> tuple[list[StagedRow], list[PlainRow]]:
        raise NotImplementedError

    def _cells(self, *names: str) -> Callable[[list[str]], tuple[str, ...]]:
        return _getter([self.at[name] for name in names])

    def _odd(self, row: PlainRow, full: list[PlainRow]) -> None:
        """A row of another width: blank (dropped) or for the full check."""
        fields = row[2]
        if len(fields) == 1 and not fields[0].strip():
            self.blank += 1
        else:
            full.append(row)


def _account_choices(
    tier: str, region: str, industry: str, lifecycle: str
) -> tuple[str, str, str | None, str]:
    """What _account_row makes of these cells (_RowError if it refuses one)."""
    return (
        (_text(tier, "tier", limit=50, required=True) or "").lower(),
        (_text(region, "region", limit=50, required=True) or "").lower(),
        (_text(industry, "industry", limit=100, required=False) or "").lower() or None,
        _choice(lifecycle, "lifecycle", AccountLifecycle, AccountLifecycle.ACTIVE),
    )


def _account_migration(state: str, migrated_on: str) -> tuple[str, str | None]:
    """What _account_row makes of these cells, the date as ISO text (_RowError if it refuses
    them)."""
    state = _choice(state, "migration_state", MigrationState, MigrationState.NOT_STARTED)
    on: date | None = None
    if raw := migrated_on.strip():
        try:
            on = date.fromisoformat(raw)
        except ValueError:
            raise _RowError(raw) from None
    if (state == MigrationState.MIGRATED) != (on is not None):
        raise _RowError(state)
    return state, None if on is None else on.isoformat()


def _attribute_json(key: str) -> Callable[[str], str]:
    """``, "key": value`` of an attribute cell as json.dumps writes it in the object ('' when
    the cell is empty), from _attribute."""
    column, name = f"{ATTRIBUTE_PREFIX}{key}", json.dumps(key)

    def fragment(cell: str) -> str:
        value = _attribute(cell, column)
        return "" if value is None else f", {name}: {json.dumps(value)}"

    return fragment


class _AccountPlain(PlainChecks):
    def __init__(self, header: Header) -> None:
        super().__init__(header, ACCOUNT_OPTIONAL)
        self.choices = _Memo(_account_choices)
        self.choice_cells = self._cells("tier", "region", "industry", "lifecycle")
        self.migrations = _Memo(_account_migration)
        self.migration_cells = self._cells("migration_state", "migrated_on")
        self.fragments = [_Memo(_attribute_json(key)) for _, key in header.by_key]
        self.attribute_cells = _getter([index for index, _ in header.by_key])

    def __call__(self, rows: Iterable[PlainRow]) -> tuple[list[StagedRow], list[PlainRow]]:
        staged: list[StagedRow] = []
        full: list[PlainRow] = []
        width, pad = self.width, self.pad
        external_id_at, name_at = self.at["external_id"], self.at["name"]
        choices, choice_cells = self.choices, self.choice_cells
        migrations, migration_cells = self.migrations, self.migration_cells
        fragments, attribute_cells = self.fragments, self.attribute_cells
        for row in rows:
            line, digest, fields = row
            if len(fields) != width:
                self._odd(row, full)
                continue
            if pad:
                fields.append("")
            external_id = fields[external_id_at].strip()
            name = fields[name_at].strip()
            if "  " in name:
                name = _SPACES.sub(" ", name)
            chosen = choices[choice_cells(fields)]
            migration = migrations[migration_cells(fields)]
            if (
                chosen is None
                or migration is None
                or not 0 < len(external_id) <= 100
                or not 0 < len(name) <= 300
            ):
                full.append(row)
                continue
            attributes = "".join(map(_get, fragments, attribute_cells(fields)))
            staged.append(
                (
                    line,
                    digest,
                    external_id,
                    name,
                    *chosen,
                    *migration,
                    "{" + attributes[2:] + "}",
                )
            )
        return staged, full


def _contact_choices(role: str, timezone: str, locale: str) -> tuple[str, str | None, str]:
    """What _contact_row makes of these cells (_RowError if it refuses one)."""
    return (
        _choice(role, "role", ContactRole, ContactRole.OTHER),
        _timezone(timezone),
        _locale(locale),
    )


class _ContactPlain(PlainChecks):
    def __init__(self, header: Header) -> None:
        super().__init__(header, CONTACT_OPTIONAL)
        self.choices = _Memo(_contact_choices)
        self.choice_cells = self._cells("role", "timezone", "locale")

    def __call__(self, rows: Iterable[PlainRow]) -> tuple[list[StagedRow], list[PlainRow]]:
        staged: list[StagedRow] = []
        full: list[PlainRow] = []
        width, pad = self.width, self.pad
        account_at, email_at, name_at = (
            self.at[c] for c in ("account_external_id", "email", "name")
        )
        choices, choice_cells = self.choices, self.choice_cells
        for row in rows:
            line, digest, fields = row
            if len(fields) != width:
                self._odd(row, full)
                continue
            if pad:
                fields.append("")
            account = fields[account_at].strip()
            name = fields[name_at].strip()
            if "  " in name:
                name = _SPACES.sub(" ", name)
            chosen = choices[choice_cells(fields)]
            if chosen is None or not 0 < len(account) <= 100 or len(name) > 300:
                full.append(row)
                continue
            try:
                email = canonical_email(fields[email_at])
            except BadAddress:
                full.append(row)
                continue
            staged.append((line, digest, account, email, name or None, *chosen))
        return staged, full


_get = dict.__getitem__


def _getter(indexes: list[int]) -> Callable[[list[str]], tuple[str, ...]]:
    """The fields at ``indexes``, as a tuple however many there are."""
    if len(indexes) > 1:
        return itemgetter(*indexes)
    return lambda fields: tuple(fields[index] for index in indexes)


def staged_row(kind: str, values: dict[str, Any], digest: int | None) -> StagedRow:
    """What the full check gives of a row, as the staging table takes it (the line, the
    digest, then the values; a date as ISO text, the attributes as JSON text)."""
    if kind == "accounts":
        migrated_on = values["crm_migrated_on"]
        return (
            values["line"],
            digest,
            values["external_id"],
            values["name"],
            values["tier"],
            values["region"],
            values["industry"],
            values["lifecycle"],
            values["crm_migration_state"],
            None if migrated_on is None else migrated_on.isoformat(),
            json.dumps(values["attributes"]),
        )
    return (
        values["line"],
        digest,
        values["account_external_id"],
        values["email"],
        values["name"],
        values["role"],
        values["timezone"],
        values["locale"],
    )


ACCOUNT_FILE = CustomerFile(
    name="accounts",
    required=ACCOUNT_REQUIRED,
    optional=ACCOUNT_OPTIONAL,
    attributes_allowed=True,
    check=_account_row,
    plain=_AccountPlain,
)
CONTACT_FILE = CustomerFile(
    name="contacts",
    required=CONTACT_REQUIRED,
    optional=CONTACT_OPTIONAL,
    attributes_allowed=False,
    check=_contact_row,
    plain=_ContactPlain,
)
