"""Implementation rules of the core's log replication, beyond Figure 2 (after etcd-io/raft):

* fast conflict backtracking: a rejection carries a hint (index, term) that lets the leader skip a whole term
  of mismatching entries at once (the paper's §5.3 optimisation, in etcd's form);
* batching: many entries per append message, bounded by entry count and (softly) bytes;
* flow control: PROBE mode (one append in flight until the follower answers) and REPLICATE mode (optimistic
  streaming, at most `max_inflight` unacknowledged appends per follower);
* commit propagation to followers (§5.3 "including heartbeats").
"""

from __future__ import annotations

import pytest

from raft.types import EntryType, MsgType
from tests.raft_harness import ack_all, app, drain, make_leader, msg, new_core, step


def _state(core, nid):
    return core.status()["progress"][nid]


# =====================================================================================================
# fast backtracking
# =====================================================================================================

FOLLOWER_HINT_CASES = [
    # follower log terms (from index 2), leader's (prev_index, prev_term) -> (hint index, hint term)
    pytest.param(
        [1, 2, 2, 2],
        5,
        3,
        (5, 2),
        id="5.3 the rejection names the follower's conflicting term and the index to back up to",
    ),
    pytest.param(
        [1, 2, 2, 2], 9, 4, (5, 2), id="5.3 a rejection past the end of the log hints at the follower's last entry"
    ),
    pytest.param(
        [1, 4, 4, 4],
        5,
        3,
        (2, 1),
        id="5.3 the follower skips every entry of a term newer than prevLogTerm (one round trip per term)",
    ),
    pytest.param(
        [3, 3, 3], 4, 2, (1, 1), id="5.3 with every entry newer, the hint falls back to a surely-shared prefix"
    ),
]


@pytest.mark.parametrize("terms,prev_index,prev_term,hint", FOLLOWER_HINT_CASES)
def test_follower_rejection_carries_conflict_hint(terms, prev_index, prev_term, hint):
    """§5.3 "when rejecting an AppendEntries request, the follower can include the term of the conflicting
    entry and the first index it stores for that term" -- here etcd's form: the largest index whose term is
    <= prevLogTerm, and that entry's term."""
    core = new_core(2, terms=terms, term=5)
    out = step(core, app(1, 2, 5, prev_index, prev_term, [(prev_index + 1, 5)]))
    [r] = out.of(MsgType.APP_RESP)
    assert r.reject and r.index == prev_index
    assert (r.reject_hint, r.log_term) == hint


LEADER_HINT_CASES = [
    # leader log: 2@t1 3@t2 4@t2 5@t3 6@t3, then its no-op 7@t4; it first probes with prev = 6.
    # (hint index, hint term) of the rejection -> prevLogIndex of the leader's next probe
    pytest.param(4, 2, 4, id="5.3 the leader resumes right after the last entry of the follower's hinted term"),
    pytest.param(6, 2, 4, id="5.3 the leader skips its own entries of terms newer than the hinted term"),
    pytest.param(6, 1, 2, id="5.3 a hint in an older term skips back over several of the leader's terms"),
    pytest.param(3, 0, 3, id="5.3 a hint without a term is taken as the follower's last index"),
    pytest.param(5, 9, 5, id="5.3 a hinted term newer than the leader's entries: back up to the hinted index"),
]


@pytest.mark.parametrize("hint,hint_term,next_prev", LEADER_HINT_CASES)
def test_leader_uses_conflict_hint(hint, hint_term, next_prev):
    core = new_core(1, terms=[1, 2, 2, 3, 3], term=3)
    out = make_leader(core)
    [probe] = out.of(MsgType.APP, to=2)
    assert probe.index == 6
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=6, reject=True, reject_hint=hint, log_term=hint_term))
    [again] = out.of(MsgType.APP, to=2)
    assert again.index == next_prev and again.log_term == core.log.term(next_prev)
    assert [e.index for e in again.entries] == list(range(next_prev + 1, 8))
    assert not out.of(MsgType.APP, to=3)


def test_stale_rejection_in_probe_is_ignored():
    """A rejection of an append the leader no longer has in flight (reordered or duplicated) changes nothing."""
    core = new_core(1, terms=[1, 2, 2, 3, 3], term=3)
    make_leader(core)
    step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=6, reject=True, reject_hint=4, log_term=2))
    assert _state(core, 2)["next"] == 5
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=6, reject=True, reject_hint=1, log_term=1))
    assert not out.of(MsgType.APP)
    assert _state(core, 2)["next"] == 5


# =====================================================================================================
# batching
# =====================================================================================================


@pytest.mark.parametrize(
    "max_entries,max_bytes,sizes",
    [
        pytest.param(512, 1 << 20, [10], id="batching: many proposals travel in one append"),
        pytest.param(4, 1 << 20, [4, 4, 2], id="batching: at most max_msg_entries entries per append"),
        pytest.param(512, 150, [2, 2, 2, 2, 2], id="batching: appends are limited to about max_msg_bytes"),
        pytest.param(512, 10, [1] * 10, id="batching: an entry larger than max_msg_bytes still travels, alone"),
    ],
)
def test_appends_batch_entries(max_entries, max_bytes, sizes):
    core = new_core(1, max_msg_entries=max_entries, max_msg_bytes=max_bytes)
    make_leader(core, acks=True)
    last = core.log.last_index()
    core.propose_many([b"x" * 40 for _ in range(10)])
    out = drain(core)
    for to in (2, 3):
        apps = out.of(MsgType.APP, to=to)
        assert [len(m.entries) for m in apps] == sizes
        prev = last
        for m in apps:  # consecutive, gap-free
            assert m.index == prev and m.entries[0].index == prev + 1
            prev = m.entries[-1].index
        assert prev == last + 10


