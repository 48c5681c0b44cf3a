"""`herald cluster up|status|down`: a real `prefect server start` on Postgres, `herald deploy`
and two real process workers, started once for the file, inspected, then stopped."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import yaml
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from herald.testing.processes import free_port
from tests.support.environment import POSTGRES_URL, ROOT

pytestmark = pytest.mark.slow(seconds=90)

HERALD = (sys.executable, "-m", "herald.cli")
# A safety net against hanging, generous for a loaded 2-core machine: `up` returns as soon as
# Prefect lists its workers online, `down` as soon as its processes are gone.
COMMAND_TIMEOUT = 900
WORKERS = ("herald-worker-1", "herald-worker-2")


def environment(var: Path, **extra: str) -> dict[str, str]:
    """This process's environment without Prefect's or Herald's settings, plus ``extra``."""
    env = {
        key: value
        for key, value in os.environ.items()
        if not key.startswith(("PREFECT_", "HERALD_"))
    }
    env.update(
        HERALD_VAR_DIR=str(var),
        HERALD_CONFIG_DIR=str(ROOT / "config"),
        HERALD_TEMPLATES_DIR=str(ROOT / "templates"),
        **extra,
    )
    return env


def herald(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    """Run the ``herald`` command from the project's folder."""
    return subprocess.run(
        [*HERALD, *args],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=COMMAND_TIMEOUT,
        check=False,
    )


def running(pid: int) -> bool:
    """Whether ``pid`` is a live process (an exited child nobody reaped does not count)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8")
    except FileNotFoundError:
        return False
    return stat[stat.rindex(")") + 2] not in "ZX"


def process_env(pid: int) -> dict[str, str]:
    """The environment ``pid`` was started with."""
    raw = Path(f"/proc/{pid}/environ").read_bytes().decode("utf-8", "replace")
    return dict(item.split("=", 1) for item in raw.split("\0") if "=" in item)


@dataclass(frozen=True)
class Cluster:
    """The file's cluster: how it was started and what `up` answered."""

    env: dict[str, str]
    var: Path
    port: int
    herald_url: str
    up: subprocess.CompletedProcess[str]
    record: dict[str, Any]

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/api"

    @property
    def pids(self) -> list[int]:
        return [int(p["pid"]) for p in self.record["processes"]]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Cluster]:
    """`herald cluster up --workers 2` on databases of its own (created by `up`, dropped
    afterwards); stopped at the end whatever the tests did, every recorded pid killed."""
    work = tmp_path_factory.mktemp("cluster")
    suffix = uuid.uuid4().hex[:8]
    base = make_url(POSTGRES_URL)
    herald_db, prefect_db = f"herald_cluster_{suffix}", f"prefect_cluster_{suffix}"
    herald_url = base.set(database=herald_db).render_as_string(hide_password=False)
    prefect_url = base.set(drivername="postgresql+asyncpg", database=prefect_db)
    env = environment(
        work / "var",
        HERALD_DATABASE_URL=herald_url,
        PREFECT_SERVER_DATABASE_CONNECTION_URL=prefect_url.render_as_string(hide_password=False),
    )
    port = free_port()
    record = work / "var" / "cluster" / "cluster.json"
    pids: list[int] = []
    try:
        started = herald(env, "cluster", "up", "--workers", "2", "--port", str(port))
        assert started.returncode == 0, started.stdout + started.stderr
        data = json.loads(record.read_text(encoding="utf-8"))
        pids = [int(p["pid"]) for p in data["processes"]]
        yield Cluster(env, work / "var", port, herald_url, started, data)
    finally:
        herald(env, "cluster", "down")
        for pid in pids:
            if running(pid):  # only if `down` failed: never leave a process behind
                os.killpg(pid, signal.SIGKILL)
        admin = create_engine(POSTGRES_URL, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            for name in (herald_db, prefect_db):
                conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


@pytest.mark.postgres
class TestClusterOnPostgres:
    def test_up_starts_a_server_and_two_workers_prefect_lists_online(
        self, cluster: Cluster
    ) -> None:
        """`up --workers 2`: the server and both workers run, Prefect lists both online in
        pool `herald` with every deployment registered, and `up` says what comes next."""
        from prefect.client.orchestration import SyncPrefectClient

        out = cluster.up.stdout
        assert "source " in out and "--senders 2" in out and "make cluster-down" in out
        assert [p["name"] for p in cluster.record["processes"]] == ["server", *WORKERS]
        assert all(running(pid) for pid in cluster.pids)
        shown = herald(cluster.env, "cluster", "status", "--json")
        assert shown.returncode == 0, shown.stdout + shown.stderr
        status = json.loads(shown.stdout)
        assert status["healthy"] is True
        assert [(p["name"], p["alive"]) for p in status["processes"]] == [
            ("server", True),
            *((name, True) for name in WORKERS),
        ]
        assert status["workers_online"] == list(WORKERS)
        with SyncPrefectClient(cluster.api_url) as client:
            workers = client.read_workers_for_work_pool(work_pool_name="herald")
            deployments = {d.name for d in client.read_deployments()}
        assert sorted((w.name, w.status.value) for w in workers) == [
            (name, "ONLINE") for name in WORKERS
        ]
        written = yaml.safe_load((ROOT / "prefect.yaml").read_text(encoding="utf-8"))
        assert {str(d["name"]) for d in written["deployments"]} <= deployments
        # Each worker runs the deployments from here, on Herald's Postgres database.
        for pid in cluster.pids[1:]:
            env = process_env(pid)
            assert env["HERALD_HOME"] == str(ROOT)
            assert env["HERALD_DATABASE_URL"] == cluster.herald_url
            assert env["PREFECT_API_URL"] == cluster.api_url
            assert env["DO_NOT_TRACK"] == "1"
        sourced = (cluster.var / "cluster" / "env").read_text(encoding="utf-8")
        assert f"export PREFECT_API_URL={cluster.api_url}" in sourced
        assert f"export HERALD_DATABASE_URL={cluster.herald_url}" in sourced

    def test_up_again_says_it_is_running_and_starts_nothing(self, cluster: Cluster) -> None:
        """A second `up` finds the recorded processes alive: exit 0, the record unchanged,
        still exactly two workers in the pool."""
        from prefect.client.orchestration import SyncPrefectClient

        record = cluster.var / "cluster" / "cluster.json"
        before = record.read_text(encoding="utf-8")
        again = herald(cluster.env, "cluster", "up", "--workers", "3", "--port", "1")
        assert again.returncode == 0, again.stdout + again.stderr
        assert "already running" in again.stdout
        assert record.read_text(encoding="utf-8") == before
        with SyncPrefectClient(cluster.api_url) as client:
            workers = client.read_workers_for_work_pool(work_pool_name="herald")
        assert sorted(w.name for w in workers) == list(WORKERS)

    def test_down_stops_every_recorded_process_and_removes_the_record(
        self, cluster: Cluster
    ) -> None:
        """`down` leaves none of the recorded pids alive and no cluster.json; a second `down`
        finds nothing to stop and still exits 0."""
        stopped = herald(cluster.env, "cluster", "down")
        assert stopped.returncode == 0, stopped.stdout + stopped.stderr
        assert not [pid for pid in cluster.pids if running(pid)]
        assert not (cluster.var / "cluster" / "cluster.json").exists()
        assert "Cluster down" in stopped.stdout
        again = herald(cluster.env, "cluster", "down")
        assert again.returncode == 0, again.stderr
        assert "No cluster is running" in again.stdout


class TestWithoutACluster:
    def test_a_sqlite_herald_database_is_refused(self, tmp_path: Path) -> None:
        """SQLite cannot be shared by several hosts' senders: exit 2, the reason, nothing
        started or recorded."""
        env = environment(
            tmp_path / "var", HERALD_DATABASE_URL=f"sqlite:///{tmp_path / 'herald.db'}"
        )
        refused = herald(env, "cluster", "up", "--workers", "2", "--port", str(free_port()))
        assert refused.returncode == 2, refused.stdout + refused.stderr
        assert "SQLite cannot be shared" in refused.stderr
        assert "Nothing was started" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert not (tmp_path / "var" / "cluster").exists()

    def test_a_record_of_exited_processes_is_reported_and_removed(self, tmp_path: Path) -> None:
        """With no record, `status` and `down` say so (exit 0); a record whose processes
        exited shows them not running (exit 3), and `down` removes it (exit 0)."""
        env = environment(tmp_path / "var")
        assert "No cluster is running" in herald(env, "cluster", "status").stdout
        nothing = herald(env, "cluster", "down")
        assert nothing.returncode == 0 and "No cluster is running" in nothing.stdout
        # A process that ran and exited, recorded with its start time as `up` records it
        # (so that a later process given the same pid is not taken for it).
        gone = subprocess.Popen(
            [sys.executable, "-c", "import sys; sys.stdin.read()"], stdin=subprocess.PIPE
        )
        stat = Path(f"/proc/{gone.pid}/stat").read_text(encoding="utf-8")
        start = int(stat[stat.rindex(")") + 2 :].split()[19])
        gone.communicate()
        record = tmp_path / "var" / "cluster" / "cluster.json"
        record.parent.mkdir(parents=True)
        record.write_text(
            json.dumps(
                {
                    "api_url": "http://127.0.0.1:9/api",
                    "port": 9,
                    "pool": "herald",
                    "project": str(ROOT),
                    "prefect_database": "postgresql+asyncpg://postgres@127.0.0.1/x",
                    "herald_database": "postgresql+psycopg://postgres@127.0.0.1/y",
                    "started_at": "2027-01-01T00:00:00+00:00",
                    "processes": [
                        {"name": "server", "pid": gone.pid, "start": start, "log": "server.log"}
                    ],
                }
            ),
            encoding="utf-8",
        )
        shown = herald(env, "cluster", "status", "--json")
        assert shown.returncode == 3, shown.stdout + shown.stderr
        status = json.loads(shown.stdout)
        assert status["processes"][0]["alive"] is False
        assert status["prefect_problem"] == "the Prefect server is not running"
        removed = herald(env, "cluster", "down")
        assert removed.returncode == 0, removed.stdout + removed.stderr
        assert "None of the recorded processes was running" in removed.stdout
        assert not record.exists()
