"""What each metric means, and how a value stands against its target.

The definitions are stated in the report beside the values, in the words of what the SQL in
:mod:`herald.report.metrics.queries` counts; a change to one is a change to the other.
"""

from __future__ import annotations

from datetime import date

from herald.config import HeraldConfig, Target
from herald.report.metrics.results import AT_RISK, MONITORED, NO_DATA, OFF_TRACK, ON_TRACK

PERFORMANCE_ATTRIBUTE = "performance_focused"
AT_RISK_SHARE_OF_LINE = 0.9


def definitions(config: HeraldConfig) -> dict[str, str]:
    """What each metric means, exactly as computed (the report states these)."""
    campaign = config.campaign.id
    by = "by the end of the as-of day (UTC)"
    sent = f"an accepted delivery of campaign {campaign} (ledger state 'accepted', sent {by})"
    engaged = (
        "an 'open' or 'click' event from SendGrid linked to one of the campaign's deliveries "
        f"and occurred {by} (opens as SendGrid reports them, machine opens such as Apple Mail "
        "Privacy Protection included)"
    )
    migrated = "migration_state 'migrated' with migrated_on on or before the as-of day"
    announcement = config.campaign.phases.announcement
    migration_target = config.targets.targets.get("migration_rate")
    ramp = (
        f"{migration_target.value} x min(1, days since the announcement ({announcement}) / "
        f"{migration_target.within_days}); 0 before the announcement"
        if migration_target is not None and migration_target.value is not None
        else "no migration target configured"
    )
    return {
        "message_reach": f"Share of active accounts with at least {sent}, any phase.",
        "message_reach_contacts": f"Share of contacts of active accounts with at least {sent}.",
        "reach_<phase>": (
            f"Share of active accounts with {sent} in that phase (sunset notices "
            "'sunset-t*' count as the sunset phase)."
        ),
        "engagement_rate": (
            f"Among reached accounts (active accounts with {sent}), the share where at least "
            f"one contact had {engaged}."
        ),
        "engagement_rate_contacts": (
            f"Among reached contacts of active accounts, the share that had {engaged}."
        ),
        "early_adopter_engagement": (
            f"Among active accounts whose attribute {PERFORMANCE_ATTRIBUTE} is the JSON value "
            f"true, the share that engaged ({engaged}) or adopted (an adoption observation "
            "with adoption_pct > 0 on or before the as-of day)."
        ),
        "migration_rate": (
            f"Share of active accounts with {migrated}; its status is judged against "
            "migration_target_line (on track at or above it, at risk at or above 90% of it)."
        ),
        "migration_target_line": f"Where the adoption curve should be by now: {ramp}.",
        "support_utilization": (
            f"Support tickets of active accounts opened {by}, per 100 active accounts "
            "(support_utilization:<category>: the same per ticket category)."
        ),
        "support_satisfaction": f"Share of satisfaction survey responses {by} with CSAT >= 4.",
        "performance_validation": (
            f"Among active accounts with {migrated}, the share whose latest performance report "
            f"({by}) shows new_import_ms < legacy_import_ms; no report counts as not validated."
        ),
        "performance_reported": (
            "Among the same migrated accounts, the share with at least one performance report "
            "(the numerator is how many)."
        ),
        "hard_bounce_rate": (
            f"Accepted deliveries with a 'bounce' event whose type is not 'blocked' ({by}), "
            "per accepted delivery (distinct deliveries)."
        ),
        "spam_complaint_rate": (
            f"Accepted deliveries with a 'spamreport' event ({by}), per accepted delivery."
        ),
        "unsubscribe_rate": (
            f"Accepted deliveries with an 'unsubscribe' or 'group_unsubscribe' event ({by}), "
            "per accepted delivery."
        ),
        "feedback_quality": (
            f"Share of survey responses {by} with a comment that is not empty or blank."
        ),
        "funnel": (
            "Per phase: sent = accepted deliveries; delivered / opened / clicked = accepted "
            "deliveries with at least one such event; migrated = reached active accounts of "
            "the phase that have migrated. Deliverability and funnel counts include contacts "
            "of accounts that churned since."
        ),
        "segments": (
            "An account's segment is the one of the latest segmentation on or before the as-of "
            "day; rows of accounts outside it count in 'all' and 'unsegmented'."
        ),
    }


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
    metric: str, value: float | None, target: Target | None, line: float | None = None
) -> str:
    """How a value stands against its target.

    - no value (zero denominator): 'no data'; no target: 'monitored';
    - migration_rate: against the target line: 'on track' at or above it, 'at risk' at or
      above 90% of it, else 'off track';
    - a target with a limit (spam): 'off track' at or past the limit, 'at risk' past the
      value, else 'on track';
    - otherwise 'on track' when the comparison holds, else 'off track'.
    """
    if value is None:
        return NO_DATA
    if target is None or target.value is None or target.comparison is None:
        return MONITORED
    if metric == "migration_rate" and line is not None:
        if value >= line:
            return ON_TRACK
        return AT_RISK if value >= AT_RISK_SHARE_OF_LINE * line else OFF_TRACK
    if target.limit is not None:
        at_or_past = ">=" if target.comparison in ("<", "<=") else "<="
        if _holds(value, at_or_past, target.limit):
            return OFF_TRACK
        return ON_TRACK if _holds(value, target.comparison, target.value) else AT_RISK
    return ON_TRACK if _holds(value, target.comparison, target.value) else OFF_TRACK


def migration_target_line(config: HeraldConfig, as_of: date) -> float | None:
    """The migration target scaled to the time elapsed since the announcement (None: no target)."""
    target = config.targets.targets.get("migration_rate")
    if target is None or target.value is None:
        return None
    days = (as_of - config.campaign.phases.announcement).days
    if days <= 0:
        return 0.0
    if target.within_days is None:
        return target.value
    return target.value * min(1.0, days / target.within_days)
