"""The ``herald`` command: the Typer app assembled from one module per command group.

Each group (``herald phase ...``) and each top-level command (``herald demo``) lives in its
own module of :mod:`herald.cli`; this module only decides their names and their order in
``herald --help`` (the top-level commands first, then the groups).
"""

from __future__ import annotations

import sys

import typer

from herald.cli.campaign import campaign_app
from herald.cli.common import errors
from herald.cli.config import config_app
from herald.cli.customers import customers_app
from herald.cli.db import db_app
from herald.cli.deliveries import deliveries_app
from herald.cli.demo import demo
from herald.cli.metrics import metrics_app
from herald.cli.notices import notices_app
from herald.cli.phase import approve, phase_app
from herald.cli.preview import preview_command
from herald.cli.rehearse import rehearse_command
from herald.cli.report import report_app
from herald.cli.schedule import schedule
from herald.cli.segment import segment
from herald.cli.settings import show_settings
from herald.cli.stories import stories_app
from herald.cli.telemetry import telemetry_app
from herald.cli.templates import templates_app
from herald.cli.unsubscribe import unsubscribe_app
from herald.cli.webhooks import webhooks_app

app = typer.Typer(
    name="herald",
    help="Herald runs customer rollout communication campaigns.",
    no_args_is_help=True,
    add_completion=False,
)

for name, command in (
    ("settings", show_settings),
    ("segment", segment),
    ("schedule", schedule),
    ("approve", approve),
    ("preview", preview_command),
    ("rehearse", rehearse_command),
    ("demo", demo),
):
    app.command(name)(command)

for name, group in (
    ("db", db_app),
    ("config", config_app),
    ("customers", customers_app),
    ("templates", templates_app),
    ("phase", phase_app),
    ("notices", notices_app),
    ("campaign", campaign_app),
    ("deliveries", deliveries_app),
    ("webhooks", webhooks_app),
    ("unsubscribe", unsubscribe_app),
    ("telemetry", telemetry_app),
    ("metrics", metrics_app),
    ("report", report_app),
    ("stories", stories_app),
):
    app.add_typer(group, name=name)


def main() -> None:
    """Entry point of the ``herald`` script."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
