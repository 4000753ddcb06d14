"""Prometheus metrics of one node, served over HTTP at http://HOST:PORT/metrics (`railraft node --metrics-port`).

Two kinds of metric, both in a registry of the node's own (never prometheus_client's global one, so several
nodes in one test process do not collide):

* State the node already holds -- role, term, indexes, log size, leader -- is read at scrape time by
  `NodeStateCollector` from `Node.status()`: nothing on the hot path.
* Events are counted where they happen, through the `actors.node.NodeObserver` hooks that `NodeMetrics`
  implements: one counter increment or histogram observation per batch (a Propose request, a persisted
  Ready, an applied batch), never per entry.

    railraft_node_info{node_id,cluster_id,address}     1
    railraft_role{role="follower|pre_candidate|candidate|leader"}   1 for the current role, else 0
    railraft_term, railraft_leader_id (0 = unknown), railraft_commit_index, railraft_applied_index,
    railraft_last_log_index, railraft_snapshot_index, railraft_log_bytes, railraft_members{kind},
    railraft_pending_proposals, railraft_pending_reads, railraft_dropped_messages_total,
    railraft_peer_match_index{peer}                    (on the leader only)
    railraft_proposals_total                           commands appended by this node as leader
    railraft_persisted_entries_total                   entries written to the Raft log
    railraft_applied_entries_total                     entries applied to the state machine
    railraft_fsync_seconds                             histogram: one durable write (append + fsync) of a batch
    railraft_apply_seconds                             histogram: one applied batch (one SQLite transaction)
    railraft_wal_checkpoint_seconds                    histogram: how long one copy of the database's WAL into
                                                       its file held up the applier (its last pages, between
                                                       two batches; the rest is copied while applies go on)
    railraft_peer_rpc_errors_total{peer}               failed sends to a peer (unreachable, snapshot failed)
    railraft_leader_changes_total                      new leaders this node has seen
    railraft_snapshot_bytes{kind="taken|sent|installed"}  histogram of snapshot file sizes
    process_* and python_*                             the standard process and runtime collectors

Per second: `rate(railraft_proposals_total[1m])`, `rate(railraft_applied_entries_total[1m])`; average batch:
`rate(railraft_applied_entries_total[1m]) / rate(railraft_apply_seconds_count[1m])`.

The HTTP side is a small Trio server inside the node's own nursery (not prometheus_client's thread server):
collectors then run on the Trio thread, reading node state without races, and the port is released when
the node stops.  It answers GET/HEAD of /metrics (Prometheus or OpenMetrics text, as the Accept header asks)
and of / (a pointer to /metrics), one request per connection.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from typing import Any

import trio
from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.gc_collector import GCCollector
from prometheus_client.platform_collector import PlatformCollector
from prometheus_client.process_collector import ProcessCollector
from prometheus_client.registry import Collector

from actors.node import NodeObserver

log = logging.getLogger("railraft.metrics")

ROLES = ("follower", "pre_candidate", "candidate", "leader")
# Seconds: a local fsync is ~0.1-10 ms, a slow disk or an overloaded host shows in the upper buckets.
LATENCY_BUCKETS = (0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
SNAPSHOT_BUCKETS = tuple(float(4**k * 1024) for k in range(1, 12))  # 4 KiB .. 4 GiB
SNAPSHOT_KINDS = ("taken", "sent", "installed")

REQUEST_TIMEOUT_S = 5.0
MAX_REQUEST_BYTES = 16384
MAX_CONNECTIONS = 8


class NodeMetrics(NodeObserver):
    """The metrics of one node: its registry and the hot-path hooks (pass it as `Node(..., metrics=...)`)."""

    def __init__(self, registry: CollectorRegistry | None = None, *, process: bool = True) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=False)
        r = self.registry
        self.proposals = Counter("railraft_proposals", "Commands appended to the log by this node as leader",
                                 registry=r)
        self.persisted_entries = Counter("railraft_persisted_entries", "Entries written to the Raft log",
                                         registry=r)
        self.applied_entries = Counter("railraft_applied_entries", "Entries applied to the state machine",
                                       registry=r)
        self.fsync_seconds = Histogram("railraft_fsync_seconds",
                                       "Durable write of one batch to the Raft log (append, term/vote, fsync)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.apply_seconds = Histogram("railraft_apply_seconds",
                                       "Applying one batch of committed entries (one SQLite transaction)",
                                       buckets=LATENCY_BUCKETS, registry=r)
        self.checkpoint_seconds = Histogram("railraft_wal_checkpoint_seconds",
                                            "How long copying the database's WAL into its file held up applies",
                                            buckets=LATENCY_BUCKETS, registry=r)
        self.peer_errors = Counter("railraft_peer_rpc_errors", "Failed sends to a peer", ["peer"], registry=r)
        self.leader_changes = Counter("railraft_leader_changes", "New leaders this node has seen", registry=r)
        self.snapshot_bytes = Histogram("railraft_snapshot_bytes", "Size of snapshots taken, sent or installed",
                                        ["kind"], buckets=SNAPSHOT_BUCKETS, registry=r)
        self._snapshot_kinds = {k: self.snapshot_bytes.labels(k) for k in SNAPSHOT_KINDS}
        self._peer_errors: dict[int, Any] = {}
        self._state: NodeStateCollector | None = None
        if process:
            ProcessCollector(registry=r)
            PlatformCollector(registry=r)
            GCCollector(registry=r)

    def watch(self, node: Any) -> None:
        """Export `node`'s state (role, term, indexes...) at every scrape."""
        if self._state is None:
            self._state = NodeStateCollector(node)
            self.registry.register(self._state)
        else:
            self._state.node = node

    def exposition(self, accept: str = "") -> tuple[bytes, str]:
        """(body, content type) of a scrape, in the format `accept` asks for (Prometheus text by default)."""
        encoder, content_type = choose_encoder(accept)
        return encoder(self.registry), content_type

    # ----- NodeObserver hooks: one call per batch
    def proposed(self, entries: int) -> None:
        self.proposals.inc(entries)

    def persisted(self, seconds: float, entries: int) -> None:
        self.fsync_seconds.observe(seconds)
        if entries:
            self.persisted_entries.inc(entries)

    def applied(self, seconds: float, entries: int) -> None:
        self.apply_seconds.observe(seconds)
        self.applied_entries.inc(entries)

    def checkpointed(self, seconds: float) -> None:
        self.checkpoint_seconds.observe(seconds)

    def peer_error(self, peer: int) -> None:
        child = self._peer_errors.get(peer)
        if child is None:
            child = self._peer_errors[peer] = self.peer_errors.labels(str(peer))
        child.inc()

    def snapshot(self, kind: str, size: int) -> None:
        child = self._snapshot_kinds.get(kind) or self.snapshot_bytes.labels(kind)
        child.observe(size)

    def leader_changed(self, leader: int) -> None:
        self.leader_changes.inc()


