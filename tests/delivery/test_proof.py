"""Proof sends: one message per chosen variant to seed addresses, through the configured
transport, never in the ledger or the metrics.

The command under test is :func:`herald.cli.proof.phase_proof`, registered as ``proof`` on a
small Typer app of this file (``herald phase proof`` is wired in ``herald/cli/phase.py``).
"""

from __future__ import annotations

import email
import json
import re
from collections import defaultdict
from email import policy
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import text
from typer.testing import CliRunner

from herald.cli import app
from herald.cli.common import ExitCode
from herald.config import ConfigError, load_config
from herald.delivery.keys import LedgerKey
from herald.delivery.messages import Variant, render
from herald.delivery.proof import NOBODY, PROOF_CATEGORY, PROOF_MARK, stand_ins
from herald.settings import get_settings
from herald.telemetry.event_effects import apply_events
from herald.testing.event_webhook import events_for
from herald.testing.fake_sendgrid import FakeSendGrid
from herald.testing.synthetic import set_sending
from herald.unsubscribe.endpoint import create_app
from herald.unsubscribe.tokens import Subscriber, signer
from tests.support.bases import DAY, config, load_base
from tests.support.environment import Database
from tests.support.http import client_of

pytestmark = pytest.mark.slow(seconds=60)

CAMPAIGN = "modular-migration-2027"
SEEDS = ["qa-one@example.com", "qa-two@example.com"]
CAMPAIGN_TABLES = ("delivery", "send_batch", "send_worker", "email_event", "metric_snapshot")


def proof(*args: str) -> Any:
    """Run ``herald phase proof ARGS`` (the command's result: exit code and output)."""
    return CliRunner().invoke(app, ["phase", "proof", *args])


def counts(db: Database) -> dict[str, int]:
    """Rows in the ledger and the metrics' tables."""
    return {table: db.count(table) for table in CAMPAIGN_TABLES}


def proof_audits(db: Database) -> list[tuple[str, dict[str, Any]]]:
    """The phase.proof entries of the audit log: (phase, detail)."""
    with db.engine.connect() as conn:
        rows = conn.execute(
            text("SELECT phase, detail FROM audit_log WHERE action = 'phase.proof' ORDER BY id")
        ).all()
    return [
        (row.phase, row.detail if isinstance(row.detail, dict) else json.loads(row.detail))
        for row in rows
    ]


def by_request(fake: FakeSendGrid) -> dict[int, list[Any]]:
    """The fake's accepted recipients, grouped by request."""
    grouped: dict[int, list[Any]] = defaultdict(list)
    for record in fake.accepted:
        grouped[record.request_no].append(record)
    return dict(grouped)


def expected_subject(variant: Variant) -> str:
    """The variant's real subject, marked as a proof."""
    return PROOF_MARK + render(load_config(get_settings().config_dir), variant).subject


