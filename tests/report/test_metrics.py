"""Success metrics: exact values on a hand-built campaign, snapshots, the flow, the refusal.

The fixture (``build``) is small enough to count by hand; every expected value below is
derived in a comment from the tables in this docstring. ``AS_OF`` is 2027-04-11: anything
timestamped from 2027-04-12 00:00 UTC on must not count.

Accounts (segment from the segmentation of 2027-01-05, the latest on or before AS_OF; an
older one put everyone in 'standard', a later one everyone in 'conservative'):

    id  segment        lifecycle  migrated on          performance_focused  contacts
    1   early_adopter  active     2027-03-01           true                 c1, c2
    2   early_adopter  active     (2027-04-20: later)  true                 c3
    3   standard       active     -                    false                c4, c5
    4   standard       active     -                    true                 c6
    5   conservative   active     2027-02-20           "yes" (text)         c7
    6   (none)         churned    -                    true                 c8
    7   conservative   active     -                    true                 c9, c10

Deliveries of the campaign (d15 belongs to another campaign) and their events:

    d   contact  phase         state     sent        events (A: after AS_OF, not counted)
    1   c1       preview       accepted  01-12       delivered, open, open, unsubscribe
    2   c3       preview       accepted  01-12       bounce (blocked), click A
    3   c9       preview       failed    -
    4   c8       preview       accepted  01-12       delivered, open
    5   c1       announcement  accepted  02-09       processed, delivered, click
    6   c2       announcement  accepted  02-09       delivered, open, unsubscribe A
    7   c4       announcement  accepted  02-09       bounce (type bounce), deferred
    8   c5       announcement  failed    -
    9   c6       announcement  accepted  04-12 A     delivered A, open A
    10  c7       announcement  accepted  02-09       delivered, click
    11  c9       announcement  planned   -
    12  c10      announcement  accepted  02-09       delivered, open, spamreport
    13  c3       sunset-t90    accepted  04-01       delivered, group_unsubscribe (04-11 23:59:59)
    14  c5       deprecation   accepted  03-16       bounce (no type: hard)
    15  c4       (other campaign)  accepted  02-09   open
    -   -        (no delivery)                       click
"""

from __future__ import annotations

import contextlib
from dataclasses import replace
from datetime import date

import pytest
from prefect.artifacts import Artifact
from sqlalchemy import Connection, delete, insert, select, text
from typer.testing import CliRunner

from flows.compute_metrics import compute_metrics as metrics_flow
from herald.cli.metrics import metrics_app
from herald.config import PHASES, HeraldConfig, Target
from herald.db import id_spans
from herald.models import (
    ACCOUNT,
    DELIVERY,
    EMAIL_EVENT,
    METRIC_SNAPSHOT,
    SEGMENT_ASSIGNMENT,
)
from herald.report.metrics import compute
from herald.report.metrics.compute import _counts, _staged, compute_metrics
from herald.report.metrics.definitions import migration_target_line, status_for
from herald.report.metrics.queries import stages
from herald.report.metrics.results import (
    AT_RISK,
    MONITORED,
    NO_DATA,
    NOT_STARTED,
    OFF_TRACK,
    ON_TRACK,
    FunnelRow,
    MetricsResult,
)
from herald.report.metrics.snapshot import snapshot_metrics
from herald.telemetry.health import SourceRejected
from tests.support.bases import config, judged_on_any_sample
from tests.support.environment import Database
from tests.support.metrics import AFTER, AS_OF, CAMPAIGN, SEGMENTS, at, build, reject


def values_of(result: MetricsResult, metric: str) -> dict[str, float | None]:
    """The metric's value per segment."""
    return {segment: result.get(metric, segment).value for segment in result.segments}


def ratios_of(result: MetricsResult, metric: str) -> dict[str, tuple[int | None, int | None]]:
    """The metric's (numerator, denominator) per segment."""
    return {
        segment: (result.get(metric, segment).numerator, result.get(metric, segment).denominator)
        for segment in result.segments
    }


def statuses_of(result: MetricsResult, metric: str) -> dict[str, str]:
    """The metric's status per segment."""
    return {segment: result.get(metric, segment).status for segment in result.segments}


