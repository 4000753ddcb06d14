"""Single-server membership changes (dissertation §4.1-4.2, §4.2.1 catching up, §4.2.2 removing the leader),
with learners (non-voting members, etcd's form of §4.2.1's catch-up phase)."""

from __future__ import annotations

import pytest

from raft.types import ConfChange, ConfChangeType, Entry, EntryType, Message, MsgType, NotLeader, RaftError, Role
from tests.raft_harness import (
    ELECTION,
    Network,
    ack_all,
    conf_entry,
    drain,
    make_candidate,
    make_leader,
    msg,
    new_core,
    step,
)

ADD, PROMOTE, REMOVE = ConfChangeType.ADD_LEARNER, ConfChangeType.PROMOTE, ConfChangeType.REMOVE


def _cc(t, n):
    return ConfChange(t, n)


# =====================================================================================================
# which configuration is in force
# =====================================================================================================


def test_follower_uses_the_latest_configuration_in_its_log():
    """§4.1 "a server always uses the latest configuration in its log, regardless of whether the entry is
    committed" -- and §4.1 "a log entry for a configuration change can be removed (if leadership changes); in
    this case, a server must be prepared to fall back to the previous configuration in its log"."""
    core = new_core(2, term=2)
    cfg = conf_entry(2, 2, [1, 2, 3, 4])
    step(core, Message(MsgType.APP, to=2, frm=1, term=2, index=1, log_term=1, entries=(cfg,), commit=1))
    assert core.conf().voters == {1, 2, 3, 4}
    assert core.log.committed == 1
    other = Entry(3, 2, EntryType.NORMAL, b"new leader's entry")
    step(core, Message(MsgType.APP, to=2, frm=3, term=3, index=1, log_term=1, entries=(other,), commit=1))
    assert core.conf().voters == {1, 2, 3}


def test_leader_uses_a_new_configuration_as_soon_as_it_is_appended():
    """§4.1 "The new configuration takes effect on each server as soon as it is added to that server's log" --
    the leader starts replicating to the new member at once."""
    core = new_core(1)
    make_leader(core, acks=True)
    idx = core.propose_conf_change(_cc(ADD, 4))
    assert core.conf().learners == {4} and core.log.committed < idx
    out = drain(core)
    assert out.of(MsgType.APP, to=4)
    assert 4 in core.status()["progress"]


def test_new_quorum_counts_from_the_moment_of_append():
    """§4.1: with four voters of which two are down nothing commits; removing one of the dead voters makes
    the configuration of three voters govern commitment immediately, and the change itself commits."""
    net = Network(4)
    net.elect(1)
    net.stop(3)
    net.stop(4)
    [x] = net.propose(1, b"x")
    assert net[1].log.committed < x
    idx = net[1].propose_conf_change(_cc(REMOVE, 4))
    net.stabilize()
    assert net[1].conf().voters == {1, 2, 3}
    assert net[1].log.committed == idx


def test_one_membership_change_at_a_time():
    """§4.1 "The leader ... should not begin a new configuration change until the previous one has been
    committed" -- and §4.1 (the bug fix): a new leader may not change membership until it has committed an
    entry of its own term."""
    core = new_core(1)
    make_leader(core)
    with pytest.raises(RaftError):
        core.propose_conf_change(_cc(ADD, 4))
    ack_all(core)
    idx = core.propose_conf_change(_cc(ADD, 4))
    drain(core)
    with pytest.raises(RaftError):
        core.propose_conf_change(_cc(ADD, 5))
    ack_all(core)
    assert core.log.committed == idx
    core.propose_conf_change(_cc(ADD, 5))
    assert core.conf().learners == {4, 5}


REFUSED = [
    pytest.param(ADD, 2, id="an existing member cannot be added again"),
    pytest.param(PROMOTE, 2, id="only a learner can be promoted"),
    pytest.param(PROMOTE, 9, id="a stranger cannot be promoted"),
    pytest.param(REMOVE, 9, id="a server outside the configuration cannot be removed"),
    pytest.param(ADD, 0, id="node ids start at 1"),
]


