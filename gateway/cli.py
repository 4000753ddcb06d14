"""The `railraft` command line.

    railraft --version
    railraft sim --seeds N --start S [--jobs J]          run the deterministic cluster simulation
    railraft node --id N [--config cluster.toml]         run one node (--join: join a running cluster)
    railraft cluster up [--nodes 3] [--port 50051] [--data-dir data] [--demo]
                                                         write data/cluster.toml, run and supervise the nodes
                                                         (--demo: load the demo data, print credentials)
    railraft cluster add-node --id N --host H --port P [--start]
    railraft cluster remove-node --id N
    railraft cluster transfer-leader [--to N]
    railraft status [--nodes host:port,...] [--json]     role, term, indexes, log size of every node
    railraft register USER PASS | login USER PASS | logout TOKEN   [--nodes ...] [--json]
    railraft demo load [--nodes ...] [--data-dir data]   load the demo catalogue and customer (idempotent)
    railraft dump --db PATH                              canonical dump of a node's database (read-only)

Commands that talk to a cluster take `--nodes host:port,...` or `--config cluster.toml`; without either they
use the default 3 nodes on 127.0.0.1:50051-50053.  Admin and account calls may go to any node: it forwards
them to the leader.  Exit codes: 0 ok, 1 the cluster refused or could not serve the call, 2 bad usage.
"""

from __future__ import annotations

import argparse
import importlib
import json
import logging
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

DIST_NAME = "railraft"

# Test hook (never set in production): "ACTOR:SECONDS[:TIMES][,...]" makes `railraft node` arm
# actors.supervisor.ActorCrashInjector for ACTOR (e.g. replicator-2) SECONDS after start: the actor raises
# at its next checkpoint, TIMES times.
CRASH_ENV = "RAILRAFT_CRASH_ACTOR"
# Set by `railraft cluster up` for its children: the supervisor's pid.  The node asks the kernel for SIGTERM
# when that process dies, so a killed supervisor never leaves orphan nodes behind.
PARENT_ENV = "RAILRAFT_PARENT_PID"


def version() -> str:
    """The installed distribution's version, or a marker when running from an uninstalled tree."""
    from importlib.metadata import PackageNotFoundError
    from importlib.metadata import version as dist_version

    try:
        return dist_version(DIST_NAME)
    except PackageNotFoundError:
        return "0+unknown"


# ============================================================================================ sim


def _load_simulation():  # noqa: ANN202 - returns a module
    """Import tests.simulation.run lazily.

    The simulation lives in the source tree's tests/ package, which is not installed: when the console
    script runs from outside the checkout, look for it next to this package.
    """
    name = "tests.simulation.run"
    try:
        return importlib.import_module(name)
    except ModuleNotFoundError as exc:
        if exc.name not in ("tests", "tests.simulation", name):
            raise  # the module exists but something it imports is missing: show that
    root = Path(__file__).resolve().parents[1]
    if (root / "tests" / "simulation").is_dir() and str(root) not in sys.path:
        sys.path.insert(0, str(root))
        return importlib.import_module(name)
    return None


def _cmd_sim(args: argparse.Namespace) -> int:
    sim = _load_simulation()
    if sim is None:
        print(
            "railraft sim: the simulation (tests/simulation/run.py) is not available; "
            "run it from a source checkout",
            file=sys.stderr,
        )
        return 2
    argv = ["--seeds", str(args.seeds), "--start", str(args.start)]
    if args.jobs is not None:
        argv += ["--jobs", str(args.jobs)]
    rc = sim.main(argv)
    return int(rc or 0)


# ============================================================================================ node


class _NodeContext(logging.Filter):
    """Adds `node` and `term` to every log record of a node process.

    The term is read live from the node's Raft core when the record is made, so every line says the term it
    was written in; None (JSON null, "-" in text) until the node has recovered its log.
    """

    def __init__(self, node_id: int) -> None:
        super().__init__()
        self.node_id = node_id
        self.node: Any = None

    def filter(self, record: logging.LogRecord) -> bool:
        record.node = self.node_id
        core = getattr(self.node, "core", None)
        term = getattr(core, "term", None)
        record.term = term
        record.term_text = "-" if term is None else str(term)
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ts, level, node, term (null until known), logger, message [, exc]."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname,
            "node": getattr(record, "node", None),
            "term": getattr(record, "term", None),
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, separators=(",", ":"))


