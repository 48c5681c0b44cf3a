"""The production topology on one machine: a Prefect server on Postgres and N process workers.

``herald cluster up`` starts, each in a session of its own:

- ``prefect server start`` with its own ``PREFECT_HOME`` (``var/cluster/prefect-home``) and
  its database on Postgres (``PREFECT_SERVER_DATABASE_CONNECTION_URL``, created when
  missing), and waits until ``/api/health`` answers;
- ``herald deploy`` against it (every deployment, the ``herald`` process work pool, the
  campaign's global send rate limit), as a command whose failure stops everything;
- N ``prefect worker start --pool herald --name herald-worker-<i>``, with ``HERALD_HOME``,
  ``PREFECT_API_URL`` and Herald's database (Postgres, created when missing and migrated),
  and waits until Prefect lists every one of them online in the pool.

What it started is recorded under ``<var>/cluster/``: ``cluster.json`` (the API, the
databases with no password, each process's pid and start time, when), ``env`` (the
``export`` lines a shell can ``source`` to use the cluster) and ``logs/`` (one file per
process, and ``herald deploy``'s output). ``herald cluster down`` stops each recorded process
together with every process it started (a worker's flow-run processes sit in sessions of
their own, so they are found by their parent, not by their group): SIGTERM, a wait that ends
as soon as they are gone, SIGKILL for what is left.

Every wait polls for the state it needs (health, workers online, processes gone); its timeout
is a safety net for a loaded machine, never a pause. Processes are identified by pid and
start time (``/proc``), so a pid reused by an unrelated process is never signalled, and an
exited child nobody reaped (a zombie) counts as gone.
"""

from __future__ import annotations

import json
import os
import shlex
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Final

from sqlalchemy import create_engine, text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, SQLAlchemyError

from herald.errors import HeraldError

POOL: Final = "herald"
DEFAULT_PORT: Final = 4200
HOST: Final = "127.0.0.1"
DEFAULT_PREFECT_DATABASE: Final = "postgresql+asyncpg://postgres@127.0.0.1:5432/herald_prefect"
DEFAULT_HERALD_DATABASE: Final = "postgresql+psycopg://postgres@127.0.0.1:5432/herald"
PREFECT_DATABASE_VARIABLE: Final = "PREFECT_SERVER_DATABASE_CONNECTION_URL"

# Safety nets (seconds) against hanging, generous for a loaded 2-core machine, where a
# Prefect server can take minutes to answer; every wait ends as soon as its state is reached.
START_TIMEOUT: Final = 300.0
DEPLOY_TIMEOUT: Final = 900.0
STOP_TIMEOUT: Final = 120.0
KILL_TIMEOUT: Final = 30.0
POLL_TIMEOUT: Final = 30.0  # one health or API request: a busy server answers late, not never
POLL_EVERY: Final = 0.25

# Nothing calls home: Prefect's and Great Expectations' usage analytics stay off.
QUIET: Final = {
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "GX_ANALYTICS_ENABLED": "false",
    "DO_NOT_TRACK": "1",
}

Progress = Callable[[str], None]


class ClusterError(HeraldError):
    """The cluster cannot be started as asked (a setting or a record to fix first)."""

    outcome = "Nothing was started."


class ClusterFailed(HeraldError):
    """Starting or stopping the cluster failed while it ran (a process, the database)."""


# --------------------------------------------------------------------------- the record


@dataclass(frozen=True)
class Paths:
    """Where a cluster's files live: ``<var>/cluster/``."""

    root: Path

    @classmethod
    def under(cls, var_dir: Path) -> Paths:
        """The cluster folder of the var directory ``var_dir`` (made absolute)."""
        return cls(var_dir.resolve() / "cluster")

    @property
    def record(self) -> Path:
        """``cluster.json``: what ``up`` started."""
        return self.root / "cluster.json"

    @property
    def env(self) -> Path:
        """The ``export`` lines a shell sources to use the cluster."""
        return self.root / "env"

    @property
    def logs(self) -> Path:
        """One log per process, and ``herald deploy``'s output."""
        return self.root / "logs"

    @property
    def prefect_home(self) -> Path:
        """The ``PREFECT_HOME`` of the server and the workers."""
        return self.root / "prefect-home"


