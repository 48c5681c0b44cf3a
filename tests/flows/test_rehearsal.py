"""Rehearsals of the whole campaign on a simulated clock, then the whole ledger checked."""

from __future__ import annotations

import email
import json
import re
from collections import defaultdict
from datetime import UTC, date, datetime, timedelta
from email import policy
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest
from sqlalchemy import text

from flows.rehearse import rehearse
from herald.customers.importer import import_customers
from herald.delivery.calendar import in_window, notices
from herald.i18n.catalogs import translations
from herald.sandbox.demo import write_demo_base
from herald.settings import get_settings
from tests.support.bases import config
from tests.support.environment import Database

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow(seconds=70)]


def load(db: Database, tmp_path: Path, accounts: int) -> None:
    files = write_demo_base(tmp_path / "demo", accounts=accounts, seed=21)
    import_customers(
        engine=db.engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=tmp_path / "rejects",
    )


def moment(value: object) -> datetime:
    parsed = value if isinstance(value, datetime) else datetime.fromisoformat(str(value))
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def day_of(value: object) -> date:
    return value if isinstance(value, date) else date.fromisoformat(str(value))


def sends(db: Database) -> list[dict[str, object]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT d.contact_id, d.message, d.segment, d.timezone, d.sent_at, d.critical, "
                "a.migration_state, a.migrated_on, c.email FROM delivery d "
                "JOIN contact c ON c.id = d.contact_id JOIN account a ON a.id = c.account_id "
                "WHERE d.state = 'accepted'"
            )
        ).mappings()
        return [dict(row) for row in rows]


class TestFullRehearsal:
    def test_the_whole_campaign_keeps_every_promise(self, db: Database, tmp_path: Path) -> None:
        """Once per notice, nothing after migrating, cap kept, windows kept, nobody missed."""
        load(db, tmp_path, accounts=30)
        start, end = date(2027, 1, 5), date(2028, 4, 7)
        # (Weekly reports: TestDowntime here, and the demo's in test_cli and test_report.)
        summary = rehearse(start=start, end=end, seed=3, weekly_reports=False)
        campaign = config().campaign
        window, cap = campaign.delivery_window, campaign.frequency_cap
        rows = sends(db)
        assert summary.sent and sum(summary.sent.values()) == len(rows)
        assert {"preview", "announcement", "deprecation", "sunset-t90", "sunset-t0"} <= {
            str(r["message"]).partition("@")[0] for r in rows
        }

        per_key = defaultdict(int)
        by_contact: dict[object, list[dict[str, object]]] = defaultdict(list)
        for row in rows:
            per_key[(row["contact_id"], row["message"])] += 1
            by_contact[row["contact_id"]].append(row)
            sent_at = moment(row["sent_at"])
            # Inside the recipient's window (a critical notice: its hours, any day).
            critical = bool(row["critical"])
            assert in_window(window, str(row["timezone"]), sent_at, any_day=critical), row
            # Nothing after the account migrated (a send on the migration day precedes it),
            # except the one thank-you.
            if row["migrated_on"] is not None and row["message"] != "thank-you":
                assert sent_at.date() <= day_of(row["migrated_on"]), row
            if row["message"] == "thank-you":
                assert row["migration_state"] == "migrated", row
                assert sent_at.date() >= day_of(row["migrated_on"]), row
        assert max(per_key.values()) == 1
        assert any(row["message"] == "thank-you" for row in rows)
        # The frequency cap: before each ordinary send, fewer than max sends in the window.
        for history in by_contact.values():
            history.sort(key=lambda r: moment(r["sent_at"]))
            for index, row in enumerate(history):
                if row["critical"]:
                    continue
                sent_at = moment(row["sent_at"])
                recent = [
                    earlier
                    for earlier in history[:index]
                    if sent_at - moment(earlier["sent_at"]) < timedelta(days=cap.per_days)
                ]
                assert len(recent) < cap.max_messages, (row, recent)
        # Every contact still on the legacy product at the end, and never suppressed, got
        # every notice due before the end that had a delivery-window day to land in.
        with db.engine.connect() as conn:
            staying = conn.execute(
                text(
                    "SELECT c.id, s.segment FROM contact c JOIN account a ON a.id = c.account_id "
                    "JOIN segment_assignment s ON s.account_id = a.id "
                    "WHERE a.lifecycle = 'active' AND a.migration_state <> 'migrated' "
                    "AND c.email NOT IN (SELECT email FROM suppression)"
                )
            ).all()
        sendable = [n for n in notices(campaign) if n.until <= end]  # each has its own day
        assert staying and sendable
        for contact_id, segment in staying:
            for notice in (n for n in sendable if n.segment == segment):
                assert per_key[(contact_id, notice.message)] == 1, (contact_id, notice)
        assert summary.never_sent == {}
        # Each notice went on or before its due day, on an open day unless critical (then on
        # its day), and says how many days are left on the recipient's own calendar that day.
        outbox = get_settings().var_dir / "outbox" / campaign.id
        counted = {}
        for index in outbox.glob("sunset-t*/index.jsonl"):
            for line in index.read_text(encoding="utf-8").splitlines():
                entry = json.loads(line)
                counted[entry["delivery_id"]] = (
                    entry["variant"]["days_left"],
                    entry["subject"],
                    index.parent / entry["file"],
                )
        by_message = {n.message: n for n in notices(campaign)}
        with db.engine.connect() as conn:
            notice_rows = conn.execute(
                text(
                    "SELECT id, message, timezone, sent_at FROM delivery "
                    "WHERE state = 'accepted' AND message LIKE 'sunset-t%'"
                )
            ).all()
        assert notice_rows
        for row_id, message, zone_name, sent_at in notice_rows:
            notice = by_message[message]
            local = moment(sent_at).astimezone(ZoneInfo(zone_name)).date()
            assert local <= notice.due, (message, local)
            assert (local == notice.due) if notice.critical else window.is_open_day(local)
            days_left, subject, eml = counted[row_id]
            assert days_left == (notice.deadline - local).days, (message, local, days_left)
            mail = email.message_from_bytes(eml.read_bytes(), policy=policy.default)
            text_part = mail.get_body(("plain",)).get_content()  # type: ignore[union-attr]
            assert subject.startswith("[Rehearsal] "), subject  # a rehearsal's messages say so
            # The count, in the language the message is written in.
            words = translations(get_settings().templates_dir, str(mail["Content-Language"]))
            if days_left:
                assert re.search(rf"(?<!\d){days_left}(?!\d)", subject), subject
                said = words.ngettext("%(count)s day left.", "%(count)s days left.", days_left)
                assert said % {"count": days_left} in text_part
            else:
                assert words.gettext("Today is the last day.") in text_part