TEXT_FORMATTER = logging.Formatter("%(asctime)s node%(node)s term %(term_text)s %(levelname)s %(name)s: %(message)s")


def setup_node_logging(node_id: int, fmt: str, level: str = "INFO") -> _NodeContext:
    """Log to stderr as text or JSON lines; returns the filter to attach the running node to."""
    ctx = _NodeContext(node_id)
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ctx)
    if fmt == "json":
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(TEXT_FORMATTER)
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(getattr(logging, level.upper(), logging.INFO))
    return ctx


def parse_crash_spec(spec: str) -> list[tuple[str, float, int]]:
    """'ACTOR:SECONDS[:TIMES][,ACTOR:SECONDS[:TIMES]...]' -> [(actor, seconds, times), ...]."""
    out = []
    for item in spec.split(","):
        parts = item.strip().split(":")
        try:
            if len(parts) not in (2, 3) or not parts[0]:
                raise ValueError
            out.append((parts[0], float(parts[1]), int(parts[2]) if len(parts) == 3 else 1))
        except ValueError:
            raise ValueError(f"{CRASH_ENV} must be ACTOR:SECONDS[:TIMES][,...], got {spec!r}") from None
    return out


def _die_with_parent() -> None:
    """If started by `cluster up`, get SIGTERM when the supervisor dies (Linux), or exit if it already has."""
    parent = os.environ.get(PARENT_ENV)
    if not parent or not sys.platform.startswith("linux"):
        return
    try:
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, int(signal.SIGTERM), 0, 0, 0)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        return
    if os.getppid() != int(parent):
        sys.exit(0)  # the supervisor is already gone


