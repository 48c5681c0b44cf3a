"""The names the config files and the code share: phases, messages, roles, weekdays, metrics,
evidence figures and telemetry sources.

Each is a ``Literal`` (so pydantic refuses any other value with the allowed ones listed, and
mypy checks the code's use of them) and, where the code walks them in order, a tuple.
"""

from __future__ import annotations

from typing import Literal

PhaseName = Literal["preview", "announcement", "deprecation", "sunset"]
PHASES: tuple[PhaseName, ...] = ("preview", "announcement", "deprecation", "sunset")
# What a message can be: a phase, the thank-you an account gets when it migrates, the
# notice that its deadline moved later, or the weekly report to leadership.
MessageKind = Literal[
    "preview",
    "announcement",
    "deprecation",
    "sunset",
    "thank_you",
    "deadline_extended",
    "weekly_report",
]
THANK_YOU: MessageKind = "thank_you"
DEADLINE_EXTENDED: MessageKind = "deadline_extended"
WEEKLY_REPORT: MessageKind = "weekly_report"  # to leadership, not customers
RoleName = Literal["executive", "technical", "other"]

Weekday = Literal["mon", "tue", "wed", "thu", "fri", "sat", "sun"]
WEEKDAYS: tuple[Weekday, ...] = ("mon", "tue", "wed", "thu", "fri", "sat", "sun")

# Account columns a rule may test; everything else lives in the free-form attributes.
AccountField = Literal["external_id", "tier", "region", "industry", "migration_state"]

EvidenceKey = Literal[
    "import_speedup", "import_memory_reduction", "execution_speedup", "average_improvement"
]

MetricKey = Literal[
    "message_reach",
    "engagement_rate",
    "early_adopter_engagement",
    "migration_rate",
    "support_satisfaction",
    "support_utilization",
    "performance_validation",
    "feedback_quality",
    "hard_bounce_rate",
    "spam_complaint_rate",
    "unsubscribe_rate",
]

SourceName = Literal["adoption", "support", "survey", "performance"]
SOURCES: tuple[SourceName, ...] = ("adoption", "support", "survey", "performance")