class NodeStateCollector(Collector):
    """Gauges read from the node at scrape time (run it on the node's Trio thread: see serve_metrics)."""

    def __init__(self, node: Any) -> None:
        self.node = node

    def describe(self) -> Iterable[Metric]:
        return []  # generated at scrape time; no up-front name check needed

    def collect(self) -> Iterable[Metric]:
        node = self.node
        info = GaugeMetricFamily("railraft_node_info", "This node: id, cluster and address",
                                 labels=["node_id", "cluster_id", "address"])
        info.add_metric([str(node.id), node.s.cluster_id, f"{node.s.host}:{node.s.port}"], 1)
        yield info
        if not hasattr(node, "core"):
            return  # still recovering its log: nothing else is known yet
        st = node.status()
        role = GaugeMetricFamily("railraft_role", "1 for this node's current Raft role, 0 for the others",
                                 labels=["role"])
        for name in ROLES:
            role.add_metric([name], 1 if st["role"] == name else 0)
        yield role
        for name, key, text in (
            ("railraft_term", "term", "Current Raft term"),
            ("railraft_leader_id", "leader", "The leader this node knows of (0 = unknown)"),
            ("railraft_commit_index", "commit", "Highest log index known to be committed"),
            ("railraft_applied_index", "applied", "Highest log index applied to the database"),
            ("railraft_last_log_index", "last_index", "Index of the last entry in the log"),
            ("railraft_snapshot_index", "snapshot_index", "Index the log is compacted up to"),
            ("railraft_log_bytes", "log_bytes", "Size of the Raft log segments on disk"),
        ):
            yield GaugeMetricFamily(name, text, value=st[key])
        members = GaugeMetricFamily("railraft_members", "Members of the configuration by kind", labels=["kind"])
        members.add_metric(["voter"], len(st["voters"]))
        members.add_metric(["learner"], len(st["learners"]))
        yield members
        yield GaugeMetricFamily("railraft_pending_proposals", "Proposals waiting to be applied",
                                value=len(node.waiters))
        yield GaugeMetricFamily("railraft_pending_reads", "Linearizable reads waiting", value=len(node.reads))
        yield CounterMetricFamily("railraft_dropped_messages", "Peer messages dropped (peer queue full or no address)",
                                  value=st["dropped_messages"])
        progress = st.get("progress")
        if progress:
            match = GaugeMetricFamily("railraft_peer_match_index", "Highest index known replicated to a peer (leader)",
                                      labels=["peer"])
            for peer, pr in progress.items():
                if peer != node.id:
                    match.add_metric([str(peer)], pr["match"])
            yield match


