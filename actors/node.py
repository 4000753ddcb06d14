"""One railraft node: the Raft core driven by a tree of supervised Trio actors.

    node (nursery)
     ├─ consensus      owns raft.RaftCore; one inbox; turns each Ready into work for the others
     ├─ election timer ticks -> consensus inbox
     ├─ log writer     persists Readys (one fsync per batch), then reports Persisted so acks can go
     ├─ replicator xN  one per peer: moves batches of messages and streams snapshots
     ├─ applier        applies committed entries in order through the DB writer, answers waiting proposers
     │                 with THEIR result and releases reads once applied >= read index
     └─ DB writer      the single aiosqlite writer (store.db.Database), one transaction per applied batch

Only one Ready is outstanding at a time: while the log writer fsyncs, the consensus actor keeps stepping
messages and proposals into the core, so the next Ready carries all of them (group commit).  Messages that
promise nothing durable (appends, heartbeats, vote requests) leave at once through `take_messages`.

The public methods (`propose`, `read_barrier`, `status`, `change_membership`, `transfer_leadership`) are
what the gateway services call.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import logging
import os
import random
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from raft.core import Config as RaftConfig
from raft.core import RaftCore, bootstrap_entries
from raft.filestorage import FileStorage
from raft.storage import LogStorage, needs_hard_state_write, StorageClosedError
from raft.types import (
    NONE,
    ConfChange,
    Entry,
    EntryType,
    Message,
    MsgType,
    NotLeader,
    RaftError,
    Ready,
    Role,
    Snapshot,

)

from store import queries
from store.db import DatabaseClosedError
from store.commands import SetMember, decode_command

from .messages import (
    ApplyEntries,
    Call,
    ChangeMembership,
    CompactLog,
    Inbound,
    InstallSnapshot,
    Persisted,
    PersistReady,
    Propose,
    ReadBarrier,
    Reply,
    SnapshotTaken,
    Tick,
    TransferLeadership,
)
from .supervisor import ActorCrashInjector, ActorSpec, RestartPolicy, supervise
from .transport import LinkFactory, PeerLink, PeerUnavailable

log = logging.getLogger("railraft.node")

INBOX_SIZE = 4096
PEER_QUEUE = 8192
BATCH_MAX = 512
DISK_RETRY_S = 0.5  # how often a write the disk refused (full, failing) is tried again
# Snapshots of a database this big or bigger wait until the log since the last one is 1/SNAPSHOT_COPY_RATIO
# of its size (Node._snapshot_due); smaller ones take a moment to copy and follow snapshot_entries alone.
SNAPSHOT_SMALL_BYTES = 64 * 1024 * 1024
SNAPSHOT_COPY_RATIO = 8
# A log save (write + fsync) of a Ready runs on the Trio thread while the disk takes it quickly -- a moving
# average under INLINE_SAVE_S: a thread hop costs more CPU here than the fsync itself, and a node under load
# is CPU-bound.  When the average gets slower, the next SLOW_SAVE_BACKOFF saves go to a worker thread (then it
# tries again), so a slow or failing disk never stalls heartbeats and reads for long.
INLINE_SAVE_S = 0.005
SLOW_SAVE_BACKOFF = 200
# How a SetMember command's JSON names its type (see _after_apply_hooks).
_SET_MEMBER_TAG = b'"t":"set_member"'


class NotLeaderError(Exception):
    """This node cannot serve the request; `leader_id`/`leader_addr` hint at who can (0/"" = unknown)."""

    def __init__(self, leader_id: int, leader_addr: str, what: str = "not the leader") -> None:
        super().__init__(f"{what} (leader: {leader_addr or 'unknown'})")
        self.leader_id = leader_id
        self.leader_addr = leader_addr


class ProposalLost(Exception):
    """The entry was not committed at its index (leadership changed); retrying with the same request id is safe."""


class NodeStopping(Exception):
    """The node is shutting down and takes no new requests."""


class DiskError(TimeoutError):
    """This node cannot persist right now (disk full or failing), so it refuses writes and linearizable reads.

    A TimeoutError, so the gateway answers UNAVAILABLE with this message and clients move on to another node.
    Raised before a new write is proposed, and to the callers already waiting when the disk trouble began
    (their write's fate is unknown to them, as after a timeout; a retry elsewhere is exactly-once).
    """


@dataclass
class NodeSettings:
    """What one node needs to run."""

    id: int
    cluster_id: str
    data_dir: Path
    host: str
    port: int
    peers: dict[int, tuple[str, int]]  # every node's address we know at start (may include ourselves)
    initial_voters: list[int]  # founding members; empty when joining an existing cluster
    tick_ms: int = 50
    election_ticks: int = 10
    heartbeat_ticks: int = 1
    snapshot_entries: int = 10000
    seed: int | None = None
    restart_policy: RestartPolicy = RestartPolicy()
    # Where to connect to some peers instead of their address (cluster.toml `dial`: a proxy, in fault tests).
    dial: dict[int, tuple[str, int]] = field(default_factory=dict)

    @property
    def db_path(self) -> Path:
        """The node's SQLite file, named as in the original system."""
        return self.data_dir / f"Node{self.id}TicketBooking.db"

    @property
    def raft_dir(self) -> Path:
        """Raft log segments and the term/vote file."""
        return self.data_dir / "raft"

    @property
    def snapshot_dir(self) -> Path:
        """State-machine snapshots (SQLite copies)."""
        return self.data_dir / "snapshots"


class NodeObserver:
    """Hooks the node calls on its hot paths, once per batch (never per entry); these defaults do nothing.

    gateway.metrics.NodeMetrics overrides them to feed Prometheus.  `persisted` runs on the log writer's
    I/O thread (it times the fsync itself), everything else on the Trio thread.
    """

    def proposed(self, entries: int) -> None:
        """The leader appended `entries` client commands to its log."""

    def persisted(self, seconds: float, entries: int) -> None:
        """One durable write of a Ready (entries, term/vote, snapshot meta) with its fsync took `seconds`."""

    def applied(self, seconds: float, entries: int) -> None:
        """One batch of `entries` committed entries went through the state machine in `seconds`."""

    def checkpointed(self, seconds: float) -> None:
        """The database copied its WAL into its main file, which held up applies for `seconds`."""

    def peer_error(self, peer: int) -> None:
        """A send to `peer` failed (unreachable, RPC error)."""

    def snapshot(self, kind: str, size: int) -> None:
        """A snapshot of `size` bytes was `taken`, `sent` or `installed`."""

    def leader_changed(self, leader: int) -> None:
        """This node learned of a new leader."""


NO_OBSERVER = NodeObserver()


@dataclass
class _Waiter:
    term: int
    reply: Reply = field(default_factory=Reply)


class Node:
    """A running node.  Create it, then `await nursery.start(node.run)`."""

    def __init__(
        self,
        settings: NodeSettings,
        db: Any,
        link_factory: LinkFactory,
        storage: LogStorage | None = None,
        crash_injector: ActorCrashInjector | None = None,
        on_apply: Callable[[list[tuple[Entry, Any]]], None] | None = None,
        inline_io: bool = False,
        metrics: NodeObserver | None = None,
    ) -> None:
        self.s = settings
        self.id = settings.id
        self.db = db
        self.link_factory = link_factory
        self.storage = storage if storage is not None else FileStorage(settings.raft_dir)
        self.crash = crash_injector or ActorCrashInjector()
        self.on_apply = on_apply
        # Tests with in-memory storage and Trio's mock clock run disk calls inline (no threads).
        self.inline_io = inline_io
        self._read_waiters: dict[bool, list[Reply]] = {False: [], True: []}  # read_barrier callers, by lease
        self._read_wanted = trio.Event()
        self._threaded_saves_left = 0  # > 0: the disk was slow lately, log saves go to a thread
        self._save_avg_s = 0.0  # moving average of inline log saves
        self._background: trio.Nursery | None = None  # where snapshots are taken (set by run)
        self._snapshotting = False
        self._checkpointing = False  # a WAL checkpoint is running in the background
        self.metrics = metrics if metrics is not None else NO_OBSERVER
        self.addresses: dict[int, tuple[str, int]] = dict(settings.peers)
        self.addresses[self.id] = (settings.host, settings.port)
        self.started_at = time.monotonic()
        self.stopping = False
        self.log_bytes = 0
        self.applied_index = 0
        self.snapshot_index = 0
        self.snapshot_path: Path | None = None
        self._snapshot_size: tuple[Path | None, int] = (None, 0)  # the current snapshot file and its size
        self.core: RaftCore
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.waiters: dict[int, _Waiter] = {}
        self.reads: dict[bytes, Reply] = {}
        self.read_queue: list[tuple[int, bytes]] = []
        self._ctx = itertools.count(1)
        self._ctx_prefix = os.urandom(4)
        self.peer_out: dict[int, trio.MemorySendChannel] = {}
        self.peer_scopes: dict[int, trio.CancelScope] = {}
        self.dropped_messages = 0
        # What the disk refuses right now ("log" / "db" -> why); writes are refused while it is not empty.
        self.disk_errors: dict[str, str] = {}
        self._applier_job: Any = None  # the job the applier is on, kept until done (a restart resumes it)
        # Inboxes live as long as the node, so a restarted actor resumes on the same one.
        self.consensus_in, self._consensus_rx = trio.open_memory_channel[Any](INBOX_SIZE)
        self.writer_in, self._writer_rx = trio.open_memory_channel[Any](1)
        self.applier_in, self._applier_rx = trio.open_memory_channel[Any](64)
        self._pending_apply: list[ApplyEntries] = []
        self._pending_writer: list[CompactLog] = []
        self._conf_index = -1
        self._peer_nursery: trio.Nursery | None = None

    # ================= lifecycle =================
    def _recover(self) -> None:
        rec = self.storage.load()
        for line in rec.report:
            # Repairs (a truncated torn tail) deserve attention; the routine summary does not.
            level = logging.WARNING if "truncat" in line or "remov" in line else logging.INFO
            log.log(level, "node %d: log recovery: %s", self.id, line)
        hs, snap, entries = rec.hard_state, rec.snapshot, rec.entries
        if hs.term == 0 and not entries and snap.index == 0 and self.s.initial_voters:
            if self.id not in self.s.initial_voters:
                raise RuntimeError(f"node {self.id} is not one of the founding voters {self.s.initial_voters}")
            hs, entries = bootstrap_entries(self.s.initial_voters)
            self.storage.save(hard_state=hs, entries=entries)
            log.info("node %d: bootstrapped a new cluster with voters %s", self.id, self.s.initial_voters)
        self.snapshot_index = snap.index
        self._recovered = (hs, snap, entries)
        self._written_hard_state = hs  # the hard state on disk; the log writer skips commit-only changes

    async def _open_state_machine(self) -> None:
        hs, snap, entries = self._recovered
        self.s.snapshot_dir.mkdir(parents=True, exist_ok=True)
        latest = self._latest_snapshot_file()
        applied = await self.db.applied_index()
        if snap.index > applied:
            # The database is older than the log's snapshot (e.g. deleted): restore it from the snapshot file.
            if latest is None or latest[0] < snap.index:
                raise RuntimeError(
                    f"node {self.id}: the log starts after index {snap.index} but the database is at {applied} "
                    "and no snapshot file covers the gap"
                )
            applied = await self.db.install_snapshot(latest[1])
            log.warning("node %d: restored the database from snapshot %s", self.id, latest[1])
        if latest is not None:
            self.snapshot_path = latest[1]
        self.applied_index = applied
        await self._load_address_book()
        self.core = RaftCore(
            RaftConfig(
                self.id,
                election_tick=self.s.election_ticks,
                heartbeat_tick=self.s.heartbeat_ticks,
            ),
            random.Random(self.s.seed),
            hs,
            snap,
            entries,
            applied=applied,
        )

    def _latest_snapshot_file(self) -> tuple[int, Path] | None:
        best: tuple[int, Path] | None = None
        for p in self.s.snapshot_dir.glob("snap-*.db"):
            try:
                idx = int(p.stem.split("-")[1])
            except (IndexError, ValueError):
                continue
            if best is None or idx > best[0]:
                best = (idx, p)
        return best

    async def run(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Run every actor until cancelled (or until one escalates)."""
        self.s.data_dir.mkdir(parents=True, exist_ok=True)
        await self._io(self._recover)
        await self._open_state_machine()
        policy = self.s.restart_policy
        try:
            async with trio.open_nursery() as nursery:
                await nursery.start(supervise, ActorSpec("db-writer+applier", self._applier, policy))
                await nursery.start(supervise, ActorSpec("log-writer", self._log_writer, policy))
                await nursery.start(supervise, ActorSpec("consensus", self._consensus, policy))
                await nursery.start(supervise, ActorSpec("election-timer", self._ticker, policy))
                await nursery.start(supervise, ActorSpec("read-rounds", self._read_rounds, policy))
                self._peer_nursery = await nursery.start(self._peer_supervisor)
                self._background = nursery
                self._sync_replicators()
                log.info(
                    "node %d up: %s:%d, term %d, applied %d, voters %s",
                    self.id, self.s.host, self.s.port, self.core.term, self.applied_index,
                    sorted(self.core.conf().voters),
                )
                task_status.started()
        finally:
            with trio.CancelScope(shield=True):
                await self._close()

    async def _close(self) -> None:
        for reply in self._read_replies():
            reply.fail(NodeStopping("node stopping"))
        for w in self.waiters.values():
            w.reply.fail(NodeStopping("node stopping"))
        try:
            await self._io(self.storage.close)
        except Exception:  # noqa: BLE001 - closing is best effort; the log is fsynced already
            log.exception("closing the Raft log")

    async def _peer_supervisor(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        async with trio.open_nursery() as n:
            task_status.started(n)
            await trio.sleep_forever()

    async def _io(self, fn: Callable[..., Any], *args: Any) -> Any:
        """Run blocking file work (fsync, copies) off the Trio thread -- or inline for in-memory tests."""
        if self.inline_io:
            await trio.lowlevel.checkpoint()
            return fn(*args)
        return await trio.to_thread.run_sync(fn, *args)

    # ================= public API (gateway) =================
    def leader_address(self) -> str:
        """host:port of the leader as far as we know ("" if unknown)."""
        addr = self.addresses.get(self.leader)
        return f"{addr[0]}:{addr[1]}" if addr and self.leader != NONE else ""

    @property
    def term(self) -> int:
        """The current term (0 before the node has started)."""
        return self.core.term if hasattr(self, "core") else 0

    def is_leader(self) -> bool:
        """Does this node lead right now (as far as it knows)?"""
        return self.role == Role.LEADER

    async def propose(self, data: bytes, timeout: float | None = None) -> tuple[Any, int]:
        """Replicate a command and wait until it is applied here; returns (its apply result, index).

        Raises NotLeaderError (with a leader hint) on followers, ProposalLost if leadership changed before the
        entry committed, NodeStopping during shutdown.  The caller bounds the wait with its deadline.
        """
        return (await self.propose_many([data], timeout))[0]

    async def propose_many(self, datas: list[bytes], timeout: float | None = None) -> list[tuple[Any, int]]:
        """Several commands in one log append; results in order.  TimeoutError after `timeout` seconds."""
        outcomes = await self.propose_each(datas, timeout)
        for o in outcomes:
            if isinstance(o, BaseException):
                raise o
        return outcomes  # type: ignore[return-value]

    async def propose_each(self, datas: list[bytes], timeout: float | None = None
                           ) -> list[tuple[Any, int] | BaseException]:
        """`propose_many` for commands of different callers: one log append, and each command's own outcome --
        (result, index), or the ProposalLost / NodeStopping its wait ended with -- so one lost entry does not
        fail the others.  NotLeaderError, DiskError and TimeoutError still concern them all (raised)."""
        if self.stopping:
            raise NodeStopping("node is stopping")
        self._check_disk()
        with _deadline(timeout, "the write"):
            reply = Reply()
            await self.consensus_in.send(Propose(tuple(datas), reply))
            placed = await reply.wait()  # [(index, waiter)] or raises NotLeaderError
            out: list[tuple[Any, int] | BaseException] = []
            for index, w in placed:
                try:
                    out.append((await w.reply.wait(), index))
                except (ProposalLost, NodeStopping) as e:
                    out.append(e)
            return out

    async def read_barrier(self, lease: bool = False, timeout: float | None = None) -> int:
        """Wait until this node's state machine reflects every write committed before the call (ReadIndex).

        Works on followers too (the leader confirms the read index).  Returns the read index.  The caller
        bounds the wait; with no reachable leader it never completes.
        """
        if self.stopping:
            raise NodeStopping("node is stopping")
        self._check_disk()  # nothing more gets applied here until the disk takes writes again
        # Readers share rounds: whoever asks while a round is in flight waits for the NEXT round, which starts
        # after they asked -- so its read index covers every write committed before their call, as a round of
        # their own would -- and one ReadIndex exchange with the leader serves them all.
        reply = Reply()
        self._read_waiters[lease].append(reply)
        self._read_wanted.set()
        with _deadline(timeout, "the read"):
            return await reply.wait()

    def _read_replies(self) -> list[Reply]:
        """Every read waiting on this node: in a ReadIndex round, or for the next one."""
        return [*self.reads.values(), *self._read_waiters[False], *self._read_waiters[True]]

    async def _read_rounds(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        """Actor: one ReadIndex round at a time for all the read_barrier callers waiting for one."""
        task_status.started()
        while True:
            await self._read_wanted.wait()
            self._read_wanted = trio.Event()
            for lease in (False, True):
                waiters, self._read_waiters[lease] = self._read_waiters[lease], []
                if not any(not r.done() for r in waiters):
                    continue  # they all gave up meanwhile
                try:
                    index = await self._read_round(lease)
                except Exception as e:  # noqa: BLE001 - NodeStopping, DiskError: every waiter learns it
                    for r in waiters:
                        r.fail(e)
                    continue
                for r in waiters:
                    r.set(index)

    async def _read_round(self, lease: bool) -> int:
        """One ReadIndex round: the index this node must apply before a read started now may be served."""
        # The core drops a read request while no leader is known (or if the leader changes under it), so ask
        # again every election timeout until answered; the leader ignores a context it is already confirming.
        resend_s = max(0.1, self.s.election_ticks * self.s.tick_ms / 1000)
        with self._read_slot() as (ctx, reply):
            while True:
                await self.consensus_in.send(ReadBarrier(ctx, lease))
                with trio.move_on_after(resend_s):
                    return await reply.wait()

    async def wait_applied(self, index: int, timeout: float | None = None) -> None:
        """Wait until this node's state machine has applied log index `index` (e.g. a write's own index, so
        that a read after it sees the write).  The caller bounds the wait."""
        if self.applied_index >= index:
            return
        if self.stopping:
            raise NodeStopping("node is stopping")
        with self._read_slot() as (ctx, reply), _deadline(timeout, "the read"):
            self.read_queue.append((index, ctx))  # released by the applier, like a read index
            await reply.wait()

    @contextlib.contextmanager
    def _read_slot(self) -> Iterator[tuple[bytes, Reply]]:
        """A fresh read context and the Reply the applier sets once it may be served (`_release_reads`)."""
        ctx = self._ctx_prefix + next(self._ctx).to_bytes(8, "big")
        reply = Reply()
        self.reads[ctx] = reply
        try:
            yield ctx, reply
        finally:
            self.reads.pop(ctx, None)

    async def call(self, fn: Callable[[RaftCore], Any]) -> Any:
        """Run fn(core) inside the consensus actor (serialized with everything else)."""
        reply = Reply()
        await self.consensus_in.send(Call(fn, reply))
        return await reply.wait()

    async def change_membership(self, change: ConfChange) -> tuple[int, int]:
        """Propose a membership change on the leader; returns the CONF entry's (index, term) once applied."""
        reply = Reply()
        await self.consensus_in.send(ChangeMembership(change, reply))
        index, w = await reply.wait()
        await w.reply.wait()
        return index, w.term

    async def transfer_leadership(self, target: int) -> None:
        """Ask the leader (us) to hand over to `target`; returns at once, watch `leader` for the outcome."""
        await self.consensus_in.send(TransferLeadership(target))

    def status(self) -> dict[str, Any]:
        """A snapshot of what this node knows, for operators."""
        st = self.core.status()
        st.update(
            address=f"{self.s.host}:{self.s.port}",
            pid=os.getpid(),
            cluster_id=self.s.cluster_id,
            applied=self.applied_index,
            log_bytes=self.log_bytes,
            leader_address=self.leader_address(),
            uptime_s=time.monotonic() - self.started_at,
            members={nid: f"{h}:{p}" for nid, (h, p) in sorted(self.addresses.items())},
            dropped_messages=self.dropped_messages,
            disk_error="; ".join(self.disk_errors.values()),
        )
        return st

    def _check_disk(self) -> None:
        if self.disk_errors:
            raise DiskError(f"node {self.id}: {'; '.join(self.disk_errors.values())}; it refuses writes and "
                            "linearizable reads until that is fixed, try another node")

    def set_address(self, node_id: int, host: str, port: int) -> None:
        """Learn where a node listens (from the replicated address book)."""
        if self.addresses.get(node_id) != (host, port):
            self.addresses[node_id] = (host, port)
            if node_id in self.peer_scopes:
                self.peer_scopes.pop(node_id).cancel()
                self.peer_out.pop(node_id, None)
            self._sync_replicators()

    async def deliver(self, msgs: list[Message]) -> None:
        """Messages from the network (gateway.peer_service calls this)."""
        if msgs:
            await self.consensus_in.send(Inbound(tuple(msgs)))

    def deliver_now(self, msgs: list[Message]) -> bool:
        """`deliver` without waiting: False if the consensus inbox is full (then `await deliver(msgs)`).
        For callers already on the Trio thread that cannot await Trio here (gateway.peer_service's asyncio
        side, which runs inside a Trio task): it saves them a hop into Trio per batch."""
        if msgs:
            try:
                self.consensus_in.send_nowait(Inbound(tuple(msgs)))
            except trio.WouldBlock:
                return False
        return True

    async def receive_snapshot(self, msg: Message, path: Path) -> bool:
        """A complete snapshot file arrived: hand it to consensus (it decides whether to install it)."""
        assert msg.snapshot is not None
        dest = self.s.snapshot_dir / f"recv-{msg.snapshot.meta.index}-{os.urandom(4).hex()}.db"
        await self._io(shutil.move, str(path), str(dest))
        m = Message(
            MsgType.SNAP, msg.to, msg.frm, msg.term, msg.log_term, msg.index, (), msg.commit, False, 0,
            Snapshot(msg.snapshot.meta, dest), msg.context,
        )
        await self.consensus_in.send(Inbound((m,)))
        return True

    # ================= actors =================
    async def _ticker(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        period = self.s.tick_ms / 1000
        nxt = trio.current_time()
        while True:
            nxt += period
            await trio.sleep_until(nxt)
            self.crash.maybe_crash("election-timer")
            await self.consensus_in.send(Tick())

    async def _consensus(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        rx = self._consensus_rx
        while True:
            first = await rx.receive()
            batch = [first]
            for _ in range(BATCH_MAX):
                try:
                    batch.append(rx.receive_nowait())
                except trio.WouldBlock:
                    break
            for item in batch:
                self.crash.maybe_crash("consensus")
                self._handle(item)
            await self._after_step()

    def _handle(self, item: Any) -> None:
        core = self.core
        if isinstance(item, Inbound):
            for m in item.msgs:
                core.step(m)
        elif isinstance(item, Tick):
            core.tick()
        elif isinstance(item, Propose):
            try:
                indexes = core.propose_many(list(item.datas))
            except NotLeader as e:
                item.reply.fail(NotLeaderError(e.leader, self._addr(e.leader)))
                return
            except RaftError as e:
                item.reply.fail(NotLeaderError(core.leader, self._addr(core.leader), str(e)))
                return
            self.metrics.proposed(len(indexes))
            placed = []
            for i in indexes:
                w = self.waiters[i] = _Waiter(core.term)
                placed.append((i, w))
            item.reply.set(placed)
        elif isinstance(item, ReadBarrier):
            core.read_index(item.ctx, lease=item.lease)
        elif isinstance(item, ChangeMembership):
            try:
                index = core.propose_conf_change(item.change)
            except NotLeader as e:
                item.reply.fail(NotLeaderError(e.leader, self._addr(e.leader)))
                return
            except RaftError as e:
                item.reply.fail(e)
                return
            w = self.waiters[index] = _Waiter(core.term)
            item.reply.set((index, w))
            self._sync_replicators()
        elif isinstance(item, TransferLeadership):
            core.transfer_leadership(item.target)
        elif isinstance(item, Persisted):
            rd = item.ready
            self._route(rd.persist_messages)
            core.advance(rd)
        elif isinstance(item, SnapshotTaken):
            if item.index > core.log.snap.index:
                meta = core.compact(item.index)
                self._pending_writer.append(CompactLog(meta))
                self.snapshot_path = item.path
        elif isinstance(item, Call):
            try:
                item.reply.set(item.fn(core))
            except Exception as e:  # noqa: BLE001 - the caller gets the error
                item.reply.fail(e)
        else:  # pragma: no cover
            log.error("consensus: unknown message %r", item)

    async def _after_step(self) -> None:
        core = self.core
        if core.log.conf_index() != self._conf_index:
            self._conf_index = core.log.conf_index()
            self._sync_replicators()
        self._route(core.take_messages())
        for job in self._pending_writer:
            await self.writer_in.send(job)
        self._pending_writer.clear()
        if core.has_ready():  # False while a Ready is still being persisted
            rd = core.ready()
            if rd.soft_state is not None:
                self._on_soft_state(rd.soft_state.leader, rd.soft_state.role)
            self._route(rd.messages)
            if rd.committed_entries or rd.read_states:
                # Applied now, while the log writer persists the rest of this Ready: the core hands out only
                # entries that are committed AND already on this node's disk, so nothing here waits for this
                # Ready's own writes (etcd applies in parallel the same way).  A commit index the database
                # gets ahead of is fine on restart: RaftLog takes max(commit on disk, applied).
                # Bounded: if the applier lags, consensus waits below (backpressure).
                self._pending_apply.append(ApplyEntries(tuple(rd.committed_entries), tuple(rd.read_states)))
            await self.writer_in.send(PersistReady(rd))
        for job in self._pending_apply:
            await self.applier_in.send(job)
        self._pending_apply.clear()

    def _on_soft_state(self, leader: int, role: Role) -> None:
        if leader != self.leader:
            log.info("node %d: term %d leader is now %s", self.id, self.core.term, leader or "unknown")
            if leader != NONE:
                self.metrics.leader_changed(leader)
        was_leader = self.role == Role.LEADER
        self.leader, self.role = leader, role
        if was_leader and role != Role.LEADER:
            log.info("node %d stepped down in term %d", self.id, self.core.term)
        self._sync_replicators()

    def _addr(self, node_id: int) -> str:
        a = self.addresses.get(node_id)
        return f"{a[0]}:{a[1]}" if a and node_id != NONE else ""

    def _route(self, msgs: list[Message]) -> None:
        for m in msgs:
            ch = self.peer_out.get(m.to)
            if ch is None:
                self._sync_replicators()
                ch = self.peer_out.get(m.to)
                if ch is None:
                    self.dropped_messages += 1  # no address for that node yet: Raft will retry
                    continue
            try:
                ch.send_nowait(m)
            except trio.WouldBlock:
                self.dropped_messages += 1  # a slow peer: dropping is safe, Raft retransmits

    def _sync_replicators(self) -> None:
        """One replicator per member we know an address for; stop those for removed nodes."""
        if self._peer_nursery is None or not hasattr(self, "core"):
            return
        wanted = {n for n in self.core.conf().members() if n != self.id}
        # The leader hint may name a node we must answer (e.g. while joining): talk to it too.
        if self.core.leader not in (NONE, self.id):
            wanted.add(self.core.leader)
        for nid in wanted:
            if nid in self.peer_out or nid not in self.addresses:
                continue
            send, recv = trio.open_memory_channel[Message](PEER_QUEUE)
            scope = trio.CancelScope()
            self.peer_out[nid] = send
            self.peer_scopes[nid] = scope
            host, port = self.addresses[nid]
            self._peer_nursery.start_soon(self._run_replicator, nid, host, port, recv, scope)
        for nid in list(self.peer_out):
            if nid not in wanted:
                self.peer_out.pop(nid)
                self.peer_scopes.pop(nid).cancel()

    async def _run_replicator(
        self, peer: int, host: str, port: int, recv: trio.MemoryReceiveChannel, scope: trio.CancelScope
    ) -> None:
        link = self.link_factory(peer, host, port)
        name = f"replicator-{peer}"
        try:
            with scope:
                await supervise(
                    ActorSpec(name, lambda task_status: self._replicator(peer, link, recv, task_status),
                              self.s.restart_policy)
                )
        finally:
            with trio.CancelScope(shield=True):
                await link.close()

    async def _replicator(
        self, peer: int, link: PeerLink, recv: trio.MemoryReceiveChannel, task_status: Any
    ) -> None:
        task_status.started()
        name = f"replicator-{peer}"
        backoff = 0.02
        while True:
            first = await recv.receive()
            batch = [first]
            for _ in range(BATCH_MAX):
                try:
                    batch.append(recv.receive_nowait())
                except trio.WouldBlock:
                    break
            self.crash.maybe_crash(name)
            plain = [m for m in batch if m.type != MsgType.SNAP]
            snaps = [m for m in batch if m.type == MsgType.SNAP]
            try:
                if plain:
                    await link.send(plain)
                backoff = 0.02
            except PeerUnavailable:
                self.metrics.peer_error(peer)
                await self.consensus_in.send(Inbound((Message(MsgType.UNREACHABLE, frm=peer, to=self.id),)))
                await trio.sleep(backoff)
                backoff = min(backoff * 2, 1.0)
            for m in snaps[-1:]:
                await self._send_snapshot(peer, link, m)

    async def _send_snapshot(self, peer: int, link: PeerLink, m: Message) -> None:
        assert m.snapshot is not None
        path = self.snapshot_path
        ok = False
        if path is not None and path.exists():
            try:
                ok = await link.send_snapshot(m, path)
            except PeerUnavailable:
                ok = False
            if ok:
                self.metrics.snapshot("sent", _file_size(path))
            else:
                self.metrics.peer_error(peer)
            log.info("node %d: snapshot %d to node %d: %s", self.id, m.snapshot.meta.index, peer,
                     "sent" if ok else "failed")
        else:
            log.error("node %d: no snapshot file to send to node %d", self.id, peer)
        status = Message(MsgType.SNAP_STATUS, frm=peer, to=self.id, reject=not ok)
        await self.consensus_in.send(Inbound((status,)))

    async def _log_writer(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        rx = self._writer_rx
        while True:
            job = await rx.receive()
            self.crash.maybe_crash("log-writer")
            if isinstance(job, PersistReady):
                rd = job.ready
                if rd.snapshot is not None:
                    # The state machine first: a crash after this but before the log records the snapshot
                    # leaves a database ahead of the log, which replay tolerates (apply skips old indexes).
                    await self._until_stored("db", self._install_via_applier, rd)
                # Nothing of this Ready is acknowledged (Persisted releases the acks) until it is on disk.
                # A Ready that only moves the commit index writes nothing (see needs_hard_state_write): it
                # skips the thread hop too, which matters because that is most Readys of a busy leader.
                hs = rd.hard_state
                if rd.entries or rd.snapshot is not None or (
                        hs is not None and needs_hard_state_write(self._written_hard_state, hs)):
                    await self._until_stored("log", self._save_ready, rd)
                    if hs is not None:
                        self._written_hard_state = hs
                await self.consensus_in.send(Persisted(rd))
            elif isinstance(job, CompactLog):
                await self._until_stored("log", self._io, lambda: self.storage.compact(job.meta))
                self.log_bytes = self.storage.log_bytes()

    async def _install_via_applier(self, rd: Ready) -> None:
        assert rd.snapshot is not None
        reply = Reply()
        await self.applier_in.send(InstallSnapshot(rd.snapshot.meta, Path(rd.snapshot.data), reply))
        await reply.wait()

    async def _until_stored(self, what: str, fn: Callable[..., Any], *args: Any) -> Any:
        """`await fn(*args)`, a durable write to the Raft log or the database, until the disk takes it.

        While the disk refuses it (full, failing) the caller waits, so nothing that depends on it is
        acknowledged; meanwhile the node refuses writes and linearizable reads with a clear error, hands
        leadership to another node, and tries again every DISK_RETRY_S -- the node recovers by itself once
        space returns.  A failed log write leaves FileStorage unusable (its durable state is unknown), so the
        log is read back from disk before the retry, which rewrites the whole batch.
        """
        while True:
            try:
                result = await fn(*args)
            except (OSError, StorageClosedError, sqlite3.OperationalError) as e:
                if not _is_disk_error(e):
                    raise
                self._disk_trouble(what, e)
                await trio.sleep(DISK_RETRY_S)
                if what == "log":
                    with contextlib.suppress(OSError, StorageClosedError):
                        await self._io(self._reopen_log)
                continue
            if self.disk_errors.pop(what, None) is not None:
                log.warning("node %d: the %s takes writes again%s", self.id, _WHAT[what],
                            "; serving writes again" if not self.disk_errors else "")
            return result

    def _disk_trouble(self, what: str, e: BaseException) -> None:
        full = (isinstance(e, OSError) and e.errno in (errno.ENOSPC, errno.EDQUOT)) or "full" in str(e)
        why = f"disk full ({e})" if full else f"cannot write its {_WHAT[what]} ({e})"
        first = not self.disk_errors
        if what not in self.disk_errors:
            log.error("node %d: %s; refusing writes, acknowledging nothing more, retrying every %gs",
                      self.id, why, DISK_RETRY_S)
        self.disk_errors[what] = why
        if first:
            # Whoever waits here now would wait until the disk is fixed: answer them (the writes' fate is
            # unknown to them, as after a timeout; a retry elsewhere with the same request id is exactly-once).
            try:
                self._check_disk()
            except DiskError as err:
                for reply in self._read_replies():
                    reply.fail(err)
                waiters, self.waiters = self.waiters, {}
                for w in waiters.values():
                    w.reply.fail(err)
        if self.role == Role.LEADER:
            # A leader that cannot persist cannot apply, so writes would hang on it: hand over to the most
            # up-to-date voter (best effort; repeated on every retry while we still lead).
            with contextlib.suppress(trio.WouldBlock):
                self.consensus_in.send_nowait(Call(self._hand_over, Reply()))

    def _hand_over(self, core: RaftCore) -> None:
        if core.role != Role.LEADER:
            return
        others = [n for n in core.conf().voters if n != self.id and n in core.prs]
        if others:
            core.transfer_leadership(max(others, key=lambda n: core.prs[n].match))

    def _reopen_log(self) -> None:
        """Read the Raft log back from disk after a failed write (recovery cuts off a torn tail)."""
        old = self.storage
        if not isinstance(old, FileStorage):
            return
        with contextlib.suppress(OSError):
            old.close()
        fresh = FileStorage(self.s.raft_dir, segment_bytes=getattr(old, "_segment_bytes", 64 * 1024 * 1024))
        fresh.load()
        self.storage = fresh

    async def _save_ready(self, rd: Ready) -> None:
        """Persist `rd`: inline while the disk is fast (see INLINE_SAVE_S), otherwise on a worker thread."""
        if self.inline_io or rd.snapshot is not None or self._threaded_saves_left > 0:
            self._threaded_saves_left = max(0, self._threaded_saves_left - 1)
            await self._io(self._save, rd)
            return
        t0 = time.perf_counter()
        try:
            self._save(rd)
        finally:
            self._save_avg_s = 0.8 * self._save_avg_s + 0.2 * (time.perf_counter() - t0)
            if self._save_avg_s > INLINE_SAVE_S:
                self._threaded_saves_left = SLOW_SAVE_BACKOFF
                self._save_avg_s = INLINE_SAVE_S / 2  # one slow save after the backoff sends it back
        await trio.lowlevel.checkpoint()

    def _save(self, rd: Ready) -> None:
        t0 = time.perf_counter()
        self.storage.save(
            hard_state=rd.hard_state,
            entries=rd.entries,
            snapshot=rd.snapshot.meta if rd.snapshot is not None else None,
        )
        if rd.must_sync():
            self.metrics.persisted(time.perf_counter() - t0, len(rd.entries))
        if rd.entries or rd.snapshot is not None:
            self.log_bytes = self.storage.log_bytes()

    async def _applier(self, *, task_status: Any = trio.TASK_STATUS_IGNORED) -> None:
        task_status.started()
        rx = self._applier_rx
        while True:
            # An ApplyEntries job stays in _applier_job until it is done: if this actor crashes and restarts,
            # it resumes with the same job instead of skipping its entries.
            job = self._applier_job if self._applier_job is not None else await rx.receive()
            self._applier_job = job if isinstance(job, ApplyEntries) else None
            self.crash.maybe_crash("applier")
            if isinstance(job, ApplyEntries):
                await self._apply(job)
                self._applier_job = None
            elif isinstance(job, InstallSnapshot):
                try:
                    index = await self.db.install_snapshot(job.path)
                    self.applied_index = index
                    self.snapshot_index = index
                    keep = self.s.snapshot_dir / f"snap-{job.meta.index}.db"
                    await self._io(shutil.copyfile, str(job.path), str(keep))
                    self.snapshot_path = keep
                    self.metrics.snapshot("installed", _file_size(keep))
                    self._forget_old_snapshots(keep)
                    for i in [i for i in self.waiters if i <= index]:
                        self.waiters.pop(i).reply.fail(ProposalLost(f"entry {i} superseded by a snapshot"))
                    self._release_reads()
                    await self._load_address_book()
                    log.info("node %d: installed snapshot at index %d", self.id, index)
                    job.reply.set(index)
                except BaseException as e:
                    job.reply.fail(e)
                    if isinstance(e, (OSError, sqlite3.OperationalError)) and _is_disk_error(e):
                        continue  # the log writer tries again (see _until_stored); no reason to crash
                    raise

    async def _apply(self, job: ApplyEntries) -> None:
        entries = [e for e in job.entries if e.index > self.applied_index]
        if entries:
            batch = [(e.index, int(e.type), e.data) for e in entries]
            t0 = time.perf_counter()
            # A batch the database refuses (disk full) is retried, never skipped: apply_batch rolled it back.
            results = await self._until_stored("db", self.db.apply, batch)
            self.metrics.applied(time.perf_counter() - t0, len(entries))
            self.applied_index = entries[-1].index
            for e, res in zip(entries, results):
                w = self.waiters.pop(e.index, None)
                if w is not None:
                    if w.term == e.term:
                        w.reply.set(res)
                    else:
                        w.reply.fail(ProposalLost(f"entry {e.index} was replaced after a leader change"))
            if self.on_apply is not None:
                self.on_apply(list(zip(entries, results)))
            self._after_apply_hooks(entries, results)
        for rs in job.read_states:
            self.read_queue.append((rs.index, rs.context))
        self._release_reads()
        if not self._checkpointing and self._background is not None and self.db.checkpoint_due():
            # In the background, after the results are handed out: applies go on while most of the WAL is
            # copied, and only the last pages of it hold them up.
            self._checkpointing = True
            self._background.start_soon(self._checkpoint_in_background)
        if not self._snapshotting and self._background is not None and self._snapshot_due():
            # In the background: copying a big database takes seconds, and applies go on meanwhile.
            self._snapshotting = True
            self._background.start_soon(self._snapshot_in_background)

    def _snapshot_due(self) -> bool:
        """`snapshot_entries` entries applied since the last snapshot -- and, once the database is big, a log
        since then of at least 1/SNAPSHOT_COPY_RATIO of it: a snapshot copies the whole database, so at a
        million bookings (1.2 GB) one every 10,000 entries would copy 300 bytes of database for each byte of
        log it compacts, and take a core away from the bookings every few seconds."""
        if self.applied_index - self.snapshot_index < self.s.snapshot_entries:
            return False
        path = self.snapshot_path
        if path is None:
            return True
        if self._snapshot_size[0] != path:
            self._snapshot_size = (path, _file_size(path))
        size = self._snapshot_size[1]
        return size < SNAPSHOT_SMALL_BYTES or self.log_bytes * SNAPSHOT_COPY_RATIO >= size

    async def _snapshot_in_background(self) -> None:
        """Take one snapshot; a failure is logged and the next applied batch tries again."""
        try:
            await self._take_snapshot()
        except (OSError, sqlite3.OperationalError) as e:
            if not _is_disk_error(e):
                log.exception("node %d: no snapshot at index %d (tried again after the next batch)",
                              self.id, self.applied_index)
            else:
                log.warning("node %d: no snapshot at index %d: %s (tried again after the next batch)",
                            self.id, self.applied_index, e)
            for p in self.s.snapshot_dir.glob("tmp-*"):  # a half-written copy only takes space
                with contextlib.suppress(OSError):
                    p.unlink()
        except DatabaseClosedError:
            pass  # the node is stopping
        finally:
            self._snapshotting = False

    async def _checkpoint_in_background(self) -> None:
        """Copy the WAL into the database file once (a failure is logged by the database: the next applied
        batch tries again)."""
        try:
            held_up = await self.db.checkpoint()
            if held_up is not None:
                self.metrics.checkpointed(held_up)
        except DatabaseClosedError:
            pass  # the node is stopping
        finally:
            self._checkpointing = False

    def _after_apply_hooks(self, entries: list[Entry], results: list[Any]) -> None:
        """Learn addresses from the replicated address book as it is applied."""
        for e, res in zip(entries, results):
            if e.type != EntryType.NORMAL or not e.data or res is None or not getattr(res, "ok", False):
                continue
            # Decoding every applied command again costs a JSON parse each; only SetMember matters here, and
            # its type tag is in the key-sorted JSON as this exact text (a string value would escape the quotes).
            if _SET_MEMBER_TAG not in e.data:
                continue
            # store's SetMember result carries only the node id: the address is in the command itself.
            try:
                cmd = decode_command(e.data)
            except ValueError:
                continue
            if isinstance(cmd, SetMember):
                self.set_address(cmd.node_id, cmd.host, cmd.port)

    async def _load_address_book(self) -> None:
        """Addresses of nodes that joined after start-up are in the database, not in the configuration."""
        for m in await self.db.read(queries.members):
            if m.node_id != self.id:
                self.set_address(m.node_id, m.host, m.port)

    def _release_reads(self) -> None:
        keep = []
        for index, ctx in self.read_queue:
            if index <= self.applied_index:
                reply = self.reads.get(ctx)
                if reply is not None:
                    reply.set(index)
            else:
                keep.append((index, ctx))
        self.read_queue = keep

    async def _take_snapshot(self) -> None:
        index = self.applied_index
        tmp = self.s.snapshot_dir / f"tmp-{index}.db"
        got = await self.db.snapshot(tmp)
        if got <= self.snapshot_index:  # a snapshot from the leader was installed meanwhile: it is newer
            await self._io(tmp.unlink)
            return
        final = self.s.snapshot_dir / f"snap-{got}.db"
        await self._io(os.replace, tmp, final)
        self.snapshot_index = got
        self._forget_old_snapshots(final)
        size = _file_size(final)
        self.metrics.snapshot("taken", size)
        log.info("node %d: snapshot at index %d (%d bytes)", self.id, got, size)
        await self.consensus_in.send(SnapshotTaken(got, final))

    def _forget_old_snapshots(self, keep: Path) -> None:
        for p in self.s.snapshot_dir.glob("*.db"):
            if p != keep and (p.name.startswith("snap-") or p.name.startswith("recv-")):
                try:
                    p.unlink()
                except OSError:
                    pass


_WHAT = {"log": "Raft log", "db": "database"}


def _is_disk_error(e: BaseException) -> bool:
    """An error of the disk under a write (full, I/O error), as opposed to a bug: worth retrying."""
    if isinstance(e, StorageClosedError):
        return True  # an earlier write failed; _reopen_log makes the storage usable again
    if isinstance(e, sqlite3.OperationalError):
        code = getattr(e, "sqlite_errorcode", None)
        if code is not None and code & 0xFF in (sqlite3.SQLITE_FULL, sqlite3.SQLITE_IOERR):
            return True
        text = str(e)
        return "disk is full" in text or "disk I/O error" in text
    return isinstance(e, OSError) and e.errno in _DISK_ERRNOS


_DISK_ERRNOS = {errno.ENOSPC, errno.EDQUOT, errno.EIO, errno.EROFS, errno.EFBIG}


def _file_size(path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError:
        return 0


@contextlib.contextmanager
def _deadline(seconds: float | None, what: str) -> Iterator[None]:
    """fail_after that raises the builtin TimeoutError (what the gateway maps to UNAVAILABLE)."""
    if seconds is None:
        yield
        return
    try:
        with trio.fail_after(seconds):
            yield
    except trio.TooSlowError:
        raise TimeoutError(f"{what} did not complete within {seconds:g}s (no leader reachable?)") from None
