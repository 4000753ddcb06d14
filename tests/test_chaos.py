"""The fault-injection suite: a short seeded chaos run (tests/chaos) of ~25 s against real node processes, the
chaos checker's model, and (under Trio's mock clock, fast) how a node behaves when its disk is full.

Every fault kind is injected once (kill, kill-leader mid-batch, pause, isolate, one-way cut, slow links,
corrupt log tail, disk full), under a concurrent booking workload; the run then checks linearizability per
run, lost acknowledged bookings, double-sold seats, identical databases and recovery within the bound.  The
long version is `make chaos DURATION=600 SEED=s` (see tests/chaos/README.md).
"""

from __future__ import annotations

import errno
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import trio

from actors.node import DiskError
from tests.chaos.checker import check_linearizable
from tests.chaos.workload import Call
from tests.test_actors_node import Cluster, DurableMemoryStorage, register
from store.memdb import MemoryDatabase

ROOT = Path(__file__).resolve().parents[1]

SEED = int(os.environ.get("RAILRAFT_CHAOS_SEED", "7"))
DURATION = float(os.environ.get("RAILRAFT_CHAOS_DURATION", "24"))


AB, BC, AC = (0,), (1,), (0, 1)


def _calls(*specs):
    """(kind, run, arg, call, ret, output) -> Calls; hold's id is its position (1-based), as holders are named."""
    out = []
    for i, (kind, run, arg, call, ret, output) in enumerate(specs, start=1):
        out.append(Call(i, i % 3, kind, run, (arg,), call, ret, output))
    return out


def test_checker_accepts_a_legal_history_with_unknown_outcomes():
    h = _calls(
        ("hold", 1, AC, 0, 1, ("ok", 1)),
        ("hold", 1, AB, 0.5, 2, ("ok", 2)),
        ("hold", 1, BC, 3, None, None),  # timed out: may have taken seat 2 or 3 on B-C, or nothing
        ("seats", 1, BC, 4, 5, ("ok", frozenset({3}))),  # ... it took seat 2
        ("cancel", 1, 1, 6, 7, ("ok",)),
        ("seats", 1, AC, 8, 9, ("ok", frozenset({1, 3}))),
        ("status", 1, 1, 10, 11, ("ok", "CANCELLED")),
        ("pay", 1, 2, 12, None, None),
        ("status", 1, 2, 13, 14, ("ok", "CONFIRMED")),
    )
    assert check_linearizable(h).ok


@pytest.mark.parametrize("bad", [
    ("hold", 1, AB, 3, 4, ("ok", 1)),  # seat 1 is held A-C: sold twice on A-B
    ("hold", 1, BC, 3, 4, ("soldout",)),  # seats 2 and 3 are free on B-C
    ("seats", 1, AB, 3, 4, ("ok", frozenset({1, 2, 3}))),  # seat 1 is held on A-B: a lost booking
    ("status", 1, 1, 3, 4, ("ok", "CANCELLED")),  # never cancelled
    ("cancel", 1, 1, 3, 4, ("err", "FAILED_PRECONDITION", "already cancelled")),
])
def test_checker_flags_an_illegal_history(bad):
    h = _calls(("hold", 1, AC, 0, 1, ("ok", 1)), bad)
    assert not check_linearizable(h).ok


def test_checker_flags_a_lost_acknowledged_booking_only_after_it_was_acknowledged():
    hold = ("hold", 2, AB, 0, 5, ("ok", 1))
    early_read = ("seats", 2, AB, 1, 2, ("ok", frozenset({1, 2, 3})))  # concurrent with the hold: fine
    late_read = ("seats", 2, AB, 6, 7, ("ok", frozenset({1, 2, 3})))  # after its ack: the booking is lost
    assert check_linearizable(_calls(hold, early_read)).ok
    assert not check_linearizable(_calls(hold, late_read)).ok


@pytest.mark.slow
def test_short_seeded_chaos_run_finds_no_anomaly(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT))
    cmd = [sys.executable, "-m", "tests.chaos.run", "--duration", str(DURATION), "--seed", str(SEED),
           "--fault-seconds", "0.8,1.5", "--workdir", str(tmp_path / "chaos")]
    proc = subprocess.run(cmd, cwd=ROOT, env=env, stdin=subprocess.DEVNULL, capture_output=True, text=True,
                          timeout=DURATION * 4 + 180)
    out = proc.stdout + proc.stderr
    print(out)  # shown when the test fails: the summary names every anomaly and fault
    last = [line for line in proc.stdout.splitlines() if line.strip()][-1]
    assert last.endswith(" 0 failed"), f"chaos run (seed {SEED}) found anomalies:\n{out[-8000:]}"
    assert proc.returncode == 0
    assert "faults injected: " in out and "linearizable" in out


