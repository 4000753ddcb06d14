"""`railraft bench`: the project's own benchmark -- booking throughput and latency, reads, cost per booking,
and a consistency check at the end.

    railraft bench                                   fresh local 3-node cluster, 64 clients, 20 s, reads after
    railraft bench --clients 1 --duration 10         single-client latency (or add --single to any run)
    railraft bench --pay --json                      every successful hold also pays; one JSON object on stdout
    railraft bench --nodes 127.0.0.1:50051,... --admin-password PW     an already running cluster
    railraft bench --preload 1000000                 with a million bookings already stored (see "Preload")
    railraft bench --profile                         py-spy flame graph of the leader (bench-flame.svg)
    railraft bench --catch-up                        also time a new, empty node catching up at the end
    railraft bench --writes leader                   every client sends its bookings to the leader

What one run does
-----------------
1. **Cluster.**  Without `--nodes`: writes DATA/cluster.toml for 3 nodes on free 127.0.0.1 ports (DATA is
   `--data-dir`, default a temporary directory removed afterwards), starts them as child processes
   (`railraft node`, output in DATA/nodeN.log) with a random RAILRAFT_ADMIN_PASSWORD, and waits for a leader.
   With `--nodes`, it uses that cluster (the administrator's password from `--admin-password` or
   RAILRAFT_ADMIN_PASSWORD) and leaves it running.
2. **Dataset** (store.demo.benchmark_commands, loaded through the client library as an administrator; only
   what is missing is added): 100 stations, `--trains` trains (default 50) of `--coaches` x `--seats`
   (20 x 72) with 10-stop routes, each run daily for `--days` days (30) from tomorrow -- ScheduleRuns
   schedules a train's whole date range in one command, so loading takes a few seconds.  Then a handful of
   customers are registered (their sessions are shared by the clients).
3. **Bookings**: `--clients` closed-loop clients (64) in `--workers` load-generator processes (1; spawned
   once per run, each with its own asyncio loop and one RailraftClient its clients share -- as a web app's
   users share its client --, so the calls they make together travel in one Batch; they send raw latencies
   back and report their own CPU time; one process carries 64 clients at well under a core), for
   `--duration` seconds (20) after a short warm-up.  Each does the real booking call: a one-passenger hold on
   a random run, class and segment.  It counts when the hold is committed, whether it got seats or a clear
   "sold out"; `--pay` pays every successful hold (`paid_bookings_per_s`, pay latency separately).
   `--writes` (auto): the bookings go to the leader; with `--no-batch` (every call its own round trip) and
   more than one client they go to every node in turn and the followers forward them to the leader, which
   then shares the cost of serving the calls.  `--writes leader` / `--writes spread` force either.
4. **Reads** (unless `--no-reads`): the same number of clients doing a mix of search (40 %), seat map (30 %)
   and PNR status (30 %) -- first linearizable for half of `--read-duration` (default `--duration`), then
   stale for the other half; with the nodes' CPU per read.
5. **Optional single-client phase** (`--single`): one client booking for a quarter of the duration (>= 3 s),
   reported as `single`: the latency of one booking without queueing.
6. **Costs**: per node CPU seconds during the booking phase (and over the whole run) from /proc/PID/stat,
   peak RSS (VmHWM from /proc/PID/status), Raft log bytes per committed booking (sum of the increases of
   each node's `log_bytes` from Node.Status, sampled every 0.5 s, so a compaction does not hide the
   writes).  For `--nodes` targets these come from the pid Node.Status reports when that process is on this
   machine, otherwise they are reported as unknown (null).  Also reported: the load generator's CPU per
   call, and how busy the whole machine was during the booking window and how much of that was other
   processes (on a shared machine the figures mean little when that is high).
7. **Consistency** (always; exit code 1 and a loud message when it fails): after the load stops, wait until
   every node has applied the leader's commit index, then
   * local cluster: open every node's SQLite file read-only and check that every acknowledged hold is there
     with the run, segment and seats the client was told (paid ones CONFIRMED), that no seat is held twice
     on overlapping segments (allocations, and the active passengers of HELD/CONFIRMED bookings), and that
     all databases are identical (a digest of every table) once they are at the same applied index;
   * `--nodes`: the same per-booking check through a stale PNR-status read on each node (after catch-up);
   * both: no two acknowledged holds got the same seat on overlapping segments.
8. `--profile`: `py-spy record --nonblocking` of the leader for the booking phase, written as a flame graph
   (`--profile-out`, default bench-flame.svg).  py-spy needs ptrace permission (root, or
   kernel.yama.ptrace_scope=0); a failure is reported in the output, the benchmark still completes.

Output: a readable report (stdout; progress on stderr), or with `--json` exactly one JSON object on stdout
(progress still on stderr): `bookings_per_s`, `reads_per_s`, `p50_ms`, `p95_ms`, `p99_ms`, `max_ms`, `errors`
(by kind), `consistent`, `nodes` (per node cpu_s, peak_rss_mb, ...), `log_bytes_per_booking`, and more.
Exit codes: 0 consistent, 1 inconsistent, 2 bad usage, 3 the benchmark could not run (no leader, ...).

Preload
-------
`--preload N` stores N paid one-passenger bookings before measuring (so the "1,000,000 bookings already
stored" target can be checked).  Two ways (`--preload-mode`):

* `api` (always for `--nodes`): through the client library by the same closed-loop clients (hold + pay), so
  at the cluster's own booking rate -- a million takes ~10 minutes at 1,500 bookings/s, hours at today's rates;
* `snapshot` (default for a fresh local cluster when N >= 20,000): the database is built once, offline, by the
  deterministic apply (store.state_machine.apply_batch: the catalogue, the administrator and a customer, N
  holds + payments), and every node starts from that same database as a Raft snapshot at its applied index K
  (term 1, the founding voters; log empty after K; the file also kept as the node's snapshot for sending to
  a node that joins).  That is exactly the state of a cluster that committed those K entries in term 1 and
  compacted its logs -- all nodes identical, Raft-consistent -- without pushing a million proposals through
  RPC.  The build costs roughly 0.35 ms per booking (hold + payment) on an idle core; ~14 minutes per
  million on the shared 2-core machine this was written on.

Figures depend on the machine and on what else runs on it: the cluster and the load generator share the same
cores, so treat throughput numbers as indicative and compare runs made on the same machine.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import math
import multiprocessing as mp
import os
import random
import resource
import secrets
import shlex
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from collections import Counter, defaultdict
from collections.abc import Callable, Collection, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from . import heap
from .ports import free_ports, port_is_free

# ============================================================================================ constants

DEFAULT_CLIENTS = 64
DEFAULT_DURATION_S = 20.0
DEFAULT_TRAINS = 50
DEFAULT_DAYS = 30
DEFAULT_COACHES = 20
DEFAULT_SEATS = 72
WARMUP_S = 1.0
CALL_TIMEOUT_S = 10.0
LEADER_WAIT_S = 30.0
CATCH_UP_WAIT_S = 60.0
CATCH_UP_NEW_NODE_S = 600.0  # --catch-up: how long a new node may take before the bench gives up
WORKER_READY_S = 60.0
STOP_GRACE_S = 10.0
SAMPLE_EVERY_S = 0.5
PASSENGER = "Bench Passenger"
PAY_CARD = "4111111111111111"
HOLD_SECONDS = 1800  # the longest hold: nothing the benchmark holds lapses while it runs and is checked
USERS_MAX = 16  # customers registered for the clients (each registration costs a scrypt on the server)
READ_PNRS_MAX = 5000  # PNRs the read phase draws its PNR-status reads from
SNAPSHOT_PRELOAD_MIN = 20_000  # below this, --preload-mode auto goes through the API
PRELOAD_BATCH = 500
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
PRELOAD_USER = "bench-preload"
PRELOAD_CLIENT_ID = "railraft-bench-preload"


class BenchError(Exception):
    """The benchmark could not run (no leader, a node died at start, bad arguments, ...)."""


def _say(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", file=sys.stderr, flush=True)


# ============================================================================================ small stats


def percentile(values: Sequence[float], p: float) -> float | None:
    """Nearest-rank p-th percentile (0..100) of `values`; None for no values."""
    if not values:
        return None
    s = sorted(values)
    k = max(0, min(len(s) - 1, math.ceil(p / 100 * len(s)) - 1))
    return s[k]


def latency_summary(lats_ms: Sequence[float]) -> dict[str, float | None]:
    """p50, p95, p99, max and mean of latencies in milliseconds, rounded to 0.01 ms (None when empty)."""
    s = sorted(lats_ms)

    def r(v: float | None) -> float | None:
        return None if v is None else round(v, 2)

    return {
        "p50_ms": r(percentile(s, 50)),
        "p95_ms": r(percentile(s, 95)),
        "p99_ms": r(percentile(s, 99)),
        "max_ms": r(s[-1] if s else None),
        "mean_ms": r(sum(s) / len(s) if s else None),
        "count": len(s),
    }


# ============================================================================================ /proc


def proc_cpu_s(pid: int) -> float | None:
    """User + system CPU seconds of a process (None if it is gone or not readable)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return None
    # The command name (field 2) may contain spaces and parentheses: split after its closing parenthesis.
    fields = raw[raw.rfind(")") + 2:].split()
    try:
        utime, stime = int(fields[11]), int(fields[12])
    except (IndexError, ValueError):
        return None
    return (utime + stime) / os.sysconf("SC_CLK_TCK")


def proc_status_kb(pid: int, key: str) -> int | None:
    """A "Key:  N kB" line of /proc/PID/status (VmHWM = peak RSS, VmRSS = current RSS), in kB."""
    try:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith(key + ":"):
                    return int(line.split()[1])
    except (OSError, ValueError, IndexError):
        return None
    return None


def _mb(kb: int | None) -> float | None:
    return None if kb is None else round(kb / 1024, 1)


def local_node_pid(address: str, pid: int | None) -> int | None:
    """`pid` if the node at `address` runs on this machine as that process (a railraft node), else None."""
    if not pid:
        return None
    host = address.rpartition(":")[0]
    if host not in LOCAL_HOSTS:
        return None
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ")
    except OSError:
        return None
    return pid if b"node" in cmdline else None


def pid_alive(pid: int) -> bool:
    """Is there a process (not a zombie) with this pid?"""
    try:
        with open(f"/proc/{pid}/stat") as f:
            raw = f.read()
    except OSError:
        return False
    state = raw[raw.rfind(")") + 2:].split()[:1]
    return state != ["Z"]


def machine_cpu_s() -> tuple[float, float] | None:
    """(busy, total) CPU seconds of the whole machine so far, from /proc/stat (None if unreadable)."""
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    tick = os.sysconf("SC_CLK_TCK")
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already counted in user
    return (total - idle) / tick, total / tick


# ============================================================================================ local cluster


