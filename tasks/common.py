"""Tasks every flow starts with: load the campaign config, open the database."""

from __future__ import annotations

from typing import TypeVar, cast

from prefect import task
from prefect.cache_policies import NO_CACHE
from prefect.utilities.annotations import quote
from sqlalchemy import Engine

from herald.config import HeraldConfig, load_config
from herald.db import prepare_database
from herald.errors import quiet_expected_tracebacks
from herald.settings import get_settings

# A flow run stopped by an expected error (bad config, template, key) logs its message,
# not a stack: on the terminal, in a worker's log and in the Prefect UI.
quiet_expected_tracebacks()


@task(name="load-config", cache_policy=NO_CACHE)
def load_campaign_config() -> HeraldConfig:
    """Load and validate config/*.yaml; any problem fails the run before work starts."""
    return load_config(get_settings().config_dir)


T = TypeVar("T")


def as_is(value: T) -> T:
    """A large task argument (no futures inside) passed without Prefect walking through it
    to find any: a report's metrics and charts would cost more to visit than to compute."""
    return cast(T, quote(value))


def database() -> Engine:
    """The configured database, migrated to the current schema."""
    return prepare_database(get_settings().effective_database_url)
