"""``telemetry.yaml``: the webhook receiver, data-contract thresholds and adoption rules."""

from __future__ import annotations

from pydantic import Field

from herald.config.base import StrictModel
from herald.config.names import SourceName


class WebhookConfig(StrictModel):
    """The SendGrid Event Webhook receiver."""

    max_body_bytes: int = Field(default=5 * 1024 * 1024, gt=0)
    tolerance_seconds: int = Field(
        default=300, gt=0, description="How far a signature's timestamp may be from now."
    )


class RowCountCheck(StrictModel):
    """A batch's row count against the median of the source's recent loaded batches."""

    recent_batches: int = Field(default=5, ge=1)
    min_ratio: float = Field(default=0.2, ge=0)
    max_ratio: float = Field(default=5.0, gt=0)


class ContractsConfig(StrictModel):
    """What rejects a whole batch instead of quarantining its bad rows."""

    max_bad_row_share: float = Field(default=0.05, ge=0, le=1)
    row_count: RowCountCheck = Field(default_factory=RowCountCheck)


class AdoptionRules(StrictModel):
    """How adoption figures move an account's migration state."""

    migrated_at_pct: float = Field(
        default=100.0, gt=0, le=100, description="At or above: the account has migrated."
    )


class TelemetryConfig(StrictModel):
    """``telemetry.yaml``: the webhook receiver, data-contract thresholds, adoption rules."""

    webhook: WebhookConfig = Field(default_factory=WebhookConfig)
    contracts: ContractsConfig = Field(default_factory=ContractsConfig)
    adoption: AdoptionRules = Field(default_factory=AdoptionRules)
    depends_on: dict[str, list[SourceName]] = Field(
        default_factory=dict,
        description="Flow -> sources whose last batch must have passed its contract.",
    )
