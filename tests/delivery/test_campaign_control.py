"""The calendar command, approvals and the campaign-wide pause."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from typer.testing import CliRunner

from herald.cli.app import app
from herald.cli.common import console
from tests.support.bases import DAY, eligible, load_base
from tests.support.environment import Database


def words(output: str) -> str:
    return " ".join(output.replace("│", " ").split())


class TestSchedule:
    def test_the_calendar_lists_phases_and_notices_with_counts_and_warns(
        self, db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """Every phase and notice in order, audience counts, and notices due on closed days
        shown on the day they go."""
        loaded = load_base(db, tmp_path)
        # Wide enough for every cell on one line, whatever COLUMNS was when Rich started.
        monkeypatch.setattr(console, "width", 200)
        result = CliRunner().invoke(app, ["schedule", "--as-of", DAY.isoformat(), "--days", "500"])
        assert result.exit_code == 0, result.output
        text_ = words(result.output)
        preview_count = len(eligible(db, loaded, "preview"))
        assert f"Tue 2027-01-12 preview early_adopter {preview_count}" in text_
        assert (
            "Tue 2027-08-31 sunset-t30@2027-09-30 standard (not migrated); until 2027-09-23"
            in text_
        )
        assert text_.index("preview") < text_.index("announcement") < text_.index("deprecation")
        assert (
            "Thu 2028-03-23 sunset-t7@2028-03-31 conservative (not migrated); "
            "due Fri 2028-03-24, a closed day; until 2028-03-30"
        ) in text_
        assert "Fri 2028-03-31 sunset-t0@2028-03-31 conservative (not migrated); until" in text_
        assert "warning" not in text_


@pytest.mark.usefixtures("prefect_server")
class TestControl:
    def test_approvals_are_recorded_with_who_and_when(self, db: Database, tmp_path: Path) -> None:
        """`herald approve` and a send by hand both leave phase.approved in the audit log."""
        load_base(db, tmp_path)
        runner = CliRunner()
        approved = runner.invoke(app, ["approve", "deprecation", "--note", "legal ok"])
        assert approved.exit_code == 0 and "approved by" in approved.output
        sent = runner.invoke(
            app,
            ["phase", "send", "preview", "--send", "--ignore-window", "--as-of", DAY.isoformat()],
        )
        assert sent.exit_code == 0, sent.output
        with db.engine.connect() as conn:
            rows = conn.execute(
                text("SELECT phase, actor, detail FROM audit_log WHERE action = 'phase.approved'")
            ).all()
        assert {row.phase for row in rows} == {"deprecation", "preview"}
        assert all("@" in row.actor for row in rows)

    def test_a_campaign_pause_stops_every_phase_until_resumed(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Paused: a send claims nothing and says why; resumed: it sends."""
        loaded = load_base(db, tmp_path)
        runner = CliRunner()
        assert runner.invoke(app, ["campaign", "pause", "--reason", "incident 42"]).exit_code == 0
        args = ["phase", "send", "preview", "--send", "--ignore-window", "--as-of", DAY.isoformat()]
        paused = runner.invoke(app, args)
        assert paused.exit_code == 3 and "incident 42" in words(paused.output)
        assert db.count("delivery WHERE state = 'accepted'") == 0
        assert runner.invoke(app, ["campaign", "resume"]).exit_code == 0
        resumed = runner.invoke(app, args)
        assert resumed.exit_code == 0, resumed.output
        assert db.count("delivery WHERE state = 'accepted'") == len(eligible(db, loaded, "preview"))
