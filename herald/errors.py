"""Expected failures: errors that explain themselves in one message, never with a traceback.

Each says what is wrong and what to do (a config key, a template line, a missing key, a
telemetry source that failed its contract). The CLI prints the message and exits with the
README's code; Prefect's run loggers keep the message but drop the traceback
(:func:`quiet_expected_tracebacks`), so neither a terminal nor the Prefect UI shows a stack
for a mistake the operator can fix.
"""

from __future__ import annotations

import logging

# The loggers Prefect's engines report a failed flow or task run on.
RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")


class HeraldError(Exception):
    """An expected failure: its message is the whole story.

    ``outcome`` is what the CLI adds on a line of its own (say, that nothing was sent)."""

    outcome: str = ""


class _DropExpectedTracebacks(logging.Filter):
    """Keeps a run logger's record, without the traceback when the error is expected."""

    def filter(self, record: logging.LogRecord) -> bool:
        if record.exc_info and isinstance(record.exc_info[1], HeraldError):
            record.exc_info = None
            record.exc_text = None
        return True


_FILTER = _DropExpectedTracebacks()


def quiet_expected_tracebacks() -> None:
    """Attach the filter to Prefect's run loggers (idempotent; call after Prefect is imported,
    whose logging setup would drop filters attached before it)."""
    for name in RUN_LOGGERS:
        logger = logging.getLogger(name)
        if _FILTER not in logger.filters:
            logger.addFilter(_FILTER)
