"""What every command shares: exit codes, the console, error handling, option parsing."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from enum import IntEnum
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from sqlalchemy import Engine
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from herald.config import PHASES, HeraldConfig, PhaseName, load_config
from herald.db import prepare_database
from herald.errors import HeraldError
from herald.settings import Settings, get_settings

# What Prefect raises when its temporary server does not answer in time.
EPHEMERAL_TIMEOUT = "Timed out while attempting to connect to ephemeral Prefect API server"

console = Console(highlight=False)
# Tables piped to a file keep a readable width (a pipe would get 80 columns).
_piped_tables = Console(highlight=False, width=140)


def tables() -> Console:
    """The console wide tables print on: the terminal's, or 140 columns when piped."""
    return console if console.is_terminal else _piped_tables


# Errors are never hard-wrapped: each problem stays one greppable line.
errors = Console(stderr=True, highlight=False, soft_wrap=True)

# The options and arguments several commands share, so that each reads the same everywhere.
AsOf = Annotated[
    str | None, typer.Option("--as-of", help="Day to act as of, YYYY-MM-DD (default today, UTC).")
]
PhaseArg = Annotated[
    str, typer.Argument(help="preview, announcement, deprecation or sunset.", show_default=False)
]
# How a metric's status is coloured in the terminal.
STATUS_STYLE = {
    "on track": "green",
    "at risk": "yellow",
    "off track": "red",
    "not started": "dim",
    "met": "green",
    "missed": "red",
}


class ExitCode(IntEnum):
    """The exit status of every ``herald`` command."""

    OK = 0
    FAILED = 1  # the work itself failed (database unreachable, a flow run failed)
    INVALID = 2  # bad usage, config or input header: nothing was done
    PARTIAL = 3  # finished, but not all of it: rows rejected, sends failed or unknown, paused


def safe_url(url: str) -> str:
    """A database URL fit to print: the password masked."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # an unparsable URL may still hold a secret: print none of it
        return "<unparsable database URL>"


@contextmanager
def guard() -> Iterator[None]:
    """Turn Herald's known failures into a clear message and the right exit code."""
    try:
        yield
    except HeraldError as error:
        # Each says what is wrong and what to do (and, where it matters, that nothing was
        # sent or imported); nothing was done.
        outcome = f"\n{error.outcome}" if error.outcome else ""
        errors.print(f"[bold red]error:[/] {escape(str(error))}{outcome}")
        raise typer.Exit(ExitCode.INVALID) from None
    except SQLAlchemyError as error:
        url = safe_url(get_settings().effective_database_url)
        # The driver's message names the host and the problem; it never carries the password.
        reason = str(getattr(error, "orig", None) or error).strip().splitlines()[0]
        errors.print(f"[bold red]error:[/] database {url}: {reason}")
        raise typer.Exit(ExitCode.FAILED) from None
    except RuntimeError as error:
        if not str(error).startswith(EPHEMERAL_TIMEOUT):
            raise
        errors.print(
            "[bold red]error:[/] Prefect's temporary server did not start in time "
            "(PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS). Start a server "
            "(`prefect server start`) and set PREFECT_API_URL=http://127.0.0.1:4200/api, "
            "or allow it longer. Nothing was done."
        )
        raise typer.Exit(ExitCode.FAILED) from None


@contextmanager
def flow_run_here() -> Iterator[None]:
    """Around a flow a command runs in its own process: without Prefect's heartbeat thread.
    Heartbeats tell a server that a worker's long run is alive; here the command's exit says
    it, while stopping that thread costs up to a second per run (it sleeps in 1 s steps)."""
    from prefect.settings import temporary_settings

    with temporary_settings(updates={"flows.heartbeat_frequency": None}):
        yield


def settings() -> Settings:
    """The settings of this process."""
    return get_settings()


def campaign_config() -> HeraldConfig:
    """The validated campaign config (raises ConfigError, which ``guard`` reports)."""
    return load_config(settings().config_dir)


def database() -> Engine:
    """The configured database, migrated to the current schema."""
    return prepare_database(settings().effective_database_url)


def parse_day(value: str | None) -> date:
    """A YYYY-MM-DD option value (default today, UTC)."""
    if value is None:
        return datetime.now(UTC).date()
    try:
        return date.fromisoformat(value)
    except ValueError:
        raise typer.BadParameter(f"{value!r} is not a date (YYYY-MM-DD)") from None


def parse_phase(value: str) -> PhaseName:
    """A phase name argument."""
    for phase in PHASES:
        if value == phase:
            return phase
    raise typer.BadParameter(f"{value!r} is not a phase (one of {', '.join(PHASES)})")
