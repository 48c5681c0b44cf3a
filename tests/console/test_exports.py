"""`herald deliveries export` and `herald events export`: the campaign's ledger and events as
CSV and Parquet, each filter taking exactly its rows, bad usage refused with nothing written,
and the file written a chunk at a time and only ever whole.

The commands are driven through a small Typer app registered here the way ``herald`` names
them (``deliveries export``, ``events export``).
"""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from contextlib import closing
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from sqlalchemy import insert
from sqlalchemy.exc import OperationalError
from typer.testing import CliRunner, Result

import herald.console.exports as exports
from herald.cli import app
from herald.console.exports import DELIVERY_COLUMNS, EVENT_COLUMNS, Column, arrow_schema
from herald.models import ACCOUNT, CONTACT, DELIVERY, EMAIL_EVENT
from tests.support.bases import config
from tests.support.environment import Database

CAMPAIGN = config().campaign.id
OTHER = "another-campaign"


def at(*parts: int) -> datetime:
    return datetime(*parts, tzinfo=UTC)


def run(*args: str) -> Result:
    return CliRunner().invoke(app, list(args), env={"COLUMNS": "300"})


# --------------------------------------------------------------------------- the rows

EMAILS = {1: "ana@example.com", 2: "bo@xn--bcher-kva.example", 3: "cy@example.org"}


def delivery(
    id: int, message: str, contact: int, state: str, planned: datetime, **more: Any
) -> dict[str, Any]:
    row: dict[str, Any] = {
        "id": id,
        "campaign": CAMPAIGN,
        "message": message,
        "contact_id": contact,
        "segment": "standard",
        "role": "executive" if contact % 2 else "technical",
        "locale": "en",
        "timezone": None,
        "not_before": None,
        "not_after": None,
        "critical": False,
        "state": state,
        "batch_id": None,
        "provider_message_id": None,
        "attempts": 0,
        "error": None,
        "planned_at": planned,
        "claimed_at": None,
        "sent_at": None,
        "updated_at": planned,
    }
    row.update(more)
    return row


DELIVERIES = [
    delivery(
        1,
        "announcement",
        1,
        "accepted",
        at(2027, 2, 9, 10, 0),
        batch_id="batch-1",
        provider_message_id="pm-1",
        attempts=1,
        claimed_at=at(2027, 2, 9, 14, 0, 1),
        sent_at=at(2027, 2, 9, 14, 0, 2, 345678),
        updated_at=at(2027, 2, 9, 14, 0, 2, 345678),
        timezone="America/New_York",
    ),
    delivery(
        2,
        "announcement",
        2,
        "failed",
        at(2027, 2, 9, 23, 59, 59, 999999),  # the last instant of the day
        attempts=2,
        error='550 "mailbox full", try later\nsecond line; ünïcode',
        locale="de",
    ),
    delivery(
        3,
        "sunset-t30@2027-09-30",
        1,
        "planned",
        at(2027, 8, 31, 0, 0),
        not_before=at(2027, 8, 31, 13, 0),
        not_after=at(2027, 9, 16, 4, 0),
    ),
    delivery(4, "sunset-t1@2027-09-30", 2, "expired", at(2027, 9, 29, 0, 0), critical=True),
    delivery(5, "thank-you", 1, "unknown", at(2027, 2, 10, 0, 0)),  # the first instant after
    delivery(6, "deadline-extended@2028-03-31", 2, "suppressed", at(2027, 9, 1, 8, 30)),
    delivery(7, "preview", 3, "sending", at(2027, 1, 12, 0, 0), segment="early_adopter"),
    delivery(8, "legacy-note", 3, "planned", at(2027, 3, 1, 9, 0)),  # a name Herald never makes
    {**delivery(9, "announcement", 1, "accepted", at(2027, 2, 9, 10, 0)), "campaign": OTHER},
]
KINDS = {
    1: "announcement",
    2: "announcement",
    3: "sunset",
    4: "sunset",
    5: "thank_you",
    6: "deadline_extended",
    7: "preview",
    8: None,
}
OURS = [row for row in DELIVERIES if row["campaign"] == CAMPAIGN]


