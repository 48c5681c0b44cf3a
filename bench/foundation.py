"""Benchmark: customer import and segmentation at scale, each against a same-process baseline.

    .venv/bin/python bench/foundation.py --accounts 1000000 --contacts-per-account 1 [--db URL]

Baselines (the floor for the same input, run in this process on this machine):
- import: one pass that only reads and splits the CSV files (no checks, no database), the
  best of two, taken just before the import and again just before the re-import of the
  same files (every row unchanged); the load average is recorded before and after;
- segmentation: the same write without rules: the day's DELETE and the INSERT ... SELECT of
  the same active accounts into ``segment_assignment`` (same columns, same indexes and
  foreign key), each outcome a constant; a bare INSERT ... SELECT into a temporary table with
  no index (the floor of reading the accounts) is reported beside it.
Results go to bench/results/<date>-foundation-<db>.json.

``--segmentation-only`` skips the import: the same demo accounts are written to ``account``
directly (not timed), segmentation is timed against its baseline ``--runs`` times, and the
results go to bench/results/<date>-segmentation-<db>.json.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import tempfile
import time
from datetime import UTC, date, datetime
from pathlib import Path

from sqlalchemy import Date, DateTime, Engine, bindparam, insert, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herald.config import SegmentsConfig, load_config  # noqa: E402
from herald.customers.importer import import_customers  # noqa: E402
from herald.customers.segmentation import assign_segments  # noqa: E402
from herald.db import get_engine, upgrade  # noqa: E402
from herald.models import ACCOUNT, utcnow  # noqa: E402
from herald.sandbox.demo import write_demo_base  # noqa: E402

SEGMENTED_ON = date(2026, 11, 24)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def read_only(*paths: Path) -> int:
    rows = 0
    for path in paths:
        with path.open(newline="", encoding="utf-8-sig") as handle:
            for _ in csv.reader(handle):
                rows += 1
    return rows


def _demo_value(value: str) -> bool | int | float | str | None:
    """An ``attr.*`` cell as the importer types it (the demo's cells are all plain)."""
    if not value:
        return None
    if value.lower() in {"true", "false"}:
        return value.lower() == "true"
    for kind in (int, float):
        try:
            return kind(value)
        except ValueError:
            pass
    return value


def seed_accounts(engine: Engine, accounts_csv: Path, *, chunk: int = 20_000) -> int:
    """Write the demo accounts to ``account`` as the import stores them, without its checks."""
    now = utcnow()
    written = 0
    with accounts_csv.open(newline="", encoding="utf-8") as handle, engine.begin() as conn:
        rows = csv.DictReader(handle)
        batch: list[dict[str, object]] = []
        for row in rows:
            attributes = {
                name.removeprefix("attr."): typed
                for name, cell in sorted(row.items())
                if name.startswith("attr.") and (typed := _demo_value(cell)) is not None
            }
            state = row["migration_state"] or "not_started"
            migrated_on = date.fromisoformat(row["migrated_on"]) if row["migrated_on"] else None
            batch.append(
                {
                    "external_id": row["external_id"],
                    "name": row["name"],
                    "tier": row["tier"].lower(),
                    "region": row["region"].lower(),
                    "industry": row["industry"].lower() or None,
                    "lifecycle": row["lifecycle"] or "active",
                    "migration_state": state,
                    "migrated_on": migrated_on,
                    "crm_migration_state": state,
                    "crm_migrated_on": migrated_on,
                    "attributes": attributes,
                    "created_at": now,
                    "updated_at": now,
                }
            )
            if len(batch) == chunk:
                conn.execute(insert(ACCOUNT), batch)
                written += len(batch)
                batch = []
        if batch:
            conn.execute(insert(ACCOUNT), batch)
            written += len(batch)
        conn.execute(text("ANALYZE"))
    return written


def _clear_day(engine: Engine) -> None:
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM segment_assignment WHERE as_of = :day"), {"day": SEGMENTED_ON}
        )


def _rule_free(engine: Engine) -> None:
    """The same write as segmentation (the day's DELETE, then every active account into
    ``segment_assignment``), with constants where the rules' outcomes go."""
    with engine.begin() as conn:
        conn.execute(
            text("DELETE FROM segment_assignment WHERE as_of = :day"), {"day": SEGMENTED_ON}
        )
        conn.execute(
            text(
                "INSERT INTO segment_assignment (account_id, as_of, segment, rule, readiness, "
                "readiness_rule, assigned_at) SELECT id, :day, 'standard', 'default', "
                "'not_ready', 'default', :now FROM account WHERE lifecycle = 'active'"
            ).bindparams(
                bindparam("day", type_=Date()), bindparam("now", type_=DateTime(timezone=True))
            ),
            {"day": SEGMENTED_ON, "now": utcnow()},
        )


def _bare_floor(engine: Engine) -> None:
    """Reading the active accounts into an unindexed temporary table: the floor, not the write."""
    with engine.begin() as conn:
        conn.execute(
            text("CREATE TEMPORARY TABLE bench_baseline (account_id INTEGER, segment TEXT)")
        )
        conn.execute(
            text(
                "INSERT INTO bench_baseline SELECT id, 'standard' FROM account "
                "WHERE lifecycle = 'active'"
            )
        )
        conn.execute(text("DROP TABLE bench_baseline"))


