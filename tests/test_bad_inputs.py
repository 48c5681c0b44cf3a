"""The bad-input corpus: every door Herald takes data through, fed what people really send.

Customer CSVs (files under ``tests/corpus/customers``: wrong encodings, BOMs, stray quotes,
a huge field, blank lines, duplicate ids, emoji, right-to-left text, internationalised
domains, strings that look like SQL or HTML), campaign YAML (wrong types, unknown and
repeated keys, broken syntax), templates (syntax errors, sandbox escapes) and Event Webhook
bodies (oversized, truncated, unsigned, forged, stale, replayed, unknown event types).

Each input gets a clear answer naming what and where; what was stored before is unchanged;
the good part of the input proceeds.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest
from sqlalchemy import select, text

from herald.addresses import unsafe_char
from herald.config import ConfigError, load_config
from herald.customers.importer import import_customers
from herald.customers.rows import ImportError_
from herald.delivery.messages import TemplateError, check_templates, recipient_values, substitutions
from herald.models import ACCOUNT, CONTACT
from herald.telemetry.webhook import PATH
from herald.telemetry.webhook_batches import list_failures
from tests.support.csvfiles import read_rejects
from tests.support.environment import Database
from tests.support.webhooks import NOW, POISONS, Poison, Signer, client_for, event

ROOT = Path(__file__).resolve().parent.parent
CORPUS = Path(__file__).parent / "corpus"
CUSTOMERS = CORPUS / "customers"


# --------------------------------------------------------------------------- customer CSVs


@dataclass(frozen=True)
class CsvCase:
    file: str
    imported: int = 0  # good rows that landed
    rejects: dict[int, str] = field(default_factory=dict)  # line -> what the reason says
    error: str | None = None  # the whole file refused, with this message


CSV_CASES = [
    CsvCase("contacts_latin1.csv", 2, {3: "not valid UTF-8 (the file must be UTF-8"}),
    CsvCase("contacts_utf16.csv", error="contacts_utf16.csv:1: the file is UTF-16 or binary"),
    CsvCase("contacts_bom.csv", 2),
    CsvCase(
        "contacts_stray_quote_open.csv",
        3,
        {3: "malformed CSV: unexpected end of data (a quote opened on line 3 is not closed"},
    ),
    CsvCase("contacts_stray_quote_after.csv", 2, {3: "malformed CSV: ',' expected after '\"'"}),
    CsvCase("contacts_quote_inside.csv", 2),
    CsvCase("contacts_huge_field.csv", 2, {3: "malformed CSV: field larger than field limit"}),
    CsvCase("contacts_blank_lines.csv", 2, {7: "invalid e-mail 'not-an-email'"}),
    CsvCase("contacts_crlf_multiline.csv", 3),
    CsvCase(
        "contacts_duplicates.csv",
        1,
        {
            3: "duplicate email new2@customer1.com: 2 rows, lines 3 to 4; none imported",
            4: "duplicate email new2@customer1.com: 2 rows, lines 3 to 4; none imported",
            5: "duplicate email person1@customer1.com: 2 rows, lines 5 to 6; none imported",
            6: "duplicate email person1@customer1.com: 2 rows, lines 5 to 6; none imported",
        },
    ),
    CsvCase("contacts_wrong_fields.csv", 2, {3: "expected 6 fields, found 3", 5: "found 7"}),
    CsvCase(
        "contacts_bad_values.csv",
        2,
        {
            3: "unknown timezone 'Mars/Olympus'",
            4: "locale 'klingon-XX' is not a language tag",
            5: "unknown account A99999",
            7: "unknown role 'overlord'",
        },
    ),
    CsvCase(
        "contacts_international.csv",
        2,
        {
            4: "invalid e-mail 'ユーザー@例え.jp': Internationalized characters before the @-sign",
            5: "SendGrid cannot deliver to a non-ASCII local part (no SMTPUTF8)",
            6: "name contains U+202E RIGHT-TO-LEFT OVERRIDE",
            7: "invalid e-mail '🚀@rocket.com'",
            8: "invalid e-mail 'two@@at.com'",
        },
    ),
    CsvCase(
        "contacts_header_breakers.csv",
        10,
        {
            11: "name contains U+0000 NULL",
            12: "name contains U+001B ESCAPE",
            13: "name contains U+007F DELETE",
            14: "name contains U+009B a control character",
            15: "name contains U+0007 BELL",
            16: "name contains U+202E RIGHT-TO-LEFT OVERRIDE",
            17: "name contains U+202A LEFT-TO-RIGHT EMBEDDING",
            18: "name contains U+2067 RIGHT-TO-LEFT ISOLATE",
        },
    ),
    CsvCase(
        "contacts_idn.csv",
        5,
        {
            6: "invalid e-mail 'josé@example.com': Internationalized characters before the "
            "@-sign are not supported: 'é'. SendGrid cannot deliver to a non-ASCII local part",
            7: "invalid e-mail '🚀@rocket.example'",
            8: "duplicate email twice@xn--bcher-kva.example: 2 rows, lines 8 to 9",
            9: "duplicate email twice@xn--bcher-kva.example: 2 rows, lines 8 to 9",
            10: "invalid e-mail 'bad@xn--.example'",
            13: "contains U+0009 CHARACTER TABULATION",
        },
    ),
    CsvCase(
        "accounts_header_breakers.csv",
        2,
        {
            5: "name contains U+0000 NULL",
            9: "external_id contains U+000A LINE FEED",
            12: "name contains U+202E RIGHT-TO-LEFT OVERRIDE",
            14: "tier contains U+0000 NULL",
            16: "attr.note contains U+0000 NULL",
        },
    ),
    CsvCase(
        "contacts_injection.csv",
        4,
        {
            4: "unknown account A00001' OR '1'='1",
            5: "invalid e-mail '\"<img src=x onerror=alert(1)>\"@customer1.com': Quoting",
        },
    ),
    CsvCase(
        "accounts_bad.csv",
        1,
        {
            2: "duplicate external_id A00004: 2 rows, lines 2 to 5; none imported",
            3: "tier is empty",
            4: "migrated_on 'yesterday' is not a date",
            5: "duplicate external_id A00004",
            6: "unknown lifecycle 'zombie'",
        },
    ),
]


def _huge_field_file(directory: Path) -> Path:
    """Made at test time: a 200,000-character name between two good rows."""
    header = "account_external_id,email,name,role,timezone,locale\n"
    good = "A00001,new{n}@customer1.com,New {n},technical,Europe/Berlin,de\n"
    path = directory / "contacts_huge_field.csv"
    path.write_text(
        header
        + good.format(n=1)
        + f"A00001,new2@customer1.com,{'x' * 200_000},technical,Europe/Berlin,de\n"
        + good.format(n=3),
        encoding="utf-8",
    )
    return path


def _snapshot(db: Database) -> list[tuple[object, ...]]:
    with db.engine.connect() as conn:
        accounts = conn.execute(
            select(ACCOUNT.c.external_id, ACCOUNT.c.name, ACCOUNT.c.tier, ACCOUNT.c.updated_at)
            .where(ACCOUNT.c.external_id.in_(["A00001", "A00002", "A00003"]))
            .order_by(ACCOUNT.c.id)
        ).all()
        contacts = conn.execute(
            select(CONTACT.c.email, CONTACT.c.name, CONTACT.c.role, CONTACT.c.updated_at)
            .where(CONTACT.c.email.like("person_@customer_.com"))
            .order_by(CONTACT.c.id)
        ).all()
    return [tuple(row) for row in [*accounts, *contacts]]


class TestCustomerCsvCorpus:
    @pytest.mark.parametrize("case", CSV_CASES, ids=lambda case: case.file)
    def test_bad_rows_are_named_the_rest_lands_and_stored_rows_stay(
        self, db: Database, tmp_path: Path, case: CsvCase
    ) -> None:
        import_customers(
            engine=db.engine,
            accounts_csv=CUSTOMERS / "base_accounts.csv",
            contacts_csv=CUSTOMERS / "base_contacts.csv",
            rejects_dir=tmp_path / "base",
        )
        before = _snapshot(db)
        counts = db.count("account"), db.count("contact")
        assert len(before) == 6
        path = _huge_field_file(tmp_path) if "huge" in case.file else CUSTOMERS / case.file
        accounts = case.file.startswith("accounts")

        if case.error is not None:
            with pytest.raises(ImportError_) as refused:
                import_customers(
                    engine=db.engine,
                    accounts_csv=path if accounts else None,
                    contacts_csv=None if accounts else path,
                    rejects_dir=tmp_path / "rejects",
                )
            assert case.error in str(refused.value)
            assert (db.count("account"), db.count("contact")) == counts
        else:
            result = import_customers(
                engine=db.engine,
                accounts_csv=path if accounts else None,
                contacts_csv=None if accounts else path,
                rejects_dir=tmp_path / "rejects",
            )
            part = result.accounts if accounts else result.contacts
            assert part.inserted == case.imported and part.updated == 0
            rejects = read_rejects(result.rejects_path) if result.rejects_path else []
            assert {int(r["line"]) for r in rejects} == set(case.rejects)
            for reject in rejects:
                assert reject["file"] == str(path)
                assert case.rejects[int(reject["line"])] in reject["reason"]
            table = "account" if accounts else "contact"
            assert db.count(table) == counts[0 if accounts else 1] + case.imported
        assert _snapshot(db) == before  # nothing already stored was changed

    def test_unusual_names_and_addresses_are_stored_safely_and_escaped_in_html(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Emoji and right-to-left text are kept as given, line breaks become spaces, an
        internationalised domain is stored as its A-label; names that look like SQL or HTML
        are stored as text and escaped in the HTML a contact gets."""
        import_customers(
            engine=db.engine,
            accounts_csv=CUSTOMERS / "base_accounts.csv",
            contacts_csv=None,
            rejects_dir=tmp_path,
        )
        for name in (
            "contacts_international.csv",
            "contacts_injection.csv",
            "contacts_header_breakers.csv",
            "contacts_idn.csv",
        ):
            import_customers(
                engine=db.engine,
                accounts_csv=None,
                contacts_csv=CUSTOMERS / name,
                rejects_dir=tmp_path,
            )
        with db.engine.connect() as conn:
            stored = dict(conn.execute(select(CONTACT.c.email, CONTACT.c.name)).tuples().all())
            tables = conn.execute(text("SELECT count(*) FROM contact")).scalar_one()
        script = "<script>alert('x')</script>"
        assert tables == len(stored) == 2 + 4 + 10 + 5
        assert stored["new1@customer1.com"] == "Zoë 🚀 Ng"
        assert stored["maryam@xn--bcher-kva.de"] == "مريم الحسن"
        assert stored["inj1@customer1.com"] == "Robert'); DROP TABLE contact;--"
        assert stored["inj2@customer1.com"] == script
        assert stored["inj5@customer1.com"] == '=HYPERLINK("http://evil.example")'
        assert stored["break1@customer1.com"] == "Ada Lovelace"  # CRLF in a quoted field
        assert stored["break2@customer1.com"] == "Ada Bcc: victim@evil.example"  # one line
        assert stored["break5@customer1.com"] == "Ada Lovelace"  # NEL
        assert stored["break6@customer1.com"] == "Ada Love lace"  # LS, PS
        assert stored["fine1@customer1.com"] == "Ada\u200dLovelace \U0001f469\u200d\U0001f4bb"
        assert stored["fine2@customer1.com"] == "\u05d3\u05e0\u05d4 \u200f(IT)"
        assert stored["fine3@customer1.com"] == "Ada Lovelace"
        for email in ("user", "other", "mixed"):
            assert f"{email}@xn--bcher-kva.example" in stored
        assert "kanji@xn--r8jz45g.xn--zckzah" in stored
        assert all(email.isascii() for email in stored)
        assert not any(unsafe_char(name) for name in stored.values() if name)
        stored_name = stored["inj2@customer1.com"]
        values = substitutions(recipient_values(name=stored_name, email="x", account_name="A"))
        assert values["-name_html-"] == "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt;"
        assert values["-name_text-"] == script
        braces = substitutions(
            recipient_values(name=stored["inj6@customer1.com"], email="x", account_name="A")
        )
        assert braces["-name_html-"] == "{{ 7*7 }} -name_html-"  # data, never a template


