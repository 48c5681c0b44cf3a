"""`herald demo` end to end, once: the base, the rehearsal of the whole campaign, and the
weekly leadership reports it leaves (the last one opened in headless Chromium).

The demo runs once for the class, on its own SQLite database and var/ folder (every step it
runs is tested on both databases on its own, and the rehearsal has its own Postgres test).
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from email import policy
from email.parser import BytesParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from herald.cli import app
from herald.settings import get_settings
from tests.support.chromium import render
from tests.support.environment import CHROMIUM, ROOT, Database
from tests.support.html import EMAIL, addresses

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
        contacts' addresses appear in that section only."""
        listed = 0
        for report in sorted((demo.var / "reports").iterdir()):
            inside, outside = addresses((report / "weekly-report.html").read_text("utf-8"))
            assert outside == set(), report.name
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

    @pytest.mark.chromium
    def test_the_last_report_renders_in_chromium(self, demo: DemoRun) -> None:
        """Every chart image loaded and the summary table is there."""
        assert CHROMIUM is not None
        page = render(CHROMIUM, demo.last_report)
        assert page.images == page.loaded == 4
        assert page.summary_rows == 9
