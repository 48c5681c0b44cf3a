"""Plan stamps: a rerun of a plan whose audience cannot have changed does not re-check it.

A plan (:func:`herald.delivery.planning.plan`) inserts its audience with one INSERT ...
SELECT ... ON CONFLICT DO NOTHING: a rerun adds nothing, but at a million contacts it reads
a million rows to find that out. So each plan leaves a stamp per (campaign, message): the
digest of its statement (the audience query with every parameter: segmentation day,
segments, the config it reads, the message and its dates) and the *data version* of the
audience's inputs it read. A rerun with the same digest whose inputs did not change since
skips the statement: it would add nothing.

The data version is kept by triggers (migration 0012), so every writer counts, Herald or
not (an import, the CRM sync, raw SQL, adoption telemetry, the console): a change to
``contact``, ``account`` or ``segment_assignment``; a suppression removed or changed (a new
one only shrinks an audience, and the sender drops its planned rows before each batch:
``suppress_ineligible``, ``suppress_newly``); a ledger row removed or re-keyed.

- **PostgreSQL:** a statement-level trigger records each writing transaction's id in
  ``audience_change`` (once per transaction, only when it changed a row). A plan's version
  is its snapshot, taken before it reads the audience; its inputs changed when a recorded
  transaction is not visible in that snapshot: a writer committing while the plan runs is
  either in the plan's snapshot or makes the stamp stale. Writers never wait on each other.
- **SQLite:** one row, ``audience_version``: a counter and a ``dirty`` flag. Taking a
  version clears the flag (a write: SQLite runs one writer at a time, so the plan's
  transaction holds the lock from that moment); the first change after it bumps the
  counter (the triggers' ``WHEN dirty = 0``), later ones cost a read per row.

Where the triggers are missing (a schema not built by the migrations), nothing is skipped.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import date, datetime
from typing import Any

from sqlalchemy import Connection, Select, select, text, update

from herald.db import dialect_insert
from herald.models import AUDIENCE_VERSION, PLAN_STAMP, utcnow

# Bump when what a plan inserts changes in code without changing its SQL (old stamps then
# no longer match, and each plan runs once more).
DIGEST_VERSION = "1"

# A transaction recorded as a change and not visible in the snapshot ``version`` (those
# below its xmin all are: the index on xid skips them).
_CHANGED_SINCE_SNAPSHOT = text(
    "SELECT EXISTS (SELECT 1 FROM audience_change"
    " WHERE xid >= pg_snapshot_xmin(CAST(:version AS pg_snapshot))::text::bigint"
    " AND NOT pg_visible_in_snapshot(xid::text::xid8, CAST(:version AS pg_snapshot)))"
)

# The tables whose triggers keep the version (see migration 0012): on Postgres one trigger
# each; on SQLite one per kind of change that counts (suppression and delivery: no insert).
WATCHED_TABLES = ("contact", "account", "segment_assignment", "suppression", "delivery")
SQLITE_TRIGGERS = 3 * 3 + 2 * 2
_TABLES = ", ".join(f":t{i}" for i in range(len(WATCHED_TABLES)))
_PG_TRIGGERS = text(
    "SELECT count(*) FROM pg_trigger WHERE tgenabled <> 'D'"
    " AND tgname LIKE 'herald_audience_%'"
    f" AND tgrelid IN (SELECT to_regclass(t) FROM unnest(ARRAY[{_TABLES}]) AS t)"
)
_SQLITE_TRIGGERS = text(
    "SELECT count(*) FROM sqlite_master WHERE type = 'trigger'"
    f" AND name LIKE 'herald_audience_%' AND tbl_name IN ({_TABLES})"
)


@dataclass(frozen=True)
class Stamp:
    """What the last plan of a message planned, and when its inputs were read."""

    digest: str
    segmented_on: date
    data_version: str
    suppressed_through: int | None = None  # the audience's count reflects suppressions to here
    audience: list[tuple[str, str, int]] | None = None  # (segment, role, contacts)
    planned_at: datetime | None = None


def data_version(conn: Connection) -> str:
    """The version of the audience's inputs now: any change committed after this call makes
    :func:`changed_since` true for it. Take it before reading the audience.

    On SQLite, where a change since the last version left the dirty flag set, it clears the
    flag: a write (SQLite waits for a writer holding the lock), so call it in a transaction
    (``engine.begin()``).
    """
    if conn.dialect.name == "postgresql":
        return str(conn.exec_driver_sql("SELECT pg_current_snapshot()::text").scalar_one())
    row = AUDIENCE_VERSION.c
    found = conn.execute(select(row.version, row.dirty).where(row.id == 1)).one_or_none()
    if found is not None and not found.dirty:
        return str(found.version)  # the next change bumps it: nothing to write
    cleared = conn.execute(update(AUDIENCE_VERSION).where(row.id == 1).values(dirty=False))
    if not cleared.rowcount:  # the row was removed: start again at a version never used
        conn.execute(
            AUDIENCE_VERSION.insert().values(id=1, version=secrets.randbits(62), dirty=False)
        )
    return str(conn.execute(select(row.version).where(row.id == 1)).scalar_one())


def changed_since(conn: Connection, version: str) -> bool:
    """Whether the audience's inputs may have changed since ``version`` was taken (True also
    where no trigger keeps the version)."""
    if not watched(conn):
        return True
    if conn.dialect.name == "postgresql":
        return bool(conn.execute(_CHANGED_SINCE_SNAPSHOT, {"version": version}).scalar_one())
    now = conn.execute(
        select(AUDIENCE_VERSION.c.version).where(AUDIENCE_VERSION.c.id == 1)
    ).scalar_one_or_none()
    return now is None or str(now) != version


def watched(conn: Connection) -> bool:
    """Whether every trigger that keeps the data version is there and enabled."""
    if conn.dialect.name == "postgresql":
        found = conn.execute(_PG_TRIGGERS, {f"t{i}": t for i, t in enumerate(WATCHED_TABLES)})
        return int(found.scalar_one()) == len(WATCHED_TABLES)  # one per table
    found = conn.execute(_SQLITE_TRIGGERS, {f"t{i}": t for i, t in enumerate(WATCHED_TABLES)})
    return int(found.scalar_one()) == SQLITE_TRIGGERS


def digest(conn: Connection, source: Select[Any], *parameters: object) -> str:
    """The digest of a plan: its audience query as this database runs it (every config value
    it reads is in the SQL or its parameters) and the plan's own ``parameters``."""
    compiled = source.compile(dialect=conn.dialect)
    text = "\n".join(
        [
            DIGEST_VERSION,
            str(compiled),
            repr(sorted(compiled.params.items())),
            repr(parameters),
        ]
    )
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def stamp_of(conn: Connection, *, campaign: str, message: str) -> Stamp | None:
    """The stamp the last plan of ``message`` left (None: never planned since 0012)."""
    row = conn.execute(
        select(PLAN_STAMP).where(PLAN_STAMP.c.campaign == campaign, PLAN_STAMP.c.message == message)
    ).one_or_none()
    if row is None:
        return None
    segmented_on = row.segmented_on
    if not isinstance(segmented_on, date):
        segmented_on = date.fromisoformat(str(segmented_on))
    return Stamp(
        digest=row.digest,
        segmented_on=segmented_on,
        data_version=row.data_version,
        suppressed_through=row.suppressed_through,
        audience=(
            None if row.audience is None else [(str(s), str(r), int(n)) for s, r, n in row.audience]
        ),
        planned_at=row.planned_at,
    )


def current_stamp(conn: Connection, *, campaign: str, message: str, digest: str) -> Stamp | None:
    """The stamp of ``message`` if its plan had this ``digest`` and its inputs have not
    changed since: planning it again would add nothing."""
    stamp = stamp_of(conn, campaign=campaign, message=message)
    if stamp is None or stamp.digest != digest or changed_since(conn, stamp.data_version):
        return None
    return stamp


def write_stamp(conn: Connection, *, campaign: str, message: str, stamp: Stamp) -> None:
    """Record ``stamp`` as the last plan of ``message`` (in the plan's transaction)."""
    values = {
        "digest": stamp.digest,
        "segmented_on": stamp.segmented_on,
        "data_version": stamp.data_version,
        "suppressed_through": stamp.suppressed_through,
        "audience": None if stamp.audience is None else [list(c) for c in stamp.audience],
        "planned_at": stamp.planned_at or utcnow(),
    }
    statement = dialect_insert(conn.dialect.name)(PLAN_STAMP).values(
        campaign=campaign, message=message, **values
    )
    conn.execute(
        statement.on_conflict_do_update(index_elements=["campaign", "message"], set_=values)
    )
