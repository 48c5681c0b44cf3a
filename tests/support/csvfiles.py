"""Builders for the CSV files the import tests feed Herald."""

from __future__ import annotations

import csv
from pathlib import Path

from herald.customers.importer import ImportResult, import_customers
from herald.customers.rows import (
    ACCOUNT_OPTIONAL,
    ACCOUNT_REQUIRED,
    CONTACT_OPTIONAL,
    CONTACT_REQUIRED,
)
from tests.support.environment import Database

ACCOUNT_HEADER = [
    *ACCOUNT_REQUIRED,
    *ACCOUNT_OPTIONAL,
    "attr.performance_focused",
    "attr.legacy_version",
]
CONTACT_HEADER = [*CONTACT_REQUIRED, *CONTACT_OPTIONAL]


def account(n: int, **overrides: str) -> list[str]:
    """A valid account row; keyword arguments replace columns by name."""
    row = {
        "external_id": f"A{n:05d}",
        "name": f"Account {n}",
        "tier": "business",
        "region": "emea",
        "industry": "software",
        "lifecycle": "active",
        "migration_state": "not_started",
        "migrated_on": "",
        "attr.performance_focused": "false",
        "attr.legacy_version": "4.0",
    }
    row.update({key.replace("attr_", "attr."): value for key, value in overrides.items()})
    return [row[column] for column in ACCOUNT_HEADER]


def contact(n: int, account_n: int, **overrides: str) -> list[str]:
    """A valid contact row of account ``account_n``."""
    row = {
        "account_external_id": f"A{account_n:05d}",
        "email": f"person{n}@customer{account_n}.com",
        "name": f"Person {n}",
        "role": ("executive", "technical", "other")[n % 3],
        "timezone": "Europe/Berlin",
        "locale": "de",
    }
    row.update(overrides)
    return [row[column] for column in CONTACT_HEADER]


def write_csv(path: Path, header: list[str], rows: list[list[str]], *, bom: bool = False) -> Path:
    """Write rows under header as UTF-8 CSV (with a BOM if asked)."""
    with path.open("w", newline="", encoding="utf-8-sig" if bom else "utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(header)
        writer.writerows(rows)
    return path


def read_rejects(path: Path | None) -> list[dict[str, str]]:
    """The rows of a rejects file."""
    assert path is not None, "expected a rejects file"
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def run_import(
    db: Database,
    tmp_path: Path,
    accounts: Path | None,
    contacts: Path | None = None,
    chunk_rows: int = 20_000,
) -> ImportResult:
    """Import these files into ``db``, rejects under ``tmp_path``."""
    return import_customers(
        engine=db.engine,
        accounts_csv=accounts,
        contacts_csv=contacts,
        rejects_dir=tmp_path / "rejects",
        chunk_rows=chunk_rows,
    )
