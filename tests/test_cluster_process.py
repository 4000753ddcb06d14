"""Real processes on 127.0.0.1: elections, failover, catch-up, snapshots, pauses, actor crashes, membership.

Every test starts its own cluster (tests/cluster_harness.py) on free ports in a temp dir; the fixture's
finalizer stops and reaps every process it started and checks their ports are free again.  Default timeouts
(tick 50 ms, election 10..20 ticks) unless a test says otherwise.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import threading
import time

import pytest

from gateway import admin_client

from .cluster_harness import ProcessCluster, run, wait_until, write_load

PASSWORD = "password123"


@pytest.fixture
def make_cluster(tmp_path):
    clusters: list[ProcessCluster] = []

    def make(**kw) -> ProcessCluster:
        c = ProcessCluster(tmp_path / f"cluster{len(clusters)}", **kw)
        clusters.append(c)
        return c

    yield make
    for c in clusters:
        try:
            print(c.describe())  # shown by pytest only when the test failed
        except Exception as e:  # noqa: BLE001
            print(f"(describe failed: {e!r})")
        c.close()


def register_all(c: ProcessCluster, names: list[str], via: list[int] | None = None, concurrency: int = 8) -> None:
    """Register every name (in parallel batches); each must be acknowledged."""
    addrs = c.addrs(via)

    async def go() -> list[dict]:
        sem = asyncio.Semaphore(concurrency)

        async def one(i: int, name: str) -> dict:
            async with sem:
                # spread the calls over the nodes: followers forward to the leader
                order = addrs[i % len(addrs):] + addrs[: i % len(addrs)]
                return await admin_client.register(order, name, PASSWORD, 15.0)

        return await asyncio.gather(*(one(i, n) for i, n in enumerate(names)))

    results = run(go())
    bad = [(n, r) for n, r in zip(names, results) if not r["success"]]
    assert not bad, bad


def logins_ok(c: ProcessCluster, names: list[str], via: list[int] | None = None, concurrency: int = 8) -> list[str]:
    """The names that could NOT log in (empty list = all fine)."""
    addrs = c.addrs(via)

    async def go() -> list[dict]:
        sem = asyncio.Semaphore(concurrency)

        async def one(name: str) -> dict:
            async with sem:
                return await admin_client.login(addrs, name, PASSWORD, 15.0)

        return await asyncio.gather(*(one(n) for n in names))

    return [n for n, r in zip(names, run(go())) if not r["success"]]


def cheap_writes(c: ProcessCluster, count: int, concurrency: int = 10) -> None:
    """`count` log entries without password hashing: logouts of unknown tokens (applied, answered 'not logged in')."""
    addrs = c.addrs()

    async def go() -> None:
        sem = asyncio.Semaphore(concurrency)

        async def one() -> None:
            async with sem:
                await admin_client.logout(addrs, secrets.token_urlsafe(16), 15.0)

        await asyncio.gather(*(one() for _ in range(count)))

    run(go())


def assert_same_databases(c: ProcessCluster, ids: list[int]) -> None:
    """Stop the given nodes and compare their databases' canonical dumps."""
    for nid in ids:
        assert c.stop(nid) == 0, f"node {nid} did not exit 0 on SIGTERM\n{c.log_tail(nid)}"
    dumps = {nid: c.dump(nid) for nid in ids}
    first = dumps[ids[0]]
    assert "users" in first
    for nid in ids[1:]:
        if dumps[nid] != first:
            import difflib

            diff = "\n".join(difflib.unified_diff(first.splitlines(), dumps[nid].splitlines(),
                                                  f"node{ids[0]}", f"node{nid}", lineterm="", n=1))
            raise AssertionError(f"node {nid}'s database differs from node {ids[0]}'s:\n{diff[:4000]}")


def test_leader_elected_within_2s_and_status_fields(make_cluster):
    c = make_cluster()
    t0 = time.monotonic()
    c.start_all()
    leader = c.wait_leader(timeout=10)
    elapsed = time.monotonic() - t0
    sts = c.statuses()
    # uptime_s counts from the node's start (after the interpreter and imports): the election proper
    since_node_start = max(st["uptime_s"] for st in sts.values() if st.get("up"))
    print(f"leader {leader} after {elapsed:.2f}s from spawning the processes, "
          f"{since_node_start:.2f}s from the first node's start")
    assert since_node_start < 2.0, f"leader only {since_node_start:.2f}s after the nodes started"
    assert elapsed < 4.0, f"leader only {elapsed:.2f}s after the processes were spawned"
    c.wait_serving()
    sts = c.statuses()
    for nid, st in sts.items():
        assert st["up"] and st["id"] == nid and st["address"] == c.address(nid)
        assert st["pid"] == c.nodes[nid].proc.pid
        assert st["role"] in ("leader", "follower")
        assert st["leader_id"] == leader and st["term"] >= 1
        for key in ("commit_index", "applied_index", "last_log_index", "snapshot_index", "log_bytes"):
            assert isinstance(st[key], int), key
        assert st["log_bytes"] > 0
        assert {m["id"] for m in st["members"]} == {1, 2, 3}