@pytest.mark.usefixtures("fast_config")
class TestThroughSendGrid:
    def test_one_request_per_variant_to_every_seed_and_no_ledger_row(
        self, db: Database, tmp_path: Path, sendgrid_env: FakeSendGrid
    ) -> None:
        """A proof of 2 roles x 2 locales is 4 valid requests, each to both seeds, subject marked
        and in the variant's language, with no ledger row, no ledger key and one audit entry."""
        fake = sendgrid_env
        load_base(db, tmp_path)
        before = counts(db)

        result = proof(
            "announcement",
            "--to",
            ",".join(SEEDS),
            "--segment",
            "standard",
            "--role",
            "technical,executive",
            "--locale",
            "en",
            "--locale",
            "de",
            "--as-of",
            DAY.isoformat(),
        )

        assert result.exit_code == ExitCode.OK, result.output
        assert len(fake.requests) == 4 and all(r.valid and r.status == 202 for r in fake.requests)
        requests = by_request(fake)
        assert len(requests) == 4
        seen = set()
        for records in requests.values():
            assert sorted(r.email for r in records) == SEEDS
            first = records[0]
            language = first.headers["Content-Language"]
            variants = [
                Variant("announcement", "standard", role, language)
                for role in ("technical", "executive")
            ]
            assert first.subject in {expected_subject(v) for v in variants}
            assert all(r.subject == first.subject for r in records)
            assert "List-Unsubscribe" in first.headers
            for record in records:
                key = record.custom_args["herald_key"]
                assert key.startswith("proof:") and LedgerKey.parse(key) is None
                assert record.categories == [PROOF_CATEGORY]
            seen.add((language, first.text))
        assert {language for language, _ in seen} == {"en", "de"}
        assert expected_subject(Variant("announcement", "standard", "executive", "de")) != (
            expected_subject(Variant("announcement", "standard", "executive", "en"))
        )
        assert counts(db) == before
        ((phase, detail),) = proof_audits(db)
        assert phase == "announcement"
        assert detail["seeds"] == 2 and detail["to"] == ["q***@example.com"] * 2
        assert len(detail["variants"]) == 4 and detail["accepted"] == 4
        assert not any(seed in json.dumps(detail) for seed in SEEDS)
        assert "4 variant(s)" in result.output

    def test_the_events_of_a_proof_touch_no_ledger_row_and_no_metric(
        self, db: Database, sendgrid_env: FakeSendGrid
    ) -> None:
        """SendGrid's events for a proof carry no ledger key: stored with no delivery, they
        settle nothing and count in no metric."""
        fake = sendgrid_env
        result = proof("preview", "--to", SEEDS[0], "--role", "executive")
        assert result.exit_code == ExitCode.OK, result.output
        events = [event for record in fake.accepted for event in events_for(record, 1_800_000_000)]
        assert events and all(LedgerKey.parse(str(e.get("herald_key", ""))) is None for e in events)

        with db.engine.begin() as conn:
            done = apply_events(conn, events=events)

        assert (done.stored, done.settled, done.failed) == (len(events), 0, 0)
        with db.engine.connect() as conn:
            linked = conn.execute(
                text("SELECT count(*) FROM email_event WHERE delivery_id IS NOT NULL")
            ).scalar_one()
        assert linked == 0 and db.count("delivery") == 0

    def test_a_failed_request_is_reported_and_the_other_variants_still_go(
        self, db: Database, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """When SendGrid fails one variant's request, the others are sent and the command
        exits 3 naming the one that failed."""
        fake = sendgrid_env
        set_sending(fast_config, max_attempts=1)
        fake.script("500")

        result = proof("preview", "--to", SEEDS[0], "--locale", "en,fr", "--role", "executive")

        assert result.exit_code == ExitCode.PARTIAL, result.output
        assert [r.status for r in fake.requests] == [500, 202]
        assert "failed:" in result.output and "HTTP 500" in result.output
        ((_, detail),) = proof_audits(db)
        assert (detail["accepted"], detail["failed"]) == (1, 1)


class TestSeedsAndVariants:
    def test_seeds_come_from_the_config_when_to_is_absent(
        self, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """Without --to the proof goes to campaign.yaml's proof.seeds."""
        seeds = ["Reviewer@Example.COM", "l10n@example.org"]
        path = fast_config / "campaign.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data["proof"] = {"seeds": seeds}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

        result = proof("preview", "--role", "technical")

        assert result.exit_code == ExitCode.OK, result.output
        assert sorted(sendgrid_env.accepted_emails()) == [
            "l10n@example.org",
            "reviewer@example.com",
        ]
        assert len(sendgrid_env.requests) == 1

    def test_config_seeds_are_validated_and_canonical(self, config_dir: Path) -> None:
        """proof.seeds holds canonical addresses; an invalid or repeated one fails config check."""
        path = config_dir / "campaign.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        for seeds, says in (
            (["qa@example.com", "not an address"], "not an address Herald can send to"),
            (["QA@Example.com", "qa@example.com"], "listed twice: qa@example.com"),
        ):
            data["proof"] = {"seeds": seeds}
            path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
            with pytest.raises(ConfigError) as raised:
                load_config(config_dir)
            assert "proof.seeds" in str(raised.value) and says in str(raised.value)
        data["proof"] = {"seeds": ["QA@Example.com"]}
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
        assert load_config(config_dir).campaign.proof.seeds == ["qa@example.com"]

    def test_the_sunset_proof_sends_each_notice_asked_with_its_days_left(
        self, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """--notice picks sunset notice kinds (T-7, T-0), each with its own count of days; without
        it every notice of notices.offsets_days goes."""
        fake = sendgrid_env
        one = ["--to", SEEDS[0], "--segment", "standard", "--role", "executive"]

        picked = proof("sunset", *one, "--notice", "T-7,t-0")
        assert picked.exit_code == ExitCode.OK, picked.output
        subjects = sorted(str(r.subject) for r in fake.accepted)
        assert subjects == sorted(
            expected_subject(Variant("sunset", "standard", "executive", "en", days))
            for days in (0, 7)
        )
        assert all(s.startswith(PROOF_MARK) for s in subjects)

        every = proof("sunset", *one)
        assert every.exit_code == ExitCode.OK, every.output
        offsets = load_config(fast_config).campaign.notices.offsets_days
        assert len(fake.requests) == 2 + len(offsets)


class TestStandIns:
    def test_values_come_from_a_contact_of_the_variants_segment_and_role_else_placeholders(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A variant is filled from the first audience contact of its segment and role (of its
        locale when there is one), and from placeholders where no segmentation exists."""
        variants = [
            Variant("announcement", segment, role, locale)
            for segment in ("early_adopter", "standard", "conservative")
            for role in ("executive", "technical", "other")
            for locale in ("en", "de")
        ]
        assert stand_ins(db.engine, config(), "announcement", variants, DAY) == {}

        loaded = load_base(db, tmp_path)
        found = stand_ins(db.engine, loaded, "announcement", variants, DAY)

        assert found
        with db.engine.connect() as conn:
            for (segment, role, locale), stand_in in found.items():
                row = conn.execute(
                    text(
                        "SELECT c.role, c.locale, s.segment FROM contact c "
                        "JOIN segment_assignment s ON s.account_id = c.account_id "
                        "WHERE c.id = :id"
                    ),
                    {"id": stand_in.contact_id},
                ).one()
                assert (row.segment, row.role) == (segment, role)
                same_language = conn.execute(
                    text(
                        "SELECT count(*) FROM contact c "
                        "JOIN account a ON a.id = c.account_id "
                        "JOIN segment_assignment s ON s.account_id = c.account_id "
                        "WHERE s.segment = :segment AND c.role = :role AND c.locale LIKE :language "
                        "AND a.lifecycle = 'active' AND a.migration_state <> 'migrated'"
                    ),
                    {"segment": segment, "role": role, "language": f"{locale}%"},
                ).scalar_one()
                if same_language and locale == "de":  # "en" is also every other's fallback
                    assert str(row.locale).startswith("de")
                assert stand_in.describe().startswith("contact ")


class TestThroughTheOutbox:
    def test_eml_files_go_to_the_proofs_folder_with_a_link_that_unsubscribes_nobody(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """The outbox writes one .eml per variant per seed under var/proofs, each with
        List-Unsubscribe, whose one-click POST changes nothing (its token names no contact)."""
        loaded = load_base(db, tmp_path, accounts=40)

        result = proof(
            "announcement",
            "--to",
            ",".join(SEEDS),
            "--segment",
            "conservative",
            "--role",
            "executive",
            "--locale",
            "en,fr",
            "--as-of",
            DAY.isoformat(),
        )

        assert result.exit_code == ExitCode.OK, result.output
        assert not (herald_env / "outbox").exists()
        files = sorted((herald_env / "proofs" / CAMPAIGN).glob("*/*.eml"))
        assert len(files) == 4
        mails = [email.message_from_bytes(f.read_bytes(), policy=policy.default) for f in files]
        assert sorted(str(m["To"]).rpartition("<")[2].rstrip(">") for m in mails) == sorted(
            SEEDS * 2
        )
        assert {str(m["Content-Language"]) for m in mails} == {"en", "fr"}
        for mail in mails:
            assert str(mail["Subject"]).startswith(PROOF_MARK)
            assert LedgerKey.parse(str(mail["X-Herald-Key"])) is None
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        url = re.search(r"<(https://[^>]+)>", str(mails[0]["List-Unsubscribe"]))
        assert url is not None
        token = url.group(1).rpartition("/")[2]
        signing = signer(get_settings())
        assert signing.read(token) == Subscriber(CAMPAIGN, NOBODY, "announcement")
        with client_of(create_app(db.engine, signing, loaded.campaign)) as client:
            answer = client.post(f"/unsubscribe/{token}", data={"List-Unsubscribe": "One-Click"})
        assert answer.status_code == 200
        assert (db.count("suppression"), db.count("delivery"), db.count("send_batch")) == (0, 0, 0)
        assert len(proof_audits(db)) == 1
        assert "values from" in result.output and str(herald_env / "proofs") in result.output


@pytest.mark.usefixtures("fast_config")
class TestNothingSent:
    @pytest.mark.parametrize(
        ("args", "says"),
        [
            (["--to", "qa-one@example.com,not an address"], "'not an address'"),
            (["--to", SEEDS[0], "--locale", "en,xx"], "allowed: en, de, fr, es, ja, pt-BR"),
            (
                ["--to", SEEDS[0], "--segment", "standard"],
                "'standard' is not in the preview audience (allowed: early_adopter)",
            ),
            (["--to", SEEDS[0], "--role", "ceo"], "allowed: executive, technical"),
            (["--to", SEEDS[0], "--notice", "T-30"], "sunset phase only"),
        ],
        ids=["bad-seed", "unknown-locale", "segment-not-in-phase", "unknown-role", "notice"],
    )
    def test_bad_input_exits_2_and_sends_nothing(
        self,
        db: Database,
        sendgrid_env: FakeSendGrid,
        args: list[str],
        says: str,
    ) -> None:
        """A bad seed, locale, segment, role or notice exits 2 naming it (and what is allowed),
        and sends nothing."""
        result = proof("preview", *args)

        assert result.exit_code == ExitCode.INVALID, result.output
        assert says in result.output and "Nothing was sent." in result.output
        assert sendgrid_env.requests == [] and proof_audits(db) == []

    def test_no_seeds_anywhere_exits_2_saying_how_to_give_them(
        self, sendgrid_env: FakeSendGrid, fast_config: Path
    ) -> None:
        """Without --to and without proof.seeds in the config, the proof exits 2 and says how to
        give seeds."""
        path = fast_config / "campaign.yaml"
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
        data.pop("proof", None)
        path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")

        result = proof("preview")

        assert result.exit_code == ExitCode.INVALID, result.output
        assert "--to" in result.output and "proof.seeds" in result.output
        assert sendgrid_env.requests == []

    def test_a_broken_template_stops_the_proof_before_anything_is_sent(
        self, db: Database, sendgrid_env: FakeSendGrid, templates_dir: Path
    ) -> None:
        """Templates are checked first: a broken one exits 2 naming it, and nothing is sent."""
        (templates_dir / "preview" / "subject.txt").write_text("{{ no_such_value }}\n")

        result = proof("preview", "--to", SEEDS[0])

        assert result.exit_code == ExitCode.INVALID, result.output
        assert "preview/subject.txt" in result.output and "Nothing was sent." in result.output
        assert sendgrid_env.requests == [] and proof_audits(db) == []
