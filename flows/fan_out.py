"""Fan-out: a phase's real send by N sender runs that Prefect's workers run, anywhere.

The phase's run plans the ledger once, then starts N child runs of the ``sender`` deployment
(:func:`flows.deliver.phase_sender`) with ``run_deployment(..., timeout=0)``; the workers of
the ``herald`` pool pick them up, on this host or any other. The senders share nothing but
the database and the Prefect server: each claims batches of planned rows (on Postgres
``FOR UPDATE SKIP LOCKED``: two senders never claim one row) and takes each request's
recipients from the campaign's global rate limit. No recipient is sent twice, none skipped,
whatever N.

The phase's run then watches its senders until each has ended, once a second: a child run
that Prefect reports ended without completing (crashed, failed, cancelled) has its sender's
batches settled at once; a sender whose process is gone (same host: its pid; another host:
no heartbeat for ``sending.worker_lease_seconds``) too, even while Prefect still shows its
run running (a worker killed with its runs reports nothing), and that run is marked
crashed. Settling is what a restart after a crash does: rows never requested go back to
planned, requests in flight become ``unknown`` (never re-sent without evidence or a person).
Rows that came back after the last sender stopped are sent by the phase's run itself, so
the phase never ends with work nobody will take.

A run of N senders costs N + 1 flow runs and one task run per batch in each sender (a
million recipients: 1,000 task runs spread over N runs, far from the 100k task runs per run
where Prefect's scheduler times out, PrefectHQ/prefect#15045). Task workers
(``task.delay()``) are not used: their queue lives in the server's memory.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from datetime import UTC, datetime

from prefect import get_run_logger
from prefect.client.orchestration import SyncPrefectClient, get_client
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.client.schemas.objects import FlowRun, StateType, WorkerStatus
from prefect.deployments import run_deployment
from prefect.exceptions import ObjectNotFound
from prefect.runtime import flow_run
from prefect.states import Crashed
from pydantic import BaseModel, Field
from sqlalchemy import Engine, select

from flows.deliver import deliver_here
from herald.config import HeraldConfig, PhaseName
from herald.delivery import ledger
from herald.delivery.controls import paused_reason
from herald.delivery.recovery import recover, settle_flow_runs
from herald.delivery.sender import Delivered
from herald.errors import HeraldError
from herald.models import SEND_WORKER, DeliveryState
from herald.scaleout.rate import server_configured
from herald.scaleout.senders import SenderStats, sender_stats
from tasks.common import database

SENDER_DEPLOYMENT = "phase-sender/sender"
POLL_SECONDS = 1.0
ENDED = frozenset({StateType.COMPLETED, StateType.FAILED, StateType.CRASHED, StateType.CANCELLED})


class FanOutError(HeraldError):
    """A phase cannot start its senders (no server, no sender deployment, no worker)."""

    outcome = "Nothing was sent."


class FannedOut(BaseModel):
    """What a phase's senders did, together and each."""

    delivered: Delivered
    senders: list[SenderStats] = Field(default_factory=list)
    runs: dict[str, str] = Field(default_factory=dict, description="Child run name: its end.")
    found_dead: int = Field(default=0, description="Senders settled after their process died.")
    swept: int = Field(default=0, description="Rows the phase's run sent itself at the end.")


def check_fan_out() -> str:
    """Stop unless the phase can start senders: a Prefect server, the ``sender`` deployment
    registered, and a worker online in its pool; the pool's name."""
    if not server_configured():
        raise FanOutError(
            "More than one sender needs a Prefect server with workers (PREFECT_API_URL; "
            "`make cluster-up WORKERS=N` starts one on this machine, docs/deploy.md). "
            "Without one a phase sends with one sender (--senders 1)."
        )
    with get_client(sync_client=True) as client:
        try:
            deployment = client.read_deployment_by_name(SENDER_DEPLOYMENT)
        except ObjectNotFound:
            raise FanOutError(
                f"The deployment {SENDER_DEPLOYMENT!r} is not registered on the Prefect "
                "server: run `herald deploy`."
            ) from None
        pool = deployment.work_pool_name or "herald"
        workers = client.read_workers_for_work_pool(pool)
    if not any(worker.status == WorkerStatus.ONLINE for worker in workers):
        raise FanOutError(
            f"No worker is polling the work pool {pool!r}, so no sender would start: run "
            f"`prefect worker start --pool {pool}` on a sending host (or `make cluster-up`)."
        )
    return pool


