"""The step every flow starts with (preflight), and how tasks reach the database."""

from __future__ import annotations

import logging
from typing import TypeVar, cast

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote
from sqlalchemy import Engine

from herald.config import HeraldConfig, load_config
from herald.db import prepare_database
from herald.errors import quiet_expected_tracebacks
from herald.settings import get_settings
from herald.telemetry.health import require_healthy

# A flow run stopped by an expected error (bad config, template, key) logs its message,
# not a stack: on the terminal, in a worker's log and in the Prefect UI.
quiet_expected_tracebacks()


class _CompletedAtDebug(logging.Filter):
    """A task run that completed is logged at DEBUG, not INFO: a phase of a million
    recipients runs a thousand batches, and their "Finished in state Completed()" lines would
    bury the progress and summaries (failures stay at ERROR)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and str(record.msg).startswith(
            "Finished in state Completed"
        ):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return TASK_RUNS.isEnabledFor(logging.DEBUG)
        return True


TASK_RUNS = logging.getLogger("prefect.task_runs")
if not any(isinstance(f, _CompletedAtDebug) for f in TASK_RUNS.filters):
    TASK_RUNS.addFilter(_CompletedAtDebug())


@task(name="preflight", cache_policy=NO_CACHE)
def preflight(flow_name: str, telemetry: bool = True) -> HeraldConfig:
    """Everything a run needs before it works, checked once: load and validate
    config/*.yaml, migrate the database to the current schema (once per process), and unless
    ``telemetry`` is false (the ingest itself) refuse when a telemetry source the flow relies
    on was rejected. Any problem fails the run here, before anything is written or sent."""
    config = load_config(get_settings().config_dir)
    engine = database()
    if telemetry:
        require_healthy(engine, config=config, flow_name=flow_name)
    return config


T = TypeVar("T")


def as_is(value: T) -> T:
    """A large task argument (no futures inside) passed without Prefect walking through it
    to find any: a report's metrics and charts would cost more to visit than to compute."""
    return cast(T, quote(value))


def database() -> Engine:
    """The configured database, migrated to the current schema."""
    return prepare_database(get_settings().effective_database_url)
