"""Prefect tasks: thin wrappers that add orchestration policy to Herald's plain functions."""

import herald  # noqa: F401 - sets the analytics-off defaults before Prefect reads its settings