def fan_out(
    config: HeraldConfig,
    phase: PhaseName,
    *,
    senders: int,
    at: datetime | None,
    window: bool,
    max_batches: int | None,
) -> FannedOut:
    """Start ``senders`` sender runs for the planned rows of ``phase``, watch them until each
    has ended (settling those that die), send what came back, and count what each did."""
    log = get_run_logger()
    campaign = config.campaign.id
    parent = flow_run.get_id()
    parameters = {
        "phase": phase,
        "at": at.isoformat() if at else None,
        "window": window,
        "max_batches": max_batches,
        "senders": senders,
    }
    runs: list[FlowRun] = [
        run_deployment(  # type: ignore[misc]  # sync here (async_dispatch types both)
            SENDER_DEPLOYMENT,
            parameters={**parameters, "sender": number},
            timeout=0,
            idempotency_key=f"{parent}-sender-{number}" if parent else None,
        )
        for number in range(1, senders + 1)
    ]
    log.info(f"Phase {phase}: started {senders} sender runs through the work pool.")
    ids = [str(run.id) for run in runs]
    found_dead, ended = _watch(config, phase, ids)
    swept = 0
    engine = database()
    with engine.connect() as conn:
        planned = ledger.state_counts(conn, campaign=campaign, message=phase)[
            DeliveryState.PLANNED.value
        ]
        paused = paused_reason(conn, campaign=campaign, message=phase)
    if planned and not paused:
        # Rows a dead sender had claimed came back after the others stopped: send them here.
        sweep = deliver_here(config, phase, phase, at=at, window=window, max_batches=max_batches)
        swept = sweep.accepted + sweep.failed + sweep.unknown
        if swept:
            log.info(f"Phase {phase}: {swept} row(s) left by dead senders sent by this run.")
    now = datetime.now(UTC)
    with engine.connect() as conn:
        stats = sender_stats(
            conn,
            campaign=campaign,
            message=phase,
            flow_run_ids=[*ids, *([parent] if parent else [])],
            now=now,
        )
        paused = paused_reason(conn, campaign=campaign, message=phase)
    return FannedOut(
        delivered=_total(phase, stats, paused),
        senders=stats,
        runs={run.name: ended.get(str(run.id), "running") for run in runs},
        found_dead=found_dead,
        swept=swept,
    )


def _watch(
    config: HeraldConfig, phase: PhaseName, ids: Sequence[str]
) -> tuple[int, dict[str, str]]:
    """Poll the sender runs until each has ended or its sender is done; settle the dead.

    Returns how many senders were settled dead, and each run's final state."""
    campaign = config.campaign.id
    lease = config.campaign.sending.worker_lease_seconds
    engine = database()
    log = get_run_logger()
    dead_total = 0
    with get_client(sync_client=True) as client:
        while True:
            states = _states(client, ids)
            ended = {run_id: s for run_id, s in states.items() if s in ENDED}
            # Prefect says these runs are over: their senders are gone, whatever the lease.
            broken = [run_id for run_id, s in ended.items() if s != StateType.COMPLETED]
            settled = settle_flow_runs(
                engine,
                campaign=campaign,
                message=phase,
                flow_run_ids=broken,
                why="lost: its sender run ended without completing",
            )
            found = recover(engine, campaign=campaign, message=phase, lease_seconds=lease)
            dead_total += settled.workers + found.workers
            if settled.workers or found.workers:
                log.warning(
                    f"Phase {phase}: {settled.workers + found.workers} sender(s) died; "
                    f"{settled.released + found.released} unrequested row(s) planned again, "
                    f"{settled.unknown + found.unknown} in flight now unknown."
                )
            done = _senders_done(engine, campaign, phase, ids)
            gone = [run_id for run_id in ids if run_id not in ended and done.get(run_id)]
            if all(run_id in ended or run_id in gone for run_id in ids):
                for run_id in gone:
                    if done[run_id].startswith("lost"):  # it died with Prefect unaware
                        _mark_crashed(client, run_id)
                return dead_total, {
                    run_id: (ended[run_id].value if run_id in ended else done[run_id])
                    for run_id in ids
                }
            time.sleep(POLL_SECONDS)


def _states(client: SyncPrefectClient, ids: Sequence[str]) -> dict[str, StateType | None]:
    runs: list[FlowRun] = client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=list(ids))), limit=len(ids)
    )
    return {str(run.id): run.state.type if run.state else None for run in runs}


def _senders_done(
    engine: Engine, campaign: str, message: str, ids: Sequence[str]
) -> dict[str, str]:
    """Sender runs whose sender has stopped, with its outcome (``lost: ...`` when another
    process found it dead and settled it)."""
    with engine.connect() as conn:
        rows = conn.execute(
            select(SEND_WORKER.c.flow_run_id, SEND_WORKER.c.outcome).where(
                SEND_WORKER.c.campaign == campaign,
                SEND_WORKER.c.message == message,
                SEND_WORKER.c.flow_run_id.in_(list(ids)),
                SEND_WORKER.c.finished_at.is_not(None),
            )
        ).all()
    return {str(run_id): str(outcome) for run_id, outcome in rows}


def _mark_crashed(client: SyncPrefectClient, run_id: str) -> None:
    """Tell Prefect a sender run is over: its process died and its batches are settled."""
    client.set_flow_run_state(
        run_id,
        Crashed(message="Its sender process died; the phase's run settled its batches."),
        force=True,
    )


def _total(message: str, stats: Sequence[SenderStats], paused: str | None) -> Delivered:
    return Delivered(
        message=message,
        batches=sum(s.batches for s in stats),
        requests=sum(s.requests for s in stats),
        accepted=sum(s.accepted for s in stats),
        failed=sum(s.failed for s in stats),
        unknown=sum(s.unknown for s in stats),
        paused=paused,
    )
