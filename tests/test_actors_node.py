"""Actor-level tests of a node: three Nodes in one process over the in-memory network, under Trio's mock clock.

Real actors, real RaftCore, real state machine (SQLite in memory); only the network, the Raft log storage
and the database files are in-memory twins, so the tests are deterministic and take no wall time.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import trio

from actors.node import Node, NodeSettings, NotLeaderError
from actors.supervisor import ActorCrashInjector, EscalationError, RestartPolicy
from actors.transport import MemoryNetwork
from raft.storage import MemoryStorage
from raft.types import ConfChange, ConfChangeType, Role
from store import queries
from store.commands import RegisterUser, encode_command
from store.memdb import MemoryDatabase

from .checkpoint_spy import CheckpointSpyDatabase

pytestmark = pytest.mark.trio


def register(i: int, name: str | None = None) -> bytes:
    return encode_command(
        RegisterUser(request_id=f"r{i}", client_id="test", ts_ms=1_000 + i, username=name or f"user{i}",
                     password_hash="scrypt$x", role="CUSTOMER")
    )


class DurableMemoryStorage(MemoryStorage):
    """MemoryStorage that survives its node: close() is a no-op, so a restarted node reloads it."""

    def close(self) -> None:
        return None


class Cluster:
    """Nodes in one nursery, each in its own cancel scope so it can be stopped and restarted."""

    def __init__(self, nursery: trio.Nursery, tmp: Path, n: int = 3, snapshot_entries: int = 10_000) -> None:
        self.nursery = nursery
        self.tmp = tmp
        self.net = MemoryNetwork()
        self.ids = list(range(1, n + 1))
        self.snapshot_entries = snapshot_entries
        self.storage: dict[int, MemoryStorage] = {i: DurableMemoryStorage() for i in self.ids}
        self.db = {i: MemoryDatabase() for i in self.ids}
        self.crash = {i: ActorCrashInjector() for i in self.ids}
        self.nodes: dict[int, Node] = {}
        self.scopes: dict[int, trio.CancelScope] = {}
        self.errors: dict[int, BaseException] = {}

    def settings(self, i: int, join: bool = False) -> NodeSettings:
        return NodeSettings(
            id=i, cluster_id="test", data_dir=self.tmp / f"node{i}", host="127.0.0.1", port=50050 + i,
            peers={j: ("127.0.0.1", 50050 + j) for j in self.ids}, initial_voters=[] if join else list(self.ids[:3]),
            snapshot_entries=self.snapshot_entries, seed=i,
            restart_policy=RestartPolicy(max_restarts=3, window_s=10, backoff_initial_s=0.01),
        )

    async def start(self, i: int, join: bool = False, inline_io: bool = True) -> Node:
        node = Node(self.settings(i, join), self.db[i], self.net.factory(i), storage=self.storage[i],
                    crash_injector=self.crash[i], inline_io=inline_io)
        scope = trio.CancelScope()
        self.scopes[i] = scope
        self.nodes[i] = node

        async def run(task_status: trio.TaskStatus = trio.TASK_STATUS_IGNORED) -> None:
            with scope:
                try:
                    await node.run(task_status=task_status)
                except EscalationError as e:
                    self.errors[i] = e
                except BaseExceptionGroup as eg:
                    self.errors[i] = eg

        await self.nursery.start(run)
        self.net.register(i, node.deliver, node.receive_snapshot)
        return node

    def stop(self, i: int) -> None:
        self.net.unregister(i)
        self.scopes[i].cancel()

    async def leader(self, timeout: float = 5.0) -> Node:
        with trio.fail_after(timeout):
            while True:
                live = [n for i, n in self.nodes.items() if not self.scopes[i].cancel_called]
                leaders = [n for n in live if n.role == Role.LEADER]
                if len(leaders) == 1 and all(n.leader == leaders[0].id for n in live):
                    return leaders[0]
                await trio.sleep(0.01)

    async def settle(self, ids: list[int] | None = None, timeout: float = 10.0) -> None:
        """Wait until the given nodes have applied the same index."""
        ids = ids or [i for i in self.nodes if not self.scopes[i].cancel_called]
        with trio.fail_after(timeout):
            while len({self.nodes[i].applied_index for i in ids}) != 1 or not self.nodes[ids[0]].applied_index:
                await trio.sleep(0.05)


@pytest.fixture
def tmp(tmp_path: Path) -> Path:
    return tmp_path


async def test_leader_elected_and_writes_replicate(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        for i in c.ids:
            await c.start(i)
        start = trio.current_time()
        ld = await c.leader()
        assert trio.current_time() - start < 2.0, "a leader within 2 s with default timeouts"
        results = [await ld.propose(register(k), timeout=5) for k in range(20)]
        assert all(r.ok for r, _ in results)
        await c.settle()
        dumps = {i: await c.db[i].canonical_dump() for i in c.ids}
        assert len(set(dumps.values())) == 1, "every replica holds the same data"
        nursery.cancel_scope.cancel()


async def test_follower_redirects_and_reads_its_writes(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        follower = next(n for n in c.nodes.values() if n is not ld)
        with pytest.raises(NotLeaderError) as err:
            await follower.propose(register(1), timeout=5)
        assert err.value.leader_id == ld.id and err.value.leader_addr.endswith(str(50050 + ld.id))
        res, index = await ld.propose(register(2, "alice"), timeout=5)
        assert res.ok
        # A linearizable read on a follower sees the write acknowledged by the leader.
        read_index = await follower.read_barrier(timeout=5)
        assert read_index >= index and follower.applied_index >= index
        user = await follower.db.read(queries.user_by_name, "alice")
        assert user is not None and user.username == "alice"
        nursery.cancel_scope.cancel()


async def test_duplicate_request_applies_once(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        first, _ = await ld.propose(register(7, "bob"), timeout=5)
        again, _ = await ld.propose(register(7, "bob"), timeout=5)
        assert first.ok and again == first, "a retry with the same request id returns the first result"
        other, _ = await ld.propose(register(8, "bob"), timeout=5)
        assert not other.ok and other.code == "ALREADY_EXISTS"
        nursery.cancel_scope.cancel()


async def test_leader_loss_elects_new_leader_and_keeps_acknowledged_writes(
    autojump_clock: trio.abc.Clock, tmp: Path
) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        for k in range(10):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        c.stop(ld.id)
        t0 = trio.current_time()
        new = await c.leader()
        assert new.id != ld.id and trio.current_time() - t0 < 3.0
        names = [await new.db.read(queries.user_by_name, f"user{k}") for k in range(10)]
        assert all(u is not None for u in names), "no acknowledged write is lost"
        # The old leader restarts from its durable log and catches up.
        await c.start(ld.id)
        assert (await new.propose(register(99), timeout=5))[0].ok
        await c.settle()
        assert len({await c.db[i].canonical_dump() for i in c.ids}) == 1
        nursery.cancel_scope.cancel()


async def test_crashed_replicator_is_restarted(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        peer = next(i for i in c.ids if i != ld.id)
        c.crash[ld.id].arm(f"replicator-{peer}", times=2)
        for k in range(10):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await c.settle()
        assert ld.id not in c.errors, "two crashes are within the restart budget"
        assert c.nodes[peer].applied_index == ld.applied_index
        nursery.cancel_scope.cancel()


async def test_actor_crashing_too_often_escalates(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        for i in c.ids:
            await c.start(i)
        await c.leader()
        c.crash[2].arm("election-timer", times=10)
        with trio.fail_after(10):
            while 2 not in c.errors:
                await trio.sleep(0.05)
        assert "election-timer" in str(c.errors[2]) or "election-timer" in repr(c.errors[2])
        nursery.cancel_scope.cancel()


async def test_lagging_node_catches_up_by_snapshot(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp, snapshot_entries=8)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        lag = next(i for i in c.ids if i != ld.id)
        c.stop(lag)
        for k in range(40):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        assert ld.core.log.snap.index > 0, "the leader compacted its log"
        # The lagging node lost everything (as if its data directory was deleted).
        c.storage[lag] = DurableMemoryStorage()
        c.db[lag] = MemoryDatabase()
        await c.start(lag, join=True)
        await c.settle()
        assert c.nodes[lag].core.log.snap.index > 0, "it was brought up to date by InstallSnapshot"
        assert len({await c.db[i].canonical_dump() for i in c.ids}) == 1
        nursery.cancel_scope.cancel()


async def test_add_and_remove_a_node(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp, n=4)
        for i in c.ids[:3]:
            await c.start(i)
        ld = await c.leader()
        for k in range(5):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await c.start(4, join=True)
        await ld.change_membership(ConfChange(ConfChangeType.ADD_LEARNER, 4))
        with trio.fail_after(10):
            while True:
                try:
                    await ld.change_membership(ConfChange(ConfChangeType.PROMOTE, 4))
                    break
                except Exception:  # noqa: BLE001 - not caught up yet
                    await trio.sleep(0.05)
        assert ld.core.conf().voters == {1, 2, 3, 4}
        victim = next(i for i in (1, 2, 3) if i != ld.id)
        await ld.change_membership(ConfChange(ConfChangeType.REMOVE, victim))
        c.stop(victim)
        assert (await ld.propose(register(50), timeout=5))[0].ok
        live = [i for i in c.ids if i != victim]
        await c.settle(live)
        assert len({await c.db[i].canonical_dump() for i in live}) == 1
        nursery.cancel_scope.cancel()


async def test_read_started_before_a_leader_exists_completes_once_one_does(
    autojump_clock: trio.abc.Clock, tmp: Path
) -> None:
    """A linearizable read asked while no leader is known is retried, not left to time out."""
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        node = await c.start(1)  # alone: no quorum, no leader
        result: list[int] = []

        async def read() -> None:
            result.append(await node.read_barrier(timeout=30))

        nursery.start_soon(read)
        await trio.sleep(3)
        assert not result
        t0 = trio.current_time()
        for i in (2, 3):
            await c.start(i)
        await c.leader()
        with trio.fail_after(5):
            while not result:
                await trio.sleep(0.05)
        assert trio.current_time() - t0 < 5
        nursery.cancel_scope.cancel()


class SlowDiskStorage(DurableMemoryStorage):
    """A log whose every save takes `delay` seconds of blocking I/O (a slow or overloaded disk)."""

    def __init__(self, delay: float) -> None:
        super().__init__()
        self.delay = delay

    def save(self, **kw):  # noqa: ANN003, ANN201
        import time

        time.sleep(self.delay)
        return super().save(**kw)


@pytest.mark.parametrize(("delay", "off_loop"), [(0.0, False), (0.02, True)])
async def test_log_saves_leave_the_event_loop_only_when_the_disk_is_slow(tmp: Path, delay: float,
                                                                          off_loop: bool) -> None:
    # Real time and real worker threads (no inline_io): a fast disk is written on the event loop (a thread
    # hop would cost more), a slow one from a worker thread so heartbeats and reads keep flowing meanwhile.
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        c.storage = {i: SlowDiskStorage(delay) for i in c.ids}
        for i in c.ids:
            await c.start(i, inline_io=False)
        ld = await c.leader(timeout=20)
        for k in range(6):
            assert (await ld.propose(register(k), timeout=20))[0].ok
        await c.settle(timeout=20)
        assert all((n._threaded_saves_left > 0) is off_loop for n in c.nodes.values())
        nursery.cancel_scope.cancel()


class SizedMemoryStorage(DurableMemoryStorage):
    """DurableMemoryStorage that reports the bytes its entries would take on disk, as FileStorage does."""

    def log_bytes(self) -> int:
        return sum(len(e.data) + 20 for e in self._entries)


async def test_a_big_database_is_snapshotted_once_the_log_has_grown_in_proportion(
        autojump_clock: trio.abc.Clock, tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A snapshot copies the whole database: past SNAPSHOT_SMALL_BYTES, snapshot_entries entries are not
    enough, the log since the last snapshot must also be 1/SNAPSHOT_COPY_RATIO of the database's size."""
    import actors.node as node_module

    monkeypatch.setattr(node_module, "SNAPSHOT_SMALL_BYTES", 1)  # every database counts as big here
    monkeypatch.setattr(node_module, "SNAPSHOT_COPY_RATIO", 10)
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp, snapshot_entries=8)
        c.storage = {i: SizedMemoryStorage() for i in c.ids}
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        k = 0
        while ld.snapshot_index == 0:  # the first snapshot: there is none to compare with yet
            assert (await ld.propose(register(k), timeout=5))[0].ok
            k += 1
        first, size = ld.snapshot_index, ld.snapshot_path.stat().st_size
        entry_bytes = len(register(0)) + 20
        assert size / 10 > 4 * 8 * entry_bytes  # so the rule asks for far more than snapshot_entries here
        assert k <= 12
        while ld.snapshot_index == first:
            assert (await ld.propose(register(k), timeout=5))[0].ok
            k += 1
            await trio.sleep(0.01)  # time for a snapshot in the background
            assert k < 5000, "no second snapshot"
        # Not before the log since the first snapshot had grown to size/10.
        assert (k - first + 4) * entry_bytes >= size / 10, (first, k, size)
        assert ld.log_bytes < size / 10  # and that log was compacted by it
        nursery.cancel_scope.cancel()


