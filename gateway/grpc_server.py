"""The node's one gRPC server, run as a Trio task.

grpclib is an asyncio library; railraft runs it inside Trio through trio-asyncio.  `serve_grpc` starts a
`grpclib.server.Server` for every railraft service (peer Raft, client Ticketing, Node admin) on one
host:port, reports the port it bound through `task_status.started`, serves until cancelled, and then shuts
down: stops listening, cancels the running request handlers, closes the client connections and waits
(briefly, shielded) for the handlers to finish.

    async with trio_asyncio.open_loop():
        async with trio.open_nursery() as nursery:
            port = await nursery.start(serve_grpc, [peer_service, ticketing], "127.0.0.1", 0)

The caller must have opened the trio-asyncio loop around this task.
"""

from __future__ import annotations

import logging
import socket
import weakref
from collections.abc import Collection
from typing import Any

import trio
import trio_asyncio
from grpclib.protocol import H2Protocol
from grpclib.server import Server

__all__ = ["serve_grpc", "SHUTDOWN_GRACE_S"]

log = logging.getLogger(__name__)

# How long a cancelled server may take to close: long enough for handlers to notice their cancellation,
# short enough that a stuck handler cannot hold a node's shutdown hostage.
SHUTDOWN_GRACE_S = 5.0


class _TrackingServer(Server):
    """A grpclib Server that remembers its live connections.

    grpclib's `Server.close()` stops listening and cancels handlers but leaves accepted connections open,
    so a peer's long-lived stream would stay attached to a dead server (and a restarted server on the same
    port would never see that peer reconnect).  Keeping the protocols lets shutdown close them.
    """

    def __init__(self, handlers: Collection[Any]) -> None:
        super().__init__(handlers)
        self._protocols: weakref.WeakSet[H2Protocol] = weakref.WeakSet()

    def _protocol_factory(self) -> H2Protocol:
        protocol = super()._protocol_factory()
        self._protocols.add(protocol)
        return protocol

    def close_connections(self) -> None:
        """Close every accepted connection (their streams end with StreamTerminatedError on both sides)."""
        for protocol in list(self._protocols):
            processor = getattr(protocol, "processor", None)  # absent until connection_made
            if processor is not None:
                processor.close("server shutting down")


async def _bind(host: str, port: int) -> socket.socket:
    """A listening-ready socket bound to host:port (port 0 = any free port).

    We bind ourselves instead of letting asyncio do it so that exactly one address is bound (asyncio would
    bind every address `localhost` resolves to, each with a different ephemeral port for port 0) and so the
    real port is known without reaching into the server's internals.
    """
    infos = await trio.socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    if not infos:
        raise OSError(f"cannot resolve {host!r}")
    family, type_, proto, _, addr = infos[0]
    sock = socket.socket(family, type_, proto)
    try:
        # A restarted node must be able to take its port back while old connections sit in TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(addr)
    except BaseException:
        sock.close()
        raise
    return sock


async def serve_grpc(
    handlers: list,
    host: str,
    port: int,
    *,
    task_status: trio.TaskStatus[int] = trio.TASK_STATUS_IGNORED,
) -> None:
    """Serve `handlers` (grpclib/betterproto services) on host:port until cancelled.

    Calls `task_status.started(bound_port)` once the server accepts connections (`port=0` binds a free
    port and reports it).  Raises OSError if the address cannot be bound.  On cancellation the server is
    closed within `SHUTDOWN_GRACE_S`, even though the surrounding scope is cancelled.
    """
    sock = await _bind(host, port)
    bound_port = sock.getsockname()[1]
    try:
        server = _TrackingServer(handlers)
        await trio_asyncio.aio_as_trio(server.start)(sock=sock)
    except BaseException:
        sock.close()  # start failed before asyncio took ownership of the socket
        raise
    # From here on asyncio owns the socket and closes it with the server.
    log.info("gRPC server listening on %s:%d", host, bound_port)
    try:
        task_status.started(bound_port)
        await trio.sleep_forever()
    finally:
        # Shielded: we usually get here *because* we were cancelled, and the shutdown still has to run.
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + SHUTDOWN_GRACE_S
            server.close()  # stop listening, cancel running handlers
            server.close_connections()
            await trio_asyncio.aio_as_trio(server.wait_closed)()
        if scope.cancelled_caught:
            log.warning("gRPC server on port %d did not close within %.1fs", bound_port, SHUTDOWN_GRACE_S)
        else:
            log.info("gRPC server on port %d closed", bound_port)
