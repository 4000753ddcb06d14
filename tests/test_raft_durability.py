"""Durability rules of the core: what may be sent before the Ready is persisted and what only after.

Figure 2: "Persistent state on all servers: (Updated on stable storage before responding to RPCs)".  The core
has two outboxes (types.Ready): `messages` may go at once (they promise nothing that is not yet durable);
`persist_messages` -- vote grants and append acknowledgements -- may go only once the Ready's snapshot,
entries and hard state are on disk.  A candidate's own vote counts only once it is durable, and committed
entries are handed to the state machine only once they are durable locally.
"""

from __future__ import annotations

import pytest

from raft.types import NONE, Configuration, HardState, MsgType, Ready, Role, SnapshotMeta
from tests.raft_harness import (
    Network,
    app,
    drain,
    make_candidate,
    make_leader,
    msg,
    new_core,
    snapshot_message,
    vote_req,
)

# =====================================================================================================
# the two outboxes
# =====================================================================================================

OUTBOX_CASES = [
    pytest.param(
        "vote",
        MsgType.VOTE_RESP,
        False,
        "persist",
        id="Fig2 persistent state is updated on stable storage before responding: a vote grant waits for "
        "the vote to be durable",
    ),
    pytest.param(
        "stale_vote", MsgType.VOTE_RESP, True, "now", id="a vote refusal promises nothing and may leave at once"
    ),
    pytest.param(
        "pre_vote",
        MsgType.PRE_VOTE_RESP,
        False,
        "now",
        id="9.6 a pre-vote grant changes no durable state and may leave at once",
    ),
    pytest.param(
        "append",
        MsgType.APP_RESP,
        False,
        "persist",
        id="Fig2 an append acknowledgement waits for the entries to be durable",
    ),
    pytest.param(
        "bad_append",
        MsgType.APP_RESP,
        True,
        "persist",
        id="an append rejection travels with the acknowledgements, in order",
    ),
    pytest.param(
        "heartbeat",
        MsgType.HEARTBEAT_RESP,
        False,
        "now",
        id="a heartbeat response promises nothing durable and may leave at once",
    ),
    pytest.param(
        "snapshot",
        MsgType.APP_RESP,
        False,
        "persist",
        id="5 (compaction) an InstallSnapshot acknowledgement waits for the snapshot to be durable",
    ),
]


def _request(kind: str):
    if kind == "vote":
        return vote_req(2, 1, 3, 9, 9)
    if kind == "stale_vote":
        return vote_req(2, 1, 3, 1, 1)
    if kind == "pre_vote":
        return vote_req(2, 1, 3, 9, 9, pre=True)
    if kind == "append":
        return app(2, 1, 2, 2, 2, [(3, 2)])
    if kind == "bad_append":
        return app(2, 1, 2, 7, 2, [(8, 2)])
    if kind == "heartbeat":
        return msg(MsgType.HEARTBEAT, 2, 1, 2)
    return snapshot_message(2, 1, 2, SnapshotMeta(9, 2, Configuration(frozenset({1, 2, 3}))))


@pytest.mark.parametrize("kind,resp_type,reject,outbox", OUTBOX_CASES)
def test_responses_use_the_right_outbox(kind, resp_type, reject, outbox):
    core = new_core(1, terms=[2], term=2, pre_vote=(kind == "pre_vote"))
    core.step(_request(kind))
    early = core.take_messages()
    rd = core.ready() if core.has_ready() else Ready()
    now = [m for m in early + rd.messages if m.type == resp_type]
    later = [m for m in rd.persist_messages if m.type == resp_type]
    if outbox == "persist":
        assert not now and len(later) == 1
        assert rd.must_sync() or reject
    else:
        assert len(now) == 1 and not later
    [m] = now + later
    assert m.reject is reject and m.to == 2 and m.frm == 1


def test_vote_grant_travels_with_the_vote_it_promises():
    """The Ready whose persist_messages carry a grant also carries the hard state recording that vote."""
    core = new_core(1, term=2)
    core.step(vote_req(2, 1, 3, 9, 9))
    assert not core.take_messages()
    rd = core.ready()
    assert rd.hard_state == HardState(3, 2, 1)
    assert [(m.type, m.to, m.term, m.reject) for m in rd.persist_messages] == [(MsgType.VOTE_RESP, 2, 3, False)]
    assert not [m for m in rd.messages if m.type == MsgType.VOTE_RESP]


def test_append_ack_travels_with_the_entries_it_acknowledges():
    core = new_core(2, term=2)
    core.step(app(1, 2, 2, 1, 1, [(2, 2), (3, 2)], commit=1))
    assert not core.take_messages()
    rd = core.ready()
    assert [e.index for e in rd.entries] == [2, 3]
    assert [(m.type, m.index) for m in rd.persist_messages] == [(MsgType.APP_RESP, 3)]


def test_a_crash_before_persisting_loses_an_unsent_vote():
    """A grant that never left (its Ready was not persisted) leaves no trace after a restart: the node may vote
    again in that term, which is safe precisely because the grant was never sent."""
    net = Network(3)
    core = net[1]
    core.step(vote_req(2, 1, 2, 9, 9))
    assert not core.take_messages()
    net.restart(1)  # the Ready was never taken, persisted or sent
    assert net[1].vote == NONE and net[1].term == 1


