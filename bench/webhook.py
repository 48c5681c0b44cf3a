"""Benchmark: Event Webhook ingest, signatures included, with the receiver pinned to one core.

    .venv/bin/python bench/webhook.py [--batches 60] [--events 1000] [--db URL]

`herald webhooks serve` runs in its own process under `taskset -c 0` (one core); this
process (on another core) posts signed batches of unique events, as SendGrid does, one
request at a time, and waits until every stored batch is processed. Reported: events/s from
the first post to the last batch processed, and the same figure for a same-process baseline
on one core that only verifies the signatures and parses the JSON (the floor, no HTTP, no
database). Results go to bench/results/<date>-webhook-<db>.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import httpx
from sqlalchemy import text
from sqlalchemy.engine import make_url

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from herald.db import get_engine, upgrade  # noqa: E402
from herald.telemetry.events import parse_events  # noqa: E402
from herald.telemetry.webhook import PATH, SIGNATURE_HEADER, public_key, verify  # noqa: E402
from herald.telemetry.webhook_batches import unprocessed_batches  # noqa: E402
from herald.testing.event_webhook import Signer  # noqa: E402
from herald.testing.processes import free_port, served  # noqa: E402

KINDS = ("processed", "delivered", "open", "click", "deferred", "bounce", "unsubscribe")


def batches(count: int, size: int) -> list[bytes]:
    now = int(time.time())
    out = []
    for b in range(count):
        events = [
            {
                "email": f"user{b}-{n}@example.com",
                "event": KINDS[n % len(KINDS)],
                "sg_event_id": f"bench-{b}-{n}",
                "sg_message_id": f"m{b}.filter{n}",
                "timestamp": now,
                "herald_key": f"bench/announcement/{b * size + n + 1}",
                "category": ["bench", "announcement"],
            }
            for n in range(size)
        ]
        out.append(json.dumps(events).encode())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--batches", type=int, default=60)
    parser.add_argument("--events", type=int, default=1000)
    parser.add_argument("--db", default="", help="database URL (default: a fresh SQLite file)")
    args = parser.parse_args()

    workdir = Path(tempfile.mkdtemp(prefix="herald-bench-webhook-"))
    url = args.db or f"sqlite:///{workdir / 'herald.db'}"
    upgrade(url)
    with get_engine(url).begin() as conn:  # a rerun against Postgres starts empty
        conn.execute(text("DELETE FROM email_event"))
        conn.execute(text("DELETE FROM webhook_batch"))
        conn.execute(text("DELETE FROM suppression"))
    signer = Signer()
    now = int(time.time())
    signed = [(body, signer.headers(body, now)) for body in batches(args.batches, args.events)]
    stamp = str(now)
    total = args.batches * args.events

    # Baseline: verify and parse only, one core, this process.
    os.sched_setaffinity(0, {0})
    key = public_key(signer.public)
    started = time.perf_counter()
    for body, headers in signed:
        assert verify(key, body, headers[SIGNATURE_HEADER], stamp)
        parse_events(body)
    floor_seconds = time.perf_counter() - started
    os.sched_setaffinity(0, set(range(os.cpu_count() or 1)) - {0} or {0})

    port = free_port()
    env = dict(
        os.environ,
        HERALD_DATABASE_URL=url,
        HERALD_WEBHOOK_PUBLIC_KEY=signer.public,
        HERALD_VAR_DIR=str(workdir),
        HERALD_CONFIG_DIR=str(ROOT / "config"),
    )
    herald = [sys.executable, "-m", "herald.cli", "webhooks", "serve", "--port", str(port)]
    taskset = shutil.which("taskset")
    base = f"http://127.0.0.1:{port}"
    with served(
        [taskset, "-c", "0", *herald] if taskset else herald,
        health=f"{base}/health",
        what="the webhook receiver",
        env=env,
        cwd=ROOT,
        output=None,  # its log on this terminal
    ):
        engine = get_engine(url)
        with httpx.Client(base_url=base, timeout=60) as client:
            started = time.perf_counter()
            for body, headers in signed:
                client.post(PATH, content=body, headers=headers).raise_for_status()
            answered = time.perf_counter() - started
            while unprocessed_batches(engine):
                time.sleep(0.02)
            processed = time.perf_counter() - started
        with engine.connect() as conn:
            stored = conn.execute(text("SELECT count(*) FROM email_event")).scalar_one()
    assert stored == total, f"stored {stored} of {total}"
    result = {
        "date": datetime.now(UTC).date().isoformat(),
        "db": make_url(url).get_backend_name(),
        "batches": args.batches,
        "events_per_batch": args.events,
        "events": total,
        "receiver_cores": 1,
        "answered_seconds": round(answered, 3),
        "processed_seconds": round(processed, 3),
        "events_per_second": round(total / processed),
        "events_per_second_answered": round(total / answered),
        "floor_events_per_second": round(total / floor_seconds),
        "ratio_to_floor": round((total / processed) / (total / floor_seconds), 3),
    }
    out = ROOT / "bench" / "results" / f"{result['date']}-webhook-{result['db']}.json"
    out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
    sys.stdout.write(json.dumps(result, indent=2) + "\n")
    shutil.rmtree(workdir, ignore_errors=True)


if __name__ == "__main__":
    main()
