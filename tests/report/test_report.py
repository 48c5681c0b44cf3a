"""The weekly leadership report: at-risk list, summary against last week, trend, files,
artifact, one-time sending, and rendering in headless Chromium.

The metrics themselves are checked value by value in test_metrics; the report here is built
on the same hand-built campaign (``tests.test_metrics.build``, as of 2027-04-11), whose
values are known: migration 2 of 6 active accounts (33.3%), reach 5 of 6 (off track).
"""

from __future__ import annotations

import base64
import csv
import html as html_module
import io
import re
from datetime import UTC, date, datetime, timedelta
from email import policy
from email.parser import BytesParser
from pathlib import Path
from typing import Any

import pytest
from prefect.artifacts import Artifact
from pydantic import SecretStr
from sqlalchemy import Engine, insert
from typer.testing import CliRunner

from flows.weekly_report import weekly_report
from herald.cli.app import app
from herald.models import (
    ACCOUNT,
    CONTACT,
    METRIC_SNAPSHOT,
    SATISFACTION_RESPONSE,
    SEGMENT_ASSIGNMENT,
    SEND_BATCH,
    SEND_WORKER,
    SUPPORT_TICKET,
    SUPPRESSION,
)
from herald.report.at_risk import at_risk_accounts
from herald.report.weekly import change_text
from herald.testing.fake_sendgrid import FakeSendGrid
from tests.support.bases import config, suppress
from tests.support.chromium import render, screenshot
from tests.support.environment import CHROMIUM, KEY, Database
from tests.support.html import EMAIL, addresses
from tests.support.metrics import AS_OF, build, reject

pytestmark = pytest.mark.usefixtures("prefect_server")

LEADERS = ["ceo@example.com", "cto@example.com", "vp-customer-success@example.com"]


# --------------------------------------------------------------------------- at-risk list

RISK_DAY = date(2027, 9, 10)  # standard's sunset (Sep 30) is 20 days away


def build_risks(engine: Engine) -> None:
    """Eight accounts, each a case of the at-risk rules (see the test's docstring)."""
    noon = datetime(2027, 9, 1, 12, tzinfo=UTC)
    accounts = [
        # id, segment, lifecycle, migration_state, migrated_on
        (1, "standard", "active", "not_started", None),  # deadline in 20 days
        (2, "early_adopter", "active", "in_progress", None),  # deadline passed
        (3, "conservative", "active", "not_started", None),  # 3 tickets
        (4, "conservative", "active", "not_started", None),  # CSAT 2.5 average
        (5, "conservative", "active", "not_started", None),  # 2 tickets, CSAT 4: fine
        (6, "standard", "active", "migrated", date(2027, 9, 1)),  # migrated
        (7, "standard", "churned", "not_started", None),  # churned
        (8, "conservative", "active", "not_started", None),  # 3rd ticket after the day
        (9, "standard", "active", "migrated", date(2027, 9, 20)),  # migrates after the day
        (10, "conservative", "active", "not_started", None),  # every contact suppressed
        (11, "conservative", "active", "not_started", None),  # one contact of two suppressed
    ]
    with engine.begin() as conn:
        conn.execute(
            insert(ACCOUNT),
            [
                {
                    "id": id_,
                    "external_id": f"R{id_}",
                    "name": f"Risk {id_}",
                    "tier": "pro",
                    "region": "emea",
                    "lifecycle": lifecycle,
                    "migration_state": state,
                    "migrated_on": migrated_on,
                    "attributes": {},
                }
                for id_, _, lifecycle, state, migrated_on in accounts
            ],
        )
        conn.execute(
            insert(SEGMENT_ASSIGNMENT),
            [
                {
                    "account_id": id_,
                    "as_of": date(2027, 1, 5),
                    "segment": segment,
                    "rule": "test",
                    "readiness": "ready",
                    "readiness_rule": "test",
                }
                for id_, segment, *_ in accounts
            ],
        )
        contacts = [
            # account 1: an "other", a technical and an executive contact (executive first)
            (1, "r1-other@example.com", "other"),
            (1, "r1-tech@example.com", "technical"),
            (1, "r1-exec@example.com", "executive"),
            (2, "r2-tech@example.com", "technical"),
            (3, "r3-exec@example.com", "executive"),
            (9, "r9-exec@example.com", "executive"),
            (10, "r10-exec@example.com", "executive"),
            (10, "r10-tech@example.com", "technical"),
            (11, "r11-exec@example.com", "executive"),
            (11, "r11-tech@example.com", "technical"),
        ]
        conn.execute(
            insert(CONTACT),
            [
                {"account_id": account, "email": email, "role": role}
                for account, email, role in contacts
            ],
        )
        suppressed = [
            ("r10-exec@example.com", "unsubscribe"),
            ("r10-tech@example.com", "bounce"),
            ("r11-tech@example.com", "unsubscribe"),
        ]
        conn.execute(
            insert(SUPPRESSION),
            [
                {"email": e, "reason": r, "source": "test", "created_at": noon}
                for e, r in suppressed
            ],
        )
        tickets = [(3, noon)] * 3 + [(5, noon)] * 2 + [(8, noon)] * 2
        tickets += [(8, datetime(2027, 9, 11, 0, 0, tzinfo=UTC))]  # after RISK_DAY
        conn.execute(
            insert(SUPPORT_TICKET),
            [
                {"ticket_id": f"T{n}", "account_id": a, "opened_at": at, "category": "how-to"}
                for n, (a, at) in enumerate(tickets)
            ],
        )
        surveys = [(4, 2), (4, 3), (5, 4)]
        conn.execute(
            insert(SATISFACTION_RESPONSE),
            [
                {"response_id": f"S{n}", "account_id": a, "responded_at": noon, "csat": csat}
                for n, (a, csat) in enumerate(surveys)
            ],
        )


