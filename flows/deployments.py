"""Herald's Prefect deployments, with their schedules built from ``config/campaign.yaml``.

``prefect.yaml`` says what each deployment runs (entrypoint, parameters, work pool, the pull
step); it holds no schedule. The dates and times live in one place, ``campaign.yaml``
(``phases``, ``timezone``, ``schedules``): :func:`deployment_file` adds the schedules to
``prefect.yaml``'s deployments, checks every parameter set against its flow, and ``herald
deploy`` writes the result to ``var/deploy/prefect.yaml`` and registers it with Prefect's own
``prefect deploy --all`` against ``PREFECT_API_URL``. Moving a phase date in the config and
running ``herald deploy`` again moves that deployment's schedule.

A phase runs every hour of its days (``schedules.phase_days`` from its date, in the
campaign's time zone), so each recipient's delivery window comes round. The days are written
as cron day-of-month ranges, which Prefect's UI reads as such ("every hour, on days 9-15 of
February"); since a cron repeats every year, the scheduled run carries ``scheduled: true``
and does nothing on a day that is not one of the phase's.
"""

from __future__ import annotations

import copy
import importlib
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from itertools import groupby
from pathlib import Path
from typing import Any

import yaml

from herald.config import HeraldConfig
from herald.errors import HeraldError

# Deployments of send-phase whose schedule is their phase's days.
SCHEDULED_PHASES = ("preview", "announcement", "deprecation")


class DeploymentFileError(HeraldError):
    """prefect.yaml does not fit what ``herald deploy`` builds from it."""

    outcome = "Nothing was registered."


@dataclass(frozen=True)
class Schedule:
    """One schedule of one deployment, as prefect.yaml writes it."""

    cron: str
    timezone: str
    parameters: dict[str, Any]

    def as_yaml(self) -> dict[str, Any]:
        """The mapping prefect.yaml takes."""
        out: dict[str, Any] = {"cron": self.cron, "timezone": self.timezone}
        if self.parameters:
            out["parameters"] = dict(self.parameters)
        return out


def day_crons(days: Iterable[date]) -> list[str]:
    """Hourly cron expressions covering ``days`` (consecutive days of a month form one range:
    ``0 * 9-15 2 *``; a span across a month's end takes one expression per month)."""
    out = []
    for month, group in groupby(sorted(set(days)), key=lambda d: d.month):
        numbers = [d.day for d in group]
        ranges: list[list[int]] = []
        for number in numbers:
            if ranges and number == ranges[-1][-1] + 1:
                ranges[-1].append(number)
            else:
                ranges.append([number])
        span = ",".join(f"{r[0]}-{r[-1]}" if len(r) > 1 else str(r[0]) for r in ranges)
        out.append(f"0 * {span} {month} *")
    return out


def schedules(config: HeraldConfig) -> dict[str, list[Schedule]]:
    """Every deployment's schedules, by deployment name, from the campaign config."""
    campaign = config.campaign
    tz = campaign.timezone
    every = campaign.schedules
    out: dict[str, list[Schedule]] = {
        "telemetry-ingest": [Schedule(every.telemetry_ingest, tz, {})],
        "segment-refresh": [Schedule(every.segment_refresh, tz, {})],
        "weekly-report": [Schedule(every.weekly_report, tz, {"send": True})],
        "sunset-notices": [Schedule(every.notices, tz, {"send": True})],
    }
    for phase in SCHEDULED_PHASES:
        parameters = {"phase": phase, "send": True, "scheduled": True}
        out[phase] = [
            Schedule(cron, tz, parameters) for cron in day_crons(campaign.phase_days(phase))
        ]
    return out


def deployment_file(config: HeraldConfig, base: Path) -> dict[str, Any]:
    """``base`` (prefect.yaml) with every deployment's schedules from the config, checked:
    no schedule written in ``base`` (they belong in campaign.yaml), one deployment per
    schedule set, every entrypoint a flow that accepts each parameter set."""
    try:
        loaded = yaml.safe_load(base.read_text(encoding="utf-8"))
    except (OSError, yaml.YAMLError) as error:
        raise DeploymentFileError(f"{base}: {error}") from None
    data: dict[str, Any] = copy.deepcopy(loaded or {})
    deployments: list[dict[str, Any]] = list(data.get("deployments") or [])
    by_name = {str(d.get("name")): d for d in deployments}
    problems = []
    for deployment in deployments:
        if deployment.get("schedules") or deployment.get("schedule"):
            problems.append(
                f"deployment {deployment.get('name')!r} has a schedule in {base.name}: "
                "schedules are built from config/campaign.yaml (phases, timezone, schedules)"
            )
    wanted = schedules(config)
    problems += [
        f"{base.name} has no deployment {name!r} for its schedule"
        for name in wanted
        if name not in by_name
    ]
    if problems:
        raise DeploymentFileError("; ".join(problems))
    for name, found in wanted.items():
        by_name[name]["schedules"] = [s.as_yaml() for s in found]
    for deployment in deployments:
        _check_parameters(deployment)
    data["deployments"] = deployments
    return data


def _check_parameters(deployment: dict[str, Any]) -> None:
    """The deployment's entrypoint is a flow that accepts its default and schedule
    parameters (what Prefect would otherwise refuse only when the run starts)."""
    from prefect import Flow
    from prefect.exceptions import ParameterTypeError

    path, _, name = str(deployment.get("entrypoint", "")).partition(":")
    try:
        module = importlib.import_module(path.removesuffix(".py").replace("/", "."))
        flow = getattr(module, name)
    except (ImportError, AttributeError):
        flow = None
    if not isinstance(flow, Flow):
        raise DeploymentFileError(
            f"deployment {deployment.get('name')!r}: entrypoint {path}:{name} is not a flow"
        )
    defaults = dict(deployment.get("parameters") or {})
    for schedule in [{}, *(deployment.get("schedules") or [])]:
        parameters = {**defaults, **dict(schedule.get("parameters") or {})}
        try:
            flow.validate_parameters(parameters)
        except ParameterTypeError as error:
            raise DeploymentFileError(
                f"deployment {deployment.get('name')!r}: parameters {parameters} do not fit "
                f"{flow.name}: {error}"
            ) from None


def write_deployment_file(data: dict[str, Any], path: Path) -> Path:
    """Write the complete deployment file (a generated file: its first lines say so)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    header = (
        "# Generated by `herald deploy` from prefect.yaml and config/campaign.yaml: edit those,\n"
        "# not this file.\n"
    )
    path.write_text(header + yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path
