"""The dissertation's election extensions (Ongaro, "Consensus: Bridging Theory and Practice"):

* pre-vote (§9.6): a would-be candidate first asks whether it could win, without touching any term;
* check-quorum (§6.2): a leader that has not heard from a majority for an election timeout steps down;
* disruptive servers / the leader lease on votes (§4.2.3): a server that heard from a leader within the
  minimum election timeout ignores vote requests (unless a leadership transfer started them);
* implementation rule: a node that just (re)started treats itself as inside a leader's lease for one
  election timeout.
"""

from __future__ import annotations

import pytest

from raft.types import NONE, MsgType, Role
from tests.raft_harness import ELECTION, Network, drain, make_leader, msg, new_core, step, vote_req

TRANSFER = b"transfer"

# =====================================================================================================
# pre-vote (§9.6)
# =====================================================================================================


@pytest.mark.parametrize("n", [3, 5])
def test_pre_candidate_asks_before_incrementing_its_term(n):
    """§9.6 "a candidate would first ask other servers whether its log was up-to-date enough to get their vote.
    Only if the candidate believed it could get votes from a majority of the cluster would it increment its
    term and start a normal election" -- the pre-vote request names the term it would use, term+1."""
    core = new_core(1, voters=range(1, n + 1), terms=[2, 3], term=3, vote=2, pre_vote=True)
    core.campaign()
    out = drain(core)
    assert core.role == Role.PRE_CANDIDATE
    assert core.term == 3 and core.vote == 2
    assert all(rd.hard_state is None for rd in out.readies), "a pre-vote persists nothing"
    reqs = out.of(MsgType.PRE_VOTE)
    assert sorted(m.to for m in reqs) == list(range(2, n + 1))
    for m in reqs:
        assert (m.term, m.index, m.log_term) == (4, 3, 3)
    assert not out.of(MsgType.VOTE)


def test_won_pre_vote_starts_a_real_election():
    """§9.6 "Only if the candidate believed it could get votes from a majority ... would it increment its term
    and start a normal election"."""
    core = new_core(1, voters=range(1, 6), pre_vote=True)
    core.campaign()
    drain(core)
    step(core, msg(MsgType.PRE_VOTE_RESP, 2, 1, 2))
    assert core.role == Role.PRE_CANDIDATE
    out = step(core, msg(MsgType.PRE_VOTE_RESP, 3, 1, 2))
    assert core.role == Role.CANDIDATE and core.term == 2 and core.vote == 1
    votes = out.of(MsgType.VOTE)
    assert sorted(m.to for m in votes) == [2, 3, 4, 5]
    assert all(m.term == 2 and m.context == b"" for m in votes)


def test_lost_pre_vote_leaves_the_term_alone():
    """§9.6 a pre-candidate refused by a majority does not disturb anything: same term, same vote, follower."""
    core = new_core(1, terms=[2], term=2, vote=3, pre_vote=True)
    core.campaign()
    drain(core)
    step(core, msg(MsgType.PRE_VOTE_RESP, 2, 1, 2, reject=True))
    assert core.role == Role.PRE_CANDIDATE
    step(core, msg(MsgType.PRE_VOTE_RESP, 3, 1, 2, reject=True))
    assert core.role == Role.FOLLOWER and core.term == 2 and core.vote == 3


PRE_VOTE_VOTER_CASES = [
    # voter: term 2, voted for 3, log ends (3, 2); request (term, last_index, last_term) -> grant?
    pytest.param(
        3,
        3,
        2,
        True,
        id="9.6 a server grants a pre-vote for a later term if the candidate's log is up-to-date, even "
        "though it already voted in its own term",
    ),
    pytest.param(3, 2, 2, False, id="9.6 a server refuses a pre-vote if its own log is more up-to-date"),
    pytest.param(2, 3, 2, False, id="9.6 a pre-vote for the voter's own term is bound by its vote there"),
    pytest.param(1, 9, 9, False, id="9.6 a pre-vote for a stale term is refused"),
]


