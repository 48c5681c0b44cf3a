"""Sender rows written by hand: ``send_worker`` and ``send_batch`` rows with known counts and
moments, for the per-sender statistics and ``herald status``'s live senders."""

from __future__ import annotations

import socket
import subprocess
import sys
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import Engine, insert

from herald.models import SEND_BATCH, SEND_WORKER


def worker_row(
    campaign: str,
    message: str,
    *,
    started_at: datetime,
    heartbeat_at: datetime | None = None,
    finished_at: datetime | None = None,
    outcome: str | None = None,
    host: str | None = None,
    pid: int = 4242,
    flow_run_id: str | None = None,
    transport: str = "sendgrid",
) -> dict[str, Any]:
    """A ``send_worker`` row with every key (an executemany takes the first row's keys)."""
    return {
        "id": str(uuid.uuid4()),
        "campaign": campaign,
        "message": message,
        "transport": transport,
        "host": socket.gethostname() if host is None else host,
        "pid": pid,
        "started_at": started_at,
        "heartbeat_at": heartbeat_at or started_at,
        "finished_at": finished_at,
        "outcome": outcome,
        "flow_run_id": flow_run_id,
    }


def batch_row(
    worker: dict[str, Any],
    state: str,
    recipients: int,
    *,
    created_at: datetime,
    finished_at: datetime | None = None,
    requests: int = 1,
) -> dict[str, Any]:
    """A ``send_batch`` row of ``worker`` with every key."""
    return {
        "id": str(uuid.uuid4()),
        "worker_id": worker["id"],
        "campaign": worker["campaign"],
        "message": worker["message"],
        "state": state,
        "recipients": recipients,
        "requests": requests,
        "http_status": None,
        "provider_message_id": None,
        "error": None,
        "created_at": created_at,
        "finished_at": finished_at,
    }


def insert_senders(
    engine: Engine, workers: list[dict[str, Any]], batches: list[dict[str, Any]] | None = None
) -> None:
    """Write the workers, then their batches."""
    with engine.begin() as conn:
        conn.execute(insert(SEND_WORKER), workers)
        if batches:
            conn.execute(insert(SEND_BATCH), batches)


def dead_pid() -> int:
    """The pid of a process of this host that has exited (spawned and reaped)."""
    process = subprocess.Popen([sys.executable, "-c", "pass"])
    process.wait()
    return process.pid
