"""Flows compose: a phase's run starts with one preflight task (config, schema, telemetry),
plans, and delivers through the ``deliver`` flow's steps, every step a task run."""

from __future__ import annotations

import asyncio
import time
from pathlib import Path
from uuid import UUID

import pytest
from prefect.client.orchestration import get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterParentFlowRunId,
)
from prefect.client.schemas.objects import FlowRun
from prefect.context import FlowRunContext
from prefect.flows import flow

from flows.send_phase import PhaseSummary, send_phase
from tests.support.bases import DAY, eligible, load_base
from tests.support.environment import Database

pytestmark = pytest.mark.usefixtures("prefect_server")


async def _children(parent: UUID) -> tuple[list[FlowRun], list[str]]:
    """The subflow runs of one flow run, and the names of its task runs (without suffix)."""
    async with get_client() as client:
        subflows = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                parent_flow_run_id=FlowRunFilterParentFlowRunId(any_=[parent])
            )
        )
        tasks = await client.read_task_runs(
            flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[parent]))
        )
    return subflows, [task.name.rsplit("-", 1)[0] for task in tasks]


def test_a_real_send_runs_preflight_then_delivers_in_tasks(db: Database, tmp_path: Path) -> None:
    loaded = load_base(db, tmp_path, accounts=120)
    expected = eligible(db, loaded, "announcement")

    @flow(name="phase-under-test")
    def parent() -> tuple[UUID, PhaseSummary]:
        context = FlowRunContext.get()
        assert context is not None and context.flow_run is not None
        summary = send_phase(phase="announcement", as_of=DAY, send=True, window=False)
        return context.flow_run.id, summary

    parent_id, summary = parent()
    assert summary.delivery is not None and summary.delivery.accepted == len(expected)

    async def tree() -> tuple[list[FlowRun], list[str]]:
        (phase_run,), _ = await _children(parent_id)
        # The server records task runs from the clients' events in batches, at least once a
        # second (herald/__init__.py): wait until it has recorded the run's last step, which
        # it records after every step before it (one consumer, in the events' order).
        deadline = time.monotonic() + 120
        while True:
            subflows, tasks = await _children(phase_run.id)
            if "publish-phase-summary" in tasks or time.monotonic() > deadline:
                return subflows, tasks
            await asyncio.sleep(0.1)

    subflows, tasks = asyncio.run(tree())
    assert subflows == []  # deliver's steps run in the phase's own run
    assert tasks.count("preflight") == 1
    assert {"plan-ledger", "open-sender", "send-batch", "finish-sender", "count-ledger"} <= set(
        tasks
    )
    assert tasks.count("open-sender") == tasks.count("finish-sender") == 1
