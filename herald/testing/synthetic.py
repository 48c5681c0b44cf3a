"""What a test run, a benchmark or the chaos run stands on: a throwaway database, a synthetic
customer base of any size, a copy of the campaign config with its sending tuned, and a way to
empty what sending wrote between runs.

The base: N contacts on N/2 active accounts (an executive and a technical contact each),
segmented as of a date, written with bulk Core inserts. Every contact is eligible for a phase
that goes to every segment.
"""

from __future__ import annotations

import os
import random
import shutil
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime
from pathlib import Path

import yaml
from sqlalchemy import create_engine, insert, select, text
from sqlalchemy.engine import make_url

from herald.config import load_config
from herald.customers.segmentation import assign_segments
from herald.db import get_engine, upgrade
from herald.models import ACCOUNT, CONTACT, metadata

CHUNK = 50_000
SENT_TABLES = (  # what sending a phase writes, children first
    "email_event",
    "webhook_batch",
    "suppression",
    "delivery",
    "send_batch",
    "send_worker",
    "phase_control",
    "audit_log",
)
INDUSTRIES = ("software", "retail", "banking", "media", "logistics", "healthcare")


def seed_base(url: str, contacts: int, as_of: date, config_dir: Path, seed: int = 5) -> None:
    """Migrate the database at ``url``, write the base, and segment it as of ``as_of``."""
    upgrade(url)
    engine = get_engine(url)
    rng = random.Random(seed)
    accounts = contacts // 2
    now = datetime.now(UTC)
    with engine.begin() as conn:
        for start in range(0, accounts, CHUNK):
            conn.execute(
                insert(ACCOUNT),
                [
                    {
                        "id": i + 1,
                        "external_id": f"B{i + 1:07d}",
                        "name": f"Bench Account {i + 1}",
                        "tier": rng.choice(["starter", "pro", "enterprise"]),
                        "region": rng.choice(["na", "emea", "apac", "latam"]),
                        "industry": rng.choice(INDUSTRIES),
                        "lifecycle": "active",
                        "migration_state": "not_started",
                        "attributes": {
                            "performance_focused": rng.random() < 0.2,
                            "change_policy": rng.choice(["standard", "conservative"]),
                            "legacy_version": rng.choice([3.9, 4.1, 4.2, 4.5]),
                        },
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(start + CHUNK, accounts))
                ],
            )
        for start in range(0, contacts, CHUNK):
            conn.execute(
                insert(CONTACT),
                [
                    {
                        "id": i + 1,
                        "account_id": i // 2 + 1,
                        "email": contact_email(i + 1),
                        "name": f"Person {i + 1}",
                        "role": "executive" if i % 2 == 0 else "technical",
                        "timezone": "America/New_York",
                        "locale": rng.choice(["en", "en", "en", "de", "fr", "ja"]),
                        "created_at": now,
                        "updated_at": now,
                    }
                    for i in range(start, min(start + CHUNK, contacts))
                ],
            )
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    assign_segments(engine=engine, config=load_config(config_dir).segments, as_of=as_of)


def contact_email(contact_id: int) -> str:
    """The address of synthetic contact ``contact_id`` (1-based)."""
    return f"person{contact_id}@bench{(contact_id - 1) // 2 % 997}.example.com"


def all_emails(url: str) -> set[str]:
    """Every contact's address, lower-cased (the audience of a phase to every segment)."""
    with get_engine(url).connect() as conn:
        return {email.lower() for (email,) in conn.execute(select(CONTACT.c.email))}


@contextmanager
def temporary_database(kind: str, work: Path, server: str) -> Iterator[str]:
    """A new, empty database: a SQLite file under ``work``, or a Postgres database created
    on ``server`` (an admin URL) and dropped on the way out. Yields its URL."""
    if kind == "sqlite":
        yield f"sqlite:///{work / 'herald.db'}"
        return
    name = f"herald_tmp_{uuid.uuid4().hex[:8]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(server).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()


def set_sending(config_dir: Path, **values: object) -> None:
    """Change keys of ``campaign.yaml``'s ``sending`` section in ``config_dir``."""
    path = config_dir / "campaign.yaml"
    data = yaml.safe_load(path.read_text(encoding="utf-8"))
    data["sending"].update(values)
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")


def copy_config(source: Path, target: Path, **sending: object) -> Path:
    """A copy of the config folder ``source`` at ``target``, with ``sending`` keys changed."""
    shutil.copytree(source, target)
    set_sending(target, **sending)
    return target


def empty_postgres(url: str) -> None:
    """Empty every Herald table of the Postgres database at ``url`` (identities restarted),
    keeping the schema: a test's database before each test, a benchmark's before its load."""
    tables = ", ".join(f'"{table.name}"' for table in metadata.sorted_tables)
    with get_engine(url).begin() as conn:
        conn.execute(text(f"TRUNCATE {tables} RESTART IDENTITY CASCADE"))


def reset_sends(url: str, *, fresh: bool = False) -> None:
    """Empty what sending wrote (ledger, batches, workers, controls, audit, events), keeping
    the base, so the next run sends the phase from scratch.

    ``fresh`` (a benchmark's runs, one after another): on Postgres the tables are truncated,
    so the next run starts on new, empty tables as the first did. Deleted, a million ledger
    rows stay as dead tuples and index entries until a vacuum, and the next run's plan and
    claims step over them (measured: a 1M-contact phase on Postgres at 16% fewer recipients
    a second, its plan 1.8x as long). On SQLite a DELETE frees the pages for the next run to
    reuse. A test's reset keeps the DELETE: a TRUNCATE waits for every session that has read
    one of the tables in a transaction still open.
    """
    engine = get_engine(url)
    with engine.begin() as conn:
        if fresh and engine.dialect.name == "postgresql":
            conn.execute(text(f"TRUNCATE {', '.join(SENT_TABLES)} CASCADE"))
            return
        for name in SENT_TABLES:
            conn.execute(text(f"DELETE FROM {name}"))


def cluster_environment(
    *,
    work: Path,
    config: Path,
    url: str,
    prefect_url: str,
    sendgrid_url: str,
    key: str,
    unsubscribe_secret: str,
) -> dict[str, str]:
    """What `herald cluster up`, its workers and every command of a scale-out test or
    benchmark see: this environment without Prefect's or Herald's own settings, then Herald
    on ``url`` sending through SendGrid at ``sendgrid_url``, and the Prefect server on
    ``prefect_url`` (a Postgres database, reached through asyncpg)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PREFECT_", "HERALD_"))}
    env.update(
        HERALD_VAR_DIR=str(work / "var"),
        HERALD_CONFIG_DIR=str(config),
        HERALD_DATABASE_URL=url,
        HERALD_TRANSPORT="sendgrid",
        HERALD_SENDGRID_API_HOST=sendgrid_url,
        SENDGRID_API_KEY=key,
        HERALD_UNSUBSCRIBE_SECRET=unsubscribe_secret,
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_SERVER_DATABASE_CONNECTION_URL=make_url(prefect_url)
        .set(drivername="postgresql+asyncpg")
        .render_as_string(hide_password=False),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
        DO_NOT_TRACK="1",
    )
    return env