@dataclass(frozen=True)
class Process:
    """One process ``up`` started: its name, pid, start time (clock ticks after boot, from
    ``/proc``; None where there is none) and log file."""

    name: str
    pid: int
    start: int | None
    log: str

    def alive(self) -> bool:
        """Still running: this very process (not a later one with its pid), not a zombie."""
        return _alive(self.pid, self.start)


@dataclass(frozen=True)
class Cluster:
    """What ``cluster.json`` holds. The database URLs are stored without their password."""

    api_url: str
    port: int
    pool: str
    project: str
    prefect_database: str
    herald_database: str
    started_at: str
    processes: tuple[Process, ...]

    @property
    def server(self) -> Process | None:
        """The Prefect server's process."""
        return next((p for p in self.processes if p.name == "server"), None)

    @property
    def workers(self) -> tuple[Process, ...]:
        """The workers' processes, in order."""
        return tuple(p for p in self.processes if p.name != "server")

    def as_json(self) -> dict[str, Any]:
        """The record as JSON."""
        return {
            "api_url": self.api_url,
            "port": self.port,
            "pool": self.pool,
            "project": self.project,
            "prefect_database": self.prefect_database,
            "herald_database": self.herald_database,
            "started_at": self.started_at,
            "processes": [
                {"name": p.name, "pid": p.pid, "start": p.start, "log": p.log}
                for p in self.processes
            ],
        }

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> Cluster:
        """The record read back (KeyError, TypeError or ValueError when it is not one)."""
        return cls(
            api_url=str(data["api_url"]),
            port=int(data["port"]),
            pool=str(data["pool"]),
            project=str(data["project"]),
            prefect_database=str(data["prefect_database"]),
            herald_database=str(data["herald_database"]),
            started_at=str(data["started_at"]),
            processes=tuple(
                Process(
                    name=str(p["name"]),
                    pid=int(p["pid"]),
                    start=None if p.get("start") is None else int(p["start"]),
                    log=str(p["log"]),
                )
                for p in data["processes"]
            ),
        )


def read(paths: Paths) -> Cluster | None:
    """The recorded cluster, or None when there is no record."""
    try:
        raw = paths.record.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    try:
        return Cluster.from_json(json.loads(raw))
    except (ValueError, KeyError, TypeError, AttributeError) as error:
        raise ClusterError(
            f"{paths.record} is not a cluster record ({error!r}): stop what it started by "
            "hand, remove the file, then run the command again"
        ) from None


def _write(paths: Paths, cluster: Cluster) -> None:
    paths.root.mkdir(parents=True, exist_ok=True)
    partial = paths.record.with_suffix(".json.tmp")
    partial.write_text(json.dumps(cluster.as_json(), indent=2) + "\n", encoding="utf-8")
    os.replace(partial, paths.record)


# --------------------------------------------------------------------------- databases


def masked(url: str | URL) -> str:
    """A database URL fit to print and to store: its password hidden."""
    try:
        return make_url(url).render_as_string(hide_password=True)
    except ArgumentError:
        return "<unparsable database URL>"


def herald_database_url(configured: str) -> str:
    """Herald's database for the cluster: ``configured`` (HERALD_DATABASE_URL) or the
    default, which must be Postgres: every sender on every host shares it."""
    url = configured or DEFAULT_HERALD_DATABASE
    parsed = _parse(url, "HERALD_DATABASE_URL")
    if parsed.get_backend_name() != "postgresql":
        raise ClusterError(
            f"HERALD_DATABASE_URL is {masked(url)}: a cluster needs Herald's database on "
            "PostgreSQL (postgresql+psycopg://...), because SQLite cannot be shared by the "
            "senders of several workers and hosts; set it to a Postgres URL, or unset it for "
            f"{DEFAULT_HERALD_DATABASE}"
        )
    return url


