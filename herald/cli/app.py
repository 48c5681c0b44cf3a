"""The ``herald`` command: the Typer app assembled from one module per command group.

Each group (``herald phase ...``) and each top-level command (``herald demo``) lives in its
own module of :mod:`herald.cli`; this module only decides their names and their order in
``herald --help`` (the top-level commands first, then the groups).
"""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from herald import __version__
from herald.cli.campaign import campaign_app
from herald.cli.cluster import cluster_app
from herald.cli.common import console, errors
from herald.cli.config import config_app
from herald.cli.contact import contact_app
from herald.cli.customers import customers_app
from herald.cli.db import db_app
from herald.cli.deliveries import deliveries_app
from herald.cli.demo import demo
from herald.cli.deploy import deploy
from herald.cli.exports import deliveries_export, events_app
from herald.cli.metrics import metrics_app
from herald.cli.notices import notices_app
from herald.cli.phase import approve, phase_app
from herald.cli.preview import preview_command
from herald.cli.proof import phase_proof
from herald.cli.rehearse import rehearse_command
from herald.cli.report import report_app
from herald.cli.schedule import schedule
from herald.cli.segment import segment
from herald.cli.settings import show_settings
from herald.cli.status import status
from herald.cli.stories import stories_app
from herald.cli.suppressions import suppressions_app
from herald.cli.telemetry import telemetry_app
from herald.cli.templates import templates_app
from herald.cli.unsubscribe import unsubscribe_app
from herald.cli.webhooks import webhooks_app

app = typer.Typer(
    name="herald",
    help="Herald runs customer rollout communication campaigns.",
    no_args_is_help=True,
    add_completion=False,
    context_settings={"help_option_names": ["-h", "--help"]},
)


def _version(value: bool) -> None:
    if value:
        console.print(f"herald {__version__}")
        raise typer.Exit()


@app.callback()
def _main(
    version: Annotated[
        bool,
        typer.Option(
            "--version", "-V", is_eager=True, callback=_version, help="Print the version and exit."
        ),
    ] = False,
) -> None:
    """Herald runs customer rollout communication campaigns: `herald status` shows where it
    stands; docs/operations.md has every command."""


for name, command in (
    ("status", status),
    ("settings", show_settings),
    ("segment", segment),
    ("schedule", schedule),
    ("approve", approve),
    ("preview", preview_command),
    ("rehearse", rehearse_command),
    ("demo", demo),
    ("deploy", deploy),
):
    app.command(name)(command)

phase_app.command("proof")(phase_proof)
deliveries_app.command("export")(deliveries_export)

for name, group in (
    ("db", db_app),
    ("config", config_app),
    ("customers", customers_app),
    ("templates", templates_app),
    ("phase", phase_app),
    ("notices", notices_app),
    ("campaign", campaign_app),
    ("deliveries", deliveries_app),
    ("contact", contact_app),
    ("suppressions", suppressions_app),
    ("events", events_app),
    ("webhooks", webhooks_app),
    ("unsubscribe", unsubscribe_app),
    ("telemetry", telemetry_app),
    ("metrics", metrics_app),
    ("report", report_app),
    ("stories", stories_app),
    ("cluster", cluster_app),
):
    app.add_typer(group, name=name)


def main() -> None:
    """Entry point of the ``herald`` script."""
    try:
        app()
    except KeyboardInterrupt:
        errors.print("interrupted")
        sys.exit(130)
