"""No customer value can reach a mail header: checked at import, and again by every transport.

A recipient whose address, name or subject cannot go in a header fails alone, ``failed``
with the reason, before the request; the rest of its batch goes; nothing a transport refuses
is left ``unknown``. End to end, a base whose names and addresses hold every hostile class
(line breaks, C0/C1 controls, bidi overrides, internationalised domains, non-ASCII local
parts) is imported and sent through the outbox and through the fake SendGrid.
"""

from __future__ import annotations

import sys
import unicodedata
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from pydantic import SecretStr
from sqlalchemy import text
from typer.testing import CliRunner, Result

from herald.addresses import BIDI_CONTROLS, LINE_BREAKING, all_header_safe, unsafe_char
from herald.cli.app import app
from herald.config import load_config
from herald.customers.importer import import_customers
from herald.customers.segmentation import assign_segments
from herald.delivery.messages import Rendered, Variant, recipient_values
from herald.delivery.transports import (
    OutgoingBatch,
    Recipient,
    checked_recipients,
)
from herald.delivery.transports.outbox import OutboxTransport
from herald.delivery.transports.sendgrid import SendGridTransport
from herald.testing.fake_sendgrid import FakeSendGrid
from tests.support.bases import DAY, ledger_emails
from tests.support.environment import KEY, ROOT, Database
from tests.support.sendgrid_reference import one_at_a_time

CUSTOMERS = Path(__file__).resolve().parents[1] / "corpus" / "customers"
VARIANT = Variant("announcement", "standard", "executive", "en")
# What the edge must refuse, whatever let it into the database: (name, email, account).
HOSTILE = {
    11: ("Eve\r\nBcc: victim@evil.example", "eve@a.example", "Acme"),
    12: ("Mallory \u202eexe.txt", "mallory@a.example", "Acme"),
    13: ("Nul\x00Byte", "nul@a.example", "Acme"),
    14: ("Next\x85Line", "nel@a.example", "Acme"),
    15: ("Uni Code", "user@bücher.example", "Acme"),  # not in canonical (A-label) form
    16: ("Crlf Address", "crlf@a.example\r\nBcc: victim@evil.example", "Acme"),
    17: ("Subject Breaker", "subject@a.example", "Acme\nBcc: victim@evil.example"),
}
GOOD = {
    1: ("Ada Lovelace", "ada@a.example", "Acme"),
    2: ("Jürgen Groß", "jurgen@xn--bcher-kva.example", "Bücher GmbH"),
    3: ("مريم الحسن", "maryam@a.example", "Acme"),
    4: (None, "anon@a.example", "Acme"),
}


def _to(
    number: int, name: str | None, email: str, account: str, header: str | None = None
) -> Recipient:
    """Recipient ``number`` of the announcement, with a List-Unsubscribe header ending in
    ``header`` when one is given."""
    return Recipient(
        number,
        f"c/announcement/{number}",
        email,
        name,
        VARIANT,
        recipient_values(name=name, email=email, account_name=account),
        {} if header is None else {"List-Unsubscribe": f"<https://u.example/{header}>"},
    )


def _batch(
    recipients: list[Recipient] | None = None,
    subject: str = "News for -account_name_text-",
) -> OutgoingBatch:
    """One batch of ``recipients`` (default: the good ones and every hostile value); the
    subject carries the account name, so a line break there reaches the subject."""
    loaded = load_config(ROOT / "config")
    rendered = Rendered(subject=subject, html="<p>-greeting_html-</p>", text="-greeting_text-")
    if recipients is None:
        recipients = [
            _to(number, name, email, account)
            for number, (name, email, account) in {**GOOD, **HOSTILE}.items()
        ]
    return OutgoingBatch(
        "batch-1",
        loaded.campaign.id,
        "announcement",
        loaded.campaign.sender,
        {VARIANT: rendered},
        recipients,
        ["modular-migration-2027", "announcement"],
    )


def _no_control(value: str | None) -> bool:
    return value is None or unsafe_char(value) is None


def _strict(path: Path) -> dict[str, str]:
    """The headers of an .eml parsed with ``email.policy.strict`` (any defect raises)."""
    message = BytesParser(policy=policy.strict).parsebytes(path.read_bytes())
    return {key: str(value) for key, value in message.items()}


