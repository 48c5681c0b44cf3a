"""Where the tests run: the repository root, the test key, Chromium, Postgres, a test database."""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, event, text

from herald.db import get_engine

POSTGRES_URL = os.environ.get(
    "HERALD_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)


POSTGRES_REQUIRED = os.environ.get("HERALD_TEST_POSTGRES", "") == "required"


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


CHROMIUM_REQUIRED = os.environ.get("HERALD_TEST_CHROMIUM", "") == "required"


ROOT = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Database:
    """A migrated, empty database for one test."""

    backend: str
    url: str

    @property
    def engine(self) -> Engine:
        """The engine Herald itself uses for this URL."""
        return get_engine(self.url)

    def count(self, table: str) -> int:
        """Rows in ``table``."""
        with self.engine.connect() as conn:
            return int(conn.execute(text(f"SELECT count(*) FROM {table}")).scalar_one())

    def rows(self, sql: str, **params: Any) -> list[tuple[Any, ...]]:
        """The rows of one query (SQL text with ``:named`` parameters), as tuples."""
        with self.engine.connect() as conn:
            return [tuple(row) for row in conn.execute(text(sql), params)]


@contextmanager
def statements(engine: Engine) -> Iterator[list[str]]:
    """Every statement ``engine`` runs inside the block, as its SQL text, in order."""
    seen: list[str] = []

    def record(*args: Any) -> None:  # (connection, cursor, statement, ...)
        seen.append(str(args[2]))

    event.listen(engine, "before_cursor_execute", record)
    try:
        yield seen
    finally:
        event.remove(engine, "before_cursor_execute", record)


KEY = "SG.test-key-never-printed"
# Signs unsubscribe links in tests that send through SendGrid (never printed either).
UNSUBSCRIBE_SECRET = "unsubscribe-test-secret-never-printed"
