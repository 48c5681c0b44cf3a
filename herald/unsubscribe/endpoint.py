"""The unsubscribe endpoint: ``/unsubscribe/<token>``.

- ``POST`` with the form body ``List-Unsubscribe=One-Click`` (RFC 8058: what Gmail, Yahoo and
  Apple Mail send when the reader clicks "Unsubscribe") or ``confirm=yes`` (the page's
  button) suppresses the address at once, idempotently, and answers 200.
- ``GET`` only shows a page with that button: mail scanners and link previews follow links,
  and a GET must never unsubscribe anybody.
- A token that does not verify (changed, truncated, made up) gets 400 and changes nothing;
  so does a POST with neither field (415 for a body that is not a form).

The pages carry no script, no external resource and no address; the answer never says
whether the contact exists.
"""

from __future__ import annotations

import logging
from urllib.parse import parse_qs

from markupsafe import escape
from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from herald.config import CampaignConfig
from herald.unsubscribe.effects import unsubscribe
from herald.unsubscribe.links import ONE_CLICK
from herald.unsubscribe.tokens import BadToken, TokenSigner

PATH = "/unsubscribe/{token}"
MAX_FORM_BYTES = 4096

logger = logging.getLogger(__name__)

_PAGE = """<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<meta name="robots" content="noindex">
<title>{title}</title>
<style>
body {{ font-family: Arial, Helvetica, sans-serif; max-width: 32rem; margin: 3rem auto;
        padding: 0 1rem; color: #1f2933; }}
h1 {{ font-size: 1.4rem; }}
button {{ font-size: 1rem; padding: 0.5rem 1.2rem; }}
.sender {{ color: #7b8794; font-size: 0.85rem; margin-top: 2rem; }}
</style></head>
<body>
<h1>{title}</h1>
{body}
<p class="sender">{sender}</p>
</body></html>
"""


def routes(engine: Engine, signer: TokenSigner, campaign: CampaignConfig) -> list[Route]:
    """The endpoint's routes, to serve alone (:func:`create_app`) or beside the webhook."""
    sender = escape(f"{campaign.sender.organization}, {campaign.sender.postal_address}")
    topic = escape(campaign.products.legacy)

    def page(title: str, body: str, status: int = 200) -> HTMLResponse:
        html = _PAGE.format(title=escape(title), body=body, sender=sender)
        return HTMLResponse(html, status_code=status, headers={"Cache-Control": "no-store"})

    def invalid() -> HTMLResponse:
        return page(
            "This unsubscribe link is not valid",
            "<p>The link may have been cut or changed. Use the link in the message itself, "
            f"or reply to it and we will take you off these messages about {topic}.</p>",
            400,
        )

    async def show(request: Request) -> HTMLResponse:
        try:
            signer.read(request.path_params["token"])
        except BadToken:
            return invalid()
        return page(
            "Unsubscribe",
            f"<p>Stop receiving messages about the move from {topic}?</p>"
            '<form method="post"><input type="hidden" name="confirm" value="yes">'
            '<button type="submit">Unsubscribe</button></form>',
        )

    async def act(request: Request) -> HTMLResponse | JSONResponse:
        try:
            subscriber = signer.read(request.path_params["token"])
        except BadToken:
            return invalid()
        kind = request.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind not in ("application/x-www-form-urlencoded", "multipart/form-data", ""):
            return JSONResponse({"error": "expected a form body"}, status_code=415)
        body = b""
        async for chunk in request.stream():
            body += chunk
            if len(body) > MAX_FORM_BYTES:
                return JSONResponse({"error": "body too large"}, status_code=413)
        form = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        one_click = form.get("List-Unsubscribe") == [ONE_CLICK.partition("=")[2]]
        confirmed = form.get("confirm") == ["yes"]
        if not (one_click or confirmed):
            return JSONResponse({"error": f"expected {ONE_CLICK} or confirm=yes"}, status_code=400)
        via = "one-click" if one_click else "page"
        done = await run_in_threadpool(unsubscribe, engine, subscriber, source=via)
        logger.info(
            "unsubscribe via %s: contact %s (%s)",
            via,
            subscriber.contact_id,
            "new" if done.new else "already",
        )
        if one_click:
            return JSONResponse({"unsubscribed": True})
        return page(
            "You are unsubscribed",
            f"<p>You will receive no more messages about the move from {topic}. "
            "It takes effect at once.</p>",
        )

    return [Route(PATH, show, methods=["GET"]), Route(PATH, act, methods=["POST"])]


def create_app(engine: Engine, signer: TokenSigner, campaign: CampaignConfig) -> Starlette:
    """The endpoint alone, with ``/health``."""

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(routes=[*routes(engine, signer, campaign), Route("/health", health)])
