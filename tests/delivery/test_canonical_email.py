"""Herald's canonical e-mail form is email-validator's, decided faster for the common address.

:func:`herald.addresses.canonical_email` decides a plain ASCII address without
email-validator (a regex and email-validator's own special-use list) and caches the verdict
of an internationalised domain; everything else goes through email-validator whole. These
tests hold it to a direct email-validator call, as ``_validated`` makes it (the value
trimmed, Herald's header-unsafe characters refused first, ``check_deliverability=False``,
``allow_smtputf8=False``, the ASCII form lower-cased): the same accept/reject decision, the
same canonical form and the same reason, over the bad-input corpus, a hand list of tricky
shapes, and addresses Hypothesis builds around every rule the fast path decides.
"""

from __future__ import annotations

import csv
from pathlib import Path

import idna
import pytest
from email_validator import EmailNotValidError, validate_email
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from herald import addresses
from herald.addresses import BadAddress, canonical_email, unsafe_char

CORPUS = Path(__file__).resolve().parents[1] / "corpus" / "customers"
CJK_LABEL = idna.encode("中" * 20).decode("ascii")  # 26 characters, 60 bytes in Unicode


def reference(value: str) -> tuple[bool, str]:
    """(accepted, canonical form) or (refused, the reason) by email-validator directly."""
    text = value.strip()
    if unsafe_char(text) is not None:
        return False, "contains "
    try:
        checked = validate_email(text, check_deliverability=False, allow_smtputf8=False)
    except EmailNotValidError as error:
        return False, str(error)
    assert checked.ascii_email is not None
    return True, checked.ascii_email.lower()


def herald(value: str) -> tuple[bool, str]:
    """(accepted, canonical form) or (refused, the reason) by canonical_email."""
    try:
        return True, canonical_email(value)
    except BadAddress as error:
        return False, str(error)


def assert_same(value: str) -> None:
    """canonical_email agrees with email-validator on ``value``."""
    expected_ok, expected = reference(value)
    ok, got = herald(value)
    assert ok == expected_ok, (value, got, expected)
    if ok:
        assert got == expected, value
    else:
        assert got.startswith(expected), (value, got, expected)


def corpus_values() -> list[str]:
    """Every cell of every customer file of the bad-input corpus, read leniently (undecodable
    bytes kept as lone surrogates, as the import reads them)."""
    values: set[str] = set()
    for path in sorted(CORPUS.glob("*.csv")):
        with path.open(encoding="utf-8", errors="surrogateescape", newline="") as handle:
            for row in csv.reader(handle):
                values.update(row)
    return sorted(values)


TRICKY = [
    "user@example.com",
    "  User.Name+Tag@Example.COM \t",
    "\u00a0user@example.com\u3000",
    "user@example.com\n",
    "INFO@example.com",
    "Postmaster@Example.org",
    "user@localhost",
    "user@mail.localhost",
    "user@host.local",
    "user@LOCAL",
    "user@foo.test",
    "user@foo.invalid",
    "user@foo.onion",
    "user@1.in-addr.arpa",
    "user@example",
    "user@example.museum",
    "user@example.c",
    "user@example.c1",
    "user@example.1c",
    "user@example.123",
    "user@123.example",
    "user@-example.com",
    "user@example-.com",
    "user@ex--ample.com",
    "user@ab--cd.com",
    "user@xn--bcher-kva.example",
    "user@XN--BCHER-KVA.EXAMPLE",
    "user@xn--a.com",
    "user@xn--.com",
    "user@bücher.example",
    "user@BÜCHER.example",
    "user@faß.de",
    "user@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",  # full-width letters
    "user@example。com",
    "josé@example.com",
    "user@exa_mple.com",
    "user@exa mple.com",
    "user@example..com",
    "user@.example.com",
    "user@example.com.",
    ".user@example.com",
    "user.@example.com",
    "us..er@example.com",
    '"quoted"@example.com',
    '"quoted local"@example.com',
    '"a\\"b"@example.com',
    "a@b@example.com",
    "@example.com",
    "user@",
    "user",
    "",
    "   ",
    "Name <user@example.com>",
    "<user@example.com>",
    "user@[127.0.0.1]",
    "user@[IPv6:::1]",
    "user\uff20example.com",  # a full-width at-sign
    "user@example.com\r\nBcc: victim@evil.example",
    "user\x00@example.com",
    "user@exam\u202eple.com",
    "!#$%&'*+/=?^_`{|}~-@example.com",
    "user(comment)@example.com",
    "user,other@example.com",
    "user\\@example.com",
    f"x@{'a' * 63}.com",
    f"x@{'a' * 64}.com",
    f"{'a' * 64}@example.com",
    f"{'a' * 65}@example.com",
    f"{'a' * 242}@example.com",  # 254 characters
    f"{'a' * 243}@example.com",  # 255
    f"x@{'.'.join(['a' * 63] * 3)}.{'b' * 57}",  # a 253-character domain
    f"x@{'.'.join(['a' * 63] * 3)}.{'b' * 58}",
    f"{'a' * 64}@{'.'.join([CJK_LABEL] * 4)}.com",  # too long once the domain is Unicode
    f"{'a' * 30}@{'.'.join([CJK_LABEL] * 4)}.com",
    f"a@{'.'.join([CJK_LABEL] * 4)}.com",
]


