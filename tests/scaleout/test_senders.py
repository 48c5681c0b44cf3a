"""Per-sender statistics: each sender of a message with its batches summed, its rate, the
Markdown of a phase's artifact, and whether an unfinished sender still looks alive."""

from __future__ import annotations

import os
import socket
import uuid
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from herald.delivery.recovery import looks_alive
from herald.scaleout.senders import (
    SenderStats,
    sender_stats,
    senders_markdown,
)
from tests.support.environment import Database
from tests.support.senders import batch_row, dead_pid, insert_senders, worker_row

CAMPAIGN = "modular-migration-2027"
T0 = datetime(2027, 2, 10, 15, 0, tzinfo=UTC)
NOW = T0 + timedelta(seconds=80)


def _at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


class Senders:
    """Three senders of the campaign (two of the announcement, one of them finished; one of
    the deprecation with no batch yet) and one of another campaign."""

    def __init__(self, db: Database) -> None:
        self.flow_runs = {name: str(uuid.uuid4()) for name in "abc"}
        self.a = worker_row(
            CAMPAIGN,
            "announcement",
            started_at=_at(-5),
            heartbeat_at=_at(40),
            finished_at=_at(60),
            outcome="finished",
            host="sender-a.example",
            pid=101,
            flow_run_id=self.flow_runs["a"],
        )
        self.b = worker_row(
            CAMPAIGN,
            "announcement",
            started_at=_at(0),
            heartbeat_at=_at(55),
            host="sender-b.example",
            pid=202,
            flow_run_id=self.flow_runs["b"],
        )
        self.c = worker_row(
            CAMPAIGN,
            "deprecation",
            started_at=_at(10),
            host="sender-c.example",
            pid=303,
            flow_run_id=self.flow_runs["c"],
        )
        other = worker_row("another-campaign", "announcement", started_at=_at(1))
        batches = [
            batch_row(self.a, "accepted", 100, created_at=_at(0), finished_at=_at(10)),
            batch_row(self.a, "accepted", 100, created_at=_at(10), finished_at=_at(20), requests=3),
            batch_row(self.a, "failed", 5, created_at=_at(20), finished_at=_at(25)),
            batch_row(self.a, "unknown", 3, created_at=_at(25), finished_at=_at(40)),
            batch_row(self.a, "released", 7, created_at=_at(30), finished_at=_at(30), requests=0),
            batch_row(self.b, "accepted", 150, created_at=_at(5), finished_at=_at(15)),
            batch_row(self.b, "claimed", 50, created_at=_at(50), requests=0),
            batch_row(self.b, "requesting", 40, created_at=_at(55)),
            batch_row(other, "accepted", 999, created_at=_at(2), finished_at=_at(3)),
        ]
        insert_senders(db.engine, [self.a, self.b, self.c, other], batches)
        self.db = db

    def read(self, **filters: Any) -> list[SenderStats]:
        with self.db.engine.connect() as conn:
            return sender_stats(conn, campaign=CAMPAIGN, now=NOW, **filters)

    def ids(self, **filters: Any) -> list[str]:
        return [s.worker_id for s in self.read(**filters)]


@pytest.fixture
def senders(db: Database) -> Senders:
    """The three senders of the campaign and one of another, with their batches."""
    return Senders(db)


class TestSenderStats:
    def test_each_sender_sums_its_own_batches(self, senders: Senders) -> None:
        """Every sender of the campaign is read, oldest start first, with its batches,
        requests and recipients by outcome; claimed and requesting batches are in flight."""
        a, b, c = senders.read()
        assert [a.worker_id, b.worker_id, c.worker_id] == [
            senders.a["id"],
            senders.b["id"],
            senders.c["id"],
        ]
        assert (a.batches, a.requests, a.accepted, a.failed, a.unknown, a.in_flight) == (
            5,
            6,
            200,
            5,
            3,
            0,
        )
        assert (b.batches, b.requests, b.accepted, b.failed, b.unknown, b.in_flight) == (
            3,
            2,
            150,
            0,
            0,
            90,
        )
        assert (c.batches, c.requests, c.accepted, c.in_flight) == (0, 0, 0, 0)
        assert (a.first_request_at, a.last_answer_at) == (_at(0), _at(40))
        assert (b.first_request_at, b.last_answer_at) == (_at(5), _at(15))
        assert (c.first_request_at, c.last_answer_at) == (None, None)
        assert (a.host, a.pid, a.flow_run_id) == ("sender-a.example", 101, senders.flow_runs["a"])
        assert a.finished_at == _at(60) and a.outcome == "finished" and not a.running
        assert b.finished_at is None and b.running and b.heartbeat_at == _at(55)

    def test_rates_run_from_the_first_batch_to_the_last_answer_or_now(
        self, senders: Senders
    ) -> None:
        """A finished sender's span ends at its last answer, a running one's at ``now``,
        and a sender with no batch has no span and no rate."""
        a, b, c = senders.read()
        assert (a.seconds, a.rate) == (40.0, 5.0)  # 200 accepted from T0 to T0+40
        assert (b.seconds, b.rate) == (75.0, 2.0)  # 150 accepted from T0+5 to now (T0+80)
        assert (c.seconds, c.rate) == (0.0, 0.0)

    def test_filters_narrow_the_senders(self, senders: Senders) -> None:
        """Message, sender ids, flow run ids and unfinished-only each narrow the senders,
        together as well; an empty list of flow runs matches none."""
        a, b, c = senders.a["id"], senders.b["id"], senders.c["id"]
        runs = senders.flow_runs
        assert senders.ids(message="announcement") == [a, b]
        assert senders.ids(message="deprecation") == [c]
        assert senders.ids(flow_run_ids=[runs["b"], runs["c"]]) == [b, c]
        assert senders.ids(flow_run_ids=[]) == []
        assert senders.ids(worker_ids=[a]) == [a]
        assert senders.ids(unfinished_only=True) == [b, c]
        assert senders.ids(message="announcement", unfinished_only=True) == [b]
        (only,) = senders.read(worker_ids=[a], message="announcement")
        assert only.accepted == 200


