"""`herald demo` end to end, once: the base, the rehearsal of the whole campaign, and the
weekly leadership reports it leaves (the last one opened in headless Chromium).

The demo runs once for the class, on its own SQLite database and var/ folder (every step it
runs is tested on both databases on its own, and the rehearsal has its own Postgres test).
"""

from __future__ import annotations

import csv
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from herald.cli import app
from herald.config import load_config
from herald.delivery.messages import Variant
from herald.delivery.messages import render as render_variant
from herald.settings import get_settings
from tests.support.chromium import render, screenshot
from tests.support.environment import CHROMIUM, ROOT, Database
from tests.support.html import EMAIL, addresses
from tests.support.i18n import english_fragments

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow(seconds=160)]


@dataclass(frozen=True)
class DemoRun:
    output: str
    exit_code: int
    db: Database
    var: Path
    stored: dict[str, int]  # rows per table after the first run
    again: str  # the output of a second `herald demo` on the same var/ and database
    again_exit_code: int

    @property
    def last_report(self) -> Path:
        found = re.search(r"^Report: (.+)$", self.output, re.M)
        assert found, self.output[-2000:]
        return Path(found.group(1).strip())


@pytest.fixture(scope="class")
def demo(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoRun]:
    root = tmp_path_factory.mktemp("demo")
    url = f"sqlite:///{root / 'herald.db'}"
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("HERALD_VAR_DIR", str(root / "var"))
        patch.setenv("HERALD_DATABASE_URL", url)
        patch.setenv("HERALD_CONFIG_DIR", str(ROOT / "config"))
        patch.setenv("HERALD_TEMPLATES_DIR", str(ROOT / "templates"))
        patch.delenv("SENDGRID_API_KEY", raising=False)
        patch.delenv("HERALD_TRANSPORT", raising=False)
        get_settings.cache_clear()
        command = ["demo", "--accounts", "60", "--as-of", "2026-11-24"]
        result = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        db = Database("sqlite", url)
        stored = {table: db.count(table) for table in STORED}
        again = CliRunner().invoke(app, command, env={"COLUMNS": "300"})
        get_settings.cache_clear()
    yield DemoRun(
        result.output,
        result.exit_code,
        db,
        root / "var",
        stored,
        again.output,
        again.exit_code,
    )


# What a second demo on the same database must leave exactly as the first left it.
STORED = (
    "account",
    "account WHERE migration_state = 'migrated'",
    "contact",
    "delivery",
    "delivery WHERE state = 'accepted'",
    "email_event",
    "suppression",
    "adoption_event",
    "support_ticket",
    "satisfaction_response",
    "performance_report",
    "report_delivery WHERE state = 'accepted'",
)


def _segments(output: str) -> list[str]:
    """The lines of the segment table and the assigned-accounts check, as printed."""
    start = output.index("Segments as of")
    end = output.index("active accounts.", start)
    return output[start:end].splitlines()


def on_demo(demo: DemoRun, *args: str) -> tuple[int, str]:
    """Run a `herald` command against the demo's database and var/ (exit code, output)."""
    env = {
        "HERALD_VAR_DIR": str(demo.var),
        "HERALD_DATABASE_URL": demo.db.url,
        "HERALD_CONFIG_DIR": str(ROOT / "config"),
        "COLUMNS": "300",
    }
    get_settings.cache_clear()
    try:
        result = CliRunner().invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()
    return result.exit_code, result.output


