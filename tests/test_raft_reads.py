"""Linearizable reads without writing to the log (dissertation §6.4): ReadIndex and the leader lease.

§6.4: "1. If the leader has not yet marked an entry from its current term committed, it waits until it has
done so.  2. The leader saves its current commit index in a local variable readIndex.  3. The leader needs to
make sure it hasn't been superseded by a newer leader of which it is unaware.  It issues a new round of
heartbeats and waits for their acknowledgments from a majority of the cluster.  4. The leader waits for its
state machine to advance at least as far as the readIndex" (the runtime's part: a ReadState says which index
to wait for).  §6.4.1: followers can serve reads by asking the leader for a read index.  §6.4 (leases): "the
leader would use the normal heartbeat mechanism to maintain a lease".
"""

from __future__ import annotations

import pytest

from raft.types import ConfChange, ConfChangeType, MsgType, ReadState, Role
from tests.raft_harness import ELECTION, Network, drain, make_leader, msg, new_core, step


def _hb_ack(core, frm, ctx, index=0):
    return step(core, msg(MsgType.HEARTBEAT_RESP, frm, core.id, core.term, context=ctx, index=index))


def test_read_index_waits_for_a_heartbeat_round():
    """§6.4 steps 2-3: the leader saves its commit index as the read index, issues a new round of heartbeats,
    and answers only once a majority acknowledged them."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.read_index(b"r1")
    out = drain(core)
    assert out.read_states == []
    beats = out.of(MsgType.HEARTBEAT)
    assert sorted(m.to for m in beats) == [2, 3] and all(m.context == b"r1" for m in beats)
    out = _hb_ack(core, 2, b"r1")
    assert out.read_states == [ReadState(2, b"r1")]


def test_read_index_needs_a_majority_of_acknowledgements():
    """§6.4 step 3: "waits for their acknowledgments from a majority of the cluster" (3 of 5)."""
    core = new_core(1, voters=range(1, 6))
    make_leader(core, acks=True)
    core.read_index(b"r")
    drain(core)
    assert _hb_ack(core, 2, b"r").read_states == []
    assert _hb_ack(core, 2, b"r").read_states == [], "the same follower twice is still one acknowledgement"
    assert _hb_ack(core, 3, b"r").read_states == [ReadState(2, b"r")]


def test_read_index_is_the_commit_index_when_asked():
    """§6.4 step 2: the read index is the commit index at the time of the request, even if the commit index
    moves on while the heartbeat round is under way."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.read_index(b"r")
    drain(core)
    core.propose(b"w")
    drain(core)
    step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    assert core.log.committed == 3
    assert _hb_ack(core, 2, b"r").read_states == [ReadState(2, b"r")]


def test_new_leader_serves_reads_after_committing_its_first_entry():
    """§6.4 step 1: "If the leader has not yet marked an entry from its current term committed, it waits until it
    has done so" -- the read index is then at least the leader's no-op."""
    core = new_core(1, terms=[1, 1], term=1)
    make_leader(core)
    noop = core.log.last_index()
    core.read_index(b"r")
    out = drain(core)
    assert not [m for m in out.of(MsgType.HEARTBEAT) if m.context == b"r"]
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=noop))
    assert core.log.committed == noop
    assert [m.to for m in out.of(MsgType.HEARTBEAT) if m.context == b"r"] == [2, 3]
    assert _hb_ack(core, 3, b"r").read_states == [ReadState(noop, b"r")]


def test_one_heartbeat_round_confirms_every_earlier_read():
    """§6.4 "the leader can amortize the cost of confirming its leadership": one acknowledged round confirms
    every read queued before it; the reads come out in order."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.read_index(b"a")
    core.read_index(b"b")
    out = drain(core)
    assert {m.context for m in out.of(MsgType.HEARTBEAT)} == {b"a", b"b"}
    out = _hb_ack(core, 2, b"b")
    assert out.read_states == [ReadState(2, b"a"), ReadState(2, b"b")]
    assert _hb_ack(core, 2, b"a").read_states == []


def test_duplicate_read_request_is_answered_once():
    core = new_core(1)
    make_leader(core, acks=True)
    core.read_index(b"r")
    core.read_index(b"r")
    drain(core)
    assert _hb_ack(core, 2, b"r").read_states == [ReadState(2, b"r")]
    assert _hb_ack(core, 3, b"r").read_states == []


def test_deposed_leader_never_answers_its_reads():
    """§6.4 step 3 exists because the leader may have been superseded: a leader that learns of a newer term
    before a majority confirmed it answers no pending read."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.read_index(b"r")
    drain(core)
    step(core, msg(MsgType.HEARTBEAT, 2, 1, core.term + 1))
    assert core.role == Role.FOLLOWER
    out = _hb_ack(core, 3, b"r")
    assert out.read_states == []


