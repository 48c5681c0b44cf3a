"""The suppression list by hand: list, add, remove and import, each change in the audit log.

Addresses are taken the way the customer import takes them
(:func:`herald.addresses.canonical_email`: case folded, an internationalised domain as its
A-label), so a suppression matches the contact, the audience query and SendGrid's events
without conversions. An address that is no contact (yet) may be suppressed: a contact
imported later with it is never mailed.

Every change lands in the audit log in the same transaction as the change itself, with who
made it (``who``, default :func:`herald.audit.actor`) and why; addresses in the audit log
are masked (:func:`herald.privacy.mask_email`), as the unsubscribe endpoint masks them, with
the contact's id beside them when the address is a contact's.

**Removing is the dangerous direction.** A suppression of reason ``unsubscribe``,
``bounce`` or ``spam_report`` records what the recipient or their mail server asked;
removing it lets Herald mail them again. So:

- every removal needs a why;
- without a reason named, a removal takes only a ``manual`` suppression, and is refused
  (nothing changes) while the address has any of the protected ones, which are listed;
- a protected suppression goes only when its reason is named, one reason at a time.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import IO, Any, Final

import idna
from sqlalchemy import Connection, delete, func, select, tuple_

from herald import audit
from herald.addresses import (
    BadAddress,
    UnsafeText,
    canonical_email,
    clean_text,
    display_email,
    unsafe_char,
)
from herald.customers.rows import CustomerFile, Header, checked_rows, read_header
from herald.db import dialect_insert
from herald.errors import HeraldError
from herald.models import CONTACT, SUPPRESSION, SuppressionReason, as_utc, utcnow
from herald.privacy import mask_email

# What the recipient (or their mail server) asked: removed only when named, with a why.
PROTECTED: Final = frozenset(
    {SuppressionReason.UNSUBSCRIBE, SuppressionReason.BOUNCE, SuppressionReason.SPAM_REPORT}
)
MANUAL_SOURCE: Final = "manual"
MAX_DETAIL: Final = 2000  # characters of a why kept on the suppression
IMPORT_REQUIRED: Final = ("email",)
IMPORT_OPTIONAL: Final = ("reason", "detail")
LOOKUP_CHUNK: Final = 500  # (email, reason) pairs per lookup

ADDED: Final = "suppression.added"
REMOVED: Final = "suppression.removed"
IMPORTED: Final = "suppressions.imported"


class SuppressionError(HeraldError):
    """A change that is refused (a bad address or reason, a removal the rules do not
    allow); nothing was changed."""


@dataclass(frozen=True)
class SuppressionRow:
    """One suppression, and the contact its address belongs to (None: no contact has it)."""

    id: int
    email: str
    reason: str
    source: str
    detail: str | None
    created_at: datetime
    contact_id: int | None

    @property
    def display_email(self) -> str:
        """The address as people read it (an A-label domain in Unicode)."""
        return display_email(self.email)


@dataclass(frozen=True)
class Listed:
    """The suppressions a listing asked for (newest first) and how many match in all."""

    rows: list[SuppressionRow]
    total: int


@dataclass(frozen=True)
class Added:
    """What adding a suppression did: ``new`` False means it was there already (``row``
    is then the one that was there, unchanged)."""

    row: SuppressionRow
    new: bool


@dataclass(frozen=True)
class Removed:
    """What a removal took away, and the reasons the address is still suppressed for."""

    email: str
    contact_id: int | None
    removed: list[SuppressionRow]
    remaining: list[str]


# --------------------------------------------------------------------------- values


def parse_reason(value: str) -> SuppressionReason:
    """A suppression reason by its name (SuppressionError naming the allowed ones)."""
    text = value.strip().lower()
    try:
        return SuppressionReason(text)
    except ValueError:
        allowed = ", ".join(reason.value for reason in SuppressionReason)
        raise SuppressionError(f"unknown reason {value!r} (expected one of {allowed})") from None


def address(value: str) -> str:
    """The canonical form of an address, as the customer import stores it, or
    SuppressionError saying why there is none."""
    text = value.strip()
    if not text:
        raise SuppressionError("the e-mail address is empty")
    try:
        return canonical_email(text)
    except BadAddress as error:
        raise SuppressionError(f"invalid e-mail {_shown(text)!r}: {error}") from None


def _shown(text: str) -> str:
    """An address fit for a message: control characters escaped."""
    return text.encode("unicode_escape").decode("ascii") if unsafe_char(text) else text


def _why(value: str | None, *, required: bool, what: str = "the why") -> str | None:
    """The why of a change (or a line's ``detail``): line breaks as spaces, no other
    control character, at most MAX_DETAIL characters; None when empty."""
    try:
        text = clean_text(value or "", what)
    except UnsafeText as error:
        raise SuppressionError(str(error)) from None
    if not text:
        if required:
            raise SuppressionError("say why (--why): the audit log keeps it with the change")
        return None
    if len(text) > MAX_DETAIL:
        raise SuppressionError(f"{what} is longer than {MAX_DETAIL} characters")
    return text


def search_form(text: str) -> str:
    """A piece of an address as it is stored: lower case, and where it names whole
    internationalised domain labels (``bücher``), their A-labels (``xn--bcher-kva``)."""
    lowered = text.strip().lower()
    if lowered.isascii():
        return lowered
    try:
        return canonical_email(lowered)
    except BadAddress:
        pass
    local, at, domain = lowered.rpartition("@")
    labels = []
    for label in (domain if at else lowered).split("."):
        try:
            labels.append(label if label.isascii() else idna.encode(label, uts46=True).decode())
        except idna.IDNAError:
            labels.append(label)
    joined = ".".join(labels)
    return f"{local}@{joined}" if at else joined


def _contact_id(conn: Connection, email: str) -> int | None:
    found: int | None = conn.execute(
        select(CONTACT.c.id).where(CONTACT.c.email == email)
    ).scalar_one_or_none()
    return found


def _columns() -> list[Any]:
    return [
        SUPPRESSION.c.id,
        SUPPRESSION.c.email,
        SUPPRESSION.c.reason,
        SUPPRESSION.c.source,
        SUPPRESSION.c.detail,
        SUPPRESSION.c.created_at,
        CONTACT.c.id.label("contact_id"),
    ]


def _row(found: Any) -> SuppressionRow:
    return SuppressionRow(
        id=found.id,
        email=found.email,
        reason=found.reason,
        source=found.source,
        detail=found.detail,
        created_at=as_utc(found.created_at),
        contact_id=found.contact_id,
    )


def _select() -> Any:
    return select(*_columns()).select_from(
        SUPPRESSION.outerjoin(CONTACT, CONTACT.c.email == SUPPRESSION.c.email)
    )


def suppressions_of(conn: Connection, email: str) -> list[SuppressionRow]:
    """Every suppression of a canonical address, oldest first."""
    rows = conn.execute(
        _select()
        .where(SUPPRESSION.c.email == email)
        .order_by(SUPPRESSION.c.created_at, SUPPRESSION.c.id)
    )
    return [_row(found) for found in rows]


# --------------------------------------------------------------------------- list


def list_suppressions(
    conn: Connection,
    *,
    reason: SuppressionReason | None = None,
    email: str | None = None,
    contains: str | None = None,
    limit: int | None = 50,
) -> Listed:
    """Suppressions, newest first: of one ``reason``, of one address (``email``, taken as
    the import takes it), of addresses holding ``contains``; at most ``limit`` of them
    (None: all), with the number that match in all."""
    conditions: list[Any] = []
    if reason is not None:
        conditions.append(SUPPRESSION.c.reason == reason.value)
    if email is not None:
        conditions.append(SUPPRESSION.c.email == address(email))
    if contains is not None and contains.strip():
        conditions.append(SUPPRESSION.c.email.contains(search_form(contains), autoescape=True))
    total = conn.execute(
        select(func.count()).select_from(SUPPRESSION).where(*conditions)
    ).scalar_one()
    query = (
        _select()
        .where(*conditions)
        .order_by(SUPPRESSION.c.created_at.desc(), SUPPRESSION.c.id.desc())
    )
    if limit is not None:
        query = query.limit(limit)
    return Listed(rows=[_row(found) for found in conn.execute(query)], total=int(total))


# --------------------------------------------------------------------------- add


def add_suppression(
    conn: Connection,
    *,
    email: str,
    reason: SuppressionReason = SuppressionReason.MANUAL,
    why: str | None = None,
    who: str | None = None,
    source: str = MANUAL_SOURCE,
) -> Added:
    """Suppress an address for ``reason``, in the caller's transaction, with an audit entry.

    Idempotent: when the address is suppressed for that reason already, nothing changes
    (no audit entry either) and the stored row is returned with ``new`` False."""
    canonical = address(email)
    detail = _why(why, required=False)
    now = utcnow()
    inserted = conn.execute(
        dialect_insert(conn.dialect.name)(SUPPRESSION)
        .values(
            email=canonical,
            reason=reason.value,
            source=source[:100],
            detail=detail,
            created_at=now,
        )
        .on_conflict_do_nothing(index_elements=["email", "reason"])
        .returning(SUPPRESSION.c.id)
    ).first()
    row = next(r for r in suppressions_of(conn, canonical) if r.reason == reason.value)
    if inserted is not None:
        audit.record(
            conn,
            ADDED,
            detail={
                "email": mask_email(canonical),
                "contact_id": row.contact_id,
                "reason": reason.value,
                "source": row.source,
                "why": detail,
            },
            who=who,
        )
    return Added(row=row, new=inserted is not None)


# --------------------------------------------------------------------------- remove


def remove_suppression(
    conn: Connection,
    *,
    email: str,
    why: str,
    reason: SuppressionReason | None = None,
    who: str | None = None,
) -> Removed:
    """Take an address's suppression away, in the caller's transaction, with an audit entry.

    ``reason`` None takes the ``manual`` one, and is refused (SuppressionError, nothing
    changed) while the address is suppressed for a protected reason (unsubscribe, bounce,
    spam report): those go only when named. A removal always needs a ``why``. Nothing to
    remove is no error: the result lists nothing removed."""
    canonical = address(email)
    because = _why(why, required=True)
    rows = suppressions_of(conn, canonical)
    if reason is None:
        protected = [row.reason for row in rows if row.reason in PROTECTED]
        if protected:
            named = " or ".join(f"--reason {name}" for name in protected)
            raise SuppressionError(
                f"{display_email(canonical)} is suppressed for {', '.join(protected)}: the "
                "recipient or their mail server asked for that, and removing it lets Herald "
                f"mail them again. Name it to remove it ({named}), with --why; nothing changed."
            )
        targets = [row for row in rows if row.reason == SuppressionReason.MANUAL.value]
    else:
        targets = [row for row in rows if row.reason == reason.value]
    remaining = [row.reason for row in rows if row not in targets]
    contact_id = _contact_id(conn, canonical)
    if targets:
        conn.execute(delete(SUPPRESSION).where(SUPPRESSION.c.id.in_([t.id for t in targets])))
        audit.record(
            conn,
            REMOVED,
            detail={
                "email": mask_email(canonical),
                "contact_id": contact_id,
                "reasons": [row.reason for row in targets],
                "sources": [row.source for row in targets],
                "remaining": remaining,
                "why": because,
            },
            who=who,
        )
    return Removed(email=canonical, contact_id=contact_id, removed=targets, remaining=remaining)


# --------------------------------------------------------------------------- import


@dataclass(frozen=True)
class ImportReject:
    """A line of the file that was not imported, and why."""

    line: int
    reason: str
    raw: str


@dataclass
class SuppressionImport:
    """What one import did, every line counted once: ``added`` (a new suppression),
    ``already`` (its address was suppressed for that reason before the import),
    ``duplicates`` (it repeats an earlier line's address and reason, which this import
    added) or ``rejected``."""

    file: str
    rows: int = 0
    added: int = 0
    already: int = 0
    duplicates: int = 0
    rejected: int = 0
    added_by_reason: dict[str, int] = field(default_factory=dict)
    rejects_path: Path | None = None
    first_rejects: list[ImportReject] = field(default_factory=list)

    def counts(self) -> dict[str, Any]:
        """The counts, as the audit log keeps them."""
        return {
            "rows": self.rows,
            "added": self.added,
            "already": self.already,
            "duplicates": self.duplicates,
            "rejected": self.rejected,
            "added_by_reason": dict(sorted(self.added_by_reason.items())),
        }


def _import_row(line: int, fields: list[str], header: Header) -> dict[str, Any]:
    """One data row's values; a row that cannot be imported carries its ``problem``."""
    values = dict(zip(header.columns, fields, strict=True))
    row: dict[str, Any] = {"line": line}
    try:
        row["email"] = address(values["email"])
        row["reason"] = parse_reason(values.get("reason", "") or SuppressionReason.MANUAL)
        row["detail"] = _why(values.get("detail"), required=False, what="detail")
    except SuppressionError as error:
        row["problem"] = str(error)
    return row


SUPPRESSION_FILE: Final = CustomerFile(
    name="suppressions",
    required=IMPORT_REQUIRED,
    optional=IMPORT_OPTIONAL,
    attributes_allowed=False,
    check=_import_row,
)


class _Rejects:
    """The rejects file, opened at the first reject; the first few kept to print."""

    def __init__(self, directory: Path, file: str, keep: int) -> None:
        self._directory = directory
        self._file = file
        self._keep = keep
        self._handle: IO[str] | None = None
        self._writer: Any = None
        self.path: Path | None = None
        self.first: list[ImportReject] = []

    def add(self, reject: ImportReject) -> None:
        if self._writer is None:
            self._directory.mkdir(parents=True, exist_ok=True)
            self.path = self._directory / f"suppression-rejects-{utcnow():%Y%m%dT%H%M%S%fZ}.csv"
            self._handle = self.path.open("w", newline="", encoding="utf-8")
            self._writer = csv.writer(self._handle)
            self._writer.writerow(["file", "line", "reason", "row"])
        self._writer.writerow([self._file, reject.line, reject.reason, reject.raw])
        if len(self.first) < self._keep:
            self.first.append(reject)

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()


def import_suppressions(
    conn: Connection,
    path: Path,
    *,
    rejects_dir: Path,
    why: str | None = None,
    who: str | None = None,
    chunk_rows: int = 5_000,
    keep_rejects: int = 20,
) -> SuppressionImport:
    """Suppress the addresses of a CSV file (``email``, optional ``reason`` and ``detail``),
    in the caller's transaction, with one audit entry giving the counts.

    The file is streamed and checked line by line the way the customer import checks its
    files (:mod:`herald.tabular`): a bad line (bad address, unknown reason, malformed CSV,
    bytes that are not UTF-8) goes to the rejects file with its line and reason, and the
    rest lands. A missing reason is ``manual``; a missing detail is ``why``. A file with a
    bad header is refused before anything is written (``ImportError_``).
    """
    header = read_header(path, SUPPRESSION_FILE)
    because = _why(why, required=False)
    name = str(path)
    source = f"import:{path.name}"[:100]
    result = SuppressionImport(file=name)
    before = int(conn.execute(select(func.coalesce(func.max(SUPPRESSION.c.id), 0))).scalar_one())
    rejects = _Rejects(rejects_dir, name, keep_rejects)
    pending: dict[tuple[str, str], dict[str, Any]] = {}
    copies: dict[tuple[str, str], int] = {}
    try:
        for checked in checked_rows(path, header, SUPPRESSION_FILE):
            result.rows += 1
            values = checked.values
            problem = checked.reason if values is None else values.get("problem")
            if values is None or problem:
                result.rejected += 1
                rejects.add(ImportReject(checked.line, str(problem), checked.raw))
                continue
            key = (values["email"], values["reason"].value)
            copies[key] = copies.get(key, 0) + 1
            if key in pending:
                continue
            pending[key] = {
                "email": key[0],
                "reason": key[1],
                "source": source,
                "detail": values["detail"] or because,
                "created_at": utcnow(),
            }
            if len(pending) >= chunk_rows:
                _land(conn, pending, copies, before, result)
                pending.clear()
                copies.clear()
        if pending:
            _land(conn, pending, copies, before, result)
    finally:
        rejects.close()
    result.rejects_path = rejects.path
    result.first_rejects = rejects.first
    audit.record(conn, IMPORTED, detail={"file": name, **result.counts(), "why": because}, who=who)
    return result


def _chunks(keys: list[tuple[str, str]]) -> Iterator[list[tuple[str, str]]]:
    for start in range(0, len(keys), LOOKUP_CHUNK):
        yield keys[start : start + LOOKUP_CHUNK]


def _land(
    conn: Connection,
    pending: dict[tuple[str, str], dict[str, Any]],
    copies: dict[tuple[str, str], int],
    before: int,
    result: SuppressionImport,
) -> None:
    """Insert a chunk of rows (one per address and reason, ``copies`` saying on how many
    lines each came) and count every line: ``added`` (the first line of a pair this import
    stored), ``duplicates`` (a line repeating such a pair), ``already`` (the pair was stored
    before this import, or meanwhile by someone else)."""
    rows = dict(pending)
    for keys in _chunks(list(rows)):
        found = conn.execute(
            select(SUPPRESSION.c.email, SUPPRESSION.c.reason, SUPPRESSION.c.id).where(
                tuple_(SUPPRESSION.c.email, SUPPRESSION.c.reason).in_(keys)
            )
        )
        for email, reason, row_id in found:
            key = (email, reason)
            rows.pop(key, None)
            if row_id > before:  # an earlier chunk of this file stored it
                result.duplicates += copies[key]
            else:
                result.already += copies[key]
    if not rows:
        return
    inserted = conn.execute(
        dialect_insert(conn.dialect.name)(SUPPRESSION)
        .on_conflict_do_nothing(index_elements=["email", "reason"])
        .returning(SUPPRESSION.c.email, SUPPRESSION.c.reason),
        list(rows.values()),
    ).all()
    for email, reason in inserted:
        key = (email, reason)
        rows.pop(key, None)
        result.added += 1
        result.duplicates += copies[key] - 1
        result.added_by_reason[reason] = result.added_by_reason.get(reason, 0) + 1
    for key in rows:  # stored meanwhile by someone else
        result.already += copies[key]
