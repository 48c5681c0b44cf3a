"""An ASGI app served by uvicorn on 127.0.0.1 in a thread, and an HTTP client for it."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx
import uvicorn
from starlette.applications import Starlette


@contextmanager
def client_of(app: Starlette) -> Iterator[httpx.Client]:
    """Serve ``app`` (its startup runs) and yield a client for it; leaving the block waits
    for what runs after the answers (background tasks) and stops the server."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 120
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.01)  # until uvicorn says it listens (not a guess at how long it takes)
    assert server.started, "uvicorn did not start"
    port = server.servers[0].sockets[0].getsockname()[1]
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=120) as client:
        yield client
    server.should_exit = True
    thread.join(timeout=120)
