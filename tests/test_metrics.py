"""Operator metrics and logs (issue 5): gateway.metrics, `railraft node --metrics-port`, `cluster up`, log context.

* in-memory nodes under Trio's mock clock (as tests/test_actors_node.py): the collector and the hot-path
  hooks move as proposals commit, peers fail and snapshots travel;
* the HTTP endpoint in-process on a free port: /metrics parses, bad requests get 4xx, the port closes;
* real processes: a 3-node cluster with metrics ports from cluster.toml, scraped over HTTP, JSON logs with
  node and term; `cluster up` printing and serving the metrics URLs.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import subprocess
import sys
import urllib.error
import urllib.request
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import trio
from prometheus_client.parser import text_string_to_metric_families

from actors.config import ClusterConfig, ConfigError, NodeAddress, load_config
from actors.node import Node, NodeSettings
from actors.supervisor import RestartPolicy
from actors.transport import MemoryNetwork
from gateway.cli import JsonFormatter, _NodeContext, build_parser, setup_node_logging
from gateway.cluster import metrics_ports, node_command
from gateway.metrics import NodeMetrics, open_metrics_listeners, serve_metrics
from raft.storage import MemoryStorage
from raft.types import Role
from store.commands import RegisterUser, encode_command
from store.memdb import MemoryDatabase

from .checkpoint_spy import CheckpointSpyDatabase
from .cluster_harness import ROOT, ProcessCluster, free_port_range, free_ports, port_is_free, wait_until


def register(i: int) -> bytes:
    return encode_command(RegisterUser(request_id=f"r{i}", client_id="test", ts_ms=1_000 + i, username=f"user{i}",
                                       password_hash="scrypt$x", role="CUSTOMER"))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """{(sample name, sorted labels): value} of a Prometheus text exposition."""
    out = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def value(sm: dict, name: str, **labels: str) -> float:
    return sm.get((name, tuple(sorted(labels.items()))), 0.0)


def scrape_registry(m: NodeMetrics) -> dict:
    body, ctype = m.exposition()
    assert ctype.startswith("text/plain")
    return samples(body.decode())


# ================================================================================ in-memory nodes


class _Storage(MemoryStorage):
    def close(self) -> None:  # survives its node, so a restarted node reloads it
        return None


class MetricCluster:
    def __init__(self, nursery: trio.Nursery, tmp: Path, n: int = 3, snapshot_entries: int = 10_000) -> None:
        self.nursery, self.tmp, self.ids = nursery, tmp, list(range(1, n + 1))
        self.net = MemoryNetwork()
        self.snapshot_entries = snapshot_entries
        self.storage = {i: _Storage() for i in self.ids}
        self.db = {i: MemoryDatabase() for i in self.ids}
        self.metrics: dict[int, NodeMetrics] = {}
        self.nodes: dict[int, Node] = {}
        self.scopes: dict[int, trio.CancelScope] = {}

    async def start(self, i: int, join: bool = False) -> Node:
        settings = NodeSettings(
            id=i, cluster_id="test", data_dir=self.tmp / f"node{i}", host="127.0.0.1", port=50050 + i,
            peers={j: ("127.0.0.1", 50050 + j) for j in self.ids}, initial_voters=[] if join else self.ids,
            snapshot_entries=self.snapshot_entries, seed=i,
            restart_policy=RestartPolicy(max_restarts=3, window_s=10, backoff_initial_s=0.01),
        )
        m = self.metrics[i] = NodeMetrics(process=False)
        node = Node(settings, self.db[i], self.net.factory(i), storage=self.storage[i], inline_io=True, metrics=m)
        m.watch(node)
        scope = self.scopes[i] = trio.CancelScope()
        self.nodes[i] = node

        async def run(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                await node.run(task_status=task_status)

        await self.nursery.start(run)
        self.net.register(i, node.deliver, node.receive_snapshot)
        return node

    def stop(self, i: int) -> None:
        self.net.unregister(i)
        self.scopes[i].cancel()

    async def leader(self) -> Node:
        with trio.fail_after(5):
            while True:
                live = [n for i, n in self.nodes.items() if not self.scopes[i].cancel_called]
                leaders = [n for n in live if n.role == Role.LEADER]
                if len(leaders) == 1 and all(n.leader == leaders[0].id for n in live):
                    return leaders[0]
                await trio.sleep(0.01)

    async def settle(self, ids: list[int]) -> None:
        with trio.fail_after(10):
            while len({self.nodes[i].applied_index for i in ids}) != 1:
                await trio.sleep(0.05)


@pytest.mark.trio
async def test_wal_checkpoints_between_batches_are_timed(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    """An operator sees how often, and for how long, copying the WAL holds up a node's applier."""
    async with trio.open_nursery() as nursery:
        c = MetricCluster(nursery, tmp_path)
        c.db = {i: CheckpointSpyDatabase() for i in c.ids}  # a checkpoint after every batch
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        for k in range(3):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await c.settle(c.ids)
        for i in c.ids:
            m = scrape_registry(c.metrics[i])
            assert value(m, "railraft_wal_checkpoint_seconds_count") == c.db[i].checkpoints >= 3
            assert value(m, "railraft_wal_checkpoint_seconds_sum") == pytest.approx(0.001 * c.db[i].checkpoints)
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_collector_and_hooks_follow_the_node(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = MetricCluster(nursery, tmp_path)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        before = {i: scrape_registry(c.metrics[i]) for i in c.ids}
        b = before[ld.id]
        assert value(b, "railraft_role", role="leader") == 1 and value(b, "railraft_role", role="follower") == 0
        assert value(b, "railraft_term") == ld.term >= 1
        assert value(b, "railraft_leader_id") == ld.id
        assert value(b, "railraft_node_info", node_id=str(ld.id), cluster_id="test",
                     address=f"127.0.0.1:{50050 + ld.id}") == 1
        assert value(b, "railraft_members", kind="voter") == 3
        for i in c.ids:
            if i != ld.id:
                assert value(before[i], "railraft_role", role="follower") == 1
                assert value(before[i], "railraft_role", role="leader") == 0
            assert value(before[i], "railraft_leader_changes_total") >= 1
        for k in range(20):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await ld.propose_many([register(100 + k) for k in range(5)], timeout=5)  # one batch of five
        await c.settle(c.ids)
        after = {i: scrape_registry(c.metrics[i]) for i in c.ids}
        a = after[ld.id]
        assert value(a, "railraft_proposals_total") - value(b, "railraft_proposals_total") == 25
        for i in c.ids:
            bi, ai = before[i], after[i]
            assert value(ai, "railraft_commit_index") >= value(bi, "railraft_commit_index") + 25
            assert value(ai, "railraft_applied_index") == c.nodes[i].applied_index
            assert value(ai, "railraft_applied_index") >= value(bi, "railraft_applied_index") + 25
            assert value(ai, "railraft_last_log_index") >= value(ai, "railraft_commit_index")
            assert value(ai, "railraft_applied_entries_total") - value(bi, "railraft_applied_entries_total") >= 25
            assert value(ai, "railraft_persisted_entries_total") - value(bi, "railraft_persisted_entries_total") >= 25
            assert value(ai, "railraft_wal_checkpoint_seconds_count") == 0  # an in-memory database has no WAL
            # batches, not entries: fewer observations than entries is fine, none is not
            assert value(ai, "railraft_fsync_seconds_count") > value(bi, "railraft_fsync_seconds_count")
            assert value(ai, "railraft_apply_seconds_count") > value(bi, "railraft_apply_seconds_count")
            assert value(ai, "railraft_fsync_seconds_bucket", le="+Inf") == value(ai, "railraft_fsync_seconds_count")
        follower = next(i for i in c.ids if i != ld.id)
        assert value(a, "railraft_peer_match_index", peer=str(follower)) >= value(a, "railraft_commit_index")
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_peer_errors_and_snapshot_sizes(autojump_clock: trio.abc.Clock, tmp_path: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = MetricCluster(nursery, tmp_path, snapshot_entries=8)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        lag = next(i for i in c.ids if i != ld.id)
        c.stop(lag)
        for k in range(40):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        m = scrape_registry(c.metrics[ld.id])
        assert value(m, "railraft_peer_rpc_errors_total", peer=str(lag)) > 0, "sends to the stopped node failed"
        assert value(m, "railraft_snapshot_bytes_count", kind="taken") >= 1
        assert value(m, "railraft_snapshot_bytes_sum", kind="taken") > 0
        assert value(m, "railraft_snapshot_index") > 0
        # The stopped node comes back empty and is brought up to date with a snapshot.
        c.storage[lag] = _Storage()
        c.db[lag] = MemoryDatabase()
        await c.start(lag, join=True)
        await c.settle(c.ids)
        m = scrape_registry(c.metrics[ld.id])
        assert value(m, "railraft_snapshot_bytes_count", kind="sent") >= 1
        got = scrape_registry(c.metrics[lag])
        assert value(got, "railraft_snapshot_bytes_count", kind="installed") >= 1
        assert value(got, "railraft_snapshot_bytes_sum", kind="installed") > 0
        nursery.cancel_scope.cancel()


def test_observer_hooks_are_cheap() -> None:
    """One increment/observation per batch: a few microseconds at most (printed; loose bound for slow CI)."""
    import time

    m = NodeMetrics(process=False)
    n = 20000
    t0 = time.perf_counter()
    for _ in range(n):
        m.proposed(8)
        m.persisted(0.001, 8)
        m.applied(0.001, 8)
    per_batch = (time.perf_counter() - t0) / n
    print(f"metrics hooks: {per_batch * 1e6:.2f} us per batch (propose + persist + apply)")
    assert per_batch < 100e-6


# ================================================================================ HTTP endpoint


async def _get(port: int, request: bytes) -> bytes:
    stream = await trio.open_tcp_stream("127.0.0.1", port)
    async with stream:
        await stream.send_all(request)
        data = b""
        while chunk := await stream.receive_some(65536):
            data += chunk
    return data


@pytest.mark.trio
async def test_http_endpoint_serves_and_closes() -> None:
    m = NodeMetrics()
    m.proposed(3)
    async with trio.open_nursery() as nursery:
        listeners = await open_metrics_listeners("127.0.0.1", 0)
        port = await nursery.start(serve_metrics, m, listeners)
        with trio.fail_after(10):
            resp = await _get(port, b"GET /metrics HTTP/1.1\r\nHost: x\r\n\r\n")
            head, _, body = resp.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 ") and b"text/plain; version=0.0.4" in head
            sm = samples(body.decode())
            assert value(sm, "railraft_proposals_total") == 3
            assert any(name == "process_resident_memory_bytes" for name, _ in sm)
            om = await _get(port, b"GET /metrics HTTP/1.1\r\nAccept: application/openmetrics-text\r\n\r\n")
            assert b"application/openmetrics-text" in om.split(b"\r\n\r\n")[0] and om.rstrip().endswith(b"# EOF")
            assert (await _get(port, b"HEAD /metrics HTTP/1.0\r\n\r\n")).endswith(b"\r\n\r\n")
            assert (await _get(port, b"GET /nope HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 404")
            assert (await _get(port, b"POST /metrics HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 405")
            assert (await _get(port, b"garbage\r\n\r\n")).startswith(b"HTTP/1.1 400")
            # a client that connects and says nothing does not block the others
            idle = await trio.open_tcp_stream("127.0.0.1", port)
            assert (await _get(port, b"GET / HTTP/1.1\r\n\r\n")).startswith(b"HTTP/1.1 200")
            await idle.aclose()
        nursery.cancel_scope.cancel()
    assert port_is_free(port)
    with pytest.raises(OSError):
        await trio.open_tcp_stream("127.0.0.1", port)


@pytest.mark.trio
async def test_taken_metrics_port_is_an_oserror() -> None:
    listeners = await open_metrics_listeners("127.0.0.1", 0)
    try:
        with pytest.raises(OSError):
            await open_metrics_listeners("127.0.0.1", listeners[0].socket.getsockname()[1])
    finally:
        for lst in listeners:
            await lst.aclose()


# ================================================================================ config, CLI, logs


def test_metrics_port_in_cluster_toml_and_cluster_up_ports(tmp_path: Path) -> None:
    cfg = ClusterConfig(data_dir=Path("."), nodes=(NodeAddress(1, "127.0.0.1", 7001, 9101),
                                                     NodeAddress(2, "127.0.0.1", 7002),
                                                     NodeAddress(3, "127.0.0.1", 7005)))
    path = tmp_path / "cluster.toml"
    path.write_text(cfg.to_toml())
    back = load_config(path)
    assert [n.metrics_port for n in back.nodes] == [9101, 0, 0]
    assert metrics_ports(back) == {1: 9101, 2: 8002, 3: 8005}  # the file's, else port + 1000
    assert metrics_ports(back, base=9500) == {1: 9101, 2: 9501, 3: 9502}
    assert metrics_ports(back, enabled=False) == {1: 0, 2: 0, 3: 0}
    with pytest.raises(ConfigError):
        metrics_ports(back, base=7001)  # node 2 would get 7002: its own gRPC port
    with pytest.raises(ConfigError):
        metrics_ports(back, base=65535)
    path.write_text(cfg.to_toml().replace("metrics_port = 9101", "metrics_port = 70000"))
    with pytest.raises(ConfigError):
        load_config(path)
    assert node_command(1, path, metrics_port=9101)[-2:] == ["--metrics-port", "9101"]
    assert node_command(1, path, metrics_port=0)[-2:] == ["--metrics-port", "0"]
    assert "--metrics-port" not in node_command(1, path)


def test_cli_metrics_options() -> None:
    p = build_parser()
    assert p.parse_args(["node", "--id", "1"]).metrics_port is None
    assert p.parse_args(["node", "--id", "1", "--metrics-port", "9101"]).metrics_port == 9101
    up = p.parse_args(["cluster", "up"])
    assert up.metrics_port_base is None and not up.no_metrics
    up = p.parse_args(["cluster", "up", "--metrics-port-base", "9100", "--no-metrics"])
    assert up.metrics_port_base == 9100 and up.no_metrics


class _FakeCore:
    term = 0


class _FakeNode:
    def __init__(self) -> None:
        self.core = _FakeCore()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_every_log_line_carries_node_and_live_term(fmt: str, capsys: pytest.CaptureFixture[str]) -> None:
    root = logging.getLogger()
    saved = root.handlers[:], root.level
    try:
        ctx = setup_node_logging(3, fmt)
        log = logging.getLogger("railraft.test")
        log.info("before the node exists")
        node = _FakeNode()
        ctx.node = node
        node.core.term = 4
        log.warning("in term four")
        node.core.term = 5
        logging.getLogger("grpclib.other").error("from another library, term %d", 5)
    finally:
        root.handlers[:], root.level = saved[0], saved[1]
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 3
    if fmt == "json":
        recs = [json.loads(line) for line in lines]
        assert [(r["node"], r["term"]) for r in recs] == [(3, None), (3, 4), (3, 5)]
        assert recs[1]["level"] == "WARNING" and recs[1]["message"] == "in term four"
        assert recs[2]["logger"] == "grpclib.other"
    else:
        assert " node3 term - INFO railraft.test: before the node exists" in lines[0]
        assert " node3 term 4 WARNING railraft.test: in term four" in lines[1]
        assert " node3 term 5 ERROR grpclib.other: " in lines[2]


def test_node_context_reads_a_real_node_term() -> None:
    ctx = _NodeContext(1)

    class Half:  # a Node before its log is recovered has no core yet
        pass

    ctx.node = Half()
    rec = logging.LogRecord("x", logging.INFO, __file__, 1, "m", (), None)
    ctx.filter(rec)
    assert rec.term is None and json.loads(JsonFormatter().format(rec))["term"] is None


# ================================================================================ real processes


def scrape(port: int, timeout: float = 2.0) -> dict | None:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=timeout) as r:
            assert r.status == 200
            return samples(r.read().decode())
    except (urllib.error.URLError, ConnectionError, OSError):
        return None


def test_process_cluster_serves_metrics_and_json_logs(tmp_path: Path) -> None:
    c = ProcessCluster(tmp_path / "cluster", nodes=3, log_format="json")
    mports = dict(zip(c.nodes, free_ports(3)))
    c.cfg = replace(c.cfg, nodes=tuple(replace(n, metrics_port=mports[n.id]) for n in c.cfg.nodes))
    c.config_path.write_text(c.cfg.to_toml())  # the nodes take their metrics_port from cluster.toml
    try:
        c.start_all()
        leader = c.wait_leader()

        def one_leader() -> dict | None:
            got = {nid: scrape(p) for nid, p in mports.items()}
            if any(v is None for v in got.values()):
                return None
            leaders = [nid for nid, sm in got.items() if value(sm, "railraft_role", role="leader") == 1]
            # A follower learns who leads from the leader's first heartbeat after the election: wait for it.
            known = all(value(sm, "railraft_leader_id") == leader for sm in got.values())
            return got if leaders == [leader] and known else None

        first = wait_until(one_leader, 10.0, "every node's metrics, with one leader that every node knows")
        for nid, sm in first.items():
            assert value(sm, "railraft_leader_id") == leader
            assert value(sm, "railraft_term") >= 1
            assert value(sm, "process_resident_memory_bytes") > 0
        for k in range(5):
            assert c.register(f"metric{k}", "password123")["success"]
        c.wait_caught_up()
        later = {nid: scrape(p) for nid, p in mports.items()}
        for nid, sm in later.items():
            assert value(sm, "railraft_commit_index") >= value(first[nid], "railraft_commit_index") + 5, nid
            assert value(sm, "railraft_applied_index") == value(sm, "railraft_commit_index"), nid
            assert value(sm, "railraft_fsync_seconds_count") > value(first[nid], "railraft_fsync_seconds_count")
        assert value(later[leader], "railraft_proposals_total") >= value(first[leader], "railraft_proposals_total") + 5
        for nid in c.nodes:
            recs = [json.loads(line) for line in c.log(nid).splitlines() if line and not line.startswith("===")]
            assert recs and all(r["node"] == nid and "term" in r for r in recs), nid
            assert any(f"metrics at http://127.0.0.1:{mports[nid]}/metrics" in r["message"] for r in recs), nid
            assert any(r["term"] and r["term"] >= 1 for r in recs), nid
    finally:
        c.close()
    for nid, p in mports.items():
        assert wait_until(lambda p=p: port_is_free(p), 5.0, f"metrics port {p} of node {nid} to be free")
        assert scrape(p, timeout=0.5) is None


def _pid_gone(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return True
    return False


def test_cluster_up_prints_and_serves_metrics_urls(tmp_path: Path) -> None:
    port = free_port_range(1)
    mport = free_ports(1)[0]
    data = tmp_path / "data"
    out_path = tmp_path / "up.out"
    env = dict(os.environ)
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    with open(out_path, "wb") as out:
        sup = subprocess.Popen(
            [sys.executable, "-m", "gateway.cli", "cluster", "up", "--nodes", "1", "--port", str(port),
             "--data-dir", str(data), "--metrics-port-base", str(mport)],
            stdout=out, stderr=subprocess.STDOUT, env=env, cwd=str(tmp_path), start_new_session=True,
        )
    pids: list[int] = []
    try:
        url = f"http://127.0.0.1:{mport}/metrics"
        wait_until(lambda: f"metrics: node 1 at {url}" in out_path.read_text(), 10.0, "the metrics URL printed")
        for line in out_path.read_text().splitlines():
            words = line.split()
            if "pid" in words and "log" in words:
                pids.append(int(words[words.index("pid") + 1]))
        sm = wait_until(lambda: (s := scrape(mport)) and value(s, "railraft_role", role="leader") == 1 and s,
                        15.0, "the single node to lead, seen through its metrics")
        assert value(sm, "railraft_node_info", node_id="1", cluster_id="railraft-local",
                     address=f"127.0.0.1:{port}") == 1
        # text logs carry node and term
        log_text = (data / "node1.log").read_text()
        assert " node1 term " in log_text
        sup.send_signal(signal.SIGTERM)
        assert sup.wait(timeout=30) == 0, out_path.read_text()
        for pid in pids:
            assert _pid_gone(pid)
        assert wait_until(lambda: port_is_free(mport) and port_is_free(port), 5.0, "ports free")
    finally:
        if sup.poll() is None:
            sup.kill()
            sup.wait(10)
        for pid in pids:
            if not _pid_gone(pid):
                os.kill(pid, signal.SIGKILL)
        print(out_path.read_text())
