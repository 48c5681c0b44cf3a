"""What may reach a mail header: e-mail addresses and display text, checked and normalised.

One rule for the whole of Herald, applied twice: at the door (customer import, webhook
events, config) and at the edge (every transport checks each recipient's values again
before it builds a header, so a value that slipped in another way fails alone).

**Addresses.** An address is stored in its *canonical* form: lower-case ASCII, an
internationalised domain (``bücher.example``) as its A-label (``xn--bcher-kva.example``).
That is the form SendGrid and SMTP envelopes take and the form SendGrid's events report
back, so suppressions match without conversions. People read the *display* form
(:func:`display_email`). A non-ASCII local part (``josé@...``) is refused: it needs
SMTPUTF8, which SendGrid does not offer.

**Display text** (contact and account names, subjects, the sender's name). Line breaks,
tabs and the other line-breaking characters (CR, LF, VT, FF, the ASCII separators FS/GS/RS,
NEL U+0085, LINE SEPARATOR U+2028, PARAGRAPH SEPARATOR U+2029) are *normalised*: each run of
them becomes one space (a CRM's multi-line field stays readable). Any other control
character (C0 and C1 controls, DEL), a lone surrogate, and the bidirectional embedding,
override and isolate controls (U+202A-U+202E, U+2066-U+2069, which can make a name read
backwards) are *refused*: the value is rejected with the character named. Text is put in
Unicode NFC form first.
"""

from __future__ import annotations

import re
import unicodedata
from functools import lru_cache

import email_validator
import idna
from email_validator import EmailNotValidError, validate_email

# Each run of these becomes one space.
LINE_BREAKING = "\t\n\v\f\r\x1c\x1d\x1e\x85\u2028\u2029"
# Bidirectional embeddings, overrides and isolates: refused.
BIDI_CONTROLS = "\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069"
_BREAKS = re.compile(f"[{re.escape(LINE_BREAKING)}]+")
# Every character text may not hold, plus the line breaks, as one character class: control
# characters (Unicode category Cc: U+0000-001F and U+007F-009F), surrogates (Cs: U+D800-DFFF)
# and the bidi controls. One regex search per value instead of a category lookup per
# character (a List-Unsubscribe URL is some 200 characters, a batch has 1,000 of them).
UNSAFE_PATTERN = (
    "[\x00-\x1f\x7f-\x9f\ud800-\udfff" + re.escape(BIDI_CONTROLS) + re.escape(LINE_BREAKING) + "]"
)
_UNSAFE = re.compile(UNSAFE_PATTERN)
_SPACES = re.compile(r" {2,}")
# What an ASCII addr-spec may hold once canonical (RFC 5322 dot-atom, no quoting).
_ADDRESS = re.compile(
    r"^[a-z0-9!#$%&'*+/=?^_`{|}~-]+(\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?(\.[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)+$"
)


class UnsafeText(ValueError):
    """A value that must not reach a mail header (the message names the character)."""


class BadAddress(ValueError):
    """An e-mail address Herald cannot deliver to (the message says why)."""


# Unicode gives control characters no names; these are their usual ones.
_CONTROL_NAMES = {
    "\x00": "NULL",
    "\x07": "BELL",
    "\x08": "BACKSPACE",
    "\t": "CHARACTER TABULATION",
    "\n": "LINE FEED",
    "\v": "LINE TABULATION",
    "\f": "FORM FEED",
    "\r": "CARRIAGE RETURN",
    "\x1b": "ESCAPE",
    "\x1c": "FILE SEPARATOR",
    "\x1d": "GROUP SEPARATOR",
    "\x1e": "RECORD SEPARATOR",
    "\x7f": "DELETE",
    "\x85": "NEXT LINE",
}


def describe(char: str) -> str:
    """A character as people can read it in an error: ``U+202E RIGHT-TO-LEFT OVERRIDE``."""
    name = unicodedata.name(char, "") or _CONTROL_NAMES.get(char, "")
    if not name:
        name = "a control character" if unicodedata.category(char) == "Cc" else "unnamed"
    return f"U+{ord(char):04X} {name}"


def unsafe_char(value: str) -> str | None:
    """The first character of ``value`` that may never reach a header (line breaks included)."""
    found = _UNSAFE.search(value)
    return found.group() if found else None


def clean_text(value: str, what: str = "value") -> str:
    """``value`` normalised for a header: NFC, line breaks and tabs to single spaces,
    trimmed; UnsafeText when it holds a character that is refused."""
    text = unicodedata.normalize("NFC", value)
    text = _SPACES.sub(" ", _BREAKS.sub(" ", text)).strip()
    # The line breaks are spaces by now, so the first unsafe character is the first refused
    # one (one regex search instead of a category lookup per character).
    if (found := _UNSAFE.search(text)) is not None:
        raise UnsafeText(f"{what} contains {describe(found.group())}")
    return text


def check_header_text(value: str, what: str) -> str:
    """``value`` unchanged if it is safe in a header as it is, else UnsafeText (the edge:
    a transport fails the recipient instead of changing what it sends)."""
    char = unsafe_char(value)
    if char is not None:
        raise UnsafeText(f"{what} contains {describe(char)}")
    return value