class TestEachTransportChecksEachRecipient:
    def test_sendgrid_refuses_the_hostile_recipients_alone_and_sends_the_rest(
        self, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """Each hostile value is refused with its character named; one valid request goes
        with the others, and the fake receives no control character in a name or subject."""
        fake = sendgrid_env
        loaded = load_config(fast_config)
        transport = SendGridTransport(SecretStr(KEY), fake.url, loaded.campaign.sending)

        prepared = transport.prepare(_batch())
        result = transport.send(prepared)

        assert set(prepared.refused) == set(HOSTILE)
        assert "U+000D CARRIAGE RETURN" in prepared.refused[11]
        assert "U+202E RIGHT-TO-LEFT OVERRIDE" in prepared.refused[12]
        assert "U+0000 NULL" in prepared.refused[13]
        assert "U+0085 NEXT LINE" in prepared.refused[14]
        assert "is not ASCII" in prepared.refused[15]
        assert "is not a plain address" in prepared.refused[16]
        assert "the subject contains U+000A LINE FEED" in prepared.refused[17]
        assert (result.outcome, result.requests) == ("accepted", 1)
        assert [request.valid for request in fake.requests] == [True]
        assert sorted(fake.accepted_emails()) == sorted(email for _, email, _ in GOOD.values())
        for record in fake.accepted:
            assert _no_control(record.name) and _no_control(record.subject)
            assert record.email.isascii()
        jurgen = next(r for r in fake.accepted if r.email.startswith("jurgen@"))
        assert (jurgen.name, jurgen.subject) == ("Jürgen Groß", "News for Bücher GmbH")

    def test_the_outbox_writes_strict_valid_mail_for_the_rest(self, tmp_path: Path) -> None:
        """The hostile recipients get no file; every file written parses under
        ``email.policy.strict`` and its headers hold no control character."""
        outbox = OutboxTransport(tmp_path)
        prepared = outbox.prepare(_batch())
        outbox.send(prepared)

        assert set(prepared.refused) == set(HOSTILE)
        folder = outbox.folder("modular-migration-2027", "announcement")
        files = sorted(folder.glob("*.eml"))
        assert sorted(int(path.stem) for path in files) == sorted(GOOD)
        for path in files:
            headers = _strict(path)
            assert all(_no_control(value) for value in headers.values()), headers
        to = _strict(folder / "2.eml")["To"]
        assert to == "Jürgen Groß <jurgen@xn--bcher-kva.example>"
        index = (folder / "index.jsonl").read_text(encoding="utf-8")
        assert '"display": "jurgen@bücher.example"' in index


def _hostile_base(db: Database, tmp_path: Path) -> None:
    """Every class of the corpus imported (bad rows rejected), segmented; then two contacts
    written straight to the database, as data from before the import's checks would be."""
    import_customers(
        engine=db.engine,
        accounts_csv=CUSTOMERS / "base_accounts.csv",
        contacts_csv=CUSTOMERS / "base_contacts.csv",
        rejects_dir=tmp_path / "rejects",
    )
    for name in (
        "accounts_header_breakers.csv",
        "contacts_header_breakers.csv",
        "contacts_idn.csv",
        "contacts_international.csv",
        "contacts_injection.csv",
    ):
        accounts = name.startswith("accounts")
        import_customers(
            engine=db.engine,
            accounts_csv=CUSTOMERS / name if accounts else None,
            contacts_csv=None if accounts else CUSTOMERS / name,
            rejects_dir=tmp_path / "rejects",
        )
    with db.engine.begin() as conn:
        for email, name in (
            ("legacy1@customer1.com", "Old\r\nBcc: victim@evil.example"),
            ("legacy2@bücher.example", "Old Unicode Address"),
        ):
            conn.execute(
                text(
                    "INSERT INTO contact (account_id, email, name, role, locale, created_at, "
                    "updated_at) SELECT id, :email, :name, 'executive', 'en', "
                    "CURRENT_TIMESTAMP, CURRENT_TIMESTAMP FROM account WHERE external_id = "
                    "'A00001'"
                ),
                {"email": email, "name": name},
            )
    assign_segments(engine=db.engine, config=load_config(ROOT / "config").segments, as_of=DAY)


def _send_announcement() -> Result:
    return CliRunner().invoke(
        app,
        ["phase", "send", "announcement", "--send", "--ignore-window", "--as-of", str(DAY)],
        env={"COLUMNS": "300"},
    )


@pytest.mark.usefixtures("prefect_server")
class TestHostileBaseEndToEnd:
    def test_through_the_outbox(self, db: Database, tmp_path: Path, herald_env: Path) -> None:
        """`herald phase send`: no traceback; the two rows the edge refuses are failed with
        their reason and exit code 3; nothing unknown; every .eml parses strictly."""
        _hostile_base(db, tmp_path)
        result = _send_announcement()
        assert result.exit_code == 3, result.output
        assert "Traceback" not in result.output
        assert "2 failed" in " ".join(result.output.split())
        assert ledger_emails(db, "announcement", "unknown") == []
        assert sorted(ledger_emails(db, "announcement", "failed")) == [
            "legacy1@customer1.com",
            "legacy2@bücher.example",
        ]
        sent = ledger_emails(db, "announcement", "accepted")
        assert "user@xn--bcher-kva.example" in sent and "break2@customer1.com" in sent
        files = sorted((herald_env / "outbox").rglob("*.eml"))
        assert len(files) == len(sent)
        for path in files:
            headers = _strict(path)
            assert all(_no_control(value) for value in headers.values()), headers
        assert _send_announcement().exit_code == 3  # still failed rows: still a person's
        status = CliRunner().invoke(app, ["phase", "status", "announcement"])
        words = " ".join(status.output.replace("│", " ").split())  # a table wraps cells
        assert "the contact's name contains U+000D CARRIAGE RETURN" in words
        assert "is not ASCII" in words

    @pytest.mark.usefixtures("fast_config")
    def test_through_sendgrid(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid
    ) -> None:
        """The same base through the fake SendGrid: every request valid, every address ASCII
        (A-labels), no control character in any name or subject it received."""
        fake = sendgrid_env
        _hostile_base(db, tmp_path)
        result = _send_announcement()
        assert result.exit_code == 3, result.output
        assert "Traceback" not in result.output
        assert all(request.valid for request in fake.requests)
        sent = ledger_emails(db, "announcement", "accepted")
        assert sorted(fake.accepted_emails()) == sorted(sent)
        assert "kanji@xn--r8jz45g.xn--zckzah" in sent
        for record in fake.accepted:
            assert record.email.isascii()
            assert _no_control(record.name) and _no_control(record.subject)
            assert not any(char in (record.name or "") for char in LINE_BREAKING)
        assert len(ledger_emails(db, "announcement", "failed")) == 2
        assert ledger_emails(db, "announcement", "unknown") == []


class TestTheUnsafeCharacters:
    def test_one_search_refuses_exactly_the_characters_checked_one_by_one(self) -> None:
        """Over every code point, the header check (one regex search) refuses exactly what
        the rule says: a line break, a bidi control, or Unicode category Cc or Cs."""
        differ = [
            cp
            for cp in range(sys.maxunicode + 1)
            if (unsafe_char(chr(cp)) is not None)
            != (
                chr(cp) in LINE_BREAKING
                or chr(cp) in BIDI_CONTROLS
                or unicodedata.category(chr(cp)) in ("Cc", "Cs")
            )
        ]
        assert differ == []
        assert unsafe_char("https://u.example/a\u202eb\nc") == "\u202e"


# Values as a stored row may hold them: mostly clean (so that a batch often has a single
# bad value among good ones), sometimes with a character of every class the edge refuses
# (line breaks, C0/C1 controls, bidi controls, a lone surrogate).
_REFUSED = LINE_BREAKING + BIDI_CONTROLS + "\x00\x07\x1b\x7f\x9f\ud800"
_clean = st.text(
    st.characters(
        codec="utf-8", exclude_categories=("Cc", "Cs", "Zl", "Zp"), exclude_characters=BIDI_CONTROLS
    ),
    max_size=12,
)
_hostile = st.builds(lambda a, c, b: a + c + b, _clean, st.sampled_from(_REFUSED), _clean)
_text = st.one_of(_clean, _clean, _clean, _hostile)
_good_email = st.sampled_from(
    ["ada@a.example", "jurgen@xn--bcher-kva.example", "o'brien+tag@mail.example.org"]
)
_bad_email = st.one_of(
    st.sampled_from(
        [
            "trailing@a.example\n",
            "Upper@A.example",
            "user@bücher.example",
            "no-at-sign.example",
            "two@@a.example",
            "dot.@a.example",
            "x" * 250 + "@a.example",
        ]
    ),
    st.builds(
        lambda local, char: f"{local}{char}@a.example",
        st.text("abc.", min_size=1, max_size=4),
        st.sampled_from(_REFUSED),
    ),
)
_email = st.one_of(_good_email, _good_email, _good_email, _bad_email)
_recipient = st.tuples(
    st.one_of(st.none(), _text),  # name
    _email,
    _text,  # account name: it reaches the subject
    st.one_of(st.none(), _text),  # what goes in the recipient's own header
)
_GOOD = ("Ada", "ada@a.example", "Acme", "1")


class TestTheBatchScreen:
    @settings(max_examples=300, deadline=None)
    @given(st.lists(_recipient, min_size=1, max_size=12))
    # One bad value among good recipients, for each check the screen makes.
    @example([_GOOD, ("Ada", "ada@a.example\n", "Acme", "1")])
    @example([_GOOD, ("A\u202eda", "ada@a.example", "Acme", "1")])
    @example([_GOOD, ("Ada", "ada@a.example", "Ac\nme", "1")])
    @example([_GOOD, ("Ada", "ada@a.example", "Acme", "1\r\nBcc: x@evil.example")])
    def test_a_batch_is_decided_as_each_recipient_alone(
        self, people: list[tuple[str | None, str, str, str | None]]
    ) -> None:
        """Whatever the values, the whole-batch checks (one pass each over the batch) give
        what header_values gives each recipient alone: the same recipients going, with the
        same header values, and the same ones refused with the same reasons."""
        recipients = [
            _to(number, name, email, account, header)
            for number, (name, email, account, header) in enumerate(people, start=1)
        ]
        batch = _batch(recipients, subject="News for -account_name_text-, -name_text-")

        assert checked_recipients(batch) == one_at_a_time(batch)

    @settings(max_examples=300, deadline=None)
    @given(
        st.lists(
            st.one_of(
                # All ASCII (the values' usual form, checked byte by byte), or any text.
                st.text(st.characters(max_codepoint=0x7F), max_size=12),
                st.text(st.characters(codec="utf-8"), max_size=12),
                _text,
            ),
            max_size=6,
        )
    )
    # One refused character among safe values, through each of the two ways of checking.
    @example(["List-Unsubscribe", "<https://u.example/a\x7fb>"])
    @example(["Jürgen", "Next\x85Line"])
    def test_the_text_check_over_a_batch_is_each_value_checked_alone(
        self, values: list[str]
    ) -> None:
        """The one pass over a batch's values takes them exactly when each one alone is
        safe, whether they are all ASCII or not."""
        assert all_header_safe(values) is all(unsafe_char(value) is None for value in values)

    def test_every_ascii_character_is_decided_as_alone(self) -> None:
        """Each of the 128 ASCII characters, among safe ASCII text: refused by the batch's
        check exactly when it is refused alone (the controls U+0000-001F and U+007F)."""
        refused = {
            code
            for code in range(128)
            if not all_header_safe(["List-Unsubscribe", f"<https://u.example/{chr(code)}>"])
        }
        assert refused == {code for code in range(128) if unsafe_char(chr(code)) is not None}
        assert refused == set(range(0x20)) | {0x7F}

    def test_an_address_ending_in_a_line_feed_is_refused(self) -> None:
        """``$`` matches before a final line feed: the address check matches whole."""
        bad = Recipient(99, "c/announcement/99", "ok@a.example\n", None, VARIANT, {})
        batch = _batch([bad])
        assert checked_recipients(batch) == (
            [],
            {99: "not sent: 'ok@a.example\\n' is not a plain address (local@domain)"},
        )