class TestAtRisk:
    def test_the_list_holds_exactly_the_accounts_the_rules_name_most_urgent_first(
        self, db: Database
    ) -> None:
        """Listed: 2 (early adopter, deadline passed), 1 (standard, 20 days), 9 (migrates
        only later), 3 (3 tickets), 4 (CSAT 2.5), 10 (every contact suppressed: unreachable).
        Not: 5 (2 tickets, CSAT 4), 6 (migrated), 7 (churned), 8 (its 3rd ticket comes after
        the day), 11 (one of its two contacts is still reachable)."""
        build_risks(db.engine)
        with db.engine.connect() as conn:
            listed = at_risk_accounts(conn, config=config(), as_of=RISK_DAY)
        # Each reason with the day it began: the deadline itself once passed, the day the
        # 30-day window opened, the third ticket's day, the last contact's suppression, the
        # answer that took the average to 3 or below.
        assert [(a.external_id, [str(r) for r in a.reasons]) for a in listed] == [
            ("R2", ["deadline passed 72 day(s) ago (since 2027-06-30)"]),
            ("R1", ["deadline in 20 day(s) (since 2027-08-31)"]),
            ("R9", ["deadline in 20 day(s) (since 2027-08-31)"]),
            ("R3", ["3 support tickets (since 2027-09-01)"]),
            (
                "R10",
                [
                    "unreachable by e-mail: every contact unsubscribed, bounced or suppressed "
                    "(since 2027-09-01)"
                ],
            ),
            ("R4", ["average CSAT 2.5 (since 2027-09-01)"]),
        ]
        assert [r.kind for a in listed for r in a.reasons] == [
            "deadline",
            "deadline",
            "deadline",
            "tickets",
            "unreachable",
            "low satisfaction",
        ]
        assert listed[4].unreachable and listed[4].contacts  # whom to call instead
        first = listed[1]
        assert first.contacts == [
            "r1-exec@example.com",
            "r1-tech@example.com",
            "r1-other@example.com",
        ]
        assert (first.deadline, first.days_left, first.segment) == (
            date(2027, 9, 30),
            20,
            "standard",
        )
        assert listed[5].average_csat == pytest.approx(2.5) and listed[5].responses == 2


