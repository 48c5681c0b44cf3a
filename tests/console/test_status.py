"""`herald status`: each phase and notice with its ledger rows by state, why planned rows wait
(not due, window, cap, ready), when each goes next, and what needs a person."""

from __future__ import annotations

import json
import os
import socket
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from herald.cli import app
from herald.config import HeraldConfig
from herald.console.status import CampaignStatus, MessageStatus, campaign_status
from herald.delivery.calendar import notice_message
from herald.delivery.controls import approve, set_paused
from herald.models import CONTACT, DELIVERY, WEBHOOK_BATCH, WEBHOOK_EVENT_FAILURE
from tests.support.bases import config, load_base
from tests.support.environment import Database
from tests.support.senders import batch_row, dead_pid, insert_senders, worker_row

# Wednesday 10 February 2027, 15:00 UTC: 10:00 in New York and 15:00 in London (their windows
# are open), 23:00 in Singapore (closed; it opens at 09:00 there, 01:00 UTC on Thursday).
NOW = datetime(2027, 2, 10, 15, 0, tzinfo=UTC)
SINGAPORE_OPENS = datetime(2027, 2, 11, 1, 0, tzinfo=UTC)


def _contacts(db: Database, count: int) -> list[int]:
    with db.engine.connect() as conn:
        return list(
            conn.execute(select(CONTACT.c.id).order_by(CONTACT.c.id).limit(count)).scalars()
        )


def _row(contact: int, message: str, state: str = "planned", **values: Any) -> dict[str, Any]:
    """A ledger row; every row has every key (an executemany takes the first row's keys)."""
    return {
        "not_before": values.pop("not_before", None),
        "sent_at": values.pop("sent_at", None),
        "error": values.pop("error", None),
        "campaign": "modular-migration-2027",
        "message": message,
        "contact_id": contact,
        "segment": values.pop("segment", "standard"),
        "role": "technical",
        "locale": "en",
        "timezone": values.pop("timezone", "America/New_York"),
        "state": state,
        "planned_at": NOW - timedelta(days=1),
        "updated_at": NOW - timedelta(days=1),
        **values,
    }


@pytest.fixture
def ledger(db: Database, tmp_path: Path) -> tuple[HeraldConfig, list[int]]:
    """A base and a ledger with one row of each kind of wait and outcome."""
    loaded = load_base(db, tmp_path, accounts=20)
    ids = _contacts(db, 12)
    recent = NOW - timedelta(days=2)
    deadline = loaded.campaign.sunset["standard"]
    rows = [
        _row(ids[0], "announcement"),  # ready
        _row(ids[1], "announcement", timezone="Asia/Singapore"),  # window
        _row(ids[2], "announcement", not_before=NOW + timedelta(days=9)),  # not due
        _row(ids[3], "announcement"),  # capped: two messages in the last 7 days
        _row(ids[3], "preview", "accepted", sent_at=recent),
        _row(ids[3], "thank-you", "accepted", sent_at=recent),
        _row(ids[4], "announcement", "unknown", error="timeout"),
        _row(ids[5], "announcement", "failed", error="400 bad address"),
        _row(ids[6], "announcement", "accepted", sent_at=recent),
        _row(ids[7], "deprecation", timezone="Asia/Singapore"),  # window only
        _row(ids[8], notice_message(90, deadline), "suppressed"),
        _row(ids[9], notice_message(90, deadline), "expired"),
    ]
    with db.engine.begin() as conn:
        conn.execute(insert(DELIVERY), rows)
    return loaded, ids


def _line(status: CampaignStatus, message: str, segment: str | None = None) -> MessageStatus:
    (line,) = [m for m in status.messages if m.message == message and m.segment == segment]
    return line