def event(
    id: int, kind: str, delivery_id: int | None, occurred: datetime, key: str | None
) -> dict[str, Any]:
    email = EMAILS[1] if delivery_id is None else EMAILS[DELIVERIES[delivery_id - 1]["contact_id"]]
    return {
        "id": id,
        "sg_event_id": f"sg-{id}",
        "event": kind,
        "email": email,
        "occurred_at": occurred,
        "received_at": at(2027, 9, 30, 12, 0),
        "delivery_id": delivery_id,
        "sg_message_id": f"pm-{id}.filter",
        "herald_key": key,
        "raw": {"event": kind, "email": email, "timestamp": int(occurred.timestamp()), "n": id},
    }


def key(delivery_id: int) -> str:
    row = DELIVERIES[delivery_id - 1]
    return f"{row['campaign']}/{row['message']}/{row['contact_id']}"


EVENTS = [
    event(1, "delivered", 1, at(2027, 2, 9, 14, 5), key(1)),
    event(2, "open", 1, at(2027, 2, 10, 0, 0), key(1)),
    {
        **event(3, "bounce", 2, at(2027, 2, 9, 23, 59, 59), key(2)),
        "raw": {"event": "bounce", "type": "bounce", "reason": "550 full", "tags": ["a", "é"]},
    },
    event(4, "delivered", 3, at(2027, 8, 31, 13, 1), key(3)),
    # A leadership report's event: no ledger row, the campaign's key.
    event(5, "open", None, at(2027, 3, 2, 9, 0), f"{CAMPAIGN}/weekly-2027-03-01/leadership-1"),
    event(6, "delivered", 9, at(2027, 2, 9, 14, 5), key(9)),  # another campaign's row
    event(7, "open", None, at(2027, 2, 9, 14, 5), None),  # not Herald's mail
    event(8, "open", None, at(2027, 2, 9, 14, 5), f"{OTHER}/announcement/1"),
]
OUR_EVENTS = [1, 2, 3, 4, 5]


@pytest.fixture
def ledger(db: Database) -> Database:
    """One account, three contacts, the ledger rows and events above."""
    now = at(2027, 1, 1)
    with db.engine.begin() as conn:
        conn.execute(
            insert(ACCOUNT),
            [
                {
                    "id": 1,
                    "external_id": "A1",
                    "name": "Acme",
                    "tier": "pro",
                    "region": "na",
                    "created_at": now,
                    "updated_at": now,
                }
            ],
        )
        conn.execute(
            insert(CONTACT),
            [
                {"id": id, "account_id": 1, "email": email, "created_at": now, "updated_at": now}
                for id, email in EMAILS.items()
            ],
        )
        conn.execute(insert(DELIVERY), DELIVERIES)
        conn.execute(insert(EMAIL_EVENT), EVENTS)
    return db


def expected_delivery(row: dict[str, Any]) -> dict[str, Any]:
    return {
        **{column.name: row.get(column.name) for column in DELIVERY_COLUMNS},
        "email": EMAILS[row["contact_id"]],
        "kind": KINDS[row["id"]],
    }


def expected_event(row: dict[str, Any]) -> dict[str, Any]:
    linked = None if row["delivery_id"] is None else DELIVERIES[row["delivery_id"] - 1]
    return {
        **{column.name: row.get(column.name) for column in EVENT_COLUMNS},
        "message": linked["message"] if linked else None,
        "kind": KINDS.get(linked["id"]) if linked else None,
    }


# --------------------------------------------------------------------------- reading back


def _typed(value: str, column: Column) -> Any:
    if value == "":
        return None
    if column.type == "int64":
        return int(value)
    if column.type == "bool":
        assert value in ("true", "false")
        return value == "true"
    if column.type == "timestamp":
        assert value.endswith("+00:00"), value  # ISO 8601, UTC
        return datetime.fromisoformat(value)
    if column.type == "json":
        return json.loads(value)
    return value


def read_csv(text: str, columns: tuple[Column, ...]) -> list[dict[str, Any]]:
    """The rows of an export's CSV, typed back by column (an empty field is a null)."""
    reader = csv.reader(io.StringIO(text, newline=""))
    assert next(reader) == [column.name for column in columns]
    return [
        {column.name: _typed(value, column) for column, value in zip(columns, line, strict=True)}
        for line in reader
    ]


