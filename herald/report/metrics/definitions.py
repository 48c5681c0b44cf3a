"""What each metric means, and how a value stands against its target.

The definitions are stated in the report beside the values, in plain words; the exact rule of
each, as the SQL in :mod:`herald.report.metrics.queries` counts it, is in docs/report.md (a
change to one is a change to the other).
"""

from __future__ import annotations

from datetime import date, timedelta

from herald.config import HeraldConfig, Target
from herald.report.metrics.results import (
    AT_RISK,
    MONITORED,
    NO_DATA,
    NOT_STARTED,
    OFF_TRACK,
    ON_TRACK,
)

PERFORMANCE_ATTRIBUTE = "performance_focused"
AT_RISK_SHARE_OF_LINE = 0.9


def definitions(config: HeraldConfig) -> dict[str, str]:
    """What each metric means, in plain words (the report states these; the exact rule of
    each, as the SQL counts it, is in docs/report.md)."""
    migration = config.targets.targets.get("migration_rate")
    line = (
        f"{_share(migration.value)} of active accounts {migration.within_days} days after the "
        f"{migration.judged_from} ({trajectory_start(config, migration)}), rising in a straight "
        "line from zero"
        if migration is not None and migration.dated and migration.value is not None
        else "no dated migration target is configured"
    )
    return {
        "message_reach": (
            "Of the active accounts the campaign can write to, the share that has received at "
            "least one message. Accounts with no contact left to write to (every one "
            "unsubscribed, bounced or suppressed) and accounts that migrated before any "
            "message reached them are counted apart, not held against it."
        ),
        "message_reach_contacts": "The share of active accounts' contacts that got a message.",
        "reach_<phase>": "The share of active accounts that got that phase's message.",
        "engagement_rate": (
            "Of the accounts that got a message, the share where someone opened or clicked one "
            "(opens as SendGrid reports them, including automatic opens by some mail apps)."
        ),
        "engagement_rate_contacts": "The same, counted per contact instead of per account.",
        "early_adopter_engagement": (
            "Of the active performance-focused accounts, the share that opened or clicked a "
            "message or started using the new product."
        ),
        "migration_rate": "The share of active accounts that have moved to the new product.",
        "migration_target_line": f"Where migration should be by now: {line}.",
        "unreachable_accounts": (
            "Active accounts with no contact left to write to (a share of active accounts)."
        ),
        "moved_before_reached": ("Active accounts that migrated before any message reached them."),
        "support_utilization": "Support tickets opened by active accounts, per 100 of them.",
        "support_satisfaction": "The share of survey answers scoring 4 or 5 out of 5.",
        "performance_validation": (
            "Of the migrated accounts that sent us a performance measurement, the share whose "
            "latest one shows faster imports than on the legacy product."
        ),
        "performance_reported": "The share of migrated accounts that sent a measurement.",
        "hard_bounce_rate": "The share of messages sent that bounced for good.",
        "spam_complaint_rate": "The share of messages sent that a recipient marked as spam.",
        "unsubscribe_rate": "The share of messages sent after which the recipient unsubscribed.",
        "feedback_quality": "The share of survey answers that came with a written comment.",
        "funnel": (
            "Messages per phase: sent, then how many were delivered, opened and clicked; "
            "'accounts migrated' counts the accounts that got the phase's message and have "
            "since migrated."
        ),
        "segments": "Each account counts in the segment it was last assigned.",
    }


def _share(value: float) -> str:
    return f"{100 * value:g}%"


def _holds(value: float, comparison: str, threshold: float) -> bool:
    if comparison == ">":
        return value > threshold
    if comparison == ">=":
        return value >= threshold
    if comparison == "<":
        return value < threshold
    if comparison == "<=":
        return value <= threshold
    raise ValueError(f"unknown comparison {comparison!r}")


def status_for(
    value: float | None,
    target: Target | None,
    line: float | None = None,
    *,
    sample: int | None = None,
    started: bool = True,
) -> str:
    """How a value stands today against its target (the weekly report also weighs the pace
    of dated targets, :mod:`herald.report.verdict`).

    - before its ``judged_from`` phase: 'not started'; no value, or fewer than
      ``min_sample`` in the denominator: 'no data'; no target: 'monitored';
    - a dated target: 'on track' at or above today's trajectory ``line`` (less its
      tolerance), 'at risk' at or above 90% of it, else 'off track';
    - a target with a limit (spam): 'off track' at or past the limit, 'at risk' past the
      value, else 'on track';
    - otherwise 'on track' when the comparison holds (within the tolerance), else 'off track'.
    """
    if target is not None and target.value is not None and not started:
        return NOT_STARTED
    if value is None:
        return NO_DATA
    if target is None or target.value is None or target.comparison is None:
        return MONITORED
    if sample is not None and sample < target.min_sample:
        return NO_DATA
    if target.dated and line is not None:
        if value >= line - target.tolerance:
            return ON_TRACK
        return AT_RISK if value >= AT_RISK_SHARE_OF_LINE * line else OFF_TRACK
    if target.limit is not None:
        at_or_past = ">=" if target.comparison in ("<", "<=") else "<="
        if _holds(value, at_or_past, target.limit):
            return OFF_TRACK
        return ON_TRACK if meets(value, target) else AT_RISK
    return ON_TRACK if meets(value, target) else OFF_TRACK


def meets(value: float, target: Target) -> bool:
    """Whether ``value`` meets the target, within its tolerance."""
    assert target.value is not None and target.comparison is not None
    if target.comparison in (">", ">="):
        return _holds(value + target.tolerance, target.comparison, target.value)
    return _holds(value - target.tolerance, target.comparison, target.value)


def trajectory_start(config: HeraldConfig, target: Target) -> date | None:
    """The first day a target is judged (its ``judged_from`` phase's first day)."""
    if target.judged_from is None:
        return None
    start: date = getattr(config.campaign.phases, target.judged_from)
    return start


def target_date(config: HeraldConfig, target: Target) -> date | None:
    """The day a dated target should be reached."""
    start = trajectory_start(config, target)
    if start is None or target.within_days is None:
        return None
    return start + timedelta(days=target.within_days)


def trajectory_line(config: HeraldConfig, target: Target | None, as_of: date) -> float | None:
    """Where a dated target should stand on ``as_of``: a straight line from zero on its
    start day to its value on its date (None: not a dated target)."""
    if target is None or not target.dated or target.value is None:
        return None
    start = trajectory_start(config, target)
    assert start is not None and target.within_days is not None
    days = (as_of - start).days
    if days <= 0:
        return 0.0
    return target.value * min(1.0, days / target.within_days)


def started(config: HeraldConfig, target: Target | None, as_of: date) -> bool:
    """Whether a target is judged on ``as_of`` (on or after its start day)."""
    start = None if target is None else trajectory_start(config, target)
    return start is None or as_of >= start


def migration_target_line(config: HeraldConfig, as_of: date) -> float | None:
    """The migration target's trajectory on ``as_of`` (None: no dated migration target)."""
    target = config.targets.targets.get("migration_rate")
    if target is not None and target.value is not None and not target.dated:
        return target.value
    return trajectory_line(config, target, as_of)
