"""Campaign as code: the YAML files in ``config/``, validated before anything runs.

``load_config(directory)`` reads ``campaign.yaml``, ``segments.yaml``, ``evidence.yaml``,
``targets.yaml`` and ``telemetry.yaml``, validates each against its pydantic model, checks the
references between them, and either returns one :class:`HeraldConfig` or raises
:class:`ConfigError` listing every problem as ``file:line: key.path: reason``. Unknown keys
are errors (a typo must not be silently ignored).

This package's public face: import from ``herald.config`` (its modules are how it is kept,
one per file plus loading, not an API). ``names`` holds the vocabularies the code shares
(phases, messages, sources ...), ``base`` the checked kinds of value, ``problems`` the error,
``combined`` the whole config and its cross-file checks, ``loading`` the YAML reading.
"""

from herald.config.base import Address, AttributeKey, HeaderText, Scalar, Slug, TimezoneName
from herald.config.campaign import (
    AtRisk,
    Audience,
    Breaker,
    CampaignConfig,
    DeliveryWindow,
    Escalation,
    EscalationStep,
    FrequencyCap,
    Links,
    Notices,
    PhaseDates,
    Products,
    Report,
    Sender,
    Sending,
    Stories,
)
from herald.config.combined import HeraldConfig
from herald.config.evidence import EvidenceConfig, Figure
from herald.config.loading import load_config
from herald.config.names import (
    DEADLINE_EXTENDED,
    PHASES,
    SOURCES,
    THANK_YOU,
    WEEKDAYS,
    WEEKLY_REPORT,
    AccountField,
    EvidenceKey,
    MessageKind,
    MetricKey,
    PhaseName,
    RoleName,
    SourceName,
    Weekday,
)
from herald.config.problems import ConfigError, ConfigProblem
from herald.config.segments import (
    Condition,
    Readiness,
    ReadinessLevel,
    ReadinessRule,
    SegmentDef,
    SegmentRule,
    SegmentsConfig,
)
from herald.config.targets import Target, TargetsConfig
from herald.config.telemetry import (
    AdoptionRules,
    ContractsConfig,
    RowCountCheck,
    TelemetryConfig,
    WebhookConfig,
)

__all__ = [
    "DEADLINE_EXTENDED",
    "PHASES",
    "SOURCES",
    "THANK_YOU",
    "WEEKDAYS",
    "WEEKLY_REPORT",
    "AccountField",
    "Address",
    "AdoptionRules",
    "AtRisk",
    "AttributeKey",
    "Audience",
    "Breaker",
    "CampaignConfig",
    "Condition",
    "ConfigError",
    "ConfigProblem",
    "ContractsConfig",
    "DeliveryWindow",
    "Escalation",
    "EscalationStep",
    "EvidenceConfig",
    "EvidenceKey",
    "Figure",
    "FrequencyCap",
    "HeaderText",
    "HeraldConfig",
    "Links",
    "MessageKind",
    "MetricKey",
    "Notices",
    "PhaseDates",
    "PhaseName",
    "Products",
    "Readiness",
    "ReadinessLevel",
    "ReadinessRule",
    "Report",
    "RoleName",
    "RowCountCheck",
    "Scalar",
    "SegmentDef",
    "SegmentRule",
    "SegmentsConfig",
    "Sender",
    "Sending",
    "Slug",
    "SourceName",
    "Stories",
    "Target",
    "TargetsConfig",
    "TelemetryConfig",
    "TimezoneName",
    "WebhookConfig",
    "Weekday",
    "load_config",
]
