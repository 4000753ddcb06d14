"""`railraft cluster up`: run a local cluster as child processes and keep it running.

    railraft cluster up --nodes 3 --port 50051 --data-dir data

writes `data/cluster.toml` (or reuses the one already there) and the cluster secret `data/cluster.secret` (mode
0600, generated on the first run; cluster.toml names it with `secret_file`, so every node and every
`railraft cluster ... --config data/cluster.toml` command authenticates with it; see gateway/peer_auth.py),
starts one `railraft node` process per node
(`python -m gateway.cli node --id N --config data/cluster.toml`, output appended to `data/nodeN.log`), and
supervises them:

* a node that exits is restarted after a backoff (0.5 s doubling to 10 s; reset once it ran for 30 s), and the
  exit and restart are printed;
* the leader is printed once elected and whenever it changes;
* with `--demo` (what `make run` uses): the nodes get RAILRAFT_ADMIN_PASSWORD from DATA/credentials.txt
  (generated on the first run, mode 0600), and once a leader is elected the demo data is loaded through the
  API (gateway.demo_loader: idempotent) and the credentials are printed;
* every node serves Prometheus metrics (gateway.metrics) at http://HOST:PORT/metrics, PORT being its
  `metrics_port` in cluster.toml, else its gRPC port + 1000 (or `--metrics-port-base B`: B, B+1, ... in id
  order); the URLs are printed at start; `--no-metrics` turns them off;
* Ctrl-C or SIGTERM stops everything: SIGTERM to every node, up to `STOP_GRACE_S` for them to exit, SIGKILL
  for stragglers; then the supervisor exits 0.

Children run in their own process group (a terminal's Ctrl-C reaches only the supervisor, which then stops
them in order) and ask the kernel for SIGTERM should the supervisor die (`railraft node` reads
RAILRAFT_PARENT_PID), so no node outlives it.

`start_detached_node` is what `railraft cluster add-node --start` uses: one node started with `--join`, not
supervised, that keeps running after the command returns.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field, replace
from pathlib import Path

import trio
import trio_asyncio

from actors.config import ClusterConfig, ConfigError, NodeAddress, default_config, load_config

from . import admin_client
from .peer_auth import SECRET_FILE_NAME, ensure_secret_file
from .ports import free_ports, port_is_free  # noqa: F401 - re-exported (tests, bench)

STOP_GRACE_S = 10.0  # a node needs ~2 s to drain requests plus up to 5 s to close its gRPC server
BACKOFF_INITIAL_S = 0.5
BACKOFF_MAX_S = 10.0
HEALTHY_AFTER_S = 30.0  # a node that ran this long before dying starts its backoff over
POLL_S = 0.1
LEADER_POLL_S = 0.5
METRICS_PORT_OFFSET = 1000  # default metrics port of a node: its gRPC port + this


def node_command(node_id: int, config: Path, *, join: bool = False, host: str | None = None,
                 port: int | None = None, data_dir: Path | None = None, log_format: str = "text",
                 metrics_port: int | None = None) -> list[str]:
    """argv of one `railraft node` process (run with this interpreter, so it works without the console script).

    `metrics_port`: None leaves it to the node (cluster.toml), 0 turns metrics off, else that port.
    """
    cmd = [sys.executable, "-m", "gateway.cli", "node", "--id", str(node_id), "--config", str(config),
           "--log-format", log_format]
    if join:
        cmd.append("--join")
    if host is not None:
        cmd += ["--host", host]
    if port is not None:
        cmd += ["--port", str(port)]
    if data_dir is not None:
        cmd += ["--data-dir", str(data_dir)]
    if metrics_port is not None:
        cmd += ["--metrics-port", str(metrics_port)]
    return cmd


def metrics_ports(cfg: ClusterConfig, *, enabled: bool = True, base: int | None = None) -> dict[int, int]:
    """The metrics port of every node under `cluster up` (0 = off); ConfigError if they clash or are invalid.

    A node's `metrics_port` in cluster.toml wins; else `base + k` for the k-th node by id when `base` is
    given, else the node's port + METRICS_PORT_OFFSET.
    """
    if not enabled:
        return {n.id: 0 for n in cfg.nodes}
    out = {}
    for k, n in enumerate(sorted(cfg.nodes, key=lambda n: n.id)):
        out[n.id] = n.metrics_port or (base + k if base is not None else n.port + METRICS_PORT_OFFSET)
    bad = [p for p in out.values() if not 0 < p <= 65535]
    if bad:
        raise ConfigError(f"metrics ports out of range: {bad} (use --metrics-port-base or --no-metrics)")
    taken = {(n.host, n.port) for n in cfg.nodes}
    mine = [(cfg.node(i).host, p) for i, p in out.items()]
    if len(set(mine)) != len(mine) or taken & set(mine):
        raise ConfigError(f"metrics ports {sorted(out.values())} clash with each other or with the node ports "
                          f"{sorted(n.port for n in cfg.nodes)} (use --metrics-port-base)")
    return out


def _child_env(extra: dict[str, str] | None = None) -> dict[str, str]:
    env = dict(os.environ)
    # The children import gateway.cli with -m: make sure the source tree is importable even when the
    # project is not installed (it is, editable, in .venv; this is for running from a bare checkout).
    root = str(Path(__file__).resolve().parents[1])
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    env.setdefault("PYTHONUNBUFFERED", "1")
    env.update(extra or {})
    return env


def cli_prefix() -> str:
    """How to invoke the `railraft` CLI here: the console script if found, else this interpreter -m."""
    script = shutil.which("railraft") or (str(Path(sys.executable).parent / "railraft")
                                          if (Path(sys.executable).parent / "railraft").exists() else None)
    return script or f"{sys.executable} -m gateway.cli"


def status_hint(config: Path) -> str:
    """How to check the cluster, as a command line the operator can paste."""
    return f"{cli_prefix()} status --config {config}"


# ===================================================================================== supervisor


@dataclass
class Child:
    """One supervised process: a node, or the web app (`addr` None)."""

    addr: NodeAddress | None
    argv: list[str]
    log_path: Path
    label: str = ""
    proc: subprocess.Popen | None = None
    started_at: float = 0.0
    restarts: int = 0
    delay: float = BACKOFF_INITIAL_S
    exits: list[int] = field(default_factory=list)

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def started_text(self) -> str:
        """What the supervisor prints when it starts this process."""
        where = f"{self.addr.address}  " if self.addr is not None else ""
        return f"{self.label}: {where}pid {self.pid}  log {self.log_path}"


def web_command(addrs: list[str], host: str, port: int, secret_file: Path) -> list[str]:
    """argv of the web app (`python -m web`) serving the cluster at `addrs` on http://host:port/."""
    return [sys.executable, "-m", "web", "--nodes", ",".join(addrs), "--host", host, "--port", str(port),
            "--secret-file", str(secret_file)]