class TestCampaignStatus:
    def test_planned_rows_are_split_by_why_they_wait(
        self, db: Database, ledger: tuple[HeraldConfig, list[int]]
    ) -> None:
        """Not yet due, outside the recipient's window now, held by the frequency cap, or
        ready: each planned row counts in exactly one, and states add up to the rows."""
        loaded, _ = ledger
        with db.engine.connect() as conn:
            status = campaign_status(conn, config=loaded, now=NOW)
        line = _line(status, "announcement")
        assert (line.waiting.not_due, line.waiting.window, line.waiting.cap) == (1, 1, 1)
        assert line.waiting.ready == 1
        assert line.states["planned"] == line.waiting.total == 4
        assert (line.states["unknown"], line.states["failed"], line.states["accepted"]) == (1, 1, 1)
        assert line.rows == 7
        assert status.ledger_rows == 12 == sum(status.totals().values())
        assert line.next_due == NOW  # rows are ready now

    def test_every_phase_and_notice_is_listed_with_its_next_moment(
        self, db: Database, ledger: tuple[HeraldConfig, list[int]]
    ) -> None:
        """Config phases and each segment's notices are lines even without rows; a phase
        waiting on a closed window goes next when that window opens; a notice not yet due
        goes on its day."""
        loaded, _ = ledger
        with db.engine.connect() as conn:
            status = campaign_status(conn, config=loaded, now=NOW)
        assert _line(status, "deprecation").next_due == SINGAPORE_OPENS
        for segment, deadline in loaded.campaign.sunset.items():
            for offset in loaded.campaign.notices.offsets_days:
                line = _line(status, notice_message(offset, deadline), segment)
                assert line.starts is not None and line.offset == offset
                if not line.rows:
                    assert line.next_due is not None and line.next_due.date() >= line.starts
        t90 = _line(status, notice_message(90, loaded.campaign.sunset["standard"]), "standard")
        assert (t90.states["suppressed"], t90.states["expired"]) == (1, 1)

    def test_what_needs_a_person_names_the_command_that_settles_it(
        self, db: Database, ledger: tuple[HeraldConfig, list[int]]
    ) -> None:
        """Unknown and failed rows, a paused phase and webhook events that failed to apply
        are listed, each with its command; approval is shown per phase."""
        loaded, _ = ledger
        campaign = loaded.campaign.id
        set_paused(db.engine, campaign=campaign, message="deprecation", paused=True, reason="hold")
        approve(db.engine, campaign=campaign, message="announcement", note="checked")
        with db.engine.begin() as conn:
            batch = conn.execute(
                insert(WEBHOOK_BATCH).values(received_at=NOW, body=b"[]", events=1)
            ).inserted_primary_key[0]
            conn.execute(
                insert(WEBHOOK_EVENT_FAILURE).values(
                    batch_id=batch, position=0, raw="{}", error="bad", failed_at=NOW
                )
            )
        with db.engine.connect() as conn:
            status = campaign_status(conn, config=loaded, now=NOW)
        attention = "\n".join(status.attention)
        assert "announcement: 1 unknown" in attention
        assert "herald deliveries unknown --phase announcement" in attention
        assert "announcement: 1 failed: herald phase status announcement" in attention
        assert "deprecation is paused (hold): herald phase resume deprecation" in attention
        assert "1 webhook event(s) failed to apply: herald webhooks failures" in attention
        assert _line(status, "announcement").approved_by
        assert not _line(status, "announcement").needs_approval
        assert _line(status, "deprecation").needs_approval


class TestStatusCommand:
    @pytest.mark.usefixtures("ledger")
    def test_json_adds_up_and_exit_3_when_a_person_is_needed(self, db: Database) -> None:
        """`herald status --json` prints one document whose lines add up to the ledger, and
        exits 3 while rows are unknown or failed."""
        result = CliRunner().invoke(app, ["status", "--json", "--at", NOW.isoformat()])
        assert result.exit_code == 3, result.output
        document = json.loads(result.output)
        assert document["ledger_rows"] == db.count("delivery")
        assert sum(line["rows"] for line in document["messages"]) == db.count("delivery")
        assert document["needs_attention"]

    @pytest.mark.usefixtures("ledger")
    def test_the_table_names_each_line(self) -> None:
        """The terminal view shows phases, each segment's notices and the reasons rows wait."""
        result = CliRunner().invoke(
            app, ["status", "--at", NOW.isoformat()], env={"COLUMNS": "200"}
        )
        assert result.exit_code == 3, result.output
        assert "announcement" in result.output
        assert "standard notices" in result.output and "T-90" in result.output
        assert "1 not due, 1 window, 1 cap, 1 ready" in result.output
        assert "Needs a person:" in result.output

    def test_a_bad_moment_is_a_usage_error(self) -> None:
        """`--at` that is not ISO-8601 exits 2 without a traceback."""
        result = CliRunner().invoke(app, ["status", "--at", "tomorrow"])
        assert result.exit_code == 2
        assert "Traceback" not in result.output


def _sender(pid: int, **values: Any) -> dict[str, Any]:
    """An unfinished announcement sender of this host with a fresh heartbeat."""
    return worker_row(
        "modular-migration-2027",
        "announcement",
        started_at=values.pop("started_at", NOW - timedelta(minutes=5)),
        heartbeat_at=values.pop("heartbeat_at", NOW - timedelta(seconds=30)),
        pid=pid,
        flow_run_id=values.pop("flow_run_id", "0f0e0d0c-1111-2222-3333-444455556666"),
        **values,
    )


