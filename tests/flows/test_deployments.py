"""prefect.yaml: every deployment points at a real flow, its schedules agree with the config,
and `prefect deploy --all` registers them on a real `prefect server start`."""

from __future__ import annotations

import importlib
import json
import os
import re
import subprocess
import sys
from datetime import date
from pathlib import Path

import pytest
import yaml
from prefect import Flow
from sqlalchemy import text

from herald.testing.processes import free_port, served, stop
from tests.support.bases import config, eligible, load_base
from tests.support.environment import ROOT, Database

pytestmark = pytest.mark.slow(seconds=80)


def deployments() -> list[dict[str, object]]:
    data = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
    return list(data["deployments"])


class TestDeploymentFile:
    def test_every_entrypoint_is_a_flow_and_every_parameter_set_validates(self) -> None:
        """Deployment defaults and each schedule's parameters are accepted by the flow."""
        for deployment in deployments():
            path, _, name = str(deployment["entrypoint"]).partition(":")
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            flow = getattr(module, name)
            assert isinstance(flow, Flow), deployment["name"]
            flow.validate_parameters(dict(deployment.get("parameters") or {}))  # type: ignore[call-overload]
            for schedule in deployment.get("schedules") or []:  # type: ignore[attr-defined]
                flow.validate_parameters(dict(schedule.get("parameters") or {}))

    def test_each_phase_is_dry_by_hand_and_scheduled_on_its_date(self) -> None:
        """By hand a phase run is dry; its schedule sends, starting on the date in config."""
        dates = config().campaign.phases
        phases = {
            str(d["name"]): d
            for d in deployments()
            if str(d["entrypoint"]).startswith("flows/send_phase.py")
        }
        assert set(phases) == {"preview", "announcement", "deprecation", "sunset"}
        for name, deployment in phases.items():
            assert deployment["parameters"] == {"params": {"phase": name, "send": False}}
            for schedule in deployment.get("schedules") or []:  # type: ignore[attr-defined]
                start = re.search(r"DTSTART:(\d{8})", schedule["rrule"])
                assert start is not None
                assert date.fromisoformat(start.group(1)) == getattr(dates, name)
                assert schedule["parameters"] == {"params": {"phase": name, "send": True}}

    def test_the_weekly_report_goes_on_monday_at_0800_in_the_campaign_time_zone(self) -> None:
        """Scheduled runs send; a run by hand is dry."""
        (report,) = [d for d in deployments() if d["name"] == "weekly-report"]
        assert report["entrypoint"] == "flows/weekly_report.py:weekly_report"
        assert report["parameters"] == {"params": {"send": False}}
        (schedule,) = report["schedules"]  # type: ignore[misc]
        assert schedule["cron"] == "0 8 * * 1"
        assert schedule["timezone"] == config().campaign.timezone
        assert schedule["parameters"] == {"params": {"send": True}}


LIST_DEPLOYMENTS = """
import asyncio, json
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        found = await client.read_deployments()
        out = {}
        for d in found:
            flow = await client.read_flow(d.flow_id)
            out[f"{flow.name}/{d.name}"] = [
                {"schedule": s.schedule.model_dump(mode="json"), "parameters": s.parameters}
                for s in d.schedules
            ]
        print(json.dumps(out))

asyncio.run(main())
"""


# Safety nets against hanging (seconds), generous for a loaded 2-core machine; nothing below
# waits a fixed time for something to happen: each step polls for the state it needs.
WAIT = 300
RUN_WAIT = 540  # the run: a worker picks it up, starts a process, pauses, resumes, finishes

LIST_FLOW_RUNS = """
import asyncio, json
from prefect.client.orchestration import get_client

async def main():
    async with get_client() as client:
        runs = await client.read_flow_runs()
        names = sorted({(await client.read_flow(run.flow_id)).name for run in runs})
        print(json.dumps(names))

asyncio.run(main())
"""


RUN_AND_APPROVE = """
import json, sys, time
from prefect.client.orchestration import get_client
from prefect.deployments import run_deployment
from prefect.flow_runs import resume_flow_run

def state(run_id):
    with get_client(sync_client=True) as client:
        return client.read_flow_run(run_id).state.type.value

run = run_deployment(
    "send-phase/preview",
    parameters={"params": {"phase": "preview", "send": True, "window": False}},
    timeout=0,
)
seen = []
deadline = time.monotonic() + float(sys.argv[1])
while time.monotonic() < deadline and state(run.id) != "PAUSED":
    time.sleep(1)
seen.append(state(run.id))
resume_flow_run(run.id, run_input={"approve": True, "approver": "ops-lead@example.com"})
while time.monotonic() < deadline and state(run.id) not in ("COMPLETED", "FAILED", "CRASHED"):
    time.sleep(1)
seen.append(state(run.id))
print(json.dumps(seen))
"""