# --------------------------------------------------------------------------- campaign YAML


@dataclass(frozen=True)
class YamlCase:
    name: str
    file: str
    old: str | None  # the text replaced in the real file (None: the file becomes ``new``)
    new: str | bytes
    says: str  # what the problem reads, after "<file>:<line>: "
    line: int | None


# The line of `batch_size` in the real campaign.yaml, where the cases below break it.
BATCH_SIZE_LINE = next(
    number
    for number, line in enumerate(
        (ROOT / "config" / "campaign.yaml").read_text(encoding="utf-8").splitlines(), start=1
    )
    if "  batch_size: 1000 " in line
)

YAML_CASES = [
    YamlCase(
        "wrong-type",
        "campaign.yaml",
        "batch_size: 1000 ",
        "batch_size: lots ",
        "sending.batch_size: Input should be a valid integer",
        BATCH_SIZE_LINE,
    ),
    YamlCase(
        "unknown-key",
        "campaign.yaml",
        "  batch_size: 1000 ",
        "  batchsize: 5\n  batch_size: 1000 ",
        "sending.batchsize: unknown key (check its spelling)",
        BATCH_SIZE_LINE,
    ),
    YamlCase(
        "repeated-key",
        "campaign.yaml",
        "  batch_size: 1000 ",
        "  batch_size: 5\n  batch_size: 1000 ",
        f"sending.batch_size: key given twice (lines {BATCH_SIZE_LINE} and {BATCH_SIZE_LINE + 1})",
        BATCH_SIZE_LINE + 1,
    ),
    YamlCase(
        "tab-indent",
        "campaign.yaml",
        "  batch_size: 1000 ",
        "\tbatch_size: 1000 ",
        "not valid YAML: found character '\\t' that cannot start any token",
        BATCH_SIZE_LINE,
    ),
    YamlCase("empty", "targets.yaml", None, "", "expected a mapping of keys", 1),
    YamlCase("a-list", "segments.yaml", None, "- a\n- b\n", "expected a mapping of keys", 1),
    YamlCase(
        "not-utf8", "campaign.yaml", None, b"\xff\xfe\x00", "cannot read: 'utf-8' codec", None
    ),
]


