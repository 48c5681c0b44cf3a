"""``herald cluster``: the production topology on this machine (a Prefect server on Postgres,
the deployments, N process workers) started, stopped and inspected."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Annotated

import typer
from rich.markup import escape
from rich.table import Table

from herald.cli.common import ExitCode, console, errors, guard, settings
from herald.scaleout.cluster import (
    DEFAULT_PORT,
    PREFECT_DATABASE_VARIABLE,
    ClusterFailed,
    Paths,
    Plan,
    Started,
    down,
    status,
    up,
)

cluster_app = typer.Typer(
    help="A Prefect server on Postgres and N workers on this machine (docs/deploy.md).",
    no_args_is_help=True,
)


@contextmanager
def _failures() -> Iterator[None]:
    """A cluster that failed while starting or stopping: its message, exit code 1."""
    try:
        yield
    except ClusterFailed as error:
        errors.print(f"[bold red]error:[/] {escape(str(error))}")
        raise typer.Exit(ExitCode.FAILED) from None


def _paths() -> Paths:
    return Paths.under(settings().var_dir)


def _shown(path: Path | str) -> str:
    """``path`` relative to the working directory where it lies under it."""
    try:
        return str(Path(path).relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@cluster_app.command("up")
def cluster_up(
    workers: Annotated[
        int, typer.Option(min=1, max=64, help="Process workers to start on pool 'herald'.")
    ] = 2,
    port: Annotated[
        int, typer.Option(min=1, max=65535, help="Port of the Prefect server (on 127.0.0.1).")
    ] = DEFAULT_PORT,
    project: Annotated[
        Path,
        typer.Option(help="Herald's folder (prefect.yaml, flows/): the workers' HERALD_HOME."),
    ] = Path(),
) -> None:
    """Start a Prefect server on Postgres, register the deployments, start N workers.

    The server keeps its database at PREFECT_SERVER_DATABASE_CONNECTION_URL (default
    postgresql+asyncpg://postgres@127.0.0.1:5432/herald_prefect); the workers use
    HERALD_DATABASE_URL (default postgresql+psycopg://postgres@127.0.0.1:5432/herald), which
    must be Postgres. Both are created when missing. Pids, logs and an `env` file to source
    are written under var/cluster/. A cluster already running is left as it is."""
    current = settings()
    plan = Plan(
        project=project.resolve(),
        var_dir=current.var_dir,
        config_dir=current.config_dir,
        templates_dir=current.templates_dir,
        workers=workers,
        port=port,
        herald_database=current.database_url,
        prefect_database=os.environ.get(PREFECT_DATABASE_VARIABLE) or None,
    )
    with guard(), _failures():
        started = up(plan, lambda line: console.print(escape(line), soft_wrap=True))
    if started.already:
        _already(started)
        return
    _report(started, workers)


def _already(started: Started) -> None:
    cluster = started.cluster
    console.print(
        f"A cluster is already running (started {cluster.started_at}): Prefect API "
        f"{cluster.api_url}, {len(cluster.workers)} worker(s). Nothing was started.\n"
        "`herald cluster status` shows it; `herald cluster down` stops it (then `up` again "
        "for another number of workers).",
        soft_wrap=True,
        markup=False,
    )


def _report(started: Started, workers: int) -> None:
    cluster = started.cluster
    if started.replaced_stale:
        console.print("(An earlier record whose processes had all exited was replaced.)")
    ui = cluster.api_url.removesuffix("/api")
    console.print(
        f"[green]Cluster up[/]: Prefect server {escape(cluster.api_url)} (UI {escape(ui)}), "
        f"{workers} worker(s) online in pool {cluster.pool!r}.",
        soft_wrap=True,
    )
    table = Table("process", "pid", "log")
    for process in cluster.processes:
        table.add_row(process.name, str(process.pid), escape(_shown(process.log)))
    console.print(table)
    paths = _paths()
    console.print(
        f"Prefect's database: {cluster.prefect_database}\n"
        f"Herald's database:  {cluster.herald_database}\n"
        f"Record: {_shown(paths.record)}\n"
        "Next:\n"
        f"  source {_shown(started.env_file)}\n"
        f"  herald phase send PHASE --send --senders {workers}\n"
        "  make cluster-down    (or: herald cluster down)",
        soft_wrap=True,
        markup=False,
    )


@cluster_app.command("down")
def cluster_down() -> None:
    """Stop the cluster's processes and the flow runs they started; remove its record.

    SIGTERM to the workers and their flow-run processes, then to the server; SIGKILL to
    whatever has not exited after 120 s; then var/cluster/cluster.json is removed."""
    paths = _paths()
    with guard(), _failures():
        stopped = down(paths)
    if stopped is None:
        console.print(
            f"No cluster is running (no {_shown(paths.record)}). Nothing was stopped.",
            soft_wrap=True,
            markup=False,
        )
        return
    if not stopped.any_running:
        console.print(
            f"None of the recorded processes was running; removed {_shown(paths.record)}.",
            soft_wrap=True,
            markup=False,
        )
        return
    for process, how in stopped.outcomes:
        console.print(f"{process.name} (pid {process.pid}): {how}", markup=False)
    if stopped.others:
        console.print(f"and {stopped.others} process(es) they had started (flow runs)")
    console.print(f"Cluster down; removed {_shown(paths.record)}.", soft_wrap=True, markup=False)


@cluster_app.command("status")
def cluster_status(
    as_json: Annotated[
        bool, typer.Option("--json", help="One JSON document, for scripts.")
    ] = False,
) -> None:
    """The cluster's processes (running or not) and the workers Prefect sees online.

    Exit code 3 when a recorded process is no longer running."""
    paths = _paths()
    with guard():
        found = status(paths)
    if found is None:
        if as_json:
            print(json.dumps({"running": False}))
        else:
            console.print(
                f"No cluster is running (no {_shown(paths.record)}).", soft_wrap=True, markup=False
            )
        return
    if as_json:
        print(json.dumps(found.as_json(), indent=2))
    else:
        cluster = found.cluster
        console.print(
            f"Cluster started {cluster.started_at}: Prefect API {cluster.api_url}\n"
            f"Prefect's database: {cluster.prefect_database}\n"
            f"Herald's database:  {cluster.herald_database}",
            soft_wrap=True,
            markup=False,
        )
        table = Table("process", "pid", "state", "log")
        for process, running in found.alive:
            state = "[green]running[/]" if running else "[red]not running[/]"
            table.add_row(process.name, str(process.pid), state, escape(_shown(process.log)))
        console.print(table)
        if found.prefect is None:
            console.print(f"[yellow]Prefect[/]: {escape(found.prefect_problem or '')}")
        else:
            online = found.prefect.online
            console.print(
                f"Prefect sees {len(online)} worker(s) online in pool {cluster.pool!r}: "
                f"{', '.join(online) or 'none'}; {len(found.prefect.deployments)} "
                "deployment(s) registered.",
                soft_wrap=True,
                markup=False,
            )
    if not found.healthy:
        raise typer.Exit(ExitCode.PARTIAL)
