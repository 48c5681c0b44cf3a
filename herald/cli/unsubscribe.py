"""``herald unsubscribe``: serve the one-click unsubscribe endpoint."""

from __future__ import annotations

from typing import Annotated

import typer

from herald.cli.common import ExitCode, campaign_config, console, database, errors, guard, settings

unsubscribe_app = typer.Typer(
    help="One-click unsubscribe (RFC 8058): the endpoint every message links to.",
    no_args_is_help=True,
)


@unsubscribe_app.command("serve")
def serve(
    host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(min=0, max=65535, help="Port to listen on.")] = 8091,
) -> None:
    """Serve GET/POST /unsubscribe/<token> (`herald webhooks serve` serves it too).

    Needs the key the links were signed with (HERALD_UNSUBSCRIBE_SECRET). Put it behind the
    https address in `unsubscribe.url` of campaign.yaml."""
    import uvicorn

    from herald.unsubscribe.endpoint import create_app
    from herald.unsubscribe.tokens import UnsubscribeKeyError, signer

    with guard():
        config = campaign_config()
        engine = database()
        try:
            app = create_app(engine, signer(settings()), config.campaign, settings().templates_dir)
        except UnsubscribeKeyError as error:
            errors.print(f"[bold red]error:[/] {error}")
            raise typer.Exit(ExitCode.INVALID) from None
    console.print(f"Unsubscribe endpoint on http://{host}:{port}/unsubscribe/<token>")
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