class ClusterSupervisor:
    """Starts, restarts and stops the node processes of one configuration (see the module docstring)."""

    def __init__(self, cfg: ClusterConfig, config_path: Path, *, log_format: str = "text",
                 say: Callable[[str], None] | None = None, env: dict[str, str] | None = None,
                 stop_grace_s: float = STOP_GRACE_S,
                 on_leader: Callable[[], Awaitable[None]] | None = None,
                 metrics_ports: dict[int, int] | None = None, web_port: int | None = None) -> None:
        self.cfg = cfg
        # Run once, as a Trio task beside the nodes, when a leader first appears (`cluster up --demo` loads
        # the demo data there).  Its failure is reported, never fatal: the cluster keeps running.
        self.on_leader = on_leader
        self.config_path = config_path
        self.say = say or _say
        self.stop_grace_s = stop_grace_s
        self.env = _child_env({**(env or {}), "RAILRAFT_PARENT_PID": str(os.getpid())})
        mports = metrics_ports or {}
        self.children: dict[int | str, Child] = {
            n.id: Child(n, node_command(n.id, config_path, log_format=log_format, metrics_port=mports.get(n.id)),
                        cfg.data_dir / f"node{n.id}.log", label=f"node {n.id}")
            for n in cfg.nodes
        }
        if web_port:
            # The web app is supervised like a node: restarted if it dies, stopped with the cluster.
            host = cfg.nodes[0].host
            self.children["web"] = Child(None, web_command([n.address for n in cfg.nodes], host, web_port,
                                                           cfg.data_dir / "web_secret"),
                                         cfg.data_dir / "web.log", label="web app")
        self.stopping = False
        self.leader: int | None = None

    # ----- processes
    def _spawn(self, child: Child) -> None:
        child.log_path.parent.mkdir(parents=True, exist_ok=True)
        with open(child.log_path, "ab") as logf:
            logf.write(f"=== railraft cluster: starting {child.label} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
            logf.flush()
            # Popen from the main thread (PR_SET_PDEATHSIG in the child is tied to the thread that forked it).
            child.proc = subprocess.Popen(
                child.argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                env=self.env, start_new_session=True, close_fds=True,
            )
        child.started_at = time.monotonic()

    async def _run_child(self, child: Child) -> None:
        """Keep one node running until the supervisor stops."""
        while not self.stopping:
            self._spawn(child)
            if child.restarts:
                self.say(f"{child.label} restarted: pid {child.pid} (restart #{child.restarts})")
            else:
                self.say(child.started_text())
            while child.proc.poll() is None:
                await trio.sleep(POLL_S)
            if self.stopping:
                return
            code = child.proc.returncode
            child.exits.append(code)
            ran = time.monotonic() - child.started_at
            if ran >= HEALTHY_AFTER_S:
                child.delay = BACKOFF_INITIAL_S
            how = f"killed by {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() else f"exit code {code}"
            self.say(f"{child.label} (pid {child.pid}) died ({how}) after {ran:.1f}s; "
                     f"restarting in {child.delay:.1f}s (see {child.log_path})")
            with trio.move_on_after(child.delay):
                while not self.stopping:
                    await trio.sleep(POLL_S)
            child.delay = min(child.delay * 2, BACKOFF_MAX_S)
            child.restarts += 1

    async def _watch_leader(self) -> None:
        addrs = [n.address for n in self.cfg.nodes]
        told_status = False
        while not self.stopping:
            try:
                st = await trio_asyncio.aio_as_trio(admin_client.discover_status)(addrs, 1.0)
            except Exception as e:  # noqa: BLE001 - a status hiccup must never take the supervisor down
                self.say(f"status poll failed: {e!r}")
                st = {"leader": None, "nodes": []}
            leader = st["leader"]
            if leader is not None and leader != self.leader:
                node = next(n for n in st["nodes"] if n.get("id") == leader and n.get("up"))
                self.say(f"leader: node {leader} ({node['address']}), term {node['term']}")
                if not told_status:
                    told_status = True
                    self.say(f"check status: {status_hint(self.config_path)}")
            self.leader = leader if leader is not None else self.leader
            await trio.sleep(LEADER_POLL_S)

    async def _after_leader(self) -> None:
        while self.leader is None and not self.stopping:
            await trio.sleep(POLL_S)
        if self.stopping or self.on_leader is None:
            return
        try:
            await self.on_leader()
        except Exception as e:  # noqa: BLE001 - a failed hook must not take the nodes down
            self.say(f"after-leader task failed: {e}")

    def _signal_all(self, sig: int) -> None:
        for c in self.children.values():
            if c.alive():
                try:
                    os.kill(c.proc.pid, sig)
                except ProcessLookupError:
                    pass

    async def _stop_all(self) -> None:
        """SIGTERM every node, wait up to the grace period, SIGKILL whoever is left, reap everyone."""
        self._signal_all(signal.SIGTERM)
        with trio.move_on_after(self.stop_grace_s):
            while any(c.alive() for c in self.children.values()):
                await trio.sleep(POLL_S)
        stragglers = [c for c in self.children.values() if c.alive()]
        for c in stragglers:
            self.say(f"{c.label} (pid {c.pid}) did not stop within {self.stop_grace_s:g}s: SIGKILL")
        self._signal_all(signal.SIGKILL)
        for c in self.children.values():
            if c.proc is not None:
                code = await trio.to_thread.run_sync(c.proc.wait)
                self.say(f"{c.label} stopped (exit code {code})")

    async def run(self) -> int:
        """Run until SIGINT/SIGTERM; returns the exit code (0)."""
        with trio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as signals:
            try:
                async with trio.open_nursery() as nursery:
                    for child in self.children.values():
                        nursery.start_soon(self._run_child, child)
                    nursery.start_soon(self._watch_leader)
                    if self.on_leader is not None:
                        nursery.start_soon(self._after_leader)
                    async for sig in signals:
                        self.say(f"{signal.Signals(sig).name} received: stopping the cluster")
                        self.stopping = True
                        nursery.cancel_scope.cancel()
                        break
            finally:
                self.stopping = True
                with trio.CancelScope(shield=True):
                    await self._stop_all()
        self.say("cluster stopped")
        return 0


def _say(text: str) -> None:
    print(f"[railraft {time.strftime('%H:%M:%S')}] {text}", flush=True)


# ===================================================================================== entry points


def prepare_config(data_dir: Path, nodes: int | None, port: int | None,
                   snapshot_entries: int | None = None) -> tuple[ClusterConfig, Path, bool]:
    """Load DATA_DIR/cluster.toml, or write a fresh one; returns (config, path, created).

    Reusing an existing data directory with a different shape would mix clusters, so asking for another
    node count or port than the file has is a ConfigError.

    Either way the cluster gets a secret: a fresh configuration names DATA_DIR/cluster.secret (generated, mode
    0600); an existing one without `secret_file` gets that line added at its top (and the file generated);
    an existing one whose secret file is missing gets it generated.
    """
    path = data_dir / "cluster.toml"
    if path.exists():
        cfg = load_config(path)
        want_nodes = nodes if nodes is not None else len(cfg.nodes)
        want_port = port if port is not None else min(n.port for n in cfg.nodes)
        if want_nodes != len(cfg.nodes) or want_port != min(n.port for n in cfg.nodes):
            raise ConfigError(
                f"{path} already describes {len(cfg.nodes)} node(s) from port {min(n.port for n in cfg.nodes)}; "
                "use another --data-dir for a different cluster (or delete that one)"
            )
        if snapshot_entries is not None and snapshot_entries != cfg.snapshot_entries:
            raise ConfigError(f"{path} has snapshot_entries = {cfg.snapshot_entries}; edit the file to change it")
        return _with_secret(cfg, path), path, False
    data_dir.mkdir(parents=True, exist_ok=True)
    cfg = default_config(nodes if nodes is not None else 3, port if port is not None else 50051, data_dir=".")
    if snapshot_entries is not None:
        cfg = replace(cfg, snapshot_entries=snapshot_entries)
    ensure_secret_file(data_dir / SECRET_FILE_NAME)  # before the configuration that names it
    path.write_text(replace(cfg, secret_file=Path(SECRET_FILE_NAME)).to_toml())
    return load_config(path), path, True


def _with_secret(cfg: ClusterConfig, path: Path) -> ClusterConfig:
    """`cfg` (loaded from `path`) with a cluster secret: see prepare_config."""
    if cfg.secret_file is not None:
        ensure_secret_file(cfg.secret_file)
        return cfg
    ensure_secret_file(path.parent / SECRET_FILE_NAME)
    # A top-level key must come before the first table: the top of the file is always right.
    path.write_text(f'secret_file = "{SECRET_FILE_NAME}"  # added by railraft cluster up: the cluster secret\n'
                    + path.read_text())
    return load_config(path)


def cluster_up(nodes: int | None = None, port: int | None = None, data_dir: str | Path = "data",
               log_format: str = "text", snapshot_entries: int | None = None, *, demo: bool = False,
               web_url: str | None = None, metrics: bool = True, metrics_port_base: int | None = None,
               web_port: int = 0) -> int:
    """`railraft cluster up`: returns the process exit code.

    With `demo`, the nodes get RAILRAFT_ADMIN_PASSWORD from DATA/credentials.txt (created on the first run:
    the operator's RAILRAFT_ADMIN_PASSWORD if set, else a random password) so that they bootstrap the
    administrator, and once a leader is elected the demo catalogue and customer are loaded through the API
    (gateway.demo_loader; idempotent) and the credentials printed.  Without it the nodes inherit the
    environment as it is: RAILRAFT_ADMIN_PASSWORD, if the operator set it; no built-in password.

    `metrics` (on by default) has every node serve Prometheus metrics; see `metrics_ports` for the ports.
    `web_port` (0: none) starts the web app (`python -m web`) beside the nodes, supervised like them, on
    http://HOST:web_port/ with its session key in DATA/web_secret and its log in DATA/web.log.
    """
    data = Path(data_dir).resolve()
    try:
        cfg, path, created = prepare_config(data, nodes, port, snapshot_entries)
        mports = metrics_ports(cfg, enabled=metrics, base=metrics_port_base)
    except ConfigError as e:
        print(f"railraft cluster up: {e}", file=sys.stderr)
        return 2
    _say(f"{'wrote' if created else 'using'} {path}; data dir {data}")
    _say(f"peer traffic and cluster administration are authenticated with the secret in {cfg.secret_file} "
         "(keep it private; `railraft cluster ... --config` reads it)")
    _say(f"{len(cfg.nodes)} node(s): " + ", ".join(f"{n.id}@{n.address}" for n in cfg.nodes)
         + ". Ctrl-C or SIGTERM stops them all.")
    for n in cfg.nodes:
        if mports.get(n.id):
            _say(f"metrics: node {n.id} at http://{n.host}:{mports[n.id]}/metrics")
    if not any(mports.values()):
        _say("metrics: off")
    if web_port:
        if not 0 < web_port <= 65535 or web_port in {n.port for n in cfg.nodes} | set(mports.values()):
            print(f"railraft cluster up: --web-port {web_port} is out of range or used by a node", file=sys.stderr)
            return 2
        web_url = web_url or f"http://{cfg.nodes[0].host}:{web_port}/"
        _say(f"web app: {web_url}  (operator dashboard: {web_url}dashboard)")
    env: dict[str, str] = {}
    on_leader = None
    if demo:
        from . import demo_loader

        try:
            creds, new = demo_loader.load_or_create_credentials(
                data, admin_password=os.environ.get(demo_loader.ADMIN_PASSWORD_ENV) or None)
        except (demo_loader.DemoError, OSError) as e:
            print(f"railraft cluster up: demo credentials: {e}", file=sys.stderr)
            return 2
        env_pw = os.environ.get(demo_loader.ADMIN_PASSWORD_ENV)
        if env_pw and env_pw != creds.admin_password:
            _say(f"note: {demo_loader.ADMIN_PASSWORD_ENV} differs from {data / demo_loader.CREDENTIALS_FILE}; "
                 "using the file's (the cluster's administrator was created with it)")
        _say(f"demo mode: credentials {'generated in' if new else 'from'} {data / demo_loader.CREDENTIALS_FILE}")
        env[demo_loader.ADMIN_PASSWORD_ENV] = creds.admin_password
        env["RAILRAFT_ADMIN_USER"] = creds.admin_user  # the name housekeeping gives the first admin
        addrs = [n.address for n in cfg.nodes]

        async def load() -> None:
            _say("leader elected: loading the demo data (skipped if already there)")
            try:
                report = await trio_asyncio.aio_as_trio(demo_loader.load_demo)(addrs, creds, say=_say)
            except Exception as e:  # noqa: BLE001 - report any failure and keep the cluster running
                _say(f"demo data NOT loaded: {e}")
                print(demo_loader.format_banner(creds, addrs, web_url=web_url, data_dir=data, cli=cli_prefix()),
                      flush=True)
                return
            print(demo_loader.format_banner(creds, addrs, report=report, web_url=web_url, data_dir=data,
                                            cli=cli_prefix()), flush=True)

        on_leader = load
    sup = ClusterSupervisor(cfg, path, log_format=log_format, env=env, on_leader=on_leader, metrics_ports=mports,
                            web_port=web_port or None)

    async def main() -> int:
        async with trio_asyncio.open_loop():
            return await sup.run()

    return trio.run(main)


def start_detached_node(node_id: int, host: str, port: int, *, config: str | Path | None = None,
                        data_dir: str | Path | None = None, log_format: str = "text",
                        env: dict[str, str] | None = None) -> tuple[int, Path]:
    """Start `railraft node --join` for a node that is about to be added; returns (pid, log path).

    The cluster's configuration (for its peers and timings) is `config`, else DATA_DIR/cluster.toml; the node
    keeps its data in DATA_DIR/nodeN and logs to DATA_DIR/nodeN.log, DATA_DIR being `data_dir` or the
    configuration's data dir.  The process is detached (own session): it outlives this command.
    """
    if config is None:
        if data_dir is None:
            raise ConfigError("--start needs --config or --data-dir (the cluster's data dir with cluster.toml)")
        config = Path(data_dir) / "cluster.toml"
    config = Path(config).resolve()
    cfg = load_config(config)
    data = Path(data_dir).resolve() if data_dir is not None else cfg.data_dir.resolve()
    node_dir = data / f"node{node_id}"
    log_path = data / f"node{node_id}.log"
    data.mkdir(parents=True, exist_ok=True)
    argv = node_command(node_id, config, join=True, host=host, port=port, data_dir=node_dir, log_format=log_format)
    with open(log_path, "ab") as logf:
        logf.write(f"=== railraft cluster add-node: starting node {node_id} at {time.strftime('%Y-%m-%d %H:%M:%S')}\n".encode())
        logf.flush()
        proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT,
                                env=_child_env(env), start_new_session=True, close_fds=True)
    _wait_listening(host, port, proc, timeout=10.0)
    return proc.pid, log_path


def _wait_listening(host: str, port: int, proc: subprocess.Popen, timeout: float) -> None:
    """Wait until the new node accepts connections (or has died, which is an error)."""
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise ConfigError(f"the new node exited at once with code {proc.returncode}; see its log")
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise ConfigError(f"the new node did not listen on {host}:{port} within {timeout:g}s; see its log")


__all__ = ["ClusterSupervisor", "cluster_up", "prepare_config", "start_detached_node", "node_command", "Child",
           "metrics_ports"]
