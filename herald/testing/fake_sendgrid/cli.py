"""``python -m herald.testing.fake_sendgrid``: the fake on its own, until SIGTERM or SIGINT
(the benchmarks and the chaos run start it as a separate process)."""

from __future__ import annotations

import argparse
import gc
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path
from types import FrameType

from herald.testing.fake_sendgrid.fake import FakeSendGrid
from herald.testing.fake_sendgrid.faults import Faults


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m herald.testing.fake_sendgrid",
        description="Serve a fake SendGrid v3 Mail Send API on 127.0.0.1 until SIGTERM/SIGINT.",
    )
    parser.add_argument("--port", type=int, default=0, help="port (0: any free one)")
    parser.add_argument("--api-key", required=True, help="the key clients must present")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds before answering")
    parser.add_argument("--jitter", type=float, default=0.0, help="extra 0..JITTER seconds")
    parser.add_argument("--max-body-bytes", type=int, default=30 * 1024 * 1024)
    parser.add_argument("--record", type=Path, help="append accepted recipients as JSON lines")
    parser.add_argument(
        "--requests", type=Path, help="append every request's log (arrival, recipients, answer)"
    )
    parser.add_argument(
        "--no-expand",
        action="store_true",
        help="record recipients without rebuilding their subject and bodies (benchmarks)",
    )
    parser.add_argument(
        "--validate-every",
        type=int,
        default=1,
        help="check one request in N against the schema (benchmarks; default: every one)",
    )
    parser.add_argument("--rate-limited", type=float, default=0.0, help="probability of 429")
    parser.add_argument("--reset-after", type=float, default=1.0, help="429's reset, seconds")
    parser.add_argument("--server-error", type=float, default=0.0, help="probability of 500")
    parser.add_argument(
        "--reset-after-accept",
        type=float,
        default=0.0,
        help="probability of accepting, then resetting the connection without an answer",
    )
    parser.add_argument("--seed", type=int, help="seed for the fault and jitter draws")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the fake until SIGTERM or SIGINT; print its URL first."""
    args = _parser().parse_args(argv)
    faults = Faults(
        rate_limited=args.rate_limited,
        reset_after=args.reset_after,
        server_error=args.server_error,
        reset_after_accept=args.reset_after_accept,
    )
    stop = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:  # noqa: ARG001
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    fake = FakeSendGrid(
        args.api_key,
        latency=args.latency,
        jitter=args.jitter,
        max_body_bytes=args.max_body_bytes,
        faults=faults,
        seed=args.seed,
        record_path=args.record,
        requests_path=args.requests,
        validate_every=args.validate_every,
        port=args.port,
        expand=not args.no_expand,
    )
    with fake:
        sys.stdout.write(f"listening on {fake.url}\n")
        sys.stdout.flush()
        while not stop.wait(0.2):
            # What the fake has kept so far (a record per recipient: a million in a 1M
            # benchmark) is out of the collector's way: its full collections would scan
            # every record, stalling all requests for 100 ms and more each time.
            gc.freeze()
    sys.stdout.write(
        f"stopped after {fake.request_count()} requests, {len(fake.accepted)} recipients accepted\n"
    )
    sys.stdout.flush()
    return 0
