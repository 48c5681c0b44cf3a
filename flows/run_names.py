"""Flow run names that say what a run does (``announcement-2027-02-09-send``), read from its
parameters, so a list of runs in the Prefect UI reads like the campaign's log."""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta
from typing import Any

from prefect.runtime import flow_run


def _day(value: Any, *, default: date) -> str:
    if value is None:
        return default.isoformat()
    return str(value)[:10]


def _today() -> date:
    return datetime.now(UTC).date()


def _mode(parameters: dict[str, Any]) -> str:
    return "send" if parameters.get("send") else "dry"


def phase_run() -> str:
    """``<phase>-<day>-send`` or ``-dry``."""
    p = flow_run.parameters
    return f"{p.get('phase')}-{_day(p.get('as_of'), default=_today())}-{_mode(p)}"


def sender_run() -> str:
    """``<message>-sender-<i>-of-<n>`` (one of a phase's senders)."""
    p = flow_run.parameters
    message = p.get("message") or p.get("phase")
    return f"{message}-sender-{p.get('sender', 1)}-of-{p.get('senders', 1)}"


def notices_run() -> str:
    """``notices-<day>-send`` or ``-dry``."""
    p = flow_run.parameters
    return f"notices-{_day(p.get('as_of'), default=_today())}-{_mode(p)}"


def named(prefix: str, *, yesterday: bool = False) -> Callable[[], str]:
    """``<prefix>-<as_of>`` (default today, or yesterday for the report's last whole day)."""

    def name() -> str:
        default = _today() - timedelta(days=1) if yesterday else _today()
        suffix = "-send" if flow_run.parameters.get("send") else ""
        return f"{prefix}-{_day(flow_run.parameters.get('as_of'), default=default)}{suffix}"

    return name


def rehearsal_run() -> str:
    """``rehearse-<start>-to-<end>``."""
    p = flow_run.parameters
    return f"rehearse-{str(p.get('start'))[:10]}-to-{str(p.get('end'))[:10]}"


def ingest_run() -> str:
    """``ingest-<source or all>-<today>``."""
    return f"ingest-{flow_run.parameters.get('source') or 'all'}-{_today().isoformat()}"