@pytest.mark.parametrize("term,last_index,last_term,granted", PRE_VOTE_VOTER_CASES)
def test_pre_vote_voter(term, last_index, last_term, granted):
    """§9.6 the voter answers a pre-vote without changing its term or its vote (nothing to persist)."""
    core = new_core(1, terms=[1, 2], term=2, vote=3, pre_vote=True)
    out = step(core, vote_req(2, 1, term, last_index, last_term, pre=True))
    assert core.term == 2 and core.vote == 3 and core.role == Role.FOLLOWER
    assert all(rd.hard_state is None for rd in out.readies)
    [r] = out.of(MsgType.PRE_VOTE_RESP)
    assert r.reject is (not granted) and r.to == 2
    assert r.term == (term if granted else 2)
    assert r in out.immediate


def test_pre_candidate_adopts_a_newer_term_from_a_refusal():
    """Fig2 all servers: a refusal carrying a newer term teaches the pre-candidate that term."""
    core = new_core(1, term=2, pre_vote=True)
    core.campaign()
    drain(core)
    step(core, msg(MsgType.PRE_VOTE_RESP, 2, 1, 5, reject=True))
    assert core.role == Role.FOLLOWER and core.term == 5


@pytest.mark.parametrize(
    "pre_vote,disrupted",
    [
        pytest.param(True, False, id="9.6 with pre-vote a rejoining partitioned server does not disrupt the leader"),
        pytest.param(
            False, True, id="9.6 without pre-vote a rejoining server with an inflated term deposes the leader"
        ),
    ],
)
def test_partitioned_server_rejoins(pre_vote, disrupted):
    """§9.6 "a server that is partitioned ... will not be able to increment its term, since it cannot receive
    permission from a majority" -- so on rejoining it cannot force the leader to step down."""
    net = Network(3, pre_vote=pre_vote)
    net.elect(1)
    term = net[1].term
    net.isolate(3)
    net.propose(1, b"a")
    net.tick(5 * ELECTION)
    assert (net[3].term > term) is disrupted
    net.heal()
    net.tick(2 * ELECTION)
    assert (net[1].term != term) is disrupted
    if not disrupted:
        assert net.leaders() == [1] and net[3].term == term and net[3].leader == 1
    net.tick(3 * ELECTION)
    assert len(net.leaders()) == 1 and net[3].role != Role.LEADER


def test_stale_leader_learns_the_new_term_from_append_replies():
    """§5.1 "If a candidate or leader discovers that its term is out of date, it immediately reverts to follower
    state" -- with pre-vote on, followers answer a stale leader's heartbeats with their newer term (only the stale
    leader's clock runs here, so that answer is the only way it can learn)."""
    net = Network(3, pre_vote=True)
    net.elect(1)
    net.isolate(1)
    net.tick(3 * ELECTION, ids=[2, 3])
    [new] = [i for i in net.leaders() if i != 1]
    assert net[1].role == Role.LEADER and net[1].term < net[new].term
    net.heal()
    net.tick(1, ids=[1])
    assert net[1].role == Role.FOLLOWER and net[1].term == net[new].term
    assert net.leaders() == [new]


# =====================================================================================================
# check-quorum (§6.2)
# =====================================================================================================


@pytest.mark.parametrize(
    "check_quorum,steps_down",
    [
        pytest.param(
            True,
            True,
            id="6.2 a leader steps down if an election timeout elapses without a successful "
            "round of heartbeats to a majority of its cluster",
        ),
        pytest.param(False, False, id="6.2 without check-quorum an isolated leader keeps leading"),
    ],
)
def test_isolated_leader_steps_down(check_quorum, steps_down):
    net = Network(3, check_quorum=check_quorum)
    net.elect(1)
    term = net[1].term
    net.isolate(1)
    net.tick(2 * ELECTION, ids=[1])
    if steps_down:
        assert net[1].role == Role.FOLLOWER and net[1].leader == NONE
        assert net[1].term == term, "stepping down does not change the term"
    else:
        assert net[1].role == Role.LEADER