# ================================================================================= HTTP server


async def open_metrics_listeners(host: str, port: int) -> list[trio.SocketListener]:
    """Bind the metrics port (OSError if it is taken); port 0 picks a free one."""
    return await trio.open_tcp_listeners(port, host=host)


def listener_port(listeners: list[trio.SocketListener]) -> int:
    """The port the listeners are bound to."""
    return listeners[0].socket.getsockname()[1]


async def serve_metrics(metrics: NodeMetrics, listeners: list[trio.SocketListener], *,
                        task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
    """Answer scrapes on `listeners` until cancelled; started() with the bound port.  Closes the listeners."""
    limiter = trio.CapacityLimiter(MAX_CONNECTIONS)

    async def handler(stream: trio.SocketStream) -> None:
        async with limiter:
            await _handle(metrics, stream)

    try:
        async with trio.open_nursery() as nursery:
            task_status.started(listener_port(listeners))
            await trio.serve_listeners(handler, listeners, handler_nursery=nursery)
    finally:
        for listener in listeners:
            with trio.CancelScope(shield=True):
                await listener.aclose()


async def _handle(metrics: NodeMetrics, stream: trio.SocketStream) -> None:
    # A scrape must never take the node down: every failure here ends this connection only.
    try:
        with trio.move_on_after(REQUEST_TIMEOUT_S):
            head = await _read_head(stream)
            if head is None:
                return
            await stream.send_all(_respond(metrics, head))
    except (trio.BrokenResourceError, trio.ClosedResourceError):
        pass
    except Exception:  # noqa: BLE001 - see above
        log.exception("metrics: serving a request failed")
    finally:
        with trio.CancelScope(shield=True), trio.move_on_after(1):
            await stream.aclose()


async def _read_head(stream: trio.SocketStream) -> bytes | None:
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        if len(data) > MAX_REQUEST_BYTES:
            return None
        chunk = await stream.receive_some(4096)
        if not chunk:
            return data or None
        data += chunk
    return data


def _respond(metrics: NodeMetrics, head: bytes) -> bytes:
    lines = head.decode("latin-1").splitlines()
    parts = lines[0].split() if lines else []
    if len(parts) < 2:
        return _http(400, b"bad request\n")
    method, path = parts[0], parts[1].split("?", 1)[0]
    headers = {}
    for line in lines[1:]:
        name, sep, value = line.partition(":")
        if sep:
            headers[name.strip().lower()] = value.strip()
    if method not in ("GET", "HEAD"):
        return _http(405, b"only GET and HEAD\n", extra=[("Allow", "GET, HEAD")])
    if path == "/metrics":
        try:
            body, ctype = metrics.exposition(headers.get("accept", ""))
        except Exception:  # noqa: BLE001 - a collector bug answers 500, it does not crash the node
            log.exception("metrics: collecting failed")
            return _http(500, b"collecting metrics failed\n")
        return _http(200, body, ctype, head_only=method == "HEAD")
    if path == "/":
        return _http(200, b"railraft node metrics: /metrics\n", head_only=method == "HEAD")
    return _http(404, b"not found: try /metrics\n")


_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed", 500: "Internal Server Error"}


def _http(status: int, body: bytes, ctype: str = "text/plain; charset=utf-8", *, head_only: bool = False,
          extra: list[tuple[str, str]] | None = None) -> bytes:
    hdrs = [("Content-Type", ctype), ("Content-Length", str(len(body))), ("Connection", "close")] + (extra or [])
    out = f"HTTP/1.1 {status} {_REASONS[status]}\r\n" + "".join(f"{k}: {v}\r\n" for k, v in hdrs) + "\r\n"
    return out.encode("latin-1") + (b"" if head_only else body)


def metrics_url(host: str, port: int) -> str:
    """What an operator points Prometheus (or a browser) at."""
    return f"http://{host}:{port}/metrics"


__all__ = ["NodeMetrics", "NodeStateCollector", "open_metrics_listeners", "serve_metrics", "metrics_url"]
