"""One-click unsubscribe: signed tokens, the endpoint, the headers and footers of every
message, and the suppression taking effect before the next batch."""

from __future__ import annotations

import email
import hashlib
import re
from collections.abc import Iterator
from dataclasses import replace
from email import policy
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx
import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from itsdangerous import URLSafeSerializer
from sqlalchemy import text

from flows.send_phase import send_phase
from herald.delivery import planning
from herald.delivery.recovery import start_worker
from herald.delivery.sender import PhaseSender, Renderer
from herald.delivery.transports.outbox import OutboxTransport
from herald.i18n.catalogs import translations
from herald.scaleout.rate import GlobalRate, ensure
from herald.settings import get_settings
from herald.testing.fake_sendgrid import FakeSendGrid
from herald.unsubscribe.endpoint import create_app
from herald.unsubscribe.links import UnsubscribeLinks
from herald.unsubscribe.tokens import SALT, BadToken, Subscriber, TokenSigner, signer
from tests.support.bases import DAY, eligible, load_base
from tests.support.environment import ROOT, Database
from tests.support.http import client_of

CAMPAIGN = "modular-migration-2027"
OUTBOX = Path("outbox") / CAMPAIGN
ONE_CLICK = {"List-Unsubscribe": "One-Click"}
SERVICE_NOTICE = (
    "This is a service notice about your account: it is sent even to those who unsubscribed "
    "from updates."
)


def suppressions(db: Database) -> list[tuple[str, str, str]]:
    with db.engine.connect() as conn:
        rows = conn.execute(text("SELECT email, reason, source FROM suppression")).all()
    return [(str(e), str(r), str(s)) for e, r, s in rows]


def contact_email(db: Database, contact_id: int) -> str:
    with db.engine.connect() as conn:
        return str(
            conn.execute(
                text("SELECT email FROM contact WHERE id = :id"), {"id": contact_id}
            ).scalar_one()
        )


