"""Batch telemetry against its data contracts: quarantine bad rows, reject bad batches whole."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Sequence
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select, text
from typer.testing import CliRunner

from herald.config import HeraldConfig
from herald.customers.importer import import_customers
from herald.models import (
    QUARANTINE,
    SUPPORT_TICKET,
    TELEMETRY_BATCH,
)
from herald.telemetry.health import (
    SourceRejected,
    record_override,
    require_healthy,
    source_problems,
)
from herald.telemetry.ingest import BatchRejected, IngestResult, ingest_file
from tests.support.bases import config as base_config
from tests.support.bases import load_base
from tests.support.csvfiles import ACCOUNT_HEADER, account
from tests.support.csvfiles import write_csv as write_accounts
from tests.support.environment import Database

SURVEY = [
    "response_id",
    "account_external_id",
    "contact_email",
    "responded_at",
    "csat",
    "performance_improved",
    "comment",
]
ADOPTION = ["account_external_id", "observed_on", "adoption_pct"]
SUPPORT = ["ticket_id", "account_external_id", "opened_at", "closed_at", "category", "satisfaction"]
ADOPTION_SNAPSHOT = (
    "SELECT account_id, observed_on, adoption_pct, batch_id FROM adoption_event "
    "ORDER BY account_id, observed_on"
)
PERFORMANCE = [
    "report_id",
    "account_external_id",
    "reported_at",
    "legacy_import_ms",
    "new_import_ms",
    "legacy_memory_mb",
    "new_memory_mb",
]


def acc(n: int) -> str:
    return f"ACC-{n:07d}"


def write_csv(path: Path, header: Sequence[str], rows: Sequence[Sequence[str]]) -> Path:
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows(rows)
    path.write_text(buffer.getvalue(), encoding="utf-8")
    return path


def survey_rows(count: int, *, start: int = 1) -> list[list[str]]:
    """Valid survey rows over the base's 120 accounts."""
    return [
        [
            f"R{i:05d}",
            acc((i % 120) + 1),
            "",
            f"2026-10-{(i % 28) + 1:02d}T09:30:00Z",
            str((i % 5) + 1),
            ["yes", "no", ""][i % 3],
            "faster imports, thanks" if i % 4 == 0 else "",
        ]
        for i in range(start, start + count)
    ]


def adoption_rows(count: int, day: date = date(2026, 10, 1)) -> list[list[str]]:
    return [[acc(n), day.isoformat(), str(10 + n % 50)] for n in range(1, count + 1)]


def ingest(db: Database, config: HeraldConfig, source: str, path: Path) -> IngestResult:
    return ingest_file(db.engine, config=config, source=source, path=path)


def rows_of(db: Database, sql: str) -> list[tuple[Any, ...]]:
    with db.engine.connect() as conn:
        return [tuple(row) for row in conn.execute(text(sql))]


def quarantined(db: Database) -> list[tuple[int, str, str]]:
    """(line, failed_check, raw) of every quarantined row, by line."""
    return [
        (int(line), check, raw)
        for line, check, raw in rows_of(
            db, "SELECT line, failed_check, raw FROM quarantine ORDER BY line"
        )
    ]


def batches(db: Database) -> list[dict[str, Any]]:
    with db.engine.connect() as conn:
        return [
            dict(row)
            for row in conn.execute(
                TELEMETRY_BATCH.select().order_by(TELEMETRY_BATCH.c.received_at)
            ).mappings()
        ]


# --------------------------------------------------------------------------- row level


