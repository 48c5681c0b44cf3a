"""Shared fixtures: a migrated database per test on SQLite and on Postgres, and one Prefect server.

Every test that takes ``db`` runs twice, once per backend. Postgres tests use a database of
their own, created for the session on the server at ``HERALD_TEST_POSTGRES_URL`` (default:
127.0.0.1:5432, trust auth) and dropped afterwards. Where no Postgres answers, those tests are
deselected and the run ends by saying so plainly; with ``HERALD_TEST_POSTGRES=required`` (as
``.ci/run`` sets) a missing Postgres is an error instead. Tests marked ``chromium`` (a report
opened in headless Chromium) are handled the same way, with ``HERALD_TEST_CHROMIUM``.
"""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from herald.db import get_engine, upgrade
from herald.settings import get_settings
from herald.testing.fake_sendgrid import FakeSendGrid
from herald.testing.synthetic import empty_postgres, set_sending, temporary_database
from tests.support.environment import (
    CHROMIUM,
    CHROMIUM_REQUIRED,
    KEY,
    POSTGRES_REQUIRED,
    POSTGRES_URL,
    ROOT,
    UNSUBSCRIBE_SECRET,
    Database,
)


def _postgres_problem() -> str | None:
    try:
        engine = create_engine(POSTGRES_URL, connect_args={"connect_timeout": 3})
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        engine.dispose()
    except Exception as error:  # any failure means "not available": report it, don't crash
        return str(error).strip().splitlines()[0]
    return None


def pytest_configure(config: pytest.Config) -> None:
    config.stash[_PROBLEM] = _postgres_problem()
    if POSTGRES_REQUIRED and config.stash[_PROBLEM] is not None:
        raise pytest.UsageError(
            f"HERALD_TEST_POSTGRES=required but Postgres at "
            f"{make_url(POSTGRES_URL).render_as_string(hide_password=True)} is not reachable: "
            f"{config.stash[_PROBLEM]}"
        )
    if CHROMIUM_REQUIRED and CHROMIUM is None:
        raise pytest.UsageError(
            "HERALD_TEST_CHROMIUM=required but no chromium on PATH (apt-get install chromium)"
        )


_PROBLEM = pytest.StashKey[str | None]()


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    # (Where either is required, pytest_configure has stopped the run already.)
    if CHROMIUM is None:
        _deselect(config, items, "chromium")
    if config.stash[_PROBLEM] is not None:
        _deselect(config, items, "postgres")
    _slowest_files_first(items)


def _slowest_files_first(items: list[pytest.Item]) -> None:
    """Order files by their ``slow(seconds=...)`` mark, slowest first, the rest as collected.

    ``make test`` hands whole files to its workers in this order (``--dist loadfile``): a
    long file started last would keep one worker busy while the other has nothing left.
    """

    def seconds(item: pytest.Item) -> float:
        mark = item.get_closest_marker("slow")
        return float(mark.kwargs.get("seconds", 0)) if mark else 0.0

    cost: dict[str, float] = {}
    for item in items:
        cost[item.path.as_posix()] = max(cost.get(item.path.as_posix(), 0.0), seconds(item))
    items.sort(key=lambda item: -cost[item.path.as_posix()])  # stable: within a file as before


def _deselect(config: pytest.Config, items: list[pytest.Item], marker: str) -> None:
    """Leave out the tests marked ``marker`` (the terminal summary says so, in red)."""
    dropped = [item for item in items if item.get_closest_marker(marker)]
    if dropped:
        items[:] = [item for item in items if not item.get_closest_marker(marker)]
        config.hook.pytest_deselected(items=dropped)


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    # Under pytest-xdist the workers deselect; this process knows only whether they had to.
    config = terminalreporter.config
    if CHROMIUM is None:
        terminalreporter.write_line(
            "CHROMIUM TESTS NOT RUN: the tests that open the weekly report in headless "
            "Chromium were deselected: no chromium on PATH (apt-get install chromium).",
            red=True,
            bold=True,
        )
    else:
        terminalreporter.write_line(f"Chromium tests ran with {CHROMIUM}")
    problem = config.stash.get(_PROBLEM, None)
    where = make_url(POSTGRES_URL).render_as_string(hide_password=True)
    if problem is not None:
        terminalreporter.write_line(
            f"POSTGRES SUITE NOT RUN: the Postgres tests were deselected because {where} is "
            f"not reachable ({problem}). Only SQLite was tested.",
            red=True,
            bold=True,
        )
    else:
        terminalreporter.write_line(f"Postgres suite ran against {where}")