class TestDemo:
    def test_segment_counts_add_up_and_every_message_is_reported(self, demo: DemoRun) -> None:
        """`herald demo` imports the base, segments it, rehearses, and prints what it sent."""
        assert demo.exit_code == 0, demo.output[-3000:]
        db = demo.db
        active = db.count("account WHERE lifecycle = 'active'")
        assert db.count("account") == 60
        assert db.count("contact") == 180
        assert f"Assigned {active} = {active} active accounts." in demo.output
        assert "Rollout priority matrix" in demo.output
        words = " ".join(demo.output.replace("│", " ").split())
        for message in (
            "preview",
            "announcement",
            "deprecation",
            "sunset-t90@2027-09-30",
            "sunset-t0@2027-09-30",
        ):
            sent = db.count(f"delivery WHERE message = '{message}' AND state = 'accepted'")
            assert sent > 0
            assert f" {message} {sent} " in words
        assert "Outbox: " in demo.output and "Ledger: " in demo.output

    def test_every_customer_message_offers_one_click_unsubscribe_and_no_notice_is_lost(
        self, demo: DemoRun
    ) -> None:
        """Every customer .eml: List-Unsubscribe (https and mailto), the One-Click POST
        header, the link in both footers, the postal address; no notice expired unsent with
        nothing later for that contact, and the summary lists each notice with its days."""
        postal = "100 Example Avenue, Suite 400, Springfield, IL 62701, USA"
        outbox = demo.var / "outbox" / "modular-migration-2027"
        mails = [m for m in outbox.glob("*/*.eml") if not m.parent.name.startswith("weekly-")]
        assert len(mails) == demo.db.count("delivery WHERE state = 'accepted'")
        for path in mails:
            mail = BytesParser(policy=policy.strict).parsebytes(path.read_bytes())
            found = re.fullmatch(
                r"<(https://[^>]+)>, <mailto:[^>]+>", str(mail["List-Unsubscribe"])
            )
            assert found, path
            assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
            text = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
            assert found.group(1) in text and f'href="{found.group(1)}"' in html, path
            assert postal in text and postal in html
        assert "never sent" not in demo.output
        assert (
            demo.db.count(
                "delivery d WHERE d.state = 'expired' AND d.message LIKE 'sunset-t%' "
                "AND NOT EXISTS (SELECT 1 FROM delivery l "
                "WHERE l.contact_id = d.contact_id AND l.id > d.id "
                "AND l.message LIKE 'sunset-t%' AND l.state IN ('planned', 'accepted'))"
            )
            == 0
        )
        words = " ".join(demo.output.replace("│", " ").split())
        assert "Deadline notices" in words and "sunset-t90@2027-09-30 standard" in words

    def test_every_customer_reads_their_messages_in_their_language(self, demo: DemoRun) -> None:
        """Every .eml to a contact whose locale is de, fr, es, ja or pt-BR: lang and
        Content-Language say it, its subject is not the English one, and no sentence of the
        English catalog is left in its text part."""
        config = load_config(ROOT / "config")
        fragments = english_fragments()
        outbox = demo.var / "outbox" / "modular-migration-2027"
        with demo.db.engine.connect() as conn:
            locale_of = dict(
                conn.execute(
                    text(
                        "SELECT d.id, c.locale FROM delivery d "
                        "JOIN contact c ON c.id = d.contact_id"
                    )
                ).all()
            )
        languages: dict[str, int] = {}
        for index in outbox.glob("*/index.jsonl"):
            if index.parent.name.startswith("weekly-"):
                continue
            for line in index.read_text().splitlines():
                entry = json.loads(line)
                locale = locale_of[entry["delivery_id"]]
                mail = BytesParser(policy=policy.default).parsebytes(
                    (index.parent / entry["file"]).read_bytes()
                )
                html = mail.get_body(("html",)).get_content()  # type: ignore[union-attr]
                plain = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
                declared = re.search(r'<html lang="([^"]+)">', html)
                assert declared and declared.group(1) == mail["Content-Language"], index
                if locale not in ("de", "fr", "es", "ja", "pt-BR"):
                    assert mail["Content-Language"] == "en"
                    continue
                languages[locale] = languages.get(locale, 0) + 1
                assert mail["Content-Language"] == locale, (entry["file"], locale)
                english = render_variant(
                    config, Variant(**{**entry["variant"], "locale": "en"})
                ).subject
                assert english not in str(mail["Subject"]), entry["file"]
                left = [fragment for fragment in fragments if fragment in plain]
                assert left == [], (entry["file"], left)
        assert set(languages) == {"de", "fr", "es", "ja", "pt-BR"}, languages

    def test_a_second_demo_on_the_same_database_works_and_changes_nothing(
        self, demo: DemoRun
    ) -> None:
        """`make demo` twice: both exit 0 with the same segment counts; the second finds the
        campaign rehearsed (nothing new sent, no account migrated again, no row added)."""
        assert demo.again_exit_code == 0, demo.again[-3000:]
        assert _segments(demo.again) == _segments(demo.output)
        assert {table: demo.db.count(table) for table in STORED} == demo.stored
        assert "Nothing new to send: this campaign was rehearsed on this database before" in (
            demo.again
        )
        assert "0 account(s) migrated" in demo.again

    def test_a_report_every_week_and_the_last_one_is_printed(self, demo: DemoRun) -> None:
        """One report per simulated Monday (the week to Sunday); the demo ends with the path
        of the last one, which shows at least 6 weeks of trend."""
        reports = sorted((demo.var / "reports").iterdir())
        assert len(reports) >= 60  # Jan 2027 to Apr 2028, every week
        assert {re.sub(r"\d", "d", p.name) for p in reports} == {"dddd-dd-dd"}
        assert demo.last_report == reports[-1] / "weekly-report.html"
        assert f"Weekly reports: {len(reports)}; the last one:" in demo.output
        html = demo.last_report.read_text(encoding="utf-8")
        weeks = re.findall(r"<tr>\s*<td[^>]*>(\d{4}-\d{2}-\d{2})</td>", html)
        assert len(weeks) >= 6
        assert "12 week(s) of trend" in html

    def test_no_address_outside_the_at_risk_section(self, demo: DemoRun) -> None:
        """Checked on every report of the rehearsal; some weeks list at-risk accounts, whose
        contacts' addresses appear in that section only (outside it: the staff on the
        escalation path, from campaign.yaml)."""
        listed = 0
        staff = {
            step.contact for step in load_config(ROOT / "config").campaign.report.escalation.path
        }
        for report in sorted((demo.var / "reports").iterdir()):
            inside, outside = addresses((report / "weekly-report.html").read_text("utf-8"))
            assert outside <= staff, report.name  # the escalation path's people only
            listed += len(inside)
            assert not EMAIL.findall((report / "weekly-report.md").read_text("utf-8"))
        assert listed > 0

    def test_leadership_got_each_report_once_through_the_outbox(self, demo: DemoRun) -> None:
        reports = sorted(p.name for p in (demo.var / "reports").iterdir())
        assert demo.db.count("report_delivery WHERE state = 'accepted'") == 3 * len(reports)
        folder = demo.var / "outbox" / "modular-migration-2027" / f"weekly-{reports[-1]}"
        mails = sorted(folder.glob("*.eml"))
        assert len(mails) == 3
        mail = BytesParser(policy=policy.default).parsebytes(mails[0].read_bytes())
        body = mail.get_body(("html",))
        assert body is not None
        cids = set(re.findall(r'src="cid:([^"]+)"', body.get_content()))
        inline = {
            part["Content-ID"].strip("<>")
            for part in mail.walk()
            if part.get_content_type() == "image/png"
        }
        assert len(cids) == 4 and cids == inline

    def test_every_report_and_its_subject_say_it_is_a_rehearsal(self, demo: DemoRun) -> None:
        reports = sorted((demo.var / "reports").iterdir())
        for report in reports:
            html = (report / "weekly-report.html").read_text("utf-8")
            assert 'id="mark"' in html and "REHEARSAL: SYNTHETIC DATA" in html, report.name
            assert "REHEARSAL" in (report / "weekly-report.md").read_text("utf-8")
        outbox = demo.var / "outbox" / "modular-migration-2027"
        subjects = {
            BytesParser(policy=policy.default).parsebytes(mail.read_bytes())["Subject"]
            for mail in outbox.glob("weekly-*/*.eml")
        }
        assert len(subjects) == len(reports)
        assert all(subject.strip().startswith("[Rehearsal] ") for subject in subjects), subjects
        # And every customer message the rehearsal wrote to the outbox.
        customers = [
            json.loads(line)["subject"]
            for index in outbox.glob("*/index.jsonl")
            if not index.parent.name.startswith("weekly-")
            for line in index.read_text(encoding="utf-8").splitlines()
        ]
        assert len(customers) > 100
        assert all(subject.startswith("[Rehearsal] ") for subject in customers)

    def test_the_verdict_follows_the_trajectories(self, demo: DemoRun) -> None:
        """Before the first send: 'not started' and no chart. The first week migration stands
        10 points above its trajectory: migration on track. Every week every dated target
        (migration, reach) stands on its trajectory: an 'on track' headline."""
        reports = sorted((demo.var / "reports").iterdir())
        first = reports[0]
        assert _headline(first) == "not started"
        # During the preview, before migration and reach are judged, early-adopter
        # engagement (judged from the preview) decides, not the guardrails.
        preview = [r for r in reports if "2027-01-12" <= r.name < "2027-02-09"]
        assert preview
        assert all(_headline(r) == _status(r, "Early adopter engagement") for r in preview)
        assert "<img" not in (first / "weekly-report.html").read_text("utf-8")
        snapshots = _snapshots(demo.db)
        above = [
            r
            for r in reports
            if r.name >= "2027-02-09"  # judged from the announcement
            and snapshots[r.name]["migration_rate"]
            >= snapshots[r.name]["migration_target_line"] + 0.10
        ]
        assert above, "migration never stood 10 points above its trajectory"
        assert _status(above[0], "Migration rate") == "on track", above[0].name
        on_line = [
            r
            for r in reports
            if "2027-02-16" <= r.name < "2028-03-31"  # reach is due a week after the announcement
            and snapshots[r.name]["migration_rate"] >= snapshots[r.name]["migration_target_line"]
            and snapshots[r.name]["message_reach"] >= 0.98
        ]
        assert on_line
        assert {_headline(r) for r in on_line} == {"on track"}

    def test_the_best_story_candidate_gets_a_draft_of_its_own_figures(
        self, demo: DemoRun, tmp_path: Path
    ) -> None:
        last = sorted((demo.var / "reports").iterdir())[-1]
        with (last / "story-candidates.csv").open(encoding="utf-8") as handle:
            candidates = list(csv.DictReader(handle))
        assert candidates, "no case-study candidate in the demo"
        best = candidates[0]
        assert float(best["import_speedup"]) == max(float(c["import_speedup"]) for c in candidates)
        out = tmp_path / "draft.md"
        with pytest.MonkeyPatch.context() as patch:
            patch.setenv("HERALD_VAR_DIR", str(demo.var))
            patch.setenv("HERALD_DATABASE_URL", demo.db.url)
            patch.setenv("HERALD_CONFIG_DIR", str(ROOT / "config"))
            patch.setenv("HERALD_TEMPLATES_DIR", str(ROOT / "templates"))
            get_settings.cache_clear()
            result = CliRunner().invoke(
                app, ["stories", "draft", best["external_id"], "--out", str(out)]
            )
            get_settings.cache_clear()
        assert result.exit_code == 0, result.output
        drafted = re.findall(
            r"^\| (\S+) \| \S+ \| ([\d.]+) \| ([\d.]+) \| [\d.]+x \| ([\d.]+) \| ([\d.]+) \|",
            out.read_text("utf-8"),
            re.M,
        )
        with demo.db.engine.connect() as conn:
            stored = conn.execute(
                text(
                    "SELECT r.report_id, r.legacy_import_ms, r.new_import_ms, r.legacy_memory_mb,"
                    " r.new_memory_mb FROM performance_report r JOIN account a"
                    " ON a.id = r.account_id WHERE a.external_id = :id"
                    " ORDER BY r.reported_at, r.id"
                ),
                {"id": best["external_id"]},
            ).all()
        assert [(d[0], *map(float, d[1:])) for d in drafted] == [tuple(row) for row in stored]
        assert f"{float(stored[-1][1]) / float(stored[-1][2]):.2f}x faster" in result.output

    @pytest.mark.chromium
    @pytest.mark.parametrize("width", [600, 1200])
    def test_no_address_or_status_wraps_in_a_report_with_at_risk_accounts(
        self, demo: DemoRun, width: int, tmp_path: Path
    ) -> None:
        assert CHROMIUM is not None
        busiest = max(
            sorted((demo.var / "reports").iterdir()),
            key=lambda r: (r / "weekly-report.html").read_text("utf-8").count('class="address"'),
        )
        page = render(CHROMIUM, busiest / "weekly-report.html", width=width)
        assert page.checked > 20 and page.wrapped == ()
        shot = screenshot(
            CHROMIUM, busiest / "weekly-report.html", width=width, to=tmp_path / f"{width}.png"
        )
        assert shot.stat().st_size > 10_000

    @pytest.mark.chromium
    def test_the_last_report_renders_in_chromium(self, demo: DemoRun) -> None:
        """Every chart image loaded and the summary table is there."""
        assert CHROMIUM is not None
        page = render(CHROMIUM, demo.last_report)
        assert page.images == page.loaded == 4
        assert page.summary_rows == 9

    def test_status_json_lists_every_phase_and_notice_adding_up_to_the_ledger(
        self, demo: DemoRun
    ) -> None:
        """`herald status --json` after the demo: every phase and every notice of every
        segment, each line's states equal to the ledger's rows, and the lines adding up to
        every row of the ledger."""
        campaign = load_config(ROOT / "config").campaign
        end = max(campaign.sunset.values()) + timedelta(days=7)
        code, output = on_demo(demo, "status", "--json", "--at", f"{end}T12:00:00+00:00")
        assert code == 0, output
        status = json.loads(output)
        lines = status["messages"]
        with demo.db.engine.connect() as conn:
            total = conn.execute(text("SELECT count(*) FROM delivery")).scalar_one()
            grouped = conn.execute(
                text(
                    "SELECT message, CASE WHEN message LIKE 'sunset-t%@%' THEN segment END, "
                    "state, count(*) FROM delivery GROUP BY 1, 2, 3"
                )
            ).all()
        assert status["ledger_rows"] == total == sum(line["rows"] for line in lines)
        assert sum(status["totals"].values()) == total
        ledger: dict[tuple[str, str | None], dict[str, int]] = {}
        for message, segment, state, count in grouped:
            ledger.setdefault((message, segment), {})[state] = count
        shown = {
            (line["message"], line["segment"]): {k: v for k, v in line["states"].items() if v}
            for line in lines
        }
        assert {key: value for key, value in shown.items() if value} == ledger
        for line in lines:
            assert line["rows"] == sum(line["states"].values())
        labels = {(line["kind"], line["segment"], line["offset"]) for line in lines}
        for phase in ("preview", "announcement", "deprecation", "sunset"):
            assert (phase, None, None) in labels
        for segment in campaign.sunset:
            for offset in campaign.notices.offsets_days:
                assert ("notice", segment, offset) in labels
        assert status["needs_attention"] == []

    def test_contact_show_lists_every_message_the_rehearsal_sent_them(self, demo: DemoRun) -> None:
        """`herald contact show` on the demo's busiest contact lists each of their ledger rows
        with its state and provider id, in the table and in --json."""
        with demo.db.engine.connect() as conn:
            contact_id, email = conn.execute(
                text(
                    "SELECT c.id, c.email FROM contact c JOIN delivery d ON d.contact_id = c.id "
                    "GROUP BY c.id, c.email ORDER BY count(*) DESC, c.id LIMIT 1"
                )
            ).one()
            rows = conn.execute(
                text(
                    "SELECT message, state, provider_message_id FROM delivery "
                    "WHERE contact_id = :id ORDER BY id"
                ),
                {"id": contact_id},
            ).all()
        assert len(rows) >= 5
        code, output = on_demo(demo, "contact", "show", email, "--json")
        assert code == 0, output
        shown = json.loads(output)
        assert [
            (m["message"], m["state"], m["provider_message_id"]) for m in shown["messages"]
        ] == [tuple(row) for row in rows]
        code, table = on_demo(demo, "contact", "show", email)
        assert code == 0, table
        for message, _state, provider_id in rows:
            assert message in table and provider_id in table
        assert table.count("accepted") >= sum(1 for row in rows if row.state == "accepted")

    def test_the_next_steps_use_the_demo_dates_and_the_status_is_a_prefect_artifact(
        self, demo: DemoRun
    ) -> None:
        """The demo ends with commands on its own dates (not today's, before the campaign),
        and its last run published the campaign's status as the `herald-status` artifact."""
        from prefect.artifacts import Artifact

        campaign = load_config(ROOT / "config").campaign
        end = max(campaign.sunset.values()) + timedelta(days=7)
        assert f"herald status --at {end}T12:00:00Z" in demo.output
        assert f"herald metrics show --as-of {end}" in demo.output
        assert "herald contact show " in demo.output
        artifact = Artifact.get("herald-status")
        assert artifact is not None
        assert campaign.id in str(artifact.data)
        assert "ledger rows" in str(artifact.data)


def _headline(report: Path) -> str:
    digest = (report / "weekly-report.md").read_text("utf-8")
    found = re.search(r"^# .*: week ending \S+: (.+)$", digest, re.M)
    assert found, digest[:500]
    return found.group(1)


def _status(report: Path, label: str) -> str:
    digest = (report / "weekly-report.md").read_text("utf-8")
    found = re.search(
        rf"^\| {re.escape(label)}(?: \(headline\))? \|[^|]*\|[^|]*\| ([a-z ]+) \|", digest, re.M
    )
    assert found, digest[:2000]
    return found.group(1)


def _snapshots(db: Database) -> dict[str, dict[str, float]]:
    """Each report day's overall values, as the reports saved them."""
    found: dict[str, dict[str, float]] = {}
    with db.engine.connect() as conn:
        for day, metric, value in conn.execute(
            text("SELECT as_of, metric, value FROM metric_snapshot WHERE segment = 'all'")
        ):
            found.setdefault(str(day), {})[metric] = value if value is not None else 0.0
    return found