def read_parquet(path: Path, columns: tuple[Column, ...]) -> list[dict[str, Any]]:
    """The rows of an export's Parquet file (its schema checked first)."""
    table = pq.read_table(path)
    assert table.schema.equals(arrow_schema(columns)), table.schema
    rows: list[dict[str, Any]] = table.to_pylist()
    for row in rows:
        for column in columns:
            if column.type == "json" and row[column.name] is not None:
                row[column.name] = json.loads(row[column.name])
    return rows


def exported(path: Path, columns: tuple[Column, ...]) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return read_parquet(path, columns)
    return read_csv(path.read_text(encoding="utf-8"), columns)


def deliveries(tmp_path: Path, *options: str, suffix: str = "csv") -> list[dict[str, Any]]:
    """Run ``deliveries export`` with ``options``; the rows of the file it wrote."""
    path = tmp_path / f"deliveries.{suffix}"
    result = run("deliveries", "export", "--output", str(path), *options)
    assert result.exit_code == 0, result.output
    return exported(path, DELIVERY_COLUMNS)


def events(tmp_path: Path, *options: str, suffix: str = "csv") -> list[dict[str, Any]]:
    """Run ``events export`` with ``options``; the rows of the file it wrote."""
    path = tmp_path / f"events.{suffix}"
    result = run("events", "export", "--output", str(path), *options)
    assert result.exit_code == 0, result.output
    return exported(path, EVENT_COLUMNS)


def option_id(value: object) -> str | None:
    """A test id of command-line options (None: pytest's own, for anything else)."""
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return " ".join(value)
    return None


def ids(rows: list[dict[str, Any]]) -> list[int]:
    return [row["id"] for row in rows]


# --------------------------------------------------------------------------- round trips


@pytest.mark.usefixtures("ledger")
class TestRoundTrip:
    @pytest.mark.parametrize("suffix", ["csv", "parquet"])
    def test_the_ledger_reads_back_equal_to_the_database(self, tmp_path: Path, suffix: str) -> None:
        """Every ledger row of the campaign comes back with its contact's address, its kind
        and every value as stored, timestamps in UTC; another campaign's rows never do."""
        rows = deliveries(tmp_path, suffix=suffix)
        assert rows == [expected_delivery(row) for row in OURS]

    @pytest.mark.parametrize("suffix", ["csv", "parquet"])
    def test_the_events_read_back_equal_to_the_database(self, tmp_path: Path, suffix: str) -> None:
        """The campaign's events (its ledger rows', and those carrying its key without a
        row) come back with every value and the raw event; other mail's events do not."""
        rows = events(tmp_path, suffix=suffix)
        assert rows == [expected_event(row) for row in EVENTS if row["id"] in OUR_EVENTS]

    def test_the_format_follows_the_extension_unless_given(self, tmp_path: Path) -> None:
        """A .parquet file is written as Parquet and anything else as CSV, unless --format
        says otherwise."""
        assert run("deliveries", "export", "-o", str(tmp_path / "a.parquet")).exit_code == 0
        assert pq.read_table(tmp_path / "a.parquet").num_rows == len(OURS)
        assert run("deliveries", "export", "-o", str(tmp_path / "a.txt")).exit_code == 0
        assert len(read_csv((tmp_path / "a.txt").read_text(), DELIVERY_COLUMNS)) == len(OURS)
        given = tmp_path / "b.out"
        assert run("deliveries", "export", "--format", "parquet", "-o", str(given)).exit_code == 0
        assert pq.read_table(given).num_rows == len(OURS)

    def test_csv_goes_to_standard_output_and_the_summary_to_standard_error(self) -> None:
        """`--output -` writes the CSV alone on standard output; the one-line summary with
        the row count goes to standard error."""
        result = run("deliveries", "export", "--output", "-", "--phase", "announcement")
        assert result.exit_code == 0, result.output
        assert ids(read_csv(result.stdout, DELIVERY_COLUMNS)) == [1, 2]
        assert result.stderr.strip() == "2 delivery(ies) exported to standard output (csv)."

    def test_an_existing_file_is_replaced_whole(self, tmp_path: Path) -> None:
        """Exporting over an older file replaces it, and the summary names the file."""
        (tmp_path / "out").mkdir()
        path = tmp_path / "out" / "out.csv"
        path.write_text("old,content\n" * 1000, encoding="utf-8")
        result = run("deliveries", "export", "-o", str(path), "--state", "failed")
        assert result.exit_code == 0, result.output
        assert ids(read_csv(path.read_text(), DELIVERY_COLUMNS)) == [2]
        assert f"1 delivery(ies) exported to {path} (csv)." in result.stderr
        assert [p.name for p in path.parent.iterdir()] == ["out.csv"]


