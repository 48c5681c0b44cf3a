"""The audit log: who did what, when, to which campaign and phase."""

from __future__ import annotations

import getpass
import os
import socket
from typing import Any

from sqlalchemy import Connection, insert

from herald.models import AUDIT_LOG, utcnow


def actor() -> str:
    """Who is acting: ``HERALD_ACTOR`` if set (a deployment names itself), else user@host."""
    named = os.environ.get("HERALD_ACTOR", "").strip()
    if named:
        return named
    try:
        user = getpass.getuser()
    except (KeyError, OSError):  # no passwd entry (containers)
        user = f"uid{os.getuid()}"
    return f"{user}@{socket.gethostname()}"


def record(
    conn: Connection,
    action: str,
    *,
    campaign: str | None = None,
    phase: str | None = None,
    detail: dict[str, Any] | None = None,
    who: str | None = None,
) -> None:
    """Append one entry, in the caller's transaction (it lands with the change it describes)."""
    conn.execute(
        insert(AUDIT_LOG).values(
            at=utcnow(),
            actor=who or actor(),
            action=action,
            campaign=campaign,
            phase=phase,
            detail=detail or {},
        )
    )