def _batches(worker: dict[str, Any]) -> list[dict[str, Any]]:
    """40 recipients accepted in 20 seconds, 10 more claimed."""
    return [
        batch_row(
            worker,
            "accepted",
            40,
            created_at=NOW - timedelta(seconds=60),
            finished_at=NOW - timedelta(seconds=40),
        ),
        batch_row(worker, "claimed", 10, created_at=NOW - timedelta(seconds=35), requests=0),
    ]


def _status(*args: str) -> Any:
    return CliRunner().invoke(
        app, ["status", *args, "--at", NOW.isoformat()], env={"COLUMNS": "200"}
    )


class TestLiveSenders:
    def test_a_live_sender_is_listed_and_needs_no_person(self, db: Database) -> None:
        """A sender whose process runs on this host is in `--json`'s senders, alive, with
        its counts and rate, and is not something a person must look at."""
        sender = _sender(os.getpid())
        insert_senders(db.engine, [sender], _batches(sender))
        result = _status("--json")
        assert result.exit_code == 0, result.output
        document = json.loads(result.output)
        assert document["needs_attention"] == []
        (listed,) = document["senders"]
        assert listed["worker_id"] == sender["id"] and listed["alive"] is True
        assert (listed["host"], listed["pid"]) == (socket.gethostname(), os.getpid())
        assert listed["flow_run_id"] == sender["flow_run_id"]
        assert (listed["batches"], listed["accepted"], listed["in_flight"]) == (2, 40, 10)
        assert listed["rate"] == round(40 / 60, 2)  # from its first batch to now
        assert listed["heartbeat_age_seconds"] == 30.0
        assert listed["heartbeat_at"] == (NOW - timedelta(seconds=30)).isoformat()
        assert document["ledger_rows"] == sum(line["rows"] for line in document["messages"])

    def test_a_dead_sender_needs_a_person_and_exits_3(self, db: Database) -> None:
        """A sender whose process on this host has exited is listed as looking dead, however
        fresh its heartbeat, and the rerun that settles what it left needs a person."""
        sender = _sender(dead_pid(), heartbeat_at=NOW - timedelta(seconds=5))
        insert_senders(db.engine, [sender], _batches(sender))
        result = _status("--json")
        assert result.exit_code == 3, result.output
        document = json.loads(result.output)
        (listed,) = document["senders"]
        assert listed["alive"] is False
        (item,) = document["needs_attention"]
        assert f"announcement: sender {sender['id'][:8]}" in item
        assert "looks dead" in item and "10 row(s) in flight" in item
        assert "herald deliveries unknown --phase announcement" in item
        assert item.endswith(": herald phase send announcement --send")

    def test_the_table_lists_live_senders_only_when_there_are_some(self, db: Database) -> None:
        """The terminal view has a Live senders section, alive or looking dead, while
        unfinished senders exist; finished ones are not listed."""
        finished = _sender(os.getpid(), finished_at=NOW - timedelta(minutes=1), outcome="done")
        insert_senders(db.engine, [finished])
        quiet = _status()
        assert quiet.exit_code == 0, quiet.output
        assert "Live senders" not in quiet.output
        alive, dead = _sender(os.getpid()), _sender(dead_pid())
        insert_senders(db.engine, [alive, dead], _batches(alive))
        result = _status()
        assert result.exit_code == 3, result.output
        assert "Live senders" in result.output
        assert f"{socket.gethostname()}:{os.getpid()}" in result.output
        assert "0f0e0d0c" in result.output and "30 s ago" in result.output
        assert "alive" in result.output and "looks dead" in result.output
        assert "Needs a person:" in result.output

    def test_a_sender_elsewhere_is_judged_by_its_heartbeat(self, db: Database) -> None:
        """A sender on another host is alive while its heartbeat is younger than the
        campaign's worker lease, and looks dead after."""
        loaded = config()
        lease = timedelta(seconds=loaded.campaign.sending.worker_lease_seconds)
        recent = _sender(1, host="sender-1.example", heartbeat_at=NOW - lease / 2)
        stale = _sender(2, host="sender-2.example", heartbeat_at=NOW - lease)
        insert_senders(db.engine, [recent, stale])
        with db.engine.connect() as conn:
            status = campaign_status(conn, config=loaded, now=NOW)
        assert {s.stats.host: s.alive for s in status.senders} == {
            "sender-1.example": True,
            "sender-2.example": False,
        }
        (item,) = status.attention
        assert "(sender-2.example:2) looks dead (last heartbeat 5 min ago" in item
