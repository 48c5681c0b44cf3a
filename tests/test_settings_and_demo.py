"""Settings from the environment, analytics off by default, and a deterministic demo base."""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
from pathlib import Path

import pytest

from herald.sandbox.demo import write_demo_base
from herald.settings import Settings, TransportName


class TestSettings:
    def test_environment_overrides_defaults(self, monkeypatch: pytest.MonkeyPatch) -> None:
        """HERALD_* variables and SENDGRID_API_KEY are read; the key stays a secret."""
        monkeypatch.setenv("HERALD_TRANSPORT", "sendgrid")
        monkeypatch.setenv("HERALD_SENDGRID_API_HOST", "http://127.0.0.1:9999")
        monkeypatch.setenv("SENDGRID_API_KEY", "SG.secret")
        settings = Settings()
        assert settings.transport is TransportName.SENDGRID
        assert settings.sendgrid_api_host == "http://127.0.0.1:9999"
        assert settings.sendgrid_api_key is not None
        assert settings.sendgrid_api_key.get_secret_value() == "SG.secret"
        assert "SG.secret" not in repr(settings)

    def test_default_database_is_sqlite_under_var(self, herald_env: Path) -> None:
        """With no URL set, Herald uses <var>/herald.db."""
        assert Settings().effective_database_url == f"sqlite:///{herald_env / 'herald.db'}"

    def test_dotenv_file_is_read(self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        """A .env file in the working directory sets values too."""
        monkeypatch.chdir(tmp_path)
        monkeypatch.delenv("HERALD_VAR_DIR")
        (tmp_path / ".env").write_text("HERALD_VAR_DIR=/srv/herald\n")
        assert Settings().var_dir == Path("/srv/herald")

    def test_importing_herald_turns_analytics_off(self) -> None:
        """A fresh interpreter that imports herald has Prefect and GX analytics disabled."""
        env = {
            k: v
            for k, v in os.environ.items()
            if k not in {"PREFECT_SERVER_ANALYTICS_ENABLED", "GX_ANALYTICS_ENABLED"}
        }
        code = (
            "import herald, os; print(os.environ['PREFECT_SERVER_ANALYTICS_ENABLED'], "
            "os.environ['GX_ANALYTICS_ENABLED'])"
        )
        out = subprocess.run(
            [sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True
        ).stdout.split()
        assert out == ["false", "false"]

    def test_importing_herald_batches_prefects_task_run_records(self) -> None:
        """A Prefect server started from a process that imported herald (the temporary one,
        the cluster's) records task runs in batches, as Prefect itself reads its settings;
        an operator's own value wins."""
        names = (
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_BATCH_SIZE",
            "PREFECT_SERVER_SERVICES_TASK_RUN_RECORDER_FLUSH_INTERVAL",
        )
        env = {k: v for k, v in os.environ.items() if k not in names}
        code = (
            "import herald\n"
            "from prefect.settings import get_current_settings\n"
            "recorder = get_current_settings().server.services.task_run_recorder\n"
            "print(recorder.batch_size, recorder.flush_interval)"
        )

        def recorder(**overrides: str) -> list[str]:
            return subprocess.run(
                [sys.executable, "-c", code],
                env={**env, **overrides},
                capture_output=True,
                text=True,
                check=True,
            ).stdout.split()

        assert recorder() == ["100", "1.0"]
        assert recorder(**{names[0]: "1", names[1]: "5"}) == ["1", "5.0"]


class TestDemoBase:
    def test_same_seed_gives_identical_files(self, tmp_path: Path) -> None:
        """The synthetic base is deterministic: same seed and size, same bytes."""
        first = write_demo_base(tmp_path / "a", accounts=100, seed=11)
        second = write_demo_base(tmp_path / "b", accounts=100, seed=11)
        other = write_demo_base(tmp_path / "c", accounts=100, seed=12)

        def digest(path: Path) -> str:
            return hashlib.sha256(path.read_bytes()).hexdigest()

        assert digest(first.accounts_csv) == digest(second.accounts_csv)
        assert digest(first.contacts_csv) == digest(second.contacts_csv)
        assert digest(first.accounts_csv) != digest(other.accounts_csv)
        assert (first.accounts, first.contacts) == (100, 300)
