"""The report's verdict: each target judged by the rule it prints, and a headline that
follows the headline targets only (``herald.report.verdict``)."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from herald.config import HeraldConfig, Target
from herald.report.metrics.results import (
    AT_RISK,
    NO_DATA,
    NOT_STARTED,
    OFF_TRACK,
    ON_TRACK,
    MetricValue,
)
from herald.report.verdict import Judgement, attention, headline, judge, pace_per_day, rule
from tests.support.bases import config

ANNOUNCEMENT = date(2027, 2, 9)
DUE = ANNOUNCEMENT + timedelta(days=183)  # 2027-08-11
DAY = date(2027, 5, 10)  # 90 days in: the 70% line stands at 34.4%
LINE = 0.7 * 90 / 183

MIGRATION = Target(
    label="Migration rate",
    value=0.7,
    comparison=">=",
    within_days=183,
    judged_from="announcement",
    source="s",
)


@pytest.fixture(scope="module")
def loaded() -> HeraldConfig:
    return config()


def value(now: float | None, *, line: float | None = LINE, status: str = ON_TRACK) -> MetricValue:
    return MetricValue("migration_rate", "all", now, 0.7, ">=", status, 1, 100, None, line)


def history(four_weeks_ago: float, now: float) -> list[tuple[date, float | None]]:
    return [(DAY - timedelta(days=28), four_weeks_ago), (DAY, now)]


def judged(loaded: HeraldConfig, now: float, before: float | None) -> Judgement:
    points = [] if before is None else history(before, now)
    return judge(loaded, MIGRATION, value(now), as_of=DAY, history=points, headline=True)


class TestDatedTarget:
    def test_above_the_line_and_on_pace_is_on_track(self, loaded: HeraldConfig) -> None:
        # 40% now, 30% four weeks ago: +0.36 pts a day, 93 days left: 73.2% by 2027-08-11.
        found = judged(loaded, 0.40, 0.30)
        assert found.status == ON_TRACK
        assert found.projected == pytest.approx(0.40 + 0.10 / 28 * 93)
        assert found.why == "above its line (34.4%); reaches 73.2% by 2027-08-11 at the recent pace"

    def test_above_the_line_but_stalling_is_on_track_and_says_so(
        self, loaded: HeraldConfig
    ) -> None:
        found = judged(loaded, 0.40, 0.39)
        assert found.status == ON_TRACK
        assert (
            found.why
            == "above its line (34.4%); reaches only 43.3% by 2027-08-11 at the recent pace"
        )

    def test_below_the_line_but_catching_up_is_at_risk(self, loaded: HeraldConfig) -> None:
        found = judged(loaded, 0.30, 0.10)
        assert found.status == AT_RISK
        assert "below its line" in found.why and "reaches 96.4%" in found.why

    def test_below_the_line_and_short_of_pace_is_off_track(self, loaded: HeraldConfig) -> None:
        assert judged(loaded, 0.30, 0.29).status == OFF_TRACK

    def test_without_a_week_of_history_the_line_alone_decides(self, loaded: HeraldConfig) -> None:
        assert judged(loaded, 0.40, None).status == ON_TRACK
        assert judged(loaded, 0.30, None).status == OFF_TRACK
        assert judged(loaded, 0.30, None).why.endswith("too early for a pace")

    def test_a_target_already_met_needs_no_pace(self, loaded: HeraldConfig) -> None:
        assert judged(loaded, 0.75, 0.75).status == ON_TRACK

    def test_on_its_date_it_is_met_or_not(self, loaded: HeraldConfig) -> None:
        after = DUE + timedelta(days=1)
        met = judge(
            loaded, MIGRATION, value(0.71, line=0.7), as_of=after, history=[], headline=True
        )
        missed = judge(
            loaded, MIGRATION, value(0.69, line=0.7), as_of=after, history=[], headline=True
        )
        assert (met.status, met.why) == (ON_TRACK, "met (due 2027-08-11)")
        assert (missed.status, missed.why) == (OFF_TRACK, "69.0% against 70.0% (due 2027-08-11)")

    def test_not_started_and_no_data_pass_through(self, loaded: HeraldConfig) -> None:
        early = judge(
            loaded,
            MIGRATION,
            value(0.02, line=0.0, status=NOT_STARTED),
            as_of=ANNOUNCEMENT - timedelta(days=3),
            history=[],
            headline=True,
        )
        assert (early.status, early.why) == (NOT_STARTED, "judged from the announcement")
        empty = judge(
            loaded, MIGRATION, value(None, status=NO_DATA), as_of=DAY, history=[], headline=True
        )
        assert empty.status == NO_DATA


class TestPace:
    def test_the_pace_runs_from_the_oldest_point_of_the_last_four_weeks(self) -> None:
        points: list[tuple[date, float | None]] = [
            (DAY - timedelta(days=35), 0.0),  # too old
            (DAY - timedelta(days=21), 0.21),
            (DAY - timedelta(days=14), None),  # a week without a value
            (DAY - timedelta(days=7), 0.35),
            (DAY, 0.42),
        ]
        assert pace_per_day(points, DAY) == pytest.approx((0.42 - 0.21) / 21)

    def test_no_pace_without_a_point_a_week_back(self) -> None:
        assert pace_per_day([(DAY - timedelta(days=3), 0.1), (DAY, 0.2)], DAY) is None
        assert pace_per_day([(DAY - timedelta(days=7), 0.1)], DAY) is None


def _judgement(metric: str, status: str, *, lead: bool, phased: bool = True) -> Judgement:
    return Judgement(metric, metric, status, "why", lead, phased=phased)


class TestHeadline:
    def test_the_headline_is_the_worst_headline_target_and_ignores_the_rest(self) -> None:
        judgements = [
            _judgement("migration_rate", ON_TRACK, lead=True),
            _judgement("message_reach", AT_RISK, lead=True),
            _judgement("support_satisfaction", OFF_TRACK, lead=False),
        ]
        assert headline(judgements) == AT_RISK
        assert [j.metric for j in attention(judgements)] == ["support_satisfaction"]

    def test_every_headline_target_on_track_is_an_on_track_headline(self) -> None:
        judgements = [
            _judgement("migration_rate", ON_TRACK, lead=True),
            _judgement("message_reach", ON_TRACK, lead=True),
            _judgement("spam_complaint_rate", OFF_TRACK, lead=False),
        ]
        assert headline(judgements) == ON_TRACK

    def test_before_the_headline_targets_start_the_phase_targets_speak(self) -> None:
        """During the preview: early-adopter engagement (judged from the preview) decides;
        a guardrail off track (satisfaction) is attention, not the headline."""
        preview = [
            _judgement("migration_rate", NOT_STARTED, lead=True),
            _judgement("message_reach", NOT_STARTED, lead=True),
            _judgement("early_adopter_engagement", AT_RISK, lead=False),
            _judgement("support_satisfaction", OFF_TRACK, lead=False, phased=False),
            _judgement("spam_complaint_rate", NO_DATA, lead=False, phased=False),
        ]
        assert headline(preview) == AT_RISK
        assert headline([*preview[:2], *preview[3:]]) == NO_DATA
        assert [j.metric for j in attention(preview)] == [
            "early_adopter_engagement",
            "support_satisfaction",
        ]

    def test_a_headline_target_without_data_leaves_the_others_to_decide(self) -> None:
        judgements = [
            _judgement("migration_rate", ON_TRACK, lead=True),
            _judgement("message_reach", NO_DATA, lead=True),
        ]
        assert headline(judgements) == ON_TRACK

    def test_the_rule_names_the_headline_targets(self, loaded: HeraldConfig) -> None:
        text = rule(loaded)
        assert "migration rate and active customers reached" in text
        assert text.count(".") == 1 and text.endswith(".")  # one sentence
