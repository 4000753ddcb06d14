"""Run one railraft node as a process: open the database, start the actor tree, serve gRPC, stop cleanly.

`railraft node --id N --config cluster.toml` ends up in `run_node`.  Everything lives inside one
trio-asyncio loop (grpclib and aiosqlite are asyncio libraries).  SIGINT/SIGTERM trigger a graceful stop:
new requests are refused, in-flight ones get a moment to finish, the actors stop (the log writer completes
its current fsync), the database is closed, and the process exits 0.  An actor that crashes too often
escalates: the cause is logged and the process exits non-zero.

With a metrics port the node also serves Prometheus metrics at http://HOST:PORT/metrics (gateway.metrics),
from a Trio task in the same nursery, so the port closes with the node.  A metrics port that cannot be bound
is logged as an error and the node runs without metrics (they are for operators; the node still serves).

With a cluster secret (cluster.toml `secret_file`, or RAILRAFT_CLUSTER_SECRET) one `ClusterAuth` per node
signs and checks all peer traffic (gateway/peer_auth.py); without one the node logs a WARNING at start and
takes peer traffic from anyone, as before.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
import signal
from dataclasses import dataclass, field
from pathlib import Path

import trio
import trio_asyncio

from actors.config import ClusterConfig, cluster_secret
from actors.node import Node, NodeSettings
from actors.supervisor import ActorCrashInjector, EscalationError
from store.db import Database
from store.payments import SimulatedProvider

from . import aio_loop, heap
from .booking_core import BookingCore
from .booking_service import BookingService
from .grpc_server import serve_grpc
from .housekeeping import Housekeeper, HousekeepingSettings
from .metrics import NodeMetrics, metrics_url, open_metrics_listeners, serve_metrics
from .peer_auth import ClusterAuth, unauthenticated_warning
from .peer_client import PeerLink
from .peer_service import RaftPeerService
from .services import NodeService, TicketingService
from .submit import Submitter

log = logging.getLogger("railraft.runner")

GROUP_ID = 1  # one Raft group per cluster for now; peer messages carry it so more can come
STOP_GRACE_S = 2.0


@dataclass
class RunSettings(NodeSettings):
    """NodeSettings plus what only the process around the node uses: the cluster secret (None: none)."""

    cluster_secret: bytes | None = field(default=None, repr=False)


def settings_for(cfg: ClusterConfig, node_id: int, join: bool = False, host: str | None = None,
                 port: int | None = None, data_dir: Path | None = None) -> NodeSettings:
    """NodeSettings of one node from the cluster configuration (a joining node may not be listed)."""
    if host is None or port is None:
        addr = cfg.node(node_id)
        host, port = host or addr.host, port or addr.port
    listed = [n for n in cfg.nodes if n.id == node_id]
    return RunSettings(
        id=node_id,
        cluster_id=cfg.cluster_id,
        data_dir=data_dir or cfg.node_dir(node_id),
        host=host,
        port=port,
        peers={n.id: (n.host, n.port) for n in cfg.nodes},
        initial_voters=[] if join else cfg.ids(),
        tick_ms=cfg.tick_ms,
        election_ticks=cfg.election_ticks,
        heartbeat_ticks=cfg.heartbeat_ticks,
        snapshot_entries=cfg.snapshot_entries,
        dial=listed[0].dial_map() if listed else {},
        cluster_secret=cluster_secret(cfg),  # ConfigError if the configuration's secret file is unusable
    )


async def serve_node(settings: NodeSettings, *, task_status=trio.TASK_STATUS_IGNORED,
                     crash_injector: ActorCrashInjector | None = None, metrics_port: int | None = None,
                     on_node: Callable[[Node], None] | None = None, cluster_secret: bytes | None = None,
                     settle_heap: bool = False) -> None:
    """Run a node until cancelled or signalled.  Must run inside `trio_asyncio.open_loop()`.

    `metrics_port`: serve Prometheus metrics on settings.host at that port (None/negative: off; 0: any free
    port, tests).  `on_node` is called with the Node as soon as it exists (log records then carry its term).
    `cluster_secret` (default: the settings', see RunSettings) authenticates the peer traffic.
    `settle_heap`: the node owns its process -- once it serves, settle the garbage collector (gateway/heap.py).
    """
    # A leaked-and-closed grpclib Channel must not stop the node (gateway/aio_loop.py).
    aio_loop.keep_serving_on_reports(trio_asyncio.current_loop.get())
    secret = cluster_secret if cluster_secret is not None else getattr(settings, "cluster_secret", None)
    auth = ClusterAuth(secret, settings.cluster_id, settings.id) if secret else None
    if auth is None:
        log.warning(unauthenticated_warning(settings.id, f"{settings.host}:{settings.port}"))
    else:
        log.info("node %d: peer traffic is authenticated with the cluster secret", settings.id)
    settings.data_dir.mkdir(parents=True, exist_ok=True)  # Database.open needs the directory to exist
    db = await Database.open(settings.db_path)
    submitter: Submitter | None = None
    metrics = NodeMetrics() if metrics_port is not None and metrics_port >= 0 else None
    try:
        node = Node(
            settings,
            db,
            link_factory=lambda peer, host, port: PeerLink(
                peer, *settings.dial.get(peer, (host, port)), cluster_id=settings.cluster_id, group_id=GROUP_ID,
                node_id=settings.id, auth=auth,
            ),
            crash_injector=crash_injector,
            metrics=metrics,
        )
        if on_node is not None:
            on_node(node)
        async with trio.open_nursery() as nursery:
            if metrics is not None:
                metrics.watch(node)
                await _start_metrics(nursery, metrics, settings, metrics_port)
            await nursery.start(node.run)
            submitter = Submitter(node, auth=auth)  # NodeService takes the node's ClusterAuth from here too
            # One payment provider per node, shared by both client APIs and the leader's refund payouts.
            provider = SimulatedProvider()
            core = BookingCore(node, submitter, provider)
            services = [
                RaftPeerService(
                    cluster_id=settings.cluster_id,
                    group_id=GROUP_ID,
                    node_id=settings.id,
                    deliver=None,
                    deliver_batch=node.deliver,  # one consensus-inbox send per batch that crossed into Trio
                    deliver_now=node.deliver_now,  # ...or none of that hop while the inbox has room
                    receive_snapshot=node.receive_snapshot,
                    snapshot_dir=settings.snapshot_dir,
                    auth=auth,
                ),
                TicketingService(node, submitter, core=core),
                BookingService(node, submitter, core=core),
                NodeService(node, submitter),
            ]
            bound = await nursery.start(serve_grpc, services, settings.host, settings.port)
            log.info("node %d serving on %s:%d (data in %s)", settings.id, settings.host, bound, settings.data_dir)
            # Leader-only chores (hold expiry, refund payouts, the first admin): runs on every node for its
            # whole life and acts only while this node leads, so it follows leadership around by itself.
            await nursery.start(Housekeeper(node, provider, HousekeepingSettings.from_env()).run)
            if settle_heap:
                log.info("node %d: heap settled: %d start-up objects frozen", settings.id, heap.settle())
            task_status.started(node)
            with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
                async for sig in signals:
                    log.info("node %d: %s received, stopping", settings.id, signal.Signals(sig).name)
                    node.stopping = True
                    await trio.sleep(STOP_GRACE_S if node.waiters or node.reads else 0.05)
                    nursery.cancel_scope.cancel()
                    break
    finally:
        with trio.CancelScope(shield=True):
            if submitter is not None:
                submitter.close()
            await db.close()
            log.info("node %d stopped", settings.id)


async def _start_metrics(nursery: trio.Nursery, metrics: NodeMetrics, settings: NodeSettings, port: int) -> None:
    try:
        listeners = await open_metrics_listeners(settings.host, port)
    except OSError as e:
        log.error("node %d: metrics NOT served: cannot listen on %s:%d: %s", settings.id, settings.host, port, e)
        return
    bound = await nursery.start(serve_metrics, metrics, listeners)
    log.info("node %d: metrics at %s", settings.id, metrics_url(settings.host, bound))


def run_node(settings: NodeSettings, metrics_port: int | None = None) -> int:
    """Process entry point: returns the exit code."""

    async def main() -> None:
        async with trio_asyncio.open_loop():
            await serve_node(settings, metrics_port=metrics_port, settle_heap=True)

    return run_to_exit_code(main, settings.id)


def run_to_exit_code(main: Callable[[], Awaitable[None]], node_id: int) -> int:
    """trio.run(main) -> 0 on a clean stop, 3 when an actor escalated, 1 on any other crash (all logged)."""
    try:
        trio.run(main)
    except EscalationError as e:
        log.critical("node %d: stopping: %s", node_id, e)
        return 3
    except BaseExceptionGroup as eg:  # noqa: F821 - builtin on 3.11
        esc = _find(eg, EscalationError)
        if esc is not None:
            log.critical("node %d: stopping: %s", node_id, esc)
            return 3
        log.critical("node %d crashed", node_id, exc_info=eg)
        return 1
    return 0


def _find(eg: BaseException, kind: type) -> BaseException | None:
    if isinstance(eg, kind):
        return eg
    for sub in getattr(eg, "exceptions", ()):
        found = _find(sub, kind)
        if found is not None:
            return found
    return None
