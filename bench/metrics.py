"""Benchmark: success metrics over a large email_event table, against a same-process baseline.

    .venv/bin/python bench/metrics.py [--events 10000000] [--db URL]

Builds a synthetic campaign in SQL (set-based: INSERT ... SELECT over generate_series on
Postgres, a recursive CTE on SQLite; nothing row by row in Python): ``events / 8``
deliveries, two per contact, two contacts per account, and ``events`` SendGrid events
interleaved the way they arrive (every delivery's 'processed', then every 'delivered', ...).
Then it times ``compute_metrics`` against a plain ``SELECT count(*) FROM email_event`` run in
the same process (and, as a second reference, one ``GROUP BY delivery_id`` pass over the
events), and checks the computed counts against the ones the generator implies. Results go to
bench/results/<date>-metrics-<db>.json. A database given with --db is emptied first (every
Herald table truncated; a SQLite file replaced): never point it at one that matters.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import sys
import tempfile
import time
from dataclasses import dataclass
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from sqlalchemy import Date, DateTime, Engine, bindparam, text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from herald.config import load_config  # noqa: E402
from herald.db import get_engine, upgrade  # noqa: E402
from herald.report.metrics.compute import compute_metrics  # noqa: E402
from herald.testing.synthetic import empty_postgres  # noqa: E402

CAMPAIGN = "modular-migration-2027"
IN_TIME = datetime(2027, 3, 20, 12, 0, tzinfo=UTC)
LATE = datetime(2027, 4, 20, 12, 0, tzinfo=UTC)  # after as_of: must not count
SENT = {
    "announcement": datetime(2027, 2, 9, 10, 0, tzinfo=UTC),
    "deprecation": datetime(2027, 3, 16, 10, 0, tzinfo=UTC),
}
EVENTS_PER_DELIVERY = 8


@dataclass(frozen=True)
class Shape:
    """The synthetic campaign: sizes and the rules that place every row (see ``expected``)."""

    events: int
    as_of: date = date(2027, 4, 11)

    @property
    def deliveries(self) -> int:
        return -(-self.events // EVENTS_PER_DELIVERY)

    @property
    def contacts(self) -> int:
        return -(-self.deliveries // 2)

    @property
    def accounts(self) -> int:
        return -(-self.contacts // 2)

    def expected(self) -> dict[str, int]:
        """The counts the rules below imply, worked out without the database."""
        out = dict.fromkeys(
            ["sent", "delivered", "clicked", "hard", "spam", "unsub", "reached_accounts"], 0
        )
        deliveries, events = self.deliveries, self.events
        reached: set[int] = set()
        for d in range(1, deliveries + 1):
            if d % 25 == 1:  # failed
                continue
            out["sent"] += 1
            contact = (d - 1) % self.contacts + 1
            account = (contact - 1) // 2 + 1
            if account % 20 != 0:
                reached.add(account)
            if d % 10 == 9:  # its events come after as_of
                continue

            def has(slot: int, d: int = d) -> bool:
                return slot * deliveries + d - 1 < events

            out["delivered"] += has(1) or has(6)
            out["clicked"] += has(3) and d % 3 == 0
            if has(5):
                out["hard"] += d % 50 == 0 and d % 100 != 0
                out["spam"] += d % 1000 == 2
                out["unsub"] += d % 200 == 3 or d % 400 == 7
        out["reached_accounts"] = len(reached)
        out["active_accounts"] = self.accounts - self.accounts // 20
        return out


def _series(dialect: str, bound: str) -> str:
    if dialect == "postgresql":
        return f"generate_series(1, :{bound}) AS s(i)"
    return (
        f"(WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < :{bound}) "
        "SELECT i FROM n) AS s"
    )


def _json(dialect: str, expression: str) -> str:
    return f"CAST({expression} AS JSONB)" if dialect == "postgresql" else expression


MOMENT = DateTime(timezone=True)
# A second reference: one grouped pass over the events, the least any per-delivery answer reads
# (SQLite answers count(*) from its smallest index without reading a row).
GROUPED = (
    "SELECT count(*) FROM (SELECT delivery_id, count(*) AS n FROM email_event "
    "GROUP BY delivery_id) AS per_delivery"
)
ATTRIBUTES = """CASE WHEN i % 5 = 0 THEN '{"performance_focused": true}' ELSE '{}' END"""
RAW = """CASE WHEN k = 5 AND d % 100 = 0 THEN '{"type": "blocked"}'
    WHEN k = 5 AND d % 50 = 0 THEN '{"type": "bounce"}' ELSE '{}' END"""


def generate(engine: Engine, shape: Shape) -> dict[str, float]:
    """Insert the synthetic campaign into an empty database; seconds per table."""
    dialect = engine.dialect.name
    timings: dict[str, float] = {}
    params: dict[str, Any] = {
        "accounts": shape.accounts,
        "contacts": shape.contacts,
        "deliveries": shape.deliveries,
        "events": shape.events,
        "now": datetime(2027, 4, 11, 6, 0, tzinfo=UTC),
        "migrated_on": date(2027, 3, 1),
        "segmented_on": date(2027, 1, 5),
        "campaign": CAMPAIGN,
        "announcement": SENT["announcement"],
        "deprecation": SENT["deprecation"],
        "in_time": IN_TIME,
        "late": LATE,
    }
    types: dict[str, Any] = dict.fromkeys(
        ["now", "announcement", "deprecation", "in_time", "late"], MOMENT
    )
    types |= dict.fromkeys(["migrated_on", "segmented_on"], Date())
    attributes = _json(dialect, ATTRIBUTES)
    raw = _json(dialect, RAW)
    statements = {
        "account": f"""
            INSERT INTO account (id, external_id, name, tier, region, lifecycle,
                migration_state, migrated_on, attributes, created_at, updated_at)
            SELECT i, 'A' || CAST(i AS TEXT), 'Account ' || CAST(i AS TEXT), 'pro', 'na',
                CASE WHEN i % 20 = 0 THEN 'churned' ELSE 'active' END,
                CASE WHEN i % 4 = 0 THEN 'migrated' ELSE 'not_started' END,
                CASE WHEN i % 4 = 0 THEN :migrated_on END,
                {attributes},
                :now, :now
            FROM {_series(dialect, "accounts")}""",
        "contact": f"""
            INSERT INTO contact (id, account_id, email, role, locale, created_at, updated_at)
            SELECT i, (i - 1) / 2 + 1, 'c' || CAST(i AS TEXT) || '@example.com', 'technical',
                'en', :now, :now
            FROM {_series(dialect, "contacts")}""",
        "segment_assignment": f"""
            INSERT INTO segment_assignment (account_id, as_of, segment, rule, readiness,
                readiness_rule, assigned_at)
            SELECT i, :segmented_on,
                CASE i % 3 WHEN 0 THEN 'early_adopter' WHEN 1 THEN 'standard'
                    ELSE 'conservative' END,
                'bench', 'ready', 'bench', :now
            FROM {_series(dialect, "accounts")}
            WHERE i % 20 <> 0""",
        "delivery": f"""
            INSERT INTO delivery (id, campaign, message, contact_id, segment, role, locale,
                state, attempts, planned_at, sent_at, updated_at)
            SELECT i, :campaign,
                CASE WHEN (i - 1) / :contacts = 0 THEN 'announcement' ELSE 'deprecation' END,
                (i - 1) % :contacts + 1, 'standard', 'technical', 'en',
                CASE WHEN i % 25 = 1 THEN 'failed' ELSE 'accepted' END, 1, :now,
                CASE WHEN i % 25 = 1 THEN NULL
                     WHEN (i - 1) / :contacts = 0 THEN :announcement ELSE :deprecation END,
                :now
            FROM {_series(dialect, "deliveries")}""",
        "email_event": f"""
            INSERT INTO email_event (sg_event_id, event, email, occurred_at, delivery_id, raw,
                received_at)
            SELECT 'e' || CAST(i AS TEXT),
                CASE k
                    WHEN 0 THEN 'processed' WHEN 1 THEN 'delivered' WHEN 2 THEN 'open'
                    WHEN 3 THEN CASE WHEN d % 3 = 0 THEN 'click' ELSE 'open' END
                    WHEN 4 THEN 'deferred'
                    WHEN 5 THEN CASE
                        WHEN d % 50 = 0 THEN 'bounce'
                        WHEN d % 1000 = 2 THEN 'spamreport'
                        WHEN d % 200 = 3 THEN 'unsubscribe'
                        WHEN d % 400 = 7 THEN 'group_unsubscribe'
                        ELSE 'open' END
                    WHEN 6 THEN 'delivered' ELSE 'open' END,
                'c' || CAST((d - 1) % :contacts + 1 AS TEXT) || '@example.com',
                CASE WHEN d % 10 = 9 THEN :late ELSE :in_time END,
                d,
                {raw},
                :now
            FROM (SELECT i, (i - 1) % :deliveries + 1 AS d, (i - 1) / :deliveries AS k
                  FROM {_series(dialect, "events")}) AS ev""",
    }
    for name, sql in statements.items():
        used = {key: value for key, value in params.items() if f":{key}" in sql}
        statement = text(sql).bindparams(
            *(bindparam(key, type_=types[key]) for key in used if key in types)
        )
        started = time.perf_counter()
        with engine.begin() as conn:
            conn.execute(statement.bindparams(**used))
        timings[name] = round(time.perf_counter() - started, 2)
    with engine.begin() as conn:
        started = time.perf_counter()
        conn.execute(text("ANALYZE"))
        timings["analyze"] = round(time.perf_counter() - started, 2)
    return timings


def _timed(call: Any) -> tuple[float, Any]:
    started = time.perf_counter()
    value = call()
    return time.perf_counter() - started, value


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=10_000_000)
    parser.add_argument("--db", default="", help="database URL (default: a fresh SQLite file)")
    parser.add_argument("--runs", type=int, default=3, help="timed runs of each step")
    args = parser.parse_args()

    if args.db:
        url = args.db
    else:
        url = f"sqlite:///{Path(tempfile.mkdtemp(prefix='herald-bench-metrics-')) / 'herald.db'}"
    target = make_url(url)
    sqlite_file = target.database if target.get_backend_name() == "sqlite" else None
    if sqlite_file:
        # A new file rather than a DELETE of 10M events: the triggers that keep the delivery
        # event summary would work each deleted event's delivery out again.
        for suffix in ("", "-wal", "-shm"):
            Path(sqlite_file + suffix).unlink(missing_ok=True)
    upgrade(url)
    engine = get_engine(url)
    if not sqlite_file:
        empty_postgres(url)
    shape = Shape(events=args.events)

    load_s, loaded = _timed(lambda: generate(engine, shape))
    config = load_config(ROOT / "config")

    def count() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text("SELECT count(*) FROM email_event")).scalar_one())

    def grouped() -> int:
        with engine.connect() as conn:
            return int(conn.execute(text(GROUPED)).scalar_one())

    counted = count()  # warm the cache: both sides run warm
    assert counted == shape.events, (counted, shape.events)
    baseline = [_timed(count)[0] for _ in range(args.runs)]
    grouped_baseline = [_timed(grouped)[0] for _ in range(args.runs)]
    runs = []
    result = None
    for _ in range(args.runs):
        seconds, result = _timed(lambda: compute_metrics(engine, config=config, as_of=shape.as_of))
        runs.append(seconds)
    assert result is not None

    expected = shape.expected()
    got = {
        "sent": result.get("hard_bounce_rate").denominator,
        "delivered": sum(row.delivered for row in result.funnel),
        "clicked": sum(row.clicked for row in result.funnel),
        "hard": result.get("hard_bounce_rate").numerator,
        "spam": result.get("spam_complaint_rate").numerator,
        "unsub": result.get("unsubscribe_rate").numerator,
        "reached_accounts": result.get("message_reach").numerator,
        "active_accounts": result.get("message_reach").denominator,
    }
    assert got == expected, (got, expected)

    best, base = min(runs), min(baseline)
    report = {
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "db": engine.dialect.name,
        "events": shape.events,
        "deliveries": shape.deliveries,
        "contacts": shape.contacts,
        "accounts": shape.accounts,
        "load_s": round(load_s, 1),
        "load_by_table_s": loaded,
        "compute_metrics_s": [round(s, 2) for s in runs],
        "count_star_baseline_s": [round(s, 3) for s in baseline],
        "ratio_best_to_baseline": round(best / base, 1),
        "grouped_pass_baseline_s": [round(s, 3) for s in grouped_baseline],
        "ratio_best_to_grouped_pass": round(best / min(grouped_baseline), 1),
        "events_per_s": round(shape.events / best),
        "checked_counts": got,
        "peak_rss_mb": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, 1),
        # The machine is shared: the ratios are the figures, the load says how busy it was.
        "load_average": [round(x, 2) for x in os.getloadavg()],
    }
    out = ROOT / "bench" / "results" / f"{date.today()}-metrics-{engine.dialect.name}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
    print(json.dumps(report, indent=2))  # noqa: T201 - a benchmark reports on stdout
    print(f"written to {out}; database {make_url(url).render_as_string()}")  # noqa: T201


if __name__ == "__main__":
    main()
