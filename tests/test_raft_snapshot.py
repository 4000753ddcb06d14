"""Log compaction and InstallSnapshot (Raft paper §7, dissertation chapter 5).

Paper Figure 13 (InstallSnapshot RPC, receiver implementation): "1. Reply immediately if term < currentTerm
... 6. If existing log entry has same index and term as snapshot's last included entry, retain log entries
following it and reply  7. Discard the entire log  8. Reset state machine using snapshot contents (and load
snapshot's cluster configuration)".
"""

from __future__ import annotations

import pytest

from raft.core import LogInvariantError
from raft.types import ConfChange, ConfChangeType, Configuration, Message, MsgType, Role, SnapshotMeta
from tests.raft_harness import Network, drain, new_core, snapshot_message, step

CONF3 = Configuration(frozenset({1, 2, 3}))


def _lagging_follower_network() -> Network:
    """Leader 1 has compacted its log past everything node 3 holds."""
    net = Network(3)
    net.elect(1)
    net.isolate(3)
    for i in range(5):
        net.propose(1, f"e{i}".encode())
    for nid in (1, 2):
        net.compact(nid, net[nid].log.applied)
    assert net[1].log.snap.index == 7 and net[3].log.last_index() == 2
    return net


def test_leader_sends_a_snapshot_when_the_entries_are_gone():
    """§7 "the leader must occasionally send snapshots to followers that lag behind. This happens when the
    leader has already discarded the next log entry that it needs to send to a follower"."""
    net = _lagging_follower_network()
    net.heal()
    net.clear_trace()
    net.tick(1)
    snaps = net.sent_of(MsgType.SNAP)
    assert [(m.frm, m.to) for m in snaps] == [(1, 3)]
    meta = snaps[0].snapshot.meta
    assert (meta.index, meta.term, meta.conf) == (7, net[1].term, CONF3)
    assert net[3].log.snap == meta
    assert net[3].log.committed == net[1].log.committed == 7
    [x] = net.propose(1, b"after")
    net.tick(1)
    assert net[3].log.entries == net[1].log.entries and net[3].log.committed == x
    assert net.nodes[3].applied_index == x


def test_follower_installs_a_snapshot_beyond_its_log():
    """Fig13 7-8: "Discard the entire log; Reset state machine using snapshot contents (and load snapshot's
    cluster configuration)" -- the snapshot goes to the runtime in the Ready, the ack after it is durable."""
    core = new_core(2, terms=[1], term=2)
    conf = Configuration(frozenset({1, 2, 3, 4}), frozenset({5}))
    meta = SnapshotMeta(9, 3, conf)
    out = step(core, snapshot_message(1, 2, 3, meta))
    assert [rd.snapshot.meta for rd in out.readies if rd.snapshot is not None] == [meta]
    assert core.log.snap == meta and core.log.entries == []
    assert core.log.committed == core.log.last_index() == 9
    assert core.conf() == conf
    assert [(m.type, m.index, m.reject) for m in out.after_persist] == [(MsgType.APP_RESP, 9, False)]
    assert core.leader == 1 and core.term == 3


def test_follower_keeps_entries_after_a_snapshot_it_already_has():
    """Fig13 6: "If existing log entry has same index and term as snapshot's last included entry, retain log
    entries following it and reply"."""
    core = new_core(2, terms=[1, 2, 2, 2], term=2)
    before = list(core.log.entries)
    out = step(core, snapshot_message(1, 2, 2, SnapshotMeta(3, 2, CONF3)))
    assert core.log.entries == before and core.log.last_index() == 5
    assert core.log.committed == 3
    assert all(rd.snapshot is None for rd in out.readies)
    assert [m.index for m in out.of(MsgType.APP_RESP)] == [3]


def test_follower_discards_a_log_that_conflicts_with_the_snapshot():
    """Fig13 7: a log whose entry at the snapshot's index has another term is discarded entirely."""
    core = new_core(2, terms=[1, 2, 2, 2], term=3)
    step(core, snapshot_message(1, 2, 3, SnapshotMeta(4, 3, CONF3)))
    assert core.log.snap.index == 4 and core.log.snap.term == 3
    assert core.log.entries == [] and core.log.last_index() == 4