class LocalCluster:
    """A fresh 3-node (or `nodes`-node) cluster on free 127.0.0.1 ports, as child processes of the bench."""

    def __init__(self, root: Path, nodes: int = 3, *, admin_password: str, snapshot_entries: int = 10000,
                 tick_ms: int = 50, say: Callable[[str], None] = _say) -> None:
        from actors.config import ClusterConfig, NodeAddress

        self.root = root
        self.say = say
        self.admin_password = admin_password
        ports = free_ports(nodes)
        self.cfg = ClusterConfig(
            cluster_id=f"bench-{os.getpid()}-{ports[0]}", data_dir=Path("."), snapshot_entries=snapshot_entries,
            tick_ms=tick_ms,
            nodes=tuple(NodeAddress(i + 1, "127.0.0.1", p) for i, p in enumerate(ports)),
        )
        self.config_path = root / "cluster.toml"
        self.procs: dict[int, subprocess.Popen] = {}
        self.extra_ports: list[int] = []  # nodes added during the run (--catch-up)

    @property
    def ids(self) -> list[int]:
        return [n.id for n in self.cfg.nodes]

    @property
    def addresses(self) -> list[str]:
        return [n.address for n in self.cfg.nodes]

    def node_dir(self, node_id: int) -> Path:
        return self.root / f"node{node_id}"

    def db_path(self, node_id: int) -> Path:
        return self.node_dir(node_id) / f"Node{node_id}TicketBooking.db"

    def log_path(self, node_id: int) -> Path:
        return self.root / f"node{node_id}.log"

    def pids(self) -> dict[int, int]:
        return {nid: p.pid for nid, p in self.procs.items()}

    def write_config(self) -> None:
        self.root.mkdir(parents=True, exist_ok=True)
        self.config_path.write_text(self.cfg.to_toml())

    def start(self) -> None:
        from .cluster import node_command

        self.write_config()
        env = self._node_env()
        for n in self.cfg.nodes:
            with open(self.log_path(n.id), "ab") as logf:
                self.procs[n.id] = subprocess.Popen(
                    node_command(n.id, self.config_path), stdin=subprocess.DEVNULL, stdout=logf,
                    stderr=subprocess.STDOUT, env=env, cwd=str(self.root), start_new_session=True, close_fds=True,
                )
        self.say("nodes: " + ", ".join(f"{nid}@{self.cfg.node(nid).address} pid {p.pid}"
                                       for nid, p in self.procs.items()))

    def _node_env(self) -> dict[str, str]:
        """The environment of a node process this bench starts."""
        env = dict(os.environ)
        src = str(Path(__file__).resolve().parents[1])
        env["PYTHONPATH"] = src + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        env["PYTHONUNBUFFERED"] = "1"
        env["RAILRAFT_ADMIN_PASSWORD"] = self.admin_password
        env.pop("RAILRAFT_ADMIN_USER", None)
        env.pop("RAILRAFT_CRASH_ACTOR", None)
        # The nodes ask the kernel for SIGTERM should the bench die, so none outlives it.
        env["RAILRAFT_PARENT_PID"] = str(os.getpid())
        return env

    def start_joiner(self, node_id: int, port: int) -> subprocess.Popen:
        """Start `railraft node --join` for a new node `node_id` on `port` (added to the cluster separately)."""
        from .cluster import node_command

        env = self._node_env()
        argv = node_command(node_id, self.config_path, join=True, host="127.0.0.1", port=port,
                            data_dir=self.node_dir(node_id))
        with open(self.log_path(node_id), "ab") as logf:
            proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=logf, stderr=subprocess.STDOUT, env=env,
                                    cwd=str(self.root), start_new_session=True, close_fds=True)
        self.procs[node_id] = proc
        self.extra_ports.append(port)
        return proc

    def dead(self) -> list[int]:
        return [nid for nid, p in self.procs.items() if p.poll() is not None]

    def log_tail(self, node_id: int, lines: int = 20) -> str:
        try:
            return "\n".join(self.log_path(node_id).read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"

    def stop(self) -> list[str]:
        """SIGTERM every node, wait, SIGKILL stragglers, reap; returns what went wrong (empty: all fine)."""
        notes = []
        for p in self.procs.values():
            if p.poll() is None:
                try:
                    os.kill(p.pid, signal.SIGTERM)
                except ProcessLookupError:
                    pass
        deadline = time.monotonic() + STOP_GRACE_S
        for nid, p in self.procs.items():
            try:
                p.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                notes.append(f"node {nid} (pid {p.pid}) ignored SIGTERM for {STOP_GRACE_S:g}s: killed")
                try:
                    os.kill(p.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                p.wait(timeout=10)
        deadline = time.monotonic() + 5.0
        for port in [n.port for n in self.cfg.nodes] + self.extra_ports:
            while not port_is_free(port) and time.monotonic() < deadline:
                time.sleep(0.05)
        return notes


# ============================================================================================ dataset


@dataclass(frozen=True)
class RunSpec:
    """One run the clients book on: its id and date, the route's station codes, the coach labels per class."""

    run_id: int
    date: str
    codes: tuple[str, ...]
    classes: dict[str, tuple[str, ...]]


@dataclass
class Dataset:
    runs: list[RunSpec]
    tokens: list[str]
    seconds: float = 0.0
    added: dict[str, int] = field(default_factory=dict)


def start_date_ist(now_ms: int | None = None) -> str:
    """Tomorrow in India: the first date of the benchmark runs (today's may have left already)."""
    from store import civil

    ms = int(time.time() * 1000) if now_ms is None else now_ms
    return civil.format_date(civil.local_day(ms) + 1)


async def admin_login(rr: Any, user: str, password: str, wait_s: float = 60.0) -> None:
    """Log `rr` in as the administrator, waiting for the servers to bootstrap the account."""
    from .demo_loader import DemoError
    from .demo_loader import admin_login as login

    try:
        await login(rr, user, password, wait_s)
    except DemoError as e:
        raise BenchError(str(e)) from None


async def load_dataset(rr: Any, *, trains: int, days: int, coaches: int, seats: int, start_date: str,
                       users: int, say: Callable[[str], None] = _say) -> Dataset:
    """The benchmark catalogue through the API (only what is missing), and `users` fresh customers."""
    from store import auth, demo
    from store.commands import AddTrain, CreateStation, ScheduleRuns

    from .client import AlreadyExists
    from .demo_loader import bounded

    t0 = time.monotonic()
    cmds = demo.benchmark_commands("", start_date, 0, trains=trains, days=days, coaches=coaches, seats=seats)
    stations = [c for c in cmds if isinstance(c, CreateStation)]
    add_trains = [c for c in cmds if isinstance(c, AddTrain)]
    schedules = [c for c in cmds if isinstance(c, ScheduleRuns)]
    added = {"stations": 0, "trains": 0, "runs": 0}

    have = {s.code for s in await rr.stations()}

    async def station(c: CreateStation) -> int:
        try:
            await rr.add_station(c.code, c.name, request_id=c.request_id, timeout=30.0)
            return 1
        except AlreadyExists:
            return 0

    added["stations"] = sum(await bounded(16, [lambda c=c: station(c) for c in stations if c.code not in have]))
    have_trains = {t.number for t in await rr.trains()}

    async def train(c: AddTrain) -> int:
        try:
            await rr.add_train(c.number, c.name, c.train_type, c.depart_time, c.stops, c.coaches,
                               request_id=c.request_id, timeout=30.0)
            return 1
        except AlreadyExists:
            return 0

    added["trains"] = sum(await bounded(8, [lambda c=c: train(c) for c in add_trains if c.number not in have_trains]))

    async def schedule(c: ScheduleRuns) -> list[Any]:
        runs = await rr.list_runs(c.train_number, c.first_date, c.last_date, timeout=30.0)
        if len({r.date for r in runs if r.status == "SCHEDULED"}) < days:
            made = await rr.schedule_runs(c.train_number, c.first_date, c.last_date, request_id=c.request_id,
                                          timeout=60.0)
            added["runs"] += len(made)
            runs = await rr.list_runs(c.train_number, c.first_date, c.last_date, timeout=30.0)
        return runs

    per_train = await bounded(8, [lambda c=c: schedule(c) for c in schedules])
    specs: list[RunSpec] = []
    for c, runs in zip(add_trains, per_train):
        codes = tuple(s.station_code for s in c.stops)
        classes: dict[str, list[str]] = defaultdict(list)
        for coach in c.coaches:
            classes[coach.travel_class].append(coach.label)
        frozen = {k: tuple(v) for k, v in sorted(classes.items())}
        specs += [RunSpec(r.id, r.date, codes, frozen) for r in runs if r.status == "SCHEDULED"]
    if not specs:
        raise BenchError("the dataset has no scheduled runs")

    tag = secrets.token_hex(3)
    password = auth.urlsafe_secret(12)

    async def customer(i: int) -> str:
        session = await rr.register(f"bench-{tag}-{i}", password, remember=False, timeout=30.0)
        if not session.token:
            session = await rr.login(f"bench-{tag}-{i}", password, remember=False, timeout=30.0)
        return session.token

    tokens = await bounded(8, [lambda i=i: customer(i) for i in range(users)])
    ds = Dataset(specs, tokens, time.monotonic() - t0, added)
    say(f"dataset: {len(specs)} runs of {trains} trains x {days} days ({coaches} coaches x {seats} seats), "
        f"{users} customers; added {added['stations']} stations, {added['trains']} trains, {added['runs']} runs "
        f"in {ds.seconds:.1f}s")
    return ds


# ============================================================================================ workers


def _error_kind(e: BaseException) -> str:
    from .client import BookingError, Unavailable

    if isinstance(e, BookingError):
        return e.status.name.lower()
    if isinstance(e, Unavailable):
        return "unavailable"
    if isinstance(e, asyncio.TimeoutError):
        return "timeout"
    return type(e).__name__


def _die_with_parent() -> None:
    """Ask the kernel for SIGTERM when the bench process dies (Linux only; best effort)."""
    try:
        import ctypes

        libc = ctypes.CDLL("libc.so.6", use_errno=True)
        libc.prctl(1, signal.SIGTERM)  # PR_SET_PDEATHSIG
    except Exception:  # noqa: BLE001 - not Linux, or no libc: the parent still joins/terminates us
        pass


def _worker_entry(conn: Any, static: dict[str, Any], counter: Any) -> None:
    """Body of one load-generator process: serve phases (see WorkerPool) until told to exit."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the parent's to handle; it stops us
    from .client import run as client_run

    try:
        client_run(_worker_async(conn, static, counter))
    except BaseException:  # noqa: BLE001 - report everything to the parent
        try:
            conn.send(("failed", traceback.format_exc()))
        except Exception:  # noqa: BLE001
            pass
    finally:
        conn.close()


def _cpu_self() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


def spread_for(writes: str, clients: int, batch: bool = True) -> bool:
    """Do the clients of a phase with `clients` clients spread their bookings over every node (`--writes`)?

    `auto` sends them to the leader when the client library batches (a batch of bookings costs the leader
    less than the forwarding it saves would), and spreads them when every call travels alone (then serving
    the calls is most of the work, and the followers share it)."""
    return writes == "spread" or (writes == "auto" and clients > 1 and not batch)


async def _recv(conn: Any) -> Any:
    while not conn.poll():
        await asyncio.sleep(0.005)
    return conn.recv()


async def _worker_async(conn: Any, static: dict[str, Any], counter: Any) -> None:
    from .client import RailraftClient

    runs = [RunSpec(*r) for r in static["runs"]]
    rr = RailraftClient(static["addresses"], timeout=static.get("timeout", CALL_TIMEOUT_S),
                        batch=static.get("batch", True))
    try:
        try:
            await rr.status(timeout=5.0)  # find the leader, open the channels
        except Exception:  # noqa: BLE001 - the calls will discover it themselves
            pass
        heap.settle()  # a long-lived client process too: its start-up objects out of the collector's way
        conn.send(("ready", os.getpid()))
        while True:
            msg = await _recv(conn)
            if msg[0] != "phase":
                return
            rr.spread_writes = spread_for(static.get("writes", "auto"), msg[1]["phase_clients"],
                                          static.get("batch", True))
            conn.send(("done", await _worker_phase(rr, runs, static["tokens"], msg[1], counter)))
    finally:
        rr.close()


async def _worker_phase(rr: Any, runs: list[RunSpec], tokens: list[str], spec: dict[str, Any],
                        counter: Any) -> dict[str, Any]:
    """One phase in this process: `spec["clients"]` closed-loop tasks; raw results for the parent."""
    from .client import FailedPrecondition

    mode: str = spec["mode"]
    pnrs: list[str] = spec.get("pnrs", [])
    pay: bool = spec.get("pay", False) or mode == "preload"
    start_at: float = spec["start_at"]
    end = start_at + spec.get("duration", 0.0)
    await asyncio.sleep(max(0.0, start_at - spec.get("warmup", 0.0) - time.time()))
    cpu0 = _cpu_self()
    ends: list[float] = []
    lats: list[float] = []
    kinds: list[str] = []
    pay_ends: list[float] = []
    pay_lats: list[float] = []
    pay_kinds: list[str] = []
    acked: list[tuple] = []
    paid: list[str] = []

    def more() -> bool:
        if mode == "preload":
            with counter.get_lock():
                if counter.value >= spec["count"]:
                    return False
                counter.value += 1
                return True
        return time.time() < end

    async def booker(i: int) -> None:
        rng = random.Random(spec["seed"] * 100_003 + i)
        token = tokens[(spec["first_client"] + i) % len(tokens)]
        while more():
            run = rng.choice(runs)
            cls = rng.choice(list(run.classes))
            f = rng.randrange(len(run.codes) - 1)
            t = rng.randrange(f + 1, len(run.codes))
            t0 = time.perf_counter()
            booking = None
            try:
                booking = await rr.hold(run.run_id, cls, run.codes[f], run.codes[t], [(PASSENGER, 30)],
                                        hold_seconds=HOLD_SECONDS, token=token)
                kind = "ok"
            except FailedPrecondition as e:
                kind = "sold_out" if "sold out" in e.message else "failed_precondition"
            except Exception as e:  # noqa: BLE001 - every failure is counted by kind
                kind = _error_kind(e)
            t1 = time.perf_counter()
            ends.append(time.time() - start_at)
            lats.append((t1 - t0) * 1000)
            kinds.append(kind)
            if booking is None:
                continue
            if mode != "preload":
                acked.append((booking.pnr, run.run_id, f, t, tuple((p.coach, p.seat) for p in booking.passengers)))
            if not pay:
                continue
            t0 = time.perf_counter()
            try:
                await rr.pay(booking.pnr, PAY_CARD, booking.amount_paise, token=token)
                pkind = "paid"
                if mode != "preload":
                    paid.append(booking.pnr)
            except Exception as e:  # noqa: BLE001
                pkind = _error_kind(e)
            pay_ends.append(time.time() - start_at)
            pay_lats.append((time.perf_counter() - t0) * 1000)
            pay_kinds.append(pkind)

    async def reader(i: int) -> None:
        from proto.gen.railraft.v1 import Consistency

        c = Consistency[spec["consistency"]]
        rng = random.Random(spec["seed"] * 100_003 + 50_000 + i)
        while time.time() < end:
            run = rng.choice(runs)
            f = rng.randrange(len(run.codes) - 1)
            t = rng.randrange(f + 1, len(run.codes))
            x = rng.random()
            t0 = time.perf_counter()
            try:
                if x < 0.4 or (x >= 0.7 and not pnrs):
                    kind = "search"
                    await rr.search(run.codes[f], run.codes[t], run.date, consistency=c)
                elif x < 0.7:
                    kind = "seat_map"
                    cls = rng.choice(list(run.classes))
                    await rr.seat_map(run.run_id, rng.choice(run.classes[cls]), run.codes[f], run.codes[t],
                                      consistency=c)
                else:
                    kind = "pnr_status"
                    await rr.pnr_status(rng.choice(pnrs), PASSENGER, consistency=c)
            except Exception as e:  # noqa: BLE001
                kind = "error:" + _error_kind(e)
            ends.append(time.time() - start_at)
            lats.append((time.perf_counter() - t0) * 1000)
            kinds.append(kind)

    task = reader if mode == "read" else booker
    await asyncio.gather(*(task(i) for i in range(spec["clients"])))
    return {"pid": os.getpid(), "cpu_s": _cpu_self() - cpu0, "ends": ends, "lats": lats, "kinds": kinds,
            "pay_ends": pay_ends, "pay_lats": pay_lats, "pay_kinds": pay_kinds, "acked": acked, "paid": paid}


@dataclass
class PhaseResult:
    """What the load generators of one phase did, merged.  Times (`ends`) are seconds from the start of the
    measured window; a phase counts what completed inside [0, duration]."""

    mode: str
    label: str
    duration: float
    clients: int
    workers: int
    ends: list[float] = field(default_factory=list)
    lats: list[float] = field(default_factory=list)
    kinds: list[str] = field(default_factory=list)
    pay_ends: list[float] = field(default_factory=list)
    pay_lats: list[float] = field(default_factory=list)
    pay_kinds: list[str] = field(default_factory=list)
    acked: list[tuple] = field(default_factory=list)
    paid: list[str] = field(default_factory=list)
    loadgen_cpu_s: float = 0.0
    node_cpu_s: dict[int, float | None] = field(default_factory=dict)
    machine_busy_s: float | None = None  # CPU seconds the whole machine was busy during the window
    machine_cpus_s: float | None = None  # CPU seconds available (cores x window)
    parent_cpu_s: float | None = None  # this process (orchestration, Node.Status sampling) during the window
    log_bytes: dict[int, int] = field(default_factory=dict)
    commit_delta: int | None = None
    profile: dict[str, Any] | None = None

    def in_window(self) -> list[int]:
        return [i for i, e in enumerate(self.ends) if 0.0 <= e <= self.duration]


def _default_workers(clients: int, batch: bool = True) -> int:
    """One process when the client library batches (the more clients share a client, the bigger its
    batches, and a batch costs the cluster less per booking than a smaller one); two without batching."""
    return 1 if batch or clients <= 4 else 2


class Sampler:
    """Polls Node.Status during a phase: log bytes written (increases summed) and commit index progress."""

    def __init__(self, rr: Any) -> None:
        self.rr = rr
        self.last: dict[int, int] = {}
        self.written: dict[int, int] = defaultdict(int)
        self.first_commit: int | None = None
        self.last_commit: int | None = None

    async def sample(self) -> None:
        try:
            st = await self.rr.status(timeout=2.0)
        except Exception:  # noqa: BLE001 - a missed sample is fine
            return
        for n in st["nodes"]:
            if not n.get("up") or n.get("id") is None:
                continue
            nid, lb = n["id"], n.get("log_bytes") or 0
            if nid in self.last and lb > self.last[nid]:
                self.written[nid] += lb - self.last[nid]
            self.last[nid] = lb
            if n["role"] == "leader":
                if self.first_commit is None:
                    self.first_commit = n["commit_index"]
                self.last_commit = n["commit_index"]


class WorkerPool:
    """`n` load-generator processes (spawned once, each with its own asyncio loop and RailraftClient) that
    run the phases of a benchmark; see `phase`."""

    def __init__(self, n: int, addresses: list[str], dataset: Dataset, say: Callable[[str], None] = _say,
                 writes: str = "auto", batch: bool = True) -> None:
        self.n = n
        self.say = say
        self.ctx = mp.get_context("spawn")
        self.counter = self.ctx.Value("q", 0)
        self.static = {"addresses": addresses, "tokens": dataset.tokens, "timeout": CALL_TIMEOUT_S,
                       "writes": writes, "batch": batch,
                       "runs": [(r.run_id, r.date, r.codes, r.classes) for r in dataset.runs]}
        self.procs: list[tuple[Any, Any]] = []
        self.pids: list[int] = []

    async def start(self) -> None:
        for w in range(self.n):
            parent_conn, child_conn = self.ctx.Pipe()
            p = self.ctx.Process(target=_worker_entry, args=(child_conn, self.static, self.counter), daemon=True,
                                 name=f"railraft-bench-worker-{w}")
            p.start()
            child_conn.close()
            self.procs.append((p, parent_conn))
            self.pids.append(p.pid)
        deadline = time.monotonic() + WORKER_READY_S
        for p, c in self.procs:
            while not c.poll():
                if not p.is_alive() or time.monotonic() > deadline:
                    raise BenchError(f"load generator {p.name} did not start")
                await asyncio.sleep(0.02)
            msg = c.recv()
            if msg[0] != "ready":
                raise BenchError(f"load generator {p.name} failed to start:\n{msg[1]}")

    async def phase(self, *, mode: str, clients: int, duration: float, warmup: float, seed: int,
                    label: str = "", pay: bool = False, consistency: str = "LINEARIZABLE", pnrs: Sequence[str] = (),
                    count: int = 0, node_pids: Callable[[], dict[int, int | None]] | None = None,
                    status_client: Any = None, profile: dict[str, Any] | None = None,
                    workers: int | None = None) -> PhaseResult:
        """Run one phase: mode "book" / "read" for `duration` seconds after `warmup`, "preload" until `count`
        paid bookings.  Meanwhile the parent measures the nodes' CPU, samples Node.Status and, with
        `profile`, runs py-spy on the leader."""
        use = self.procs[:max(1, min(workers or self.n, clients, self.n))]
        shares = [clients // len(use) + (1 if w < clients % len(use) else 0) for w in range(len(use))]
        res = PhaseResult(mode, label or mode, duration, clients, len(use))
        node_pids = node_pids or (lambda: {})
        start_at = time.time() + 0.2 + warmup
        with self.counter.get_lock():
            self.counter.value = 0
        first = 0
        for w, ((p, c), share) in enumerate(zip(use, shares)):
            c.send(("phase", {"mode": mode, "clients": share, "first_client": first, "seed": seed * 1000 + w,
                              "pay": pay, "consistency": consistency, "pnrs": list(pnrs), "duration": duration,
                              "warmup": warmup, "count": count, "start_at": start_at, "phase_clients": clients}))
            first += share
        sampler = Sampler(status_client) if status_client is not None and mode != "preload" else None
        await asyncio.sleep(max(0.0, start_at - time.time()))
        pids0 = node_pids()
        cpu0 = {nid: proc_cpu_s(pid) if pid else None for nid, pid in pids0.items()}
        mach0, mach1 = machine_cpu_s(), None
        self0, self1 = _cpu_self(), None
        prof_proc = _start_profiler(profile, duration) if profile is not None else None
        if sampler is not None:
            await sampler.sample()
        results: list[dict[str, Any] | None] = [None] * len(use)
        end_at = start_at + duration
        cpu1: dict[int, float | None] | None = None
        last_progress = time.monotonic()
        limit = time.monotonic() + (duration if mode != "preload" else 10**9) + CALL_TIMEOUT_S * 3 + 30
        while any(r is None for r in results):
            if mode != "preload" and cpu1 is None and time.time() >= end_at:
                cpu1 = {nid: proc_cpu_s(pid) if pid else None for nid, pid in pids0.items()}
                mach1, self1 = machine_cpu_s(), _cpu_self()
                if sampler is not None:
                    await sampler.sample()
            for i, (p, c) in enumerate(use):
                if results[i] is None and c.poll():
                    msg = c.recv()
                    if msg[0] != "done":
                        raise BenchError(f"load generator {p.name} failed:\n{msg[1]}")
                    results[i] = msg[1]
                elif results[i] is None and not p.is_alive():
                    raise BenchError(f"load generator {p.name} exited with code {p.exitcode}")
            if time.monotonic() > limit:
                raise BenchError(f"the {label or mode} phase did not finish in time")
            if mode == "preload" and time.monotonic() - last_progress >= 10.0:
                last_progress = time.monotonic()
                self.say(f"preload: {min(self.counter.value, count)}/{count} bookings")
            if sampler is not None and cpu1 is None and time.time() < end_at - SAMPLE_EVERY_S:
                await sampler.sample()
                await asyncio.sleep(SAMPLE_EVERY_S)
            else:
                await asyncio.sleep(0.02)
        if cpu1 is None:
            cpu1 = {nid: proc_cpu_s(pid) if pid else None for nid, pid in pids0.items()}
            mach1, self1 = machine_cpu_s(), _cpu_self()
        res.parent_cpu_s = round(self1 - self0, 2) if self1 is not None else None
        if mach0 is not None and mach1 is not None:
            res.machine_busy_s = round(mach1[0] - mach0[0], 2)
            res.machine_cpus_s = round(mach1[1] - mach0[1], 2)
        if mode == "preload":
            res.duration = time.time() - start_at
        for r in results:
            assert r is not None
            for name in ("ends", "lats", "kinds", "pay_ends", "pay_lats", "pay_kinds", "acked", "paid"):
                getattr(res, name).extend(r[name])
            res.loadgen_cpu_s += r["cpu_s"]
        res.node_cpu_s = {nid: (round(cpu1[nid] - cpu0[nid], 2) if cpu0.get(nid) is not None
                                and cpu1.get(nid) is not None else None) for nid in pids0}
        if sampler is not None:
            res.log_bytes = dict(sampler.written)
            if sampler.first_commit is not None and sampler.last_commit is not None:
                res.commit_delta = sampler.last_commit - sampler.first_commit
        if prof_proc is not None:
            res.profile = _finish_profiler(prof_proc, profile, duration)
        elif profile is not None:
            res.profile = {"ok": False, "path": profile.get("path"), "error": profile.get("error")}
        return res

    def close(self) -> None:
        """Tell every worker to exit; terminate (then kill) any that does not."""
        for p, c in self.procs:
            try:
                c.send(("exit",))
            except OSError:
                pass
        deadline = time.monotonic() + 3.0  # a worker in the middle of a phase reads no messages: don't wait long
        for p, c in self.procs:
            p.join(timeout=max(0.1, deadline - time.monotonic()))
            if p.is_alive():
                p.terminate()
                p.join(timeout=5)
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
            c.close()
        self.procs = []



# ============================================================================================ profiler


def _py_spy() -> str | None:
    here = Path(sys.executable).parent / "py-spy"
    return str(here) if here.exists() else shutil.which("py-spy")


def _start_profiler(profile: dict[str, Any], duration: float) -> subprocess.Popen | None:
    exe = _py_spy()
    pid = profile.get("pid")
    if exe is None:
        profile["error"] = "py-spy is not installed (pip install py-spy)"
        return None
    if not pid:
        profile["error"] = "the leader's pid is not known (is the leader on this machine?)"
        return None
    out = Path(profile["path"])
    out.parent.mkdir(parents=True, exist_ok=True)
    # The output's extension picks the format: .svg a flame graph, .txt collapsed stacks ("raw", for
    # flamegraph.pl or grep), .json speedscope.
    fmt = {".txt": "raw", ".folded": "raw", ".json": "speedscope"}.get(out.suffix.lower(), "flamegraph")
    argv = [exe, "record", "--pid", str(pid), "--duration", str(max(1, int(round(duration)))),
            "--rate", str(profile.get("rate", 100)), "--nonblocking", "--threads", "--output", str(out), "--format", fmt]
    profile["command"] = shlex.join(argv)
    try:
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    except OSError as e:
        profile["error"] = f"cannot run py-spy: {e}"
        return None


def _children_cpu_s() -> float:
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def _finish_profiler(proc: subprocess.Popen, profile: dict[str, Any], duration: float) -> dict[str, Any]:
    cpu0 = _children_cpu_s()  # py-spy is the only child reaped meanwhile: the difference is its CPU time
    try:
        out, err = proc.communicate(timeout=duration + 60)
    except subprocess.TimeoutExpired:
        proc.kill()
        out, err = proc.communicate()
    profile["cpu_s"] = round(_children_cpu_s() - cpu0, 2)
    path = Path(profile["path"])
    ok = proc.returncode == 0 and path.exists() and path.stat().st_size > 0
    info = {"path": str(path.resolve()), "ok": ok, "pid": profile.get("pid"), "command": profile.get("command"),
            "cpu_s": profile.get("cpu_s")}
    if not ok:
        text = (err or b"").decode(errors="replace").strip() or (out or b"").decode(errors="replace").strip()
        info["error"] = (f"py-spy exited with code {proc.returncode}: {text[-600:]}"
                         + (" (py-spy needs ptrace permission: run as root or set kernel.yama.ptrace_scope=0)"
                            if "ermission" in text or "ptrace" in text.lower() else ""))
    return info


# ============================================================================================ consistency


@dataclass(frozen=True)
class Acked:
    """An acknowledged hold: PNR, run, segment (stop positions on the route) and seats [(coach, seat)]."""

    pnr: str
    run_id: int
    from_seq: int
    to_seq: int
    seats: tuple[tuple[str, int], ...]


def acked_overlaps(acked: Iterable[Acked]) -> list[str]:
    """Seats that two acknowledged holds were both given on overlapping segments (client-side view)."""
    by_seat: dict[tuple[int, str, int], list[Acked]] = defaultdict(list)
    for a in acked:
        for coach, seat in a.seats:
            by_seat[(a.run_id, coach, seat)].append(a)
    problems = []
    for (run_id, coach, seat), items in by_seat.items():
        items.sort(key=lambda a: (a.from_seq, a.to_seq))
        reach, holder = -1, None
        for a in items:
            if holder is not None and a.from_seq < reach:
                problems.append(f"run {run_id} seat {coach}-{seat}: PNR {holder.pnr} [{holder.from_seq},"
                                f"{holder.to_seq}) and PNR {a.pnr} [{a.from_seq},{a.to_seq}) were both acknowledged")
            if a.to_seq > reach:
                reach, holder = a.to_seq, a
    return problems


# Two allocation rows of one seat whose segments overlap ([from, to) intervals), found with a sort instead of
# a self-join: each row against the furthest end of the rows before it on the same seat.
_DOUBLE_ALLOCATION_SQL = """
WITH s AS (
  SELECT run_id, coach_no, seat_no, from_seq, to_seq, booking_id,
         MAX(to_seq) OVER (PARTITION BY run_id, coach_no, seat_no ORDER BY from_seq, to_seq, booking_id
                           ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_to
  FROM allocations
)
SELECT run_id, coach_no, seat_no, from_seq, to_seq, booking_id, prev_to FROM s WHERE prev_to > from_seq LIMIT 20
"""

# The same over what the bookings say: active passengers of HELD/CONFIRMED bookings.
_DOUBLE_BOOKING_SQL = """
WITH s AS (
  SELECT b.run_id, p.coach_no, p.seat_no, b.from_seq, b.to_seq, b.pnr,
         MAX(b.to_seq) OVER (PARTITION BY b.run_id, p.coach_no, p.seat_no ORDER BY b.from_seq, b.to_seq, b.id
                             ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING) AS prev_to
  FROM passengers p JOIN bookings b ON b.id = p.booking_id
  WHERE p.status = 'ACTIVE' AND b.status IN ('HELD', 'CONFIRMED') AND p.coach_no IS NOT NULL
)
SELECT run_id, coach_no, seat_no, from_seq, to_seq, pnr, prev_to FROM s WHERE prev_to > from_seq LIMIT 20
"""


def double_sold(conn: sqlite3.Connection) -> list[str]:
    """Seats sold twice on overlapping segments in one node's database (allocations and bookings)."""
    out = []
    for run_id, coach, seat, f, t, booking_id, prev in conn.execute(_DOUBLE_ALLOCATION_SQL):
        out.append(f"allocations: run {run_id} coach {coach} seat {seat}: [{f},{t}) of booking id {booking_id} "
                   f"overlaps an earlier allocation reaching {prev}")
    for run_id, coach, seat, f, t, pnr, prev in conn.execute(_DOUBLE_BOOKING_SQL):
        out.append(f"bookings: run {run_id} coach {coach} seat {seat}: PNR {pnr} [{f},{t}) overlaps another "
                   f"active booking reaching {prev}")
    return out


def database_digest(conn: sqlite3.Connection) -> str:
    """SHA-256 of store.queries.canonical_dump's text, streamed, so it works on databases of any size."""
    from store import queries

    h = hashlib.sha256()
    for line in queries.canonical_lines(conn):
        h.update(line.encode() + b"\n")
    return h.hexdigest()


def _open_ro(path: Path) -> sqlite3.Connection:
    conn = sqlite3.connect(f"{Path(path).resolve().as_uri()}?mode=ro", uri=True, isolation_level=None,
                           timeout=30.0)
    conn.execute("PRAGMA busy_timeout = 30000")
    return conn


def check_acked_in_db(conn: sqlite3.Connection, acked: Sequence[Acked], paid: Collection[str] = ()) -> list[str]:
    """Every acknowledged hold is in this database with its run, segment and seats (paid ones CONFIRMED)."""
    problems: list[str] = []
    paid = set(paid)
    for i in range(0, len(acked), PRELOAD_BATCH):
        chunk = acked[i:i + PRELOAD_BATCH]
        marks = ",".join("?" * len(chunk))
        rows = conn.execute(
            f"""SELECT b.pnr, b.run_id, b.from_seq, b.to_seq, b.status, rc.label, p.seat_no
                FROM bookings b JOIN passengers p ON p.booking_id = b.id
                LEFT JOIN run_coaches rc ON rc.run_id = b.run_id AND rc.coach_no = p.coach_no
                WHERE b.pnr IN ({marks}) ORDER BY b.pnr, p.pax_no""",
            [a.pnr for a in chunk],
        ).fetchall()
        found: dict[str, dict[str, Any]] = {}
        for pnr, run_id, f, t, status, label, seat in rows:
            d = found.setdefault(pnr, {"run": run_id, "seg": (f, t), "status": status, "seats": []})
            d["seats"].append((label, seat))
        for a in chunk:
            d = found.get(a.pnr)
            if d is None:
                problems.append(f"acknowledged PNR {a.pnr} is missing")
                continue
            if d["run"] != a.run_id or d["seg"] != (a.from_seq, a.to_seq):
                problems.append(f"PNR {a.pnr}: run {d['run']} segment {d['seg']}, but the client was told run "
                                f"{a.run_id} segment {(a.from_seq, a.to_seq)}")
            if tuple(d["seats"]) != tuple(a.seats):
                problems.append(f"PNR {a.pnr}: seats {d['seats']}, but the client was told {list(a.seats)}")
            if a.pnr in paid and d["status"] != "CONFIRMED":
                problems.append(f"PNR {a.pnr} was paid but is {d['status']}")
    return problems


def check_databases(dbs: dict[int, Path], acked: Sequence[Acked], paid: Collection[str] = (), *,
                    digest: bool = True, attempts: int = 5, say: Callable[[str], None] | None = None
                    ) -> dict[str, Any]:
    """The consistency check of a local cluster, on the nodes' SQLite files (running nodes are fine: WAL).

    Returns {"consistent", "problems", "nodes": {id: {...}}, "identical"}; "identical" is None when the nodes
    never sat at the same applied index while we looked (then only the per-node checks count).
    """
    problems: list[str] = []
    nodes: dict[int, dict[str, Any]] = {}
    for nid, path in sorted(dbs.items()):
        conn = _open_ro(path)
        try:
            conn.execute("BEGIN")
            applied = int(conn.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()[0])
            bookings = conn.execute("SELECT COUNT(*) FROM bookings").fetchone()[0]
            doubles = double_sold(conn)
            missing = check_acked_in_db(conn, acked, paid)
            conn.execute("COMMIT")
        finally:
            conn.close()
        nodes[nid] = {"applied_index": applied, "bookings": bookings, "double_sold": len(doubles),
                      "acked_problems": len(missing)}
        problems += [f"node {nid}: {p}" for p in doubles[:10] + missing[:10]]
        if len(missing) > 10:
            problems.append(f"node {nid}: ... and {len(missing) - 10} more acknowledged bookings wrong or missing")
    identical = None
    if digest and len(dbs) > 1:
        for attempt in range(attempts):
            got = {}
            for nid, path in sorted(dbs.items()):
                conn = _open_ro(path)
                try:
                    conn.execute("BEGIN")
                    applied = int(conn.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()[0])
                    got[nid] = (applied, database_digest(conn))
                    conn.execute("COMMIT")
                finally:
                    conn.close()
            if len({a for a, _ in got.values()}) == 1:
                identical = len({d for _, d in got.values()}) == 1
                for nid, (applied, d) in got.items():
                    nodes[nid]["digest"] = d[:16]
                if not identical:
                    problems.append("the databases differ at the same applied index "
                                    f"{next(iter(got.values()))[0]}: " +
                                    ", ".join(f"node {nid} {d[:12]}" for nid, (_, d) in sorted(got.items())))
                break
            if say:
                say(f"digest: nodes at different applied indexes {[a for a, _ in got.values()]}; again")
            time.sleep(0.5)
    return {"consistent": not problems, "problems": problems, "nodes": nodes, "identical": identical}


async def check_remote(addresses: list[str], acked: Sequence[Acked], paid: Collection[str] = (),
                       concurrency: int = 32) -> dict[str, Any]:
    """The per-booking check through each node's own state: a STALE PNR-status read on that node alone."""
    from .client import NotFound, RailraftClient
    from .demo_loader import bounded

    from proto.gen.railraft.v1 import BookingState, Consistency

    problems: list[str] = []
    nodes: dict[str, dict[str, Any]] = {}
    paid = set(paid)
    for addr in addresses:
        rr = RailraftClient([addr], timeout=CALL_TIMEOUT_S)
        bad: list[str] = []
        try:
            async def one(a: Acked) -> None:
                try:
                    b = await rr.pnr_status(a.pnr, PASSENGER, consistency=Consistency.STALE)
                except NotFound:
                    bad.append(f"acknowledged PNR {a.pnr} is missing")
                    return
                except Exception as e:  # noqa: BLE001
                    bad.append(f"PNR {a.pnr}: {_error_kind(e)}: {e}")
                    return
                seats = tuple((p.coach, p.seat) for p in b.passengers)
                if b.run_id != a.run_id or seats != tuple(a.seats):
                    bad.append(f"PNR {a.pnr}: run {b.run_id} seats {list(seats)}, but the client was told run "
                               f"{a.run_id} seats {list(a.seats)}")
                if a.pnr in paid and b.state != BookingState.CONFIRMED:
                    bad.append(f"PNR {a.pnr} was paid but is {b.state.name}")

            await bounded(concurrency, [lambda a=a: one(a) for a in acked])
        finally:
            rr.close()
        nodes[addr] = {"acked_problems": len(bad)}
        problems += [f"{addr}: {p}" for p in bad[:10]]
    return {"consistent": not problems, "problems": problems, "nodes": nodes, "identical": None}


async def measure_catch_up(local: LocalCluster, rr: Any, say: Callable[[str], None] = _say,
                           timeout: float = CATCH_UP_NEW_NODE_S) -> dict[str, Any]:
    """`--catch-up`: start a new, empty node, add it to the cluster (AddNode: a learner until it has caught up,
    then a voter) and time it until it has applied the leader's commit index as seen when it started."""
    from .client import RailraftClient

    node_id = max(local.procs) + 1
    port = free_ports(1)[0]
    addr = f"127.0.0.1:{port}"
    before = await rr.status(timeout=2.0)
    lead = next((n for n in before["nodes"] if n.get("up") and n.get("id") == before["leader"]), None)
    if lead is None:
        raise BenchError("catch-up: no leader to add a node to")
    target = lead["commit_index"]
    say(f"catch-up: adding an empty node {node_id} at {addr}; it must apply index {target:,}")
    t0 = time.monotonic()
    proc = local.start_joiner(node_id, port)
    res = await rr.add_node(node_id, "127.0.0.1", port, timeout=timeout)
    added_s = time.monotonic() - t0
    if not res.ok:
        raise BenchError(f"catch-up: the cluster refused node {node_id}: {res.message}")
    probe = RailraftClient([addr], timeout=5.0)
    try:
        while True:
            if proc.poll() is not None:
                raise BenchError(f"catch-up: node {node_id} exited with code {proc.returncode}:\n"
                                 + local.log_tail(node_id))
            st = (await probe.status(timeout=2.0))["nodes"][0]
            if st.get("up") and st["applied_index"] >= target:
                break
            if time.monotonic() - t0 > timeout:
                raise BenchError(f"catch-up: node {node_id} applied {st.get('applied_index')} of {target} "
                                 f"in {timeout:g}s")
            await asyncio.sleep(0.1)
    finally:
        probe.close()
    seconds = time.monotonic() - t0
    log_text = local.log_path(node_id).read_text(errors="replace")
    db = local.db_path(node_id)
    out = {"node": node_id, "target_index": target, "seconds": round(seconds, 2), "voter_after_s": round(added_s, 2),
           "by_snapshot": "installed snapshot" in log_text,
           "db_mb": round(db.stat().st_size / 1e6, 1) if db.exists() else None,
           "peak_rss_mb": _mb(proc_status_kb(proc.pid, "VmHWM"))}
    say(f"catch-up: node {node_id} caught up in {seconds:.1f}s ({'by snapshot' if out['by_snapshot'] else 'from the log'}"
        f", database {out['db_mb']} MB, peak RSS {out['peak_rss_mb']} MB)")
    return out


async def wait_caught_up(rr: Any, timeout: float = CATCH_UP_WAIT_S) -> dict[str, Any]:
    """Until every node has applied at least the leader's commit index as first seen here; the last status."""
    deadline = time.monotonic() + timeout
    target = None
    st: dict[str, Any] = {}
    while True:
        try:
            st = await rr.status(timeout=2.0)
        except Exception:  # noqa: BLE001
            st = {"nodes": [], "leader": None}
        lead = next((n for n in st["nodes"] if n.get("up") and n.get("id") == st["leader"]), None)
        if lead is not None and target is None:
            target = lead["commit_index"]
        if target is not None and st["nodes"] and all(n.get("up") and n["applied_index"] >= target
                                                      for n in st["nodes"]):
            return st
        if time.monotonic() > deadline:
            raise BenchError("the nodes did not catch up with the leader within "
                             f"{timeout:g}s: " + ", ".join(f"{n.get('address')} {n.get('role')} applied "
                                                           f"{n.get('applied_index')}" for n in st["nodes"]))
        await asyncio.sleep(0.2)


# ============================================================================================ preload


def build_preloaded_state(root: Path, node_ids: list[int], *, bookings: int, trains: int, days: int,
                          coaches: int, seats: int, start_date: str, admin_user: str, admin_password: str,
                          seed: int, say: Callable[[str], None] = _say, stop: Any = None) -> dict[str, Any]:
    """`--preload-mode snapshot`: build one database by the deterministic apply and give it to every node as
    a Raft snapshot (see the module docstring).  Returns what was built.  `stop` (a threading.Event) set
    makes it give up between batches."""
    from raft.core import bootstrap_entries
    from raft.filestorage import FileStorage
    from raft.types import Configuration, HardState, SnapshotMeta
    from store import auth, demo, schema
    from store.booking import int_to_pnr
    from store.commands import (
        BootstrapAdmin,
        ConfirmPayment,
        CreateSession,
        HoldSeats,
        PassengerSpec,
        RegisterUser,
        encode_command,
    )
    from store.state_machine import KIND_CONF, KIND_NORMAL, apply_batch

    t0 = time.monotonic()
    root.mkdir(parents=True, exist_ok=True)
    path = root / "preload.db"
    for suffix in ("", "-wal", "-shm"):
        Path(str(path) + suffix).unlink(missing_ok=True)
    conn = schema.connect(path)
    conn.execute("PRAGMA synchronous = OFF")
    conn.execute("PRAGMA cache_size = -262144")  # 256 MiB while building; the nodes use their own settings
    index = 0
    _, conf_entries = bootstrap_entries(node_ids)
    conf = Configuration(voters=frozenset(node_ids))

    def apply(entries: list[tuple[int, bytes]]) -> list[Any]:
        nonlocal index
        batch = []
        for kind, data in entries:
            index += 1
            batch.append((index, kind, data))
        return apply_batch(conn, batch)

    def cmds(items: Iterable[Any]) -> list[Any]:
        out = []
        items = list(items)
        for i in range(0, len(items), PRELOAD_BATCH):
            out += apply([(KIND_NORMAL, encode_command(c)) for c in items[i:i + PRELOAD_BATCH]])
        return out

    ts = int(time.time() * 1000)
    apply([(KIND_CONF, conf_entries[0].data)])
    admin_digest = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
    cust_digest = hashlib.sha256(secrets.token_bytes(32)).hexdigest()
    pw_hash = auth.hash_password(admin_password)
    first = [
        BootstrapAdmin(request_id="bootstrap-admin", client_id="railraft-bootstrap", ts_ms=ts, username=admin_user,
                       password_hash=pw_hash),
        CreateSession(request_id="preload-admin-session", client_id=PRELOAD_CLIENT_ID, ts_ms=ts, user_id=1,
                      token_sha256=admin_digest, expires_at_ms=ts + 3_600_000),
        RegisterUser(request_id="preload-customer", client_id=PRELOAD_CLIENT_ID, ts_ms=ts, username=PRELOAD_USER,
                     password_hash=auth.hash_password(secrets.token_urlsafe(16)), role="CUSTOMER"),
        CreateSession(request_id="preload-customer-session", client_id=PRELOAD_CLIENT_ID, ts_ms=ts, user_id=2,
                      token_sha256=cust_digest, expires_at_ms=ts + 86_400_000),
    ]
    bad = [r for r in cmds(first) if r is not None and not r.ok]
    if bad:
        raise BenchError(f"preload: setting up accounts failed: {bad[:2]}")
    bad = [r for r in cmds(demo.benchmark_commands(admin_digest, start_date, ts, trains=trains, days=days,
                                                   coaches=coaches, seats=seats))
           if r is not None and not r.ok]
    if bad:
        raise BenchError(f"preload: loading the catalogue failed: {bad[:2]}")
    routes: dict[int, list[str]] = defaultdict(list)
    for train_id, code in conn.execute(
            "SELECT ts.train_id, s.code FROM train_stops ts JOIN stations s ON s.id = ts.station_id "
            "ORDER BY ts.train_id, ts.seq"):
        routes[train_id].append(code)
    runs = conn.execute("SELECT id, train_id FROM runs WHERE status = 'SCHEDULED' ORDER BY id").fetchall()
    classes = [c for (c,) in conn.execute("SELECT DISTINCT travel_class FROM run_classes ORDER BY 1")]
    rng = random.Random(seed)
    made = held = sold_out = 0
    last_say = time.monotonic()
    while made < bookings:
        if stop is not None and stop.is_set():
            conn.close()
            raise BenchError("preload interrupted")
        n = min(PRELOAD_BATCH, bookings - made)
        holds = []
        for k in range(made, made + n):
            run_id, train_id = rng.choice(runs)
            codes = routes[train_id]
            f = rng.randrange(len(codes) - 1)
            t = rng.randrange(f + 1, len(codes))
            holds.append(HoldSeats(
                request_id=f"preload-h{k}", client_id=PRELOAD_CLIENT_ID, ts_ms=ts, token_sha256=cust_digest,
                pnr=int_to_pnr(k * 1_000_000_007 + 12_345), run_id=run_id, travel_class=rng.choice(classes),
                from_code=codes[f], to_code=codes[t], passengers=(PassengerSpec(name="Preload Passenger", age=30),),
                hold_seconds=HOLD_SECONDS))
        results = cmds(holds)
        pays = []
        for h, r in zip(holds, results):
            if r is not None and r.ok:
                pays.append(ConfirmPayment(
                    request_id=f"p{h.request_id}", client_id=PRELOAD_CLIENT_ID, ts_ms=ts, token_sha256=cust_digest,
                    pnr=r.data["pnr"], amount_paise=r.data["amount_paise"], provider_ref=f"preload-{r.data['pnr']}",
                    approved=True))
            else:
                sold_out += 1
        held += len(pays)
        cmds(pays)
        made += n
        if time.monotonic() - last_say >= 10:
            last_say = time.monotonic()
            rate = made / (time.monotonic() - t0)
            say(f"preload (snapshot): {made}/{bookings} bookings applied, {rate:.0f}/s")
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
    applied = int(conn.execute("SELECT value FROM meta WHERE key = 'applied_index'").fetchone()[0])
    conn.close()
    assert applied == index, (applied, index)
    size = path.stat().st_size
    meta = SnapshotMeta(index=applied, term=1, conf=conf)
    for nid in node_ids:
        ndir = root / f"node{nid}"
        (ndir / "snapshots").mkdir(parents=True, exist_ok=True)
        shutil.copyfile(path, ndir / f"Node{nid}TicketBooking.db")
        snap = ndir / "snapshots" / f"snap-{applied}.db"
        try:
            os.link(path, snap)  # never written to: one file serves every node's snapshot
        except OSError:
            shutil.copyfile(path, snap)
        storage = FileStorage(ndir / "raft")
        storage.load()
        storage.save(snapshot=meta, hard_state=HardState(term=1, vote=0, commit=applied))
        storage.close()
    path.unlink()
    info = {"mode": "snapshot", "bookings": held, "sold_out": sold_out, "index": applied,
            "db_mb": round(size / 2**20, 1), "seconds": round(time.monotonic() - t0, 1)}
    say(f"preload (snapshot): {held} paid bookings ({sold_out} sold out) at index {applied}, "
        f"{info['db_mb']} MiB database, built in {info['seconds']}s")
    return info


# ============================================================================================ the run


@dataclass
class BenchConfig:
    duration: float = DEFAULT_DURATION_S
    clients: int = DEFAULT_CLIENTS
    workers: int | None = None
    writes: str = "auto"  # where clients send bookings: spread, leader, or auto (see spread_for)
    batch: bool = True  # the client library batches calls made together (gateway/client_batch.py)
    nodes: list[str] | None = None
    reads: bool = True
    read_duration: float | None = None
    pay: bool = False
    single: bool = False
    catch_up: bool = False  # after the check: time a new, empty node catching up (fresh local cluster only)
    json: bool = False
    profile: bool = False
    profile_out: str = "bench-flame.svg"
    trains: int = DEFAULT_TRAINS
    days: int = DEFAULT_DAYS
    coaches: int = DEFAULT_COACHES
    seats: int = DEFAULT_SEATS
    seed: int = 1
    data_dir: str | None = None
    keep: bool = False
    preload: int = 0
    preload_mode: str = "auto"
    warmup: float = WARMUP_S
    snapshot_entries: int = 10000
    tick_ms: int = 50
    admin_user: str = "admin"
    admin_password: str | None = None
    users: int | None = None
    command: str = ""


def _phase_summary(ph: PhaseResult) -> dict[str, Any]:
    idx = ph.in_window()
    kinds = Counter(ph.kinds[i] for i in idx)
    ok, sold = kinds.pop("ok", 0), kinds.pop("sold_out", 0)
    lats = [ph.lats[i] for i in idx if ph.kinds[i] in ("ok", "sold_out")]
    out: dict[str, Any] = {
        "bookings": ok + sold,
        "bookings_per_s": round((ok + sold) / ph.duration, 1),
        "holds_ok": ok,
        "holds_per_s": round(ok / ph.duration, 1),
        "sold_out": sold,
        **latency_summary(lats),
        "errors": dict(sorted(kinds.items())),
    }
    out.pop("count")
    pidx = [i for i, e in enumerate(ph.pay_ends) if 0.0 <= e <= ph.duration]
    if ph.pay_kinds:
        pk = Counter(ph.pay_kinds[i] for i in pidx)
        paid = pk.pop("paid", 0)
        ps = latency_summary([ph.pay_lats[i] for i in pidx if ph.pay_kinds[i] == "paid"])
        out["paid"] = paid
        out["paid_bookings_per_s"] = round(paid / ph.duration, 1)
        out["pay_p50_ms"], out["pay_p99_ms"] = ps["p50_ms"], ps["p99_ms"]
        out["errors"].update({f"pay_{k}": v for k, v in sorted(pk.items())})
    return out


def _read_summary(phases: list[PhaseResult]) -> dict[str, Any]:
    out: dict[str, Any] = {"errors": {}}
    total = 0
    seconds = 0.0
    for ph in phases:
        idx = ph.in_window()
        good = [i for i in idx if not ph.kinds[i].startswith("error:")]
        errs = Counter(ph.kinds[i][6:] for i in idx if ph.kinds[i].startswith("error:"))
        name = ph.label
        total += len(good)
        seconds += ph.duration
        d: dict[str, Any] = {"reads": len(good), "reads_per_s": round(len(good) / ph.duration, 1),
                             **latency_summary([ph.lats[i] for i in good])}
        d.pop("count")
        for kind in ("search", "seat_map", "pnr_status"):
            k = [ph.lats[i] for i in good if ph.kinds[i] == kind]
            s = latency_summary(k)
            d[kind] = {"count": len(k), "p50_ms": s["p50_ms"], "p99_ms": s["p99_ms"]}
        node_cpu = [v for v in ph.node_cpu_s.values() if v is not None]
        d["node_cpu_s"] = {str(k): v for k, v in sorted(ph.node_cpu_s.items())}
        d["node_cpu_ms_per_read"] = round(sum(node_cpu) * 1000 / len(good), 3) if node_cpu and good else None
        d["loadgen_cpu_ms_per_read"] = round(ph.loadgen_cpu_s * 1000 / max(1, len(ph.kinds)), 3)
        out[name] = d
        for k, v in errs.items():
            out["errors"][f"{name}_{k}"] = v
    out["reads_per_s"] = round(total / seconds, 1) if seconds else None
    return out


async def _run(cfg: BenchConfig, say: Callable[[str], None]) -> tuple[dict[str, Any], int]:
    from .client import RailraftClient

    t_begin = time.monotonic()
    result: dict[str, Any] = {"ok": False}
    local: LocalCluster | None = None
    tmp: str | None = None
    keep_dir = cfg.keep
    workers = cfg.workers or _default_workers(cfg.clients, cfg.batch)
    admin_password = cfg.admin_password or os.environ.get("RAILRAFT_ADMIN_PASSWORD") or ""
    start_date = start_date_ist()
    loadavg0 = os.getloadavg()
    rr: Any = None
    pool: WorkerPool | None = None
    try:
        if cfg.nodes is None:
            if cfg.data_dir:
                root = Path(cfg.data_dir).resolve()
                if root.exists() and any(root.iterdir()):
                    raise BenchError(f"--data-dir {root} is not empty: the benchmark starts a fresh cluster there")
            else:
                tmp = tempfile.mkdtemp(prefix="railraft-bench-")
                root = Path(tmp)
            from store import auth

            admin_password = auth.urlsafe_secret(16)
            local = LocalCluster(root, admin_password=admin_password, snapshot_entries=cfg.snapshot_entries,
                                 tick_ms=cfg.tick_ms, say=say)
            say(f"fresh {len(local.ids)}-node cluster in {root}")
            preload_mode = cfg.preload_mode
            if preload_mode == "auto":
                preload_mode = "snapshot" if cfg.preload >= SNAPSHOT_PRELOAD_MIN else "api"
            result["preload"] = None
            if cfg.preload and preload_mode == "snapshot":
                stop = threading.Event()
                try:
                    result["preload"] = await asyncio.to_thread(
                        build_preloaded_state, root, local.ids, bookings=cfg.preload, trains=cfg.trains,
                        days=cfg.days, coaches=cfg.coaches, seats=cfg.seats, start_date=start_date,
                        admin_user=cfg.admin_user, admin_password=admin_password, seed=cfg.seed, say=say, stop=stop)
                except asyncio.CancelledError:
                    stop.set()  # the build thread stops at its next batch (asyncio.run waits for it)
                    raise
            local.start()
            addresses = local.addresses
        else:
            if not admin_password:
                raise BenchError("--nodes needs the administrator's password (--admin-password or "
                                 "RAILRAFT_ADMIN_PASSWORD) to load the dataset")
            if cfg.preload_mode == "snapshot" and cfg.preload:
                raise BenchError("--preload-mode snapshot builds a fresh local cluster; with --nodes use api")
            preload_mode = "api"
            result["preload"] = None
            addresses = list(cfg.nodes)

        rr = RailraftClient(addresses, timeout=30.0)
        deadline = time.monotonic() + LEADER_WAIT_S
        while True:
            st = await rr.status(timeout=1.0)
            if st["leader"] is not None and all(n.get("up") for n in st["nodes"]):
                break
            if local is not None and local.dead():
                nid = local.dead()[0]
                raise BenchError(f"node {nid} exited at start:\n{local.log_tail(nid)}")
            if time.monotonic() > deadline:
                raise BenchError(f"no leader within {LEADER_WAIT_S:g}s: " + "; ".join(
                    f"{n['address']}: {n['role']}" + (f" ({n['error']})" if n.get("error") else "")
                    for n in st["nodes"]))
            await asyncio.sleep(0.1)
        say(f"leader: node {st['leader']}")
        await admin_login(rr, cfg.admin_user, admin_password)
        users = cfg.users or min(cfg.clients, USERS_MAX)
        dataset = await load_dataset(rr, trains=cfg.trains, days=cfg.days, coaches=cfg.coaches, seats=cfg.seats,
                                     start_date=start_date, users=users, say=say)

        def node_pids() -> dict[int, int | None]:
            if local is not None:
                return local.pids()
            return dict(remote_pids)

        remote_pids: dict[int, int | None] = {}
        st = await rr.status(timeout=2.0)
        for n in st["nodes"]:
            if n.get("up"):
                remote_pids[n["id"]] = local_node_pid(n["address"], n.get("pid"))
        cpu_start = {nid: proc_cpu_s(pid) if pid else None for nid, pid in node_pids().items()}

        pool = WorkerPool(workers, addresses, dataset, say=say, writes=cfg.writes, batch=cfg.batch)
        await pool.start()
        common = dict(warmup=cfg.warmup, seed=cfg.seed, node_pids=node_pids, status_client=rr)

        if cfg.preload and preload_mode == "api":
            say(f"preload (api): {cfg.preload} bookings (hold + pay) through the client library, "
                f"{cfg.clients} clients")
            pre = await pool.phase(mode="preload", clients=cfg.clients, duration=0.0, count=cfg.preload,
                                   **{**common, "warmup": 0.0})
            n_ok = sum(1 for k in pre.pay_kinds if k == "paid")
            result["preload"] = {"mode": "api", "bookings": n_ok, "seconds": round(pre.duration, 1),
                                 "bookings_per_s": round(n_ok / max(pre.duration, 1e-9), 1)}
            say(f"preload (api): {n_ok} paid bookings in {pre.duration:.1f}s "
                f"({result['preload']['bookings_per_s']}/s)")

        profile = None
        if cfg.profile:
            st = await rr.status(timeout=2.0)
            lead = next((n for n in st["nodes"] if n.get("id") == st["leader"]), None)
            pid = node_pids().get(st["leader"]) if st["leader"] is not None else None
            if pid is None and lead is not None:
                pid = local_node_pid(lead["address"], lead.get("pid"))
            profile = {"pid": pid, "path": cfg.profile_out, "leader": st["leader"]}

        say(f"bookings: {cfg.clients} clients in {workers} process(es), {cfg.duration:g}s"
            + (" (with payment)" if cfg.pay else ""))
        book = await pool.phase(mode="book", clients=cfg.clients, duration=cfg.duration, pay=cfg.pay,
                                profile=profile, **common)
        summary = _phase_summary(book)
        say(f"bookings: {summary['bookings_per_s']}/s, p50 {summary['p50_ms']} ms, p99 {summary['p99_ms']} ms, "
            f"errors {summary['errors'] or 'none'}")

        reads: dict[str, Any] | None = None
        read_phases: list[PhaseResult] = []
        if cfg.reads:
            rd = (cfg.read_duration if cfg.read_duration is not None else cfg.duration) / 2
            pnrs = [a[0] for a in book.acked]
            random.Random(cfg.seed).shuffle(pnrs)
            for label, consistency in (("linearizable", "LINEARIZABLE"), ("stale", "STALE")):
                say(f"reads ({label}): {cfg.clients} clients, {rd:g}s")
                ph = await pool.phase(mode="read", label=label, clients=cfg.clients, duration=rd,
                                      consistency=consistency, pnrs=pnrs[:READ_PNRS_MAX], **common)
                read_phases.append(ph)
            reads = _read_summary(read_phases)
            say(f"reads: {reads['reads_per_s']}/s (linearizable {reads['linearizable']['reads_per_s']}/s, "
                f"stale {reads['stale']['reads_per_s']}/s)")

        single = None
        single_ph = None
        if cfg.single:
            sd = max(3.0, cfg.duration / 4)
            say(f"single client: {sd:g}s")
            single_ph = await pool.phase(mode="book", label="single", clients=1, duration=sd, **common)
            s = _phase_summary(single_ph)
            single = {k: s[k] for k in ("bookings_per_s", "p50_ms", "p95_ms", "p99_ms", "max_ms", "errors")}

        pool.close()  # the load generators are done: their CPU is the checker's now

        # ---------------------------------------------------------------------------- consistency
        acked = [Acked(p, r, f, t, tuple(s)) for p, r, f, t, s in book.acked]
        paid = list(book.paid)
        if single_ph is not None:
            acked += [Acked(p, r, f, t, tuple(s)) for p, r, f, t, s in single_ph.acked]
            paid += single_ph.paid
        say(f"consistency: waiting for every node to apply the leader's commit index, then checking "
            f"{len(acked)} acknowledged bookings")
        t_check = time.monotonic()
        caught_up_problem = None
        try:
            final = await wait_caught_up(rr)
        except BenchError as e:  # a node that cannot catch up fails the check, loudly; look at what it has
            caught_up_problem = str(e)
            final = await rr.status(timeout=2.0)
        overlaps = acked_overlaps(acked)
        if local is not None:
            check = await asyncio.to_thread(check_databases, {nid: local.db_path(nid) for nid in local.ids},
                                            acked, paid, say=say)
        else:
            check = await check_remote(addresses, acked, paid)
        check["problems"] = ([caught_up_problem] if caught_up_problem else []) + overlaps[:10] + check["problems"]
        check["consistent"] = check["consistent"] and not overlaps and not caught_up_problem
        check["acked_bookings"] = len(acked)
        check["seconds"] = round(time.monotonic() - t_check, 1)

        # ---------------------------------------------------------------------------- per node costs
        pids = node_pids()
        nodes_out = []
        bookings_n = summary["bookings"]
        for n in sorted((n for n in final["nodes"] if n.get("id") is not None), key=lambda n: n["id"]):
            nid = n["id"]
            pid = pids.get(nid)
            cpu_now = proc_cpu_s(pid) if pid else None
            nodes_out.append({
                "id": nid, "address": n["address"], "role": n["role"], "pid": n.get("pid"),
                "cpu_s": book.node_cpu_s.get(nid),
                "cpu_pct": (round(book.node_cpu_s[nid] * 100 / cfg.duration, 1)
                            if book.node_cpu_s.get(nid) is not None else None),
                "cpu_ms_per_booking": (round(book.node_cpu_s[nid] * 1000 / bookings_n, 3)
                                       if book.node_cpu_s.get(nid) is not None and bookings_n else None),
                "cpu_s_total": (round(cpu_now - cpu_start[nid], 2) if cpu_now is not None
                                and cpu_start.get(nid) is not None else None),
                "peak_rss_mb": _mb(proc_status_kb(pid, "VmHWM")) if pid else None,
                "rss_mb": _mb(proc_status_kb(pid, "VmRSS")) if pid else None,
                "log_bytes": n.get("log_bytes"),
                "log_bytes_written": book.log_bytes.get(nid),
                "log_bytes_per_booking": (round(book.log_bytes[nid] / bookings_n, 1)
                                          if book.log_bytes.get(nid) is not None and bookings_n else None),
                "applied_index": n.get("applied_index"),
            })
        catch_up = None
        if cfg.catch_up and local is not None:
            try:
                catch_up = await measure_catch_up(local, rr, say)
            except BenchError as e:
                say(str(e))
                catch_up = {"error": str(e)}
        lead_row = next((n for n in nodes_out if n["role"] == "leader"), None)
        per_booking = [n["log_bytes_per_booking"] for n in nodes_out if n["log_bytes_per_booking"] is not None]

        result.update({
            "ok": True,
            "bookings_per_s": summary["bookings_per_s"],
            "holds_per_s": summary["holds_per_s"],
            "paid_bookings_per_s": summary.get("paid_bookings_per_s"),
            "reads_per_s": reads["reads_per_s"] if reads else None,
            "linearizable_reads_per_s": reads["linearizable"]["reads_per_s"] if reads else None,
            "stale_reads_per_s": reads["stale"]["reads_per_s"] if reads else None,
            "p50_ms": summary["p50_ms"], "p95_ms": summary["p95_ms"], "p99_ms": summary["p99_ms"],
            "max_ms": summary["max_ms"], "mean_ms": summary["mean_ms"],
            "errors": summary["errors"],
            "bookings": summary["bookings"], "holds_ok": summary["holds_ok"], "sold_out": summary["sold_out"],
            "pay": {k: summary[k] for k in ("paid", "paid_bookings_per_s", "pay_p50_ms", "pay_p99_ms")}
            if cfg.pay else None,
            "reads": reads,
            "single": single,
            "catch_up": catch_up,
            "consistent": check["consistent"],
            "consistency": check,
            "nodes": nodes_out,
            "log_bytes_per_booking": (lead_row or {}).get("log_bytes_per_booking")
            if lead_row and lead_row["log_bytes_per_booking"] is not None
            else (round(sum(per_booking) / len(per_booking), 1) if per_booking else None),
            "raft_entries_per_booking": round(book.commit_delta / bookings_n, 3)
            if book.commit_delta is not None and bookings_n else None,
            "loadgen": {"workers": book.workers, "cpu_s": round(book.loadgen_cpu_s, 2),
                        "cpu_ms_per_booking": round(book.loadgen_cpu_s * 1000 / max(1, len(book.kinds)), 3),
                        "pids": list(pool.pids)},
            "profile": book.profile if cfg.profile else None,
            "dataset": {"runs": len(dataset.runs), "trains": cfg.trains, "days": cfg.days, "coaches": cfg.coaches,
                        "seats": cfg.seats, "first_date": start_date, "load_s": round(dataset.seconds, 1),
                        "customers": len(dataset.tokens)},
            "config": {"clients": cfg.clients, "duration_s": cfg.duration, "workers": workers, "pay": cfg.pay,
                       "writes": "spread" if spread_for(cfg.writes, cfg.clients, cfg.batch) else "leader",
                       "batch": cfg.batch,
                       "reads": cfg.reads, "preload": cfg.preload, "seed": cfg.seed, "warmup_s": cfg.warmup,
                       "target": "nodes" if cfg.nodes else "local", "addresses": addresses,
                       "snapshot_entries": cfg.snapshot_entries if cfg.nodes is None else None,
                       "tick_ms": cfg.tick_ms if cfg.nodes is None else None},
            "machine": {"cpus": os.cpu_count(), "loadavg_before": [round(x, 2) for x in loadavg0],
                        "loadavg_after": [round(x, 2) for x in os.getloadavg()],
                        # During the booking window: CPU seconds the whole machine was busy, and how much of
                        # that was neither the nodes nor the load generator (other work on a shared machine).
                        "busy_cpu_s": book.machine_busy_s, "available_cpu_s": book.machine_cpus_s,
                        "bench_cpu_s": book.parent_cpu_s,
                        "profiler_cpu_s": (book.profile or {}).get("cpu_s"),
                        "other_cpu_s": round(book.machine_busy_s - book.loadgen_cpu_s - (book.parent_cpu_s or 0)
                                             - ((book.profile or {}).get("cpu_s") or 0)
                                             - sum(v for v in book.node_cpu_s.values() if v is not None), 2)
                        if book.machine_busy_s is not None and local is not None else None},
            "command": cfg.command,
            "data_dir": str(local.root) if local is not None else None,
        })
        if not check["consistent"]:
            keep_dir = True
        result["seconds"] = round(time.monotonic() - t_begin, 1)
        return result, (0 if check["consistent"] else 1)
    except BenchError as e:
        keep_dir = True  # the node logs say why
        result.update({"ok": False, "error": str(e), "consistent": None})
        return result, 3
    except Exception as e:  # noqa: BLE001 - one JSON object (and a clean-up) whatever went wrong
        keep_dir = True
        traceback.print_exc()
        result.update({"ok": False, "error": f"{type(e).__name__}: {e}", "consistent": None})
        return result, 3
    finally:
        if pool is not None:
            pool.close()
        if rr is not None:
            rr.close()
        if local is not None:
            notes = local.stop()
            for note in notes:
                say(note)
            result["node_pids"] = sorted(local.pids().values())
            left = [pid for pid in local.pids().values() if pid_alive(pid)]
            if left:
                say(f"WARNING: node processes still alive: {left}")
            if tmp is not None and not keep_dir:
                shutil.rmtree(tmp, ignore_errors=True)
                result["data_dir"] = None
            elif tmp is not None or cfg.data_dir:
                say(f"cluster data kept in {local.root}")


def run_bench(cfg: BenchConfig, say: Callable[[str], None] = _say) -> tuple[dict[str, Any], int]:
    """Run the whole benchmark; (result dict, exit code).  SIGINT/SIGTERM stop it (KeyboardInterrupt) after
    stopping every process it started."""

    async def main() -> tuple[dict[str, Any], int]:
        loop = asyncio.get_running_loop()
        task = asyncio.current_task()
        assert task is not None
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        return await _run(cfg, say)

    from .client import run as client_run

    try:
        return client_run(main())
    except asyncio.CancelledError:
        raise KeyboardInterrupt from None


# ============================================================================================ report


def _fmt(v: Any, unit: str = "") -> str:
    if v is None:
        return "n/a"
    if isinstance(v, float):
        return f"{v:,.1f}{unit}" if abs(v) >= 100 else f"{v:.2f}{unit}"
    return f"{v:,}{unit}" if isinstance(v, int) else f"{v}{unit}"


def format_report(r: dict[str, Any]) -> str:
    """The readable report of a finished run."""
    if not r.get("ok"):
        return f"railraft bench: FAILED: {r.get('error')}"
    c, d = r["config"], r["dataset"]
    lines = [
        f"railraft bench  ({r['command']})",
        f"  target      {'fresh local cluster' if c['target'] == 'local' else 'cluster at ' + ', '.join(c['addresses'])}"
        f", {len(r['nodes'])} nodes; {d['runs']} runs ({d['trains']} trains x {d['days']} days, "
        f"{d['coaches']} coaches x {d['seats']} seats), dataset loaded in {d['load_s']}s",
    ]
    if r.get("preload"):
        p = r["preload"]
        lines.append(f"  preload     {p['bookings']:,} paid bookings stored first ({p['mode']}, {p['seconds']}s)")
    lines += [
        f"  load        {c['clients']} closed-loop clients in {c['workers']} process(es), {c['duration_s']:g}s "
        f"(+{c['warmup_s']:g}s warm-up), bookings sent "
        f"{'to every node in turn' if c.get('writes') == 'spread' else 'to the leader'}; load generator used {r['loadgen']['cpu_s']}s CPU "
        f"({r['loadgen']['cpu_ms_per_booking']} ms per booking call)",
        "",
        f"  bookings    {_fmt(r['bookings_per_s'])}/s committed ({r['bookings']:,}: {r['holds_ok']:,} held, "
        f"{r['sold_out']:,} sold out)",
        f"  latency     p50 {_fmt(r['p50_ms'])} ms   p95 {_fmt(r['p95_ms'])}   p99 {_fmt(r['p99_ms'])}   "
        f"max {_fmt(r['max_ms'])}",
    ]
    if r.get("pay"):
        p = r["pay"]
        lines.append(f"  paid        {_fmt(p['paid_bookings_per_s'])}/s ({p['paid']:,}); pay p50 "
                     f"{_fmt(p['pay_p50_ms'])} ms, p99 {_fmt(p['pay_p99_ms'])} ms")
    errs = r["errors"]
    lines.append("  errors      " + (", ".join(f"{k}: {v}" for k, v in errs.items()) if errs else "none"))
    if r.get("reads"):
        rd = r["reads"]
        lines.append(f"  reads       {_fmt(rd['reads_per_s'])}/s overall")
        for name in ("linearizable", "stale"):
            x = rd[name]
            lines.append(f"    {name:<13}{_fmt(x['reads_per_s'])}/s  p50 {_fmt(x['p50_ms'])} ms  p99 "
                         f"{_fmt(x['p99_ms'])} ms   (p99: search {_fmt(x['search']['p99_ms'])}, seat map "
                         f"{_fmt(x['seat_map']['p99_ms'])}, PNR {_fmt(x['pnr_status']['p99_ms'])} ms; "
                         f"node CPU {_fmt(x['node_cpu_ms_per_read'])} ms/read)")
        if rd["errors"]:
            lines.append("    errors    " + ", ".join(f"{k}: {v}" for k, v in rd["errors"].items()))
    if r.get("catch_up"):
        cu = r["catch_up"]
        lines.append(f"  catch-up    {cu['error']}" if "error" in cu else
                     f"  catch-up    a new node applied index {cu['target_index']:,} in {cu['seconds']}s "
                     f"({'by snapshot' if cu['by_snapshot'] else 'from the log'}; database {cu['db_mb']} MB, "
                     f"peak RSS {cu['peak_rss_mb']} MB)")
    if r.get("single"):
        s = r["single"]
        lines.append(f"  1 client    {_fmt(s['bookings_per_s'])}/s, p50 {_fmt(s['p50_ms'])} ms, p99 "
                     f"{_fmt(s['p99_ms'])} ms")
    lines += ["", "  node  role       cpu s (bookings)  % of a core  cpu ms/booking  cpu s (all)  peak RSS MB  "
                  "log B/booking"]
    for n in r["nodes"]:
        lines.append(f"  {n['id']:<5} {n['role']:<10} {_fmt(n['cpu_s']):>16}  {_fmt(n['cpu_pct']):>11}  "
                     f"{_fmt(n['cpu_ms_per_booking']):>14}  {_fmt(n['cpu_s_total']):>11}  "
                     f"{_fmt(n['peak_rss_mb']):>11}  {_fmt(n['log_bytes_per_booking']):>13}")
    if r.get("raft_entries_per_booking") is not None:
        lines.append(f"  Raft entries committed per booking: {r['raft_entries_per_booking']}")
    if r.get("profile"):
        p = r["profile"]
        lines.append(f"  profile     {'flame graph of the leader: ' + p['path'] if p.get('ok') else 'FAILED: ' + str(p.get('error'))}")
    ch = r["consistency"]
    lines.append("")
    if ch["consistent"]:
        ident = {True: "; databases identical", None: "", False: ""}[ch.get("identical")]
        lines.append(f"  consistent  yes: {ch['acked_bookings']:,} acknowledged bookings on every node with their "
                     f"seats; no seat sold twice{ident} (checked in {ch['seconds']}s)")
    else:
        lines.append("  CONSISTENCY CHECK FAILED")
        lines += [f"    {p}" for p in ch["problems"][:30]]
    m = r["machine"]
    busy = ""
    if m.get("busy_cpu_s") is not None and m.get("available_cpu_s"):
        busy = (f"; during the bookings the machine was {m['busy_cpu_s'] * 100 / m['available_cpu_s']:.0f}% busy"
                + (f", {m['other_cpu_s']:.1f} CPU s of it other processes" if m.get("other_cpu_s") is not None
                   else ""))
    lines.append(f"  machine     {m['cpus']} CPUs, load average {m['loadavg_before'][0]} before, "
                 f"{m['loadavg_after'][0]} after{busy}")
    lines.append("              (the cluster and the load generator share these CPUs: throughput is indicative)")
    return "\n".join(lines)


# ============================================================================================ CLI


def add_bench_command(sub: Any) -> argparse.ArgumentParser:
    """Register `railraft bench` on the CLI's subparsers."""
    p = sub.add_parser("bench", help="benchmark a fresh local cluster (or --nodes): bookings, reads, consistency",
                       description=__doc__.split("\n\n")[0])
    p.add_argument("--duration", type=float, default=DEFAULT_DURATION_S, metavar="S",
                   help=f"seconds of booking load (default {DEFAULT_DURATION_S:g})")
    p.add_argument("--clients", type=int, default=DEFAULT_CLIENTS, metavar="C",
                   help=f"concurrent closed-loop clients (default {DEFAULT_CLIENTS})")
    p.add_argument("--workers", type=int, default=None, metavar="W",
                   help="load-generator processes (default 1; 2 with --no-batch and more than 4 clients)")
    p.add_argument("--nodes", metavar="HOST:PORT,...", help="benchmark this running cluster instead of a fresh one")
    p.add_argument("--admin-user", default=os.environ.get("RAILRAFT_ADMIN_USER", "admin"),
                   help="with --nodes: the administrator (default admin)")
    p.add_argument("--admin-password", default=None,
                   help="with --nodes: the administrator's password (default: RAILRAFT_ADMIN_PASSWORD)")
    p.add_argument("--no-reads", action="store_true", help="skip the read phase")
    p.add_argument("--writes", choices=("auto", "spread", "leader"), default="auto",
                   help="where clients send bookings: spread = every node in turn (followers forward them to the "
                        "leader, so serving the calls is shared by the whole cluster), leader = the leader only "
                        "(one hop less: quicker for a single client).  auto (default): leader, or spread when a "
                        "phase has more than one client and --no-batch is given")
    p.add_argument("--spread-writes", dest="writes", action="store_const", const="spread",
                   help="the same as --writes spread")
    p.add_argument("--leader-writes", dest="writes", action="store_const", const="leader",
                   help="the same as --writes leader")
    p.add_argument("--no-batch", action="store_true",
                   help="every call on its own round trip: the client library's batching off (calls made "
                        "together to one node otherwise travel in one Booking/Batch)")
    p.add_argument("--read-duration", type=float, default=None, metavar="S",
                   help="seconds of reads, half linearizable, half stale (default: --duration)")
    p.add_argument("--pay", action="store_true", help="pay every successful hold")
    p.add_argument("--single", action="store_true", help="also measure one client alone (latency without queueing)")
    p.add_argument("--catch-up", action="store_true",
                   help="at the end, add a new empty node to the (fresh, local) cluster and time its catch-up "
                        "(by snapshot once the log is compacted)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--profile", action="store_true", help="py-spy flame graph of the leader during the bookings")
    p.add_argument("--profile-out", default="bench-flame.svg", metavar="PATH",
                   help="where --profile writes (default bench-flame.svg; .txt: collapsed stacks, .json: speedscope)")
    p.add_argument("--trains", type=int, default=DEFAULT_TRAINS, metavar="N")
    p.add_argument("--days", type=int, default=DEFAULT_DAYS, metavar="N", help="days of runs from tomorrow")
    p.add_argument("--coaches", type=int, default=DEFAULT_COACHES, metavar="N")
    p.add_argument("--seats", type=int, default=DEFAULT_SEATS, metavar="N", help="seats per coach")
    p.add_argument("--seed", type=int, default=1, help="seed of the clients' random choices (default 1)")
    p.add_argument("--data-dir", default=None, metavar="DIR",
                   help="where the fresh cluster lives (must be empty or new; kept afterwards). Default: a "
                        "temporary directory, removed afterwards (kept if the check fails)")
    p.add_argument("--keep", action="store_true", help="keep the temporary data directory")
    p.add_argument("--preload", type=int, default=0, metavar="N", help="store N paid bookings before measuring")
    p.add_argument("--preload-mode", choices=("auto", "api", "snapshot"), default="auto",
                   help="api: through the client library; snapshot: build the database offline and start every "
                        f"node from it as a Raft snapshot (auto: snapshot from {SNAPSHOT_PRELOAD_MIN:,} bookings "
                        "on a fresh local cluster)")
    p.add_argument("--warmup", type=float, default=WARMUP_S, metavar="S", help="unmeasured seconds before each phase")
    p.add_argument("--snapshot-entries", type=int, default=10000, metavar="N",
                   help="the fresh cluster's snapshot interval (default 10000, as cluster up)")
    p.add_argument("--tick-ms", type=int, default=50, metavar="MS",
                   help="the fresh cluster's Raft tick (default 50, as cluster up)")
    p.add_argument("--users", type=int, default=None, metavar="N",
                   help=f"customers the clients book as (default min(clients, {USERS_MAX}))")
    p.set_defaults(func=_cmd_bench)
    return p


def _cmd_bench(args: argparse.Namespace) -> int:
    from .client import parse_addresses

    try:
        if args.duration <= 0 or args.clients < 1 or (args.workers is not None and args.workers < 1):
            raise ValueError("--duration must be > 0, --clients and --workers >= 1")
        if args.trains < 1 or args.days < 1 or args.coaches < 1 or args.seats < 1 or args.preload < 0:
            raise ValueError("--trains, --days, --coaches, --seats must be >= 1 and --preload >= 0")
        if args.catch_up and args.nodes:
            raise ValueError("--catch-up adds a node to a cluster the bench started; it cannot be used with --nodes")
        cfg = BenchConfig(
            duration=args.duration, clients=args.clients, workers=args.workers, writes=args.writes, batch=not args.no_batch,
            nodes=parse_addresses(args.nodes) if args.nodes else None, reads=not args.no_reads,
            read_duration=args.read_duration, pay=args.pay, single=args.single, catch_up=args.catch_up, json=args.json,
            profile=args.profile, profile_out=args.profile_out, trains=args.trains, days=args.days,
            coaches=args.coaches, seats=args.seats, seed=args.seed, data_dir=args.data_dir, keep=args.keep,
            preload=args.preload, preload_mode=args.preload_mode, warmup=max(0.0, args.warmup),
            snapshot_entries=args.snapshot_entries, tick_ms=args.tick_ms, admin_user=args.admin_user,
            admin_password=args.admin_password,
            users=args.users, command="railraft " + shlex.join(sys.argv[1:]) if sys.argv[1:2] == ["bench"]
            else "railraft bench",
        )
    except ValueError as e:
        print(f"railraft bench: {e}", file=sys.stderr)
        return 2
    try:
        result, code = run_bench(cfg)
    except KeyboardInterrupt:
        print("railraft bench: interrupted", file=sys.stderr)
        return 130
    if cfg.json:
        print(json.dumps(result, sort_keys=True))
    else:
        print(format_report(result))
    if code == 1:
        print("railraft bench: INCONSISTENT -- the consistency check failed (see above); data kept in "
              f"{result.get('data_dir') or 'the target cluster'}", file=sys.stderr)
    elif code == 3:
        print(f"railraft bench: {result.get('error')}", file=sys.stderr)
    return code


__all__ = [
    "add_bench_command", "run_bench", "BenchConfig", "check_databases", "double_sold", "acked_overlaps",
    "check_acked_in_db", "database_digest", "Acked", "percentile", "latency_summary", "format_report",
    "build_preloaded_state",
]
