"""``herald webhooks``: the SendGrid Event Webhook receiver."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.common import ExitCode, campaign_config, console, database, errors, guard, settings

webhooks_app = typer.Typer(help="SendGrid Event Webhook: receive and process events.")


@webhooks_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8090,
) -> None:
    """Serve POST /webhooks/sendgrid: verify, store, answer 200, then process each batch."""
    import uvicorn

    from herald.telemetry.webhook import WebhookKeyError, create_app

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
        try:
            app = create_app(engine, key, config.telemetry.webhook)
        except WebhookKeyError as error:
            errors.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(ExitCode.INVALID) from None
    console.print(f"Receiving SendGrid events on http://{host}:{port}/webhooks/sendgrid")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)


@webhooks_app.command("process")
def process() -> None:
    """Process stored batches not yet processed (what a crash of the receiver left)."""
    from herald.telemetry.events import process_pending

    with guard():
        results = process_pending(database())
    console.print(
        f"Processed {len(results)} batch(es): {sum(r.events for r in results)} events, "
        f"{sum(r.stored for r in results)} new, {sum(r.suppressed for r in results)} "
        f"suppressions, {sum(r.settled for r in results)} unknown deliveries settled."
    )
