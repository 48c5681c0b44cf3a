"""Exit codes tell the truth, an expected error prints one clear line and no traceback, and
a process migrates the schema once, before its work.

`herald phase send` exits 3 whenever the phase's ledger holds failed or unknown rows, however
they got there (the rows a run recovers from a dead sender included). A missing API key, a
template that does not render or a bad config stop the run with exit 2; neither the terminal
nor Prefect's log shows a stack for them.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL
from sqlalchemy import update
from typer.testing import CliRunner

from herald import db as herald_db
from herald.cli.app import app
from herald.delivery import ledger, planning, recovery
from herald.models import DELIVERY, SEND_WORKER
from tests.support.bases import DAY, load_base
from tests.support.environment import ROOT, Database

pytestmark = pytest.mark.usefixtures("prefect_server")
CAMPAIGN = "modular-migration-2027"


def _herald(*args: str, env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "herald.cli", *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )


@pytest.fixture
def child_env(db: Database, templates_dir: Path) -> dict[str, str]:
    """A separate `herald` process's environment: this test's database, a writable copy of
    the templates, and the test session's Prefect server."""
    env = dict(os.environ)
    env.update(
        HERALD_DATABASE_URL=db.url,
        HERALD_TEMPLATES_DIR=str(templates_dir),
        PREFECT_API_URL=str(PREFECT_API_URL.value()),
        COLUMNS="300",
    )
    return env


def _dead_pid() -> int:
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid


class TestNoTraceback:
    def test_a_missing_api_key_is_one_line_and_exit_2(
        self, db: Database, tmp_path: Path, child_env: dict[str, str]
    ) -> None:
        """HERALD_TRANSPORT=sendgrid without SENDGRID_API_KEY: exit 2, the reason, no stack,
        nothing planned (the check runs before Prefect starts)."""
        load_base(db, tmp_path)
        env = {**child_env, "HERALD_TRANSPORT": "sendgrid"}
        env.pop("SENDGRID_API_KEY", None)
        done = _herald("phase", "send", "announcement", "--send", env=env)
        assert done.returncode == 2, done.stdout + done.stderr
        assert "SENDGRID_API_KEY is not set" in done.stderr
        assert "Traceback" not in done.stdout + done.stderr
        assert db.count("delivery") == 0

    def test_a_broken_template_stops_the_flow_without_a_stack(
        self, db: Database, tmp_path: Path, child_env: dict[str, str], templates_dir: Path
    ) -> None:
        """A misspelt variable fails the run inside Prefect: its log and the terminal say
        which template and line; no traceback anywhere; nothing planned; exit 2."""
        load_base(db, tmp_path)
        body = templates_dir / "announcement" / "body.txt"
        source = body.read_text(encoding="utf-8")
        body.write_text(
            source.replace("{% endblock %}\n", "{{ migration_deadlne }}\n{% endblock %}\n", 1),
            encoding="utf-8",
        )
        done = _herald("phase", "send", "announcement", "--send", env=child_env)
        output = done.stdout + done.stderr
        assert done.returncode == 2, output
        assert "announcement/body.txt" in output and "'migration_deadlne' is undefined" in output
        assert "Traceback" not in output
        assert "Nothing was sent." in done.stderr
        assert db.count("delivery") == 0


class TestPhaseExitCodes:
    def test_unknown_rows_recovered_from_a_dead_sender_make_the_run_exit_3(
        self, db: Database, tmp_path: Path
    ) -> None:
        """A sender died with a request in flight; the next run recovers its rows as unknown
        and sends the rest: it says so and exits 3, not 0."""
        loaded = load_base(db, tmp_path)
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        worker = recovery.start_worker(
            db.engine, campaign=CAMPAIGN, message="announcement", transport="outbox"
        )
        claimed = ledger.claim(db.engine, worker=worker, limit=10)
        assert claimed is not None
        ledger.mark_requesting(db.engine, batch_id=claimed.batch_id)
        with db.engine.begin() as conn:
            conn.execute(
                update(SEND_WORKER).where(SEND_WORKER.c.id == worker.id).values(pid=_dead_pid())
            )

        result = CliRunner().invoke(
            app,
            ["phase", "send", "announcement", "--send", "--ignore-window", "--as-of", str(DAY)],
            env={"COLUMNS": "300"},
        )

        assert result.exit_code == 3, result.output
        words = " ".join(result.output.split())  # however the console wrapped it
        assert "10 in-flight row(s) now unknown" in words
        assert "10 unknown" in words
        assert db.count("delivery WHERE state = 'unknown'") == 10
        assert db.count("delivery WHERE state = 'planned'") == 0

    def test_a_rerun_still_exits_3_while_failed_rows_wait_for_a_person(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Rows an earlier run left failed keep every later run at exit 3 until settled."""
        loaded = load_base(db, tmp_path)
        planning.plan(db.engine, config=loaded, phase="announcement", as_of=DAY)
        with db.engine.begin() as conn:
            first = conn.execute(
                DELIVERY.select().with_only_columns(DELIVERY.c.id).limit(1)
            ).scalar_one()
            conn.execute(
                update(DELIVERY)
                .where(DELIVERY.c.id == first)
                .values(state="failed", error="HTTP 400 from SendGrid: invalid address")
            )
        command = ["phase", "send", "announcement", "--send", "--ignore-window"]
        first_run = CliRunner().invoke(app, [*command, "--as-of", str(DAY)])
        rerun = CliRunner().invoke(app, [*command, "--as-of", str(DAY)])
        assert (first_run.exit_code, rerun.exit_code) == (3, 3), rerun.output
        assert "1 failed" in " ".join(rerun.output.split())
        resolved = CliRunner().invoke(
            app, ["deliveries", "resolve", "announcement", "--mark-sent", "--include-failed"]
        )
        assert resolved.exit_code == 0, resolved.output
        settled = CliRunner().invoke(app, [*command, "--as-of", str(DAY)])
        assert settled.exit_code == 0, settled.output


class TestSchemaOncePerProcess:
    def test_a_process_migrates_a_database_once_however_often_it_asks(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The first call migrates a database behind the schema; every later call (one per
        task, per batch) does not, so a schema change never lands in the middle of a send."""
        url = f"sqlite:///{tmp_path / 'behind.db'}"
        calls: list[str] = []
        monkeypatch.setattr(herald_db, "_migrated", set())
        monkeypatch.setattr(herald_db, "upgrade", lambda url, _revision="head": calls.append(url))
        for _ in range(5):
            herald_db.prepare_database(url)
        assert calls == [url]
        assert herald_db.prepare_database(url) is herald_db.get_engine(url)

    def test_a_database_at_the_head_is_used_without_running_alembic(
        self, db: Database, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """A database already at the newest migration is not handed to Alembic at all."""
        calls: list[str] = []
        monkeypatch.setattr(herald_db, "_migrated", set())
        monkeypatch.setattr(herald_db, "upgrade", lambda url, _revision="head": calls.append(url))
        assert herald_db.prepare_database(db.url) is db.engine
        assert calls == []
