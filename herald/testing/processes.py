"""Child processes that serve HTTP on 127.0.0.1: a free port, a start that waits until the
service answers its health URL, and a stop that always reaps the child.

Used for `herald webhooks serve` and `prefect server start` by the tests and the chaos run.
"""

from __future__ import annotations

import socket
import subprocess
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import IO

import httpx


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def wait_healthy(url: str, process: subprocess.Popen[bytes], what: str, timeout: float) -> None:
    """Return once ``url`` answers 200; RuntimeError if ``process`` exits or time runs out."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{what} exited with code {process.returncode} while starting")
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{what} did not answer {url} within {timeout:.0f} s")


def stop(process: subprocess.Popen[bytes], timeout: float = 60) -> None:
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
    timeout: float = 120,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` until the block ends, once ``health`` answers 200."""
    process = subprocess.Popen(
        list(command), env=env, cwd=cwd, stdout=output, stderr=subprocess.STDOUT
    )
    try:
        wait_healthy(health, process, what, timeout)
        yield process
    finally:
        stop(process)
