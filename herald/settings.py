"""Runtime settings: one object, read from the environment (prefix ``HERALD_``) and ``.env``.

Campaign content lives in ``config/*.yaml`` (see :mod:`herald.config`); this object holds
only what differs between machines: where the database is, where config lives, which
transport sends, and the secrets, which never leave it in clear text.
"""

from __future__ import annotations

from enum import StrEnum
from functools import lru_cache
from pathlib import Path

from pydantic import AliasChoices, Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class TransportName(StrEnum):
    """Which transport delivers messages."""

    OUTBOX = "outbox"  # .eml files under var/outbox: the safe default
    SENDGRID = "sendgrid"


class Settings(BaseSettings):
    """Herald's settings; every field can be set as ``HERALD_<NAME>`` or in ``.env``."""

    model_config = SettingsConfigDict(
        env_prefix="HERALD_",
        env_file=".env",
        env_file_encoding="utf-8",
        extra="ignore",
    )

    var_dir: Path = Field(
        default=Path("var"),
        description="Working directory for the database, outbox, reports and rejects.",
    )
    database_url: str = Field(
        default="",
        description="SQLAlchemy URL; empty means the SQLite file <var_dir>/herald.db.",
    )
    config_dir: Path = Field(default=Path("config"), description="Campaign-as-code YAML files.")
    templates_dir: Path = Field(default=Path("templates"), description="Jinja2 message templates.")
    transport: TransportName = Field(default=TransportName.OUTBOX)
    sendgrid_api_host: str = Field(default="https://api.sendgrid.com")
    sendgrid_api_key: SecretStr | None = Field(
        default=None,
        # SendGrid's own tooling reads SENDGRID_API_KEY; accept it without our prefix too.
        validation_alias=AliasChoices("SENDGRID_API_KEY", "HERALD_SENDGRID_API_KEY"),
    )
    webhook_public_key: str | None = Field(
        default=None,
        description="SendGrid's Event Webhook verification key (base64 DER, P-256).",
    )
    unsubscribe_secret: SecretStr | None = Field(
        default=None,
        description="Signs unsubscribe links (the endpoint must have the same one).",
    )
    unsubscribe_old_secrets: SecretStr | None = Field(
        default=None,
        description="Earlier signing keys, comma-separated: links they signed still work.",
    )
    import_chunk_rows: int = Field(
        default=20_000, gt=0, description="Rows staged per round trip during customer import."
    )

    @field_validator("sendgrid_api_key", "unsubscribe_secret")
    @classmethod
    def _empty_key_is_none(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and not value.get_secret_value().strip():
            return None
        return value

    @property
    def effective_database_url(self) -> str:
        """The database URL to connect to (the default SQLite file when none is set)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{self.var_dir / 'herald.db'}"


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """The process-wide settings (cached; tests clear the cache after changing the env)."""
    return Settings()