class TestDeployAgainstAServer:
    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    def test_deploy_all_registers_every_deployment_and_a_real_send_waits_for_approval(
        self, db: Database, tmp_path: Path
    ) -> None:
        """`prefect server start`, `prefect deploy --all`: every deployment with its schedule;
        then a process worker runs the preview with send: the run pauses until approved; and
        a `herald` command with PREFECT_API_URL set runs its flow on that server."""
        loaded = load_base(db, tmp_path)
        port = free_port()
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith("PREFECT_") or key == "PREFECT_SERVER_ANALYTICS_ENABLED"
        }
        env.update(
            PREFECT_HOME=str(tmp_path / "prefect-home"),
            PREFECT_API_URL=f"http://127.0.0.1:{port}/api",
            PREFECT_SERVER_API_PORT=str(port),
            HERALD_HOME=str(ROOT),
        )
        prefect = str(Path(sys.executable).parent / "prefect")
        with served(
            [prefect, "server", "start", "--port", str(port)],
            health=f"http://127.0.0.1:{port}/api/health",
            what="prefect server",
            env=env,
            timeout=WAIT,
        ):
            pool = subprocess.run(
                [prefect, "work-pool", "create", "herald", "--type", "process"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert pool.returncode == 0, pool.stdout + pool.stderr
            deployed = subprocess.run(
                [prefect, "--no-prompt", "deploy", "--all"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            listed = subprocess.run(
                [sys.executable, "-c", LIST_DEPLOYMENTS],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=WAIT,
            )
            assert listed.returncode == 0, listed.stderr
            worker = subprocess.Popen(
                [prefect, "worker", "start", "--pool", "herald"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                approved = subprocess.run(
                    [sys.executable, "-c", RUN_AND_APPROVE, str(RUN_WAIT)],
                    env=env,
                    cwd=ROOT,
                    capture_output=True,
                    text=True,
                    timeout=RUN_WAIT + 60,
                )
            finally:
                stop(worker)
            assert approved.returncode == 0, approved.stderr
            # A `herald` command run with PREFECT_API_URL uses that server, not a temporary one.
            segmented = subprocess.run(
                [sys.executable, "-m", "herald.cli", "segment", "--as-of", "2026-11-25"],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=RUN_WAIT,
            )
            runs = subprocess.run(
                [sys.executable, "-c", LIST_FLOW_RUNS],
                env=env,
                cwd=ROOT,
                capture_output=True,
                text=True,
                timeout=RUN_WAIT,
            )
        assert segmented.returncode == 0, segmented.stdout + segmented.stderr
        assert "Starting temporary server" not in segmented.stdout + segmented.stderr
        assert "segment-customers" in json.loads(runs.stdout.strip().splitlines()[-1])
        # The real send paused for approval, sent once approved, and the audit log says who.
        assert json.loads(approved.stdout.strip().splitlines()[-1]) == ["PAUSED", "COMPLETED"]
        with db.engine.connect() as conn:
            actors = list(
                conn.execute(
                    text("SELECT actor FROM audit_log WHERE action = 'phase.approved'")
                ).scalars()
            )
        assert actors == ["ops-lead@example.com"]
        sent = db.count("delivery WHERE state = 'accepted'")
        assert sent == len(eligible(db, loaded, "preview"))
        registered = json.loads(listed.stdout.strip().splitlines()[-1])
        expected = {f"{_flow_name(d)}/{d['name']}" for d in deployments()}
        assert set(registered) == expected
        for deployment in deployments():
            key = f"{_flow_name(deployment)}/{deployment['name']}"
            assert len(registered[key]) == len(deployment.get("schedules") or []), key  # type: ignore[arg-type]
        announcement = registered["send-phase/announcement"][0]
        assert "DTSTART:20270209T090000" in announcement["schedule"]["rrule"]
        assert announcement["parameters"] == {"params": {"phase": "announcement", "send": True}}


def _flow_name(deployment: dict[str, object]) -> str:
    path, _, name = str(deployment["entrypoint"]).partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return str(getattr(module, name).name)