class TestQuarantine:
    def test_six_bad_rows_of_200_are_quarantined_and_194_loaded(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Each bad row is quarantined with its line, failed check and raw text; the rest loads."""
        config = load_base(db, tmp_path)
        known_email = rows_of(
            db,
            "SELECT c.email FROM contact c JOIN account a ON a.id = c.account_id "
            "WHERE a.external_id = 'ACC-0000005' ORDER BY c.id",
        )[0][0]
        rows = survey_rows(200)
        rows[4][2] = known_email.upper()  # line 6: a known contact, any case
        rows[5][2] = "nobody@example.com"  # line 7: an unknown contact is fine
        rows[9][1] = "ACC-9999999"  # line 11: unknown account
        rows[19][4] = "7"  # line 21: CSAT out of range
        rows[29][3] = "2099-01-01T00:00:00Z"  # line 31: in the future
        rows[39][3] = "2026-13-45"  # line 41: not a timestamp
        rows[49][0] = rows[0][0]  # line 51: repeats line 2's response id
        rows[59][2] = "jane.doe@"  # line 61: malformed e-mail
        path = write_csv(tmp_path / "survey.csv", SURVEY, rows)

        result = ingest(db, config, "survey", path)

        assert (result.status, result.rows, result.loaded, result.quarantined) == (
            "loaded",
            200,
            194,
            6,
        )
        assert db.count("satisfaction_response") == 194
        file_lines = path.read_text(encoding="utf-8").splitlines()
        expected = [
            (11, "expect_column_values_to_be_in_set(account_external_id)"),
            (21, "expect_column_values_to_be_between(csat__int)"),
            (31, "expect_column_values_to_be_between(responded_at__ts)"),
            (41, "expect_column_values_to_not_be_null(responded_at__ts)"),
            (51, "expect_column_values_to_be_null(response_id__duplicate_of)"),
            (61, "expect_column_values_to_match_regex(contact_email)"),
        ]
        assert quarantined(db) == [(line, check, file_lines[line - 1]) for line, check in expected]
        assert [(row.line, row.check) for row in result.first_quarantined] == expected
        details = dict(rows_of(db, "SELECT line, detail FROM quarantine"))
        assert "csat__int=7 (csat='7')" in details[21]
        assert "response_id__duplicate_of=2" in details[51]
        assert "responded_at='2026-13-45'" in details[41]
        # contact_id: a known e-mail (any case) links, an unknown one stays null
        linked = dict(rows_of(db, "SELECT response_id, contact_id FROM satisfaction_response"))
        assert linked["R00005"] is not None
        assert linked["R00006"] is None
        (batch,) = batches(db)
        assert (batch["status"], batch["rows"], batch["loaded"], batch["quarantined"]) == (
            "loaded",
            200,
            194,
            6,
        )
        assert rows_of(db, "SELECT DISTINCT batch_id FROM quarantine") == [(result.batch_id,)]
        assert rows_of(db, "SELECT DISTINCT batch_id FROM satisfaction_response") == [
            (result.batch_id,)
        ]
        # (i) Data Docs: the validation result page exists and is recorded with the batch
        assert result.data_docs is not None and result.data_docs.is_file()
        assert result.data_docs.suffix == ".html"
        assert batch["data_docs"] == str(result.data_docs)

    def test_csv_with_bom_crlf_and_a_multiline_field_keeps_physical_lines(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Line numbers are physical lines (header is 1); raw is the row exactly as written."""
        config = load_base(db, tmp_path, accounts=5)
        content = (
            "\ufeffticket_id,account_external_id,opened_at,closed_at,category,satisfaction\r\n"
            'T1,ACC-0000001,2026-10-01T08:00:00,,"billing\r\nsecond line",4\r\n'
            "T2,ACC-0000002,2026-10-02 08:00:00+02:00,2026-10-01T00:00:00Z,import,5\r\n"
            "T3,ACC-0000003,2026-10-03T08:00:00Z,2026-10-04T08:00:00Z,import,six\r\n"
            "T4,ACC-0000004,2026-10-03T08:00:00Z,2026-10-04T08:00:00Z,import\r\n"
        )
        for n in range(5, 101):
            content += f"T{n},ACC-0000005,2026-10-05T10:00:00Z,,import,\r\n"
        path = tmp_path / "support.csv"
        path.write_bytes(content.encode("utf-8"))

        result = ingest(db, config, "support", path)

        assert (result.rows, result.loaded, result.quarantined) == (100, 97, 3)
        assert quarantined(db) == [
            (
                4,
                "expect_column_pair_values_a_to_be_greater_than_b(closed_at__ts,opened_at__ts)",
                "T2,ACC-0000002,2026-10-02 08:00:00+02:00,2026-10-01T00:00:00Z,import,5",
            ),
            (
                5,
                "expect_column_values_to_not_be_null(satisfaction__int)",
                "T3,ACC-0000003,2026-10-03T08:00:00Z,2026-10-04T08:00:00Z,import,six",
            ),
            (
                6,
                "expect_column_values_to_be_null(row__error)",
                "T4,ACC-0000004,2026-10-03T08:00:00Z,2026-10-04T08:00:00Z,import",
            ),
        ]
        tickets = SUPPORT_TICKET
        with db.engine.connect() as conn:
            category, opened, closed, satisfaction = conn.execute(
                select(
                    tickets.c.category,
                    tickets.c.opened_at,
                    tickets.c.closed_at,
                    tickets.c.satisfaction,
                ).where(tickets.c.ticket_id == "T1")
            ).one()
        assert category == "billing\r\nsecond line"
        assert closed is None and satisfaction == 4
        opened = opened.replace(tzinfo=UTC) if opened.tzinfo is None else opened  # SQLite
        assert opened == datetime(2026, 10, 1, 8, tzinfo=UTC)  # naive in the file means UTC

    def test_jsonl_input(self, db: Database, tmp_path: Path) -> None:
        """JSON lines with the same keys: numbers may be JSON numbers; a bad line is quarantined."""
        config = load_base(db, tmp_path, accounts=30)
        lines = [
            json.dumps(
                {"account_external_id": acc(n), "observed_on": "2026-10-01", "adoption_pct": n}
            )
            for n in range(1, 26)
        ]
        lines.insert(10, "")  # line 11: blank lines are not rows
        lines.insert(20, '{"account_external_id": "ACC-0000026", "observed_on": ')  # line 21
        path = tmp_path / "adoption.jsonl"
        path.write_text("\n".join(lines) + "\n", encoding="utf-8")

        result = ingest(db, config, "adoption", path)

        assert (result.rows, result.loaded, result.quarantined) == (26, 25, 1)
        assert quarantined(db) == [
            (21, "expect_column_values_to_be_null(row__error)", lines[20]),
        ]
        assert rows_of(
            db,
            "SELECT a.external_id, e.adoption_pct FROM adoption_event e "
            "JOIN account a ON a.id = e.account_id WHERE a.external_id = 'ACC-0000007'",
        ) == [("ACC-0000007", 7.0)]


# --------------------------------------------------------------------------- batch level


class TestRejectedBatch:
    def test_renamed_column_rejects_the_whole_file_and_blocks_dependent_flows(
        self, db: Database, tmp_path: Path, herald_env: Path
    ) -> None:
        """Nothing loaded or changed; the batch row names check and column; flows refuse."""
        config = load_base(db, tmp_path)
        good = write_csv(tmp_path / "good.csv", ADOPTION, adoption_rows(40))
        ingest(db, config, "adoption", good)
        before = rows_of(db, ADOPTION_SNAPSHOT)
        accounts_before = rows_of(
            db, "SELECT id, migration_state, migrated_on FROM account ORDER BY id"
        )
        rows = [[acc(n), "2026-10-01", "100"] for n in range(1, 41)]
        bad = write_csv(
            tmp_path / "renamed.csv",
            ["account_external_id", "observed_on", "adoption_percent"],
            rows,
        )

        with pytest.raises(BatchRejected) as caught:
            ingest(db, config, "adoption", bad)

        assert str(caught.value) == (
            "adoption batch rejected: expect_table_columns_to_match_set: column "
            "'adoption_pct' is missing (found 'adoption_percent')"
        )
        result = caught.value.result
        assert rows_of(db, ADOPTION_SNAPSHOT) == before
        assert rows_of(db, "SELECT id, migration_state, migrated_on FROM account ORDER BY id") == (
            accounts_before
        )
        assert db.count("quarantine") == 0
        last = batches(db)[-1]
        assert (last["status"], last["failed_check"], last["failed_column"]) == (
            "rejected",
            "expect_table_columns_to_match_set",
            "adoption_pct",
        )
        assert (last["loaded"], last["quarantined"]) == (0, 0)
        kept = herald_env / "telemetry" / "rejected" / "adoption" / f"{result.batch_id}-renamed.csv"
        assert result.kept_file == kept
        assert kept.read_bytes() == bad.read_bytes()

        # a flow that depends on adoption refuses, naming source, check, column and file
        with pytest.raises(SourceRejected) as refused:
            require_healthy(db.engine, config=config, flow_name="metrics")
        message = str(refused.value)
        assert "adoption" in message and "'adoption_pct'" in message
        assert "expect_table_columns_to_match_set" in message and "renamed.csv" in message
        assert "herald telemetry override" in message
        # depends on nothing
        require_healthy(db.engine, config=config, flow_name="segment-customers")
        # the phase and notice flows refuse too, before planning anything
        from typer.testing import CliRunner

        from herald.cli.app import app

        refused_send = CliRunner().invoke(app, ["phase", "send", "announcement", "--send"])
        assert refused_send.exit_code == 2
        assert "'adoption_pct'" in refused_send.output and db.count("delivery") == 0
        refused_metrics = CliRunner().invoke(app, ["metrics", "show"])
        assert refused_metrics.exit_code == 2
        assert "'adoption_pct'" in refused_metrics.output
        assert db.count("metric_snapshot") == 0

        # an operator override lets it run ...
        with db.engine.begin() as conn:
            record_override(
                conn, source="adoption", reason="vendor renamed the column; fixed upstream"
            )
        require_healthy(db.engine, config=config, flow_name="metrics")
        # ... until the next rejected batch; then a good batch clears it again
        with pytest.raises(BatchRejected):
            ingest(db, config, "adoption", bad)
        with db.engine.connect() as conn:
            assert len(source_problems(conn, sources=["adoption", "survey"])) == 1
        ingest(db, config, "adoption", good)
        require_healthy(db.engine, config=config, flow_name="metrics")

    def test_more_than_5_percent_bad_rows_rejects_the_batch(
        self, db: Database, tmp_path: Path
    ) -> None:
        """6 bad rows of 100 is over max_bad_row_share: nothing loaded, nothing quarantined."""
        config = load_base(db, tmp_path)
        rows = survey_rows(100)
        for index in range(0, 60, 10):
            rows[index][4] = "9"
        path = write_csv(tmp_path / "survey.csv", SURVEY, rows)

        with pytest.raises(BatchRejected) as caught:
            ingest(db, config, "survey", path)

        result = caught.value.result
        assert result.failed_check == "max_bad_row_share"
        assert result.failed_column == "csat"
        assert "6 of 100 rows (6.0%)" in str(caught.value)
        assert "expect_column_values_to_be_between(csat__int)" in str(caught.value)
        assert db.count("satisfaction_response") == 0
        assert db.count("quarantine") == 0
        assert batches(db)[-1]["status"] == "rejected"

    def test_row_count_far_off_recent_batches_rejects(self, db: Database, tmp_path: Path) -> None:
        """With history, a file far smaller than the median of recent loaded batches is rejected."""
        config = load_base(db, tmp_path)

        def performance(name: str, start: int, count: int) -> Path:
            rows = [
                [f"P{i}", acc((i % 120) + 1), "2026-10-01T12:00:00Z", "1017.6", "10", "512", "1.5"]
                for i in range(start, start + count)
            ]
            return write_csv(tmp_path / name, PERFORMANCE, rows)

        first = ingest(db, config, "performance", performance("p1.csv", 0, 20))
        assert "skipped expect_table_row_count_to_be_between" in (first.detail or "")
        ingest(db, config, "performance", performance("p2.csv", 100, 20))

        with pytest.raises(BatchRejected) as caught:
            ingest(db, config, "performance", performance("p3.csv", 200, 2))

        assert caught.value.result.failed_check == "expect_table_row_count_to_be_between"
        assert "2 rows (expected 4 to 100)" in str(caught.value)
        assert "median 20 of the last 2 loaded batch(es)" in str(caught.value)
        assert db.count("performance_report") == 40
        ingest(db, config, "performance", performance("p4.csv", 300, 30))
        assert db.count("performance_report") == 70


# --------------------------------------------------------------------------- effects


class TestEffects:
    def test_full_adoption_marks_the_account_migrated_on_its_earliest_day(
        self, db: Database, tmp_path: Path
    ) -> None:
        """100% marks migrated (earliest day, never later); partial marks in progress."""
        config = load_base(db, tmp_path)
        candidates = [
            external_id
            for (external_id,) in rows_of(
                db,
                "SELECT external_id FROM account WHERE migration_state = 'not_started' "
                "ORDER BY external_id LIMIT 2",
            )
        ]
        full, partial = candidates
        first = write_csv(
            tmp_path / "a1.csv",
            ADOPTION,
            [
                [full, "2026-10-01", "40"],
                [full, "2026-10-05", "100"],
                [full, "2026-10-09", "100"],
                [partial, "2026-10-05", "35.5"],
            ],
        )
        result = ingest(db, config, "adoption", first)
        assert (result.accounts_migrated, result.accounts_in_progress) == (1, 1)

        def state(external_id: str) -> tuple[Any, ...]:
            ((migration_state, migrated_on),) = rows_of(
                db,
                "SELECT migration_state, migrated_on FROM account "
                f"WHERE external_id = '{external_id}'",
            )
            return migration_state, str(migrated_on) if migrated_on else None

        assert state(full) == ("migrated", "2026-10-05")
        assert state(partial) == ("in_progress", None)
        # an earlier full day moves migrated_on earlier; a later one never moves it later
        earlier = write_csv(tmp_path / "a2.csv", ADOPTION, [[full, "2026-10-02", "100"]])
        ingest(db, config, "adoption", earlier)
        later = write_csv(tmp_path / "a3.csv", ADOPTION, [[full, "2026-10-20", "100"]])
        assert ingest(db, config, "adoption", later).accounts_migrated == 0
        assert state(full) == ("migrated", "2026-10-02")

    def test_reingesting_the_same_file_changes_nothing(self, db: Database, tmp_path: Path) -> None:
        """Upserts: the second load writes no row, not even a batch id."""
        config = load_base(db, tmp_path)
        rows = [
            [
                f"T{n}",
                acc(n),
                f"2026-10-{n % 28 + 1:02d}T08:00:00Z",
                f"2026-10-{n % 28 + 1:02d}T18:00:00Z" if n % 2 else "",
                "import" if n % 3 else "billing",
                str(n % 5 + 1) if n % 4 else "",
            ]
            for n in range(1, 61)
        ]
        path = write_csv(tmp_path / "support.csv", SUPPORT, rows)
        snapshot = "SELECT * FROM support_ticket ORDER BY ticket_id"

        first = ingest(db, config, "support", path)
        stored = rows_of(db, snapshot)
        second = ingest(db, config, "support", path)

        assert (first.changed, second.changed) == (60, 0)
        assert second.loaded == 60
        assert rows_of(db, snapshot) == stored
        assert db.count("support_ticket") == 60
        assert [b["status"] for b in batches(db)] == ["loaded", "loaded"]


class TestMigrationSource:
    def test_a_customer_reimport_never_unmigrates_what_telemetry_migrated(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Telemetry wins: the CRM's stale "not_started" is recorded beside the account and
        leaves its state alone; an account telemetry never saw follows the CRM both ways."""

        def load(rows: list[list[str]]) -> None:
            path = write_accounts(tmp_path / "accounts.csv", ACCOUNT_HEADER, rows)
            import_customers(
                engine=db.engine, accounts_csv=path, contacts_csv=None, rejects_dir=tmp_path
            )

        def state(external_id: str) -> tuple[Any, ...]:
            (row,) = rows_of(
                db,
                "SELECT migration_state, migrated_on, migration_source, crm_migration_state "
                f"FROM account WHERE external_id = '{external_id}'",
            )
            return tuple(str(value) if isinstance(value, date) else value for value in row)

        config = base_config()
        load([account(1), account(2)])
        ingest(
            db,
            config,
            "adoption",
            write_csv(
                tmp_path / "a.csv",
                ADOPTION,
                [
                    ["A00001", "2026-10-05", "100"],
                ],
            ),
        )
        assert state("A00001") == ("migrated", "2026-10-05", "telemetry", "not_started")

        moved = {"migration_state": "migrated", "migrated_on": "2026-09-01"}
        load([account(1), account(2, **moved)])  # the CRM is behind on A00001
        assert state("A00001") == ("migrated", "2026-10-05", "telemetry", "not_started")
        assert state("A00002") == ("migrated", "2026-09-01", "crm", "migrated")

        load([account(1, **moved), account(2)])  # the CRM corrects A00002
        assert state("A00001") == ("migrated", "2026-10-05", "telemetry", "migrated")
        assert state("A00002") == ("not_started", None, "crm", "not_started")

    def test_reingesting_the_same_adoption_file_changes_nothing(
        self, db: Database, tmp_path: Path
    ) -> None:
        """The same adoption file twice: no event, account or state written the second time."""
        config = load_base(db, tmp_path)
        rows = [*adoption_rows(30), [acc(1), "2026-10-02", "100"]]
        path = write_csv(tmp_path / "adoption.csv", ADOPTION, rows)
        accounts = "SELECT * FROM account ORDER BY id"
        first = ingest(db, config, "adoption", path)
        events, stored = rows_of(db, ADOPTION_SNAPSHOT), rows_of(db, accounts)
        second = ingest(db, config, "adoption", path)
        assert (first.changed, first.accounts_migrated) == (31, 1)
        assert (second.changed, second.accounts_migrated, second.accounts_in_progress) == (0, 0, 0)
        assert rows_of(db, ADOPTION_SNAPSHOT) == events
        assert rows_of(db, accounts) == stored


# --------------------------------------------------------------------------- CLI


class TestCommand:
    def test_ingest_exit_codes_and_output(self, db: Database, tmp_path: Path) -> None:
        """0 clean, 3 with quarantined rows (listed with line and check), 2 when rejected."""
        from herald.cli.telemetry import telemetry_app

        load_base(db, tmp_path)
        runner = CliRunner()
        clean = write_csv(tmp_path / "clean.csv", SURVEY, survey_rows(50))
        rows = survey_rows(50, start=100)
        rows[2][4] = "0"
        partial = write_csv(tmp_path / "partial.csv", SURVEY, rows)
        renamed = write_csv(
            tmp_path / "renamed.csv", [*SURVEY[:4], "score", *SURVEY[5:]], survey_rows(50)
        )

        ok = runner.invoke(telemetry_app, ["ingest", "survey", str(clean)])
        assert ok.exit_code == 0, ok.output
        assert "survey: 50 of 50 row(s) loaded" in ok.output
        assert "Data Docs: " in ok.output and ".html" in ok.output

        some = runner.invoke(telemetry_app, ["ingest", "survey", str(partial)])
        assert some.exit_code == 3, some.output
        assert "49 of 50 row(s) loaded" in some.output and "1 quarantined" in some.output
        assert "line 4: expect_column_values_to_be_between(csat__int)" in some.output

        rejected = runner.invoke(telemetry_app, ["ingest", "survey", str(renamed)])
        assert rejected.exit_code == 2, rejected.output
        assert (
            "survey batch rejected: expect_table_columns_to_match_set: column 'csat' is "
            "missing (found 'score')"
        ) in rejected.output
        assert "Nothing was loaded" in rejected.output

        status = runner.invoke(telemetry_app, ["status"])
        assert status.exit_code == 0, status.output
        assert "rejected" in status.output and "no batch yet" in status.output

        missing = runner.invoke(telemetry_app, ["ingest", "survey", str(tmp_path / "nope.csv")])
        assert missing.exit_code == 2
        unknown = runner.invoke(telemetry_app, ["ingest", "surveys", str(clean)])
        assert unknown.exit_code == 2

        nothing = runner.invoke(telemetry_app, ["override", "adoption", "--reason", "x"])
        assert nothing.exit_code == 2 and "not rejected" in nothing.output
        done = runner.invoke(telemetry_app, ["override", "survey", "--reason", "known issue"])
        assert done.exit_code == 0, done.output
        after = runner.invoke(telemetry_app, ["status"])
        assert "known issue" in after.output
        assert db.count("audit_log WHERE action = 'telemetry.override'") == 1


# --------------------------------------------------------------------------- flow


@pytest.mark.usefixtures("prefect_server")
class TestDropFolderFlow:
    def test_flow_moves_files_and_fails_naming_the_rejected_check(
        self, db: Database, tmp_path: Path
    ) -> None:
        """Every file is processed; done/ and rejected/ get them; the run fails at the end."""
        from prefect.artifacts import Artifact

        from flows.ingest_telemetry import ingest_telemetry
        from herald.telemetry.ingest import BatchesRejected

        load_base(db, tmp_path)
        inbox = tmp_path / "inbox"
        (inbox / "adoption").mkdir(parents=True)
        (inbox / "survey").mkdir(parents=True)
        write_csv(inbox / "adoption" / "a-good.csv", ADOPTION, adoption_rows(30))
        write_csv(
            inbox / "adoption" / "b-renamed.csv",
            ["account_external_id", "observed_on", "pct"],
            adoption_rows(30),
        )
        rows = survey_rows(40)
        rows[0][2] = "jane.doe@"  # quarantined: the artifact must not show the address
        write_csv(inbox / "survey" / "s.csv", SURVEY, rows)
        (inbox / "survey" / "notes.txt").write_text("not a batch")

        with pytest.raises(BatchesRejected) as caught:
            ingest_telemetry(inbox=inbox)

        message = str(caught.value)
        assert "1 of 3 telemetry batch(es) rejected" in message
        assert "expect_table_columns_to_match_set" in message and "'adoption_pct'" in message
        assert sorted(p.name for p in (inbox / "adoption" / "done").iterdir()) == ["a-good.csv"]
        assert [p.name for p in (inbox / "adoption" / "rejected").iterdir()] == ["b-renamed.csv"]
        assert [p.name for p in (inbox / "survey" / "done").iterdir()] == ["s.csv"]
        assert (inbox / "survey" / "notes.txt").exists()
        assert not list((inbox / "adoption").glob("*.csv"))
        assert db.count("adoption_event") == 30
        assert db.count("satisfaction_response") == 39

        survey = Artifact.get("telemetry-survey")
        assert survey is not None
        markdown = str(survey.data)
        (survey_batch,) = [b for b in batches(db) if b["source"] == "survey"]
        assert survey_batch["data_docs"] and survey_batch["data_docs"] in markdown
        assert Path(survey_batch["data_docs"]).is_file()
        assert "| 2 | `expect_column_values_to_match_regex(contact_email)`" in markdown
        assert "jane.doe@" not in markdown and "j***@" in markdown
        adoption = Artifact.get("telemetry-adoption")
        assert adoption is not None
        assert "rejected" in str(adoption.data) and "adoption_pct" in str(adoption.data)
        assert db.count("quarantine") == 1
        assert {row[0] for row in rows_of(db, "SELECT source FROM quarantine")} == {"survey"}
        assert QUARANTINE.name == "quarantine"


# --------------------------------------------------------------------------- customers suite


class TestCustomerSuite:
    def test_accounts_file_against_the_customers_suite(self, tmp_path: Path) -> None:
        """The demo accounts pass; a bad lifecycle and an empty name fail on their lines."""
        from herald.sandbox.demo import write_demo_base
        from herald.telemetry.customer_contract import validate_customer_file

        files = write_demo_base(tmp_path / "demo", accounts=30, seed=5)
        clean = validate_customer_file(files.accounts_csv)
        assert (clean.batch_failures, clean.row_failures) == ([], {})
        assert clean.data_docs is not None and clean.data_docs.is_file()

        with files.accounts_csv.open(newline="", encoding="utf-8") as handle:
            header, *rows = list(csv.reader(handle))
        rows[4][header.index("lifecycle")] = "Dormant"  # line 6
        rows[4][header.index("name")] = " "
        bad = write_csv(tmp_path / "accounts.csv", header, rows)
        report = validate_customer_file(bad)
        assert report.batch_failures == []
        assert [f.check for f in report.row_failures[6]] == [
            "expect_column_values_to_not_be_null(name)",
            "expect_column_values_to_be_in_set(lifecycle)",
        ]