# --------------------------------------------------------------------------- the report


@pytest.fixture
def campaign(db: Database) -> Database:
    """The hand-built campaign of test_metrics, and a snapshot of last week's migration rate
    (25%) as if last Monday's report had run."""
    build(db.engine)
    with db.engine.begin() as conn:
        conn.execute(
            insert(METRIC_SNAPSHOT),
            [
                {
                    "as_of": AS_OF - timedelta(days=7),
                    "metric": "migration_rate",
                    "segment": "all",
                    "value": 0.25,
                    "target": 0.7,
                    "computed_at": datetime.now(UTC),
                }
            ],
        )
    return db


class TestWeeklyReport:
    def test_summary_change_trend_files_and_artifact(
        self, campaign: Database, herald_env: Path
    ) -> None:
        """The dry run saves and publishes everything, sends nothing."""
        summary = weekly_report(as_of=AS_OF)
        assert summary.dry_run and summary.sent is None
        assert campaign.count("report_delivery") == 0
        assert summary.path == herald_env / "reports" / "2027-04-11" / "weekly-report.html"
        # The headline follows migration and reach only: reach is 83.3% where 98% counts
        # as met a week after the announcement.
        assert summary.verdict == "off track"

        html = summary.path.read_text(encoding="utf-8")
        rows = _summary_rows(html)
        # 2 of 6 migrated (33.3%) against last week's 25.0%: +8.3 points. Above its line
        # (23.3%): on track; four weeks ago (2027-03-14) it already stood at 33.3%, so the
        # reason warns that at this pace it would not reach 70% by its date.
        assert rows["Migration rate"] == [
            "33.3%",
            ">= 70% (line now 23.3%)",
            "on track | above its line (23.3%); reaches only 33.3% by 2027-08-11 at the recent "
            "pace",
            "+8.3 pts",
        ]
        # Last week's snapshot held only the migration rate: reach has no change to show.
        assert rows["Active customers reached"] == [
            "83.3%",
            ">= 100% (tol. 2 pts)",
            "off track | 83.3% against 100.0% (due 2027-02-16)",
            "new",
        ]
        # 12 weeks back to 2027-01-24; the weeks without a snapshot were computed and saved.
        assert summary.weeks_of_trend == 12
        assert (
            campaign.count("metric_snapshot WHERE metric = 'migration_rate' AND segment = 'all'")
            == 12
        )
        trend = _trend_column(html, "Migrated")
        assert trend["2027-02-14"] == "0.0%"  # nobody yet
        assert trend["2027-02-21"] == "16.7%"  # account 5, migrated Feb 20
        assert trend["2027-03-07"] == "33.3%"  # and account 1, Mar 1
        assert trend["2027-04-04"] == "25.0%"  # the snapshot as it was saved

        # At risk: account 3 (CSAT 3.0, not migrated). Its addresses, and only there.
        inside, outside = addresses(html)
        assert inside == {"c4@example.com", "c5@example.com"}
        # Outside it, only the staff on the escalation path (campaign.yaml), never a customer.
        path = {step.contact for step in config().campaign.report.escalation.path}
        assert outside and outside <= path
        folder = summary.path.parent
        assert sorted(p.name for p in (folder / "charts").iterdir()) == [
            "adoption.png",
            "deliverability.png",
            "funnel.png",
            "segments.png",
        ]
        with (folder / "at-risk.csv").open(encoding="utf-8") as handle:
            listed = list(csv.DictReader(handle))
        assert [(r["external_id"], r["reasons"], r["contacts"]) for r in listed] == [
            ("A3", "average CSAT 3.0 (since 2027-03-05)", "c4@example.com c5@example.com")
        ]
        artifact = Artifact.get("weekly-report")
        assert artifact is not None
        digest = str(artifact.data)
        assert "week ending 2027-04-11: off track" in digest
        assert (
            "| Migration rate (headline) | 33.3% | >= 70% (line now 23.3%) | on track | above its "
            "line (23.3%); reaches only 33.3% by 2027-08-11 at the recent pace | +8.3 pts |"
            in digest
        )
        assert "Account 3 (A3, standard): average CSAT 3.0 (since 2027-03-05)" in digest
        assert not EMAIL.findall(digest)

    def test_change_is_in_points_for_shares_and_plain_for_rates_per_100(self) -> None:
        assert change_text("migration_rate", 0.40, 0.35) == "+5.0 pts"
        assert change_text("support_utilization", 4.0, 5.5) == "-1.5"
        assert change_text("migration_rate", 0.4, None) == "new"
        assert change_text("migration_rate", None, 0.3) == "-"

    @pytest.mark.usefixtures("campaign")
    def test_a_rejected_source_stops_the_report_before_anything_is_saved(
        self, db: Database, herald_env: Path
    ) -> None:
        reject(db.engine)
        result = CliRunner().invoke(app, ["report", "weekly", "--as-of", AS_OF.isoformat()])
        assert result.exit_code == 2, result.output
        assert "adoption_pct" in result.output
        assert not (herald_env / "reports").exists()

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.usefixtures("campaign")
    def test_cli_prints_verdict_and_path(self, herald_env: Path) -> None:
        result = CliRunner().invoke(
            app, ["report", "weekly", "--as-of", AS_OF.isoformat()], env={"COLUMNS": "300"}
        )
        assert result.exit_code == 0, result.output
        assert "Week ending 2027-04-11: off track" in result.output
        assert "1 at-risk account(s)" in result.output
        assert "Dry run: not sent (--send sends it to 3 leadership address(es))." in result.output
        path = herald_env / "reports" / "2027-04-11" / "weekly-report.html"
        assert f"Report: {path}" in result.output


