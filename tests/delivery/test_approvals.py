"""An approval is the state of the phase's control: set beside its pause, never instead of
it, and carried over from the audit log by the migration that introduced it."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from sqlalchemy import insert, select
from typer.testing import CliRunner

from herald.cli.app import app
from herald.db import downgrade, upgrade
from herald.delivery.controls import (
    CAMPAIGN_WIDE,
    approval,
    approve,
    paused_reason,
    set_paused,
)
from herald.models import AUDIT_LOG, PHASE_CONTROL
from tests.support.environment import Database

CAMPAIGN = "c"


def controls(db: Database) -> list[tuple[str, bool, str | None, str | None]]:
    with db.engine.connect() as conn:
        rows = conn.execute(
            select(
                PHASE_CONTROL.c.message,
                PHASE_CONTROL.c.paused,
                PHASE_CONTROL.c.approved_by,
                PHASE_CONTROL.c.approval_note,
            )
        )
        return sorted((str(m), bool(p), by, note) for m, p, by, note in rows)


class TestApproval:
    def test_approve_sets_the_control_and_still_writes_the_audit_log(self, db: Database) -> None:
        """The latest approval is the control's; each one is an audit entry too."""
        approve(db.engine, campaign=CAMPAIGN, message="announcement", note="first", who="ann")
        approve(db.engine, campaign=CAMPAIGN, message="announcement", note="legal ok", who="bob")
        with db.engine.connect() as conn:
            got = approval(conn, campaign=CAMPAIGN, message="announcement")
            assert approval(conn, campaign=CAMPAIGN, message="preview") is None
            entries = conn.execute(
                select(AUDIT_LOG.c.actor).where(AUDIT_LOG.c.action == "phase.approved")
            ).all()
        assert got is not None and (got.by, got.note) == ("bob", "legal ok")
        assert got.at.tzinfo is not None or db.backend == "sqlite"
        assert sorted(actor for (actor,) in entries) == ["ann", "bob"]
        assert controls(db) == [("announcement", False, "bob", "legal ok")]

    def test_pausing_and_approving_leave_each_other_alone(self, db: Database) -> None:
        """A paused phase approved stays paused; resuming keeps the approval; the campaign-wide
        control pauses everything and approves nothing."""
        set_paused(db.engine, campaign=CAMPAIGN, message="announcement", paused=True, reason="x")
        approve(db.engine, campaign=CAMPAIGN, message="announcement", who="ann")
        set_paused(
            db.engine, campaign=CAMPAIGN, message=CAMPAIGN_WIDE, paused=True, reason="incident"
        )
        with db.engine.connect() as conn:
            assert paused_reason(conn, campaign=CAMPAIGN, message="announcement") == "incident"
        set_paused(db.engine, campaign=CAMPAIGN, message="announcement", paused=False, reason="ok")
        set_paused(db.engine, campaign=CAMPAIGN, message=CAMPAIGN_WIDE, paused=False, reason="ok")
        with db.engine.connect() as conn:
            assert paused_reason(conn, campaign=CAMPAIGN, message="announcement") is None
            assert approval(conn, campaign=CAMPAIGN, message="announcement") is not None
            assert approval(conn, campaign=CAMPAIGN, message=CAMPAIGN_WIDE) is None
        assert controls(db) == [("*", False, None, None), ("announcement", False, "ann", "")]
        with pytest.raises(ValueError, match="phase by phase"):
            approve(db.engine, campaign=CAMPAIGN, message=CAMPAIGN_WIDE, who="ann")


class TestMigration:
    def test_the_latest_audited_approval_of_each_phase_survives_the_upgrade(
        self, db: Database
    ) -> None:
        """0007 copies the latest "phase.approved" entry per (campaign, phase) onto its control,
        creating the control where there was none and keeping a pause as it was."""
        downgrade(db.url, "0006")
        try:
            with db.engine.begin() as conn:
                conn.execute(  # the columns 0006 has
                    insert(PHASE_CONTROL).values(
                        campaign="c",
                        message="preview",
                        paused=True,
                        reason="legal",
                        changed_by="ops",
                        changed_at=datetime(2026, 11, 20, 8, tzinfo=UTC),
                    )
                )
                conn.execute(
                    insert(AUDIT_LOG),
                    [
                        {
                            "at": datetime(2026, 11, day, 9, tzinfo=UTC),
                            "actor": actor,
                            "action": action,
                            "campaign": "c",
                            "phase": phase,
                            "detail": {"note": note},
                        }
                        for day, actor, action, phase, note in (
                            (21, "ann", "phase.approved", "announcement", "old"),
                            (23, "bob", "phase.approved", "announcement", "new"),
                            (22, "eve", "phase.rejected", "announcement", "no"),
                            (22, "ann", "phase.approved", "preview", "checked"),
                        )
                    ],
                )
        finally:
            upgrade(db.url)
        assert controls(db) == [
            ("announcement", False, "bob", "new"),
            ("preview", True, "ann", "checked"),
        ]
        with db.engine.connect() as conn:
            got = approval(conn, campaign="c", message="announcement")
            assert paused_reason(conn, campaign="c", message="preview") == "legal"
        assert got is not None
        at = got.at if got.at.tzinfo else got.at.replace(tzinfo=UTC)  # SQLite keeps no zone
        assert at == datetime(2026, 11, 23, 9, tzinfo=UTC)


@pytest.mark.usefixtures("db", "config_dir")
class TestPhaseStatusShowsTheApproval:
    def test_status_says_who_approved_or_that_a_scheduled_send_waits(self) -> None:
        runner = CliRunner()
        before = runner.invoke(app, ["phase", "status", "deprecation"])
        assert before.exit_code == 0, before.output
        assert "Not approved: a scheduled real send waits" in before.output
        assert runner.invoke(app, ["approve", "deprecation", "--note", "legal ok"]).exit_code == 0
        after = runner.invoke(app, ["phase", "status", "deprecation"])
        assert after.exit_code == 0, after.output
        assert "Approved by " in after.output and "UTC: legal ok" in after.output
        assert "Not approved" not in after.output