async def test_deliver_now_takes_messages_until_the_consensus_inbox_is_full(
        tmp: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The transport's asyncio side hands batches over with deliver_now while the inbox has room; a full inbox
    says False (nothing taken), so the caller falls back to `await deliver` and its backpressure."""
    from actors.messages import Inbound
    from raft.types import Message, MsgType

    monkeypatch.setattr("actors.node.INBOX_SIZE", 2)
    c = Cluster(None, tmp)  # type: ignore[arg-type]  # its settings and twins only; no node runs
    node = Node(c.settings(1), c.db[1], c.net.factory(1), storage=c.storage[1])  # not run: nobody drains its inbox
    beats = [[Message(MsgType.HEARTBEAT, to=1, frm=2, term=1, index=i)] for i in range(3)]
    assert node.deliver_now([])  # nothing to deliver: nothing taken, nothing refused
    assert node.deliver_now(beats[0]) and node.deliver_now(beats[1])
    assert not node.deliver_now(beats[2])
    got = [node._consensus_rx.receive_nowait(), node._consensus_rx.receive_nowait()]
    assert all(isinstance(g, Inbound) for g in got) and [list(g.msgs) for g in got] == beats[:2]
    assert node.deliver_now(beats[2])


async def test_applies_go_on_while_the_wal_is_checkpointed(autojump_clock: trio.abc.Clock, tmp: Path) -> None:
    """The WAL is copied in the background, started after a batch's results are handed out: a slow copy (a
    big database's) holds up neither the callers of that batch nor the batches applied while it runs, and
    one copy runs at a time."""
    async with trio.open_nursery() as nursery:
        c = Cluster(nursery, tmp)
        c.db = {i: CheckpointSpyDatabase() for i in c.ids}
        for i in c.ids:
            c.db[i].due = False
            await c.start(i)
        ld = await c.leader()
        await c.settle()
        db = c.db[ld.id]
        db.due, db.seconds = True, 5.0  # a big database's checkpoint, due after every batch
        start = trio.current_time()
        for k in range(3):
            res, _ = await ld.propose(register(k), timeout=4)
            assert res.ok
        assert trio.current_time() - start < 1.0
        assert db.checkpoints == 0  # the first copy is still running, and no second one started beside it
        await trio.sleep(5.5)
        assert db.checkpoints == 1
        nursery.cancel_scope.cancel()
