"""Rehearsal tasks: one simulated day's planning, sending and synthetic telemetry, one task
run each, and the ledger's state at the end.

A day's sending delivers every message at every window opening of the day through
:func:`herald.delivery.sender.deliver_message`: the steps of the ``deliver`` flow as plain
calls, in one task run for the day (a rehearsal delivers hundreds of times: a task run per
step would be thousands). Which days are visited is decided by plain reads in the flow (a
day with nothing due costs no task run).
"""

from __future__ import annotations

from datetime import date, datetime

from prefect import get_run_logger, task
from prefect.cache_policies import NO_CACHE

from herald.config import HeraldConfig, MessageKind
from herald.delivery import planning
from herald.delivery.sender import Renderer, deliver_message
from herald.delivery.transports import get_transport
from herald.sandbox.marks import SUBJECT_PREFIX
from herald.sandbox.rehearsal import Behaviour, Draws, plan_day, send_day, telemetry_day
from herald.settings import TransportName, get_settings
from herald.unsubscribe.links import UnsubscribeLinks
from tasks.common import database


@task(name="plan-day", cache_policy=NO_CACHE)
def plan_day_task(config: HeraldConfig, day: date) -> dict[str, int]:
    """Plan the phases dated ``day`` and the notices due and still valid on it."""
    return plan_day(database(), config, day)


@task(name="send-day", cache_policy=NO_CACHE)
def send_day_task(config: HeraldConfig, day: date) -> dict[str, int]:
    """At each window opening of ``day``, deliver every message due there, to the outbox,
    each subject marked as a rehearsal's."""
    engine = database()
    settings = get_settings().model_copy(update={"transport": TransportName.OUTBOX})
    transport = get_transport(settings, config)
    renderer = Renderer(config, settings.templates_dir, subject_prefix=SUBJECT_PREFIX)
    links = UnsubscribeLinks.configured(settings, config.campaign)
    log = get_run_logger()

    def deliver(phase: MessageKind, message: str, at: datetime) -> int:
        done = deliver_message(
            engine,
            config=config,
            phase=phase,
            message=message,
            transport=transport,
            renderer=renderer,
            links=links,
            log=log,
            at=at,
        )
        return done.accepted

    return send_day(engine, config, day, deliver)


@task(name="synthetic-telemetry", cache_policy=NO_CACHE)
def telemetry_day_task(
    config: HeraldConfig, day: date, behaviour: Behaviour, draw: Draws
) -> tuple[int, int]:
    """Synthetic responses to the day's sends and the day's migrations: (events, migrated)."""
    return telemetry_day(database(), config, day, behaviour, draw)


@task(name="count-accepted", cache_policy=NO_CACHE)
def accepted_rows_task(
    config: HeraldConfig,
) -> tuple[dict[str, int], list[planning.NoticeSent], dict[str, int]]:
    """What the campaign's ledger holds: every message sent with its count, each notice by
    segment with the days it went, and the notices somebody never got."""
    campaign = config.campaign.id
    with database().connect() as conn:
        return (
            planning.accepted_rows(conn, campaign=campaign),
            planning.notices_sent(conn, campaign=campaign),
            planning.never_sent_notices(conn, campaign=campaign),
        )
