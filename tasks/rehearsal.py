"""Rehearsal tasks: one simulated day's planning and synthetic telemetry, the ledger's state.

The sending of a simulated day goes through the ``deliver`` flow's function (see
:mod:`flows.deliver`); these wrap the rest of a visited day, one task run each. Which days
are visited is decided by plain reads in the flow (a day with nothing due costs no task run).
"""

from __future__ import annotations

from datetime import date

from prefect import task
from prefect.cache_policies import NO_CACHE

from herald.config import HeraldConfig
from herald.delivery import planning
from herald.sandbox.rehearsal import Behaviour, Draws, plan_day, telemetry_day
from tasks.common import database


@task(name="plan-day", cache_policy=NO_CACHE)
def plan_day_task(config: HeraldConfig, day: date) -> dict[str, int]:
    """Plan the phases dated ``day`` and the notices due and still valid on it."""
    return plan_day(database(), config, day)


@task(name="synthetic-telemetry", cache_policy=NO_CACHE)
def telemetry_day_task(
    config: HeraldConfig, day: date, behaviour: Behaviour, draw: Draws
) -> tuple[int, int]:
    """Synthetic responses to the day's sends and the day's migrations: (events, migrated)."""
    return telemetry_day(database(), config, day, behaviour, draw)


@task(name="count-accepted", cache_policy=NO_CACHE)
def accepted_rows_task(config: HeraldConfig) -> dict[str, int]:
    """Every message the campaign's ledger holds as sent, with its count."""
    with database().connect() as conn:
        return planning.accepted_rows(conn, campaign=config.campaign.id)
