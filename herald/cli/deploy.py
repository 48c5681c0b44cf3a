"""``herald deploy``: register every Prefect deployment, its schedules built from
``config/campaign.yaml``, with the Prefect server at ``PREFECT_API_URL``."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from herald.cli.common import ExitCode, campaign_config, console, errors, guard, settings

if TYPE_CHECKING:
    from herald.config import HeraldConfig

GENERATED = Path("deploy") / "prefect.yaml"
# Prefect's command line, from the interpreter running herald (no `prefect` on PATH needed).
PREFECT = (sys.executable, "-m", "prefect")


def deploy(
    project: Annotated[
        Path,
        typer.Option(help="The folder holding prefect.yaml, flows/ and tasks/ (default: here)."),
    ] = Path(),
    pool: Annotated[
        str, typer.Option(help="The process work pool the deployments use.")
    ] = "herald",
    print_only: Annotated[
        bool,
        typer.Option(
            "--print", help="Write and show the deployment file; register nothing (no server)."
        ),
    ] = False,
) -> None:
    """Register every deployment, scheduled from campaign.yaml, with PREFECT_API_URL's server.

    Builds the deployments from prefect.yaml with the schedules of campaign.yaml, checks
    them against their flows, writes var/deploy/prefect.yaml and registers it with `prefect
    deploy --all` (the work pool is created when missing). Moving a date in campaign.yaml
    and deploying again moves its schedule."""
    from flows.deployments import deployment_file, write_deployment_file

    base = project / "prefect.yaml"
    if not base.is_file():
        raise typer.BadParameter(f"no prefect.yaml in {project.resolve()}", param_hint="--project")
    api = _api_url()
    if not (api or print_only):
        errors.print(
            "[bold red]error:[/] herald deploy registers with a running Prefect server: start "
            "one (`prefect server start`) and set PREFECT_API_URL=http://HOST:4200/api "
            "(or use --print to only build the file). Nothing was registered."
        )
        raise typer.Exit(ExitCode.INVALID)
    with guard():
        config = campaign_config()
        sys.path.insert(0, str(project.resolve()))
        data = deployment_file(config, base)  # DeploymentFileError: exit 2, like any
    path = write_deployment_file(data, settings().var_dir / GENERATED)
    _print(data, path)
    if print_only:
        return
    _ensure_pool(pool, project)
    _ensure_rate(config)
    _prefect(
        project,
        f"prefect deploy failed against {api}",
        "--no-prompt",
        "deploy",
        "--all",
        "--prefect-file",
        str(path.resolve()),
    )
    console.print(
        f"Registered {len(data['deployments'])} deployments with {api} (pool {pool!r}). "
        f"Workers: HERALD_HOME={project.resolve()} prefect worker start --pool {pool}",
        soft_wrap=True,
    )


def _api_url() -> str | None:
    from prefect.settings import get_current_settings

    url = get_current_settings().api.url
    return str(url) if url else None


def _ensure_pool(pool: str, project: Path) -> None:
    """Create the process work pool unless the server has it (with Prefect's own command,
    which gives it the process worker's job template)."""
    from prefect.client.orchestration import get_client
    from prefect.exceptions import ObjectNotFound

    with get_client(sync_client=True) as client:
        try:
            client.read_work_pool(pool)
            return
        except ObjectNotFound:
            pass
    _prefect(
        project,
        f"creating work pool {pool!r} failed",
        "work-pool",
        "create",
        pool,
        "--type",
        "process",
    )


def _ensure_rate(config: HeraldConfig) -> None:
    """Create the campaign's global send rate limit, or bring it to campaign.yaml."""
    from herald.scaleout.rate import GlobalRate, ensure

    rate = GlobalRate.of(config.campaign)
    if rate is None:
        console.print("No sending.rate_per_second in campaign.yaml: no global rate limit.")
        return
    done = ensure(rate)
    console.print(
        f"Global rate limit {rate.name!r} {done}: {rate.rate:g} messages/s never exceeded "
        f"(limit {rate.limit}, decay {rate.decay:g}/s; requests of at most {rate.limit}).",
        soft_wrap=True,
    )


def _prefect(project: Path, failure: str, *args: str) -> None:
    """Run Prefect's command line in ``project``; on failure, say ``failure`` with the end of
    its output and exit 1."""
    done = subprocess.run(
        [*PREFECT, *args], cwd=project, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip()[-3000:]
        errors.print(f"[bold red]error:[/] {failure}:\n{output}")
        raise typer.Exit(ExitCode.FAILED)


def _print(data: dict[str, object], path: Path) -> None:
    table = Table("deployment", "flow entrypoint", "schedules (campaign time zone)")
    for deployment in data["deployments"]:  # type: ignore[attr-defined]
        shown = [
            str(s["cron"]) + (f"  {_parameters(s['parameters'])}" if s.get("parameters") else "")
            for s in deployment.get("schedules") or []
        ]
        table.add_row(
            str(deployment["name"]), str(deployment["entrypoint"]), "\n".join(shown) or "by hand"
        )
    console.print(table)
    console.print(f"Deployment file: {path}")


def _parameters(values: dict[str, object]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())
