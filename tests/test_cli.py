"""The herald command: help everywhere, trustworthy exit codes, nothing done on bad input."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from herald.cli import app
from herald.cli.common import ExitCode
from tests.support.csvfiles import ACCOUNT_HEADER, CONTACT_HEADER, account, contact, write_csv
from tests.support.environment import Database

COMMANDS = [
    [],
    ["db"],
    ["db", "upgrade"],
    ["config"],
    ["config", "check"],
    ["customers"],
    ["customers", "import"],
    ["segment"],
    ["demo"],
    ["settings"],
    ["templates", "check"],
    ["preview"],
    ["phase", "send"],
    ["phase", "pause"],
    ["phase", "resume"],
    ["phase", "status"],
    ["deliveries", "unknown"],
    ["deliveries", "resolve"],
    ["campaign", "pause"],
    ["campaign", "resume"],
    ["approve"],
    ["schedule"],
    ["rehearse"],
    ["webhooks", "serve"],
    ["webhooks", "process"],
    ["webhooks", "failures"],
    ["webhooks", "retry"],
    ["telemetry", "ingest"],
    ["telemetry", "status"],
    ["telemetry", "override"],
    ["metrics", "show"],
    ["phase", "proof"],
    ["status"],
    ["deliveries", "export"],
    ["events", "export"],
    ["contact", "show"],
    ["suppressions", "list"],
    ["suppressions", "add"],
    ["suppressions", "remove"],
    ["suppressions", "import"],
    ["deploy"],
]


@pytest.fixture
def runner() -> CliRunner:
    return CliRunner()


class TestHelp:
    @pytest.mark.parametrize("command", COMMANDS, ids=lambda c: " ".join(c) or "herald")
    def test_every_command_has_help(self, runner: CliRunner, command: list[str]) -> None:
        """`--help` works on every command and sub-command and exits 0."""
        result = runner.invoke(app, [*command, "--help"])
        assert result.exit_code == 0, result.output
        assert "Usage: herald" in result.output


class TestFirstContact:
    @pytest.mark.parametrize("flag", ["--version", "-V"])
    def test_version_prints_the_package_version(self, runner: CliRunner, flag: str) -> None:
        """`herald --version` prints the installed version and exits 0."""
        from herald import __version__

        result = runner.invoke(app, [flag])
        assert result.exit_code == 0, result.output
        assert result.output.strip() == f"herald {__version__}"

    def test_h_is_help(self, runner: CliRunner) -> None:
        """`-h` is `--help`, on the command and on a group."""
        for command in ([], ["phase"]):
            result = runner.invoke(app, [*command, "-h"])
            assert result.exit_code == 0, result.output
            assert "Usage: herald" in result.output


class TestImportCommand:
    def test_rejected_rows_exit_3_and_are_listed(
        self, db: Database, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A partial import exits 3 and prints each rejected line with its reason."""
        accounts = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER, [account(1), account(2)])
        contacts = write_csv(
            tmp_path / "c.csv",
            CONTACT_HEADER,
            [contact(1, 1), contact(2, 2, email="bad@"), contact(3, 7)],
        )
        result = runner.invoke(app, ["customers", "import", str(accounts), str(contacts)])
        assert result.exit_code == ExitCode.PARTIAL, result.output
        assert f"{contacts}:3: invalid e-mail 'bad@'" in result.output
        assert f"{contacts}:4: unknown account A00007" in result.output
        assert "2 row(s) rejected" in result.output
        assert db.count("contact") == 1

    def test_clean_import_exits_0(self, db: Database, runner: CliRunner, tmp_path: Path) -> None:
        """An import without rejects exits 0."""
        accounts = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER, [account(1)])
        result = runner.invoke(app, ["customers", "import", str(accounts)])
        assert result.exit_code == ExitCode.OK, result.output
        assert db.count("account") == 1

    def test_missing_file_exits_2_and_imports_nothing(
        self, db: Database, runner: CliRunner, tmp_path: Path
    ) -> None:
        """A missing contacts file stops the command before the accounts are imported."""
        accounts = write_csv(tmp_path / "a.csv", ACCOUNT_HEADER, [account(1)])
        result = runner.invoke(app, ["customers", "import", str(accounts), str(tmp_path / "x")])
        assert result.exit_code == ExitCode.INVALID
        assert "file not found" in result.stderr
        assert db.count("account") == 0


class TestConfigErrors:
    def test_bad_config_stops_segment_before_any_work(
        self, db: Database, runner: CliRunner, config_dir: Path
    ) -> None:
        """`herald segment` with a bad rule field exits 2 naming file, line and key path."""
        path = config_dir / "segments.yaml"
        path.write_text(path.read_text().replace("{field: tier,", "{field: teir,"))
        result = runner.invoke(app, ["segment", "--as-of", "2026-11-24"])
        assert result.exit_code == ExitCode.INVALID
        assert f"{path}:" in result.stderr
        assert "rules[3].when.all[0].field" in result.stderr
        assert db.count("segment_assignment") == 0

    def test_bad_config_stops_demo_before_import(
        self, db: Database, runner: CliRunner, config_dir: Path
    ) -> None:
        """`herald demo` checks the config before generating or importing anything."""
        path = config_dir / "campaign.yaml"
        path.write_text(path.read_text().replace("preview: 2027-01-12", "preview: 2027-01-32"))
        result = runner.invoke(app, ["demo", "--accounts", "10"])
        assert result.exit_code == ExitCode.INVALID
        assert "phases.preview" in result.stderr
        assert db.count("account") == 0

    def test_config_check_succeeds_on_the_shipped_config(self, runner: CliRunner) -> None:
        """`herald config check` exits 0 on config/ as committed."""
        result = runner.invoke(app, ["config", "check"])
        assert result.exit_code == 0, result.output
        assert "Config OK" in result.output

    def test_bad_date_option_is_a_usage_error(self, runner: CliRunner) -> None:
        """`--as-of` that is not a date exits 2 with the reason."""
        result = runner.invoke(app, ["segment", "--as-of", "tomorrow"])
        assert result.exit_code == ExitCode.INVALID
        assert "not a date" in result.output + result.stderr


class TestSecrets:
    def test_settings_never_print_the_api_key_or_db_password(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """`herald settings` shows that a key is set, never its value or the DB password."""
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.very-secret-key")
        monkeypatch.setenv("HERALD_DATABASE_URL", "postgresql+psycopg://herald:pw123@db/herald")
        result = runner.invoke(app, ["settings"])
        assert result.exit_code == 0
        assert "very-secret-key" not in result.output
        assert "pw123" not in result.output
        assert "set (hidden)" in result.output

    def test_database_errors_mask_the_password(
        self, runner: CliRunner, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """An unreachable database is reported (exit 1) without its password."""
        monkeypatch.setenv(
            "HERALD_DATABASE_URL", "postgresql+psycopg://herald:pw123@127.0.0.1:9/herald"
        )
        result = runner.invoke(app, ["db", "upgrade"])
        assert result.exit_code == ExitCode.FAILED
        assert "127.0.0.1" in result.stderr
        assert "pw123" not in result.stderr + result.output
