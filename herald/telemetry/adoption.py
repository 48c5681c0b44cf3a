"""Adoption telemetry moves accounts' migration state forward.

At or above ``adoption.migrated_at_pct`` an account is migrated, on its earliest such day;
adoption between 0 and that marks a not-started account in progress. Accounts telemetry has
seen become telemetry's (``migration_source``): a customer re-import no longer sets their
state.
"""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import Connection, and_, case, exists, func, select, update

from herald.models import ACCOUNT, ADOPTION_EVENT, MigrationSource, MigrationState, utcnow

CHUNK_ACCOUNTS = 1_000  # accounts per UPDATE (a bounded IN list)


def apply_adoption(
    conn: Connection, *, accounts: Sequence[int], threshold: float
) -> tuple[int, int]:
    """Move these accounts' migration state forward from their stored adoption events (at
    ``threshold`` percent an account is migrated, on the first such day); the accounts
    telemetry has seen become telemetry's. Returns (newly migrated, newly in progress)."""
    events = ADOPTION_EVENT
    first_day = (
        select(func.min(events.c.observed_on))
        .where(events.c.account_id == ACCOUNT.c.id, events.c.adoption_pct >= threshold)
        .scalar_subquery()
    )
    progressing = exists().where(
        events.c.account_id == ACCOUNT.c.id,
        events.c.adoption_pct > 0,
        events.c.adoption_pct < threshold,
    )
    seen = exists().where(events.c.account_id == ACCOUNT.c.id, events.c.adoption_pct > 0)
    telemetry = MigrationSource.TELEMETRY.value
    migrated = in_progress = 0
    now = utcnow()
    ids = list(accounts)
    for start in range(0, len(ids), CHUNK_ACCOUNTS):
        chunk = ids[start : start + CHUNK_ACCOUNTS]
        is_migrated = ACCOUNT.c.migration_state == MigrationState.MIGRATED.value
        keep_day = and_(
            is_migrated, ACCOUNT.c.migrated_on.is_not(None), ACCOUNT.c.migrated_on <= first_day
        )
        migrated += int(
            conn.execute(
                update(ACCOUNT)
                .where(ACCOUNT.c.id.in_(chunk), first_day.is_not(None), ~keep_day)
                .values(
                    migration_state=MigrationState.MIGRATED.value,
                    migrated_on=case((keep_day, ACCOUNT.c.migrated_on), else_=first_day),
                    migration_source=telemetry,
                    updated_at=now,
                )
            ).rowcount
            or 0
        )
        in_progress += int(
            conn.execute(
                update(ACCOUNT)
                .where(
                    ACCOUNT.c.id.in_(chunk),
                    ACCOUNT.c.migration_state == MigrationState.NOT_STARTED.value,
                    progressing,
                )
                .values(
                    migration_state=MigrationState.IN_PROGRESS.value,
                    migration_source=telemetry,
                    updated_at=now,
                )
            ).rowcount
            or 0
        )
        conn.execute(
            update(ACCOUNT)
            .where(ACCOUNT.c.id.in_(chunk), ACCOUNT.c.migration_source != telemetry, seen)
            .values(migration_source=telemetry, updated_at=now)
        )
    return migrated, in_progress