def _dead_pid() -> int:
    """The pid of a process that has exited."""
    import subprocess
    import sys

    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


def _text(fragment: str) -> str:
    """A cell's text, a line break as ' | ' (the label and its note, the status and why)."""
    lines = re.split(r"<br\s*/?>", fragment)
    return " | ".join(
        html_module.unescape(re.sub(r"<[^>]+>", "", line)).strip() for line in lines
    ).strip()


def _paragraph(html: str, element_id: str) -> str:
    """The text of the element with ``id``, to the end of its paragraph."""
    return _text(html.split(f'id="{element_id}"', 1)[1].split(">", 1)[1].split("</p>", 1)[0])


def _cells(row: str) -> list[str]:
    return [_text(cell) for cell in re.findall(r"<td[^>]*>(.*?)</td>", row, re.S)]


def _summary_rows(html: str) -> dict[str, list[str]]:
    table = html.split('id="summary"', 1)[1].split("</table>", 1)[0]
    rows = [_cells(row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    return {cells[0]: cells[1:] for cells in rows if cells}


def _trend_column(html: str, label: str) -> dict[str, str]:
    table = html.split('id="trend"', 1)[1].split("</table>", 1)[0]
    headers = [_text(h) for h in re.findall(r"<th[^>]*>(.*?)</th>", table)]
    column = headers.index(label)
    rows = [_cells(row) for row in re.findall(r"<tr>(.*?)</tr>", table, re.S)]
    return {cells[0]: cells[column] for cells in rows if cells}


# --------------------------------------------------------------------------- sending


class TestSending:
    @pytest.mark.usefixtures("campaign")
    def test_each_leader_gets_it_once_with_inline_charts_and_a_suppressed_one_never(
        self, db: Database, sendgrid_env: FakeSendGrid
    ) -> None:
        suppress(db, ["cto@example.com"])
        first = weekly_report(as_of=AS_OF, send=True)
        again = weekly_report(as_of=AS_OF, send=True)
        assert first.sent is not None and again.sent is not None
        assert sorted(first.sent.sent) == ["ceo@example.com", "vp-customer-success@example.com"]
        assert first.sent.suppressed == ["cto@example.com"]
        assert again.sent.sent == [] and sorted(again.sent.already) == sorted(first.sent.sent)
        assert dict(sendgrid_env.accepted_emails()) == {
            "ceo@example.com": 1,
            "vp-customer-success@example.com": 1,
        }
        assert [r.valid for r in sendgrid_env.requests] == [True]  # one request, schema-valid
        assert db.count("report_delivery WHERE state = 'accepted'") == 2
        assert db.count("audit_log WHERE action = 'report.accepted'") == 1

    @pytest.mark.usefixtures("campaign")
    def test_a_report_sender_that_died_is_recovered_like_a_phase_sender(
        self, db: Database, sendgrid_env: FakeSendGrid
    ) -> None:
        """The report's e-mail has the ledger's states and recovery: a dead sender's row
        whose request was in flight becomes unknown and is never sent again; its row that
        was claimed but not requested goes back to planned and is sent."""
        from herald.delivery import recovery
        from herald.report.delivery import REPORT_DELIVERY

        name = f"weekly-{AS_OF.isoformat()}"
        worker = recovery.start_worker(
            db.engine, campaign="modular-migration-2027", message=name, transport="sendgrid"
        )
        now = datetime.now(UTC)
        with db.engine.begin() as conn:
            for email, batch, state in (
                ("ceo@example.com", "batch-requesting", "requesting"),
                ("cto@example.com", "batch-claimed", "claimed"),
            ):
                conn.execute(
                    insert(SEND_BATCH).values(
                        id=batch,
                        worker_id=worker.id,
                        campaign="modular-migration-2027",
                        message=name,
                        state=state,
                        recipients=1,
                        requests=0,
                        created_at=now,
                    )
                )
                conn.execute(
                    insert(REPORT_DELIVERY).values(
                        campaign="modular-migration-2027",
                        report=name,
                        email=email,
                        state="sending",
                        batch_id=batch,
                        attempts=1,
                        planned_at=now,
                        claimed_at=now,
                    )
                )
            # The sender died: a process that no longer exists.
            conn.execute(
                SEND_WORKER.update().where(SEND_WORKER.c.id == worker.id).values(pid=_dead_pid())
            )

        summary = weekly_report(as_of=AS_OF, send=True)

        assert summary.sent is not None
        assert summary.sent.unknown == ["ceo@example.com"]
        assert sorted(summary.sent.sent) == ["cto@example.com", "vp-customer-success@example.com"]
        assert "ceo@example.com" not in sendgrid_env.accepted_emails()
        assert db.count("report_delivery WHERE state = 'unknown'") == 1
        assert db.count("send_worker WHERE finished_at IS NULL") == 0
        assert db.count("audit_log WHERE action = 'sender.recovered'") == 1

    @pytest.mark.usefixtures("campaign")
    def test_an_interrupted_report_send_leaves_no_row_sending(
        self, db: Database, sendgrid_env: FakeSendGrid, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Interrupted during its request, the sender settles its own batch on the way out:
        the rows are unknown (listed, never re-sent), not stuck in sending."""
        from herald.delivery.transports.sendgrid import SendGridTransport

        def interrupted(*_: object) -> object:
            raise KeyboardInterrupt

        monkeypatch.setattr(SendGridTransport, "send", interrupted)
        with pytest.raises(KeyboardInterrupt):
            weekly_report(as_of=AS_OF, send=True)
        assert db.count("report_delivery WHERE state = 'sending'") == 0
        assert db.count("report_delivery WHERE state = 'unknown'") == 3
        monkeypatch.undo()
        again = weekly_report(as_of=AS_OF, send=True)
        assert again.sent is not None and len(again.sent.unknown) == 3
        assert sendgrid_env.request_count() == 0

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.usefixtures("campaign")
    def test_the_sendgrid_body_carries_every_chart_inline_under_its_cid(self) -> None:
        from herald.config import load_config
        from herald.db import get_engine
        from herald.delivery.transports import OutgoingBatch, Recipient
        from herald.delivery.transports.sendgrid import SendGridTransport
        from herald.report.charts import render_charts
        from herald.report.delivery import LEADERSHIP
        from herald.report.metrics.compute import compute_metrics
        from herald.report.render import email_parts
        from herald.report.weekly import build_report
        from herald.settings import get_settings

        settings = get_settings()
        loaded = load_config(settings.config_dir)
        engine = get_engine(settings.effective_database_url)
        report = build_report(
            engine, config=loaded, result=compute_metrics(engine, config=loaded, as_of=AS_OF)
        )
        charts = render_charts(report)
        subject, html, text, attachments = email_parts(report, charts)
        from herald.delivery.messages import Rendered

        batch = OutgoingBatch(
            batch_id="b1",
            campaign=loaded.campaign.id,
            message="weekly-2027-04-11",
            sender=loaded.campaign.sender,
            variants={LEADERSHIP: Rendered(subject, html, text)},
            recipients=[Recipient(1, "k/1", "ceo@example.com", None, LEADERSHIP, {})],
            attachments=attachments,
        )
        with FakeSendGrid(api_key=KEY) as fake:
            transport = SendGridTransport(SecretStr(KEY), fake.url, loaded.campaign.sending)
            body = transport.build(batch)
            assert fake.schema_errors(body) == []
        inline = {a["content_id"]: a for a in body["attachments"] if a["disposition"] == "inline"}
        referenced = set(re.findall(r'src="cid:([^"]+)"', html))
        assert referenced == set(inline) and len(inline) == 4
        for item in inline.values():
            assert base64.b64decode(item["content"]).startswith(b"\x89PNG")
        assert [a["filename"] for a in body["attachments"] if a["disposition"] == "attachment"] == [
            "at-risk.csv"
        ]
        assert subject == "Move to the modular platform: week ending 2027-04-11: off track"


# --------------------------------------------------------------------------- stage, marks


@pytest.mark.parametrize("db", ["sqlite"], indirect=True)
class TestStageAndMarks:
    @pytest.mark.usefixtures("campaign")
    def test_before_the_first_send_it_says_not_started_with_no_chart(self) -> None:
        summary = weekly_report(as_of=date(2027, 1, 5))  # first send: Jan 12
        assert summary.verdict == "not started"
        html = summary.path.read_text(encoding="utf-8")
        assert "<img" not in html and not (summary.path.parent / "charts").exists()
        stage = _paragraph(html, "stage")
        assert "has not started: nothing has been sent yet" in stage
        assert "Next: Early-adopter preview on" in stage
        assert 'id="trend"' not in html and 'id="funnel"' not in html
        assert "## Trend" not in (summary.path.parent / "weekly-report.md").read_text("utf-8")

    @pytest.mark.usefixtures("campaign")
    def test_during_the_campaign_the_phase_and_the_next_dates(self) -> None:
        summary = weekly_report(as_of=AS_OF)
        html = summary.path.read_text(encoding="utf-8")
        stage = _paragraph(html, "stage")
        # The early adopters' 90-day notice went on 2027-04-01.
        assert stage.startswith("Under way: Sunset notices. Next: Sunset notice to early adopter")
        upcoming = html.split('id="upcoming"', 1)[1].split("</table>", 1)[0]
        assert "Sunset notice to early adopter (30 days before)" in upcoming
        digest = (summary.path.parent / "weekly-report.md").read_text("utf-8")
        assert "- 2027-04-01" not in digest  # only dates after the report's day

    @pytest.mark.usefixtures("campaign")
    def test_after_the_last_deadline_a_closing_summary(self) -> None:
        summary = weekly_report(as_of=date(2028, 4, 2))
        assert summary.verdict == "missed"  # reach and migration never got there
        html = summary.path.read_text(encoding="utf-8")
        stage = _paragraph(html, "stage")
        assert stage.startswith("Closing summary. The campaign closed with its last deadline")
        assert "of active accounts migrated (3 of 6); 3 never did." in stage

    def test_a_rehearsal_report_is_marked_on_the_page_and_in_the_subject(
        self, campaign: Database
    ) -> None:
        from herald.report.metrics.compute import compute_metrics
        from herald.report.render import email_parts
        from herald.report.render import html as page
        from herald.report.weekly import build_report

        loaded = config()
        result = compute_metrics(campaign.engine, config=loaded, as_of=AS_OF)
        real = build_report(campaign.engine, config=loaded, result=result)
        rehearsed = build_report(campaign.engine, config=loaded, result=result, rehearsal=True)
        assert real.mark is None and not real.subject.startswith("[Rehearsal]")
        subject, body, text, _ = email_parts(rehearsed, {})
        assert subject == "[Rehearsal] Move to the modular platform: week ending 2027-04-11: " + (
            rehearsed.verdict
        )
        assert 'id="mark"' in body and "REHEARSAL: SYNTHETIC DATA, NOT REAL CUSTOMERS" in body
        assert text.startswith("> **REHEARSAL: SYNTHETIC DATA")
        assert 'id="mark"' not in page(real, {}, inline=False)

    def test_a_report_on_synthetic_data_says_so_whoever_runs_it(self, campaign: Database) -> None:
        with campaign.engine.begin() as conn:
            conn.execute(
                insert(SUPPORT_TICKET).values(
                    ticket_id="made-up",
                    account_id=1,
                    opened_at=datetime(2027, 3, 1, tzinfo=UTC),
                    category="how-to",
                    batch_id="rehearsal",
                )
            )
        summary = weekly_report(as_of=AS_OF)
        html = summary.path.read_text(encoding="utf-8")
        assert "SYNTHETIC DATA: MADE UP BY A REHEARSAL" in html
        artifact = Artifact.get("weekly-report")
        assert artifact is not None and "SYNTHETIC DATA" in str(artifact.data)


class TestArtifact:
    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.usefixtures("campaign")
    def test_the_artifact_carries_the_summary_and_every_chart_inline(self) -> None:
        weekly_report(as_of=AS_OF)
        artifact = Artifact.get("weekly-report")
        assert artifact is not None
        data = str(artifact.data)
        assert "| target | now | goal | status | why | since last week |" in data
        images = re.findall(r"!\[[^\]]+\]\(data:image/png;base64,([A-Za-z0-9+/=]+)\)", data)
        assert len(images) == 4
        assert all(base64.b64decode(image).startswith(b"\x89PNG") for image in images)
        assert str(Path.cwd()) not in data and "/var/" not in data  # no path on a worker's disk
        assert "report.base_url" in data  # says how to link the full report

    def test_with_a_base_url_it_links_the_published_report(self) -> None:
        from herald.report.render import artifact_markdown
        from herald.report.stage import RUNNING, Stage

        report = _bare_report(Stage(RUNNING, "Broad announcement"))
        text = artifact_markdown(report, {"adoption": b"png"}, "https://reports.example.com/h/")
        base = "https://reports.example.com/h/2027-04-11"
        assert f"Full report: {base}/weekly-report.html" in text
        assert f"]({base}/at-risk.csv)" in text and f"]({base}/story-candidates.csv)" in text
        assert f"]({base}/charts/adoption.png)" in text
        assert "base64" not in text


def _bare_report(stage: Any) -> Any:
    from herald.report.metrics.results import MetricsResult
    from herald.report.weekly import AdoptionCurve, WeeklyReport

    loaded = config()
    return WeeklyReport(
        campaign_id=loaded.campaign.id,
        campaign_name=loaded.campaign.name,
        as_of=AS_OF,
        generated_at=datetime.now(UTC),
        metrics=MetricsResult(as_of=AS_OF, values=[], funnel=[], definitions={}),
        summary=[],
        trend_weeks=[],
        trend={},
        adoption=AdoptionCurve([], [], {}, [], None, None, None),
        at_risk=[],
        at_risk_rows=50,
        at_risk_rules=loaded.campaign.report.at_risk,
        stage=stage,
    )


# --------------------------------------------------------------------------- browser


@pytest.mark.chromium
class TestChromium:
    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.usefixtures("campaign")
    def test_every_chart_loads_and_a_broken_one_is_noticed(self, tmp_path: Path) -> None:
        assert CHROMIUM is not None
        summary = weekly_report(as_of=AS_OF)
        page = render(CHROMIUM, summary.path)
        assert (page.images, page.loaded, page.summary_rows) == (4, 4, 9)
        assert page.widths == [720] * 4
        # The probe is not blind: one chart's bytes cut short, and it is not loaded.
        html = summary.path.read_text(encoding="utf-8")
        start = html.index("data:image/png;base64,") + len("data:image/png;base64,")
        broken = tmp_path / "broken.html"
        broken.write_text(html[:start] + "AAAA" + html[start + 400 :], encoding="utf-8")
        assert render(CHROMIUM, broken).loaded == 3

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.parametrize("width", [600, 1200])
    def test_no_address_or_status_wraps_at_600_and_1200_pixels(
        self, campaign: Database, width: int, tmp_path: Path
    ) -> None:
        """Account 3 at risk, with a long address among its contacts; screenshots are left
        in the test's folder."""
        assert CHROMIUM is not None
        with campaign.engine.begin() as conn:
            conn.execute(
                insert(CONTACT).values(
                    account_id=3,
                    email="maximiliane.von-hohenzollern-sigmaringen@enterprise-platform.example.com",
                    role="other",
                )
            )
        summary = weekly_report(as_of=AS_OF)
        page = render(CHROMIUM, summary.path, width=width)
        assert page.width <= width
        assert page.checked >= 3 + 10  # 3 addresses, the headline and 9 target statuses
        assert page.wrapped == ()
        shot = screenshot(CHROMIUM, summary.path, width=width, to=tmp_path / f"report-{width}.png")
        assert shot.read_bytes().startswith(b"\x89PNG")

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    @pytest.mark.usefixtures("campaign")
    def test_the_probe_sees_a_wrapped_status(self, tmp_path: Path) -> None:
        """Statuses squeezed into 30 px, nowrap overridden: the probe sees them wrap (it is
        not blind)."""
        assert CHROMIUM is not None
        summary = weekly_report(as_of=AS_OF)
        squeeze = (
            "<style>.status, .address { white-space: normal !important; "
            "display: inline-block !important; width: 30px !important; }</style></head>"
        )
        html = summary.path.read_text(encoding="utf-8").replace("</head>", squeeze)
        narrow = tmp_path / "narrow.html"
        narrow.write_text(html, encoding="utf-8")
        wrapped = render(CHROMIUM, narrow, width=600).wrapped
        assert "off track" in wrapped


def test_eml_of_the_report_keeps_charts_beside_the_html(tmp_path: Path) -> None:
    """The outbox writes the report e-mail as multipart/related: each cid resolves."""
    from herald.delivery.messages import Rendered
    from herald.delivery.transports import Attachment, OutgoingBatch, Recipient
    from herald.delivery.transports.outbox import OutboxTransport
    from herald.report.delivery import LEADERSHIP

    loaded = config()
    png = base64.b64decode(
        "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
    )
    batch = OutgoingBatch(
        batch_id="b1",
        campaign=loaded.campaign.id,
        message="weekly-2027-04-11",
        sender=loaded.campaign.sender,
        variants={LEADERSHIP: Rendered("s", '<img src="cid:a@herald">', "t")},
        recipients=[Recipient(7, "k/7", "ceo@example.com", None, LEADERSHIP, {})],
        attachments=[
            Attachment("a.png", png, "image/png", "a@herald"),
            Attachment("at-risk.csv", b"external_id\n", "text/csv"),
        ],
    )
    outbox = OutboxTransport(tmp_path)
    outbox.send(outbox.prepare(batch))
    mail = BytesParser(policy=policy.default).parse(
        io.BytesIO((tmp_path / loaded.campaign.id / "weekly-2027-04-11" / "7.eml").read_bytes())
    )
    parts = {part.get("Content-ID"): part for part in mail.walk() if part.get("Content-ID")}
    assert parts["<a@herald>"].get_content() == png
    assert [p.get_filename() for p in mail.iter_attachments()] == ["at-risk.csv"]
