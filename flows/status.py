"""The campaign's status published as the Prefect artifact ``herald-status`` after every run
of every flow (a state hook, so a failed run publishes it too): the Prefect UI's Artifacts
page is the campaign's dashboard, the same view as ``herald status``."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from prefect import get_run_logger
from prefect.artifacts import create_markdown_artifact

from herald.config import load_config
from herald.console.status import campaign_status, status_markdown
from herald.settings import get_settings
from tasks.common import database

ARTIFACT_KEY = "herald-status"


def publish_status(flow: Any, flow_run: Any, state: Any) -> None:  # noqa: ARG001 - hook signature
    """Publish the campaign's status (a hook: a problem is logged, never fails the run)."""
    try:
        config = load_config(get_settings().config_dir)
        with database().connect() as conn:
            found = campaign_status(conn, config=config, now=datetime.now(UTC))
        create_markdown_artifact(
            key=ARTIFACT_KEY,
            markdown=status_markdown(found),
            description=f"Status of {found.campaign} after {flow_run.name}",
        )
    except Exception as error:  # the run's own outcome matters more than its dashboard
        get_run_logger().warning(f"The status artifact was not published: {error}")


# Every flow passes these as on_completion and on_failure.
STATUS_HOOKS: list[Any] = [publish_status]