# --------------------------------------------------------------------------- filters


@pytest.mark.usefixtures("ledger")
class TestFilters:
    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["--phase", "announcement"], [1, 2]),
            (["--phase", "sunset"], [3, 4]),  # its notices
            (["--phase", "thank_you"], [5]),
            (["--phase", "deadline_extended"], [6]),
            (["--phase", "preview", "--phase", "sunset"], [3, 4, 7]),
            (["--message", "sunset-t1@2027-09-30"], [4]),
            (["--message", "legacy-note", "--message", "thank-you"], [5, 8]),
            (["--phase", "sunset", "--message", "sunset-t30@2027-09-30"], [3]),
        ],
        ids=option_id,
    )
    def test_a_phase_or_message_takes_exactly_its_rows(
        self, tmp_path: Path, options: list[str], expected: list[int]
    ) -> None:
        """--phase takes every message of the phase (sunset: its notices, whatever their
        deadline), --message the ledger names given; repeated, either takes any of them."""
        assert ids(deliveries(tmp_path, *options)) == expected

    def test_states_take_exactly_their_rows(self, tmp_path: Path) -> None:
        """--state takes the rows in that state; repeated, in any of them; combined with a
        phase, both must hold."""
        assert ids(deliveries(tmp_path, "--state", "planned")) == [3, 8]
        assert ids(deliveries(tmp_path, "--state", "failed", "--state", "unknown")) == [2, 5]
        both = deliveries(tmp_path, "--state", "planned", "--phase", "sunset", suffix="parquet")
        assert ids(both) == [3]

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["--since", "2027-02-09", "--until", "2027-02-09"], [1, 2]),
            (["--since", "2027-02-10"], [3, 4, 5, 6, 8]),
            (["--until", "2027-02-09"], [1, 2, 7]),
            (["--since", "2027-01-12", "--until", "2027-01-12"], [7]),
            (["--since", "2027-02-11", "--until", "2027-02-28"], []),
        ],
        ids=option_id,
    )
    def test_the_days_are_inclusive_on_planned_at(
        self, tmp_path: Path, options: list[str], expected: list[int]
    ) -> None:
        """--since and --until are UTC days, both included: a row planned at the day's last
        microsecond is in, one planned at the next midnight is not."""
        assert ids(deliveries(tmp_path, *options)) == expected

    @pytest.mark.parametrize(
        ("options", "expected"),
        [
            (["--event", "open"], [2, 5]),
            (["--event", "bounce", "--event", "delivered"], [1, 3, 4]),
            (["--phase", "sunset"], [4]),
            (["--message", "announcement"], [1, 2, 3]),
            (["--since", "2027-02-09", "--until", "2027-02-09"], [1, 3]),
            (["--since", "2027-02-10", "--until", "2027-03-02"], [2, 5]),
        ],
        ids=option_id,
    )
    def test_event_filters_take_exactly_their_events(
        self, tmp_path: Path, options: list[str], expected: list[int]
    ) -> None:
        """--event takes those event types, --phase and --message the events of those
        ledger rows, and the days are on occurred_at, both included."""
        assert ids(events(tmp_path, *options)) == expected

    @pytest.mark.parametrize("suffix", ["csv", "parquet"])
    def test_an_empty_result_is_a_valid_file(self, tmp_path: Path, suffix: str) -> None:
        """No row matching still writes the file: the CSV header, or the Parquet schema
        with no rows."""
        assert deliveries(tmp_path, "--state", "sending", "--phase", "sunset", suffix=suffix) == []
        assert events(tmp_path, "--event", "click", suffix=suffix) == []
        result = run("events", "export", "-o", str(tmp_path / "e.parquet"), "--event", "click")
        assert "0 event(s) exported to" in result.stderr
        assert pq.ParquetFile(tmp_path / "e.parquet").metadata.num_rows == 0