def test_follower_read_goes_through_the_leader():
    """§6.4.1 "the follower could issue a request to the leader that just asked for a current readIndex"."""
    net = Network(3)
    net.elect(1)
    net.propose(1, b"x")
    net.clear_trace()
    net[2].read_index(b"f")
    net.stabilize()
    assert net.nodes[2].read_states == [ReadState(3, b"f")]
    [req] = net.sent_of(MsgType.READ_INDEX)
    assert (req.frm, req.to, req.context) == (2, 1, b"f")
    [resp] = net.sent_of(MsgType.READ_INDEX_RESP)
    assert (resp.frm, resp.to, resp.index, resp.context) == (1, 2, 3, b"f")
    assert [m.to for m in net.sent_of(MsgType.HEARTBEAT, frm=1) if m.context == b"f"] == [2, 3]


def test_follower_without_a_leader_drops_the_read():
    core = new_core(2)
    core.read_index(b"f")
    out = drain(core)
    assert out.all == [] and out.read_states == []


def test_single_voter_leader_answers_at_once():
    """§6.4: with one voter, the leader alone is a majority: no heartbeat round is needed."""
    net = Network(3)
    net.elect(1)
    for nid in (3, 2):
        net[1].propose_conf_change(ConfChange(ConfChangeType.REMOVE, nid))
        net.stabilize()
    assert net[1].conf().voters == {1} and net[1].role == Role.LEADER
    net.clear_trace()
    net[1].read_index(b"r")
    net.stabilize()
    assert net.nodes[1].read_states == [ReadState(net[1].log.committed, b"r")]
    assert not net.sent_of(MsgType.HEARTBEAT)


# =====================================================================================================
# leader lease (§6.4)
# =====================================================================================================


@pytest.mark.parametrize(
    "check_quorum,silent_ticks,immediate",
    [
        pytest.param(True, 0, True, id="6.4 lease: a leader answers a read at once while its lease holds"),
        pytest.param(
            True,
            ELECTION - 3,
            True,
            id="6.4 lease: the lease lasts an election timeout (minus a clock "
            "margin) after the heartbeat a majority acknowledged",
        ),
        pytest.param(True, ELECTION - 2, False, id="6.4 lease: after that it needs a heartbeat round again"),
        pytest.param(False, 0, False, id="6.4 lease: without check-quorum followers grant no lease"),
    ],
)
def test_lease_read(check_quorum, silent_ticks, immediate):
    net = Network(3, check_quorum=check_quorum)
    net.elect(1)
    net.tick(1)  # a heartbeat round that both followers acknowledge
    net.isolate(1)
    net.tick(silent_ticks, ids=[1])
    assert net[1].role == Role.LEADER
    net.clear_trace()
    net[1].read_index(b"r", lease=True)
    net.flush(1)
    if immediate:
        assert net.nodes[1].read_states == [ReadState(net[1].log.committed, b"r")]
        assert not net.sent_of(MsgType.HEARTBEAT)
    else:
        assert net.nodes[1].read_states == []
        assert [m.to for m in net.sent_of(MsgType.HEARTBEAT) if m.context == b"r"] == [2, 3]


def test_no_lease_reads_once_a_leadership_transfer_started():
    """§3.10 / §6.4: a transfer lets the target's election break the followers' leases, so the old leader may
    no longer trust its own."""
    net = Network(3, check_quorum=True)
    net.elect(1)
    net.tick(1)
    net.cut(1, 2)
    net.propose(1, b"x")  # node 2 falls behind, so the transfer cannot complete at once
    net.tick(1)
    net[1].read_index(b"before", lease=True)
    net.flush(1)
    assert [r.context for r in net.nodes[1].read_states] == [b"before"]
    net[1].transfer_leadership(2)
    net[1].read_index(b"after", lease=True)
    net.flush(1)
    assert [r.context for r in net.nodes[1].read_states] == [b"before"]