@pytest.mark.parametrize("kind,node", REFUSED)
def test_invalid_membership_changes_are_refused(kind, node):
    core = new_core(1)
    make_leader(core, acks=True)
    last = core.log.last_index()
    with pytest.raises(RaftError):
        core.propose_conf_change(_cc(kind, node))
    assert core.log.last_index() == last and core.conf().voters == {1, 2, 3}


def test_the_last_voter_cannot_be_removed():
    net = Network(3)
    net.elect(1)
    for nid in (3, 2):
        net[1].propose_conf_change(_cc(REMOVE, nid))
        net.stabilize()
    assert net[1].conf().voters == {1}
    with pytest.raises(RaftError):
        net[1].propose_conf_change(_cc(REMOVE, 1))


# =====================================================================================================
# learners and catching up (§4.2.1)
# =====================================================================================================


def test_learner_receives_the_log_but_does_not_count_for_commitment():
    """§4.2.1 "the new server joins the cluster as a non-voting member. The leader replicates log entries to
    it, but it is not yet counted towards majorities for voting or commitment purposes"."""
    net = Network(4, voters=[1, 2, 3], learners=[4])
    net.elect(1)
    net.cut(1, 2)
    net.cut(1, 3)
    [x] = net.propose(1, b"x")
    assert net[4].log.last_index() == x
    assert net[1].log.committed < x
    net.heal()
    net.tick(1)
    assert net[1].log.committed == x and net[4].log.committed == x


def test_learner_never_campaigns():
    """§4.2.1 a non-voting member takes no part in elections: it never starts one."""
    net = Network(4, voters=[1, 2, 3], learners=[4])
    net.elect(1)
    term = net[1].term
    net.isolate(4)
    net.clear_trace()
    net.tick(5 * ELECTION, ids=[4])
    assert net[4].role == Role.FOLLOWER and net[4].term == term
    assert not [m for m in net.sent if m.frm == 4]


def test_candidate_ignores_learners():
    """§4.2.1 learners are not "counted towards majorities for voting": no vote is asked of them, and a
    learner's grant does not count."""
    core = new_core(1, voters=[1, 2, 3], learners=[4])
    out = make_candidate(core)
    assert sorted(m.to for m in out.of(MsgType.VOTE)) == [2, 3]
    step(core, msg(MsgType.VOTE_RESP, 4, 1, core.term))
    assert core.role == Role.CANDIDATE


@pytest.mark.parametrize(
    "lag,behind,allowed",
    [
        pytest.param(0, 3, False, id="4.2.1 a learner that has not caught up cannot be promoted"),
        pytest.param(0, 0, True, id="4.2.1 a caught-up learner can be promoted to voter"),
        pytest.param(3, 3, True, id="4.2.1 promote_lag: 'caught up' means within promote_lag entries of the commit"),
        pytest.param(2, 3, False, id="4.2.1 promote_lag: one entry too far behind"),
    ],
)
def test_promotion_waits_for_catch_up(lag, behind, allowed):
    core = new_core(1, learners=[4], promote_lag=lag)
    make_leader(core, acks=True)
    core.propose_many([b"a", b"b", b"c"])
    drain(core)
    last = core.log.last_index()
    for nid in (2, 3):
        step(core, msg(MsgType.APP_RESP, nid, 1, core.term, index=last))
    step(core, msg(MsgType.APP_RESP, 4, 1, core.term, index=last - behind))
    assert core.log.committed == last
    if allowed:
        core.propose_conf_change(_cc(PROMOTE, 4))
        assert core.conf().voters == {1, 2, 3, 4} and not core.conf().learners
    else:
        with pytest.raises(RaftError):
            core.propose_conf_change(_cc(PROMOTE, 4))
        assert core.conf().learners == {4}


