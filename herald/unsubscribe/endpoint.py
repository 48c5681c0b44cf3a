"""The unsubscribe endpoint: ``/unsubscribe/<token>``.

- ``POST`` with the form body ``List-Unsubscribe=One-Click`` (RFC 8058: what Gmail, Yahoo and
  Apple Mail send when the reader clicks "Unsubscribe") or ``confirm=yes`` (the page's
  button) suppresses the address at once, idempotently, and answers 200.
- ``GET`` only shows a page with that button: mail scanners and link previews follow links,
  and a GET must never unsubscribe anybody.
- A token that does not verify (changed, truncated, made up) gets 400 and changes nothing;
  so does a POST with neither field (415 for a body that is not a form).

The pages (``templates/unsubscribe/page.html``, in the contact's language: :mod:`herald.
unsubscribe.page`) carry no script, no external resource and no address; the answer never
says whether the contact exists.
"""

from __future__ import annotations

import logging
from pathlib import Path
from urllib.parse import parse_qs

from sqlalchemy import Engine
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse
from starlette.routing import Route

from herald.config import CampaignConfig
from herald.i18n.environment import TEMPLATES
from herald.unsubscribe.effects import unsubscribe
from herald.unsubscribe.links import ONE_CLICK
from herald.unsubscribe.page import (
    State,
    browser_language,
    contact_language,
    render_page,
)
from herald.unsubscribe.tokens import BadToken, Subscriber, TokenSigner

PATH = "/unsubscribe/{token}"
MAX_FORM_BYTES = 4096

logger = logging.getLogger(__name__)


def routes(
    engine: Engine,
    signer: TokenSigner,
    campaign: CampaignConfig,
    templates: Path = TEMPLATES,
) -> list[Route]:
    """The endpoint's routes, to serve alone (:func:`create_app`) or beside the webhook."""

    def page(language: str, state: State, status: int = 200) -> HTMLResponse:
        html = render_page(templates, state, campaign, language)
        return HTMLResponse(
            html,
            status_code=status,
            headers={"Cache-Control": "no-store", "Content-Language": language},
        )

    def invalid(request: Request) -> HTMLResponse:
        accepted = request.headers.get("accept-language", "")
        return page(browser_language(templates, campaign, accepted), "invalid", 400)

    async def language(subscriber: Subscriber) -> str:
        return await run_in_threadpool(
            contact_language, engine, templates, campaign, subscriber.contact_id
        )

    async def show(request: Request) -> HTMLResponse:
        try:
            subscriber = signer.read(request.path_params["token"])
        except BadToken:
            return invalid(request)
        return page(await language(subscriber), "ask")

    async def act(request: Request) -> HTMLResponse | JSONResponse:
        try:
            subscriber = signer.read(request.path_params["token"])
        except BadToken:
            return invalid(request)
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
        return page(await language(subscriber), "done")

    return [Route(PATH, show, methods=["GET"]), Route(PATH, act, methods=["POST"])]


def create_app(
    engine: Engine, signer: TokenSigner, campaign: CampaignConfig, templates: Path = TEMPLATES
) -> Starlette:
    """The endpoint alone, with ``/health``."""

    async def health(_: Request) -> JSONResponse:
        return JSONResponse({"ok": True})

    return Starlette(
        routes=[*routes(engine, signer, campaign, templates), Route("/health", health)]
    )
