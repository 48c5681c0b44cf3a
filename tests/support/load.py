"""Run a command while every core is kept busy: the suite must not depend on timing.

    .venv/bin/python -m tests.support.load -- make test          # what `make test-load` runs
    .venv/bin/python -m tests.support.load --workers 4 -- COMMAND [ARG...]

Starts ``--workers`` busy-loop processes (default: ``os.cpu_count()``, one per core) at
normal priority, then runs COMMAND, then stops them: always, whether COMMAND passes, fails,
is interrupted (Ctrl-C) or this process is sent SIGTERM or SIGHUP. Exits with COMMAND's
status (128 + N when a signal N ended it). A busy loop also ends by itself as soon as this
process is gone (even after a SIGKILL), so none is ever left spinning.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
from collections.abc import Sequence
from types import FrameType

# A busy loop at normal priority that ignores Ctrl-C (this process stops it) and ends once
# its parent, this process, is gone.
BUSY_LOOP = """
import os, signal
signal.signal(signal.SIGINT, signal.SIG_IGN)
parent = os.getppid()
while os.getppid() == parent:
    for _ in range(200_000):
        pass
"""
STOP_WAIT = 60.0  # seconds a stopped process gets before SIGKILL (a busy machine is slow)


def say(line: str) -> None:
    sys.stderr.write(f"load: {line}\n")
    sys.stderr.flush()


class Stopped(Exception):
    """This process was asked to stop (SIGTERM or SIGHUP)."""

    def __init__(self, signum: int) -> None:
        super().__init__(signal.Signals(signum).name)
        self.signum = signum


def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
    raise Stopped(signum)


def start_load(workers: int) -> list[subprocess.Popen[bytes]]:
    """``workers`` busy-loop processes."""
    return [subprocess.Popen([sys.executable, "-c", BUSY_LOOP]) for _ in range(workers)]


def end(process: subprocess.Popen[bytes], how: int = signal.SIGTERM) -> None:
    """Stop ``process`` with ``how`` (SIGKILL when that is not enough) and reap it."""
    if process.poll() is None:
        process.send_signal(how)
        try:
            process.wait(timeout=STOP_WAIT)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def exit_status(code: int) -> int:
    """A shell's view of a return code: 128 + N for a process ended by signal N."""
    return 128 - code if code < 0 else code


def run(command: Sequence[str], workers: int) -> int:
    """Run ``command`` with ``workers`` busy loops beside it; its exit status."""
    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGHUP, on_signal)
    load: list[subprocess.Popen[bytes]] = []
    child: subprocess.Popen[bytes] | None = None
    try:
        load = start_load(workers)
        say(f"{workers} busy loop(s) on {os.cpu_count()} core(s): pids {[p.pid for p in load]}")
        child = subprocess.Popen(list(command))
        return exit_status(child.wait())
    except KeyboardInterrupt:  # Ctrl-C reached the whole foreground group, COMMAND too
        say("interrupted")
        if child is not None:
            end(child, signal.SIGINT)
        return 130
    except Stopped as stopped:
        say(f"stopped by {stopped}")
        if child is not None:
            end(child, stopped.signum)
        return 128 + stopped.signum
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a second Ctrl-C must not skip this
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if child is not None:
            end(child)
        for process in load:
            end(process, signal.SIGKILL)
        if load:
            say(f"stopped {len(load)} busy loop(s)")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m tests.support.load",
        description="Run COMMAND while busy loops keep every core busy; exit with its status.",
    )
    parser.add_argument(
        "--workers",
        type=int,
        default=os.cpu_count() or 1,
        help="busy-loop processes (default: one per core)",
    )
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND [ARG...]")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    if args.workers < 0:
        parser.error("--workers must not be negative")
    return run(command, args.workers)


if __name__ == "__main__":
    sys.exit(main())
