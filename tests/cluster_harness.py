"""Process-level test harness: real `railraft node` processes on 127.0.0.1, driven and cleaned up by a test.

    cluster = ProcessCluster(tmp_path, nodes=3, snapshot_entries=20)   # writes tmp_path/cluster.toml
    cluster.start_all()
    leader = cluster.wait_leader()
    cluster.register("alice", "password123")          # through the Ticketing API of any running node
    cluster.kill(leader)                              # SIGKILL, reaped
    cluster.pause(2); cluster.resume(2)               # SIGSTOP / SIGCONT
    cluster.restart(leader)
    cluster.close()                                   # always: every process we started is stopped and reaped

Each node runs `python -m gateway.cli node --id N --config cluster.toml` with its output in
tmp_path/nodeN.log (`cluster.log(N)`), so a failing test can show what the nodes said.  Ports are free
ephemeral ports picked at construction.  The cluster has a secret (tmp_path/cluster.secret, named by
cluster.toml; `secret=False` for an unauthenticated cluster), which the admin helpers here sign with;
`cluster.secret_env()` is the environment a `railraft` subprocess needs for admin commands.  Only processes
this harness started are ever signalled, by PID.

The gRPC client side is gateway.admin_client run with `asyncio.run` (each call its own short-lived loop), so
tests are plain synchronous functions.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, TypeVar

from actors.config import ClusterConfig, NodeAddress
from gateway import admin_client
from gateway.cli import dump_database
from gateway.cluster import free_ports, port_is_free  # noqa: F401 - re-exported for the tests
from gateway.peer_auth import SECRET_ENV, SECRET_FILE_NAME, ensure_secret_file

T = TypeVar("T")

ROOT = Path(__file__).resolve().parents[1]
HOST = "127.0.0.1"
STOP_TIMEOUT_S = 15.0


def free_port_range(count: int, attempts: int = 200) -> int:
    """A first port P such that P .. P+count-1 are all free now (for `railraft cluster up --port P`)."""
    import random

    rng = random.Random()
    for _ in range(attempts):
        base = rng.randrange(20000, 32000)
        if all(port_is_free(base + i) for i in range(count)):
            return base
    raise RuntimeError(f"no run of {count} free ports found")


def wait_until(pred: Callable[[], T], timeout: float, what: str, poll: float = 0.05) -> T:
    """Poll `pred()` until it returns something truthy (returned); AssertionError naming `what` on timeout."""
    deadline = time.monotonic() + timeout
    last: Any = None
    while True:
        last = pred()
        if last:
            return last
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:g}s waiting for {what} (last: {last!r})")
        time.sleep(poll)


def run(coro: Any) -> Any:
    """Run one gateway.admin_client coroutine to completion."""
    return asyncio.run(coro)


@dataclass
class NodeProc:
    """One node process the harness manages."""

    id: int
    host: str
    port: int
    data_dir: Path
    log_path: Path
    join: bool = False
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen | None = None
    paused: bool = False
    pids: list[int] = field(default_factory=list)  # every pid this node ever had

    @property
    def address(self) -> str:
        return f"{self.host}:{self.port}"

    @property
    def db_path(self) -> Path:
        return self.data_dir / f"Node{self.id}TicketBooking.db"

    def running(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


class ProcessCluster:
    """N railraft nodes as processes; see the module docstring."""

    def __init__(self, root: Path, nodes: int = 3, *, snapshot_entries: int = 10000, tick_ms: int = 50,
                 election_ticks: int = 10, heartbeat_ticks: int = 1, log_format: str = "text",
                 env: dict[str, str] | None = None, secret: bool = True) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        ports = free_ports(nodes)
        # The cluster secret (None: peer traffic unauthenticated), as `railraft cluster up` makes it.
        self.secret: bytes | None = ensure_secret_file(self.root / SECRET_FILE_NAME)[0] if secret else None
        self.cfg = ClusterConfig(
            cluster_id=f"test-{os.getpid()}-{ports[0]}",
            data_dir=Path("."),
            tick_ms=tick_ms,
            election_ticks=election_ticks,
            heartbeat_ticks=heartbeat_ticks,
            snapshot_entries=snapshot_entries,
            nodes=tuple(NodeAddress(i + 1, HOST, p) for i, p in enumerate(ports)),
            secret_file=Path(SECRET_FILE_NAME) if secret else None,
        )
        self.config_path = self.root / "cluster.toml"
        self.config_path.write_text(self.cfg.to_toml())
        self.log_format = log_format
        self.env = dict(env or {})
        self.nodes: dict[int, NodeProc] = {
            n.id: NodeProc(n.id, n.host, n.port, self.root / f"node{n.id}", self.root / f"node{n.id}.log")
            for n in self.cfg.nodes
        }
        self.removed: set[int] = set()

    def set_dial(self, dial: dict[int, dict[int, str]]) -> None:
        """Make node i connect to peer j at dial[i][j] ("host:port", e.g. a fault-injecting proxy) instead of
        at j's own address (cluster.toml `dial`).  Rewrites cluster.toml: call it before starting the nodes."""
        self.cfg = replace(self.cfg, nodes=tuple(
            replace(n, dial=tuple(sorted(dial.get(n.id, {}).items()))) for n in self.cfg.nodes))
        self.config_path.write_text(self.cfg.to_toml())

    # ---------------------------------------------------------------------------------- processes
    def _argv(self, n: NodeProc) -> list[str]:
        argv = [sys.executable, "-m", "gateway.cli", "node", "--id", str(n.id), "--config", str(self.config_path),
                "--log-format", self.log_format]
        if n.join:
            argv += ["--join", "--host", n.host, "--port", str(n.port), "--data-dir", str(n.data_dir)]
        return argv

    def start(self, node_id: int, env: dict[str, str] | None = None) -> NodeProc:
        """Start (or start again) one node; returns at once (see `wait_serving`)."""
        n = self.nodes[node_id]
        assert not n.running(), f"node {node_id} is already running"
        if env is not None:
            n.env = dict(env)
        full_env = dict(os.environ)
        full_env.update(self.env)
        full_env.update(n.env)
        full_env["PYTHONPATH"] = str(ROOT) + (os.pathsep + full_env["PYTHONPATH"] if full_env.get("PYTHONPATH") else "")
        full_env["PYTHONUNBUFFERED"] = "1"
        with open(n.log_path, "ab") as logf:
            logf.write(f"=== harness: starting node {node_id} at {time.strftime('%H:%M:%S')}\n".encode())
            logf.flush()
            n.proc = subprocess.Popen(self._argv(n), stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                      env=full_env, cwd=str(self.root), start_new_session=True)
        n.pids.append(n.proc.pid)
        n.paused = False
        return n

    def start_all(self) -> None:
        for nid in self.nodes:
            self.start(nid)

    def add_joining(self, env: dict[str, str] | None = None) -> NodeProc:
        """Declare (not start) a new node with the next id on a free port; it will run with --join."""
        nid = max(self.nodes) + 1
        port = free_ports(1)[0]
        n = NodeProc(nid, HOST, port, self.root / f"node{nid}", self.root / f"node{nid}.log", join=True,
                     env=dict(env or {}))
        self.nodes[nid] = n
        return n

    def wait_serving(self, node_ids: list[int] | None = None, timeout: float = 15.0) -> None:
        """Until each node answers Status."""
        for nid in node_ids or list(self.nodes):
            wait_until(lambda nid=nid: self.status(nid).get("up") or self._died(nid), timeout,
                       f"node {nid} to serve")
            self._died(nid, raise_=True)

    def _died(self, nid: int, raise_: bool = False) -> bool:
        n = self.nodes[nid]
        dead = n.proc is not None and n.proc.poll() is not None
        if dead and raise_:
            raise AssertionError(f"node {nid} exited with {n.proc.returncode}:\n{self.log_tail(nid)}")
        return dead

    def signal(self, node_id: int, sig: int) -> None:
        n = self.nodes[node_id]
        assert n.proc is not None
        os.kill(n.proc.pid, sig)

    def kill(self, node_id: int) -> int:
        """SIGKILL one node and reap it; returns its exit status."""
        n = self.nodes[node_id]
        assert n.running(), f"node {node_id} is not running"
        os.kill(n.proc.pid, signal.SIGKILL)
        n.paused = False
        return n.proc.wait(timeout=STOP_TIMEOUT_S)

    def stop(self, node_id: int, timeout: float = STOP_TIMEOUT_S) -> int:
        """SIGTERM one node (graceful stop) and reap it; SIGKILL if it does not exit in time."""
        n = self.nodes[node_id]
        if n.proc is None or n.proc.poll() is not None:
            return n.proc.returncode if n.proc is not None else 0
        if n.paused:
            self.resume(node_id)
        os.kill(n.proc.pid, signal.SIGTERM)
        try:
            return n.proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            os.kill(n.proc.pid, signal.SIGKILL)
            n.proc.wait(timeout=STOP_TIMEOUT_S)
            raise AssertionError(f"node {node_id} did not stop within {timeout:g}s of SIGTERM") from None

    def pause(self, node_id: int) -> None:
        """SIGSTOP: the process freezes with its sockets open (a hung node, not a dead one)."""
        self.signal(node_id, signal.SIGSTOP)
        self.nodes[node_id].paused = True

    def resume(self, node_id: int) -> None:
        self.signal(node_id, signal.SIGCONT)
        self.nodes[node_id].paused = False

    def restart(self, node_id: int) -> NodeProc:
        if self.nodes[node_id].running():
            self.stop(node_id)
        return self.start(node_id)

    def wipe(self, node_id: int) -> None:
        """Delete a (stopped) node's data directory: database, Raft log, snapshots."""
        n = self.nodes[node_id]
        assert not n.running()
        shutil.rmtree(n.data_dir, ignore_errors=True)

    def close(self) -> None:
        """Stop every process we started (SIGCONT if paused, SIGTERM, then SIGKILL), reap, check ports."""
        errors = []
        for n in self.nodes.values():
            if n.proc is None:
                continue
            if n.proc.poll() is None:
                try:
                    if n.paused:
                        os.kill(n.proc.pid, signal.SIGCONT)
                    os.kill(n.proc.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_TIMEOUT_S
        for n in self.nodes.values():
            if n.proc is None:
                continue
            try:
                n.proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                errors.append(f"node {n.id} (pid {n.proc.pid}) ignored SIGTERM; killed")
                with contextlib.suppress(ProcessLookupError):
                    os.kill(n.proc.pid, signal.SIGKILL)
                n.proc.wait(timeout=STOP_TIMEOUT_S)
        for n in self.nodes.values():
            if n.proc is not None:
                wait_until(lambda n=n: port_is_free(n.port), 5.0, f"port {n.port} of node {n.id} to be free")
        if errors:
            raise AssertionError("; ".join(errors))

    # ---------------------------------------------------------------------------------- observing
    def address(self, node_id: int) -> str:
        return self.nodes[node_id].address

    def live(self) -> list[int]:
        """Ids of nodes that run and are not paused (and were not removed)."""
        return [nid for nid, n in self.nodes.items() if n.running() and not n.paused and nid not in self.removed]

    def addrs(self, node_ids: list[int] | None = None) -> list[str]:
        return [self.address(nid) for nid in (node_ids if node_ids is not None else self.live())]

    def status(self, node_id: int, timeout: float = 1.0) -> dict[str, Any]:
        return run(admin_client.node_status(self.address(node_id), timeout))

    def statuses(self, node_ids: list[int] | None = None) -> dict[int, dict[str, Any]]:
        ids = node_ids if node_ids is not None else self.live()
        st = run(admin_client.cluster_status(self.addrs(ids), 1.0))
        return dict(zip(ids, st["nodes"]))

    def leader(self, node_ids: list[int] | None = None) -> int | None:
        """The node that leads in the highest term among `node_ids` (default: live nodes), if any."""
        sts = self.statuses(node_ids)
        leaders = [(s["term"], nid) for nid, s in sts.items() if s.get("up") and s["role"] == "leader"]
        return max(leaders)[1] if leaders else None

    def wait_leader(self, timeout: float = 10.0, among: list[int] | None = None,
                    exclude: tuple[int, ...] = ()) -> int:
        """Wait until some node (in `among`, not in `exclude`) leads, and every other one there agrees."""
        def check() -> int | None:
            ids = [i for i in (among if among is not None else self.live()) if i not in exclude]
            sts = self.statuses(ids)
            leaders = [(s["term"], nid) for nid, s in sts.items() if s.get("up") and s["role"] == "leader"]
            if not leaders:
                return None
            term, lead = max(leaders)
            return lead
        return wait_until(check, timeout, "a leader", poll=0.02)

    def wait_caught_up(self, node_ids: list[int] | None = None, timeout: float = 20.0) -> int:
        """Until the given nodes (default: live) have the same applied index as the leader's commit index."""
        ids = node_ids if node_ids is not None else self.live()

        def check() -> int | None:
            sts = self.statuses(ids)
            if not all(s.get("up") for s in sts.values()):
                return None
            applied = {s["applied_index"] for s in sts.values()}
            commits = {s["commit_index"] for s in sts.values()}
            if len(applied) == 1 and len(commits) == 1 and applied == commits:
                return applied.pop()
            return None

        return wait_until(check, timeout, f"nodes {ids} to converge", poll=0.1)

    def log(self, node_id: int) -> str:
        return self.nodes[node_id].log_path.read_text(errors="replace")

    def log_tail(self, node_id: int, lines: int = 40) -> str:
        try:
            return "\n".join(self.log(node_id).splitlines()[-lines:])
        except FileNotFoundError:
            return "(no log)"

    def dump(self, node_id: int) -> str:
        """Canonical dump of a node's database (stop the node first for a quiescent view)."""
        return dump_database(self.nodes[node_id].db_path)

    # ---------------------------------------------------------------------------------- clients
    def register(self, username: str, password: str, via: list[int] | None = None, timeout: float = 15.0) -> dict:
        return run(admin_client.register(self.addrs(via), username, password, timeout))

    def login(self, username: str, password: str, via: list[int] | None = None, timeout: float = 15.0) -> dict:
        return run(admin_client.login(self.addrs(via), username, password, timeout))

    def logout(self, token: str, via: list[int] | None = None, timeout: float = 15.0) -> dict:
        return run(admin_client.logout(self.addrs(via), token, timeout))

    def add_node(self, node_id: int, via: list[int] | None = None, timeout: float = 60.0) -> dict:
        n = self.nodes[node_id]
        return run(admin_client.add_node(self.addrs(via), node_id, n.host, n.port, timeout, secret=self.secret))

    def remove_node(self, node_id: int, via: list[int] | None = None, timeout: float = 15.0) -> dict:
        res = run(admin_client.remove_node(self.addrs(via), node_id, timeout, secret=self.secret))
        if res["ok"]:
            self.removed.add(node_id)
        return res

    def transfer_leader(self, to: int = 0, via: list[int] | None = None, timeout: float = 15.0) -> dict:
        return run(admin_client.transfer_leader(self.addrs(via), to, timeout, secret=self.secret))

    def secret_env(self) -> dict[str, str]:
        """{RAILRAFT_CLUSTER_SECRET: ...} for a `railraft` subprocess's admin commands ({} without a secret)."""
        return {SECRET_ENV: self.secret.hex()} if self.secret is not None else {}

    def describe(self) -> str:
        """Status of every node plus each log's tail: for assertion messages."""
        parts = []
        for nid, n in self.nodes.items():
            st = self.status(nid) if n.running() and not n.paused else {"role": "not running"}
            parts.append(f"--- node {nid} {n.address} pids {n.pids}: {st}\n{self.log_tail(nid, 25)}")
        return "\n".join(parts)


async def write_load(addrs: list[str], prefix: str, stop: Callable[[], bool], acked: list[str],
                     failed: list[str], ambiguous: list[str] | None = None, password: str = "password123",
                     concurrency: int = 4, timeout: float = 20.0) -> None:
    """Register users PREFIXk until `stop()`, `concurrency` at a time; record acknowledged and failed names.

    Register carries no request id (the original wire contract), so when an answer is lost (the node
    shut down after proposing) and the client retries on another node, the retry finds the name taken by
    the first attempt: such names go to `ambiguous` (they do exist).
    """
    counter = iter(range(10**9))

    async def worker() -> None:
        while not stop():
            name = f"{prefix}{next(counter)}"
            try:
                res = await admin_client.register(addrs, name, password, timeout)
            except Exception as e:  # noqa: BLE001 - the test decides what failures mean
                failed.append(f"{name}: {e!r}")
                continue
            if res["success"]:
                acked.append(name)
            elif ambiguous is not None and "already taken" in res["message"]:
                ambiguous.append(name)
            else:
                failed.append(f"{name}: {res['message']}")

    await asyncio.gather(*(worker() for _ in range(concurrency)))
