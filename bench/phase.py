"""Benchmark: one phase end to end over N contacts, against the floor and the naive way.

    make bench                                   # 1,000,000 contacts, SQLite and Postgres
    .venv/bin/python bench/phase.py [--contacts N] [--small N] [--db sqlite|postgres|both]
                                    [--latency SECONDS] [--naive N] [--postgres URL]
                                    [--in-flight N] [--validate-every N]

Three ways to get the same phase out, in one process tree and one run, each part in a child
process of its own (so each peak RSS is its own):

- **herald**: the `send-phase` flow (announcement, `send`, windows off) on a synthetic base
  of N contacts: audience, ledger planning, rendering, requests to the project's fake
  SendGrid on 127.0.0.1 (its own process; a response latency of 50 ms by default; it checks
  one body in a hundred against SendGrid's schema, the first included, ``--validate-every``:
  a check costs it 0.1-0.3 s of CPU per 1,000-recipient body, taken from the cores being
  measured; the tests check every body, and the floor compares every 50th body with
  Herald's byte for byte), results recorded. Then the same flow again: nothing is left to send
  (the rerun).
- **floor** (the raw floor): the same rows read (by primary-key ranges, with their contact
  and account), the same request bytes built by hand as plain dicts and serialized, and the
  same ledger writes (each batch's rows claimed and recorded accepted, with its batch row),
  in one transaction a batch: no checks, no Prefect, no network. Every 50th body is
  compared byte for byte with the one Herald's own code builds from the same rows.
- **naive**: one Prefect task and one official-client ``send()`` per recipient against the
  same fake, on ``--naive`` contacts (2,000), extrapolated as recipients per second.

Herald also runs at ``--small`` contacts (100,000) to show memory flat as N grows. Prefect's
share of Herald's wall time is measured by timing every task and the flow body from inside
(the rest of the wall time is Prefect's machinery). Results: ``bench/results/<date>.json``.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

KEY = "SG.bench-key"
UNSUBSCRIBE_SECRET = "bench-unsubscribe-secret"
AS_OF = date(2027, 2, 9)  # the announcement's day
PHASE = "announcement"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"

from herald.models import DELIVERY  # noqa: E402
from herald.testing.synthetic import copy_config, reset_sends, seed_base, temporary_database  # noqa: E402


def say(text: str) -> None:
    sys.stdout.write(text + "\n")
    sys.stdout.flush()


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


# --------------------------------------------------------------------------- the base


# --------------------------------------------------------------------------- parts


def part_floor(url: str, config_dir: str) -> dict[str, Any]:
    """The raw floor: the same rows read, the same request bytes and the same ledger writes,
    by hand and nothing around them (no checks, no claims' locking, no Prefect, no network).

    Rows are read by primary-key ranges with their contact and account; each personalization
    is built as a plain dict (the token, the List-Unsubscribe headers, the substitutions);
    only the batch-wide part of a body (sender, sections, content, categories) comes from
    the transport, once per batch. Every 50th body (the first included) is compared byte
    for byte with the body Herald's own code builds from the same rows (outside the timed
    work): the floor does the same work, or the run stops. Each batch's rows are claimed
    and recorded accepted, with their batch row, in one transaction.
    """
    import uuid

    import orjson
    from markupsafe import escape
    from sqlalchemy import func, insert, select, update

    from herald.config import load_config
    from herald.db import get_engine
    from herald.delivery import ledger, planning
    from herald.delivery.messages import RECIPIENT_FIELDS, Variant
    from herald.delivery.recovery import start_worker
    from herald.delivery.sender import PhaseSender, Renderer
    from herald.delivery.transports import OutgoingBatch
    from herald.delivery.transports.sendgrid import (
        BODY_HTML,
        BODY_TEXT,
        SendGridTransport,
        serialize,
    )
    from herald.models import ACCOUNT, CONTACT, SEND_BATCH, DeliveryState
    from herald.settings import get_settings
    from herald.unsubscribe.links import MAILTO_SUBJECT, ONE_CLICK, UnsubscribeLinks
    from herald.unsubscribe.tokens import Subscriber

    os.environ.update({"HERALD_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET, "SENDGRID_API_KEY": KEY})
    from pydantic import SecretStr

    config = load_config(Path(config_dir))
    engine = get_engine(url)
    transport = SendGridTransport(SecretStr(KEY), "http://127.0.0.1:9", config.campaign.sending)
    renderer = Renderer(config, ROOT / "templates")
    links = UnsubscribeLinks.configured(get_settings(), config.campaign)
    signer = links.signer
    unsubscribe = config.campaign.unsubscribe
    base = str(unsubscribe.url).rstrip("/")
    mailto = f"<mailto:{unsubscribe.mailto}?subject={MAILTO_SUBJECT}" if unsubscribe.mailto else ""
    campaign = config.campaign.id
    default_locale = config.campaign.locales[0]
    size = config.campaign.sending.batch_size
    d = DELIVERY

    started = time.perf_counter()
    planned = planning.plan(engine, config=config, phase=PHASE, as_of=AS_OF).planned
    plan_seconds = time.perf_counter() - started
    worker = start_worker(engine, campaign=campaign, message=PHASE, transport="floor")
    # Herald's own code, for the byte-for-byte comparison only.
    herald = PhaseSender(
        engine=engine,
        config=config,
        phase=PHASE,
        worker=worker,
        transport=transport,
        renderer=renderer,
        window=False,
        links=links,
    )
    checked, checking = 0, 0.0
    sent, requests, body_bytes = 0, 0, 0
    with engine.connect() as conn:
        low, high = conn.execute(
            select(func.min(d.c.id), func.max(d.c.id)).where(
                d.c.campaign == campaign, d.c.message == PHASE
            )
        ).one()
    for start in range(low or 0, (high or -1) + 1, size):
        batch_id = str(uuid.uuid4())
        with engine.begin() as conn:
            rows = conn.execute(
                select(
                    d.c.id,
                    d.c.contact_id,
                    d.c.segment,
                    d.c.role,
                    d.c.locale,
                    CONTACT.c.email,
                    CONTACT.c.name,
                    ACCOUNT.c.name,
                    d.c.timezone,
                )
                .join(CONTACT, CONTACT.c.id == d.c.contact_id)
                .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
                .where(
                    d.c.id >= start,
                    d.c.id < start + size,
                    d.c.campaign == campaign,
                    d.c.message == PHASE,
                    d.c.state == DeliveryState.PLANNED.value,
                )
                .order_by(d.c.id)
            ).all()
            if not rows:
                continue
            now = datetime.now(UTC)
            conn.execute(
                insert(SEND_BATCH).values(
                    id=batch_id,
                    worker_id=worker.id,
                    campaign=campaign,
                    message=PHASE,
                    state="requesting",
                    recipients=len(rows),
                    requests=0,
                    created_at=now,
                )
            )
            conn.execute(
                update(d)
                .where(d.c.id >= start, d.c.id < start + size)
                .where(d.c.campaign == campaign, d.c.message == PHASE)
                .where(d.c.state == DeliveryState.PLANNED.value)
                .values(
                    state=DeliveryState.SENDING.value,
                    batch_id=batch_id,
                    claimed_at=now,
                    attempts=d.c.attempts + 1,
                    updated_at=now,
                )
            )
            # The body: each variant's sections once, each recipient a plain dict.
            variants: dict[Variant, Any] = {}
            sections: dict[Variant, tuple[str, str, Any]] = {}
            personalizations = []
            for row in rows:
                variant = Variant(PHASE, row[2], row[3], row[4] or default_locale)
                found = sections.get(variant)
                if found is None:
                    rendered = variants[variant] = renderer(variant)
                    index = len(sections)
                    found = sections[variant] = (
                        f"-section_{index}_html-",
                        f"-section_{index}_text-",
                        rendered,
                    )
                html_key, text_key, rendered = found
                token = signer.make(Subscriber(campaign, row[1], PHASE))
                link = f"{base}/{token}"
                name = (row[6] or "").strip()
                values = {
                    "greeting": rendered.greetings.greet(name),
                    "name": name,
                    "email": row[5],
                    "account_name": row[7],
                    "unsubscribe_url": link,
                }
                substitutions = {BODY_HTML: html_key, BODY_TEXT: text_key}
                for field in RECIPIENT_FIELDS:
                    substitutions[f"-{field}_html-"] = str(escape(values[field]))
                    substitutions[f"-{field}_text-"] = values[field]
                personalizations.append(
                    {
                        "to": [{"name": row[6], "email": row[5]} if row[6] else {"email": row[5]}],
                        "subject": rendered.subject,
                        "headers": {
                            "List-Unsubscribe": f"<{link}>, {mailto}{token}>"
                            if mailto
                            else f"<{link}>",
                            "List-Unsubscribe-Post": ONE_CLICK,
                            "Content-Language": rendered.language,
                        },
                        "substitutions": substitutions,
                        "custom_args": {
                            "herald_key": f"{campaign}/{PHASE}/{row[1]}",
                            "herald_batch": batch_id,
                        },
                    }
                )
            outline = OutgoingBatch(
                batch_id=batch_id,
                campaign=campaign,
                message=PHASE,
                sender=config.campaign.sender,
                variants=variants,
                recipients=[],
                categories=[campaign, PHASE],
            )
            body = transport._body(outline, [])  # the batch-wide part: sender, sections, ...
            body["personalizations"] = personalizations
            data = orjson.dumps(body)  # what the transport sends: orjson's bytes
            body_bytes += len(data)
            if requests % 50 == 0:
                began = time.perf_counter()
                claim = ledger.Claim(batch_id, [ledger.ClaimedRow(*row) for row in rows])
                theirs = serialize(transport.prepare(herald._outgoing(claim)).payload)
                if theirs != data:
                    raise SystemExit(f"the floor's body {requests} is not Herald's")
                checked += 1
                checking += time.perf_counter() - began
            provider_id = f"floor-{requests}"
            conn.execute(
                update(d)
                .where(d.c.batch_id == batch_id, d.c.state == DeliveryState.SENDING.value)
                .where(d.c.id >= start, d.c.id < start + size)  # as Herald finds a batch's rows
                .values(
                    state=DeliveryState.ACCEPTED.value,
                    provider_message_id=provider_id,
                    sent_at=now,
                    error=None,
                    updated_at=now,
                )
            )
            conn.execute(
                update(SEND_BATCH)
                .where(SEND_BATCH.c.id == batch_id)
                .values(
                    state="accepted",
                    requests=1,
                    http_status=202,
                    provider_message_id=provider_id,
                    finished_at=now,
                )
            )
            sent += len(rows)
            requests += 1
    wall = time.perf_counter() - started - checking
    return {
        "wall_s": wall,
        "recipients": sent,
        "planned": planned,
        "rps": sent / wall,
        "requests": requests,
        "request_mb": body_bytes / 1e6,
        "plan_s": plan_seconds,
        "bodies_compared": checked,
        "peak_rss_mb": peak_rss_mb(),
    }


class _Clock:
    """Prefect's machinery, timed from inside a flow run.

    Every task's function and Prefect's ``run_task_sync`` (which runs each task run, called
    directly or in the task runner's threads) are wrapped: a task run's overhead is its wall
    time minus its function's, in the same thread. The flow's own overhead is the call's wall
    time minus its function's. Overheads of task runs in parallel threads are added as if
    they were serial: the share is an upper bound.
    """

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.local = threading.local()
        self.fn_time: dict[str, float] = {}
        self.task_overhead = 0.0
        self.task_runs = 0

    def wrap_fn(self, name: str, fn: Callable[..., Any]) -> Callable[..., Any]:
        @functools.wraps(fn)  # the same signature: Prefect maps parameters by name
        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent = time.perf_counter() - started
                self.local.fn = getattr(self.local, "fn", 0.0) + spent
                with self.lock:
                    self.fn_time[name] = self.fn_time.get(name, 0.0) + spent

        return timed

    def wrap_run(self, run: Callable[..., Any]) -> Callable[..., Any]:
        def timed(*args: Any, **kwargs: Any) -> Any:
            self.local.fn = 0.0
            started = time.perf_counter()
            try:
                return run(*args, **kwargs)
            finally:
                overhead = time.perf_counter() - started - self.local.fn
                with self.lock:
                    self.task_overhead += overhead
                    self.task_runs += 1

        return timed


def part_herald(url: str, fake_url: str, config_dir: str) -> dict[str, Any]:
    """The send-phase flow, timed from outside and from inside."""
    os.environ.update(
        {
            "HERALD_DATABASE_URL": url,
            "HERALD_CONFIG_DIR": config_dir,
            "HERALD_TRANSPORT": "sendgrid",
            "HERALD_SENDGRID_API_HOST": fake_url,
            "SENDGRID_API_KEY": KEY,
            "HERALD_UNSUBSCRIBE_SECRET": UNSUBSCRIBE_SECRET,
        }
    )
    import prefect.task_engine
    import prefect.tasks
    from prefect import flow

    import flows.send_phase as module
    import tasks.common
    import tasks.delivery

    @flow(name="bench-warm-up")
    def warm_up() -> None:  # starts the ephemeral server before anything is timed
        return None

    warm_up()
    clock = _Clock()
    for owner in (tasks.delivery, tasks.common, module):
        for name, value in vars(owner).items():
            if isinstance(value, prefect.tasks.Task) and not getattr(value, "_bench", False):
                value.fn = clock.wrap_fn(f"task:{name}", value.fn)
                value._bench = True  # type: ignore[attr-defined]
    prefect.task_engine.run_task_sync = clock.wrap_run(prefect.task_engine.run_task_sync)  # type: ignore[assignment]
    send_phase = module.send_phase
    body = send_phase.fn
    flow_fn = {"s": 0.0}

    def timed_body(*args: Any, **kwargs: Any) -> Any:
        started = time.perf_counter()
        try:
            return body(*args, **kwargs)
        finally:
            flow_fn["s"] += time.perf_counter() - started

    send_phase.fn = timed_body
    params: dict[str, Any] = {"phase": PHASE, "as_of": AS_OF, "send": True, "window": False}

    # As `herald phase send` runs it: without Prefect's heartbeat thread, whose stop costs up
    # to a second per run (herald.cli.common.flow_run_here).
    from herald.cli.common import flow_run_here

    started = time.perf_counter()
    with flow_run_here():
        summary = send_phase(**params)
    wall = time.perf_counter() - started
    prefect_s = (wall - flow_fn["s"]) + clock.task_overhead
    plan_s = clock.fn_time.get("task:plan_ledger_task", 0.0)
    task_runs = clock.task_runs
    task_fn = dict(clock.fn_time)

    clock.fn_time.clear()
    started = time.perf_counter()
    with flow_run_here():
        rerun = send_phase(**params)
    rerun_wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "recipients": summary.delivery.accepted,
        "planned": summary.planned_new,
        "rps": summary.delivery.accepted / wall,
        "requests": summary.delivery.requests,
        "failed": summary.delivery.failed,
        "unknown": summary.delivery.unknown,
        "plan_s": plan_s,
        "prefect_share": prefect_s / wall,
        "prefect_s": prefect_s,
        "task_runs": task_runs,
        # Seconds inside each task's function (the batches' overlap: their sum exceeds wall).
        "task_fn_s": {name: round(spent, 3) for name, spent in sorted(task_fn.items())},
        "rerun_s": rerun_wall,
        "rerun_task_fn_s": {name: round(spent, 3) for name, spent in sorted(clock.fn_time.items())},
        "rerun_sent": rerun.delivery.accepted if rerun.delivery else 0,
        "rerun_plan_reused": rerun.plan_reused,
        "peak_rss_mb": peak_rss_mb(),
    }


def part_naive(url: str, fake_url: str, config_dir: str, contacts: int) -> dict[str, Any]:
    """One task and one official-client send() per recipient, rendered per recipient."""
    from prefect import flow, task
    from prefect.cache_policies import NO_CACHE
    from sendgrid import SendGridAPIClient
    from sendgrid.helpers.mail import Mail
    from sqlalchemy import select

    from herald.config import load_config
    from herald.db import get_engine
    from herald.delivery.audience import audience
    from herald.delivery.messages import Variant, recipient_values, render
    from herald.models import ACCOUNT, CONTACT

    config = load_config(Path(config_dir))
    engine = get_engine(url)
    with engine.connect() as conn:
        chosen = audience(config, PHASE, AS_OF).limit(contacts).subquery()
        rows = conn.execute(
            select(chosen, CONTACT.c.email, CONTACT.c.name, ACCOUNT.c.name.label("account"))
            .join(CONTACT, CONTACT.c.id == chosen.c.contact_id)
            .join(ACCOUNT, ACCOUNT.c.id == CONTACT.c.account_id)
        ).all()
    client = SendGridAPIClient(api_key=KEY, host=fake_url)
    client.client.timeout = 30

    @task(cache_policy=NO_CACHE)
    def send_one(row: Any) -> int:
        rendered = render(config, Variant(PHASE, row.segment, row.role, row.locale)).personalize(
            recipient_values(name=row.name, email=row.email, account_name=row.account)
        )
        mail = Mail(
            from_email=config.campaign.sender.email,
            to_emails=row.email,
            subject=rendered.subject,
            plain_text_content=rendered.text,
            html_content=rendered.html,
        )
        return int(client.send(mail).status_code)

    @flow(name="bench-naive")
    def naive() -> int:
        return sum(1 for row in rows if 200 <= send_one(row) < 300)

    started = time.perf_counter()
    sent = naive()
    wall = time.perf_counter() - started
    return {
        "wall_s": wall,
        "recipients": sent,
        "rps": sent / wall,
        "requests": len(rows),
        "peak_rss_mb": peak_rss_mb(),
    }


# --------------------------------------------------------------------------- orchestration


def child(part: str, *args: str) -> dict[str, Any]:
    """Run one part in a process of its own; its last stdout line is its JSON result."""
    env = dict(os.environ)
    env.setdefault("PREFECT_HOME", tempfile.mkdtemp(prefix="herald-bench-prefect-"))
    env.update({"PREFECT_LOGGING_LEVEL": "WARNING", "PREFECT_SERVER_ANALYTICS_ENABLED": "false"})
    done = subprocess.run(
        [sys.executable, __file__, "--part", part, *args],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    if done.returncode != 0:
        raise SystemExit(f"part {part} failed:\n{done.stderr[-4000:]}")
    return dict(json.loads(done.stdout.strip().splitlines()[-1]))


class Fake:
    """The fake SendGrid in a process of its own."""

    def __init__(self, latency: float, validate_every: int = 10) -> None:
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "herald.testing.fake_sendgrid",
                "--api-key",
                KEY,
                "--latency",
                str(latency),
                "--no-expand",
                "--validate-every",
                str(validate_every),
            ],
            stdout=subprocess.PIPE,
            text=True,
            cwd=ROOT,
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        self.url = line.strip().removeprefix("listening on ")

    def stop(self) -> str:
        self.process.terminate()
        out, _ = self.process.communicate(timeout=60)
        return out.strip()


def run_db(kind: str, args: argparse.Namespace, config_dir: Path) -> dict[str, Any]:
    result: dict[str, Any] = {"db": kind}
    for label, contacts in (("small", args.small), ("large", args.contacts)):
        work = Path(tempfile.mkdtemp(prefix="herald-bench-"))
        with temporary_database(kind, work, args.postgres) as url:
            say(f"[{kind}] seeding {contacts:,} contacts")
            child("seed", url, str(contacts))
            fake = Fake(args.latency, args.validate_every)
            try:
                if label == "large":
                    say(f"[{kind}] floor")
                    result["floor"] = child("floor", url, str(config_dir))
                    result["floor"]["load_average"] = os.getloadavg()
                    reset_sends(url, fresh=True)
                say(f"[{kind}] herald at {contacts:,}")
                result[f"herald_{label}"] = child("herald", url, fake.url, str(config_dir))
                result[f"herald_{label}"]["load_average"] = os.getloadavg()
                if label == "large" and args.naive and kind == args.naive_db:
                    say(f"[{kind}] naive on {args.naive:,}")
                    result["naive"] = child(
                        "naive", url, fake.url, str(config_dir), str(args.naive)
                    )
            finally:
                result.setdefault("fake", []).append(fake.stop())
        shutil.rmtree(work, ignore_errors=True)
    return result


def summarize(run: dict[str, Any], contacts: int, naive: dict[str, Any] | None) -> dict[str, Any]:
    herald, floor = run["herald_large"], run["floor"]
    out = {
        "db": run["db"],
        "contacts": contacts,
        "herald_rps": round(herald["rps"]),
        "floor_rps": round(floor["rps"]),
        "naive_rps": round(naive["rps"], 1) if naive else None,
        "herald_peak_rss_mb": round(herald["peak_rss_mb"], 1),
        "herald_peak_rss_mb_small": round(run["herald_small"]["peak_rss_mb"], 1),
        "requests": herald["requests"],
        "prefect_share": round(herald["prefect_share"], 4),
        "herald_vs_floor": round(herald["rps"] / floor["rps"], 3),
        "herald_vs_naive": round(herald["rps"] / naive["rps"], 1) if naive else None,
        "plan_s": round(herald["plan_s"], 2),
        "rerun_s": round(herald["rerun_s"], 2),
        "wall_s": round(herald["wall_s"], 1),
        "floor_wall_s": round(floor["wall_s"], 1),
    }
    out["detail"] = run
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", help=argparse.SUPPRESS)
    parser.add_argument("rest", nargs="*", help=argparse.SUPPRESS)
    parser.add_argument("--contacts", type=int, default=1_000_000)
    parser.add_argument("--small", type=int, default=100_000)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--postgres", default=os.environ.get("HERALD_BENCH_POSTGRES", POSTGRES))
    parser.add_argument("--latency", type=float, default=0.05)
    parser.add_argument(
        "--validate-every",
        type=int,
        default=100,
        help="the fake checks one request in N against SendGrid's schema (tests: every one)",
    )
    parser.add_argument(
        "--in-flight", type=int, help="sending.in_flight for Herald (default: the config's)"
    )
    parser.add_argument("--naive", type=int, default=2_000)
    parser.add_argument("--naive-db", default="sqlite", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = parser.parse_args()

    if args.part:
        parts: dict[str, Callable[..., Any]] = {
            "seed": lambda url, n: seed_base(url, int(n), AS_OF, ROOT / "config") or {},
            "floor": part_floor,
            "herald": part_herald,
            "naive": lambda url, fake, cfg, n: part_naive(url, fake, cfg, int(n)),
        }
        say(json.dumps(parts[args.part](*args.rest)))
        return

    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    args.naive_db = kinds[0]
    # The repository's config with no pace limit (the fake answers as fast as it can).
    work = Path(tempfile.mkdtemp(prefix="herald-bench-config-"))
    sending: dict[str, Any] = {"rate_per_second": None}
    if args.in_flight is not None:
        sending["in_flight"] = args.in_flight
    config_dir = copy_config(ROOT / "config", work / "config", **sending)
    runs = [run_db(kind, args, config_dir) for kind in kinds]
    naive = next((run["naive"] for run in runs if "naive" in run), None)
    results = [summarize(run, args.contacts, naive) for run in runs]
    document = {
        "date": date.today().isoformat(),
        "machine": {"cpus": os.cpu_count(), "python": sys.version.split()[0]},
        "latency_s": args.latency,
        "fake_validates_one_in": args.validate_every,
        "small_contacts": args.small,
        "naive_contacts": args.naive,
        **{k: v for k, v in results[0].items() if k != "detail"},
        "runs": results,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"{date.today().isoformat()}.json"
    path.write_text(json.dumps(document, indent=2) + "\n", encoding="utf-8")
    say(
        f"\n{'db':<9}{'contacts':>10}{'herald r/s':>12}{'floor r/s':>11}{'naive r/s':>11}"
        f"{'vs floor':>10}{'vs naive':>10}{'RSS MB':>9}{'Prefect':>9}{'plan s':>8}{'rerun s':>9}"
    )
    for r in results:
        say(
            f"{r['db']:<9}{r['contacts']:>10,}{r['herald_rps']:>12,}{r['floor_rps']:>11,}"
            f"{r['naive_rps'] or 0:>11}{r['herald_vs_floor']:>10.0%}"
            f"{r['herald_vs_naive'] or 0:>9}x{r['herald_peak_rss_mb']:>9}"
            f"{r['prefect_share']:>9.1%}{r['plan_s']:>8}{r['rerun_s']:>9}"
        )
    say(f"results: {path}")


if __name__ == "__main__":
    main()