def prefect_database_url(configured: str | None) -> str:
    """The Prefect server's database: ``configured`` (PREFECT_SERVER_DATABASE_CONNECTION_URL)
    or the default, on Postgres through asyncpg (SQLite locks under several workers)."""
    url = configured or DEFAULT_PREFECT_DATABASE
    parsed = _parse(url, PREFECT_DATABASE_VARIABLE)
    if parsed.get_backend_name() != "postgresql" or parsed.get_driver_name() != "asyncpg":
        raise ClusterError(
            f"{PREFECT_DATABASE_VARIABLE} is {masked(url)}: the cluster's Prefect server "
            "keeps its database on PostgreSQL through asyncpg (postgresql+asyncpg://...); "
            f"set it so, or unset it for {DEFAULT_PREFECT_DATABASE}"
        )
    return url


def _parse(url: str, variable: str) -> URL:
    try:
        return make_url(url)
    except ArgumentError:
        raise ClusterError(f"{variable} is not a database URL") from None


def ensure_database(url: str) -> bool:
    """Create the Postgres database ``url`` names unless it exists; True when created.
    (Connects through psycopg to the server's ``postgres`` database to create it.)"""
    target = make_url(url)
    name = target.database
    if not name:
        raise ClusterError(f"{masked(url)} names no database")
    admin_url = target.set(drivername="postgresql+psycopg", database="postgres")
    if target.get_driver_name() != "psycopg":
        admin_url = admin_url.set(query={})  # another driver's options (asyncpg's) do not apply
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as conn:
            found = conn.execute(
                text("SELECT 1 FROM pg_database WHERE datname = :name"), {"name": name}
            ).scalar()
            if found:
                return False
            quoted = conn.dialect.identifier_preparer.quote(name)
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    except SQLAlchemyError as error:
        raise ClusterFailed(f"database {masked(url)}: {_reason(error)}") from None
    finally:
        admin.dispose()


def _reason(error: SQLAlchemyError) -> str:
    """The driver's first line (it names the host and the problem, never the password)."""
    return str(getattr(error, "orig", None) or error).strip().splitlines()[0]


# --------------------------------------------------------------------------- processes


@dataclass(frozen=True)
class _Stat:
    state: str
    ppid: int
    pgrp: int
    start: int