class TestConfigCorpus:
    @pytest.mark.parametrize("case", YAML_CASES, ids=lambda case: case.name)
    def test_a_bad_file_is_named_with_its_line_and_stops_everything(
        self, tmp_path: Path, case: YamlCase
    ) -> None:
        config = tmp_path / "config"
        shutil.copytree(ROOT / "config", config)
        path = config / case.file
        if case.old is None:
            if isinstance(case.new, bytes):
                path.write_bytes(case.new)
            else:
                path.write_text(case.new, encoding="utf-8")
        else:
            original = path.read_text(encoding="utf-8")
            assert case.old in original
            path.write_text(original.replace(case.old, str(case.new), 1), encoding="utf-8")

        with pytest.raises(ConfigError) as refused:
            load_config(config)

        where = f"{path}:{case.line}: " if case.line else f"{path}: "
        assert any(
            str(problem).startswith(where) and case.says in str(problem)
            for problem in refused.value.problems
        ), str(refused.value)


# --------------------------------------------------------------------------- templates


TEMPLATE_CASES = {
    "syntax-error": ("{% if %}oops{% endif %}", "syntax error: Expected an expression"),
    "unclosed-block": ("{% for x in [1] %}{{ x }}", "syntax error: Unexpected end of template"),
    "class-walk": (
        "{{ ''.__class__.__mro__[1].__subclasses__() }}",
        "SecurityError: access to attribute '__class__' of 'str' object is unsafe",
    ),
    "function-globals": (
        "{{ lipsum.__globals__ }}",
        "SecurityError: access to attribute '__globals__'",
    ),
    "format-string": ("{{ '{0.__class__}'.format(1) }}", "SecurityError"),
    "self-reference": ("{{ self.__init__.__globals__ }}", "SecurityError"),
    "huge-range": (
        "{% for i in range(10**9) %}{% endfor %}",
        "OverflowError: Range too big",
    ),
    "misspelt-variable": ("{{ migration_deadlne }}", "'migration_deadlne' is undefined"),
}