# The fast path of canonical_email: an address email-validator is certain to accept, and to
# normalise to itself lower-cased, decided without it. The local part is an unquoted ASCII
# dot-atom (RFC 5322), lower-cased; email-validator's default, non-strict mode puts no limit
# on its length beyond the address's 254 characters. The domain is lower-case ASCII
# letters, digits and hyphens in labels of 1 to 63 characters, at least two labels, none
# starting or ending with a hyphen nor with hyphens in its 3rd and 4th places (that is
# Punycode's "xn--" or a reserved form: left to email-validator), the last label ending with
# a letter (email-validator refuses a numeric top-level domain). The special-use names are
# email-validator's own list, read once.
_PLAIN_ADDRESS = re.compile(
    r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*"
    r"@(?:(?![a-z0-9-]{2}--)[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+"
    r"(?![a-z0-9-]{2}--)(?:[a-z0-9][a-z0-9-]{0,61})?[a-z]"
)
# email-validator refuses these names and every name under them.
_SPECIAL_USE = tuple(f".{name}" for name in email_validator.SPECIAL_USE_DOMAIN_NAMES)
# The longest address email-validator takes (RFC 5321 with its errata): 254 characters.
_MAX_ADDRESS = 254


def canonical_email(value: str) -> str:
    """The canonical form of an address (lower-case ASCII, A-label domain), or BadAddress.

    Exactly :func:`_validated` of the trimmed value, result and error alike (a differential
    test holds the two together): the common address (a plain ASCII local part at a plain
    ASCII domain) is decided here without email-validator; an internationalised domain's
    verdict is cached (a file has few of them); anything else, and every address refused,
    goes through email-validator whole, so an error always says what email-validator says."""
    text = value.strip()
    if len(text) <= _MAX_ADDRESS and text.isascii():
        lowered = text.lower()
        if _PLAIN_ADDRESS.fullmatch(lowered):
            if not lowered.endswith(_SPECIAL_USE):
                return lowered
        else:
            local, _, domain = lowered.rpartition("@")
            if "xn--" in domain and _PLAIN_LOCAL.fullmatch(local):
                lengths = _idn_domain(domain)
                # The address must fit in 254 characters with its domain in Unicode too.
                if lengths is not None and len(local) + 1 + lengths <= _MAX_ADDRESS:
                    return lowered
    return _validated(text)


# An unquoted ASCII local part (RFC 5322 dot-atom), lower-cased.
_PLAIN_LOCAL = re.compile(r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+(?:\.[a-z0-9!#$%&'*+/=?^_`{|}~-]+)*")


@lru_cache(maxsize=8192)
def _idn_domain(domain: str) -> int | None:
    """For a lower-case ASCII domain holding an A-label: the UTF-8 length of its Unicode
    form when email-validator takes it unchanged as the domain of an address, else None."""
    try:
        checked = validate_email(f"x@{domain}", check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError:
        return None
    if checked.ascii_domain != domain:
        return None
    return len(checked.domain.encode("utf-8"))


def _validated(text: str) -> str:
    char = unsafe_char(text)
    if char is not None:
        raise BadAddress(f"contains {describe(char)}")
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        message = str(error)
        if "before the @-sign are not supported" in message:
            message += " SendGrid cannot deliver to a non-ASCII local part (no SMTPUTF8)."
        raise BadAddress(message) from None
    ascii_email = checked.ascii_email
    if ascii_email is None:  # only with SMTPUTF8, which is refused above
        raise BadAddress("the address has no ASCII form")
    return ascii_email.lower()


@lru_cache(maxsize=4096)
def _unicode_domain(domain: str) -> str:
    try:
        return idna.decode(domain)
    except idna.IDNAError:
        return domain


def display_email(value: str) -> str:
    """The form people read: an A-label domain shown in Unicode (``user@bücher.example``)."""
    local, at, domain = value.rpartition("@")
    if not at or "xn--" not in domain:
        return value
    return f"{local}@{_unicode_domain(domain)}"


def check_address(value: str) -> str:
    """``value`` if it is a canonical ASCII address a transport may put in a header, else
    BadAddress (the edge: a stored value that escaped :func:`canonical_email`)."""
    if not value.isascii():
        raise BadAddress(f"{value!r} is not ASCII (internationalised domains go as A-labels)")
    # fullmatch: ``$`` alone would let an address end in a line feed.
    if len(value) > _MAX_ADDRESS or not _ADDRESS.fullmatch(value.lower()):
        raise BadAddress(f"{value!r} is not a plain address (local@domain)")
    return value


def all_addresses(values: list[str]) -> bool:
    """Whether :func:`check_address` takes every one of ``values`` (one pass over them all,
    each check a C call: a batch's 1,000 addresses without a Python call each)."""
    return (
        all(map(str.isascii, values))
        and max(map(len, values), default=0) <= _MAX_ADDRESS
        and all(map(_ADDRESS.fullmatch, map(str.lower, values)))
    )


# Every ASCII character a header may hold: all but the controls (U+0000-001F, U+007F).
_PRINTABLE_ASCII = bytes(range(0x20, 0x7F))


def all_header_safe(values: list[str]) -> bool:
    """Whether :func:`check_header_text` takes every one of ``values`` as it is, checked over
    them all joined by spaces (a space is safe, so the join adds nothing to find).

    Text that is all ASCII (the common case, and what the List-Unsubscribe headers are) can
    hold only the ASCII controls of what is refused: it is safe when deleting every printable
    ASCII byte from it leaves nothing (``bytes.translate``: a table lookup a byte, some ten
    times faster than the character class's search over a batch's 300 KB of headers). Other
    text goes through that search."""
    text = " ".join(values)
    if text.isascii():
        return not text.encode("ascii").translate(None, _PRINTABLE_ASCII)
    return _UNSAFE.search(text) is None
