"""Sunset notices on a simulated clock: due dates, catch-up, expiry, windows and the cap."""

from __future__ import annotations

import itertools
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
from sqlalchemy import text

from flows.send_notices import send_notices
from herald.config import DeliveryWindow
from herald.delivery import planning
from herald.delivery.calendar import (
    due_notices,
    extended_message,
    in_window,
    notice_message,
    notices,
    open_zones,
    openings,
)
from tests.support.bases import config, eligible, load_base
from tests.support.environment import Database

pytestmark = pytest.mark.slow(seconds=45)

STANDARD_SUNSET = date(2027, 9, 30)  # config/campaign.yaml


def std(offset: int) -> str:
    """The ledger name of the standard segment's notice ``offset`` days before its sunset."""
    return notice_message(offset, STANDARD_SUNSET)


def sent_rows(db: Database, message: str | None = None) -> list[tuple[str, str, str, datetime]]:
    where = "AND d.message = :message" if message else ""
    with db.engine.connect() as conn:
        rows = conn.execute(
            text(
                "SELECT c.email, d.message, d.timezone, d.sent_at FROM delivery d "
                "JOIN contact c ON c.id = d.contact_id "
                f"WHERE d.state = 'accepted' {where} ORDER BY d.id"
            ),
            {"message": message},
        ).all()
    out = []
    for email, name, zone_name, sent_at in rows:
        moment = sent_at if isinstance(sent_at, datetime) else datetime.fromisoformat(sent_at)
        out.append((email, name, zone_name, moment.replace(tzinfo=moment.tzinfo or UTC)))
    return out


class TestCalendar:
    def test_each_notice_is_due_at_its_offset_and_valid_until_the_next(self) -> None:
        """T-90 ... T-0 of the standard segment, each superseded by the next. T-90 is due
        on Friday 2 July, outside the Tue-Thu window: it goes the Thursday before."""
        standard = [n for n in notices(config().campaign) if n.segment == "standard"]
        assert [(n.message, n.due, n.sends_on, n.until) for n in standard] == [
            (std(90), date(2027, 7, 2), date(2027, 7, 1), date(2027, 8, 31)),
            (std(30), date(2027, 8, 31), date(2027, 8, 31), date(2027, 9, 23)),
            (std(7), date(2027, 9, 23), date(2027, 9, 23), date(2027, 9, 29)),
            (std(1), date(2027, 9, 29), date(2027, 9, 29), date(2027, 9, 30)),
            (std(0), date(2027, 9, 30), date(2027, 9, 30), date(2027, 10, 1)),
        ]

    def test_a_notice_due_on_a_closed_day_goes_early_and_a_critical_one_on_its_day(
        self,
    ) -> None:
        """The conservative deadline is Friday 31 March 2028: T-0 (critical) goes that
        Friday; T-7 (due Friday 24th) the Thursday before; T-90 (due Saturday 1 January, a
        holiday too) on Thursday 30 December. No notice shares a day with the next."""
        conservative = {
            n.offset: n for n in notices(config().campaign) if n.segment == "conservative"
        }
        assert conservative[0].sends_on == date(2028, 3, 31) and conservative[0].critical
        assert conservative[7].sends_on == date(2028, 3, 23)
        assert conservative[90].due == date(2028, 1, 1)
        assert conservative[90].sends_on == date(2027, 12, 30)
        ordered = sorted(conservative.values(), key=lambda n: -n.offset)
        assert all(a.sends_on < a.until <= b.until for a, b in itertools.pairwise(ordered))

    def test_a_calendar_where_two_notices_share_a_day_is_refused(self) -> None:
        """T-8 due on a Friday moves to Thursday, the day T-7 goes: config check says so."""
        from pydantic import ValidationError

        campaign = config().campaign
        data = campaign.model_dump(mode="json")
        data["sunset"]["standard"] = "2027-10-01"  # a Friday: T-7 due Fri, T-8 due Thu
        data["notices"]["offsets_days"] = [8, 7, 0]
        data["notices"]["critical_offsets"] = [0]
        with pytest.raises(ValidationError, match="8-day notice of standard would go on"):
            type(campaign).model_validate(data)
        data["delivery_window"]["blackout_dates"] = []
        data["delivery_window"]["holidays"] = ["XX"]
        with pytest.raises(ValidationError, match="'XX' is not a country"):
            type(campaign).model_validate(data)

    def test_a_run_after_downtime_plans_only_the_notice_still_valid(self) -> None:
        """Down over T-30's day: the next run still sends it; once T-7 is due, only T-7."""
        campaign = config().campaign
        after_t30 = {
            n.message for n in due_notices(campaign, date(2027, 9, 10)) if n.segment == "standard"
        }
        after_t7 = {
            n.message for n in due_notices(campaign, date(2027, 9, 25)) if n.segment == "standard"
        }
        assert after_t30 == {std(30)}
        assert after_t7 == {std(7)}

    def test_windows_are_in_each_recipients_time_zone(self) -> None:
        """Tue 15:00 UTC: New York (11:00) is open, Singapore (23:00) is not; Fri: none."""
        window = DeliveryWindow()
        tuesday = datetime(2027, 8, 31, 15, 0, tzinfo=UTC)
        assert open_zones(window, ["America/New_York", "Asia/Singapore"], tuesday) == [
            "America/New_York"
        ]
        assert not in_window(window, "America/New_York", tuesday + timedelta(days=3))
        moments = openings(window, ["Asia/Singapore"], tuesday, tuesday + timedelta(days=7))
        # 09:00 in Singapore is 01:00 UTC: Wednesday, Thursday and the next Tuesday.
        assert [(m.day, m.hour) for m in moments] == [(1, 1), (2, 1), (7, 1)]