def time_segmentation(engine: Engine, config: SegmentsConfig, *, runs: int) -> dict[str, object]:
    """Segmentation against the rule-free write, ``runs`` times each, interleaved; every run
    starts from the same state (the day's rows removed, untimed)."""
    seconds: dict[str, list[float]] = {"segment": [], "rule_free": [], "floor": []}
    segmented = None
    for _ in range(runs):
        for name, step in (
            ("rule_free", lambda: _rule_free(engine)),
            ("floor", lambda: _bare_floor(engine)),
            ("segment", lambda: assign_segments(engine=engine, config=config, as_of=SEGMENTED_ON)),
        ):
            _clear_day(engine)
            started = time.perf_counter()
            outcome = step()
            seconds[name].append(time.perf_counter() - started)
            if name == "segment":
                segmented = outcome
    assert segmented is not None and segmented.assigned == segmented.active_accounts
    best = {name: min(values) for name, values in seconds.items()}
    return {
        "segment_s": [round(s, 3) for s in seconds["segment"]],
        "segment_baseline_s": [round(s, 3) for s in seconds["rule_free"]],
        "segment_vs_baseline": round(best["segment"] / best["rule_free"], 2),
        "segment_floor_s": [round(s, 3) for s in seconds["floor"]],
        "segment_vs_floor": round(best["segment"] / best["floor"], 1),
        "active_accounts": segmented.active_accounts,
        "by_segment": segmented.by_segment,
    }


def segmentation_only(engine: Engine, *, accounts: int, runs: int, work: Path) -> dict[str, object]:
    """Seed the demo accounts directly and time segmentation alone against its baseline."""
    with engine.begin() as conn:
        if engine.dialect.name == "postgresql":
            conn.execute(text("TRUNCATE account RESTART IDENTITY CASCADE"))
        else:
            conn.execute(text("DELETE FROM segment_assignment"))
            conn.execute(text("DELETE FROM account"))
    files = write_demo_base(work / "base", accounts=accounts, contacts_per_account=1)
    started = time.perf_counter()
    seeded = seed_accounts(engine, files.accounts_csv)
    seed_s = time.perf_counter() - started
    config = load_config(ROOT / "config")
    return {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "db": engine.dialect.name,
        "accounts": seeded,
        "seed_s_untimed_step": round(seed_s, 1),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        **time_segmentation(engine, config.segments, runs=runs),
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--accounts", type=int, default=100_000)
    parser.add_argument("--contacts-per-account", type=int, default=1)
    parser.add_argument("--db", default="", help="database URL (default: a fresh SQLite file)")
    parser.add_argument(
        "--segmentation-only", action="store_true", help="seed accounts directly, no import"
    )
    parser.add_argument("--runs", type=int, default=3, help="timed segmentation runs")
    args = parser.parse_args()

    work = Path(tempfile.mkdtemp(prefix="herald-bench-"))
    url = args.db or f"sqlite:///{work / 'herald.db'}"
    upgrade(url)
    engine = get_engine(url)
    if args.segmentation_only:
        only = segmentation_only(engine, accounts=args.accounts, runs=args.runs, work=work)
        _write(only, f"{date.today()}-segmentation-{engine.dialect.name}.json", url)
        return
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            conn.execute(text("TRUNCATE account RESTART IDENTITY CASCADE"))

    started = time.perf_counter()
    files = write_demo_base(
        work / "base", accounts=args.accounts, contacts_per_account=args.contacts_per_account
    )
    generate_s = time.perf_counter() - started

    load_at_start = [round(x, 2) for x in os.getloadavg()]
    read_only_s = _read_only_s(files.accounts_csv, files.contacts_csv)
    started = time.perf_counter()
    result = import_customers(
        engine=engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=work / "rejects",
    )
    import_s = time.perf_counter() - started
    assert result.rejected == 0, result.first_rejects

    # The same files again: every row unchanged. Its own baseline, just before it (the
    # machine is shared: a ratio to a baseline taken apart would measure the neighbours).
    reread_only_s = _read_only_s(files.accounts_csv, files.contacts_csv)
    started = time.perf_counter()
    again = import_customers(
        engine=engine,
        accounts_csv=files.accounts_csv,
        contacts_csv=files.contacts_csv,
        rejects_dir=work / "rejects",
    )
    reimport_s = time.perf_counter() - started
    assert again.accounts.inserted == again.accounts.updated == 0
    assert (again.accounts.unchanged, again.contacts.unchanged) == (files.accounts, files.contacts)
    load_after_import = [round(x, 2) for x in os.getloadavg()]
    rows = files.accounts + files.contacts

    config = load_config(ROOT / "config")
    segmentation = time_segmentation(engine, config.segments, runs=args.runs)

    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "db": engine.dialect.name,
        "accounts": files.accounts,
        "contacts": files.contacts,
        "generate_s": round(generate_s, 2),
        "load_average_before_import": load_at_start,
        "load_average_after_reimport": load_after_import,
        "import_s": round(import_s, 2),
        "import_rows_per_s": round(rows / import_s),
        "import_read_only_baseline_s": round(read_only_s, 2),
        "import_vs_read_only": round(import_s / read_only_s, 1),
        "reimport_s": round(reimport_s, 2),
        "reimport_rows_per_s": round(rows / reimport_s),
        "reimport_read_only_baseline_s": round(reread_only_s, 2),
        "reimport_vs_read_only": round(reimport_s / reread_only_s, 1),
        **segmentation,
        "peak_rss_mb": round(peak_rss_mb(), 1),
    }
    _write(report, f"{date.today()}-foundation-{engine.dialect.name}.json", url)


def _read_only_s(*paths: Path) -> float:
    """The import's baseline: the best of two read-only passes over the files, in seconds."""
    seconds = []
    for _ in range(2):
        started = time.perf_counter()
        read_only(*paths)
        seconds.append(time.perf_counter() - started)
    return min(seconds)


def _write(report: dict[str, object], name: str, url: str) -> None:
    out = ROOT / "bench" / "results" / name
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 - a benchmark reports on stdout
    print(f"written to {out}; database {make_url(url).render_as_string()}")  # noqa: T201


if __name__ == "__main__":
    main()