def _stat(pid: int) -> _Stat | None:
    """The process's line of ``/proc/<pid>/stat``; None when it is gone (or no ``/proc``)."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2 :].split()  # after "pid (command) "
    return _Stat(state=fields[0], ppid=int(fields[1]), pgrp=int(fields[2]), start=int(fields[19]))


def parent_pid(pid: int) -> int | None:
    """The parent of process ``pid`` (a flow run's worker); None when it is gone."""
    found = _stat(pid)
    return found.ppid if found else None


def _has_proc() -> bool:
    return Path("/proc/self/stat").is_file()


def start_time(pid: int) -> int | None:
    """When the process ``pid`` started (clock ticks after boot); None without ``/proc``."""
    found = _stat(pid)
    return found.start if found else None


def _alive(pid: int, start: int | None) -> bool:
    if _has_proc():
        found = _stat(pid)
        if found is None or found.state in ("Z", "X"):
            return False
        return start is None or found.start == start
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _children() -> dict[int, list[tuple[int, int]]]:
    """Every process's children, as (pid, start time), from ``/proc`` (empty without it)."""
    out: dict[int, list[tuple[int, int]]] = {}
    if not _has_proc():
        return out
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            found = _stat(int(entry.name))
            if found is not None and found.state not in ("Z", "X"):
                out.setdefault(found.ppid, []).append((int(entry.name), found.start))
    return out


class _Tree:
    """The processes to stop: the recorded ones and everything they started since."""

    def __init__(self, roots: Iterable[Process]) -> None:
        self.known: dict[int, int | None] = {p.pid: p.start for p in roots if p.alive()}

    def grow(self) -> None:
        """Add the descendants of every process still alive (a run started meanwhile)."""
        children = _children()
        todo = self.alive()
        while todo:
            pid = todo.pop()
            for child, start in children.get(pid, []):
                if child not in self.known:
                    self.known[child] = start
                    todo.append(child)

    def alive(self) -> list[int]:
        return [pid for pid, start in self.known.items() if _alive(pid, start)]

    def signal(self, signum: signal.Signals, pids: Iterable[int]) -> None:
        """Send ``signum`` to each process, and to its whole group where it leads one."""
        for pid in pids:
            found = _stat(pid)
            try:
                if found is None or found.pgrp == pid:
                    os.killpg(pid, signum)
                else:
                    os.kill(pid, signum)
            except (ProcessLookupError, PermissionError):
                pass


@dataclass(frozen=True)
class Stopped:
    """What ``down`` (or a failed ``up``) did to each recorded process."""

    outcomes: tuple[tuple[Process, str], ...]  # "stopped", "killed", "was not running"
    others: int  # processes they had started (flow runs), stopped with them

    @property
    def any_running(self) -> bool:
        """Whether any recorded process was still running when asked to stop."""
        return any(how != "was not running" for _, how in self.outcomes)


def stop_processes(
    processes: Sequence[Process],
    *,
    timeout: float = STOP_TIMEOUT,
    kill_timeout: float = KILL_TIMEOUT,
) -> Stopped:
    """SIGTERM every process and what it started, wait until they are gone (``timeout``:
    a safety net), SIGKILL what is left; ClusterFailed if even that survives."""
    running = {p.pid for p in processes if p.alive()}
    tree = _Tree(processes)
    tree.grow()
    told = set(tree.alive())
    tree.signal(signal.SIGTERM, told)
    deadline = time.monotonic() + timeout
    while tree.alive() and time.monotonic() < deadline:
        time.sleep(POLL_EVERY)
        tree.grow()
        late = [pid for pid in tree.alive() if pid not in told]
        tree.signal(signal.SIGTERM, late)
        told.update(late)
    killed = set(tree.alive())
    if killed:
        tree.signal(signal.SIGKILL, killed)
        deadline = time.monotonic() + kill_timeout
        while tree.alive() and time.monotonic() < deadline:
            time.sleep(POLL_EVERY)
    if survivors := tree.alive():
        raise ClusterFailed(
            f"processes {', '.join(map(str, sorted(survivors)))} survived SIGKILL for "
            f"{kill_timeout:.0f} s"
        )

    def outcome(process: Process) -> str:
        if process.pid not in running:
            return "was not running"
        return "killed" if process.pid in killed else "stopped"

    return Stopped(
        outcomes=tuple((p, outcome(p)) for p in processes),
        others=len(tree.known) - len(running),
    )


def stop_cluster(processes: Sequence[Process]) -> Stopped:
    """Stop the workers (and their flow runs) first, then the server: a run that is stopped
    can still tell the server so."""
    workers = [p for p in processes if p.name != "server"]
    first = stop_processes(workers)
    then = stop_processes([p for p in processes if p.name == "server"])
    found = dict(first.outcomes + then.outcomes)
    return Stopped(
        outcomes=tuple((p, found[p]) for p in processes), others=first.others + then.others
    )


# --------------------------------------------------------------------------- up


@dataclass(frozen=True)
class Plan:
    """What ``up`` is asked to start, with the settings it read."""

    project: Path
    var_dir: Path
    config_dir: Path
    templates_dir: Path
    workers: int
    port: int
    herald_database: str  # HERALD_DATABASE_URL ("": the default)
    prefect_database: str | None  # PREFECT_SERVER_DATABASE_CONNECTION_URL (None: the default)
    environment: Mapping[str, str] = field(default_factory=lambda: dict(os.environ))

    @property
    def paths(self) -> Paths:
        """Where the cluster's files go."""
        return Paths.under(self.var_dir)

    @property
    def api_url(self) -> str:
        """The Prefect API the workers and commands use."""
        return f"http://{HOST}:{self.port}/api"


@dataclass(frozen=True)
class Started:
    """The cluster ``up`` started, or the one already running (``already``)."""

    cluster: Cluster
    already: bool
    env_file: Path
    replaced_stale: bool = False


def up(plan: Plan, progress: Progress) -> Started:
    """Start the server, register the deployments, start the workers; return once Prefect
    lists every worker online. A cluster already running is left alone (``already``). On
    any failure (or Ctrl-C) whatever was started is stopped and the record removed."""
    paths = plan.paths
    existing = read(paths)
    if existing is not None and any(p.alive() for p in existing.processes):
        return Started(cluster=existing, already=True, env_file=paths.env)
    if not (plan.project / "prefect.yaml").is_file():
        raise ClusterError(f"no prefect.yaml in {plan.project}: run it from Herald's folder")
    herald_url = herald_database_url(plan.herald_database)
    prefect_url = prefect_database_url(plan.prefect_database)
    if not _port_free(plan.port):
        raise ClusterError(
            f"port {plan.port} on {HOST} is in use (another Prefect server?): stop it or "
            "choose another with --port"
        )
    for url, what in ((prefect_url, "Prefect's"), (herald_url, "Herald's")):
        if ensure_database(url):
            progress(f"Created {what} database {masked(url)}")
    _migrate(herald_url)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.prefect_home.mkdir(parents=True, exist_ok=True)
    env = _environment(plan, herald_url)
    cluster = Cluster(
        api_url=plan.api_url,
        port=plan.port,
        pool=POOL,
        project=str(plan.project),
        prefect_database=masked(prefect_url),
        herald_database=masked(herald_url),
        started_at=datetime.now(UTC).isoformat(timespec="seconds"),
        processes=(),
    )
    started: list[Process] = []
    try:
        progress(f"Starting the Prefect server on {plan.api_url} ...")
        server = _spawn(
            "server",
            [*_prefect(), "server", "start", "--host", HOST, "--port", str(plan.port)],
            {**env, PREFECT_DATABASE_VARIABLE: prefect_url},
            plan.project,
            paths,
        )
        started.append(server)
        _write(paths, _with(cluster, started))
        _wait_healthy(f"http://{HOST}:{plan.port}/api/health", server)
        progress("Registering the deployments (herald deploy) ...")
        _deploy(plan, env, paths)
        progress(f"Starting {plan.workers} worker(s) on pool {POOL!r} ...")
        since = datetime.now(UTC)
        for number in range(1, plan.workers + 1):
            name = f"herald-worker-{number}"
            command = [*_prefect(), "worker", "start", "--pool", POOL, "--name", name]
            started.append(_spawn(name, command, env, plan.project, paths))
            _write(paths, _with(cluster, started))
        _wait_online(plan.api_url, started[1:], since)
        _write_env(paths, plan, herald_url)
    except BaseException:
        stop_cluster(started)
        paths.record.unlink(missing_ok=True)
        raise
    return Started(
        cluster=_with(cluster, started),
        already=False,
        env_file=paths.env,
        replaced_stale=existing is not None,
    )


def _with(cluster: Cluster, processes: Sequence[Process]) -> Cluster:
    return replace(cluster, processes=tuple(processes))


def _prefect() -> list[str]:
    """Prefect's command line, from the interpreter running herald."""
    return [sys.executable, "-m", "prefect"]


def _port_free(port: int) -> bool:
    with socket.socket() as probe:
        # As the server binds: a closed connection's TIME_WAIT does not hold the port.
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((HOST, port))
        except OSError:
            return False
    return True


def _migrate(url: str) -> None:
    from herald.db import prepare_database

    try:
        prepare_database(url).dispose()
    except SQLAlchemyError as error:
        raise ClusterFailed(f"database {masked(url)}: {_reason(error)}") from None


def _environment(plan: Plan, herald_url: str) -> dict[str, str]:
    """The environment of every process the cluster runs (the server adds its database)."""
    env = {k: v for k, v in plan.environment.items() if k != PREFECT_DATABASE_VARIABLE}
    env.update(QUIET)
    env.update(
        PREFECT_HOME=str(plan.paths.prefect_home),
        PREFECT_API_URL=plan.api_url,
        HERALD_HOME=str(plan.project),
        HERALD_DATABASE_URL=herald_url,
        HERALD_VAR_DIR=str(plan.var_dir.resolve()),
        HERALD_CONFIG_DIR=str(plan.config_dir.resolve()),
        HERALD_TEMPLATES_DIR=str(plan.templates_dir.resolve()),
    )
    return env


def _spawn(
    name: str, command: Sequence[str], env: Mapping[str, str], cwd: Path, paths: Paths
) -> Process:
    """Start ``command`` in a session of its own, its output in ``logs/<name>.log``."""
    log = paths.logs / f"{name}.log"
    with log.open("wb") as output:
        child = subprocess.Popen(
            list(command),
            cwd=cwd,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            stdout=output,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    # Nobody waits for it here: `down` finds it by pid and start time. Forget the handle so
    # that Python does not warn about a child still running when this command exits.
    child.returncode = 0
    return Process(name=name, pid=child.pid, start=start_time(child.pid), log=str(log))


def _tail(path: str, lines: int = 20) -> str:
    try:
        content = Path(path).read_text(encoding="utf-8", errors="replace")
    except OSError:
        return ""
    return "\n".join(content.strip().splitlines()[-lines:])


def _exited(process: Process, what: str) -> ClusterFailed:
    tail = _tail(process.log)
    return ClusterFailed(
        f"{what} exited while starting; its log is {process.log}" + (f":\n{tail}" if tail else "")
    )


def _answers(url: str, timeout: float) -> bool:
    """Whether ``url`` answers 200 (straight to it: no proxy for a local server)."""
    import http.client
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(url, timeout=timeout) as response:
            return int(response.status) == 200
    except (OSError, http.client.HTTPException):
        return False


def _wait_healthy(url: str, server: Process, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while True:
        if not server.alive():
            raise _exited(server, "the Prefect server")
        left = deadline - time.monotonic()
        if left <= 0:
            raise ClusterFailed(
                f"the Prefect server did not answer {url} within {timeout:.0f} s; its log is "
                f"{server.log}"
            )
        if _answers(url, min(POLL_TIMEOUT, max(left, 1.0))):
            return
        time.sleep(POLL_EVERY)


def _deploy(plan: Plan, env: Mapping[str, str], paths: Paths) -> None:
    """``herald deploy`` against the new server; its output goes to ``logs/deploy.log``."""
    log = paths.logs / "deploy.log"
    command = [sys.executable, "-m", "herald.cli", "deploy", "--project", str(plan.project)]
    try:
        done = subprocess.run(
            command,
            cwd=plan.project,
            env=dict(env),
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=DEPLOY_TIMEOUT,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise ClusterFailed(f"herald deploy did not finish within {DEPLOY_TIMEOUT:.0f} s") from None
    output = (done.stdout + done.stderr).strip()
    log.write_text(output + "\n", encoding="utf-8")
    if done.returncode != 0:
        tail = "\n".join(output.splitlines()[-30:])
        raise ClusterFailed(
            f"herald deploy failed (exit code {done.returncode}; all of it in {log}):\n{tail}"
        )


# --------------------------------------------------------------------------- Prefect's view


@dataclass(frozen=True)
class SeenWorker:
    """A worker as Prefect lists it in the pool."""

    name: str
    status: str  # "ONLINE" or "OFFLINE"
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class PrefectView:
    """What the cluster's Prefect server says: the pool's workers and the deployments."""

    workers: tuple[SeenWorker, ...]
    deployments: tuple[str, ...]  # "flow/deployment"

    @property
    def online(self) -> tuple[str, ...]:
        """The names of the workers Prefect counts online."""
        return tuple(w.name for w in self.workers if w.status == "ONLINE")


def prefect_view(api_url: str, pool: str = POOL, *, deployments: bool = True) -> PrefectView:
    """Ask the Prefect server at ``api_url`` for the pool's workers and (unless told not to)
    the deployments; raises the client's error when it does not answer."""
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.exceptions import ObjectNotFound

    with SyncPrefectClient(api_url) as client:
        try:
            workers = client.read_workers_for_work_pool(work_pool_name=pool)
        except ObjectNotFound:
            workers = []
        flows = {f.id: f.name for f in client.read_flows()} if deployments else {}
        registered = client.read_deployments() if deployments else []
    return PrefectView(
        workers=tuple(
            SeenWorker(
                name=w.name,
                status=str(getattr(w.status, "value", w.status)),
                last_heartbeat=w.last_heartbeat_time,
            )
            for w in sorted(workers, key=lambda w: w.name)
        ),
        deployments=tuple(sorted(f"{flows.get(d.flow_id, '?')}/{d.name}" for d in registered)),
    )


def _wait_online(
    api_url: str, workers: Sequence[Process], since: datetime, timeout: float = START_TIMEOUT
) -> None:
    """Return once Prefect lists every worker online with a heartbeat sent after ``since``
    (not a record left by an earlier cluster on the same database)."""
    wanted = {w.name for w in workers}
    deadline = time.monotonic() + timeout
    problem = "no answer yet"
    while True:
        for worker in workers:
            if not worker.alive():
                raise _exited(worker, worker.name)
        try:
            view = prefect_view(api_url, deployments=False)
        except Exception as error:  # the client's own errors; a busy server: ask again
            problem = f"{type(error).__name__}: {error}"
        else:
            fresh = {
                w.name
                for w in view.workers
                if w.status == "ONLINE" and w.last_heartbeat and w.last_heartbeat >= since
            }
            if wanted <= fresh:
                return
            problem = f"online: {', '.join(sorted(fresh & wanted)) or 'none'}"
        if time.monotonic() >= deadline:
            raise ClusterFailed(
                f"Prefect did not list every worker online in pool {POOL!r} within "
                f"{timeout:.0f} s ({problem}); their logs are in {Path(workers[0].log).parent}"
            )
        time.sleep(POLL_EVERY)


def _write_env(paths: Paths, plan: Plan, herald_url: str) -> None:
    """The ``export`` lines to use the cluster. A password in Herald's URL is left out
    (libpq reads PGPASSWORD or ~/.pgpass): this file is meant to be sourced, not guarded."""
    url = make_url(herald_url)
    lines = [
        "# Written by `herald cluster up`: `source` this file to use the cluster.",
        f"export PREFECT_API_URL={shlex.quote(plan.api_url)}",
        "export HERALD_DATABASE_URL="
        + shlex.quote(url.set(password=None).render_as_string(hide_password=False)),
        f"export HERALD_VAR_DIR={shlex.quote(str(plan.var_dir.resolve()))}",
    ]
    if url.password:
        lines.insert(1, "# The database password is not written here: set PGPASSWORD.")
    paths.env.write_text("\n".join(lines) + "\n", encoding="utf-8")


# --------------------------------------------------------------------------- down, status


def down(paths: Paths) -> Stopped | None:
    """Stop the recorded cluster and remove its record; None when there is no record."""
    cluster = read(paths)
    if cluster is None:
        return None
    stopped = stop_cluster(cluster.processes)
    paths.record.unlink(missing_ok=True)
    return stopped


@dataclass(frozen=True)
class Status:
    """The recorded cluster, which of its processes run, and what Prefect sees."""

    cluster: Cluster
    alive: tuple[tuple[Process, bool], ...]
    prefect: PrefectView | None
    prefect_problem: str | None

    @property
    def healthy(self) -> bool:
        """Every recorded process runs."""
        return all(running for _, running in self.alive)

    def as_json(self) -> dict[str, Any]:
        """One JSON document, for scripts."""
        view = self.prefect
        return {
            "running": any(running for _, running in self.alive),
            "healthy": self.healthy,
            **{k: v for k, v in self.cluster.as_json().items() if k != "processes"},
            "processes": [
                {"name": p.name, "pid": p.pid, "alive": running, "log": p.log}
                for p, running in self.alive
            ],
            "workers_online": list(view.online) if view else None,
            "deployments": list(view.deployments) if view else None,
            "prefect_problem": self.prefect_problem,
        }


def status(paths: Paths) -> Status | None:
    """The cluster's state; None when there is no record."""
    cluster = read(paths)
    if cluster is None:
        return None
    alive = tuple((p, p.alive()) for p in cluster.processes)
    view: PrefectView | None = None
    problem: str | None = None
    server = cluster.server
    if server is None or not server.alive():
        problem = "the Prefect server is not running"
    elif not _answers(cluster.api_url + "/health", POLL_TIMEOUT):
        problem = f"the Prefect server does not answer {cluster.api_url}/health"
    else:
        try:
            view = prefect_view(cluster.api_url, cluster.pool)
        except Exception as error:  # the client's own errors: report them, not a traceback
            problem = f"Prefect's API: {type(error).__name__}: {error}"
    return Status(cluster=cluster, alive=alive, prefect=view, prefect_problem=problem)
