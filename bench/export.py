"""Benchmark: `herald deliveries export` over a large ledger: peak memory and time, Parquet and CSV.

    .venv/bin/python bench/export.py [--rows 1000000] [--contacts 250000] [--chunk-rows N]
                                     [--db sqlite|postgres|both] [--postgres URL]

Builds a ledger of ``--rows`` rows in SQL (set-based: INSERT ... SELECT over generate_series
on Postgres, a recursive CTE on SQLite; nothing row by row in Python): ``--contacts``
contacts on half as many accounts, each contact planned for successive messages (preview,
announcement, deprecation, then sunset notices) until the rows are all there, in a mix of
states, with batch ids, provider ids and an error on the failed ones. Then it runs
``deliveries export --format parquet`` and ``--format csv`` to a file, each in a child process
of its own (the ``herald`` command itself), and measures each child's peak RSS
(``os.wait4``'s ``ru_maxrss``: that child alone) and wall time, and checks the rows each file
holds; then Parquet again for one phase (a quarter of the rows), to show memory flat as the
rows grow. Results: ``bench/results/<date>-export.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import DateTime, Engine, bindparam, text

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from herald.config import load_config  # noqa: E402
from herald.db import get_engine, upgrade  # noqa: E402
from herald.testing.synthetic import temporary_database  # noqa: E402

POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
MESSAGES = (
    "preview",
    "announcement",
    "deprecation",
    "sunset-t90@2027-09-30",
    "sunset-t30@2027-09-30",
    "sunset-t14@2027-09-30",
    "sunset-t7@2027-09-30",
    "sunset-t1@2027-09-30",
)
MOMENT = DateTime(timezone=True)
ERROR = "550 5.1.1 The email account that you tried to reach does not exist (bench)"


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


def _series(dialect: str, bound: str) -> str:
    if dialect == "postgresql":
        return f"generate_series(1, :{bound}) AS s(i)"
    return (
        f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :{bound}) "
        "SELECT i FROM n) AS s"
    )


def build(engine: Engine, *, campaign: str, rows: int, contacts: int) -> dict[str, float]:
    """Accounts, contacts and ``rows`` ledger rows in an empty database; seconds per table."""
    if rows > contacts * len(MESSAGES):
        raise SystemExit(f"{rows:,} rows need at least {-(-rows // len(MESSAGES)):,} contacts")
    dialect = engine.dialect.name
    message = "CASE (i - 1) / :contacts " + " ".join(
        f"WHEN {index} THEN '{name}'" for index, name in enumerate(MESSAGES)
    )
    planned = "CASE (i - 1) / :contacts " + " ".join(
        f"WHEN {index} THEN :planned{index}" for index in range(len(MESSAGES))
    )
    params: dict[str, Any] = {
        "accounts": -(-contacts // 2),
        "contacts": contacts,
        "rows": rows,
        "campaign": campaign,
        "now": datetime(2027, 1, 5, 6, 0, tzinfo=UTC),
        "sent": datetime(2027, 2, 9, 14, 3, 7, 250000, tzinfo=UTC),
        "error": ERROR,
        **{
            f"planned{index}": datetime(2027, 1 + index, 9, 10, 0, tzinfo=UTC)
            for index in range(len(MESSAGES))
        },
    }
    moments = ["now", "sent", *(f"planned{index}" for index in range(len(MESSAGES)))]
    statements = {
        "account": f"""
            INSERT INTO account (id, external_id, name, tier, region, lifecycle,
                migration_state, attributes, created_at, updated_at)
            SELECT i, 'B' || CAST(i AS TEXT), 'Bench Account ' || CAST(i AS TEXT), 'pro', 'na',
                'active', 'not_started', '{{}}', :now, :now
            FROM {_series(dialect, "accounts")}""",
        "contact": f"""
            INSERT INTO contact (id, account_id, email, name, role, locale, created_at,
                updated_at)
            SELECT i, (i - 1) / 2 + 1,
                'person' || CAST(i AS TEXT) || '@bench' || CAST(i % 997 AS TEXT) || '.example.com',
                'Person ' || CAST(i AS TEXT),
                CASE WHEN i % 2 = 1 THEN 'executive' ELSE 'technical' END,
                CASE i % 4 WHEN 0 THEN 'de' WHEN 1 THEN 'fr' ELSE 'en' END, :now, :now
            FROM {_series(dialect, "contacts")}""",
        "delivery": f"""
            INSERT INTO delivery (id, campaign, message, contact_id, segment, role, locale,
                timezone, critical, state, batch_id, provider_message_id, attempts, error,
                planned_at, claimed_at, sent_at, updated_at)
            SELECT i, :campaign, {message} END,
                (i - 1) % :contacts + 1,
                CASE i % 3 WHEN 0 THEN 'early_adopter' WHEN 1 THEN 'standard'
                    ELSE 'conservative' END,
                CASE WHEN i % 2 = 1 THEN 'executive' ELSE 'technical' END,
                'en', 'America/New_York', i % 50 = 0,
                CASE WHEN i % 25 = 1 THEN 'failed' WHEN i % 10 = 3 THEN 'planned'
                    ELSE 'accepted' END,
                CASE WHEN i % 10 = 3 THEN NULL
                    ELSE 'bench-batch-' || CAST(i / 1000 AS TEXT) END,
                CASE WHEN i % 25 = 1 OR i % 10 = 3 THEN NULL
                    ELSE 'pm' || CAST(i / 1000 AS TEXT) || '.filter0001p1las1' END,
                CASE WHEN i % 10 = 3 THEN 0 ELSE 1 END,
                CASE WHEN i % 25 = 1 THEN :error END,
                {planned} END,
                CASE WHEN i % 10 = 3 THEN NULL ELSE :sent END,
                CASE WHEN i % 10 = 3 OR i % 25 = 1 THEN NULL ELSE :sent END,
                :sent
            FROM {_series(dialect, "rows")}""",
    }
    timings: dict[str, float] = {}
    for name, sql in statements.items():
        used = {key: value for key, value in params.items() if f":{key}" in sql}
        statement = text(sql).bindparams(
            *(bindparam(key, type_=MOMENT) for key in used if key in moments)
        )
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(statement.bindparams(**used))
        timings[name] = round(time.perf_counter() - started, 1)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return timings


# --------------------------------------------------------------------------- the child


def part_export(fmt: str, output: str, chunk_rows: str, *options: str) -> None:
    """Run `herald deliveries export` in this process (the caller measures it from outside)."""
    from herald.cli.app import app

    args = ["deliveries", "export", "--format", fmt, "--output", output]
    app([*args, "--chunk-rows", chunk_rows, *options], prog_name="herald")


def measure(
    url: str, fmt: str, output: Path, chunk_rows: int, work: Path, options: list[str]
) -> dict[str, Any]:
    """Run one export in a child process; its peak RSS, wall time and what it said."""
    env = dict(os.environ)
    env.update(
        HERALD_DATABASE_URL=url,
        HERALD_CONFIG_DIR=str(ROOT / "config"),
        HERALD_VAR_DIR=str(work / "var"),
        COLUMNS="200",
    )
    log = work / f"{fmt}.stderr"
    with log.open("w", encoding="utf-8") as errors:
        started = time.perf_counter()
        child = subprocess.Popen(
            [
                sys.executable,
                __file__,
                "--part",
                "export",
                "--",  # what follows is the part's, options included
                fmt,
                str(output),
                str(chunk_rows),
                *options,
            ],
            stdout=subprocess.DEVNULL,
            stderr=errors,
            env=env,
            cwd=ROOT,
        )
        _, status, usage = os.wait4(child.pid, 0)
        wall = time.perf_counter() - started
    child.returncode = os.waitstatus_to_exitcode(status)
    said = log.read_text(encoding="utf-8")
    if child.returncode != 0:
        raise SystemExit(f"export {fmt} failed ({child.returncode}):\n{said[-4000:]}")
    return {
        "format": fmt,
        "options": options,
        "peak_rss_mb": round(usage.ru_maxrss / 1024, 1),
        "wall_s": round(wall, 1),
        "bytes": output.stat().st_size,
        "rows": rows_in(output, fmt),
        "summary": said.strip().splitlines(),
    }


def rows_in(path: Path, fmt: str) -> int:
    """The data rows of an exported file (the CSV has no line break inside a field here)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        return int(pq.ParquetFile(path).metadata.num_rows)
    with path.open("rb") as handle:
        return sum(chunk.count(b"\n") for chunk in iter(lambda: handle.read(1 << 20), b"")) - 1


