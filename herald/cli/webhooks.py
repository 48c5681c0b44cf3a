"""``herald webhooks``: the SendGrid Event Webhook receiver."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.markup import escape

from herald.cli.common import ExitCode, campaign_config, console, database, errors, guard, settings

webhooks_app = typer.Typer(
    help="SendGrid Event Webhook: receive and process events.", no_args_is_help=True
)


@webhooks_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8090,
) -> None:
    """Serve POST /webhooks/sendgrid: verify, store, answer 200, then process each batch.

    Where HERALD_UNSUBSCRIBE_SECRET is set, the one-click unsubscribe endpoint
    (/unsubscribe/<token>) is served beside it."""
    import uvicorn

    from herald.telemetry.webhook import WebhookKeyError, create_app
    from herald.unsubscribe.endpoint import routes
    from herald.unsubscribe.tokens import signer

    key = settings().webhook_public_key
    if not key:
        errors.print(
            "[bold red]error:[/] HERALD_WEBHOOK_PUBLIC_KEY is not set: the receiver refuses "
            "to start without SendGrid's verification key (Settings > Mail Settings > "
            "Signed Event Webhook)."
        )
        raise typer.Exit(ExitCode.INVALID)
    with guard():
        config = campaign_config()
        engine = database()
        beside = []
        if settings().unsubscribe_secret is not None:
            beside = routes(engine, signer(settings()), config.campaign, settings().templates_dir)
        try:
            app = create_app(engine, key, config.telemetry.webhook, routes=beside)
        except WebhookKeyError as error:
            errors.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(ExitCode.INVALID) from None
    console.print(f"Receiving SendGrid events on http://{host}:{port}/webhooks/sendgrid")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@webhooks_app.command("process")
def process() -> None:
    """Process stored batches not yet processed (what a crash of the receiver left).

    Exit code 3 when an event could not be applied (see `herald webhooks failures`) or a
    batch could not be processed (it stays pending for a later try).
    """
    from herald.telemetry.webhook_batches import process_pending

    with guard():
        results = process_pending(database())
    done = [r for r in results if not r.pending]
    failed = sum(r.failed for r in results)
    console.print(
        f"Processed {len(done)} batch(es): {sum(r.events for r in done)} events, "
        f"{sum(r.stored for r in done)} new, {sum(r.suppressed for r in done)} "
        f"suppressions, {sum(r.settled for r in done)} unknown deliveries settled, "
        f"{failed} failed.",
        soft_wrap=True,
    )
    unusable = [r for r in done if r.error and not r.failed]
    for result in unusable:
        console.print(f"[yellow]Batch {result.batch_id}[/]: {escape(result.error or '')}")
    if failed:
        console.print(
            f"[yellow]{failed} event(s) could not be applied[/]: see herald webhooks failures; "
            "after a fix: herald webhooks retry",
            soft_wrap=True,
        )
    pending = [r for r in results if r.pending]
    for result in pending:
        errors.print(
            f"[bold red]error:[/] batch {result.batch_id} stays unprocessed: "
            f"{escape(result.error or '')}",
        )
    if failed or pending or unusable:
        raise typer.Exit(ExitCode.PARTIAL)


@webhooks_app.command("failures")
def failures(
    show_all: Annotated[
        bool, typer.Option("--all", help="Also list failures that were applied since.")
    ] = False,
    limit: Annotated[int, typer.Option(min=1, help="Rows to print.")] = 50,
) -> None:
    """Events of stored batches that could not be applied, with their errors.

    Exit code 3 when any is still open.
    """
    from herald.telemetry.webhook_batches import list_failures, open_failures

    with guard():
        engine = database()
        rows = list_failures(engine, include_resolved=show_all, limit=limit)
        still_open = open_failures(engine)
    if not rows:
        console.print(
            "No webhook event failures." if show_all else "No open webhook event failures."
        )
        return
    # One line per failure (no table): each error stays whole and greppable.
    for row in rows:
        state = ""
        if show_all:
            state = f" resolved {row.resolved_at:%Y-%m-%d %H:%M:%S}" if row.resolved_at else " open"
        console.print(
            f"batch {row.batch_id} position {row.position}: event={row.event or '-'} "
            f"sg_event_id={row.sg_event_id or '-'} attempts={row.attempts}{state}: {row.error}",
            soft_wrap=True,
            markup=False,
        )
    shown = f" (the first {limit} shown: --limit N for more)" if len(rows) == limit else ""
    console.print(
        f"{still_open} open failure(s){shown}. After a fix, apply them again: "
        "herald webhooks retry",
        soft_wrap=True,
    )
    if still_open:
        raise typer.Exit(ExitCode.PARTIAL)


@webhooks_app.command("retry")
def retry() -> None:
    """Validate and apply every open failure again; those that apply now are resolved.

    Exit code 3 when some still cannot be applied.
    """
    from herald.telemetry.webhook_batches import retry_failures

    with guard():
        result = retry_failures(database())
    if not result.retried:
        console.print("No open webhook event failures.")
        return
    console.print(
        f"Retried {result.retried} event(s): {result.resolved} applied "
        f"({result.applied.stored} new, {result.applied.suppressed} suppressions, "
        f"{result.applied.settled} unknown deliveries settled), {result.remaining} still "
        "failing.",
        soft_wrap=True,
    )
    if result.remaining:
        console.print(
            f"[yellow]{result.remaining} still failing[/]: see herald webhooks failures",
        )
        raise typer.Exit(ExitCode.PARTIAL)