# =====================================================================================================
# flow control: probe and replicate
# =====================================================================================================


def test_probe_mode_sends_one_append_until_the_follower_answers():
    """etcd-io/raft: a follower whose log end is unknown is in PROBE: "at most one append message is sent"
    until it answers; its answer switches it to REPLICATE and the backlog goes out."""
    core = new_core(1)
    out = make_leader(core)
    assert len(out.of(MsgType.APP, to=2)) == 1 and _state(core, 2)["state"] == "probe"
    for d in (b"a", b"b", b"c"):
        core.propose(d)
        assert not drain(core).of(MsgType.APP, to=2)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=2))
    assert _state(core, 2)["state"] == "replicate"
    [m] = [m for m in out.of(MsgType.APP, to=2) if m.entries]  # (plus an empty append carrying the new commit)
    assert m.index == 2 and [e.data for e in m.entries] == [b"a", b"b", b"c"]


def test_probe_is_retried_after_a_heartbeat_response():
    """A lost probe is not fatal: the follower's next heartbeat response lets the leader probe again."""
    core = new_core(1)
    make_leader(core)
    out = step(core, msg(MsgType.HEARTBEAT_RESP, 2, 1, core.term))
    [m] = out.of(MsgType.APP, to=2)
    assert m.index == 1 and [e.index for e in m.entries] == [2]


def test_replicate_mode_pipelines_appends():
    """In REPLICATE mode the leader sends new entries optimistically, without waiting for acknowledgements."""
    core = new_core(1)
    make_leader(core, acks=True)
    prevs = []
    for d in (b"a", b"b", b"c"):
        core.propose(d)
        prevs += [m.index for m in drain(core).of(MsgType.APP, to=2)]
    assert prevs == [2, 3, 4]
    assert _state(core, 2)["next"] == 6 and _state(core, 2)["match"] == 2


def test_in_flight_appends_are_bounded():
    """At most max_inflight unacknowledged appends per follower; an acknowledgement frees slots, and the
    backlog then goes out in one batch."""
    core = new_core(1, max_inflight=2)
    make_leader(core, acks=True)
    sent = []
    for i in range(4):
        core.propose(f"p{i}".encode())
        sent += drain(core).of(MsgType.APP, to=2)
    assert [[e.index for e in m.entries] for m in sent] == [[3], [4]]
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    assert [[e.index for e in m.entries] for m in out.of(MsgType.APP, to=2)] == [[5, 6]]
    core.propose(b"more")
    assert not drain(core).of(MsgType.APP, to=2)


def test_heartbeat_response_frees_one_in_flight_slot():
    """etcd-io/raft: when the in-flight window is full, a heartbeat response frees one slot (the appends may
    have been lost) so replication cannot stall for good."""
    core = new_core(1, max_inflight=2)
    make_leader(core, acks=True)
    for i in range(4):
        core.propose(f"p{i}".encode())
        drain(core)
    out = step(core, msg(MsgType.HEARTBEAT_RESP, 2, 1, core.term))
    apps = out.of(MsgType.APP, to=2)
    assert len(apps) == 1 and apps[0].entries and apps[0].entries[0].index == 5
    assert not out.of(MsgType.APP, to=3)


def test_rejection_in_replicate_mode_falls_back_to_probe():
    """A rejection means the leader's picture of the follower's log is wrong: back to PROBE, one append."""
    core = new_core(1)
    make_leader(core, acks=True)
    for d in (b"a", b"b", b"c"):
        core.propose(d)
        drain(core)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=4, reject=True, reject_hint=3, log_term=2))
    assert _state(core, 2)["state"] == "probe"
    [m] = out.of(MsgType.APP, to=2)
    assert m.index == 3 and [e.index for e in m.entries] == [4, 5]
    core.propose(b"d")
    assert not drain(core).of(MsgType.APP, to=2)


def test_stale_rejection_in_replicate_mode_is_ignored():
    """A rejection at or below what the follower already acknowledged is old news."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose(b"a")
    drain(core)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=2, reject=True, reject_hint=1, log_term=1))
    assert not out.all
    assert _state(core, 2) == {"match": 2, "next": 4, "state": "replicate"}


def test_acknowledgements_never_move_match_backwards():
    """Fig2 State: matchIndex is "monotonically increasing" -- a reordered older ack does not lower it."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose_many([b"a", b"b", b"c"])
    drain(core)
    step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=5))
    step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    assert _state(core, 2)["match"] == 5


# =====================================================================================================
# commit propagation
# =====================================================================================================


def test_leader_tells_followers_the_new_commit_index():
    """§5.3 "The leader keeps track of the highest index it knows to be committed, and it includes that index
    in future AppendEntries RPCs (including heartbeats) so that the other servers eventually find out"."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose(b"x")
    drain(core)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=3))
    assert core.log.committed == 3
    for to in (2, 3):
        assert [m.commit for m in out.of(MsgType.APP, to=to)] == [3]
    core.tick()
    beats = drain(core).of(MsgType.HEARTBEAT)
    # a heartbeat never claims more than the follower is known to hold
    assert sorted((m.to, m.commit) for m in beats) == [(2, 3), (3, 2)]


def test_leader_appends_only_the_noop_on_election():
    """The only entry a new leader adds by itself is one empty NORMAL entry of its term."""
    core = new_core(1, terms=[1, 1], term=1)
    make_leader(core)
    ack_all(core)
    assert [(e.term, e.type, e.data) for e in core.log.entries[-1:]] == [(2, EntryType.NORMAL, b"")]
    assert core.log.last_index() == 4