def test_leader_may_send_appends_before_its_own_write():
    """Dissertation §10.2.1: "the leader can write to its disk in parallel with replicating to the followers"
    -- its appends are in the immediate outbox, before the Ready carrying the entries is persisted."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose(b"x")
    early = core.take_messages()
    assert sorted(m.to for m in early if m.type == MsgType.APP and m.entries) == [2, 3]
    rd = core.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    core.advance(rd)


def test_acknowledgements_of_an_old_term_are_dropped_on_term_change():
    """An ack queued for the leader of term T is not sent once the node moved to a newer term before the Ready
    went out: the new term's leader may make it truncate those entries."""
    core = new_core(2, term=2)
    core.step(app(1, 2, 2, 1, 1, [(2, 2)]))
    core.step(vote_req(3, 2, 3, 1, 1))  # a newer term (refused: stale log)
    rd = core.ready()
    assert not [m for m in rd.persist_messages if m.type == MsgType.APP_RESP]
    assert core.term == 3


# =====================================================================================================
# a candidate's own vote
# =====================================================================================================


def test_candidate_own_vote_counts_only_once_durable():
    """Implementation rule: "a candidate's own vote counts only once its hard state is durable" -- with one
    grant of three it is not yet leader; once the Ready holding its vote is advanced it is."""
    core = new_core(1)
    core.campaign()
    assert core.role == Role.CANDIDATE
    core.step(msg(MsgType.VOTE_RESP, 2, 1, core.term))
    assert core.role == Role.CANDIDATE
    rd = core.ready()
    assert rd.hard_state == HardState(2, 1, 1)
    core.step(msg(MsgType.VOTE_RESP, 2, 1, core.term))  # still not durable: taken, not advanced
    assert core.role == Role.CANDIDATE
    core.advance(rd)
    assert core.role == Role.LEADER


def test_majority_of_other_voters_elects_without_own_vote():
    """The durability rule holds back only the candidate's own vote: grants from a majority of the others win."""
    core = new_core(1)
    core.campaign()
    core.step(msg(MsgType.VOTE_RESP, 2, 1, core.term))
    core.step(msg(MsgType.VOTE_RESP, 3, 1, core.term))
    assert core.role == Role.LEADER


def test_single_voter_elects_itself_once_its_vote_is_durable():
    """Implementation rule: a one-voter cluster's candidate wins as soon as its own vote is durable."""
    core = new_core(1, voters=[1])
    core.campaign()
    assert core.role == Role.CANDIDATE
    rd = core.ready()
    core.advance(rd)
    assert core.role == Role.LEADER


@pytest.mark.parametrize("n", [3, 4])
def test_pending_own_vote_is_not_a_refusal(n):
    """§5.2: a candidate refused by one voter has not lost while its own (pending) vote and the others' grants
    can still make a majority."""
    core = new_core(1, voters=range(1, n + 1))
    core.campaign()
    core.step(msg(MsgType.VOTE_RESP, 2, 1, core.term, reject=True))
    assert core.role == Role.CANDIDATE
    core.advance(core.ready())
    for v in range(3, n + 1):
        core.step(msg(MsgType.VOTE_RESP, v, 1, core.term))
    assert core.role == Role.LEADER


def test_pre_candidate_counts_its_own_pre_vote_at_once():
    """A pre-vote changes nothing durable, so the pre-candidate's own pre-vote counts immediately: one grant of
    three moves it to candidate before any Ready."""
    core = new_core(1, pre_vote=True)
    core.campaign()
    assert core.role == Role.PRE_CANDIDATE
    core.step(msg(MsgType.PRE_VOTE_RESP, 2, 1, core.term + 1))
    assert core.role == Role.CANDIDATE and core.term == 2


# =====================================================================================================
# committed entries only once durable
# =====================================================================================================


def test_follower_applies_only_durable_committed_entries():
    """Implementation rule: committed entries are handed out only once durable locally -- entries that arrive
    already committed are applied from the Ready after the one that persists them."""
    core = new_core(2, term=2)
    core.step(app(1, 2, 2, 1, 1, [(2, 2), (3, 2)], commit=3))
    rd = core.ready()
    assert [e.index for e in rd.entries] == [2, 3]
    assert rd.hard_state == HardState(2, NONE, 3)
    assert rd.committed_entries == []
    core.advance(rd)
    rd2 = core.ready()
    assert [e.index for e in rd2.committed_entries] == [2, 3]


def test_leader_counts_itself_only_once_its_entry_is_durable():
    """The leader's own copy counts towards the majority only once it is on its disk."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose(b"x")
    rd = core.ready()
    core.step(msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    assert core.log.committed == 2
    core.advance(rd)
    assert core.log.committed == 3


def test_leader_commits_on_followers_but_applies_after_its_own_write():
    """Dissertation §10.2.1: the leader "may even commit an entry before it has been written to its own disk, if
    a majority of followers have written it" -- but hands it to its state machine only once durable locally."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose(b"x")
    core.take_messages()
    core.step(msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    core.step(msg(MsgType.APP_RESP, 3, 1, core.term, index=3))
    assert core.log.committed == 3
    rd = core.ready()
    assert [e.data for e in rd.entries] == [b"x"]
    assert rd.committed_entries == []
    core.advance(rd)
    assert [e.data for e in drain(core).committed] == [b"x"]


def test_restart_recovers_only_durable_state():
    """Fig2: currentTerm, votedFor and log[] are persistent: a restarted node resumes with exactly what its Readies
    persisted, and its log matches the leader's."""
    net = Network(3)
    net.elect(1)
    net.propose(1, b"a", b"b")
    net.restart(2)
    core = net[2]
    assert core.term == net[1].term and core.vote == 1
    assert core.log.entries == net[1].log.entries
    assert core.role == Role.FOLLOWER
    net.propose(1, b"c")
    net.tick(1)
    assert net[2].log.committed == net[1].log.committed == 5


def test_candidate_vote_is_in_the_ready():
    """On conversion to candidate the new term and self-vote are part of the next Ready's hard state."""
    core = new_core(1, terms=[1], term=1)
    out = make_candidate(core)
    assert out.readies[0].hard_state == HardState(2, 1, 1)