def test_sigkill_leader_fails_over_and_keeps_acknowledged_writes(make_cluster):
    c = make_cluster()
    c.start_all()
    old = c.wait_leader()
    old_term = c.status(old)["term"]
    names = [f"fail{i}" for i in range(12)]
    register_all(c, names)

    c.kill(old)
    t0 = time.monotonic()
    new = c.wait_leader(timeout=5.0)
    elapsed = time.monotonic() - t0
    print(f"new leader {new} {elapsed:.2f}s after SIGKILL of leader {old}")
    assert new != old
    assert elapsed < 3.0, f"new leader only after {elapsed:.2f}s"
    assert c.status(new)["term"] > old_term

    assert logins_ok(c, names) == []
    more = [f"after{i}" for i in range(5)]
    register_all(c, more)

    # the killed node comes back and catches up
    c.start(old)
    c.wait_serving([old])
    applied = c.wait_caught_up(timeout=20)
    assert c.status(old)["applied_index"] == applied
    assert logins_ok(c, names + more, via=[old]) == []


def test_wiped_node_comes_back_through_install_snapshot(make_cluster):
    c = make_cluster(snapshot_entries=20)
    c.start_all()
    leader = c.wait_leader()
    users = [f"snap{i}" for i in range(20)]
    register_all(c, users)
    cheap_writes(c, 80)
    lagger = next(nid for nid in c.nodes if nid != leader)
    c.kill(lagger)
    c.wipe(lagger)
    cheap_writes(c, 30)
    st = c.status(leader)
    assert st["snapshot_index"] >= 100, st  # the log before it is gone: only a snapshot can help
    c.start(lagger)
    c.wait_serving([lagger])
    applied = c.wait_caught_up(timeout=30)
    assert applied >= 130
    log = c.log(lagger)
    assert "installed snapshot at index" in log, c.log_tail(lagger)
    assert c.status(lagger)["snapshot_index"] > 0
    assert logins_ok(c, users[:5], via=[lagger]) == []
    c.wait_caught_up(timeout=20)
    assert_same_databases(c, sorted(c.nodes))


def test_paused_leader_steps_down_and_no_acknowledged_write_is_lost(make_cluster):
    c = make_cluster()
    c.start_all()
    old = c.wait_leader()
    before = [f"pre{i}" for i in range(6)]
    register_all(c, before)

    c.pause(old)
    others = [n for n in c.nodes if n != old]
    t0 = time.monotonic()
    new = c.wait_leader(timeout=5.0, among=others)
    print(f"leader {new} elected {time.monotonic() - t0:.2f}s after SIGSTOP of leader {old}")
    new_term = c.status(new)["term"]

    # A write sent to the frozen leader waits in its socket; it is answered (either way) after SIGCONT.
    stale: dict = {}

    def write_to_old() -> None:
        try:
            stale["res"] = run(admin_client.register([c.address(old)], "stale0", PASSWORD, 20.0))
        except Exception as e:  # noqa: BLE001
            stale["err"] = repr(e)

    t = threading.Thread(target=write_to_old)
    t.start()
    during = [f"during{i}" for i in range(6)]
    register_all(c, during, via=others)
    c.resume(old)

    def stepped_down() -> bool:
        st = c.status(old)
        return st.get("up") and st["role"] == "follower" and st["term"] >= new_term and st["leader_id"] not in (0, old)

    wait_until(stepped_down, 5.0, f"node {old} to step down")
    t.join(30)
    assert not t.is_alive()
    acked = before + during + (["stale0"] if stale.get("res", {}).get("success") else [])
    print(f"write sent to the paused leader: {stale}")
    c.wait_caught_up(timeout=20)
    for via in ([old], others):
        assert logins_ok(c, acked, via=via) == []


