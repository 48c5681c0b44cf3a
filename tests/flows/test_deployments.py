"""prefect.yaml: every deployment points at a real flow, its schedules agree with the config,
and `prefect deploy --all` registers them on a real `prefect server start`."""

from __future__ import annotations

import asyncio
import importlib
import json
import os
import subprocess
import sys
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import pytest
import yaml
from prefect import Flow
from sqlalchemy import text

from flows.deployments import DeploymentFileError, day_crons, deployment_file
from flows.send_phase import send_phase
from herald.config import load_config
from herald.testing.processes import free_port, served, stop
from tests.support.bases import config, eligible, load_base
from tests.support.environment import ROOT, Database

pytestmark = pytest.mark.slow(seconds=80)


def built() -> list[dict[str, Any]]:
    """The deployments `herald deploy` registers: prefect.yaml with the config's schedules."""
    return list(deployment_file(config(), ROOT / "prefect.yaml")["deployments"])


class TestDeploymentFile:
    def test_prefect_yaml_holds_no_schedule_and_every_parameter_set_validates(self) -> None:
        """Dates live only in campaign.yaml; each deployment's defaults and schedule
        parameters are accepted by its flow (deployment_file checks them all)."""
        written = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
        assert not any(d.get("schedules") for d in written["deployments"])
        names = {str(d["name"]) for d in built()}
        assert names == {str(d["name"]) for d in written["deployments"]}
        for deployment in built():
            path, _, name = str(deployment["entrypoint"]).partition(":")
            module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
            assert isinstance(getattr(module, name), Flow), deployment["name"]

    def test_each_phase_is_dry_by_hand_and_scheduled_every_hour_of_its_days(self) -> None:
        """By hand a phase run is dry; its schedules send, every hour of the phase's days
        from its date in campaign.yaml, in the campaign's time zone."""
        campaign = config().campaign
        phases = {
            str(d["name"]): d
            for d in built()
            if str(d["entrypoint"]).startswith("flows/send_phase.py")
        }
        assert set(phases) == {"preview", "announcement", "deprecation", "sunset"}
        assert phases["sunset"].get("schedules") is None  # by hand; its notices are scheduled
        for name in ("preview", "announcement", "deprecation"):
            deployment = phases[name]
            assert deployment["parameters"] == {"phase": name, "send": False}
            hours = set()
            for schedule in deployment["schedules"]:
                assert schedule["timezone"] == campaign.timezone
                assert schedule["parameters"] == {"phase": name, "send": True, "scheduled": True}
                hours |= cron_hours(schedule["cron"], campaign.timezone, year=2027)
            first = getattr(campaign.phases, name)
            days = {first + timedelta(days=n) for n in range(campaign.schedules.phase_days)}
            assert {hour.date() for hour in hours} == days
            assert len(hours) == 24 * len(days)

    def test_a_phase_across_a_month_end_takes_one_cron_per_month(self) -> None:
        """Days 28 Jan - 3 Feb are two ranges; a gap inside a month is a list."""
        assert day_crons(date(2027, 1, 28) + timedelta(days=n) for n in range(7)) == [
            "0 * 28-31 1 *",
            "0 * 1-3 2 *",
        ]
        assert day_crons([date(2027, 3, 2), date(2027, 3, 3), date(2027, 3, 9)]) == [
            "0 * 2-3,9 3 *"
        ]

    def test_the_weekly_report_and_daily_flows_follow_the_config(self, config_dir: Path) -> None:
        """The report goes on schedules.weekly_report and sends; a changed time in
        campaign.yaml is the deployment's new time."""
        path = config_dir / "campaign.yaml"
        path.write_text(
            path.read_text(encoding="utf-8").replace(
                'weekly_report: "0 8 * * 1"', 'weekly_report: "30 7 * * 2"'
            ),
            encoding="utf-8",
        )
        loaded = load_config(config_dir)
        by_name = {
            str(d["name"]): d for d in deployment_file(loaded, ROOT / "prefect.yaml")["deployments"]
        }
        (report,) = by_name["weekly-report"]["schedules"]
        assert report == {
            "cron": "30 7 * * 2",
            "timezone": loaded.campaign.timezone,
            "parameters": {"send": True},
        }
        assert by_name["weekly-report"]["parameters"] == {"send": False}
        assert by_name["segment-refresh"]["schedules"][0]["cron"] == "0 6 * * *"

    def test_a_schedule_written_in_prefect_yaml_is_refused(self, tmp_path: Path) -> None:
        """A schedule added to prefect.yaml by hand would be a second source of dates."""
        data = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
        data["deployments"][0]["schedules"] = [{"cron": "0 9 * * *"}]
        base = tmp_path / "prefect.yaml"
        base.write_text(yaml.safe_dump(data), encoding="utf-8")
        with pytest.raises(DeploymentFileError, match="schedules are built from config"):
            deployment_file(config(), base)

    @pytest.mark.parametrize("db", ["sqlite"], indirect=True)
    def test_a_scheduled_run_outside_the_phase_days_does_nothing(
        self, db: Database, tmp_path: Path
    ) -> None:
        """The cron repeats every year: a scheduled run on a day that is not one of the
        phase's sends nothing and plans nothing; a run by hand that day still works."""
        load_base(db, tmp_path)
        later = config().campaign.phases.announcement + timedelta(days=365)
        skipped = send_phase(
            phase="announcement", as_of=later, send=True, window=False, scheduled=True
        )
        assert skipped.refused is not None and "scheduled days" in skipped.refused
        assert db.count("delivery") == 0
        by_hand = send_phase(phase="announcement", as_of=later, send=False)
        assert by_hand.audience_total > 0