class TestTemplateCorpus:
    @pytest.mark.parametrize("case", sorted(TEMPLATE_CASES))
    def test_a_bad_template_is_named_with_its_line_before_anything_renders(
        self, tmp_path: Path, case: str
    ) -> None:
        body, says = TEMPLATE_CASES[case]
        templates = tmp_path / "templates"
        shutil.copytree(ROOT / "templates", templates)
        (templates / "announcement" / "subject.txt").write_text(body, encoding="utf-8")
        config = load_config(ROOT / "config")

        with pytest.raises(TemplateError) as refused:
            check_templates(config, templates)

        [problem] = refused.value.problems
        assert str(problem).startswith("templates/announcement/subject.txt:1: ")
        assert says in problem.reason
        assert problem.variants > 0


# --------------------------------------------------------------------------- Event Webhook


def _events(db: Database) -> list[tuple[str, str]]:
    with db.engine.connect() as conn:
        return [
            tuple(row)
            for row in conn.execute(text("SELECT sg_event_id, event FROM email_event ORDER BY 1"))
        ]


class TestWebhookCorpus:
    def test_bad_bodies_are_refused_and_change_nothing_good_ones_are_stored_once(
        self, db: Database
    ) -> None:
        signer, forger = Signer(), Signer()
        good = json.dumps([event("delivered", "ada@customer1.com", 1)]).encode()
        unknown_types = json.dumps(
            [
                event("teleported", "ada@customer1.com", 2),
                event("open", "'; DROP TABLE email_event;--@x.com", 3, useragent="<b>x</b>"),
            ]
        ).encode()
        bodies = {
            "oversized": (json.dumps([event("open", "a@b.com", 9, pad="x" * 5000)]).encode()),
            "truncated": good[: len(good) // 2],
            "not-an-array": json.dumps(event("open", "a@b.com", 10)).encode(),
            "array-of-strings": b'["open", "click"]',
            "empty": b"",
        }
        with client_for(db, signer.public, max_body_bytes=2000) as client:
            assert client.post(PATH, content=good, headers=signer.headers(good)).status_code == 200
            deadline = time.monotonic() + 120  # a safety net: processing runs after the 200
            while not _events(db) and time.monotonic() < deadline:
                time.sleep(0.02)
            stored = _events(db)
            assert stored == [("evt-delivered-1", "delivered")]
            answers = {}
            for name, body in bodies.items():
                answers[name] = client.post(PATH, content=body, headers=signer.headers(body))
            answers["unsigned"] = client.post(
                PATH, content=good, headers={"Content-Type": "application/json"}
            )
            answers["forged"] = client.post(PATH, content=good, headers=forger.headers(good))
            answers["stale"] = client.post(
                PATH, content=good, headers=signer.headers(good, NOW - 3600)
            )
            tampered = good.replace(b"delivered", b"bounce")
            answers["tampered"] = client.post(PATH, content=tampered, headers=signer.headers(good))
            statuses = {name: answer.status_code for name, answer in answers.items()}
            assert statuses == {
                "oversized": 413,
                "truncated": 400,
                "not-an-array": 400,
                "array-of-strings": 400,
                "empty": 400,
                "unsigned": 403,
                "forged": 403,
                "stale": 403,
                "tampered": 403,
            }
            assert "not JSON" in answers["truncated"].json()["error"]
            assert "JSON array of event objects" in answers["not-an-array"].json()["error"]
            assert answers["stale"].json()["error"] == "timestamp outside the accepted window"
            assert _events(db) == stored  # nothing refused was stored
            assert db.count("webhook_batch") == 1

            for _ in range(3):  # replayed: answered 200, stored once
                reply = client.post(PATH, content=good, headers=signer.headers(good))
                assert reply.status_code == 200
            reply = client.post(PATH, content=unknown_types, headers=signer.headers(unknown_types))
            assert reply.status_code == 200
        events = _events(db)
        assert len(events) == 3
        assert ("evt-teleported-2", "teleported") in events  # kept, acted on by nothing
        assert db.count("suppression") == 0
        with db.engine.connect() as conn:
            email = conn.execute(
                text("SELECT email FROM email_event WHERE sg_event_id = 'evt-open-3'")
            ).scalar_one()
        assert email == "'; drop table email_event;--@x.com"


# --------------------------------------------------------------------------- poisoned events


def _stored(db: Database) -> dict[str, list[tuple[object, ...]]]:
    """Everything an applied event can change: events, suppressions, the ledger."""
    queries = {
        "email_event": "SELECT sg_event_id, event, email FROM email_event ORDER BY 1",
        "suppression": "SELECT email, reason, source FROM suppression ORDER BY 1, 2",
        "delivery": "SELECT id, state FROM delivery ORDER BY 1",
    }
    with db.engine.connect() as conn:
        return {name: [tuple(row) for row in conn.execute(text(q))] for name, q in queries.items()}


class TestPoisonedEventCorpus:
    @pytest.mark.parametrize("poison", POISONS, ids=lambda poison: poison.name)
    def test_a_poison_event_is_kept_with_its_error_and_changes_nothing_else(
        self, db: Database, poison: Poison
    ) -> None:
        """Each poison class in a signed batch beside a good bounce: answered 200, kept as a
        failure with its exact error; what was stored before is unchanged and only the
        bounce's event and suppression are added."""
        signer = Signer()
        earlier = [event("delivered", "ada@customer1.com", 1), event("unsubscribe", "bo@c.com", 2)]
        bounce = event("bounce", "Cy@Customer2.com", 3, reason="550 5.1.1 unknown user")
        batch = [poison.event, bounce]
        with client_for(db, signer.public) as client:
            body = json.dumps(earlier).encode()
            assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200
        before = _stored(db)

        with client_for(db, signer.public) as client:
            body = json.dumps(batch).encode()
            assert client.post(PATH, content=body, headers=signer.headers(body)).status_code == 200

        after = _stored(db)
        assert after["email_event"] == sorted(
            [*before["email_event"], ("evt-bounce-3", "bounce", "cy@customer2.com")]
        )
        assert after["suppression"] == sorted(
            [*before["suppression"], ("cy@customer2.com", "bounce", "sendgrid:bounce")]
        )
        assert after["delivery"] == before["delivery"]
        assert [(row.batch_id, row.position, row.error) for row in list_failures(db.engine)] == [
            (2, 0, poison.error)
        ]
        assert db.count("webhook_batch WHERE processed_at IS NULL") == 0
