"""Leadership transfer (dissertation §3.10).

"1. The prior leader stops accepting new client requests.  2. The prior leader fully updates the target
server's log to match its own, using the normal log replication mechanism.  3. The prior leader sends a
TimeoutNow request to the target server.  This request has the same effect as the target server's election
timer firing: the target server starts a new election (incrementing its term and becoming a candidate). ...
If the transfer does not complete within about one election timeout, the prior leader aborts the transfer
and resumes accepting client requests."
"""

from __future__ import annotations

import pytest

from raft.types import ConfChange, ConfChangeType, MsgType, ProposalDropped, Role
from tests.raft_harness import ELECTION, Network, drain, make_leader, msg, new_core, step

TRANSFER = b"transfer"


@pytest.mark.parametrize(
    "pre_vote,check_quorum",
    [(False, False), (True, True)],
    ids=["3.10 transfer (plain Raft)", "3.10 transfer with pre-vote and check-quorum"],
)
def test_transfer_to_an_up_to_date_server(pre_vote, check_quorum):
    """§3.10 step 3: the target, already up to date, gets TimeoutNow at once, starts an election for the next
    term right away (no pre-vote: the leader vouched for it) and wins it."""
    net = Network(3, pre_vote=pre_vote, check_quorum=check_quorum)
    net.elect(1)
    net.tick(1)
    term = net[1].term
    net.clear_trace()
    net[1].transfer_leadership(2)
    net.stabilize()
    assert net.leaders() == [2] and net[2].term == term + 1
    assert net[1].role == Role.FOLLOWER and net[1].leader == 2
    assert [(m.frm, m.to) for m in net.sent_of(MsgType.TIMEOUT_NOW)] == [(1, 2)]
    assert not net.sent_of(MsgType.PRE_VOTE, frm=2)
    votes = net.sent_of(MsgType.VOTE, frm=2)
    assert votes and all(m.context == TRANSFER and m.term == term + 1 for m in votes)


def test_transfer_first_brings_the_target_up_to_date():
    """§3.10 step 2: "The prior leader fully updates the target server's log to match its own" -- TimeoutNow
    goes only once the target has acknowledged the leader's last entry."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose_many([b"a", b"b"])
    drain(core)
    step(core, msg(MsgType.APP_RESP, 3, 1, core.term, index=4))
    core.transfer_leadership(2)
    out = drain(core)
    assert not out.of(MsgType.TIMEOUT_NOW)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    assert not out.of(MsgType.TIMEOUT_NOW)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=4))
    assert [m.to for m in out.of(MsgType.TIMEOUT_NOW)] == [2]


def test_leader_refuses_requests_during_a_transfer():
    """§3.10 step 1: "The prior leader stops accepting new client requests"."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose(b"x")
    drain(core)
    core.transfer_leadership(2)
    drain(core)
    with pytest.raises(ProposalDropped):
        core.propose(b"y")
    with pytest.raises(ProposalDropped):
        core.propose_conf_change(ConfChange(ConfChangeType.ADD_LEARNER, 4))
    assert core.log.last_index() == 3


def test_transfer_is_aborted_after_an_election_timeout():
    """§3.10 "If the transfer does not complete within about one election timeout, the prior leader aborts the
    transfer and resumes accepting client requests"."""
    net = Network(3)
    net.elect(1)
    net.isolate(2)
    net.propose(1, b"x")
    net[1].transfer_leadership(2)
    net.stabilize()
    with pytest.raises(ProposalDropped):
        net[1].propose(b"y")
    net.tick(ELECTION, ids=[1, 3])
    assert net.leaders() == [1]
    idx = net.propose(1, b"y")
    assert net[1].log.committed == idx[0]


@pytest.mark.parametrize(
    "target",
    [
        pytest.param(1, id="3.10 a transfer to the leader itself is a no-op"),
        pytest.param(9, id="3.10 a transfer to a server outside the configuration is ignored"),
        pytest.param(4, id="3.10 a transfer to a learner (it cannot be elected) is ignored"),
    ],
)
def test_transfer_to_an_unsuitable_target_is_ignored(target):
    core = new_core(1, learners=[4])
    make_leader(core, acks=True)
    core.transfer_leadership(target)
    out = drain(core)
    assert not out.of(MsgType.TIMEOUT_NOW)
    assert core.propose(b"still leading") == 3


def test_follower_forwards_a_transfer_request_to_the_leader():
    core = new_core(2, term=2)
    step(core, msg(MsgType.HEARTBEAT, 1, 2, 2))
    core.transfer_leadership(3)
    out = drain(core)
    [m] = out.of(MsgType.TRANSFER_LEADER)
    assert (m.to, m.index) == (1, 3)
    assert core.role == Role.FOLLOWER


@pytest.mark.parametrize("pre_vote", [False, True])
def test_timeout_now_starts_an_election_at_once(pre_vote):
    """§3.10 "This request has the same effect as the target server's election timer firing: the target server
    starts a new election (incrementing its term and becoming a candidate)" -- skipping pre-vote."""
    core = new_core(2, term=2, pre_vote=pre_vote, check_quorum=True)
    step(core, msg(MsgType.HEARTBEAT, 1, 2, 2))
    out = step(core, msg(MsgType.TIMEOUT_NOW, 1, 2, 2))
    assert core.role == Role.CANDIDATE and core.term == 3 and core.vote == 2
    votes = out.of(MsgType.VOTE)
    assert sorted(m.to for m in votes) == [1, 3] and all(m.context == TRANSFER for m in votes)


def test_timeout_now_to_a_learner_is_ignored():
    """Only voters campaign, even when told to."""
    core = new_core(4, voters=[1, 2, 3], learners=[4], term=2)
    step(core, msg(MsgType.HEARTBEAT, 1, 4, 2))
    out = step(core, msg(MsgType.TIMEOUT_NOW, 1, 4, 2))
    assert core.role == Role.FOLLOWER and core.term == 2
    assert not out.of(MsgType.VOTE)
