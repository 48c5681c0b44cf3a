"""The chaos run: a phase killed with SIGKILL at random moments, against a faulty SendGrid.

    make chaos                      # 50,000 contacts, 20 trials x 3 kills, + withheld trials,
                                    # on SQLite and Postgres; ends with one `chaos:` line each
    .venv/bin/python -m tests.support.chaos [--db sqlite|postgres|both] [--contacts 50000]
                                    [--trials 20] [--kills 3] [--withheld 5] [--seed 1]
                                    [--moments random|held]

Each trial empties the ledger and sends the announcement to every contact of a synthetic base
with `herald phase send --send`, each run a process of its own against a real Prefect server
and the fake SendGrid (in this process: every request validated against SendGrid's schema;
1% 429, 1% 500, 0.2% connection reset *after* accepting, latency with jitter). A run is
killed with SIGKILL at a random moment (while starting, planning or sending), ``kills`` times,
and restarted each time; the last run is let finish. With ``--moments held`` (what
`tests/flows/test_chaos.py` uses) each kill lands instead while the fake holds a request of the run,
its number drawn at random among the batches left: every kill certainly catches a request in
flight, however fast or slow the machine (the requests before it are scripted accepts, the
faults apply to the runs after). Then what an operator does:

- **evidence** trials: the fake reports each accepted recipient's events, signed, to Herald's
  webhook receiver (`herald webhooks serve`, its own process); once they are in, the rows
  still ``unknown`` (never accepted) are re-sent (`deliveries resolve --resend`) and the
  phase run again, until nothing is left unsettled;
- **withheld** trials: no events. The rows left ``unknown`` are listed (reported) and then
  re-sent: some of them SendGrid had accepted, so those recipients get a duplicate, but only
  among the recipients of requests in flight at a kill or answered by a reset, and each one
  reported ``unknown`` before anything was re-sent.

Everything is checked against the fake's own record of accepted recipients: lost (a contact
never accepted), duplicates (accepted more than once), and the ledger (every row accepted).
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import date
from pathlib import Path
from typing import Literal

from sqlalchemy import Engine, func, select

from herald.config import load_config
from herald.db import get_engine
from herald.delivery import ledger, recovery
from herald.models import DELIVERY, SEND_BATCH, BatchState, DeliveryState
from herald.telemetry.webhook_batches import unprocessed_batches
from herald.testing.event_webhook import EventPoster, Signer
from herald.testing.fake_sendgrid import RESET_STATUS, FakeSendGrid, Faults
from herald.testing.processes import free_port, served
from herald.testing.synthetic import (
    all_emails,
    copy_config,
    reset_sends,
    seed_base,
    temporary_database,
)

ROOT = Path(__file__).resolve().parents[2]
KEY = "SG.chaos-key"
UNSUBSCRIBE_SECRET = "chaos-unsubscribe-secret"
AS_OF = date(2027, 2, 9)  # the announcement's day: it goes to every segment
PHASE = "announcement"
POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/test"
FAULTS = Faults(rate_limited=0.01, reset_after=1.0, server_error=0.01, reset_after_accept=0.002)
MAX_ROUNDS = 8  # resolve-and-rerun rounds after the last kill (each settles what is left)
WAIT = 300  # seconds: safety nets against hanging (a loaded machine is slow), never relied on
Moments = Literal["random", "held"]


def say(line: str) -> None:
    sys.stdout.write(line + "\n")
    sys.stdout.flush()


@dataclass
class Tally:
    """What the trials of one database and mode added up to."""

    db: str
    withheld: bool
    trials: int = 0
    kills: int = 0
    runs: int = 0
    recipients: int = 0
    lost: int = 0
    duplicates: int = 0
    unknown: int = 0  # rows left unknown (reported) before the operator re-sent them
    settled: int = 0  # unknown rows settled as accepted by SendGrid's events
    in_flight: int = 0  # rows of requests in flight at the kills
    ambiguous: int = 0  # recipients of requests answered by a connection reset
    silent: int = 0  # duplicates that were not reported unknown first (must be 0)
    strays: int = 0  # addresses accepted that are not in the base (must be 0)
    ledger_open: int = 0  # rows not accepted at the end (must be 0)
    problems: list[str] = field(default_factory=list)

    def add(self, other: Tally) -> None:
        for item in fields(self):
            if item.type == "int":  # the counts (not db, withheld or problems)
                setattr(self, item.name, getattr(self, item.name) + getattr(other, item.name))
        self.problems += other.problems

    @property
    def bound(self) -> int:
        """The most duplicates a re-send without evidence may make."""
        return self.in_flight + self.ambiguous

    @property
    def ok(self) -> bool:
        clean = not (self.lost or self.silent or self.strays or self.ledger_open or self.problems)
        if self.withheld:
            return clean and self.duplicates <= self.bound
        return clean and self.duplicates == 0

    def line(self) -> str:
        """The summary line (``chaos:`` for trials with the webhook evidence)."""
        head = "chaos-withheld" if self.withheld else "chaos"
        line = (
            f"{head}: db={self.db} trials={self.trials} kills={self.kills} "
            f"recipients={self.recipients} lost={self.lost} duplicates={self.duplicates} "
            f"unknown={self.unknown}"
        )
        if self.withheld:
            line += f" bound={self.bound} silent={self.silent}"
        return line


@dataclass
class Stage:
    """Where the trials of one database run."""

    url: str
    config_dir: Path
    work: Path
    prefect_api_url: str
    contacts: int
    campaign: str
    batch_size: int
    say: Callable[[str], None] = say
    receiver: str | None = None  # the webhook receiver's base URL (evidence trials)
    signer: Signer | None = None
    latency: float = 0.05
    jitter: float = 0.05
    moments: Moments = "random"  # kills at random moments, or while a request is held

    @property
    def engine(self) -> Engine:
        return get_engine(self.url)

    def env(self, fake_url: str) -> dict[str, str]:
        """The environment of a `herald` process of this stage."""
        env = {k: v for k, v in os.environ.items() if not k.startswith(("HERALD_", "SENDGRID_"))}
        env.update(
            HERALD_DATABASE_URL=self.url,
            HERALD_CONFIG_DIR=str(self.config_dir),
            HERALD_VAR_DIR=str(self.work / "var"),
            HERALD_TRANSPORT="sendgrid",
            HERALD_SENDGRID_API_HOST=fake_url,
            SENDGRID_API_KEY=KEY,
            HERALD_UNSUBSCRIBE_SECRET=UNSUBSCRIBE_SECRET,
            PREFECT_API_URL=self.prefect_api_url,
            PREFECT_LOGGING_LEVEL="WARNING",
            COLUMNS="200",
        )
        if self.signer is not None:
            env["HERALD_WEBHOOK_PUBLIC_KEY"] = self.signer.public
        return env


# --------------------------------------------------------------------------- set-up


@contextmanager
def receiver(stage: Stage) -> Iterator[str]:
    """`herald webhooks serve` for this stage, in a process of its own; its base URL."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    with (
        (stage.work / "receiver.log").open("ab") as log,
        served(
            [sys.executable, "-m", "herald.cli", "webhooks", "serve", "--port", str(port)],
            health=f"{url}/health",
            what="the webhook receiver",
            env=stage.env("http://127.0.0.1:9"),
            cwd=ROOT,
            output=log,
            timeout=WAIT,
        ),
    ):
        yield url