@pytest.fixture
def campaign(db: Database) -> HeraldConfig:
    build(db.engine)
    return judged_on_any_sample(config())


class TestExactValues:
    def test_segments_come_from_the_latest_segmentation_on_or_before_the_day(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert result.segmented_on == date(2027, 1, 5)
        # Account 6 churned before the 2027-01-05 segmentation: its delivery and survey
        # answer count in 'all' and in 'unsegmented'.
        assert result.segments == SEGMENTS
        assert result.campaign == CAMPAIGN

    def test_reach(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Active accounts: 1,2 (EA), 3,4 (ST), 5,7 (CO) = 6. Accepted by AS_OF: d1,d2,d4,d5,
        # d6,d7,d10,d12,d13,d14 (d9 was sent after). Reached active accounts: 1 (d1,d5,d6),
        # 2 (d2,d13), 3 (d7,d14), 5 (d10), 7 (d12) = 5; 4 only had d9; 6 churned.
        assert ratios_of(result, "message_reach") == {
            "all": (5, 6),
            "early_adopter": (2, 2),
            "standard": (1, 2),
            "conservative": (2, 2),
            "unsegmented": (0, 0),
        }
        assert values_of(result, "message_reach") == {
            "all": 5 / 6,
            "early_adopter": 1.0,
            "standard": 0.5,
            "conservative": 1.0,
            "unsegmented": None,  # zero denominator: no data, not 0
        }
        # Target >= 100%.
        assert statuses_of(result, "message_reach") == {
            "all": OFF_TRACK,
            "early_adopter": ON_TRACK,
            "standard": OFF_TRACK,
            "conservative": ON_TRACK,
            "unsegmented": NO_DATA,
        }
        # Contacts of active accounts: EA c1,c2,c3; ST c4,c5,c6; CO c7,c9,c10 = 9. Reached:
        # c1,c2,c3 | c4 (d7), c5 (d14) | c7 (d10), c10 (d12) = 7 (c6: d9 later; c9: failed).
        assert ratios_of(result, "message_reach_contacts") == {
            "all": (7, 9),
            "early_adopter": (3, 3),
            "standard": (2, 3),
            "conservative": (2, 3),
            "unsegmented": (0, 0),
        }
        assert result.get("message_reach_contacts").target is None
        assert result.get("message_reach_contacts").status == MONITORED
        # Per phase (accounts): preview 1,2 (d3 to account 7 failed; 6 churned);
        # announcement 1,3,5,7; deprecation 3 (d14); sunset 2 (d13 'sunset-t90').
        assert ratios_of(result, "reach_preview") == {
            "all": (2, 6),
            "early_adopter": (2, 2),
            "standard": (0, 2),
            "conservative": (0, 2),
            "unsegmented": (0, 0),
        }
        assert values_of(result, "reach_announcement") == {
            "all": 4 / 6,
            "early_adopter": 0.5,
            "standard": 0.5,
            "conservative": 1.0,
            "unsegmented": None,
        }
        assert ratios_of(result, "reach_deprecation")["all"] == (1, 6)
        assert ratios_of(result, "reach_deprecation")["standard"] == (1, 2)
        assert ratios_of(result, "reach_sunset")["all"] == (1, 6)
        assert ratios_of(result, "reach_sunset")["early_adopter"] == (1, 2)

    def test_engagement(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Reached accounts 1,2,3,5,7. Engaged: 1 (opens d1/d6, click d5), 5 (click d10),
        # 7 (open d12). Not 2 (its click came after AS_OF) nor 3 (its only open is on another
        # campaign's delivery d15). 3/5 = 0.6, and the target is > 60%: off track.
        assert ratios_of(result, "engagement_rate") == {
            "all": (3, 5),
            "early_adopter": (1, 2),
            "standard": (0, 1),
            "conservative": (2, 2),
            "unsegmented": (0, 0),
        }
        assert values_of(result, "engagement_rate") == {
            "all": 0.6,
            "early_adopter": 0.5,
            "standard": 0.0,
            "conservative": 1.0,
            "unsegmented": None,
        }
        assert statuses_of(result, "engagement_rate") == {
            "all": OFF_TRACK,  # 0.6 is not > 0.6
            "early_adopter": OFF_TRACK,
            "standard": OFF_TRACK,
            "conservative": ON_TRACK,
            "unsegmented": NO_DATA,
        }
        # Contacts: reached c1,c2,c3,c4,c5,c7,c10 = 7; engaged c1 (d1,d5), c2 (d6), c7 (d10),
        # c10 (d12) = 4.
        assert ratios_of(result, "engagement_rate_contacts") == {
            "all": (4, 7),
            "early_adopter": (2, 3),
            "standard": (0, 2),
            "conservative": (2, 2),
            "unsegmented": (0, 0),
        }
        definition = result.definitions["engagement_rate"]
        assert "opened or clicked" in definition and "got a message" in definition

    def test_early_adopter_engagement(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Active and performance_focused == true: 1, 2, 4, 7 (3 is false, 5 has the text
        # "yes", 6 churned) = 4. Engaged: 1, 7. Adopted (pct > 0 by AS_OF): 1, 4 (2's only
        # observation by then is 0%). Engaged or adopted: 1, 4, 7 = 3/4. Target >= 30%.
        assert ratios_of(result, "early_adopter_engagement") == {
            "all": (3, 4),
            "early_adopter": (1, 2),
            "standard": (1, 1),
            "conservative": (1, 1),
            "unsegmented": (0, 0),
        }
        assert statuses_of(result, "early_adopter_engagement") == {
            "all": ON_TRACK,
            "early_adopter": ON_TRACK,
            "standard": ON_TRACK,
            "conservative": ON_TRACK,
            "unsegmented": NO_DATA,
        }

    def test_migration_rate_against_the_target_line(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Migrated by AS_OF: 1 (03-01), 5 (02-20); 2 migrates 04-20, later. 2/6.
        assert ratios_of(result, "migration_rate") == {
            "all": (2, 6),
            "early_adopter": (1, 2),
            "standard": (0, 2),
            "conservative": (1, 2),
            "unsegmented": (0, 0),
        }
        # Announcement 2027-02-09 -> AS_OF: 19 + 31 + 11 = 61 days; the line is
        # 0.70 x 61 / 183 = 0.70 / 3.
        line = result.get("migration_target_line").value
        assert line == pytest.approx(0.7 / 3)
        assert values_of(result, "migration_target_line") == dict.fromkeys(SEGMENTS, line)
        # 1/3 >= line: on track; 0.5 >= line; 0 < 0.9 x line: off track.
        assert statuses_of(result, "migration_rate") == {
            "all": ON_TRACK,
            "early_adopter": ON_TRACK,
            "standard": OFF_TRACK,
            "conservative": ON_TRACK,
            "unsegmented": NO_DATA,
        }
        assert result.get("migration_rate").target == 0.7

    def test_support(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Tickets of active accounts by AS_OF: account 1 install + performance, 3 install,
        # 7 performance (04-11 12:00) = 4; 5's came after AS_OF, 6 churned. Per 100 active.
        assert ratios_of(result, "support_utilization")["all"] == (4, 6)
        assert values_of(result, "support_utilization") == {
            "all": pytest.approx(400 / 6),
            "early_adopter": 100.0,
            "standard": 50.0,
            "conservative": 50.0,
            "unsegmented": None,
        }
        assert result.get("support_utilization").status == MONITORED
        assert values_of(result, "support_utilization:install") == {
            "all": pytest.approx(200 / 6),
            "early_adopter": 50.0,
            "standard": 50.0,
            "conservative": 0.0,
            "unsegmented": None,
        }
        assert values_of(result, "support_utilization:performance") == {
            "all": pytest.approx(200 / 6),
            "early_adopter": 50.0,
            "standard": 0.0,
            "conservative": 50.0,
            "unsegmented": None,
        }
        # Survey answers by AS_OF: 5 (csat 5, 4, 3, 5, 2); >= 4: three. Target > 95%.
        assert ratios_of(result, "support_satisfaction") == {
            "all": (3, 5),
            "early_adopter": (2, 2),
            "standard": (0, 1),
            "conservative": (1, 1),
            "unsegmented": (0, 1),
        }
        assert statuses_of(result, "support_satisfaction") == {
            "all": OFF_TRACK,
            "early_adopter": ON_TRACK,
            "standard": OFF_TRACK,
            "conservative": ON_TRACK,
            "unsegmented": OFF_TRACK,
        }
        # Comments that say something: "Much faster imports", "ok", "leaving" (blank and
        # missing do not count) = 3/5.
        assert ratios_of(result, "feedback_quality") == {
            "all": (3, 5),
            "early_adopter": (1, 2),
            "standard": (0, 1),
            "conservative": (1, 1),
            "unsegmented": (1, 1),
        }
        assert result.get("feedback_quality").status == MONITORED

    def test_performance_validation(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Migrated by AS_OF: 1, 5. Account 1's latest report by AS_OF (03-05) is faster (its
        # 04-20 report is later, its 01-20 one older); 5 has none, so it is not judged
        # (performance_reported counts it): 1/1. Target >= 100% with 5 points of tolerance.
        assert ratios_of(result, "performance_validation") == {
            "all": (1, 1),
            "early_adopter": (1, 1),
            "standard": (0, 0),
            "conservative": (0, 0),
            "unsegmented": (0, 0),
        }
        assert statuses_of(result, "performance_validation") == {
            "all": ON_TRACK,
            "early_adopter": ON_TRACK,
            "standard": NO_DATA,
            "conservative": NO_DATA,
            "unsegmented": NO_DATA,
        }
        assert ratios_of(result, "performance_reported")["all"] == (1, 2)
        assert ratios_of(result, "performance_reported")["conservative"] == (0, 1)

    def test_deliverability(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # Accepted by AS_OF: EA d1,d2,d5,d6,d13 = 5; ST d7,d14 = 2; CO d10,d12 = 2;
        # unsegmented d4 = 1; all 10. Hard bounces: d7 (type bounce), d14 (no type); d2's
        # is 'blocked'. Spam: d12. Unsubscribes: d1, d13 (group); d6's came after AS_OF.
        assert ratios_of(result, "hard_bounce_rate") == {
            "all": (2, 10),
            "early_adopter": (0, 5),
            "standard": (2, 2),
            "conservative": (0, 2),
            "unsegmented": (0, 1),
        }
        assert ratios_of(result, "spam_complaint_rate") == {
            "all": (1, 10),
            "early_adopter": (0, 5),
            "standard": (0, 2),
            "conservative": (1, 2),
            "unsegmented": (0, 1),
        }
        assert ratios_of(result, "unsubscribe_rate") == {
            "all": (2, 10),
            "early_adopter": (2, 5),
            "standard": (0, 2),
            "conservative": (0, 2),
            "unsegmented": (0, 1),
        }
        # Hard bounces < 2%; spam < 0.1% with a 0.3% limit; unsubscribes < 0.5%.
        assert statuses_of(result, "hard_bounce_rate") == {
            "all": OFF_TRACK,
            "early_adopter": ON_TRACK,
            "standard": OFF_TRACK,
            "conservative": ON_TRACK,
            "unsegmented": ON_TRACK,
        }
        assert statuses_of(result, "spam_complaint_rate") == {
            "all": OFF_TRACK,
            "early_adopter": ON_TRACK,
            "standard": ON_TRACK,
            "conservative": OFF_TRACK,
            "unsegmented": ON_TRACK,
        }
        spam = result.get("spam_complaint_rate")
        assert (spam.target, spam.comparison, spam.limit) == (0.001, "<", 0.003)
        assert statuses_of(result, "unsubscribe_rate")["early_adopter"] == OFF_TRACK

    def test_funnel(self, db: Database, campaign: HeraldConfig) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        # preview: sent d1,d2,d4; delivered d1,d4; opened d1,d4; clicked none (d2's came
        # later); migrated among reached accounts 1,2: account 1.
        # announcement: sent d5,d6,d7,d10,d12; delivered d5,d6,d10,d12; opened d6,d12;
        # clicked d5,d10; reached accounts 1,3,5,7 of which migrated 1,5.
        # deprecation: sent d14 (bounced); reached 3, not migrated.
        # sunset: sent d13, delivered; reached 2, which migrates only on 04-20.
        assert result.funnel == [
            FunnelRow("preview", 3, 2, 2, 0, 1),
            FunnelRow("announcement", 5, 4, 2, 2, 2),
            FunnelRow("deprecation", 1, 0, 0, 0, 0),
            FunnelRow("sunset", 1, 1, 0, 0, 0),
        ]

    def test_a_message_outside_the_phases_gets_its_own_funnel_row(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        # A thank-you to c2 (account 1, already reached and migrated), delivered.
        with db.engine.begin() as conn:
            conn.execute(
                insert(DELIVERY).values(
                    id=16,
                    campaign=CAMPAIGN,
                    message="thank-you",
                    contact_id=2,
                    segment="early_adopter",
                    role="technical",
                    locale="en",
                    state="accepted",
                    sent_at=at(3, 2),
                )
            )
            conn.execute(
                insert(EMAIL_EVENT).values(
                    sg_event_id="ev-thanks",
                    event="delivered",
                    email="c2@example.com",
                    occurred_at=at(3, 2, 10, 1),
                    delivery_id=16,
                    raw={"event": "delivered"},
                )
            )
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert result.funnel[-1] == FunnelRow("other", 1, 1, 0, 0, 1)
        assert [row.phase for row in result.funnel[:4]] == list(PHASES)
        assert ratios_of(result, "message_reach")["all"] == (5, 6)  # account 1 was reached
        assert ratios_of(result, "hard_bounce_rate")["all"] == (2, 11)  # one more sent

    def test_every_target_metric_has_a_value_per_segment(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        for metric in campaign.targets.targets:
            for segment in SEGMENTS:
                assert result.get(metric, segment).segment == segment
        assert len({(v.metric, v.segment) for v in result.values}) == len(result.values)

    def test_an_empty_database_has_no_data_everywhere(self, db: Database) -> None:
        result = compute_metrics(db.engine, config=config(), as_of=AS_OF)
        assert result.segmented_on is None
        assert result.segments == ["all", "early_adopter", "standard", "conservative"]
        for value in result.values:
            if value.metric == "migration_target_line":
                continue
            assert value.value is None, value
            assert value.status == NO_DATA
            assert value.denominator == 0
        assert [row.phase for row in result.funnel] == [
            "preview",
            "announcement",
            "deprecation",
            "sunset",
        ]
        assert all(row.sent == 0 for row in result.funnel)

    def test_an_earlier_day_sees_less(self, db: Database, campaign: HeraldConfig) -> None:
        # On 2027-02-09 (announcement day, end of day): preview d1,d2,d4 and announcement
        # d5,d6,d7,d10,d12 are sent; reached active accounts 1,2,3,5,7; the only migrated
        # account is 5 (02-20 is later): 0/6; the line is 0 on announcement day.
        result = compute_metrics(db.engine, config=campaign, as_of=date(2027, 2, 9))
        assert ratios_of(result, "message_reach")["all"] == (5, 6)
        assert ratios_of(result, "migration_rate")["all"] == (0, 6)
        assert result.get("migration_target_line").value == 0.0
        assert result.get("migration_rate").status == ON_TRACK  # 0 >= 0
        # Opens by then: d1 (01-12, 01-13), d4 (churned) -> engaged accounts: 1 only.
        assert ratios_of(result, "engagement_rate")["all"] == (1, 5)


class TestStatus:
    @pytest.mark.parametrize(
        ("value", "expected"),
        [(0.0005, ON_TRACK), (0.001, AT_RISK), (0.002, AT_RISK), (0.003, OFF_TRACK)],
    )
    def test_a_limit_makes_at_risk_between_the_value_and_the_limit(
        self, value: float, expected: str
    ) -> None:
        target = Target(label="spam", value=0.001, comparison="<", limit=0.003, source="s")
        assert status_for(value, target) == expected

    @pytest.mark.parametrize(
        ("value", "expected"),
        [(0.5, ON_TRACK), (0.46, AT_RISK), (0.45, AT_RISK), (0.44, OFF_TRACK)],
    )
    def test_a_dated_target_is_judged_against_its_line(self, value: float, expected: str) -> None:
        target = Target(
            label="m",
            value=0.7,
            comparison=">=",
            within_days=183,
            judged_from="announcement",
            source="s",
        )
        # At risk from 90% of the line: 0.9 x 0.5 = 0.45.
        assert status_for(value, target, line=0.5) == expected

    @pytest.mark.parametrize(
        ("value", "expected"), [(1.0, ON_TRACK), (0.98, ON_TRACK), (0.979, OFF_TRACK)]
    )
    def test_a_tolerance_counts_a_target_as_met_that_close(
        self, value: float, expected: str
    ) -> None:
        target = Target(label="r", value=1.0, comparison=">=", tolerance=0.02, source="s")
        assert status_for(value, target) == expected

    def test_too_small_a_sample_is_no_data_and_before_the_start_is_not_started(self) -> None:
        target = Target(label="x", value=0.5, comparison=">", min_sample=20, source="s")
        assert status_for(0.9, target, sample=19) == NO_DATA
        assert status_for(0.9, target, sample=20) == ON_TRACK
        assert status_for(0.1, target, sample=20) == OFF_TRACK
        assert status_for(0.9, target, started=False) == NOT_STARTED

    def test_no_value_is_no_data_and_no_target_is_monitored(self) -> None:
        target = Target(label="x", value=0.5, comparison=">", source="s")
        assert status_for(None, target) == NO_DATA
        assert status_for(0.5, None) == MONITORED

    def test_a_dated_target_needs_its_start_phase(self) -> None:
        with pytest.raises(ValueError, match="judged_from"):
            Target(label="m", value=0.7, comparison=">=", within_days=183, source="s")

    def test_the_target_line_ramps_from_the_announcement(self) -> None:
        loaded = config()
        announcement = loaded.campaign.phases.announcement
        assert migration_target_line(loaded, date(2027, 1, 1)) == 0.0
        assert migration_target_line(loaded, announcement) == 0.0
        assert migration_target_line(loaded, date(2027, 4, 11)) == pytest.approx(0.7 / 3)
        assert migration_target_line(loaded, date(2028, 1, 1)) == pytest.approx(0.7)


class TestSnapshot:
    def test_snapshots_are_idempotent_and_updated(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert snapshot_metrics(db.engine, result=result) == len(result.values)
        assert snapshot_metrics(db.engine, result=result) == len(result.values)
        assert db.count("metric_snapshot") == len(result.values)

        # Account 4 migrates on 04-10: the same day's run replaces the values in place.
        with db.engine.begin() as conn:
            conn.execute(
                text(
                    "UPDATE account SET migration_state = 'migrated', migrated_on = :day "
                    "WHERE id = 4"
                ),
                {"day": date(2027, 4, 10)},
            )
        again = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert again.get("migration_rate").numerator == 3
        snapshot_metrics(db.engine, result=again)
        assert db.count("metric_snapshot") == len(again.values)
        with db.engine.connect() as conn:
            rows = conn.execute(
                select(
                    METRIC_SNAPSHOT.c.segment, METRIC_SNAPSHOT.c.value, METRIC_SNAPSHOT.c.target
                ).where(METRIC_SNAPSHOT.c.metric == "migration_rate")
            ).all()
        assert {segment: (value, target) for segment, value, target in rows} == {
            "all": (0.5, 0.7),  # 3/6
            "early_adopter": (0.5, 0.7),
            "standard": (0.5, 0.7),  # 4 is standard
            "conservative": (0.5, 0.7),
            "unsegmented": (None, 0.7),
        }

    def test_another_day_is_another_row(self, db: Database, campaign: HeraldConfig) -> None:
        today = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        snapshot_metrics(db.engine, result=today)
        earlier = compute_metrics(db.engine, config=campaign, as_of=date(2027, 3, 1))
        snapshot_metrics(db.engine, result=replace(earlier, values=earlier.values[:3]))
        assert db.count("metric_snapshot") == len(today.values) + 3


class TestRefusal:
    def test_compute_refuses_while_a_source_is_rejected(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        reject(db.engine)
        with pytest.raises(SourceRejected, match="adoption_pct") as raised:
            compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert "expect_table_columns_to_match_set" in str(raised.value)
        assert "adoption" in str(raised.value)


@pytest.mark.usefixtures("prefect_server")
class TestFlowAndCli:
    def test_flow_snapshots_and_publishes_the_artifact(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        result = metrics_flow(as_of=AS_OF)
        assert result.get("message_reach").numerator == 5
        assert db.count("metric_snapshot") == len(result.values)
        artifact = Artifact.get("success-metrics")
        assert artifact is not None
        data = str(artifact.data)
        assert f"Success metrics as of {AS_OF}" in data
        assert "| message_reach | 83.3% | >= 100% (tol. 2 pts) | off track | 5 / 6 |" in data
        assert "| migration_rate | 33.3% | >= 70% (line now 23.3%) | on track | 2 / 6 |" in data
        # 10 messages are too few to judge a spam rate (min_sample 500 in targets.yaml).
        assert "| spam_complaint_rate | 10.0% | < 0.1% (limit 0.3%) | no data | 1 / 10 |" in data
        assert "| preview | 3 | 2 | 2 | 0 | 1 |" in data
        assert campaign.campaign.id in data
        assert result.definitions["engagement_rate"] in data

    @pytest.mark.usefixtures("campaign")
    def test_flow_fails_naming_the_column_and_computes_nothing(self, db: Database) -> None:
        reject(db.engine)
        with pytest.raises(SourceRejected, match="adoption_pct"):
            metrics_flow(as_of=AS_OF)
        assert db.count("metric_snapshot") == 0

    @pytest.mark.usefixtures("campaign")
    def test_cli_prints_overall_and_segment_columns(self) -> None:
        outcome = CliRunner().invoke(metrics_app, ["show", "--as-of", AS_OF.isoformat()])
        assert outcome.exit_code == 0, outcome.output
        rows = [line for line in outcome.output.splitlines() if "│ message_reach " in line]
        cells = [[cell.strip() for cell in row.strip("│ ").split("│")] for row in rows]
        # The overall table, then the per-segment one (80 columns: every value on one line).
        assert cells == [
            ["message_reach", "83.3%", ">= 100%", "off track", "5 / 6"],  # "(tol. 2 pts)" below
            ["message_reach", "100.0%", "50.0%", "100.0%", "-"],
        ]
        assert "(tol. 2 pts)" in outcome.output
        assert "Per segment (segments as of 2027-01-05)" in outcome.output
        for column in ["early_ad", "standard", "conservat", "unsegmen"]:  # folded at 80 columns
            assert column in outcome.output
        assert "Funnel" in outcome.output
        assert "Engagement rate" in outcome.output

    @pytest.mark.usefixtures("campaign")
    def test_cli_exits_2_naming_the_column(self, db: Database) -> None:
        reject(db.engine)
        outcome = CliRunner().invoke(metrics_app, ["show", "--as-of", AS_OF.isoformat()])
        assert outcome.exit_code == 2, outcome.output
        assert "adoption_pct" in outcome.output
        assert db.count("metric_snapshot") == 0


class TestScale:
    def test_a_large_event_table_is_counted_exactly(self, db: Database) -> None:
        from bench.metrics import Shape, generate

        shape = Shape(events=200_000)
        generate(db.engine, shape)
        result = compute_metrics(db.engine, config=config(), as_of=shape.as_of)
        expected = shape.expected()
        assert result.get("hard_bounce_rate").numerator == expected["hard"]
        assert result.get("hard_bounce_rate").denominator == expected["sent"]
        assert result.get("spam_complaint_rate").numerator == expected["spam"]
        assert result.get("unsubscribe_rate").numerator == expected["unsub"]
        assert sum(row.delivered for row in result.funnel) == expected["delivered"]
        assert sum(row.clicked for row in result.funnel) == expected["clicked"]
        assert result.get("message_reach").numerator == expected["reached_accounts"]
        assert result.get("message_reach").denominator == expected["active_accounts"]
        assert db.count("email_event") == shape.events


class TestSegmentsAndStages:
    """The counts are summed one segment at a time over per-account stages kept in temporary
    tables for one computation (``herald.report.metrics.queries``)."""

    def test_without_a_segmentation_every_account_is_unsegmented(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        with db.engine.begin() as conn:
            conn.execute(delete(SEGMENT_ASSIGNMENT))
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert result.segmented_on is None
        reach = ratios_of(result, "message_reach")
        # The six active accounts, five reached (test_reach), all in 'unsegmented'.
        assert reach["all"] == reach["unsegmented"] == (5, 6)
        assert {reach[name] for name in ("early_adopter", "standard", "conservative")} == {(0, 0)}

    def test_no_unsegmented_column_when_every_account_has_a_segment(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        with db.engine.begin() as conn:
            conn.execute(
                insert(SEGMENT_ASSIGNMENT).values(
                    account_id=6,
                    as_of=date(2027, 1, 5),
                    segment="standard",
                    rule="test",
                    readiness="ready",
                    readiness_rule="test",
                )
            )
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert result.segments == [name for name in SEGMENTS if name != "unsegmented"]
        # Account 6 churned: it adds to no count of its new segment's reach.
        assert ratios_of(result, "message_reach")["standard"] == (1, 2)

    def test_the_stages_are_gone_after_a_computation(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        engine = db.engine
        stage_names = [table.name for table, _ in stages(CAMPAIGN, AS_OF, AFTER)]

        def present(conn: Connection) -> list[str]:
            """The stage tables this connection sees (read in a transaction of its own when
            none is open, which ends with the read)."""
            with contextlib.nullcontext() if conn.in_transaction() else conn.begin():
                return [name for name in stage_names if engine.dialect.has_table(conn, name)]

        with engine.connect() as conn:
            # Filled inside (on either database), gone after.
            with conn.begin(), _staged(conn, campaign=CAMPAIGN, as_of=AS_OF, cutoff=AFTER):
                assert present(conn) == stage_names
            assert present(conn) == []
            # And after a whole computation, on this connection (SQLite's path stages them).
            with conn.begin():
                counted = _counts(conn, config=campaign, as_of=AS_OF)
            assert counted[0]["standard"]["active"] == 2
            assert present(conn) == []

    def test_a_failed_computation_leaves_nothing_in_the_way_of_the_next(
        self, db: Database, campaign: HeraldConfig
    ) -> None:
        expected = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        with db.engine.connect() as conn:
            with (
                pytest.raises(RuntimeError, match="interrupted"),
                conn.begin(),
                _staged(conn, campaign=CAMPAIGN, as_of=AS_OF, cutoff=AFTER),
            ):
                raise RuntimeError("interrupted")
            # The same connection (a pooled SQLite connection keeps its temporary tables)
            # computes again, exactly.
            with conn.begin():
                again, _, _ = _counts(conn, config=campaign, as_of=AS_OF)
        result = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        assert result == expected
        assert again["early_adopter"]["reached"] == 2

    @pytest.mark.parametrize("parts", [2, 3, 7, 9])
    def test_counted_in_parts_the_accounts_add_up_to_the_whole(
        self,
        db: Database,
        campaign: HeraldConfig,
        parts: int,
        monkeypatch: pytest.MonkeyPatch,
    ) -> None:
        """SQLite counts the accounts in parts side by side, each part on a connection of
        its own reading the same snapshot: any number of parts gives what one gives (7: one
        account each; 9: more parts than accounts). Postgres ignores the parts."""
        monkeypatch.setattr(compute, "SQLITE_PARTS", 1)
        whole = compute_metrics(db.engine, config=campaign, as_of=AS_OF)
        monkeypatch.setattr(compute, "SQLITE_PARTS", parts)
        assert compute_metrics(db.engine, config=campaign, as_of=AS_OF) == whole
        assert ratios_of(whole, "message_reach")["all"] == (5, 6)  # test_reach

    @pytest.mark.usefixtures("campaign")
    def test_the_parts_cover_every_account_once_in_shares_of_about_one_size(
        self, db: Database
    ) -> None:
        with db.engine.connect() as conn:
            ids = sorted(conn.execute(select(ACCOUNT.c.id)).scalars())
            assert len(ids) == 7
            for count in (1, 2, 3, 7, 9):
                spans = id_spans(conn, ACCOUNT.c.id, count)
                shares = [
                    [i for i in ids if span is None or span[0] <= i <= span[1]] for span in spans
                ]
                assert sorted(i for share in shares for i in share) == ids
                assert len(spans) == min(count, len(ids))
                assert max(map(len, shares)) - min(map(len, shares)) <= 1
            conn.execute(delete(ACCOUNT))  # none: one part, every id
            assert id_spans(conn, ACCOUNT.c.id, 3) == [(-(2**63), 2**63 - 1)]
            conn.rollback()