def test_new_server_catches_up_as_learner_then_votes():
    """§4.2.1 end to end: a new, empty server is added as a learner, catches up through normal replication,
    is promoted, and from then on counts towards the majority."""
    net = Network(3)
    net.elect(1)
    net.add_node(4)
    net.cut(1, 4)
    net[1].propose_conf_change(_cc(ADD, 4))
    net.stabilize()
    with pytest.raises(RaftError):
        net[1].propose_conf_change(_cc(PROMOTE, 4))
    net.heal()
    net.tick(2)
    assert net[4].log.entries == net[1].log.entries
    net[1].propose_conf_change(_cc(PROMOTE, 4))
    net.stabilize()
    net.tick(1)
    assert all(net[i].conf().voters == {1, 2, 3, 4} for i in (1, 2, 3, 4))
    net.stop(2)
    [x] = net.propose(1, b"with 4")
    assert net[1].log.committed == x  # 1, 3, 4: three of four
    net.stop(4)
    [y] = net.propose(1, b"without 4")
    assert net[1].log.committed == x < y  # 1, 3: two of four is no majority


# =====================================================================================================
# removing servers (§4.2.2, §4.2.3)
# =====================================================================================================


def test_removed_leader_manages_the_cluster_until_the_change_commits_then_steps_down():
    """§4.2.2 "the leader ... steps down once the Cnew entry is committed.  ... there will be a period of time
    (while it is committing Cnew) when a leader can manage a cluster that does not include itself; it replicates
    log entries but does not count itself in majorities"."""
    net = Network(4)
    net.elect(1)
    net.stop(3)
    net.stop(4)
    idx = net[1].propose_conf_change(_cc(REMOVE, 1))
    net.stabilize()
    assert net[2].log.last_index() == idx
    assert (
        net[1].role == Role.LEADER and net[1].log.committed < idx
    ), "with 3 and 4 down, {2} alone is no majority of {2, 3, 4}: the leader's own copy does not count"
    with pytest.raises(NotLeader):
        net[1].propose(b"x")
    net.resume(3)
    net.tick(1, ids=[1])
    assert net[1].log.committed >= idx
    assert net[1].role == Role.FOLLOWER
    net.resume(4)
    net.clear_trace()
    net.tick(5 * ELECTION)
    assert len(net.leaders()) == 1 and net.leaders()[0] in (2, 3, 4)
    assert not [m for m in net.sent if m.frm == 1 and m.type in (MsgType.VOTE, MsgType.PRE_VOTE)]
    assert all(net[i].conf().voters == {2, 3, 4} for i in (2, 3, 4))


def test_two_servers_left_after_removing_the_leader_elect_a_new_one():
    """§4.2.2 after the removed leader steps down, "a new leader will be elected" among the remaining servers --
    here two of them."""
    net = Network(3)
    net.elect(1)
    net[1].propose_conf_change(_cc(REMOVE, 1))
    net.stabilize()
    assert net[1].role == Role.FOLLOWER
    net.tick(5 * ELECTION)
    assert len(net.leaders()) == 1 and net.leaders()[0] in (2, 3)


@pytest.mark.parametrize(
    "pre_vote,check_quorum,disrupted",
    [
        pytest.param(
            True,
            True,
            False,
            id="4.2.3 servers ignore RequestVote within the minimum election timeout of hearing from a leader: "
            "a removed server cannot disrupt the cluster",
        ),
        pytest.param(
            False, False, True, id="4.2.3 without that rule, removed servers can disrupt the cluster with higher terms"
        ),
    ],
)
def test_removed_server_does_not_disrupt_the_cluster(pre_vote, check_quorum, disrupted):
    """§4.2.3 "removed servers (those not in Cnew) can disrupt the cluster. These servers will not receive
    heartbeats, so they will time out and start new elections" -- the leader never even sends it the entry that
    removes it, so it keeps campaigning."""
    net = Network(3, pre_vote=pre_vote, check_quorum=check_quorum)
    net.elect(1)
    net[1].propose_conf_change(_cc(REMOVE, 3))
    net.stabilize()
    net.tick(1)
    term = net[1].term
    assert net[1].conf().voters == net[2].conf().voters == {1, 2}
    net.clear_trace()
    net.tick(5 * ELECTION)
    assert [m for m in net.sent if m.frm == 3], "the removed server does try to campaign"
    assert (net[1].term != term) is disrupted
    if not disrupted:
        assert net.leaders() == [1]