@contextmanager
def prefect_server(work: Path) -> Iterator[str]:
    """`prefect server start` on a free port, with its own home; its API URL."""
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PREFECT_")}
    env.update(
        PREFECT_HOME=str(work / "prefect-home"),
        PREFECT_SERVER_API_PORT=str(port),
        PREFECT_SERVER_ANALYTICS_ENABLED="false",
        PREFECT_LOGGING_LEVEL="WARNING",
    )
    api = f"http://127.0.0.1:{port}/api"
    with (
        (work / "prefect-server.log").open("ab") as log,
        served(
            [str(Path(sys.executable).parent / "prefect"), "server", "start", "--port", str(port)],
            health=f"{api}/health",
            what="prefect server",
            env=env,
            output=log,
            timeout=WAIT,
        ),
    ):
        yield api


# --------------------------------------------------------------------------- ledger reads


def kind(engine: Engine) -> str:
    return "postgres" if engine.dialect.name == "postgresql" else engine.dialect.name


def states(stage: Stage) -> dict[str, int]:
    with stage.engine.connect() as conn:
        return ledger.state_counts(conn, campaign=stage.campaign, message=PHASE)


def in_flight_rows(engine: Engine) -> int:
    """Rows of the requests in flight (their batch marked requesting) when a sender died."""
    d, b = DELIVERY, SEND_BATCH
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count())
                .select_from(d.join(b, b.c.id == d.c.batch_id))
                .where(
                    d.c.state == DeliveryState.SENDING.value,
                    b.c.state == BatchState.REQUESTING.value,
                )
            ).scalar_one()
        )