# --------------------------------------------------------------------------- bad usage


BAD_USAGE = [
    (
        ["deliveries", "export", "--state", "sent"],
        "Invalid value for '--state': 'sent' is not a delivery state (one of planned, "
        "sending, accepted, failed, suppressed, unknown, expired)",
    ),
    (
        ["deliveries", "export", "--since", "2027-02-30"],
        "Invalid value for '--since': '2027-02-30' is not a date (YYYY-MM-DD)",
    ),
    (
        ["events", "export", "--until", "yesterday"],
        "Invalid value for '--until': 'yesterday' is not a date (YYYY-MM-DD)",
    ),
    (
        ["deliveries", "export", "--since", "2027-03-01", "--until", "2027-02-01"],
        "Invalid value for '--since': --since 2027-03-01 is after --until 2027-02-01",
    ),
    (
        ["deliveries", "export", "--phase", "sunsets"],
        "Invalid value for '--phase': 'sunsets' is not a phase (one of preview, "
        "announcement, deprecation, sunset, thank_you, deadline_extended)",
    ),
    (
        ["events", "export", "--event", "opened"],
        "Invalid value for '--event': 'opened' is not a SendGrid event",
    ),
    (
        ["deliveries", "export", "--format", "xml"],
        "'xml' is not one of 'csv', 'parquet'.",
    ),
]


class TestBadUsage:
    @pytest.mark.parametrize(
        ("args", "message"), BAD_USAGE, ids=[" ".join(a) for a, _ in BAD_USAGE]
    )
    def test_bad_usage_exits_2_with_one_line_and_no_file(
        self, tmp_path: Path, args: list[str], message: str
    ) -> None:
        """An unknown state, phase, event or format, or a bad day: exit 2, the reason on
        one line, no traceback, no file."""
        out = tmp_path / "out"
        out.mkdir()
        result = run(*args, "--output", str(out / "x.csv"))
        assert result.exit_code == 2, result.output
        assert message in " ".join(result.output.replace("│", " ").split())
        assert "Traceback" not in result.output
        assert list(out.iterdir()) == []

    def test_parquet_needs_a_file_and_its_directory(self, tmp_path: Path) -> None:
        """Parquet to standard output, or a file in a directory that does not exist: exit
        2 and the reason."""
        result = run("deliveries", "export", "--format", "parquet", "-o", "-")
        assert result.exit_code == 2
        assert "Parquet is written to a file, not standard output" in result.output
        missing = tmp_path / "nowhere" / "x.parquet"
        result = run("deliveries", "export", "-o", str(missing))
        assert result.exit_code == 2
        assert f"no directory {missing.parent}" in " ".join(result.output.split())
        assert not missing.parent.exists()


# --------------------------------------------------------------------------- streaming