class TestTokens:
    def test_a_token_names_contact_campaign_and_message_and_no_address(self) -> None:
        signing = TokenSigner(["k-1"])
        who = Subscriber(CAMPAIGN, 4242, "sunset-t30@2028-03-31")
        token = signing.make(who)
        assert signing.read(token) == who
        assert re.fullmatch(r"[A-Za-z0-9_.-]+", token)
        assert "@example" not in token and "k-1" not in token

    def test_a_token_is_what_itsdangerous_dumps_makes(self) -> None:
        """Tokens (made with one signer for many) are byte for byte itsdangerous's own
        ``dumps`` with the newest key; where ``dumps`` compresses (long repetitive names),
        the same payload uncompressed, which ``loads`` and ``read`` take as well as
        ``dumps``'s own token."""
        keys = ["old", "new"]
        reference = URLSafeSerializer(
            keys, salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        signing = TokenSigner(keys)
        for who in [
            Subscriber(CAMPAIGN, 1, "preview"),
            Subscriber(CAMPAIGN, 4242, "sunset-t30"),
            Subscriber("café", 3, "annonce-été"),
        ]:
            token = signing.make(who)
            assert token == reference.dumps([who.campaign, who.contact_id, who.message])
            assert signing.read(token) == who
        for compressible in [
            Subscriber(CAMPAIGN, 10**12, "sunset-t30@2028-03-31"),  # shorter by a few bytes
            Subscriber("x" * 90, 7, "y" * 90),
        ]:
            compressed = reference.dumps(list(compressible))
            assert compressed.startswith(".")  # itsdangerous zlibs it
            token = signing.make(compressible)
            assert not token.startswith(".")
            assert reference.loads(token) == list(compressible)
            assert signing.read(token) == signing.read(compressed) == compressible

    @settings(max_examples=300, deadline=None)
    @given(
        campaign=st.text(min_size=1, max_size=60),
        contact_id=st.integers(min_value=1, max_value=10**15),
        message=st.text(min_size=1, max_size=60),
    )
    def test_any_token_is_what_dumps_makes(
        self, campaign: str, contact_id: int, message: str
    ) -> None:
        """Any campaign and message (quotes, backslashes, controls, any script) and id:
        ``dumps``'s token when it does not compress, else its payload uncompressed; both
        read back."""
        assume(not any(0xD800 <= ord(c) <= 0xDFFF for c in campaign + message))
        reference = URLSafeSerializer(
            ["k"], salt=SALT, signer_kwargs={"digest_method": hashlib.sha256}
        )
        signing = TokenSigner(["k"])
        theirs = reference.dumps([campaign, contact_id, message])
        for _ in range(2):  # the second time from the signer's cached JSON
            token = signing.make(Subscriber(campaign, contact_id, message))
            if not theirs.startswith("."):
                assert token == theirs
            assert reference.loads(token) == [campaign, contact_id, message]
        assert signing.read(token) == signing.read(theirs) == (campaign, contact_id, message)

    def test_every_one_character_change_is_refused(self) -> None:
        """Forgery by editing: each position, each other URL-safe character."""
        signing = TokenSigner(["k-1"])
        token = signing.make(Subscriber(CAMPAIGN, 7, "announcement"))
        alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_."
        for index, char in enumerate(token):
            for other in alphabet.replace(char, ""):
                with pytest.raises(BadToken):
                    signing.read(token[:index] + other + token[index + 1 :])

    def test_another_contact_cannot_be_named_without_the_key(self) -> None:
        """Enumeration: a token made with any other key, for any id, is refused."""
        ours = TokenSigner(["right-key"])
        for contact_id in range(1, 50):
            forged = TokenSigner(["wrong-key"]).make(Subscriber(CAMPAIGN, contact_id, "preview"))
            with pytest.raises(BadToken):
                ours.read(forged)

    def test_a_rotated_key_still_reads_links_already_sent(self) -> None:
        old = TokenSigner(["old"]).make(Subscriber(CAMPAIGN, 1, "preview"))
        rotated = TokenSigner(["old", "new"])
        assert rotated.read(old).contact_id == 1
        new = rotated.make(Subscriber(CAMPAIGN, 2, "preview"))
        assert TokenSigner(["new"]).read(new).contact_id == 2
        with pytest.raises(BadToken):
            TokenSigner(["new"]).read(old)  # once the old key is dropped, its links stop

    def test_the_outbox_keeps_a_local_key_and_sendgrid_needs_the_environment(
        self, herald_env: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        from herald.unsubscribe.tokens import UnsubscribeKeyError

        first = signer(get_settings()).make(Subscriber(CAMPAIGN, 1, "preview"))
        key_file = herald_env / "secrets" / "unsubscribe.key"
        assert key_file.stat().st_mode & 0o077 == 0
        assert signer(get_settings()).read(first).contact_id == 1  # the same key next time
        monkeypatch.setenv("HERALD_TRANSPORT", "sendgrid")
        get_settings.cache_clear()
        with pytest.raises(UnsubscribeKeyError, match="HERALD_UNSUBSCRIBE_SECRET"):
            signer(get_settings())


class TestEndpoint:
    @pytest.fixture
    def served(
        self, db: Database, tmp_path: Path
    ) -> Iterator[tuple[httpx.Client, TokenSigner, int]]:
        loaded = load_base(db, tmp_path, accounts=20)
        signing = TokenSigner(["endpoint-key"])
        with db.engine.begin() as conn:
            contact_id = int(conn.execute(text("SELECT min(id) FROM contact")).scalar_one())
            # The page speaks the contact's language: these tests read it in English.
            conn.execute(
                text("UPDATE contact SET locale = 'en' WHERE id = :id"), {"id": contact_id}
            )
        with client_of(create_app(db.engine, signing, loaded.campaign)) as client:
            yield client, signing, contact_id

    def test_one_click_post_suppresses_once_and_answers_200(
        self, db: Database, served: tuple[httpx.Client, TokenSigner, int]
    ) -> None:
        client, signing, contact_id = served
        url = f"/unsubscribe/{signing.make(Subscriber(CAMPAIGN, contact_id, 'preview'))}"
        for _ in range(3):  # idempotent
            answer = client.post(url, data=ONE_CLICK)
            assert answer.status_code == 200, answer.text
        address = contact_email(db, contact_id)
        assert suppressions(db) == [(address, "unsubscribe", "herald:one-click")]
        with db.engine.connect() as conn:
            audit = conn.execute(
                text("SELECT action, detail FROM audit_log WHERE action = 'contact.unsubscribed'")
            ).all()
        assert len(audit) == 1 and address not in str(audit[0].detail)

    def test_a_get_never_unsubscribes_it_shows_a_button(
        self, db: Database, served: tuple[httpx.Client, TokenSigner, int]
    ) -> None:
        client, signing, contact_id = served
        url = f"/unsubscribe/{signing.make(Subscriber(CAMPAIGN, contact_id, 'preview'))}"
        page = client.get(url)
        assert page.status_code == 200
        assert '<form method="post">' in page.text and "<button" in page.text
        assert "<script" not in page.text and contact_email(db, contact_id) not in page.text
        assert suppressions(db) == []
        confirmed = client.post(url, data={"confirm": "yes"})
        assert confirmed.status_code == 200 and "unsubscribed" in confirmed.text
        assert [s[2] for s in suppressions(db)] == ["herald:page"]

    def test_the_page_speaks_the_contacts_language(
        self, db: Database, served: tuple[httpx.Client, TokenSigner, int]
    ) -> None:
        """A contact of locale de-AT reads the page in German (the language of their mail),
        before and after the click; it declares that language."""
        client, signing, contact_id = served
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE contact SET locale = 'de-AT' WHERE id = :id"), {"id": contact_id}
            )
        german = translations(ROOT / "templates", "de")
        url = f"/unsubscribe/{signing.make(Subscriber(CAMPAIGN, contact_id, 'preview'))}"
        page = client.get(url)
        assert page.headers["content-language"] == "de" and '<html lang="de">' in page.text
        assert german.gettext("Unsubscribe") != "Unsubscribe"
        assert f'<button type="submit">{german.gettext("Unsubscribe")}</button>' in page.text
        done = client.post(url, data={"confirm": "yes"})
        assert f"<h1>{german.gettext('You are unsubscribed')}</h1>" in done.text

    @pytest.mark.parametrize(
        ("accepted", "language"),
        [("fr-CA;q=0.5, ja", "ja"), ("pt-PT", "pt-BR"), ("it, *;q=0.1", "en"), ("", "en")],
    )
    def test_a_link_that_names_nobody_follows_the_browsers_language(
        self, served: tuple[httpx.Client, TokenSigner, int], accepted: str, language: str
    ) -> None:
        client, _, _ = served
        page = client.get("/unsubscribe/not-a-token", headers={"Accept-Language": accepted})
        assert page.status_code == 400
        assert page.headers["content-language"] == language
        title = translations(ROOT / "templates", language).gettext(
            "This unsubscribe link is not valid"
        )
        assert f"<h1>{title}</h1>" in page.text

    def test_a_changed_token_gets_400_and_changes_nothing(
        self, db: Database, served: tuple[httpx.Client, TokenSigner, int]
    ) -> None:
        client, signing, contact_id = served
        token = signing.make(Subscriber(CAMPAIGN, contact_id, "preview"))
        changed = token[:10] + ("A" if token[10] != "A" else "B") + token[11:]
        assert client.post(f"/unsubscribe/{changed}", data=ONE_CLICK).status_code == 400
        assert client.get(f"/unsubscribe/{changed}").status_code == 400
        assert client.post(f"/unsubscribe/{token}", data={"x": "y"}).status_code == 400
        assert client.post(f"/unsubscribe/{token}").status_code == 400
        assert suppressions(db) == []


def footer_link(text_part: str) -> str:
    """The footer's unsubscribe link: on a line of its own, after the sentence that offers it
    (in the message's language)."""
    found = re.search(r"^(https://mail\.example\.com/unsubscribe/\S+)$", text_part, re.M)
    assert found, text_part[-600:]
    return found.group(1)


@pytest.mark.usefixtures("prefect_server")
class TestEveryMessage:
    def test_each_eml_offers_one_click_and_the_next_send_skips_who_used_it(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        loaded = load_base(db, tmp_path, accounts=120)
        summary = send_phase(phase="preview", as_of=DAY, send=True, window=False)
        files = sorted((herald_env / OUTBOX / "preview").glob("*.eml"))
        assert files and len(files) == summary.delivery.accepted
        postal = loaded.campaign.sender.postal_address
        links = []
        for path in files:
            mail = email.message_from_bytes(path.read_bytes(), policy=policy.strict)
            header = str(mail["List-Unsubscribe"])
            https, mailto = re.fullmatch(r"<(https://[^>]+)>, <(mailto:[^>]+)>", header).groups()  # type: ignore[union-attr]
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            plain = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
            assert footer_link(plain) == https and f'href="{https}"' in html
            assert postal in plain and postal in html
            token = urlparse(https).path.rsplit("/", 1)[1]
            assert token in unquote(mailto)
            links.append(token)
        assert len(set(links)) == len(files)  # one per recipient

        # Unsubscribe the first recipient by one click; the announcement leaves them out.
        signing = signer(get_settings())
        who = signing.read(links[0])
        with client_of(create_app(db.engine, signing, loaded.campaign)) as client:
            answer = client.post(f"/unsubscribe/{links[0]}", data=ONE_CLICK)
        assert answer.status_code == 200
        gone = contact_email(db, who.contact_id)
        send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        announced = (herald_env / OUTBOX / "announcement" / "index.jsonl").read_text()
        assert f'"email": "{gone}"' not in announced
        assert gone not in eligible(db, loaded, "announcement")

    def test_an_unsubscribe_mid_send_takes_effect_before_the_next_batch(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        loaded = load_base(db, tmp_path, accounts=150)
        sending = loaded.campaign.sending.model_copy(update={"batch_size": 50})
        loaded = replace(loaded, campaign=loaded.campaign.model_copy(update={"sending": sending}))
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = start_worker(db.engine, campaign=CAMPAIGN, message="announcement", transport="o")
        sender = PhaseSender(
            engine=db.engine,
            config=loaded,
            phase="announcement",
            worker=worker,
            transport=OutboxTransport(herald_env / "outbox"),
            renderer=Renderer(loaded),
            window=False,
            links=UnsubscribeLinks.configured(get_settings(), loaded.campaign),
        )
        assert sender.send_batch().recipients == 50
        with db.engine.connect() as conn:
            later = int(
                conn.execute(
                    text(
                        "SELECT max(contact_id) FROM delivery "
                        "WHERE message = 'announcement' AND state = 'planned'"
                    )
                ).scalar_one()
            )
        token = signer(get_settings()).make(Subscriber(CAMPAIGN, later, "announcement"))
        with client_of(create_app(db.engine, signer(get_settings()), loaded.campaign)) as client:
            assert client.post(f"/unsubscribe/{token}", data=ONE_CLICK).status_code == 200
        while sender.send_batch().batch_id is not None:
            pass
        with db.engine.connect() as conn:
            state, error = conn.execute(
                text(
                    "SELECT state, error FROM delivery "
                    "WHERE message = 'announcement' AND contact_id = :c"
                ),
                {"c": later},
            ).one()
        assert state == "suppressed" and "unsubscribe" in error


@pytest.mark.usefixtures("prefect_server")
def test_sendgrid_requests_carry_the_same_headers_per_recipient(
    db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid
) -> None:
    """Through SendGrid: each personalization has its own List-Unsubscribe (a token of that
    contact) and the One-Click POST header; its text has the same link in the footer."""
    loaded = load_base(db, tmp_path, accounts=60)
    rate = GlobalRate.of(loaded.campaign)  # the config's rate: its limit, as herald deploy makes
    assert rate is not None
    ensure(rate)
    summary = send_phase(phase="preview", as_of=DAY, send=True, window=False)
    assert summary.delivery is not None and summary.delivery.accepted == len(sendgrid_env.accepted)
    signing = signer(get_settings())
    seen = set()
    for record in sendgrid_env.accepted:
        assert record.headers["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        https = re.match(r"<(https://[^>]+)>", record.headers["List-Unsubscribe"])
        assert https is not None
        token = https.group(1).rsplit("/", 1)[1]
        who = signing.read(token)
        assert contact_email(db, who.contact_id) == record.email
        assert record.text is not None and footer_link(record.text) == https.group(1)
        seen.add(token)
    assert len(seen) == len(sendgrid_env.accepted)


@pytest.mark.usefixtures("prefect_server")
def test_a_message_left_out_of_honoured_by_is_a_service_notice(
    db: Database, tmp_path: Path, herald_env: Path, config_dir: Path
) -> None:
    """With `honoured_by: [preview, announcement]`, the deprecation notice carries no
    unsubscribe link and says it is a service notice; an unsubscribed contact still gets it,
    a bounced one does not."""
    import yaml

    from tests.support.bases import some_contacts, suppress

    campaign_file = config_dir / "campaign.yaml"
    data = yaml.safe_load(campaign_file.read_text(encoding="utf-8"))
    data["unsubscribe"]["honoured_by"] = ["preview", "announcement"]
    campaign_file.write_text(yaml.safe_dump(data), encoding="utf-8")
    loaded = load_base(db, tmp_path, accounts=120)
    unsubscribed, bounced = some_contacts(db, 2, offset=10)
    suppress(db, [unsubscribed], reason="unsubscribe")
    suppress(db, [bounced], reason="bounce")
    send_phase(phase="deprecation", as_of=DAY, send=True, window=False)
    index = (herald_env / OUTBOX / "deprecation" / "index.jsonl").read_text(encoding="utf-8")
    assert f'"email": "{unsubscribed}"' in index and f'"email": "{bounced}"' not in index
    for path in (herald_env / OUTBOX / "deprecation").glob("*.eml"):
        mail = email.message_from_bytes(path.read_bytes(), policy=policy.default)
        assert mail["List-Unsubscribe"] is None and mail["List-Unsubscribe-Post"] is None
        text_part = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
        # The footer says so in the message's own language.
        words = translations(get_settings().templates_dir, str(mail["Content-Language"]))
        said = " ".join(words.gettext(SERVICE_NOTICE).split())
        assert said in " ".join(text_part.split())
        assert "/unsubscribe/" not in text_part
        assert loaded.campaign.sender.postal_address in text_part
