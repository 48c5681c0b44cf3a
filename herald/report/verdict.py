"""The weekly report's verdict: each target judged by a rule leadership can read, and the
headline that follows from the targets that matter most (``targets.yaml`` ``headline``).

A *dated* target (``within_days`` after its ``judged_from`` phase) has a trajectory: a
straight line from zero on its first day to the target on its date. At or above that line
today: on track (where the pace of the last four weeks falls short of the target, the reason
says so). Below it: at risk if that pace still carries it to the target by its date, else off
track. On and after its date, it is met or not. Any other target is a level to hold, judged as
:func:`herald.report.metrics.definitions.status_for` does. Tolerances and minimum samples
come from ``targets.yaml``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import date, timedelta

from herald.config import HeraldConfig, Target
from herald.report.metrics.definitions import meets, target_date
from herald.report.metrics.display import display
from herald.report.metrics.results import (
    AT_RISK,
    NO_DATA,
    NOT_STARTED,
    OFF_TRACK,
    ON_TRACK,
    MetricsResult,
    MetricValue,
)

PACE_DAYS = 28
RULE = (
    "A target with a date is on track when it stands at or above its trajectory today, at risk "
    "when it is below it but the pace of the last four weeks still reaches the target by its "
    "date, and off track when neither holds; a level to hold (satisfaction, engagement, "
    "deliverability) is on track while it holds, at risk past it but short of its limit, and "
    "off track past the limit; the headline follows {headline} (before they start, the "
    "phase targets already judged; once the campaign has closed, met or missed)."
)
JUDGED = (ON_TRACK, AT_RISK, OFF_TRACK)
SEVERITY = {ON_TRACK: 0, AT_RISK: 1, OFF_TRACK: 2}


@dataclass(frozen=True)
class Judgement:
    """One target as the report judges it, with the reason in a few words."""

    metric: str
    label: str
    status: str
    why: str
    headline: bool
    line: float | None = None  # where a dated target should be today
    projected: float | None = None  # where the recent pace takes it by its date
    due: date | None = None  # a dated target's date
    phased: bool = False  # judged from a phase of the campaign (targets.yaml judged_from)


def pace_per_day(points: Sequence[tuple[date, float | None]], as_of: date) -> float | None:
    """The change per day over the last four weeks: from the oldest point at most
    ``PACE_DAYS`` back (at least a week back) to the value on ``as_of``; None without two
    such points."""
    known = [(day, value) for day, value in points if value is not None and day <= as_of]
    now = [value for day, value in known if day == as_of]
    if not now:
        return None
    earlier = [
        (day, value)
        for day, value in known
        if as_of - timedelta(days=PACE_DAYS) <= day <= as_of - timedelta(days=7)
    ]
    if not earlier:
        return None
    day, value = min(earlier)
    return (now[0] - value) / (as_of - day).days


def projection(value: float, pace: float | None, as_of: date, due: date) -> float | None:
    """Where ``value`` gets by ``due`` at ``pace`` per day (a share stops at 100%)."""
    if pace is None:
        return None
    return min(1.0, max(0.0, value + pace * max(0, (due - as_of).days)))


def judge(
    config: HeraldConfig,
    target: Target,
    value: MetricValue,
    *,
    as_of: date,
    history: Sequence[tuple[date, float | None]],
    headline: bool,
) -> Judgement:
    """Judge one target (``history``: its overall value by day, for the pace)."""
    label = target.label or value.metric

    def judged(
        status: str,
        why: str,
        *,
        line: float | None = None,
        projected: float | None = None,
        due: date | None = None,
    ) -> Judgement:
        phased = target.judged_from is not None
        return Judgement(value.metric, label, status, why, headline, line, projected, due, phased)

    if value.status == NOT_STARTED:
        return judged(NOT_STARTED, f"judged from the {target.judged_from}")
    if value.status == NO_DATA or value.value is None:
        sample = "" if value.denominator is None else f" ({value.denominator} so far)"
        return judged(NO_DATA, f"too few to judge yet{sample}")
    shown = display(value.metric, value.value)
    goal = display(value.metric, target.value)
    if not target.dated:
        if value.status == ON_TRACK:
            within = f" within {round(100 * target.tolerance, 4):g} pts" if target.tolerance else ""
            return judged(ON_TRACK, f"meets {goal}{within}")
        if value.status == AT_RISK:
            return judged(AT_RISK, f"past {goal}, short of the limit")
        return judged(OFF_TRACK, f"{shown} against {goal}")
    due = target_date(config, target)
    assert due is not None and value.line is not None
    line = value.line
    if as_of >= due:
        if meets(value.value, target):
            return judged(ON_TRACK, f"met (due {due})", line=line, due=due)
        return judged(OFF_TRACK, f"{shown} against {goal} (due {due})", line=line, due=due)
    ahead = value.value >= line - target.tolerance
    pace = pace_per_day(history, as_of)
    projected = projection(value.value, pace, as_of, due)
    if meets(value.value, target):
        reaches = True
    elif projected is None:
        reaches = ahead  # under a week of history: the trajectory alone
    else:
        reaches = meets(projected, target)
    status = ON_TRACK if ahead else AT_RISK if reaches else OFF_TRACK
    where = (
        f"above its line ({display(value.metric, line)})"
        if ahead
        else f"below its line ({display(value.metric, line)})"
    )
    if projected is None:
        going = "too early for a pace"
    else:
        verb = "reaches" if reaches else "reaches only"
        going = f"{verb} {display(value.metric, projected)} by {due} at the recent pace"
    return judged(status, f"{where}; {going}", line=line, projected=projected, due=due)


def judge_all(
    config: HeraldConfig, result: MetricsResult, history: dict[str, list[tuple[date, float | None]]]
) -> list[Judgement]:
    """Every target with a value, in the order of ``targets.yaml``."""
    headline = set(config.targets.headline)
    return [
        judge(
            config,
            target,
            result.get(metric),
            as_of=result.as_of,
            history=history.get(metric, []),
            headline=metric in headline,
        )
        for metric, target in config.targets.targets.items()
        if target.value is not None
    ]


def headline(judgements: Sequence[Judgement]) -> str:
    """The worst status among the headline targets that are judged. Before any of them has
    started (the preview runs before the announcement they count from), the worst among the
    phase targets already judged (early-adopter engagement, judged from the preview), never
    the guardrails (satisfaction, deliverability); 'no data' when nothing can be judged."""
    leading = [j.status for j in judgements if j.headline and j.status in JUDGED]
    if not leading and all(j.status == NOT_STARTED for j in judgements if j.headline):
        leading = [j.status for j in judgements if j.phased and j.status in JUDGED]
    if leading:
        return max(leading, key=SEVERITY.__getitem__)
    return NO_DATA


def attention(judgements: Sequence[Judgement]) -> list[Judgement]:
    """Targets outside the headline that are at risk or off track."""
    return [j for j in judgements if not j.headline and j.status in (AT_RISK, OFF_TRACK)]


def rule(config: HeraldConfig) -> str:
    """The rule, in one sentence, naming the headline targets."""
    names = [
        (config.targets.targets[metric].label or metric).lower()
        for metric in config.targets.headline
    ]
    listed = names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]
    return RULE.format(headline=listed)
