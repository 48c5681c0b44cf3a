"""Unsubscribe tokens: who a link unsubscribes, signed so that it cannot be forged or guessed.

A token is ``itsdangerous``'s URL-safe signed serialization of ``[campaign, contact id,
message]`` (HMAC-SHA256, salted for this one purpose): it reveals no address, and without
the key no other contact's token can be made, so ids cannot be enumerated. Keys come from
the environment: ``HERALD_UNSUBSCRIBE_SECRET`` signs; ``HERALD_UNSUBSCRIBE_OLD_SECRETS``
(comma-separated) still verify, so a key can be rotated without breaking the links already
sent. Tokens do not expire: an unsubscribe link must work as long as the mail is read.

Where no key is set and the transport is the outbox (the demo, a rehearsal), a random key is
made once and kept in ``var/secrets/unsubscribe.key`` (mode 0600), never in the repository.
Sending through SendGrid needs the environment's key: links signed by a key that only one
machine knows would not verify on the endpoint.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from base64 import urlsafe_b64encode
from collections.abc import Sequence
from pathlib import Path
from typing import NamedTuple

from itsdangerous import BadData, URLSafeSerializer
from itsdangerous.encoding import base64_decode, base64_encode

from herald.errors import HeraldError
from herald.settings import Settings, TransportName

SALT = "herald.unsubscribe.v1"
KEY_FILE = Path("secrets") / "unsubscribe.key"


class UnsubscribeKeyError(HeraldError):
    """No key to sign unsubscribe links with (nothing was sent)."""


class BadToken(ValueError):
    """A token that was not made with one of Herald's keys, or was changed since."""


class Subscriber(NamedTuple):
    """Whom a token unsubscribes: one contact, from the campaign whose message carried it
    (a named tuple: every recipient of a batch has one made)."""

    campaign: str
    contact_id: int
    message: str


class TokenSigner:
    """Makes and reads tokens with ``keys`` (the last one signs; every one verifies)."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys or not all(keys):
            raise UnsubscribeKeyError("an unsubscribe signing key may not be empty")
        self._serializer = URLSafeSerializer(
            list(keys), salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        # What serializer.dumps() does per token, with what is the same for every token done
        # once: the signer's derived key set up in one HMAC (copied per token), and the
        # JSON of the campaign and message (a batch makes 1,000 tokens of one message).
        # One step is left out: dumps() tries zlib on every payload and keeps the compressed
        # form (marked by a leading ".") when shorter. A token's JSON is 40-70 bytes, which
        # zlib shortens by a few bytes at most (a dated sunset notice's, some of the time),
        # and finding out cost 30 us a token in a sender (zlib sets up 256 KB of state per
        # call): 90% of making a token, 14% of a sender's CPU. So a token is never
        # compressed: byte for byte what dumps() makes where it does not compress, else the
        # same payload uncompressed, which loads() reads as it reads the compressed form
        # (so does :meth:`read`, for every token made before). tests/unsubscribe holds both.
        signer = self._serializer.make_signer()
        self._mac = hmac.new(signer.derive_key(), digestmod=hashlib.sha256)
        self._sep = signer.sep
        self._json: dict[tuple[str, str], tuple[str, str]] = {}

    def make(self, subscriber: Subscriber) -> str:
        """The token for ``subscriber``: URL-safe (letters, digits, ``-``, ``_``, ``.``)."""
        parts = self._json.get((subscriber.campaign, subscriber.message))
        if parts is None:
            # itsdangerous's compact JSON: no spaces, non-ASCII as it is.
            parts = (
                json.dumps(subscriber.campaign, ensure_ascii=False),
                json.dumps(subscriber.message, ensure_ascii=False),
            )
            self._json[(subscriber.campaign, subscriber.message)] = parts
        # An int's JSON is its str() (a bool is not a contact id).
        contact = int(subscriber.contact_id)
        data = f"[{parts[0]},{contact},{parts[1]}]".encode()
        # itsdangerous's base64_encode: URL-safe base64 without padding.
        value = urlsafe_b64encode(data).rstrip(b"=")
        mac = self._mac.copy()
        mac.update(value)
        signature = urlsafe_b64encode(mac.digest()).rstrip(b"=")
        return (value + self._sep + signature).decode("ascii")

    def read(self, token: str) -> Subscriber:
        """Whom ``token`` names; :class:`BadToken` when its signature does not verify, or
        when it is not exactly as it was made (base64 leaves spare bits in a last character:
        a changed character must not pass because it decodes to the same bytes)."""
        try:
            data = self._serializer.loads(token)
            if any(
                base64_encode(base64_decode(part)).decode() != part for part in token.split(".")
            ):
                raise BadToken("not a valid unsubscribe link")
        except (BadData, UnicodeError, ValueError) as error:
            raise BadToken("not a valid unsubscribe link") from error
        if (
            not isinstance(data, list)
            or len(data) != 3
            or not isinstance(data[0], str)
            or not isinstance(data[1], int)
            or isinstance(data[1], bool)
            or not isinstance(data[2], str)
        ):
            raise BadToken("not a valid unsubscribe link")
        return Subscriber(data[0], data[1], data[2])


def signing_keys(settings: Settings) -> list[str]:
    """The keys, oldest first: the old ones from the environment, then the signing one.

    Without ``HERALD_UNSUBSCRIBE_SECRET`` the outbox uses a key kept under ``var/`` (made on
    first use); SendGrid refuses with :class:`UnsubscribeKeyError`."""
    listed = settings.unsubscribe_old_secrets
    old = [k.strip() for k in (listed.get_secret_value() if listed else "").split(",") if k.strip()]
    if settings.unsubscribe_secret is not None:
        return [*old, settings.unsubscribe_secret.get_secret_value()]
    if settings.transport == TransportName.SENDGRID:
        raise UnsubscribeKeyError(
            "HERALD_UNSUBSCRIBE_SECRET is not set: every message carries a signed unsubscribe "
            "link, and the endpoint that answers it must know the key (set the same value "
            'wherever Herald sends or serves; generate one with `python -c "import secrets; '
            'print(secrets.token_urlsafe(32))"`). Nothing was sent.'
        )
    return [*old, _local_key(settings.var_dir / KEY_FILE)]


def _local_key(path: Path) -> str:
    """A random key kept in ``path`` (0600), made on first use."""
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        try:
            descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # another process made it meanwhile: use theirs
            pass
        else:
            with os.fdopen(descriptor, "w", encoding="ascii") as out:
                out.write(secrets.token_urlsafe(32))
    return path.read_text(encoding="ascii").strip()


def signer(settings: Settings) -> TokenSigner:
    """The signer for these settings."""
    return TokenSigner(signing_keys(settings))