class TestDowntime:
    def test_a_notice_missed_while_down_goes_once_after_and_expired_ones_never(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Down Aug 27 - Sep 5: T-30 (due Aug 31) goes after; down Sep 22 - Oct 1: none.
        A weekly report every Monday Herald is up (covering the week to Sunday), none while
        it is down."""
        load(db, tmp_path, accounts=30)
        summary = rehearse(
            start=date(2027, 8, 20),
            end=date(2027, 9, 12),
            down_from=date(2027, 8, 27),
            down_to=date(2027, 9, 5),
        )
        # Mondays Aug 23, (Aug 30: down), Sep 6.
        assert [Path(p).parent.name for p in summary.reports] == ["2027-08-22", "2027-09-05"]
        assert all(Path(p).is_file() for p in summary.reports)
        first = [r for r in sends(db) if r["message"] == "sunset-t30@2027-09-30"]
        assert first and all(r["segment"] == "standard" for r in first)
        assert all(moment(r["sent_at"]).date() >= date(2027, 9, 6) for r in first)
        assert len({r["contact_id"] for r in first}) == len(first)

        rehearse(
            start=date(2027, 9, 13),
            end=date(2027, 10, 8),
            down_from=date(2027, 9, 22),
            down_to=date(2027, 10, 1),
        )
        later = {str(r["message"]) for r in sends(db) if r["segment"] == "standard"}
        assert "sunset-t30@2027-09-30" in later
        # T-7 (Sep 23-28), T-1 (Sep 29) and T-0 (Sep 30) all passed while Herald was down.
        assert not later & {"sunset-t7@2027-09-30", "sunset-t1@2027-09-30", "sunset-t0@2027-09-30"}
        assert len([r for r in sends(db) if r["message"] == "sunset-t30@2027-09-30"]) == len(first)