def unknown_emails(stage: Stage) -> set[str]:
    with stage.engine.connect() as conn:
        return {
            row.email.lower()
            for row in recovery.unknown_rows(conn, campaign=stage.campaign, message=PHASE)
        }


def settled_by_events(engine: Engine) -> int:
    d = DELIVERY
    with engine.connect() as conn:
        return int(
            conn.execute(
                select(func.count()).where(
                    d.c.message == PHASE, d.c.error == ledger.SETTLED_BY_EVENTS
                )
            ).scalar_one()
        )


# --------------------------------------------------------------------------- one trial


def batches_left(stage: Stage) -> int:
    """The fewest batches a run will still request: rows neither accepted, failed, unknown
    nor sending (a dead sender's rows may become unknown), in full batches."""
    counts = states(stage)
    done = sum(counts[state] for state in ("accepted", "failed", "unknown", "sending"))
    return max(0, stage.contacts - done) // stage.batch_size


def run_sender(
    stage: Stage,
    fake: FakeSendGrid,
    log_path: Path,
    kill: Callable[[], tuple[float, bool]] | int | None,
) -> tuple[bool, int]:
    """One `herald phase send` process, SIGKILLed if it is still running when ``kill``
    says: ``kill()`` gives (seconds, counted from its first request or else from its start);
    an int N kills it while the fake holds its Nth request. Returns (killed, exit code).

    Returns once the fake has answered and logged every request of the run (a killed run's
    request in flight included) and the run's connections are closed."""
    try:
        return _run_sender(stage, fake, log_path, kill)
    finally:
        if not fake.wait_idle(timeout=WAIT, disconnected=True):
            stage.say(f"  the fake still handles a request of {log_path.name} after {WAIT} s")


def _run_sender(
    stage: Stage,
    fake: FakeSendGrid,
    log_path: Path,
    kill: Callable[[], tuple[float, bool]] | int | None,
) -> tuple[bool, int]:
    if isinstance(kill, int):
        fake.script(*["accept"] * (kill - 1), "hold")
    with log_path.open("wb") as log:
        started = time.monotonic()
        received = fake.received
        process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "herald.cli",
                "phase",
                "send",
                PHASE,
                "--send",
                "--ignore-window",
                "--as-of",
                AS_OF.isoformat(),
            ],
            env=stage.env(fake.url),
            cwd=ROOT,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        if kill is None:
            return False, process.wait(timeout=1800)
        if isinstance(kill, int):
            try:
                # Until the Nth request is held (in flight: its client waits for the answer)
                # or the run ends without sending it.
                while process.poll() is None and not fake.wait_held(1, timeout=1):
                    pass
                if not fake.held:
                    return False, process.wait(timeout=WAIT)
                process.send_signal(signal.SIGKILL)
                return True, process.wait(timeout=WAIT)
            finally:
                fake.clear_script()
                fake.release()  # SendGrid accepts it: the client has gone
        delay, from_first_request = kill()
        if from_first_request:
            deadline = time.monotonic() + 120
            while (
                fake.received == received and process.poll() is None and time.monotonic() < deadline
            ):
                time.sleep(0.01)
            started = time.monotonic()
        while process.poll() is None and time.monotonic() - started < delay:
            time.sleep(0.005)
        if process.poll() is not None:
            return False, process.returncode
        process.send_signal(signal.SIGKILL)
        return True, process.wait(timeout=60)