def test_stale_snapshot_is_acknowledged_but_not_installed():
    """A snapshot that covers nothing beyond the follower's commit index changes nothing (it is old news)."""
    core = new_core(2, terms=[1, 2, 2, 2], term=2, commit=4)
    before = list(core.log.entries)
    out = step(core, snapshot_message(1, 2, 2, SnapshotMeta(3, 2, CONF3)))
    assert core.log.entries == before and core.log.snap.index == 0
    assert [m.index for m in out.of(MsgType.APP_RESP)] == [4]
    assert all(rd.snapshot is None for rd in out.readies)


def test_snapshot_with_stale_term_is_refused():
    """Fig13 1: "Reply immediately if term < currentTerm"."""
    core = new_core(2, terms=[1], term=4)
    out = step(core, snapshot_message(1, 2, 3, SnapshotMeta(9, 3, CONF3)))
    assert core.log.last_index() == 2 and core.log.snap.index == 0
    assert all(rd.snapshot is None for rd in out.readies)
    assert not [m for m in out.after_persist if m.type == MsgType.APP_RESP]


def test_leader_sends_nothing_else_while_a_snapshot_is_in_flight():
    """etcd-io/raft SNAPSHOT mode: while the snapshot travels the leader sends that follower no appends; a
    failed delivery (SNAP_STATUS reject) puts it back to probing, and the next contact retries the snapshot."""
    net = _lagging_follower_network()
    net.heal()
    net.drop_type(MsgType.SNAP)
    net.tick(1)
    assert net[1].status()["progress"][3]["state"] == "snapshot"
    net.clear_trace()
    net.propose(1, b"x")
    assert not net.sent_of(MsgType.APP, to=3)
    net[1].step(Message(MsgType.SNAP_STATUS, frm=3, reject=True))
    assert net[1].status()["progress"][3]["state"] == "probe"
    net.heal()
    net.tick(1)
    assert len(net.sent_of(MsgType.SNAP, to=3)) == 1
    net.tick(1)
    assert net[1].status()["progress"][3]["state"] == "replicate"
    assert net[3].log.entries == net[1].log.entries


def test_compaction_is_limited_to_applied_entries():
    """§7 "each server takes snapshots independently, covering just the committed entries in its log" -- and
    only what the state machine has applied."""
    core = new_core(1, terms=[1, 1, 1], commit=3, applied=3)
    with pytest.raises(LogInvariantError):
        core.compact(4)
    meta = core.compact(3)
    assert (meta.index, meta.term, meta.conf) == (3, 1, CONF3)
    assert core.log.first_index() == 4 and [e.index for e in core.log.entries] == [4]
    assert core.log.term(3) == 1 and core.log.term(2) is None


def test_pending_snapshot_blocks_campaigning():
    """A node whose snapshot is not yet installed does not know its log: it may not campaign until it is."""
    core = new_core(2, terms=[1], term=2)
    core.step(snapshot_message(1, 2, 2, SnapshotMeta(9, 2, CONF3)))
    core.campaign()
    assert core.role == Role.FOLLOWER and core.term == 2
    drain(core)
    core.campaign()
    assert core.role == Role.CANDIDATE and core.term == 3


def test_new_learner_catches_up_from_a_snapshot():
    """Dissertation §4.2.1 + ch. 5: a new server's log is usually far behind; the leader first installs a
    snapshot, then streams the rest."""
    net = Network(3)
    net.elect(1)
    for i in range(4):
        net.propose(1, f"e{i}".encode())
    for nid in (1, 2, 3):
        net.compact(nid, net[nid].log.applied)
    net.add_node(4)
    net[1].propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    net.stabilize()
    net.tick(2)
    assert net.sent_of(MsgType.SNAP, to=4)
    assert net[4].log.snap.index == net[1].log.snap.index == 6
    assert net[4].log.entries == net[1].log.entries
    assert net[4].conf().learners == {4}
    assert net[4].log.committed == net[1].log.committed
