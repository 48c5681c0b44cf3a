"""Prefect as its users expect it: flow runs named after what they do, flat parameters a
form can show, completed task runs quiet (DEBUG) while failures and summaries stay loud."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from datetime import date
from pathlib import Path

import pytest
from prefect import Flow, flow, task
from prefect.client.orchestration import get_client
from prefect.logging import get_run_logger

from flows.compute_metrics import compute_metrics
from flows.ingest_telemetry import ingest_telemetry
from flows.rehearse import rehearse
from flows.segment_customers import segment_customers
from flows.send_notices import send_notices
from flows.send_phase import send_phase
from flows.weekly_report import weekly_report
from tests.support.bases import load_base
from tests.support.environment import Database

pytestmark = [pytest.mark.usefixtures("prefect_server"), pytest.mark.slow(seconds=40)]

DAY = date(2027, 2, 9)
FLOWS: list[Flow[..., object]] = [
    send_phase,
    send_notices,
    segment_customers,
    weekly_report,
    compute_metrics,
    ingest_telemetry,
    rehearse,
]


def _run_name(state: object) -> str:
    run_id = state.state_details.flow_run_id  # type: ignore[attr-defined]
    with get_client(sync_client=True) as client:
        return str(client.read_flow_run(run_id).name)


class TestNames:
    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    def test_flow_runs_are_named_after_what_they_do(self, db: Database, tmp_path: Path) -> None:
        """A phase run is `<phase>-<day>-dry|send`, the notices `notices-<day>-...`, the
        segmentation `segment-<day>`, not a random pair of words."""
        load_base(db, tmp_path, accounts=20)
        dry = send_phase(phase="announcement", as_of=DAY, return_state=True)
        assert _run_name(dry) == "announcement-2027-02-09-dry"
        notices = send_notices(as_of=DAY, return_state=True)
        assert _run_name(notices) == "notices-2027-02-09-dry"
        segmented = segment_customers(as_of=DAY, return_state=True)
        assert _run_name(segmented) == "segment-2027-02-09"


class TestParameters:
    @pytest.mark.parametrize("found", FLOWS, ids=lambda f: f.name)
    def test_every_flow_takes_flat_parameters_with_descriptions(
        self, found: Flow[..., object]
    ) -> None:
        """No parameter is one nested object: each is a field of its own, with a description
        the Prefect UI's form shows."""
        schema = found.parameters.model_dump()
        properties = schema["properties"]
        assert properties, found.name
        assert "params" not in properties
        for name, prop in properties.items():
            assert prop.get("description"), f"{found.name}.{name} has no description"
            assert prop.get("type") != "object" and "$ref" not in prop, f"{found.name}.{name}"

    def test_a_phase_form_asks_for_the_phase_and_whether_to_send(self) -> None:
        """The send-phase form: the phase (required) and `send`, default false (a dry run)."""
        schema = send_phase.parameters.model_dump()
        assert schema["required"] == ["phase"]
        assert schema["properties"]["send"]["default"] is False


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def task_records() -> Iterator[_Records]:
    import tasks.common  # noqa: F401 - installs the filter, as every Herald flow does

    handler = _Records()
    logger = logging.getLogger("prefect.task_runs")
    logger.addHandler(handler)
    try:
        yield handler
    finally:
        logger.removeHandler(handler)


@task
def _works() -> int:
    get_run_logger().info("progress: half way")
    return 1


@task(retries=0)
def _fails() -> None:
    raise RuntimeError("boom")


@flow
def _a_flow(fail: bool = False) -> int:
    total = sum(_works() for _ in range(3))
    if fail:
        _fails()
    return total


class TestQuietTaskLogs:
    def test_completed_task_runs_are_not_logged_at_info(self, task_records: _Records) -> None:
        """Three completed task runs: their own progress lines reach the handlers, their
        "Finished in state Completed()" lines do not (they are DEBUG, below the level)."""
        assert _a_flow() == 3
        messages = [r.getMessage() for r in task_records.records]
        assert messages.count("progress: half way") == 3
        assert not [m for m in messages if m.startswith("Finished in state Completed")]

    def test_a_failed_task_run_is_still_an_error(self, task_records: _Records) -> None:
        """A task run that fails is logged at ERROR as before."""
        with pytest.raises(RuntimeError):
            _a_flow(fail=True)
        failed = [r for r in task_records.records if "Finished in state Failed" in r.getMessage()]
        assert failed and all(r.levelno == logging.ERROR for r in failed)

    def test_debug_level_shows_them_again(self, task_records: _Records) -> None:
        """With the task-run logger at DEBUG, completed task runs are logged, at DEBUG."""
        logger = logging.getLogger("prefect.task_runs")
        level = logger.level
        logger.setLevel(logging.DEBUG)
        try:
            _a_flow()
        finally:
            logger.setLevel(level)
        done = [r for r in task_records.records if "Finished in state Completed" in r.getMessage()]
        assert len(done) == 3 and all(r.levelno == logging.DEBUG for r in done)