def cron_hours(cron: str, timezone: str, *, year: int) -> set[datetime]:
    """Every moment of ``year`` a cron names, local and naive (through Prefect's server
    schedule, the one its scheduler uses)."""
    from prefect.server.schemas.schedules import CronSchedule

    tz = ZoneInfo(timezone)
    start = datetime(year, 1, 1, tzinfo=tz)
    found = asyncio.run(
        CronSchedule(cron=cron, timezone=timezone).get_dates(
            n=1000, start=start, end=start.replace(year=year + 1)
        )
    )
    return {moment.astimezone(tz).replace(tzinfo=None) for moment in found}


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
        print(json.dumps({"flows": names, "runs": sorted(run.name for run in runs)}))

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
    parameters={"phase": "preview", "send": True, "window": False},
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
    def test_herald_deploy_registers_every_deployment_and_a_moved_date_moves_its_schedule(
        self, db: Database, tmp_path: Path, config_dir: Path
    ) -> None:
        """`prefect server start`, `herald deploy`: every deployment with its schedules from
        campaign.yaml; the announcement moved in the config and deployed again is scheduled
        on its new days (read back through Prefect's API). Then a process worker runs the
        preview with send: the run, named after what it does, pauses until approved; and a
        `herald` command with PREFECT_API_URL set runs its flow on that server."""
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
            HERALD_VAR_DIR=str(tmp_path / "var"),
        )
        prefect = str(Path(sys.executable).parent / "prefect")

        def run(*command: str, timeout: float = WAIT) -> subprocess.CompletedProcess[str]:
            return subprocess.run(
                list(command), env=env, cwd=ROOT, capture_output=True, text=True, timeout=timeout
            )

        def registered() -> dict[str, list[dict[str, Any]]]:
            listed = run(sys.executable, "-c", LIST_DEPLOYMENTS)
            assert listed.returncode == 0, listed.stderr
            found: dict[str, list[dict[str, Any]]] = json.loads(
                listed.stdout.strip().splitlines()[-1]
            )
            return found

        herald = (sys.executable, "-m", "herald.cli")
        with served(
            [prefect, "server", "start", "--port", str(port)],
            health=f"http://127.0.0.1:{port}/api/health",
            what="prefect server",
            env=env,
            timeout=WAIT,
        ):
            deployed = run(*herald, "deploy")
            assert deployed.returncode == 0, deployed.stdout + deployed.stderr
            first = registered()
            campaign = config_dir / "campaign.yaml"
            campaign.write_text(
                campaign.read_text(encoding="utf-8").replace(
                    "announcement: 2027-02-09", "announcement: 2027-02-25"
                ),
                encoding="utf-8",
            )
            again = run(*herald, "deploy")
            assert again.returncode == 0, again.stdout + again.stderr
            moved = registered()
            worker = subprocess.Popen(
                [prefect, "worker", "start", "--pool", "herald"],
                env=env,
                cwd=ROOT,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            try:
                approved = run(
                    sys.executable, "-c", RUN_AND_APPROVE, str(RUN_WAIT), timeout=RUN_WAIT + 60
                )
            finally:
                stop(worker)
            assert approved.returncode == 0, approved.stderr
            # A `herald` command run with PREFECT_API_URL uses that server, not a temporary one.
            segmented = run(*herald, "segment", "--as-of", "2026-11-25", timeout=RUN_WAIT)
            runs = run(sys.executable, "-c", LIST_FLOW_RUNS, timeout=RUN_WAIT)
        expected = {f"{_flow_name(d)}/{d['name']}" for d in built()}
        assert set(first) == expected
        for deployment in built():
            key = f"{_flow_name(deployment)}/{deployment['name']}"
            assert len(first[key]) == len(deployment.get("schedules") or []), key
        tz = loaded.campaign.timezone

        def days(found: dict[str, list[dict[str, Any]]], name: str) -> set[date]:
            hours: set[datetime] = set()
            for schedule in found[name]:
                assert schedule["schedule"]["timezone"] == tz
                hours |= cron_hours(schedule["schedule"]["cron"], tz, year=2027)
            return {hour.date() for hour in hours}

        week = range(loaded.campaign.schedules.phase_days)
        assert days(first, "send-phase/announcement") == {
            date(2027, 2, 9) + timedelta(days=n) for n in week
        }
        # Moved in campaign.yaml, deployed again: the new days (across February's end), and
        # no schedule left of the old ones; the other phases did not move.
        assert days(moved, "send-phase/announcement") == {
            date(2027, 2, 25) + timedelta(days=n) for n in week
        }
        assert days(moved, "send-phase/preview") == days(first, "send-phase/preview")
        for schedule in moved["send-phase/announcement"]:
            assert schedule["parameters"] == {
                "phase": "announcement",
                "send": True,
                "scheduled": True,
            }
        assert segmented.returncode == 0, segmented.stdout + segmented.stderr
        assert "Starting temporary server" not in segmented.stdout + segmented.stderr
        listed_runs = json.loads(runs.stdout.strip().splitlines()[-1])
        assert "segment-customers" in listed_runs["flows"]
        assert "segment-2026-11-25" in listed_runs["runs"]
        today = datetime.now(UTC).date()
        assert {f"preview-{today}-send", f"preview-{today - timedelta(days=1)}-send"} & set(
            listed_runs["runs"]
        )
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


def _flow_name(deployment: dict[str, object]) -> str:
    path, _, name = str(deployment["entrypoint"]).partition(":")
    module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
    return str(getattr(module, name).name)
