"""Telemetry batch sources: the columns of each source's file, its key, and where rows go.

A source's format says what the validation frame holds (a typed helper column per typed
column, see :mod:`herald.telemetry.validation_frame`) and which table its rows are loaded
into; the data contract in ``config/expectations/<source>.json`` says what a good row is.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from sqlalchemy import Table

from herald.config import SOURCES
from herald.models import ADOPTION_EVENT, PERFORMANCE_REPORT, SATISFACTION_RESPONSE, SUPPORT_TICKET

Kind = Literal["text", "email", "flag", "int", "number", "date", "timestamp"]
HELPER_SUFFIX: dict[str, str] = {"int": "int", "number": "num", "date": "date", "timestamp": "ts"}
FLAGS = {"yes": True, "true": True, "no": False, "false": False}


@dataclass(frozen=True)
class Column:
    """A column of a source's file format."""

    name: str
    kind: Kind = "text"
    required: bool = True

    @property
    def helper(self) -> str | None:
        """The typed helper column the suite checks, if the kind has one."""
        suffix = HELPER_SUFFIX.get(self.kind)
        return f"{self.name}__{suffix}" if suffix else None


@dataclass(frozen=True)
class SourceFormat:
    """A batch source: its columns, the key unique within a file, and where rows go."""

    source: str
    columns: tuple[Column, ...]
    key: tuple[str, ...]
    table: Table

    @property
    def names(self) -> list[str]:
        """Column names, in file order."""
        return [column.name for column in self.columns]

    @property
    def duplicate_helper(self) -> str:
        """The helper column holding the line a row's key was first used on."""
        return f"{self.key[-1]}__duplicate_of"


FORMATS: dict[str, SourceFormat] = {
    "adoption": SourceFormat(
        "adoption",
        (
            Column("account_external_id"),
            Column("observed_on", "date"),
            Column("adoption_pct", "number"),
        ),
        key=("account_external_id", "observed_on"),
        table=ADOPTION_EVENT,
    ),
    "support": SourceFormat(
        "support",
        (
            Column("ticket_id"),
            Column("account_external_id"),
            Column("opened_at", "timestamp"),
            Column("closed_at", "timestamp", required=False),
            Column("category"),
            Column("satisfaction", "int", required=False),
        ),
        key=("ticket_id",),
        table=SUPPORT_TICKET,
    ),
    "survey": SourceFormat(
        "survey",
        (
            Column("response_id"),
            Column("account_external_id"),
            Column("contact_email", "email", required=False),
            Column("responded_at", "timestamp"),
            Column("csat", "int"),
            Column("performance_improved", "flag", required=False),
            Column("comment", required=False),
        ),
        key=("response_id",),
        table=SATISFACTION_RESPONSE,
    ),
    "performance": SourceFormat(
        "performance",
        (
            Column("report_id"),
            Column("account_external_id"),
            Column("reported_at", "timestamp"),
            Column("legacy_import_ms", "number"),
            Column("new_import_ms", "number"),
            Column("legacy_memory_mb", "number"),
            Column("new_memory_mb", "number"),
        ),
        key=("report_id",),
        table=PERFORMANCE_REPORT,
    ),
}
assert set(FORMATS) == set(SOURCES)