def test_crashed_replicator_is_restarted_and_node_keeps_serving(make_cluster):
    c = make_cluster()
    # Every node crashes each of its replicators twice, 1 s after start.  The leader's replicators carry
    # heartbeats, a follower's replicator to the leader carries the answers: each node hits at least one.
    for nid in c.nodes:
        spec = ",".join(f"replicator-{peer}:1.0:2" for peer in c.nodes if peer != nid)
        c.nodes[nid].env = {"RAILRAFT_CRASH_ACTOR": spec}
    c.start_all()
    leader = c.wait_leader()
    for nid in c.nodes:
        wait_until(lambda nid=nid: "restart #2" in c.log(nid), 10.0, f"node {nid} to restart a crashed replicator twice")
    for peer in c.nodes:
        if peer != leader:
            assert f"actor replicator-{peer} crashed (InjectedCrash" in c.log(leader)
    for nid in c.nodes:
        assert "escalating" not in c.log(nid)
    names = [f"crash{i}" for i in range(6)]
    for nid in c.nodes:
        register_all(c, names[2 * (nid - 1): 2 * nid], via=[nid])
    assert all(c.nodes[nid].running() for nid in c.nodes)
    c.wait_caught_up(timeout=10)
    assert logins_ok(c, names) == []
    assert c.wait_leader() == leader  # a replicator restart is no reason for an election


def test_membership_changes_and_leader_transfer_under_load(make_cluster):
    c = make_cluster()
    c.start_all()
    c.wait_leader()
    new = c.add_joining()
    everyone = c.addrs(list(c.nodes))  # includes node 4's address before it runs
    acked: list[str] = []
    failed: list[str] = []
    ambiguous: list[str] = []
    stop = threading.Event()
    writer = threading.Thread(
        target=lambda: run(write_load(everyone, "load", stop.is_set, acked, failed, ambiguous, PASSWORD, concurrency=4))
    )
    writer.start()
    try:
        time.sleep(1.0)
        c.start(new.id)
        c.wait_serving([new.id])
        t0 = time.monotonic()
        res = c.add_node(new.id)
        print(f"add-node: {res} in {time.monotonic() - t0:.2f}s")
        assert res["ok"], res
        leader = c.wait_leader()
        members = {m["id"]: m["kind"] for m in c.status(leader)["members"]}
        assert members.get(new.id) == "voter", members

        victim = next(nid for nid in (1, 2, 3) if nid != leader)
        res = c.remove_node(victim)
        assert res["ok"], res
        wait_until(lambda: victim not in {m["id"] for m in c.status(c.wait_leader())["members"]}, 5.0,
                   f"node {victim} to leave the configuration")
        assert c.stop(victim) == 0

        res = c.transfer_leader(new.id)
        assert res["ok"], res
        assert c.wait_leader(timeout=5.0) == new.id
        time.sleep(1.0)
    finally:
        stop.set()
        writer.join(60)
    assert not writer.is_alive()
    print(f"{len(acked)} registrations acknowledged during the changes, {len(failed)} failed: {failed[:5]}, "
          f"{len(ambiguous)} answered 'taken' after a retry: {ambiguous}")
    assert len(acked) >= 10
    assert not failed, failed[:10]
    assert logins_ok(c, acked + ambiguous) == []
    members = sorted(nid for nid in c.nodes if nid != victim)
    c.wait_caught_up(members, timeout=20)
    assert_same_databases(c, members)


def test_node_log_json_format(make_cluster):
    c = make_cluster(log_format="json")
    c.start_all()
    c.wait_leader()

    def records() -> list[dict]:
        out = []
        for line in c.log(1).splitlines():
            if line.startswith("==="):
                continue
            out.append(json.loads(line))  # every other line is one JSON object
        return out

    # wait_leader asks the nodes; node 1 may log that it learnt the leader a moment later.
    wait_until(lambda: [r for r in records() if r["term"] and "leader is now" in r["message"]], 5.0,
               "node 1 logging the leader it learnt, with its term")
    for r in records():
        assert {"ts", "level", "node", "term", "message"} <= set(r), r
        assert r["node"] == 1


def test_removing_the_leader_hands_over_first(make_cluster):
    """`remove-node` of the current leader: leadership moves to another voter, then the removal commits,
    and the cluster keeps serving without waiting for an election timeout."""
    c = make_cluster()
    c.start_all()
    leader = c.wait_leader()
    register_all(c, ["before1", "before2"])
    t0 = time.monotonic()
    res = c.remove_node(leader)
    elapsed = time.monotonic() - t0
    assert res["ok"], res
    assert elapsed < 5.0, f"removing the leader took {elapsed:.1f}s"
    new = c.wait_leader(timeout=5.0)
    assert new != leader
    wait_until(lambda: leader not in {m["id"] for m in c.status(new)["members"]}, 5.0,
               f"node {leader} to leave the configuration")
    rest = [nid for nid in c.nodes if nid != leader]
    register_all(c, ["after1"], via=rest)
    assert logins_ok(c, ["before1", "before2", "after1"], via=rest) == []