def test_leader_with_an_active_quorum_stays():
    """§6.2 a leader that hears from a majority (itself and one of two followers) keeps leading."""
    net = Network(3, check_quorum=True)
    net.elect(1)
    net.cut(1, 3)
    net.tick(5 * ELECTION, ids=[1, 2])
    assert net[1].role == Role.LEADER and net[2].leader == 1


def test_check_quorum_steps_down_within_two_election_timeouts():
    """§6.2 the step-down comes within (at most) two election timeouts of the last heartbeat acknowledged."""
    net = Network(3, check_quorum=True)
    net.elect(1)
    net.tick(1)
    net.isolate(1)
    for n in range(1, 2 * ELECTION + 1):
        net.tick(1, ids=[1])
        if net[1].role != Role.LEADER:
            break
    assert net[1].role == Role.FOLLOWER
    assert ELECTION - 1 <= n <= 2 * ELECTION


# =====================================================================================================
# disruptive servers (§4.2.3) and leadership-transfer votes
# =====================================================================================================

DISRUPT_CASES = [
    pytest.param(
        True,
        False,
        b"",
        0,
        False,
        id="4.2.3 if a server receives a RequestVote request within the minimum election timeout of hearing "
        "from a current leader, it does not update its term or grant its vote",
    ),
    pytest.param(True, True, b"", 0, False, id="4.2.3 ... nor a pre-vote"),
    pytest.param(
        True, False, TRANSFER, 0, True, id="3.10 a vote started by a leadership transfer may disrupt the leader's lease"
    ),
    pytest.param(
        True,
        False,
        b"",
        ELECTION,
        True,
        id="4.2.3 after an election timeout without hearing from the leader the server votes again",
    ),
    pytest.param(False, False, b"", 0, True, id="4.2.3 without check-quorum there is no lease on votes"),
]


@pytest.mark.parametrize("check_quorum,pre,context,silence,heeded", DISRUPT_CASES)
def test_vote_requests_inside_the_leader_lease(check_quorum, pre, context, silence, heeded):
    core = new_core(2, term=2, check_quorum=check_quorum, pre_vote=pre)
    step(core, msg(MsgType.HEARTBEAT, 1, 2, 2))
    assert core.leader == 1
    for _ in range(silence):
        core.tick()
    drain(core)
    out = step(core, vote_req(3, 2, 9, 99, 99, pre=pre, context=context))
    resp = out.of(MsgType.PRE_VOTE_RESP if pre else MsgType.VOTE_RESP)
    if heeded:
        assert [r.reject for r in resp] == [False]
        if not pre:
            assert core.term == 9 and core.vote == 3
    else:
        assert resp == []
        assert core.term == 2 and core.vote == NONE and core.leader == 1


def test_leader_ignores_vote_requests_while_it_holds_its_lease():
    """§4.2.3 with check-quorum the leader itself also disregards a disruptive vote request."""
    core = new_core(1, check_quorum=True)
    make_leader(core, acks=True)
    term = core.term
    out = step(core, vote_req(3, 1, term + 5, 99, 99))
    assert core.role == Role.LEADER and core.term == term
    assert not out.of(MsgType.VOTE_RESP)


@pytest.mark.parametrize(
    "ticks,heeded",
    [
        pytest.param(
            0,
            False,
            id="a node that just started acts as inside a leader's lease for one election "
            "timeout (it may have acknowledged a leader before it crashed)",
        ),
        pytest.param(ELECTION - 1, False, id="the restart lease lasts a full election timeout"),
        pytest.param(ELECTION, True, id="once an election timeout has passed, it votes"),
    ],
)
def test_restarted_node_sits_out_one_election_timeout(ticks, heeded):
    core = new_core(2, term=2, check_quorum=True, warm=False)
    for _ in range(ticks):
        core.tick()
    drain(core)
    out = step(core, vote_req(3, 2, 9, 99, 99))
    resp = out.of(MsgType.VOTE_RESP)
    if heeded:
        assert [r.reject for r in resp] == [False] and core.term == 9
    else:
        assert resp == [] and core.term == 2
