"""Prefect flows: each composes tasks into one job Herald runs on a schedule or on demand."""

import herald  # noqa: F401 - sets the analytics-off defaults before Prefect reads its settings