# --------------------------------------------------------------------------- databases


@pytest.fixture(scope="session")
def _sqlite_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sqlite-template") / "herald.db"
    upgrade(f"sqlite:///{path}")
    get_engine(f"sqlite:///{path}").dispose()
    return path


@pytest.fixture(scope="session")
def _postgres_database(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    with temporary_database("postgres", tmp_path_factory.mktemp("pg"), POSTGRES_URL) as url:
        upgrade(url)
        yield url
        get_engine(url).dispose()


@pytest.fixture(
    params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)],
)
def db(
    request: pytest.FixtureRequest, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Database]:
    """An empty database at the current schema, on SQLite and on Postgres; Herald points at it."""
    if request.param == "sqlite":
        path = tmp_path / "herald.db"
        shutil.copy(request.getfixturevalue("_sqlite_template"), path)
        database = Database("sqlite", f"sqlite:///{path}")
    else:
        url = request.getfixturevalue("_postgres_database")
        empty_postgres(url)
        database = Database("postgres", url)
    monkeypatch.setenv("HERALD_DATABASE_URL", database.url)
    yield database
    if database.backend == "sqlite":
        database.engine.dispose()


@pytest.fixture(autouse=True)
def herald_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """Each test gets its own var/ directory and reads settings afresh."""
    var = tmp_path / "var"
    monkeypatch.setenv("HERALD_VAR_DIR", str(var))
    monkeypatch.setenv("HERALD_CONFIG_DIR", str(ROOT / "config"))
    monkeypatch.setenv("HERALD_TEMPLATES_DIR", str(ROOT / "templates"))
    monkeypatch.delenv("HERALD_DATABASE_URL", raising=False)
    monkeypatch.delenv("SENDGRID_API_KEY", raising=False)
    get_settings.cache_clear()
    yield var
    get_settings.cache_clear()


@pytest.fixture
def config_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of config/ that Herald reads instead of the real one."""
    directory = tmp_path / "config"
    shutil.copytree(ROOT / "config", directory)
    monkeypatch.setenv("HERALD_CONFIG_DIR", str(directory))
    get_settings.cache_clear()
    return directory


@pytest.fixture
def templates_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A writable copy of templates/ that Herald reads instead of the real one."""
    directory = tmp_path / "templates"
    shutil.copytree(ROOT / "templates", directory)
    monkeypatch.setenv("HERALD_TEMPLATES_DIR", str(directory))
    get_settings.cache_clear()
    return directory


# --------------------------------------------------------------------------- prefect


@pytest.fixture(scope="session")
def prefect_server() -> Iterator[None]:
    """One ephemeral Prefect server (with its own database) for every flow test."""
    from prefect.logging.configuration import setup_logging
    from prefect.testing.utilities import prefect_test_harness

    # Prefect's console handler keeps the sys.stderr it first sees; bind it now, before a
    # CliRunner swaps in a stream that it closes after the invocation.
    setup_logging()
    with prefect_test_harness(server_startup_timeout=300):
        yield


# --------------------------------------------------------------------------- fake SendGrid


@pytest.fixture
def fast_config(config_dir: Path) -> Path:
    """The campaign config with quick retries and no pace limit (tests wait for nothing)."""
    set_sending(config_dir, backoff_seconds=0.01, backoff_max_seconds=0.05, rate_per_second=None)
    return config_dir


@pytest.fixture
def sendgrid_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[FakeSendGrid]:
    """A fake SendGrid, and Herald pointed at it with the sendgrid transport."""
    with FakeSendGrid(api_key=KEY, seed=11) as fake:
        monkeypatch.setenv("HERALD_TRANSPORT", "sendgrid")
        monkeypatch.setenv("HERALD_SENDGRID_API_HOST", fake.url)
        monkeypatch.setenv("SENDGRID_API_KEY", KEY)
        monkeypatch.setenv("HERALD_UNSUBSCRIBE_SECRET", UNSUBSCRIBE_SECRET)
        get_settings.cache_clear()
        yield fake
    get_settings.cache_clear()
