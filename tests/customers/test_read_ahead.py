"""The contacts file is read and checked ahead, into a spool, while the accounts are written.

``import_customers`` stages the second file (contacts) in a thread while its connection works
on the first (accounts); the spool is written to the staging tables when the contacts' turn
comes. These tests hold that the spool gives back every chunk in order, that a failure on
either side ends the import with that failure, no thread left and nothing imported, and that
a staging told to stop stops at its next block.
"""

from __future__ import annotations

import threading
from array import array
from pathlib import Path
from threading import Event
from typing import Any

import pytest
from sqlalchemy import Connection, Table

from herald.customers import importer
from herald.customers.rows import read_header
from herald.models import ACCOUNT
from tests.support.csvfiles import (
    ACCOUNT_HEADER,
    CONTACT_HEADER,
    account,
    contact,
    read_rejects,
    run_import,
    write_csv,
)
from tests.support.environment import Database


class Recording:
    """An outlet that keeps what it is given, in order."""

    def __init__(self) -> None:
        self.chunks: list[tuple[bool, list[Any]]] = []

    def good(self, rows: list[tuple[Any, ...]]) -> None:
        self.chunks.append((True, rows))

    def bad(self, rows: list[dict[str, Any]]) -> None:
        self.chunks.append((False, rows))


def files(tmp_path: Path, count: int) -> tuple[Path, Path]:
    accounts = write_csv(
        tmp_path / "accounts.csv", ACCOUNT_HEADER, [account(n) for n in range(1, count + 1)]
    )
    contacts = write_csv(
        tmp_path / "contacts.csv", CONTACT_HEADER, [contact(n, n) for n in range(1, count + 1)]
    )
    return accounts, contacts


def import_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name.startswith("herald-import")]


def test_a_spool_gives_back_every_chunk_in_the_order_it_came() -> None:
    spool = importer._Spool()
    spool.good([(2, 7, "a"), (3, None, "b")])
    spool.bad([{"line": 4, "reason": "no"}])
    spool.good([(5, -1, "c")])
    out = Recording()

    spool.drain(out)

    assert out.chunks == [
        (True, [(2, 7, "a"), (3, None, "b")]),
        (False, [{"line": 4, "reason": "no"}]),
        (True, [(5, -1, "c")]),
    ]


def test_staging_told_to_stop_stops_at_its_next_block(tmp_path: Path) -> None:
    _, contacts = files(tmp_path, 5)
    header = read_header(contacts, importer.CONTACTS.file)
    stage = importer._staging_tables()[1]
    file = importer._File(path=contacts, header=header, kind=importer.CONTACTS, stage=stage)
    result = importer.FileResult(file=str(contacts), part=1)
    stop, out = Event(), Recording()
    stop.set()

    with pytest.raises(importer._Stopped):
        importer._stage(
            out,
            file=file,
            stored=importer._StoredDigests(array("q")),
            result=result,
            chunk_rows=2,
            progress=None,
            stop=stop,
        )

    assert out.chunks == [] and result.rows == 0


def test_contacts_staged_ahead_land_as_staged_directly(db: Database, tmp_path: Path) -> None:
    """Contacts read ahead (imported with their accounts) come out as staged directly
    (imported alone): the same counts and rejects, and the rows stored as the file says, so
    that importing the file alone finds every good one unchanged."""
    accounts, _ = files(tmp_path, 30)
    rows = [contact(n, n) for n in range(1, 31)]
    rows[6] = contact(7, 7, email="not-an-email")
    contacts = write_csv(tmp_path / "contacts.csv", CONTACT_HEADER, rows)

    ahead = run_import(db, tmp_path, accounts, contacts, chunk_rows=4)

    assert (ahead.contacts.rows, ahead.contacts.inserted, ahead.contacts.rejected) == (30, 29, 1)
    assert [(r["file"], r["line"]) for r in read_rejects(ahead.rejects_path)] == [
        (str(contacts), "8")
    ]
    again = run_import(db, tmp_path, None, contacts, chunk_rows=4)  # alone: no read-ahead
    assert (again.contacts.unchanged, again.contacts.rejected) == (29, 1)
    assert db.count("contact") == 29


def test_a_failure_in_the_accounts_ends_the_import_with_no_thread_left(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = importer._upsert

    def failing(conn: Connection, *, target: Table, **kwargs: Any) -> None:
        if target is ACCOUNT:
            raise RuntimeError("accounts failed")
        real(conn, target=target, **kwargs)

    stops: list[Event] = []
    real_ahead = importer._stage_ahead

    def recording(file: importer._File, **kwargs: Any) -> importer._Spool:
        stops.append(kwargs["stop"])
        return real_ahead(file, **kwargs)

    monkeypatch.setattr(importer, "_upsert", failing)
    monkeypatch.setattr(importer, "_stage_ahead", recording)
    with pytest.raises(RuntimeError, match="accounts failed"):
        run_import(db, tmp_path, *files(tmp_path, 50), chunk_rows=8)

    assert [stop.is_set() for stop in stops] == [True]  # the read-ahead was told to stop
    assert import_threads() == []
    assert db.count("account") == 0 and db.count("contact") == 0


def test_a_failure_reading_ahead_ends_the_import_with_it(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(*_: Any, **__: Any) -> importer._Spool:
        raise OSError("contacts unreadable")

    monkeypatch.setattr(importer, "_stage_ahead", broken)
    with pytest.raises(OSError, match="contacts unreadable"):
        run_import(db, tmp_path, *files(tmp_path, 10))

    assert import_threads() == []
    assert db.count("account") == 0 and db.count("contact") == 0
