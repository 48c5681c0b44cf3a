"""The phase flow on a real Prefect server, through the outbox: dry runs, sends, reruns."""

from __future__ import annotations

import email
import json
import re
from collections import Counter
from email import policy
from pathlib import Path

import pytest
from prefect.artifacts import Artifact
from sqlalchemy import text
from typer.testing import CliRunner

from flows.send_phase import send_phase
from herald.cli.app import app
from herald.delivery.messages import TemplateError, check_templates
from tests.support.bases import (
    DAY,
    config,
    eligible,
    ledger_emails,
    load_base,
    some_contacts,
    suppress,
)
from tests.support.environment import Database

pytestmark = pytest.mark.usefixtures("prefect_server")
OUTBOX = Path("outbox/modular-migration-2027")


def index_lines(var: Path, phase: str) -> list[dict[str, object]]:
    path = var / OUTBOX / phase / "index.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


class TestOutboxPhase:
    def test_phase_2_reaches_every_eligible_contact_once_and_a_rerun_sends_none(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """Every eligible contact gets one .eml; suppressed and churned get none; rerun: 0."""
        loaded = load_base(db, tmp_path, accounts=400)
        suppressed = some_contacts(db, 5, offset=50)
        suppress(db, suppressed)
        expected = eligible(db, loaded, "announcement")

        summary = send_phase(phase="announcement", as_of=DAY, send=True, window=False)

        lines = index_lines(herald_env, "announcement")
        sent = Counter(str(line["email"]) for line in lines)
        assert set(sent) == expected and set(sent.values()) == {1}
        assert not set(suppressed) & set(sent)
        assert summary.delivery.accepted == summary.planned_new == len(expected)
        assert summary.delivery.requests == summary.delivery.batches == -(-len(expected) // 1000)
        assert summary.ledger["accepted"] == len(expected)
        files = sorted((herald_env / OUTBOX / "announcement").glob("*.eml"))
        assert len(files) == len(expected)
        message = email.message_from_bytes(files[0].read_bytes(), policy=policy.default)
        assert message["X-Herald-Key"].startswith("modular-migration-2027/announcement/")
        assert message.get_body(("html",)) is not None
        assert message.get_body(("plain",)) is not None

        # Contacts without a time zone are sent in their region's, and reported, not dropped.
        with db.engine.connect() as conn:
            from sqlalchemy import text

            fallbacks = conn.execute(
                text(
                    "SELECT a.region, d.timezone FROM delivery d JOIN contact c "
                    "ON c.id = d.contact_id JOIN account a ON a.id = c.account_id "
                    "WHERE coalesce(c.timezone, '') = ''"
                )
            ).all()
        regions = loaded.campaign.delivery_window.region_timezones
        assert fallbacks and summary.timezone_fallbacks == len(fallbacks)
        assert all(zone == regions[region] for region, zone in fallbacks)

        rerun = send_phase(phase="announcement", as_of=DAY, send=True, window=False)

        assert (rerun.planned_new, rerun.delivery.accepted, rerun.delivery.requests) == (0, 0, 0)
        assert len(index_lines(herald_env, "announcement")) == len(lines)
        # Nothing changed since the plan: the rerun reused it, and its count (the stamp's).
        assert rerun.plan_reused and not summary.plan_reused
        assert (rerun.audience, rerun.audience_total) == (summary.audience, summary.audience_total)
        assert rerun.ledger == summary.ledger

    def test_no_message_goes_to_a_churned_or_migrated_account(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """The demo base has churned and migrated accounts: none of their contacts is sent."""
        load_base(db, tmp_path, accounts=400)
        send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        with db.engine.connect() as conn:
            from sqlalchemy import text

            excluded = set(
                conn.execute(
                    text(
                        "SELECT c.email FROM contact c JOIN account a ON a.id = c.account_id "
                        "WHERE a.lifecycle = 'churned' OR a.migration_state = 'migrated'"
                    )
                ).scalars()
            )
        sent = {str(line["email"]) for line in index_lines(herald_env, "announcement")}
        assert excluded and not excluded & sent

    def test_a_dry_run_counts_and_renders_samples_but_sends_nothing(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """Counts by segment and role add up to the audience; samples exist; ledger empty."""
        loaded = load_base(db, tmp_path)
        summary = send_phase(phase="announcement", as_of=DAY)

        assert summary.dry_run
        assert summary.audience_total == len(eligible(db, loaded, "announcement"))
        assert sum(int(row["contacts"]) for row in summary.audience) == summary.audience_total
        assert {(row["segment"], row["role"]) for row in summary.audience} >= {
            ("standard", "executive"),
            ("conservative", "technical"),
        }
        assert db.count("delivery") == 0
        assert not (herald_env / "outbox").exists()
        assert summary.samples
        for sample in summary.samples:
            html = Path(sample["html"]).read_text(encoding="utf-8")
            assert "<html" in html.lower() and "-greeting_html-" not in html
            # The sample names its contact masked, never the address itself.
            assert re.fullmatch(r"[^@]?\*\*\*@[^@]+", sample["contact"]), sample["contact"]
        artifact = Artifact.get("phase-announcement")
        assert artifact is not None and "dry run: nothing was sent" in str(artifact.data)
        assert "@" not in str(artifact.data)

    def test_phase_1_and_2_go_to_their_own_audiences(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """The preview reaches early adopters' executives and engineers only."""
        loaded = load_base(db, tmp_path)
        send_phase(phase="preview", as_of=DAY, send=True, window=False)
        sent = {str(line["email"]) for line in index_lines(herald_env, "preview")}
        assert sent == eligible(db, loaded, "preview")
        assert {line["variant"]["segment"] for line in index_lines(herald_env, "preview")} == {  # type: ignore[index]
            "early_adopter"
        }


class TestTemplateFailures:
    def test_an_undefined_variable_fails_the_check_and_the_phase_sends_nothing(
        self, db: Database, tmp_path: Path, templates_dir: Path, herald_env: Path
    ) -> None:
        """templates check names the template and the variable; the send plans nothing."""
        load_base(db, tmp_path)
        body = templates_dir / "announcement" / "body.txt"
        source = body.read_text(encoding="utf-8")
        body.write_text(
            source.replace(
                "{% endblock %}\n", "Deadline: {{ migration_deadlne }}\n{% endblock %}\n"
            ),
            encoding="utf-8",
        )

        with pytest.raises(TemplateError) as raised:
            check_templates(config(), templates_dir)
        assert "announcement/body.txt" in str(raised.value)
        assert "'migration_deadlne' is undefined" in str(raised.value)

        with pytest.raises(TemplateError):
            send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        assert db.count("delivery") == 0
        assert not (herald_env / "outbox").exists()

        result = CliRunner().invoke(
            app, ["phase", "send", "announcement", "--send", "--ignore-window"]
        )
        assert result.exit_code == 2
        assert "migration_deadlne" in result.output and "Nothing was sent" in result.output
        assert db.count("delivery") == 0


class TestPreviewCommand:
    def test_preview_shows_the_message_and_writes_the_html(
        self, db: Database, tmp_path: Path
    ) -> None:
        """An eligible contact: the subject and text body, and the HTML file when asked."""
        loaded = load_base(db, tmp_path)
        contact = sorted(eligible(db, loaded, "announcement"))[0]
        html = tmp_path / "preview.html"
        result = CliRunner().invoke(
            app,
            [
                "preview",
                "announcement",
                "--contact",
                contact.upper(),
                "--html",
                str(html),
                "--as-of",
                DAY.isoformat(),
            ],
        )
        assert result.exit_code == 0, result.output
        assert "Subject: " in result.output and "would receive this message" in result.output
        assert "<html" in html.read_text(encoding="utf-8").lower()

    def test_preview_shows_the_contacts_language_and_a_reviewer_can_choose_another(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A contact of locale de-AT: German (the campaign's de), said so; --locale ja shows
        the same message in Japanese; a locale the campaign does not have is exit 2."""
        loaded = load_base(db, tmp_path)
        contact = sorted(eligible(db, loaded, "announcement"))[0]
        with db.engine.begin() as conn:
            conn.execute(
                text("UPDATE contact SET locale = 'de-AT' WHERE email = :e"), {"e": contact}
            )
        command = ["preview", "announcement", "--contact", contact, "--as-of", DAY.isoformat()]
        german = CliRunner().invoke(app, command, env={"COLUMNS": "200"})
        assert german.exit_code == 0, german.output
        assert "Language: de (the contact's locale is de-AT)" in german.output
        assert "Guten Tag" in german.output and "locale de" in german.output
        japanese = CliRunner().invoke(app, [*command, "--locale", "ja"], env={"COLUMNS": "200"})
        assert japanese.exit_code == 0, japanese.output
        assert (
            "Language: ja (chosen with --locale; the contact's locale is de-AT)" in japanese.output
        )
        assert "様" in japanese.output and "Guten Tag" not in japanese.output
        unknown = CliRunner().invoke(app, [*command, "--locale", "it"])
        assert unknown.exit_code == 2
        assert "not one of the campaign's locales" in unknown.output

    def test_preview_says_why_a_contact_would_not_receive_it(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Suppressed, already sent, wrong segment: each reason printed, exit code 3."""
        loaded = load_base(db, tmp_path)
        suppressed = some_contacts(db, 1, offset=3)[0]
        suppress(db, [suppressed], reason="bounce")
        send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        already = ledger_emails(db, "announcement", "accepted")[0]
        outsider = sorted(eligible(db, loaded, "announcement") - eligible(db, loaded, "preview"))[0]
        runner = CliRunner()
        cases = {
            suppressed: "address suppressed (bounce)",
            already: "already sent",
            "nobody@nowhere.example": "no contact has this address",
        }
        for address, reason in cases.items():
            result = runner.invoke(
                app, ["preview", "announcement", "--contact", address, "--as-of", DAY.isoformat()]
            )
            assert result.exit_code == 3, result.output
            assert reason in result.output
        result = runner.invoke(
            app, ["preview", "preview", "--contact", outsider, "--as-of", DAY.isoformat()]
        )
        assert result.exit_code == 3
        assert "is not in the preview audience" in result.output


class TestPhaseCommands:
    def test_phase_send_is_dry_by_default_and_sends_with_send(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Without --send nothing is planned; with it the outbox holds the phase."""
        loaded = load_base(db, tmp_path)
        runner = CliRunner()
        dry = runner.invoke(app, ["phase", "send", "preview", "--as-of", DAY.isoformat()])
        assert dry.exit_code == 0, dry.output
        assert "Dry run" in dry.output and db.count("delivery") == 0

        real = runner.invoke(
            app,
            ["phase", "send", "preview", "--send", "--ignore-window", "--as-of", DAY.isoformat()],
        )
        assert real.exit_code == 0, real.output
        count = len(eligible(db, loaded, "preview"))
        assert f"sent {count} in 1 request(s)" in real.output
        assert "Outbox:" in real.output

        paused = runner.invoke(app, ["phase", "pause", "preview", "--reason", "hold"])
        assert paused.exit_code == 0
        status = runner.invoke(app, ["phase", "status", "preview"])
        assert "Paused: hold" in status.output
        assert re.search(rf"accepted\s*│\s*{count}\s*│", status.output)
        resumed = runner.invoke(app, ["phase", "resume", "preview"])
        assert "resumed (was paused: hold)" in resumed.output

    def test_an_unknown_phase_is_refused(self) -> None:
        """A typo in the phase name: exit 2 and the list of phases."""
        result = CliRunner().invoke(app, ["phase", "send", "anouncement"])
        assert result.exit_code == 2
        words = " ".join(result.output.replace("│", " ").split())
        assert (
            "'anouncement' is not a phase (one of preview, announcement, deprecation, sunset)"
            in words
        )