class TestSendersMarkdown:
    def test_a_row_per_sender_and_the_combined_rate(self, senders: Senders) -> None:
        """Each sender is a row of its counts, seconds and rate; the total is every accepted
        recipient over the span from the first batch to now while one still runs."""
        stats = senders.read(message="announcement")
        markdown = senders_markdown(stats, now=NOW)
        a_id, b_id = senders.a["id"][:8], senders.b["id"][:8]
        assert (
            f"| `{a_id}` | sender-a.example:101 | `{senders.flow_runs['a'][:8]}` "
            "| 5 | 6 | 200 | 5 | 3 | 0 | 40.0 | 5.0 | finished |"
        ) in markdown
        assert (
            f"| `{b_id}` | sender-b.example:202 | `{senders.flow_runs['b'][:8]}` "
            "| 3 | 2 | 150 | 0 | 0 | 90 | 75.0 | 2.0 | running |"
        ) in markdown
        # 350 accepted from T0 (the first batch) to now (T0+80): 4.375 a second.
        assert "**Total**: 350 accepted by 2 sender(s) in 80.0 s: 4.4 per second." in markdown

    def test_finished_senders_total_ends_at_the_last_answer(self, senders: Senders) -> None:
        """Once every sender has finished, the combined span ends at the latest answer of
        any of them, however late the artifact is written."""
        stats = [
            replace(s, finished_at=s.finished_at or _at(60))
            for s in senders.read(message="announcement")
        ]
        markdown = senders_markdown(stats, now=NOW + timedelta(hours=1))
        # 350 accepted from T0 to T0+40 (the finished sender's last answer).
        assert "**Total**: 350 accepted by 2 sender(s) in 40.0 s: 8.8 per second." in markdown

    def test_no_address_is_shown_and_no_senders_say_so(self, db: Database) -> None:
        """An address in a sender's outcome is masked in its statistics and its Markdown;
        no senders at all read as such."""
        worker = worker_row(
            CAMPAIGN,
            "announcement",
            started_at=_at(0),
            finished_at=_at(1),
            outcome="failed: refused jane.doe@example.com",
        )
        insert_senders(db.engine, [worker])
        with db.engine.connect() as conn:
            (stats,) = sender_stats(conn, campaign=CAMPAIGN, now=NOW)
        assert stats.outcome == "failed: refused j***@example.com"
        assert "jane.doe" not in senders_markdown([stats], now=NOW)
        assert "No senders." in senders_markdown([], now=NOW)


class TestLooksAlive:
    LEASE = 300.0

    def test_a_running_process_of_this_host_is_alive(self) -> None:
        """A sender on this host whose pid runs (here: this very process) is alive, however
        old its heartbeat."""
        assert looks_alive(
            socket.gethostname(), os.getpid(), _at(-86400), self.LEASE, NOW, this_process=True
        )

    def test_a_recovering_sender_takes_a_row_with_its_own_pid_for_an_earlier_process(
        self,
    ) -> None:
        """To a sender settling dead peers, a row with its own pid (not its own row) was
        written by an earlier process that had the same pid: gone."""
        assert not looks_alive(
            socket.gethostname(), os.getpid(), NOW, self.LEASE, NOW, this_process=False
        )

    def test_an_exited_process_of_this_host_looks_dead(self) -> None:
        """A sender on this host whose process has exited looks dead, however fresh its
        heartbeat."""
        assert not looks_alive(
            socket.gethostname(), dead_pid(), NOW, self.LEASE, NOW, this_process=True
        )

    def test_a_sender_on_another_host_is_judged_by_its_heartbeat(self) -> None:
        """A sender on another host is alive while its heartbeat is younger than the lease."""
        host = "elsewhere.example"
        assert looks_alive(
            host, 1, NOW - timedelta(seconds=299), self.LEASE, NOW, this_process=True
        )
        assert not looks_alive(
            host, 1, NOW - timedelta(seconds=300), self.LEASE, NOW, this_process=True
        )
