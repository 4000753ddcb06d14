"""Serve the railraft web app: `python -m web --nodes 127.0.0.1:7001,127.0.0.1:7002 --port 8080`.

Hypercorn runs under Trio, inside a trio-asyncio loop opened around everything, so request tasks can call the
asyncio gateway client through `trio_asyncio.aio_as_trio` (opening the loop in Quart's `while_serving` does
not reach request tasks).
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys

import trio
import trio_asyncio
from hypercorn.config import Config
from hypercorn.trio import serve

from gateway import aio_loop, heap
from gateway.client import parse_addresses

from .app import DEFAULT_SECRET_FILE, create_app


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m web", description="railraft web app (Quart-Trio on Hypercorn)")
    p.add_argument("--nodes", default=os.environ.get("RAILRAFT_NODES", "127.0.0.1:7001"),
                   help="comma-separated host:port of cluster nodes (env RAILRAFT_NODES)")
    p.add_argument("--host", default="127.0.0.1")
    p.add_argument("--port", type=int, default=8080)
    p.add_argument("--secret-file", default=str(DEFAULT_SECRET_FILE),
                   help="where the session key is kept when $RAILRAFT_WEB_SECRET is unset (created if missing)")
    p.add_argument("--log-level", default="INFO")
    return p.parse_args(argv)


async def wait_for_stop_signal() -> None:
    """Hypercorn's shutdown trigger: the first SIGINT or SIGTERM (Ctrl-C, or `kill PID`) stops serving."""
    with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
        async for _ in signals:
            return


async def run(args: argparse.Namespace) -> None:
    app = create_app(parse_addresses(args.nodes), secret_file=args.secret_file)
    config = Config()
    config.bind = [f"{args.host}:{args.port}"]
    config.accesslog = "-"
    config.errorlog = "-"
    client = app.extensions["railraft_client"]
    aio_loop.install()  # asyncio callbacks run in bursts, not one per Trio turn (gateway/aio_loop.py)
    async with trio_asyncio.open_loop() as loop:
        aio_loop.keep_serving_on_reports(loop)  # a leaked-and-closed grpclib Channel must not stop the app
        heap.settle()  # the app and its client are built: keep them out of the collector's way (gateway/heap.py)
        try:
            print(f"railraft web app on http://{args.host}:{args.port}/ (cluster {args.nodes})", flush=True)
            await serve(app, config, shutdown_trigger=wait_for_stop_signal)
        finally:
            client.close()  # grpclib channels belong to this asyncio loop: close them before it closes


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        trio.run(run, args)
    except KeyboardInterrupt:
        return 0
    return 0


if __name__ == "__main__":
    sys.exit(main())