# ------------------------------------------------------------------------- a node on a full disk (mock clock)

class FullableStorage(DurableMemoryStorage):
    """In-memory Raft log whose writes fail with ENOSPC (before changing anything) while `full`."""

    full = False

    def save(self, **kw):  # noqa: ANN003, ANN201
        if self.full:
            raise OSError(errno.ENOSPC, "No space left on device")
        return super().save(**kw)


class FullableDatabase(MemoryDatabase):
    full = False

    async def apply(self, batch):  # noqa: ANN001, ANN201
        if self.full:
            err = sqlite3.OperationalError("database or disk is full")
            err.sqlite_errorcode = sqlite3.SQLITE_FULL
            raise err
        return await super().apply(batch)


def fullable_cluster(nursery: trio.Nursery, tmp: Path) -> Cluster:
    c = Cluster(nursery, tmp)
    c.storage = {i: FullableStorage() for i in c.ids}
    c.db = {i: FullableDatabase() for i in c.ids}
    return c


async def _until(pred, timeout: float = 10.0) -> None:  # noqa: ANN001
    with trio.fail_after(timeout):
        while not pred():
            await trio.sleep(0.05)


@pytest.mark.trio
async def test_follower_with_full_log_disk_acks_nothing_refuses_reads_and_recovers(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        c = fullable_cluster(nursery, tmp_path)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        for k in range(5):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await c.settle()
        c.storage[f.id].full = True
        for k in range(5, 25):  # the other two still make a majority
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await _until(lambda: f.disk_errors)
        assert "disk full" in f.status()["disk_error"]
        # Never acknowledged what it did not persist: the leader counts no more of its log than it stored.
        assert ld.core.prs[f.id].match <= c.storage[f.id].last_index() < ld.core.log.last_index()
        with trio.fail_after(1):  # refused at once, with the reason, instead of hanging
            with pytest.raises(DiskError, match=f"node {f.id}: disk full"):
                await f.read_barrier(timeout=5)
        c.storage[f.id].full = False
        await c.settle()
        assert not f.disk_errors
        await f.read_barrier(timeout=5)
        assert len({await c.db[i].canonical_dump() for i in c.ids}) == 1
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_leader_with_full_log_disk_refuses_writes_hands_over_and_recovers(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        c = fullable_cluster(nursery, tmp_path)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        assert (await ld.propose(register(1), timeout=5))[0].ok
        c.storage[ld.id].full = True
        with pytest.raises((DiskError, TimeoutError)):  # the write in flight: its fate is unknown to the caller
            await ld.propose(register(2), timeout=5)
        with trio.fail_after(1):
            with pytest.raises(DiskError, match=f"node {ld.id}: disk full"):
                await ld.propose(register(3), timeout=5)
        await _until(lambda: any(n.role.name == "LEADER" for n in c.nodes.values() if n is not ld))
        new = next(n for n in c.nodes.values() if n is not ld and n.role.name == "LEADER")
        for k in range(4, 10):
            assert (await new.propose(register(k), timeout=5))[0].ok
        c.storage[ld.id].full = False
        await _until(lambda: not ld.disk_errors)
        await c.settle()
        assert len({await c.db[i].canonical_dump() for i in c.ids}) == 1
        nursery.cancel_scope.cancel()


@pytest.mark.trio
async def test_database_apply_failing_on_a_full_disk_is_retried_never_skipped(autojump_clock, tmp_path):
    async with trio.open_nursery() as nursery:
        c = fullable_cluster(nursery, tmp_path)
        for i in c.ids:
            await c.start(i)
        ld = await c.leader()
        f = next(n for n in c.nodes.values() if n is not ld)
        c.db[f.id].full = True
        for k in range(10):
            assert (await ld.propose(register(k), timeout=5))[0].ok
        await _until(lambda: "db" in f.disk_errors)
        stuck = f.applied_index
        await trio.sleep(3)
        assert f.applied_index == stuck < ld.applied_index
        c.db[f.id].full = False
        await c.settle()
        assert not f.disk_errors and f.id not in c.errors
        assert len({await c.db[i].canonical_dump() for i in c.ids}) == 1
        nursery.cancel_scope.cancel()