def row_groups(path: Path) -> int:
    import pyarrow.parquet as pq

    return int(pq.ParquetFile(path).metadata.num_row_groups)


def run_db(kind: str, args: argparse.Namespace) -> dict[str, Any]:
    campaign = load_config(ROOT / "config").campaign.id
    work = Path(tempfile.mkdtemp(prefix="herald-bench-export-"))
    try:
        with temporary_database(kind, work, args.postgres) as url:
            upgrade(url)
            engine = get_engine(url)
            say(f"[{kind}] building {args.rows:,} ledger rows on {args.contacts:,} contacts")
            started = time.perf_counter()
            built = build(engine, campaign=campaign, rows=args.rows, contacts=args.contacts)
            build_s = time.perf_counter() - started
            engine.dispose()
            result: dict[str, Any] = {
                "db": kind,
                "rows": args.rows,
                "contacts": args.contacts,
                "chunk_rows": args.chunk_rows,
                "build_s": round(build_s, 1),
                "build_by_table_s": built,
            }
            # The whole ledger in each format, then one phase (a quarter of it): memory flat.
            runs = [
                ("parquet", "parquet", [], args.rows),
                ("csv", "csv", [], args.rows),
                ("parquet_one_phase", "parquet", ["--phase", "preview"], args.contacts),
            ]
            for label, fmt, options, expected in runs:
                output = work / f"deliveries.{fmt}"
                say(f"[{kind}] deliveries export --format {fmt} {' '.join(options)}")
                measured = measure(url, fmt, output, args.chunk_rows, work, options)
                if measured["rows"] != expected:
                    raise SystemExit(f"{label}: {measured['rows']:,} rows, not {expected:,}")
                if fmt == "parquet":
                    measured["row_groups"] = row_groups(output)
                say(
                    f"[{kind}] {label}: {measured['rows']:,} rows, peak RSS "
                    f"{measured['peak_rss_mb']} MB, {measured['wall_s']} s, "
                    f"{measured['bytes'] / 1e6:.0f} MB file"
                )
                result[label] = measured
                output.unlink()
            return result
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--contacts", type=int, default=250_000)
    parser.add_argument("--chunk-rows", type=int, default=10_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="sqlite")
    parser.add_argument("--postgres", default=os.environ.get("HERALD_BENCH_POSTGRES", POSTGRES))
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    if args.part == "export":
        part_export(*args.rest)
        return

    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    runs = [run_db(kind, args) for kind in kinds]
    document = {
        "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "budget_peak_rss_mb": 300,
        "runs": runs,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{date.today().isoformat()}-export.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    say(f"\n{'db':<9}{'rows':>11}{'format':>9}{'peak RSS MB':>13}{'wall s':>8}{'file MB':>9}")
    for run in runs:
        for label in ("parquet", "csv", "parquet_one_phase"):
            m = run[label]
            say(
                f"{run['db']:<9}{m['rows']:>11,}{m['format']:>9}{m['peak_rss_mb']:>13}"
                f"{m['wall_s']:>8}{m['bytes'] / 1e6:>9.0f}"
            )
    say(f"results: {path}")


if __name__ == "__main__":
    main()