class TestNoticeRuns:
    @pytest.mark.usefixtures("prefect_server")
    def test_a_missed_notice_is_caught_up_once(self, db: Database, tmp_path: Path) -> None:
        """A missed T-30 goes late, once; when T-7 is due, only T-7 is planned."""
        loaded = load_base(db, tmp_path, accounts=150)
        standard_contacts = {
            email
            for email in eligible(db, loaded, "sunset")
            if email in _segment_contacts(db, "standard")
        }
        # Herald was down on T-30 (Aug 31); it comes back on Thursday Sep 2. (Windows are
        # checked by the rehearsal tests; here every zone is served at once.)
        day = date(2027, 9, 2)
        at = datetime(2027, 9, 2, 15, 0, tzinfo=UTC)
        caught_up = send_notices(as_of=day, send=True, at=at, window=False)
        t30 = sent_rows(db, std(30))
        assert {row[0] for row in t30} == standard_contacts
        assert caught_up.sent == {std(30): len(standard_contacts)}

        # A rerun the same day sends nothing again.
        again = send_notices(as_of=day, send=True, at=at, window=False)
        assert sum(again.sent.values()) == 0

        # T-7 (Thursday Sep 23): only the new notice; nothing of T-30 is sent again.
        t7 = datetime(2027, 9, 23, 15, 0, tzinfo=UTC)
        send_notices(as_of=t7.date(), send=True, at=t7, window=False)
        assert {row[0] for row in sent_rows(db, std(7))} == standard_contacts
        assert len(sent_rows(db, std(30))) == len(t30)

    @pytest.mark.usefixtures("prefect_server")
    def test_only_open_time_zones_are_served(self, db: Database, tmp_path: Path) -> None:
        """Tuesday 15:00 UTC: New York and London get T-30, Singapore waits for its morning."""
        load_base(db, tmp_path, accounts=60)
        at = datetime(2027, 8, 31, 15, 0, tzinfo=UTC)
        summary = send_notices(as_of=at.date(), send=True, at=at)
        rows = sent_rows(db, std(30))
        window = config().campaign.delivery_window
        assert rows and all(in_window(window, zone, sent) for _, _, zone, sent in rows)
        assert "Asia/Singapore" not in {zone for _, _, zone, _ in rows}
        assert summary.waiting > 0

    @pytest.mark.usefixtures("prefect_server")
    def test_the_cap_holds_back_ordinary_notices_but_not_critical_ones(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Two sends in the last 7 days: T-7 waits; T-1 (critical) goes anyway."""
        load_base(db, tmp_path, accounts=40)
        moment = datetime(2027, 9, 23, 15, 0, tzinfo=UTC)  # Thursday, New York 11:00
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "INSERT INTO delivery (campaign, message, contact_id, segment, role, locale, "
                    "state, attempts, planned_at, updated_at, sent_at, critical) "
                    "SELECT 'modular-migration-2027', m.name, c.id, 'standard', c.role, 'en', "
                    "'accepted', 1, :t, :t, :t, :false FROM contact c "
                    "CROSS JOIN (SELECT 'earlier-1' AS name UNION ALL SELECT 'earlier-2') m"
                ),
                {"t": moment - timedelta(days=2), "false": False},
            )
        capped = send_notices(as_of=moment.date(), send=True, at=moment, window=True)
        assert capped.sent.get(std(7), 0) == 0 and capped.waiting > 0
        critical_day = datetime(2027, 9, 29, 15, 0, tzinfo=UTC)  # Wednesday, T-1
        critical = send_notices(as_of=critical_day.date(), send=True, at=critical_day)
        assert critical.sent.get(std(1), 0) > 0
        assert critical.expired.get(std(7), 0) > 0  # T-7 was superseded while capped


def _segment_contacts(db: Database, segment: str) -> set[str]:
    with db.engine.connect() as conn:
        return set(
            conn.execute(
                text(
                    "SELECT c.email FROM contact c JOIN segment_assignment s "
                    "ON s.account_id = c.account_id WHERE s.segment = :segment"
                ),
                {"segment": segment},
            ).scalars()
        )


def _zones(db: Database) -> list[str]:
    window = config().campaign.delivery_window
    with db.engine.connect() as conn:
        own = set(
            conn.execute(
                text("SELECT DISTINCT timezone FROM contact WHERE timezone <> ''")
            ).scalars()
        )
    return sorted(own | set(window.region_timezones.values()) | {window.default_timezone})


class TestThankYou:
    @pytest.mark.usefixtures("prefect_server")
    def test_a_migrated_account_gets_one_thank_you_and_no_more_notices(
        self, db: Database, tmp_path: Path
    ) -> None:
        """After T-30 the account migrates: no T-7 for its contacts, one thank-you each."""
        load_base(db, tmp_path, accounts=60)
        t30 = datetime(2027, 9, 2, 15, 0, tzinfo=UTC)
        send_notices(as_of=t30.date(), send=True, at=t30, window=False)
        mailed = sent_rows(db, std(30))
        account_id = _account_of(db, mailed[0][0])
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE account SET migration_state = 'migrated', migrated_on = :day "
                    "WHERE id = :id"
                ),
                {"day": date(2027, 9, 10), "id": account_id},
            )
        t7 = datetime(2027, 9, 23, 15, 0, tzinfo=UTC)
        for _ in range(2):  # a rerun plans and sends nothing more
            send_notices(as_of=t7.date(), send=True, at=t7, window=False)

        moved = {email for email, *_ in mailed if _account_of(db, email) == account_id}
        thanked = [row[0] for row in sent_rows(db, "thank-you")]
        assert sorted(thanked) == sorted(moved)
        assert not moved & {row[0] for row in sent_rows(db, std(7))}
        assert len(sent_rows(db, std(7))) > 0


def _account_of(db: Database, email: str) -> int:
    with db.engine.connect() as conn:
        return int(
            conn.execute(
                text("SELECT account_id FROM contact WHERE email = :email"), {"email": email}
            ).scalar_one()
        )


class TestMovedDeadline:
    @pytest.mark.usefixtures("prefect_server")
    def test_a_later_deadline_expires_old_notices_tells_once_and_restarts_the_countdown(
        self, db: Database, tmp_path: Path, config_dir: Path
    ) -> None:
        """T-30 went out for Sep 30 and T-7 is waiting; the standard sunset moves to Dec 31.

        The waiting T-7 expires; every contact who had T-30 (and whose account has not
        migrated) gets one "deadline extended"; the new date's T-90 goes out on its own day,
        also to them; nothing is sent twice on a rerun.
        """
        loaded = load_base(db, tmp_path, accounts=80)
        t30 = datetime(2027, 9, 2, 15, 0, tzinfo=UTC)
        send_notices(as_of=t30.date(), send=True, at=t30, window=False)
        had_t30 = {row[0] for row in sent_rows(db, std(30))}
        assert had_t30
        migrated = sorted(had_t30)[0]
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE account SET migration_state = 'migrated', migrated_on = :day "
                    "WHERE id = :id"
                ),
                {"day": date(2027, 9, 10), "id": _account_of(db, migrated)},
            )
        moved_with = {e for e in had_t30 if _account_of(db, e) == _account_of(db, migrated)}
        # T-7 planned, not yet sent
        planning.plan_notices(db.engine, config=loaded, as_of=date(2027, 9, 23))
        waiting_t7 = db.count(f"delivery WHERE message = '{std(7)}' AND state = 'planned'")
        assert waiting_t7 > 0

        new_sunset = date(2027, 12, 31)
        path = config_dir / "campaign.yaml"
        path.write_text(
            path.read_text().replace("standard: 2027-09-30", f"standard: {new_sunset}"),
            encoding="utf-8",
        )
        friday = datetime(2027, 9, 24, 15, 0, tzinfo=UTC)
        summary = send_notices(as_of=friday.date(), send=True, at=friday, window=False)
        extended = extended_message(new_sunset)
        assert summary.expired_for_moved_deadline == waiting_t7
        assert db.count(f"delivery WHERE message = '{std(7)}' AND state = 'planned'") == 0
        assert {row[0] for row in sent_rows(db, std(7))} == set()
        told = [row[0] for row in sent_rows(db, extended)]
        assert sorted(told) == sorted(had_t30 - moved_with)
        assert summary.sent[extended] == len(told)  # (and the migrated account: a thank-you)

        # The new date's T-90 (due Oct 2) goes to everyone not migrated, the told included.
        tuesday = datetime(2027, 10, 5, 15, 0, tzinfo=UTC)
        for _ in range(2):
            send_notices(as_of=tuesday.date(), send=True, at=tuesday, window=False)
        t90 = {row[0] for row in sent_rows(db, notice_message(90, new_sunset))}
        assert (had_t30 - moved_with) <= t90 and not t90 & moved_with
        assert len(sent_rows(db, extended)) == len(told)  # once per contact, reruns included
        assert len(sent_rows(db, notice_message(90, new_sunset))) == len(t90)


@pytest.mark.usefixtures("prefect_server")
class TestPreviewOfNotices:
    def test_preview_says_which_notice_goes_that_day_or_why_none(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Before T-90 goes, on its day (with the days left counted from that day), after
        it went, and after the deadline: each answer is the truth for that day."""
        from typer.testing import CliRunner

        from herald.cli.app import app

        loaded = load_base(db, tmp_path)
        with db.engine.connect() as conn:
            standard = set(
                conn.execute(
                    text(
                        "SELECT c.email FROM contact c JOIN segment_assignment s "
                        "ON s.account_id = c.account_id WHERE s.segment = 'standard'"
                    )
                ).scalars()
            )
        contact = sorted(eligible(db, loaded, "sunset") & standard)[0]
        runner = CliRunner()

        def preview(day: date) -> tuple[int, str]:
            result = runner.invoke(
                app, ["preview", "sunset", "--contact", contact, "--as-of", day.isoformat()]
            )
            return result.exit_code, " ".join(result.output.split())

        code, said = preview(date(2027, 6, 30))
        assert code == 3
        assert (
            f"no standard notice goes on 2027-06-30; the next goes on 2027-07-01 ({std(90)})"
            in said
        )
        code, said = preview(date(2027, 7, 1))  # T-90 is due Friday 2 July: it goes Thursday
        assert (
            code == 0 and f"would receive this message in sunset ({std(90)}) on 2027-07-01" in said
        )
        assert "Subject: 91 days left" in said and "91 days left." in said
        at = datetime(2027, 7, 1, 15, tzinfo=UTC)
        send_notices(as_of=date(2027, 7, 1), send=True, at=at, window=False)
        code, said = preview(date(2027, 7, 1))
        assert code == 3 and "already sent" in said
        code, said = preview(date(2027, 10, 1))
        assert code == 3 and "the standard deadline (2027-09-30) has passed" in said


class TestClosedDays:
    def test_holidays_and_blackout_dates_close_a_window_day(self) -> None:
        """Thanksgiving (Thu 25 Nov 2027, a US holiday) and a blackout Wednesday are closed;
        the Tuesday before is open; hours alone (a critical notice) ignore both."""
        window = DeliveryWindow(holidays=["US"], blackout_dates=[date(2027, 11, 24)])
        assert window.is_open_day(date(2027, 11, 23))
        assert not window.is_open_day(date(2027, 11, 24))
        assert not window.is_open_day(date(2027, 11, 25))
        assert window.last_open_day(date(2027, 11, 26)) == date(2027, 11, 23)
        thanksgiving = datetime(2027, 11, 25, 15, 0, tzinfo=UTC)  # 10:00 in New York
        assert not in_window(window, "America/New_York", thanksgiving)
        assert in_window(window, "America/New_York", thanksgiving, any_day=True)
        assert DeliveryWindow(holidays=["DE-BY"]).is_open_day(date(2027, 11, 23))

    def test_preview_of_the_thank_you_says_when_it_would_go(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Not moved yet, never mailed, moved and mailed: the thank-you's three answers."""
        from typer.testing import CliRunner

        from flows.send_phase import send_phase
        from herald.cli.app import app
        from tests.support.bases import DAY

        loaded = load_base(db, tmp_path)
        send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        mailed = sorted(eligible(db, loaded, "announcement"))[0]
        runner = CliRunner()

        def preview(address: str) -> tuple[int, str]:
            result = runner.invoke(
                app, ["preview", "thank-you", "--contact", address, "--as-of", "2027-05-05"]
            )
            return result.exit_code, " ".join(result.output.split())

        code, said = preview(mailed)
        assert code == 3 and "has not moved to the new product before this day" in said
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE account SET migration_state = 'migrated', migrated_on = '2027-05-01' "
                    "WHERE id = (SELECT account_id FROM contact WHERE email = :e)"
                ),
                {"e": mailed},
            )
        code, said = preview(mailed)
        assert code == 0 and "would receive this message in thank_you" in said
        assert "Subject: Thank you for moving to" in said
        with db.engine.connect() as conn:
            never = conn.execute(
                text(
                    "SELECT email FROM contact WHERE id NOT IN (SELECT contact_id FROM delivery) "
                    "ORDER BY id LIMIT 1"
                )
            ).scalar_one()
        code, said = preview(str(never))
        assert code == 3 and "the campaign never mailed this contact" in said

    def test_preview_of_a_deadline_extended_message(self, db: Database, tmp_path: Path) -> None:
        """Only a contact who was sent a notice for an earlier deadline gets "more time"."""
        from sqlalchemy import insert
        from typer.testing import CliRunner

        from herald.cli.app import app
        from herald.models import DELIVERY

        loaded = load_base(db, tmp_path)
        contacts = sorted(eligible(db, loaded, "sunset") & _segment_contacts(db, "standard"))
        warned, other = contacts[0], contacts[1]
        with db.engine.begin() as conn:
            contact_id = conn.execute(
                text("SELECT id FROM contact WHERE email = :e"), {"e": warned}
            ).scalar_one()
            conn.execute(
                insert(DELIVERY).values(
                    campaign=loaded.campaign.id,
                    message=notice_message(30, date(2027, 6, 30)),  # an earlier deadline
                    contact_id=contact_id,
                    segment="standard",
                    role="technical",
                    locale="en",
                    state="accepted",
                    sent_at=datetime(2027, 5, 31, 15, tzinfo=UTC),
                )
            )
        runner = CliRunner()

        def preview(address: str) -> tuple[int, str]:
            result = runner.invoke(
                app,
                ["preview", "deadline-extended", "--contact", address, "--as-of", "2027-07-06"],
            )
            return result.exit_code, " ".join(result.output.split())

        code, said = preview(warned)
        assert code == 0 and "Subject: More time:" in said, said
        code, said = preview(other)
        assert code == 3 and "the deadline did not move for them" in said


@pytest.mark.usefixtures("prefect_server")
def test_herald_notices_send_names_a_notice_never_sent_and_exits_3(
    db: Database, tmp_path: Path
) -> None:
    """A sunset-day notice that expired unsent (nothing comes after it): the command lists it
    as never sent and exits 3; before that, the same run exits 0."""
    from typer.testing import CliRunner

    from herald.cli.app import app

    loaded = load_base(db, tmp_path)
    planning.plan_notices(db.engine, config=loaded, as_of=STANDARD_SUNSET)
    runner = CliRunner()
    args = ["notices", "send", "--send", "--as-of", "2027-10-01", "--ignore-window"]
    clean = runner.invoke(app, args)
    assert clean.exit_code == 0, clean.output
    with db.engine.begin() as conn:
        expired = conn.execute(
            text(
                "UPDATE delivery SET state = 'expired', error = 'expired: test' "
                "WHERE message = :m AND state = 'planned'"
            ),
            {"m": std(0)},
        ).rowcount
    assert expired
    result = runner.invoke(app, args)
    assert result.exit_code == 3, result.output
    said = " ".join(result.output.split())
    assert f"never sent: {std(0)}: {expired} contact(s) never got this notice" in said