def run_node_process(settings: Any, ctx: _NodeContext | None = None,
                     crash: list[tuple[str, float, int]] | None = None, metrics_port: int | None = None) -> int:
    """gateway.runner.run_node, plus what a process needs around it: the node in log records, the crash hook.

    `metrics_port` (None: off) is where the node serves Prometheus metrics.  Returns the exit code (0 clean
    stop, 3 an actor escalated, 1 crash) exactly as run_node does.
    """
    import trio
    import trio_asyncio

    from actors.supervisor import ActorCrashInjector

    from .runner import run_node, run_to_exit_code, serve_node

    if metrics_port is not None:
        from prometheus_client import disable_created_metrics

        disable_created_metrics()  # process-wide: no `*_created` twin of every counter (noise for Prometheus)
    if ctx is None and crash is None:
        return run_node(settings, metrics_port=metrics_port)
    log = logging.getLogger("railraft.node")
    injector = ActorCrashInjector()

    async def arm(actor: str, delay: float, times: int) -> None:
        await trio.sleep(delay)
        log.warning("test hook %s: crashing actor %s %d time(s)", CRASH_ENV, actor, times)
        injector.arm(actor, times)

    async def main() -> None:
        async with trio_asyncio.open_loop():
            async with trio.open_nursery() as nursery:

                def attach(node: Any) -> None:
                    if ctx is not None:
                        ctx.node = node  # from now on every log record carries the node's live term

                async def serve(task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
                    await serve_node(settings, task_status=task_status, crash_injector=injector,
                                     metrics_port=metrics_port, on_node=attach, settle_heap=True)
                    nursery.cancel_scope.cancel()  # stopped by a signal: end the hook task too

                await nursery.start(serve)
                for actor, delay, times in crash or ():
                    nursery.start_soon(arm, actor, delay, times)

    return run_to_exit_code(main, settings.id)


def _cmd_node(args: argparse.Namespace) -> int:
    from actors.config import ConfigError, default_config, load_config

    from .runner import settings_for

    ctx = setup_node_logging(args.id, args.log_format, args.log_level)
    if args.metrics_port is not None and not 0 <= args.metrics_port <= 65535:
        print(f"railraft node: --metrics-port must be 0..65535, got {args.metrics_port}", file=sys.stderr)
        return 2
    try:
        cfg = load_config(args.config) if args.config else default_config()
        settings = settings_for(
            cfg, args.id, join=args.join, host=args.host, port=args.port,
            data_dir=Path(args.data_dir) if args.data_dir else None,
        )
        # --metrics-port wins (0 = off); else the node's `metrics_port` in cluster.toml, if it is listed there.
        metrics_port = args.metrics_port
        if metrics_port is None:
            metrics_port = next((n.metrics_port for n in cfg.nodes if n.id == args.id), 0)
    except ConfigError as e:
        hint = " (a node that is not in the configuration needs --join --host H --port P)" if not args.join else ""
        print(f"railraft node: {e}{hint}", file=sys.stderr)
        return 2
    crash = None
    if os.environ.get(CRASH_ENV):
        try:
            crash = parse_crash_spec(os.environ[CRASH_ENV])
        except ValueError as e:
            print(f"railraft node: {e}", file=sys.stderr)
            return 2
    _die_with_parent()
    return run_node_process(settings, ctx, crash, metrics_port=metrics_port or None)


# ================================================================================ cluster clients


def _addresses(args: argparse.Namespace) -> list[str]:
    """--nodes, else the nodes of --config, else the default 3 local nodes."""
    from actors.config import default_config, load_config

    from .admin_client import parse_addresses

    if getattr(args, "nodes", None):
        return parse_addresses(args.nodes)
    cfg = load_config(args.config) if getattr(args, "config", None) else default_config()
    return [n.address for n in cfg.nodes]


def _run_client(coro: Any) -> Any:
    from .client import run

    return run(coro)


def _print_json(obj: Any) -> None:
    print(json.dumps(obj, sort_keys=True))


def _client_errors(fn: Any) -> Any:
    """Turn config, usage and cluster errors of a client command into a message and exit code."""

    def wrapper(args: argparse.Namespace) -> int:
        from grpclib import GRPCError

        from actors.config import ConfigError

        from .client import BookingError, Unavailable

        try:
            return fn(args)
        except (ConfigError, ValueError) as e:
            print(f"railraft {args.command}: {e}", file=sys.stderr)
            return 2
        except Unavailable as e:
            msg = f"the cluster could not serve the call: {e}"
        except (GRPCError, BookingError) as e:
            msg = f"{e.status.name}: {e.message}"
        if getattr(args, "json", False):
            _print_json({"ok": False, "error": msg})
        else:
            print(f"railraft {args.command}: {msg}", file=sys.stderr)
        return 1

    return wrapper


@_client_errors
def _cmd_status(args: argparse.Namespace) -> int:
    from .admin_client import discover_status, format_status_table

    addrs = _addresses(args)
    st = _run_client(discover_status(addrs))
    if args.json:
        _print_json(st)
    else:
        print(format_status_table(st))
    return 0 if any(n.get("up") for n in st["nodes"]) else 1


def _admin_result(args: argparse.Namespace, res: dict[str, Any]) -> int:
    if args.json:
        _print_json(res)
    else:
        print(res["message"] + (f" (leader: node {res['leader_id']})" if res.get("leader_id") else ""))
    return 0 if res["ok"] else 1


def _cluster_secret(args: argparse.Namespace) -> bytes | None:
    """The cluster secret for the admin commands: the file --config (else --data-dir's cluster.toml) names
    with `secret_file`, else RAILRAFT_CLUSTER_SECRET, else None."""
    from actors.config import cluster_secret, load_config

    config = getattr(args, "config", None)
    if not config and getattr(args, "data_dir", None) and (Path(args.data_dir) / "cluster.toml").exists():
        config = Path(args.data_dir) / "cluster.toml"
    return cluster_secret(load_config(config) if config else None)


@_client_errors
def _cmd_add_node(args: argparse.Namespace) -> int:
    from . import admin_client as ac
    from .cluster import start_detached_node

    addrs = _addresses(args)
    if args.start:
        pid, log_path = start_detached_node(
            args.id, args.host, args.port, config=args.config, data_dir=args.data_dir, log_format=args.log_format,
        )
        if not args.json:
            print(f"started node {args.id} on {args.host}:{args.port}, pid {pid}, log {log_path}")
    try:
        res = _run_client(ac.add_node(addrs, args.id, args.host, args.port, secret=_cluster_secret(args)))
    except BaseException:
        if args.start:
            _stop_started_node(pid)
        raise
    if args.start:
        res["pid"] = pid
        if not res.get("ok"):
            _stop_started_node(pid)  # the cluster refused it: do not leave the node we launched running
    return _admin_result(args, res)


def _stop_started_node(pid: int) -> None:
    """SIGTERM the node `add-node --start` launched (it was refused or the call failed), and say so."""
    import os
    import signal

    try:
        os.kill(pid, signal.SIGTERM)
        print(f"stopped the node we started (pid {pid}): it was not added", file=sys.stderr)
    except ProcessLookupError:
        pass


@_client_errors
def _cmd_remove_node(args: argparse.Namespace) -> int:
    from . import admin_client as ac

    return _admin_result(args, _run_client(ac.remove_node(_addresses(args), args.id, secret=_cluster_secret(args))))


@_client_errors
def _cmd_transfer_leader(args: argparse.Namespace) -> int:
    from . import admin_client as ac

    return _admin_result(args, _run_client(ac.transfer_leader(_addresses(args), args.to or 0,
                                                              secret=_cluster_secret(args))))


@_client_errors
def _cmd_register(args: argparse.Namespace) -> int:
    from . import admin_client as ac

    res = _run_client(ac.register(_addresses(args), args.username, args.password))
    _print_json(res) if args.json else print(res["message"])
    return 0 if res["success"] else 1


@_client_errors
def _cmd_admin_create(args: argparse.Namespace) -> int:
    import getpass
    import os

    from . import admin_client as ac

    password = os.environ.get("RAILRAFT_ADMIN_PASSWORD") or ""
    if not password:
        if not sys.stdin.isatty():
            print("railraft admin create: set RAILRAFT_ADMIN_PASSWORD or run it in a terminal", file=sys.stderr)
            return 2
        password = getpass.getpass(f"password for {args.username}: ")
    res = _run_client(ac.create_admin(_addresses(args), args.username, password))
    _print_json(res) if args.json else print(res["message"])
    return 0 if res["ok"] else 1


def dump_database(path: str | Path) -> str:
    """store.queries.canonical_dump of a database file, opened read-only (the node should be stopped)."""
    import sqlite3

    from store import queries

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no database at {path}")
    conn = sqlite3.connect(f"{path.resolve().as_uri()}?mode=ro", uri=True)
    try:
        return queries.canonical_dump(conn)
    finally:
        conn.close()


def _cmd_dump(args: argparse.Namespace) -> int:
    try:
        sys.stdout.write(dump_database(args.db))
    except Exception as e:  # noqa: BLE001 - report any sqlite/file problem as a message
        print(f"railraft dump: {e}", file=sys.stderr)
        return 1
    return 0


def _cmd_cluster_up(args: argparse.Namespace) -> int:
    from .cluster import cluster_up

    return cluster_up(
        nodes=args.nodes, port=args.port, data_dir=args.data_dir, log_format=args.log_format,
        snapshot_entries=args.snapshot_entries, demo=args.demo, web_url=args.web_url, web_port=args.web_port,
        metrics=not args.no_metrics, metrics_port_base=args.metrics_port_base,
    )


def _demo_data_dir(args: argparse.Namespace) -> Path:
    """--data-dir, else the directory of --config, else ./data."""
    if args.data_dir:
        return Path(args.data_dir)
    if getattr(args, "config", None):
        return Path(args.config).resolve().parent
    return Path("data")


@_client_errors
def _cmd_demo_load(args: argparse.Namespace) -> int:
    from . import demo_loader as dl

    addrs = _addresses(args)
    data = _demo_data_dir(args)
    env_pw = os.environ.get(dl.ADMIN_PASSWORD_ENV)
    if not (data / dl.CREDENTIALS_FILE).exists() and not env_pw:
        print(f"railraft demo load: no {data / dl.CREDENTIALS_FILE} and no {dl.ADMIN_PASSWORD_ENV}: set it to the "
              "administrator password the cluster was started with (or use `railraft cluster up --demo`)",
              file=sys.stderr)
        return 2
    say = (lambda _t: None) if args.json else (lambda t: print(t, flush=True))
    try:
        creds, _ = dl.load_or_create_credentials(data, admin_password=env_pw)
        report = _run_client(dl.load_demo(addrs, creds, days=args.days, say=say,
                                          bootstrap_wait=args.wait))
    except dl.DemoError as e:
        msg = str(e)
        if args.json:
            _print_json({"ok": False, "error": msg})
        else:
            print(f"railraft demo load: {msg}", file=sys.stderr)
        return 1
    if args.json:
        _print_json({"ok": True, "changed": report.changed, "stations_added": report.stations_added,
                     "trains_added": report.trains_added, "runs_added": report.runs_added,
                     "customer_created": report.customer_created, "first_date": report.first_date,
                     "last_date": report.last_date, "notes": report.notes,
                     "admin_user": creds.admin_user, "customer_user": creds.customer_user,
                     "credentials_file": str(data / dl.CREDENTIALS_FILE)})
    else:
        print(dl.format_banner(creds, addrs, report=report, web_url=args.web_url, data_dir=data))
    return 0


# ========================================================================================= parser


def _add_target(p: argparse.ArgumentParser) -> None:
    p.add_argument("--nodes", metavar="HOST:PORT,...", help="node addresses (default: from --config, else 127.0.0.1:50051-50053)")
    p.add_argument("--config", metavar="PATH", help="cluster.toml to take node addresses from")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="railraft",
        description="railraft: a distributed train-ticket booking system on Raft.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {version()}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    sim = sub.add_parser("sim", help="run the deterministic cluster simulation over a range of seeds")
    sim.add_argument("--seeds", type=int, default=100, metavar="N", help="how many seeds to run (default 100)")
    sim.add_argument("--start", type=int, default=0, metavar="S", help="first seed (default 0)")
    sim.add_argument("--jobs", type=int, default=None, metavar="J", help="worker processes (simulation's default)")
    sim.set_defaults(func=_cmd_sim)

    node = sub.add_parser("node", help="run one node in the foreground (SIGINT/SIGTERM stop it cleanly)")
    node.add_argument("--id", type=int, required=True, metavar="N", help="this node's id")
    node.add_argument("--config", metavar="PATH", help="cluster.toml (default: 3 nodes on 127.0.0.1:50051-50053, data in ./data)")
    node.add_argument("--join", action="store_true", help="join a running cluster (ask it with `railraft cluster add-node`)")
    node.add_argument("--host", help="listen host (when the node is not in the configuration)")
    node.add_argument("--port", type=int, help="listen port (when the node is not in the configuration)")
    node.add_argument("--data-dir", metavar="DIR", help="this node's data directory (default: DATA_DIR/nodeN)")
    node.add_argument("--log-format", choices=("text", "json"), default="text", help="json: one object per line")
    node.add_argument("--log-level", default="INFO", help="DEBUG, INFO (default), WARNING, ...")
    node.add_argument("--metrics-port", type=int, default=None, metavar="P",
                      help="serve Prometheus metrics at http://HOST:P/metrics (0: off; default: the node's "
                           "metrics_port in cluster.toml, else off)")
    node.set_defaults(func=_cmd_node)

    status = sub.add_parser("status", help="show every node's role, term, indexes and log size")
    _add_target(status)
    status.set_defaults(func=_cmd_status)

    cluster = sub.add_parser("cluster", help="run a local cluster, change membership, move leadership")
    csub = cluster.add_subparsers(dest="cluster_command", metavar="ACTION")
    up = csub.add_parser("up", help="write DATA_DIR/cluster.toml and run the nodes under a supervisor")
    up.add_argument("--nodes", type=int, default=None, metavar="N", help="number of nodes (default 3)")
    up.add_argument("--port", type=int, default=None, metavar="P", help="first port (default 50051)")
    up.add_argument("--data-dir", default="data", metavar="DIR", help="where cluster.toml, node data and logs go (default data)")
    up.add_argument("--snapshot-entries", type=int, default=None, metavar="N", help="snapshot every N applied entries")
    up.add_argument("--log-format", choices=("text", "json"), default="text", help="node log format")
    up.add_argument("--metrics-port-base", type=int, default=None, metavar="P",
                    help="Prometheus metrics of the k-th node (by id, from 0) at http://HOST:P+k/metrics "
                         "(default: each node's port + 1000); a node's metrics_port in cluster.toml wins")
    up.add_argument("--no-metrics", action="store_true", help="do not serve Prometheus metrics")
    up.add_argument("--demo", action="store_true",
                    help="demo mode: generated admin password (DATA_DIR/credentials.txt), demo data loaded once a "
                         "leader is elected, credentials printed")
    up.add_argument("--web-port", type=int, default=0, metavar="P",
                    help="also run the web app (supervised) on http://HOST:P/ (default 0: no web app)")
    up.add_argument("--web-url", default=None, metavar="URL",
                    help="the web app's URL to print (default with --web-port: http://HOST:P/)")
    up.set_defaults(func=_cmd_cluster_up)

    add = csub.add_parser("add-node", help="add a node (learner, catch up, voter); --start launches it first")
    add.add_argument("--id", type=int, required=True, metavar="N")
    add.add_argument("--host", default="127.0.0.1")
    add.add_argument("--port", type=int, required=True)
    add.add_argument("--start", action="store_true", help="launch the node process (detached, with --join) first")
    add.add_argument("--data-dir", default=None, metavar="DIR",
                     help="with --start: the cluster's data dir (node data in DIR/nodeN, log in DIR/nodeN.log)")
    add.add_argument("--log-format", choices=("text", "json"), default="text", help="with --start: node log format")
    _add_target(add)
    add.set_defaults(func=_cmd_add_node)

    rm = csub.add_parser("remove-node", help="remove a node from the cluster")
    rm.add_argument("--id", type=int, required=True, metavar="N")
    _add_target(rm)
    rm.set_defaults(func=_cmd_remove_node)

    tl = csub.add_parser("transfer-leader", help="move leadership to another voter")
    tl.add_argument("--to", type=int, default=0, metavar="N", help="target node (default: the most up-to-date voter)")
    _add_target(tl)
    tl.set_defaults(func=_cmd_transfer_leader)

    reg = sub.add_parser("register", help="create a customer account")
    reg.add_argument("username")
    reg.add_argument("password")
    _add_target(reg)
    reg.set_defaults(func=_cmd_register)

    from .cli_booking import login_cmd, logout_cmd

    login = sub.add_parser("login", help="log in; prints the session token and saves the session for later commands")
    login.add_argument("username")
    login.add_argument("password")
    _add_target(login)
    login.set_defaults(func=login_cmd)

    logout = sub.add_parser("logout", help="end a session")
    logout.add_argument("token", nargs="?", default="", help="the session to end (default: the saved one)")
    _add_target(logout)
    logout.set_defaults(func=logout_cmd)

    admin = sub.add_parser("admin", help="administrator accounts")
    asub = admin.add_subparsers(dest="admin_command", metavar="ACTION")
    acreate = asub.add_parser(
        "create", help="create the first administrator (password from RAILRAFT_ADMIN_PASSWORD or a prompt)"
    )
    acreate.add_argument("--username", default="admin")
    _add_target(acreate)
    acreate.set_defaults(func=_cmd_admin_create)

    demo = sub.add_parser("demo", help="demo data")
    dsub = demo.add_subparsers(dest="demo_command", metavar="ACTION")
    dload = dsub.add_parser("load", help="load the demo catalogue and customer through the API (idempotent)")
    dload.add_argument("--data-dir", default=None, metavar="DIR",
                       help="where credentials.txt is (default: the --config file's directory, else data)")
    dload.add_argument("--days", type=int, default=30, metavar="N", help="runs for N days from today (default 30)")
    dload.add_argument("--wait", type=float, default=60.0, metavar="S",
                       help="how long to wait for the servers to create the administrator (default 60)")
    dload.add_argument("--web-url", default=None, metavar="URL", help="the web app's URL to print")
    _add_target(dload)
    dload.set_defaults(func=_cmd_demo_load)

    dump = sub.add_parser("dump", help="canonical dump of a node's database file (read-only; stop the node first)")
    dump.add_argument("--db", required=True, metavar="PATH")
    dump.set_defaults(func=_cmd_dump)

    from .cli_booking import add_booking_commands  # booking subcommands and `railraft cli` (the menu)

    add_booking_commands(sub)

    from .bench import add_bench_command  # `railraft bench` (gateway/bench.py)

    add_bench_command(sub)

    from .backup import add_backup_commands  # `railraft backup` and `railraft restore` (gateway/backup.py)

    add_backup_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the `railraft` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help(sys.stderr)
        return 2
    if args.command == "demo" and getattr(args, "demo_command", None) is None:
        print("railraft demo: say what to do: load (railraft demo --help)", file=sys.stderr)
        return 2
    if args.command == "cluster" and getattr(args, "cluster_command", None) is None:
        print("railraft cluster: say what to do: up, add-node, remove-node or transfer-leader "
              "(railraft cluster --help)", file=sys.stderr)
        return 2
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
