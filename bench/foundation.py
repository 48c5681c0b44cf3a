"""Benchmark: customer import and segmentation at scale, each against a same-process baseline.

    .venv/bin/python bench/foundation.py --accounts 1000000 --contacts-per-account 1 [--db URL]

Baselines (the floor for the same input, run in this process on this machine):
- import: one pass that only reads and splits the CSV files (no checks, no database);
- segmentation: an INSERT ... SELECT of the same active accounts with a constant segment
  (the same write, no rule evaluation).
Results go to bench/results/<date>-foundation-<db>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herald.config import load_config  # noqa: E402
from herald.customers.importer import import_customers  # noqa: E402
from herald.customers.segmentation import assign_segments  # noqa: E402
from herald.db import get_engine, upgrade  # noqa: E402
from herald.sandbox.demo import write_demo_base  # noqa: E402


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_only(*paths: Path) -> int:
    rows = 0
    for path in paths:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for _ in csv.reader(handle):
                rows += 1
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--contacts-per-account", type=int, default=1)
    parser.add_argument("--db", default="", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    url = args.db or f"sqlite:///{work / 'herald.db'}"
    upgrade(url)
    engine = get_engine(url)
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE account RESTART IDENTITY CASCADE"))

    started = time.perf_counter()
    files = write_demo_base(
        work / "base", accounts=args.accounts, contacts_per_account=args.contacts_per_account
    )
    generate_s = time.perf_counter() - started

    started = time.perf_counter()
    read_only(files.accounts_csv, files.contacts_csv)
    read_only_s = time.perf_counter() - started

    started = time.perf_counter()
    result = import_customers(
        engine=engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=work / "rejects",
    )
    import_s = time.perf_counter() - started
    assert result.rejected == 0, result.first_rejects

    started = time.perf_counter()
    again = import_customers(
        engine=engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=work / "rejects",
    )
    reimport_s = time.perf_counter() - started
    assert again.accounts.inserted == again.accounts.updated == 0

    config = load_config(ROOT / "config")
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TEMPORARY TABLE bench_baseline (account_id INTEGER, segment TEXT)")
        )
        started = time.perf_counter()
        conn.execute(
            text(
                "INSERT INTO bench_baseline SELECT id, 'standard' FROM account "
                "WHERE lifecycle = 'active'"
            )
        )
        baseline_s = time.perf_counter() - started
        conn.execute(text("DROP TABLE bench_baseline"))

    started = time.perf_counter()
    segmented = assign_segments(engine=engine, config=config.segments, as_of=date(2026, 11, 24))
    segment_s = time.perf_counter() - started
    assert segmented.assigned == segmented.active_accounts

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "db": engine.dialect.name,
        "accounts": files.accounts,
        "contacts": files.contacts,
        "generate_s": round(generate_s, 2),
        "import_s": round(import_s, 2),
        "import_rows_per_s": round((files.accounts + files.contacts) / import_s),
        "import_read_only_baseline_s": round(read_only_s, 2),
        "import_vs_read_only": round(import_s / read_only_s, 1),
        "reimport_s": round(reimport_s, 2),
        "segment_s": round(segment_s, 2),
        "segment_baseline_s": round(baseline_s, 2),
        "segment_vs_baseline": round(segment_s / baseline_s, 1),
        "active_accounts": segmented.active_accounts,
        "by_segment": segmented.by_segment,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    out = ROOT / "bench" / "results" / f"{date.today()}-foundation-{engine.dialect.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 - a benchmark reports on stdout
    print(f"written to {out}; database {make_url(url).render_as_string()}")  # noqa: T201


if __name__ == "__main__":
    main()