def run_trial(stage: Stage, number: int, kills: int, withheld: bool, rng: random.Random) -> Tally:
    """One trial: ``kills`` killed runs, the last run, reconciliation, the checks."""
    engine = stage.engine
    reset_sends(stage.url)
    tally = Tally(db=kind(engine), withheld=withheld, trials=1)
    logs = stage.work / "logs" / f"{'withheld' if withheld else 'evidence'}-{number:02d}"
    logs.mkdir(parents=True, exist_ok=True)
    reported: set[str] = set()  # every address listed unknown before a re-send
    # How long sending everything takes (2 requests in flight): the span kills spread over.
    span = stage.contacts / stage.batch_size * (stage.latency + stage.jitter / 2) / 2 + 1.0
    poster = None
    if not withheld:
        assert stage.receiver is not None and stage.signer is not None
        poster = EventPoster(f"{stage.receiver}/webhooks/sendgrid", stage.signer).start()
    started = time.monotonic()
    fake = FakeSendGrid(
        KEY,
        latency=stage.latency,
        jitter=stage.jitter,
        faults=FAULTS,
        seed=rng.randrange(2**32),
        events=poster,
        expand=False,
    ).start()
    try:
        run = 0
        while tally.kills < kills and run < kills * 3:
            run += 1
            left = 1.0 - states(stage)["accepted"] / stage.contacts

            def kill_after(left: float = left) -> tuple[float, bool]:
                # Most kills land while sending, the rest while starting or planning.
                if rng.random() < 0.8:
                    return rng.uniform(0.0, max(0.3, 0.8 * span * left)), True
                return rng.uniform(0.5, 5.0), False

            kill: Callable[[], tuple[float, bool]] | int = kill_after
            if stage.moments == "held":  # while the fake holds request N of the run
                kill = rng.randint(1, max(1, batches_left(stage) // (kills - tally.kills)))
            killed, code = run_sender(stage, fake, logs / f"run-{run}.log", kill)
            tally.runs += 1
            if killed:
                tally.kills += 1
                tally.in_flight += in_flight_rows(engine)
            elif code not in (0, 3):
                tally.problems.append(f"run {run} exited {code}: see {logs}/run-{run}.log")
        for _ in range(MAX_ROUNDS):
            run += 1
            _, code = run_sender(stage, fake, logs / f"run-{run}.log", None)
            tally.runs += 1
            if code not in (0, 3):
                tally.problems.append(f"run {run} exited {code}: see {logs}/run-{run}.log")
                break
            if poster is not None:  # let SendGrid's evidence in, and Herald process it
                if not poster.drain(timeout=600):
                    tally.problems.append(f"{poster.pending} events never taken by the receiver")
                deadline = time.monotonic() + 600
                while unprocessed_batches(engine) and time.monotonic() < deadline:
                    time.sleep(0.1)
            counts = states(stage)
            if counts["unknown"] == counts["failed"] == 0:
                break
            listed = unknown_emails(stage)
            tally.unknown += len(listed)
            reported |= listed
            (logs / f"unknown-before-round-{run}.txt").write_text("\n".join(sorted(listed)))
            recovery.resolve(
                engine,
                campaign=stage.campaign,
                message=PHASE,
                resolution="resend",
                include_failed=True,
            )
        else:
            tally.problems.append(f"rows still unsettled after {MAX_ROUNDS} rounds")
    finally:
        fake.stop()
        if poster is not None:
            poster.stop()
    return check(stage, tally, fake, reported, started)


def check(
    stage: Stage, tally: Tally, fake: FakeSendGrid, reported: set[str], started: float
) -> Tally:
    """Compare the fake's record with the base and the ledger."""
    engine = stage.engine
    expected = all_emails(stage.url)
    accepted = fake.accepted_emails()
    tally.recipients = len(expected)
    tally.lost = len(expected - set(accepted))
    tally.strays = len(set(accepted) - expected)
    twice = {email for email, count in accepted.items() if count > 1}
    tally.duplicates = sum(accepted[email] - 1 for email in twice)
    tally.silent = len(twice - reported)
    tally.ambiguous = sum(
        entry.recipients
        for entry in fake.requests
        if entry.status == RESET_STATUS and entry.valid and not entry.errors  # not "stopped"
    )
    tally.settled = settled_by_events(engine)
    counts = states(stage)
    tally.ledger_open = sum(n for state, n in counts.items() if state != "accepted")
    if fake.internal_errors:
        tally.problems.append(f"the fake failed: {fake.internal_errors[0][:500]}")
    mode = "withheld" if tally.withheld else "evidence"
    stage.say(
        f"  {mode} trial: runs={tally.runs} kills={tally.kills} in-flight-at-kills="
        f"{tally.in_flight} reset-answers={tally.ambiguous} settled-by-events={tally.settled} "
        f"unknown-resent={tally.unknown} accepted={sum(accepted.values())} lost={tally.lost} "
        f"duplicates={tally.duplicates} silent={tally.silent} ledger-open={tally.ledger_open} "
        f"({time.monotonic() - started:.1f} s)"
    )
    return tally


def run_trials(stage: Stage, trials: int, kills: int, withheld: bool, rng: random.Random) -> Tally:
    total = Tally(db=kind(stage.engine), withheld=withheld)
    for number in range(1, trials + 1):
        stage.say(f"[{total.db}] {'withheld' if withheld else 'evidence'} trial {number}/{trials}")
        total.add(run_trial(stage, number, kills, withheld, rng))
    return total


def run_database(
    url: str,
    work: Path,
    prefect_api_url: str,
    *,
    contacts: int,
    trials: int,
    kills: int,
    withheld: int,
    batch_size: int,
    rng: random.Random,
    output: Callable[[str], None] = say,
    moments: Moments = "random",
) -> list[Tally]:
    """Seed a base at ``url`` and run the trials there: evidence, then withheld; each kill
    at a random moment, or (``moments="held"``) while the fake holds a request of the run."""
    config_dir = copy_config(
        ROOT / "config",
        work / "config",
        batch_size=batch_size,
        backoff_seconds=0.05,
        backoff_max_seconds=0.5,
        rate_per_second=None,
    )
    seed_base(url, contacts, AS_OF, config_dir)
    campaign = load_config(config_dir).campaign.id
    stage = Stage(
        url,
        config_dir,
        work,
        prefect_api_url,
        contacts,
        campaign,
        batch_size,
        say=output,
        moments=moments,
    )
    results = []
    if trials:
        stage.signer = Signer()
        with receiver(stage) as base:
            stage.receiver = base
            results.append(run_trials(stage, trials, kills, False, rng))
        stage.receiver = stage.signer = None
    if withheld:
        results.append(run_trials(stage, withheld, kills, True, rng))
    return results


# --------------------------------------------------------------------------- the CLI


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.support.chaos", description=__doc__)
    parser.add_argument("--db", choices=["sqlite", "postgres", "both"], default="both")
    parser.add_argument("--contacts", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=20, help="trials with webhook evidence")
    parser.add_argument("--kills", type=int, default=3, help="SIGKILLs per trial")
    parser.add_argument("--withheld", type=int, default=5, help="trials without evidence")
    parser.add_argument("--batch-size", type=int, default=250)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument(
        "--moments",
        choices=["random", "held"],
        default="random",
        help="kill at random moments, or while the fake holds a request of the run",
    )
    parser.add_argument("--postgres", default=os.environ.get("HERALD_TEST_POSTGRES_URL", POSTGRES))
    args = parser.parse_args(argv)
    rng = random.Random(args.seed)
    kinds = ["sqlite", "postgres"] if args.db == "both" else [args.db]
    work = Path(tempfile.mkdtemp(prefix="herald-chaos-"))
    say(f"chaos: work folder {work} (run logs, receiver and Prefect server logs)")
    results: list[Tally] = []
    with prefect_server(work) as api:
        for kind in kinds:
            folder = work / kind
            folder.mkdir()
            with temporary_database(kind, folder, args.postgres) as url:
                say(f"[{kind}] seeding {args.contacts:,} contacts")
                results += run_database(
                    url,
                    folder,
                    api,
                    contacts=args.contacts,
                    trials=args.trials,
                    kills=args.kills,
                    withheld=args.withheld,
                    batch_size=args.batch_size,
                    rng=rng,
                    moments=args.moments,
                )
                get_engine(url).dispose()
    for tally in results:
        for problem in tally.problems:
            say(f"PROBLEM [{tally.db}]: {problem}")
    failed = [tally for tally in results if not tally.ok]
    # The detail lines first; the run ends with one `chaos:` line per database.
    for tally in sorted(results, key=lambda t: not t.withheld):
        say(tally.line())
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