@pytest.mark.usefixtures("ledger")
class TestStreaming:
    def test_each_chunk_is_a_row_group_of_its_own(self, tmp_path: Path) -> None:
        """With --chunk-rows 3 the eight rows are read and written three at a time: three
        row groups of at most three rows, and the same rows as one chunk gives."""
        path = tmp_path / "d.parquet"
        result = run("deliveries", "export", "-o", str(path), "--chunk-rows", "3")
        assert result.exit_code == 0, result.output
        metadata = pq.ParquetFile(path).metadata
        sizes = [metadata.row_group(i).num_rows for i in range(metadata.num_row_groups)]
        assert sizes == [3, 3, 2]
        assert "8 delivery(ies) exported to" in result.stderr
        assert "(parquet, 3 row group(s))" in result.stderr
        assert read_parquet(path, DELIVERY_COLUMNS) == [expected_delivery(r) for r in OURS]

    def test_rows_are_fetched_a_chunk_at_a_time(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        """The writer is handed chunks of at most --chunk-rows rows, and writes each before
        the next is fetched."""
        seen: list[int] = []
        original = exports.stream
        written = tmp_path / "e.parquet"

        def watched(*args: Any, **kwargs: Any) -> Iterator[Any]:
            for chunk in original(*args, **kwargs):
                seen.append(len(chunk))
                yield chunk

        monkeypatch.setattr(exports, "stream", watched)
        result = run("events", "export", "-o", str(written), "--chunk-rows", "2")
        assert result.exit_code == 0, result.output
        assert seen == [2, 2, 1]
        assert pq.ParquetFile(written).metadata.num_row_groups == len(seen)

    @pytest.mark.parametrize("suffix", ["csv", "parquet"])
    def test_a_failed_export_leaves_no_half_file(
        self, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
    ) -> None:
        """The database failing after the first chunk: exit 1 with the reason, the file
        that was there untouched, and no partial file left beside it."""
        original = exports.stream

        def failing(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with closing(original(*args, **kwargs)) as chunks:
                yield next(chunks)
                raise OperationalError("SELECT", {}, Exception("server closed the connection"))

        monkeypatch.setattr(exports, "stream", failing)
        out = tmp_path / "out"
        out.mkdir()
        target = out / f"d.{suffix}"
        target.write_bytes(b"the previous export")
        result = run("deliveries", "export", "-o", str(target), "--chunk-rows", "2")
        assert result.exit_code == 1, result.output
        assert "server closed the connection" in result.output
        assert "Traceback" not in result.output
        assert target.read_bytes() == b"the previous export"
        assert [p.name for p in out.iterdir()] == [target.name]


def test_the_schema_is_explicit() -> None:
    """The Parquet columns have fixed types: ids int64, flags bool, times timestamp[us, UTC],
    the rest (and the raw event, as JSON text) strings."""
    schema = arrow_schema(DELIVERY_COLUMNS)
    assert schema.field("id").type == pa.int64()
    assert schema.field("attempts").type == pa.int64()
    assert schema.field("critical").type == pa.bool_()
    assert schema.field("planned_at").type == pa.timestamp("us", tz="UTC")
    assert schema.field("email").type == pa.string()
    events_schema = arrow_schema(EVENT_COLUMNS)
    assert events_schema.field("raw").type == pa.string()
    assert events_schema.field("delivery_id").type == pa.int64()
    assert events_schema.field("occurred_at").type == pa.timestamp("us", tz="UTC")


def test_columns_are_built_as_pyarrow_would() -> None:
    """A chunk's column built from its buffers equals what ``pyarrow.array`` makes of the same
    values: nulls, non-ASCII text, JSON, and times naive (SQLite: UTC) or in any zone."""
    from zoneinfo import ZoneInfo

    from herald.console.exports import arrow_array

    new_york = ZoneInfo("America/New_York")
    cases: list[tuple[list[Any], str, Any]] = [
        ([1, None, 2**40, -3], "int64", pa.int64()),
        (["a", None, "", "ünï 日本 😀", "x" * 1000], "string", pa.string()),
        ([True, None, False, True], "bool", pa.bool_()),
        (
            [datetime(2027, 2, 9, 23, 59, 59, 999999), None, datetime(1969, 12, 31, 23, 0)],
            "timestamp",
            pa.timestamp("us", tz="UTC"),
        ),
        (
            [datetime(2027, 3, 14, 1, 30, tzinfo=new_york), at(2027, 1, 1)],
            "timestamp",
            pa.timestamp("us", tz="UTC"),
        ),
        ([], "int64", pa.int64()),
    ]
    for values, kind, arrow_type in cases:
        built = arrow_array(values, kind)  # type: ignore[arg-type]
        built.validate(full=True)
        assert built.equals(pa.array(values, type=arrow_type)), (kind, values)
    raw = [{"b": 1, "a": ["é"]}, None]
    built = arrow_array(raw, "json")
    assert built.to_pylist() == ['{"a": ["é"], "b": 1}', None]
