"""Child processes that serve HTTP on 127.0.0.1: a free port, a start that waits until the
service answers its health URL, and a stop that always reaps the child.

Used for `herald webhooks serve` and `prefect server start` by the tests and the chaos run.
Every timeout here is a safety net against hanging, generous enough for a loaded 2-core
machine (a `prefect server start` there can take minutes to answer); nothing waits a fixed
time for something to happen.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Final

import httpx

START_TIMEOUT: Final = 300.0
"""Seconds a served process gets to answer its health URL (a safety net)."""
POLL_TIMEOUT: Final = 30.0
"""Seconds one health request may take: a busy server answers late, not never."""
STOP_TIMEOUT: Final = 120.0
"""Seconds a stopped process gets to exit on SIGTERM before SIGKILL."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(
    url: str, process: subprocess.Popen[bytes], what: str, timeout: float = START_TIMEOUT
) -> None:
    """Return once ``url`` answers 200; RuntimeError if ``process`` exits or ``timeout``
    seconds (a safety net) run out. Polls: each health request may take ``POLL_TIMEOUT``."""
    deadline = time.monotonic() + timeout
    while True:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        left = deadline - time.monotonic()
        if left <= 0:
            break
        try:
            if httpx.get(url, timeout=min(POLL_TIMEOUT, max(left, 1.0))).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout: float = STOP_TIMEOUT) -> None:
    """SIGTERM, then SIGKILL if that is not enough within ``timeout`` (a busy machine):
    the child is always reaped, so no running Popen is left for the garbage collector."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


@contextmanager
def served(
    command: Sequence[str],
    *,
    health: str,
    what: str,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    output: IO[bytes] | int | None = subprocess.DEVNULL,
    timeout: float = START_TIMEOUT,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends, once ``health`` answers 200 (within
    ``timeout`` seconds: a safety net)."""
    process = subprocess.Popen(
        list(command), env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        wait_healthy(health, process, what, timeout)
        yield process
    finally:
        stop(process)