class TestTheFastPathIsEmailValidator:
    @pytest.mark.parametrize("value", TRICKY)
    def test_tricky_shapes(self, value: str) -> None:
        """Each tricky shape gets email-validator's decision, form and reason."""
        assert_same(value)

    def test_the_bad_input_corpus(self) -> None:
        """Every cell of the bad-input corpus gets email-validator's decision, form and reason."""
        for value in corpus_values():
            assert_same(value)

    def test_plain_addresses_are_decided_without_email_validator(
        self, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The common shapes never call email-validator (the point of the fast path), and
        refused ones always do (so the reason is email-validator's)."""

        def refuse(*_args: object, **_kwargs: object) -> object:
            raise AssertionError("email-validator was called")

        monkeypatch.setattr(addresses, "validate_email", refuse)
        assert canonical_email(" Ada.Lovelace+x@Mail.Example.COM ") == (
            "ada.lovelace+x@mail.example.com"
        )
        assert canonical_email("person1@acc-0000001.example.com") == (
            "person1@acc-0000001.example.com"
        )
        with pytest.raises(AssertionError, match="email-validator was called"):
            canonical_email("user@host.local")


# --------------------------------------------------------------------------- Hypothesis

ATEXT = "abcdefghijklmnopqrstuvwxyz0123456789!#$%&'*+/=?^_`{|}~-"
LOCAL_CHARS = ATEXT + "ABCXYZ" + "...." + ' "(),:;<>@[\\]é\x00\t'
LABEL_CHARS = "abcdefghijklmnopqrstuvwxyz0123456789-" + "ABZ" + "--" + "_ü中"
TLDS = [
    "com",
    "org",
    "example",
    "c",
    "io",
    "COM",
    "c1",
    "1c",
    "123",
    "x-y",
    "local",
    "localhost",
    "test",
    "invalid",
    "onion",
    "arpa",
    "xn--p1ai",
    "xn--bcher-kva",
    "ab--cd",
    "com-",
    "",
]


def _label(size: st.SearchStrategy[int]) -> st.SearchStrategy[str]:
    return st.text(alphabet=LABEL_CHARS, min_size=1, max_size=64).flatmap(
        lambda seed: size.map(lambda n: (seed * (n // len(seed) + 1))[:n])
    )


labels = st.one_of(
    st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=12),
    st.text(alphabet=LABEL_CHARS, min_size=0, max_size=12),
    _label(st.sampled_from([1, 2, 61, 62, 63, 64, 65])),
    st.sampled_from(["xn--bcher-kva", "XN--BCHER-KVA", "xn--a", "ab--cd", "bücher", CJK_LABEL]),
)
domains = st.builds(
    lambda parts, tld: ".".join([*parts, tld]) if tld else ".".join(parts),
    st.lists(labels, min_size=0, max_size=4),
    st.sampled_from(TLDS),
)
locals_ = st.one_of(
    st.text(alphabet=ATEXT, min_size=1, max_size=20),
    st.text(alphabet=LOCAL_CHARS, min_size=0, max_size=20),
    st.builds(".".join, st.lists(st.text(alphabet=ATEXT, min_size=0, max_size=6), max_size=4)),
    st.sampled_from(["info", "INFO", "Postmaster", '"quoted"', '"a b"', "josé"]),
)
spaces = st.sampled_from(["", "", "", " ", "  ", "\t", "\n", "\u00a0", "\u3000", "\x1c"])


@st.composite
def addresses_of_length(draw: st.DrawFn) -> str:
    """An address padded in its local part to a total length around the 254 limit."""
    domain = draw(domains)
    total = draw(st.sampled_from([64, 65, 200, 252, 253, 254, 255, 256]))
    local = draw(st.text(alphabet=ATEXT, min_size=1, max_size=4))
    pad = max(1, total - len(domain) - 1)
    return (local * pad)[:pad] + "@" + domain


addresses_strategy = st.one_of(
    st.builds(lambda a, b, lp, d: f"{a}{lp}@{d}{b}", spaces, spaces, locals_, domains),
    addresses_of_length(),
    st.text(max_size=40),
    st.text(alphabet=ATEXT + ".@ ", max_size=40),
)


class TestHypothesis:
    @settings(
        max_examples=4000,
        deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    @given(addresses_strategy)
    @example(f"{'a' * 64}@{'.'.join([CJK_LABEL] * 4)}.com")
    @example("user@example.1c")
    def test_built_addresses(self, value: str) -> None:
        """Any address built around the rules gets email-validator's decision, form and reason."""
        assert_same(value)
