"""Paper-sentence tests of the Raft core: one test per rule of Figure 2 and §5 of the Raft paper
(Ongaro & Ousterhout, "In Search of an Understandable Consensus Algorithm").

Each test's id or docstring quotes (or closely paraphrases) the sentence it checks.  Most tests drive a
single core by hand (tests/raft_harness.py: `new_core`, `step`, `drain`); the rest run a whole in-process
cluster (`Network`).  The harness runs the paper's plain algorithm (no pre-vote, no check-quorum) unless a
test says otherwise; the dissertation's extensions are tested in the other test_raft_*.py files.
"""

from __future__ import annotations

import random

import pytest

from raft.types import NONE, Entry, EntryType, HardState, MsgType, Role
from tests.raft_harness import (
    ELECTION,
    Network,
    app,
    drain,
    log_terms,
    make_candidate,
    make_leader,
    msg,
    new_core,
    step,
    vote_req,
)


# =====================================================================================================
# Figure 2, "Rules for Servers / All Servers"
# =====================================================================================================


def _core_in_role(role: str):
    if role == "pre_candidate":
        core = new_core(1, terms=[2], term=2, pre_vote=True)
        core.campaign()
        drain(core)
        assert core.role == Role.PRE_CANDIDATE
        return core
    core = new_core(1, terms=[2], term=2)
    if role == "candidate":
        make_candidate(core)
    elif role == "leader":
        make_leader(core)
    return core


HIGHER_TERM_CASES = [
    (MsgType.APP, True),
    (MsgType.HEARTBEAT, True),
    (MsgType.VOTE, False),
    (MsgType.APP_RESP, False),
    (MsgType.VOTE_RESP, False),
    (MsgType.HEARTBEAT_RESP, False),
]


@pytest.mark.parametrize("role", ["follower", "pre_candidate", "candidate", "leader"])
@pytest.mark.parametrize(
    "mtype,from_leader",
    HIGHER_TERM_CASES,
    ids=[
        f"Fig2 If RPC request or response contains term T > currentTerm: set currentTerm = T, convert to "
        f"follower ({t.name})"
        for t, _ in HIGHER_TERM_CASES
    ],
)
def test_higher_term_converts_to_follower(role, mtype, from_leader):
    core = _core_in_role(role)
    t = core.term + 1
    if mtype == MsgType.APP:
        m = app(2, 1, t, 1, 1)
    elif mtype == MsgType.VOTE:
        m = vote_req(2, 1, t, 100, 100)
    elif mtype == MsgType.VOTE_RESP:
        m = msg(mtype, 2, 1, t, reject=True)
    else:
        m = msg(mtype, 2, 1, t, index=1)
    out = step(core, m)
    assert core.role == Role.FOLLOWER
    assert core.term == t
    assert core.leader == (2 if from_leader else NONE)
    hs = [rd.hard_state for rd in out.readies if rd.hard_state is not None]
    assert hs and hs[-1].term == t, "the new term must be persisted"


def test_committed_entries_are_applied_in_log_order_exactly_once():
    """Fig2 All Servers: "If commitIndex > lastApplied: increment lastApplied, apply log[lastApplied] to state
    machine" -- and (Leaders) "respond after entry applied to state machine"."""
    net = Network(3)
    net.elect(1)
    idx = net.propose(1, b"a", b"b")
    idx += net.propose(1, b"c")
    net.tick(1)  # a heartbeat carries the final commit index to every follower
    for node in net.nodes.values():
        applied = node.applied
        assert [e.index for e in applied] == list(range(2, idx[-1] + 1))
        assert [e.data for e in applied] == [b"", b"a", b"b", b"c"]
        assert node.core.log.applied == node.core.log.committed == idx[-1]
        for e in applied:
            assert node.core.log.entry(e.index) == e


# =====================================================================================================
# Figure 2 "Followers" and §5.2 leader election
# =====================================================================================================


@pytest.mark.parametrize("seed", range(4))
def test_follower_times_out_and_becomes_candidate(seed):
    """Fig2 Followers: "If election timeout elapses without receiving AppendEntries RPC from current leader or
    granting vote to candidate: convert to candidate"; §5.2 "election timeouts are chosen randomly from a fixed
    interval (e.g., 150-300ms)" -- here [election_tick, 2*election_tick)."""
    core = new_core(1, terms=[2, 2], term=2, seed=seed)
    ticks = 0
    while core.role == Role.FOLLOWER:
        core.tick()
        ticks += 1
        assert ticks < 2 * ELECTION, "no election after 2*election_tick ticks"
    assert ELECTION <= ticks < 2 * ELECTION
    assert core.role == Role.CANDIDATE and core.term == 3


def test_election_timeouts_are_randomized():
    """§5.2 "Raft uses randomized election timeouts to ensure that split votes are rare": different nodes
    (different random sources) pick different timeouts."""
    timeouts = set()
    for seed in range(10):
        core = new_core(1, seed=seed)
        n = 0
        while core.role == Role.FOLLOWER:
            core.tick()
            n += 1
        timeouts.add(n)
    assert len(timeouts) >= 3
    assert all(ELECTION <= t < 2 * ELECTION for t in timeouts)


def test_heartbeats_from_the_leader_reset_the_election_timer():
    """§5.2 "A server remains in follower state as long as it receives valid RPCs from a leader"."""
    core = new_core(2, term=2)
    for _ in range(20):
        for _ in range(ELECTION - 1):
            core.tick()
        step(core, msg(MsgType.HEARTBEAT, 1, 2, 2))
        assert core.role == Role.FOLLOWER and core.leader == 1
    assert core.term == 2
    for _ in range(2 * ELECTION):
        core.tick()
    assert core.role == Role.CANDIDATE, "without heartbeats the follower must eventually campaign"


@pytest.mark.parametrize(
    "granted",
    [
        pytest.param(True, id="Fig2 Followers: granting a vote to a candidate resets the election timer"),
        pytest.param(False, id="Fig2 Followers: a vote request that is refused does not reset the election timer"),
    ],
)
def test_granting_a_vote_resets_the_election_timer(granted):
    core = new_core(1, terms=[2], term=2)
    timeout = core.randomized_timeout
    for _ in range(timeout - 1):
        core.tick()
    # Same term (no term change, which would reset the timer anyway); an up-to-date or a stale candidate log.
    last = (3, 2) if granted else (2, 1)
    out = step(core, vote_req(2, 1, 2, *last))
    assert bool(out.of(MsgType.VOTE_RESP)) and out.of(MsgType.VOTE_RESP)[0].reject is (not granted)
    core.tick()
    if granted:
        assert core.role == Role.FOLLOWER
        for _ in range(timeout - 2):
            core.tick()
        assert core.role == Role.FOLLOWER
        core.tick()
    assert core.role == Role.CANDIDATE


# ----- candidates -----


@pytest.mark.parametrize("n", [3, 5])
def test_conversion_to_candidate(n):
    """Fig2 Candidates: "On conversion to candidate, start election: increment currentTerm, vote for self,
    reset election timer, send RequestVote RPCs to all other servers" (with lastLogIndex and lastLogTerm)."""
    core = new_core(1, voters=range(1, n + 1), terms=[2, 3], term=3)
    for _ in range(3):
        core.tick()
    out = step(core, msg(MsgType.HUP, 1, 1, 0))
    assert core.role == Role.CANDIDATE
    assert core.term == 4 and core.vote == 1
    assert core.election_elapsed == 0
    assert out.readies[0].hard_state == HardState(4, 1, 1)
    votes = out.of(MsgType.VOTE)
    assert sorted(m.to for m in votes) == list(range(2, n + 1))
    for m in votes:
        assert (m.frm, m.term, m.index, m.log_term) == (1, 4, 3, 3)


ELECTION_CASES = [
    pytest.param(
        1,
        [],
        Role.LEADER,
        id="5.2 a single voter wins with its own vote",
    ),
    pytest.param(
        2,
        [(2, True)],
        Role.LEADER,
        id="5.2 a candidate wins with both votes of two",
    ),
    pytest.param(
        3,
        [(2, True)],
        Role.LEADER,
        id="5.2 a candidate wins an election if it receives votes from a majority (itself + 1 of 3)",
    ),
    pytest.param(3, [(2, True), (3, True)], Role.LEADER, id="5.2 wins with every vote of 3"),
    pytest.param(3, [], Role.CANDIDATE, id="5.2 without a majority it remains a candidate (no answer)"),
    pytest.param(3, [(2, False)], Role.CANDIDATE, id="5.2 one refusal of 3 leaves the election open"),
    pytest.param(
        3,
        [(2, False), (3, False)],
        Role.FOLLOWER,
        id="5.2 a candidate refused by a majority has lost and returns to follower",
    ),
    pytest.param(5, [(2, True)], Role.CANDIDATE, id="5.2 2 votes of 5 are not a majority"),
    pytest.param(5, [(2, True), (3, True)], Role.LEADER, id="5.2 3 votes of 5 are a majority"),
    pytest.param(5, [(2, False), (3, False)], Role.CANDIDATE, id="5.2 2 refusals of 5 leave the election open"),
    pytest.param(
        5,
        [(2, True), (3, False), (4, False), (5, False)],
        Role.FOLLOWER,
        id="5.2 3 refusals of 5 decide the election against the candidate",
    ),
    pytest.param(
        5,
        [(2, True), (2, True), (2, True)],
        Role.CANDIDATE,
        id="5.2 each server votes at most once: repeated grants from one voter count once",
    ),
    pytest.param(3, [(7, True)], Role.CANDIDATE, id="5.2 grants from servers outside the configuration don't count"),
]


@pytest.mark.parametrize("n,responses,expected", ELECTION_CASES)
def test_candidate_wins_with_votes_from_a_majority(n, responses, expected):
    """Fig2 Candidates: "If votes received from majority of servers: become leader"."""
    core = new_core(1, voters=range(1, n + 1))
    make_candidate(core)
    term = core.term
    for frm, granted in responses:
        step(core, msg(MsgType.VOTE_RESP, frm, 1, term, reject=not granted))
    assert core.role == expected
    assert core.term == term
    assert core.leader == (1 if expected == Role.LEADER else NONE)


@pytest.mark.parametrize("mtype", [MsgType.APP, MsgType.HEARTBEAT])
@pytest.mark.parametrize("dterm", [0, 1], ids=["same term", "higher term"])
def test_candidate_steps_down_for_a_leader(mtype, dterm):
    """Fig2 Candidates: "If AppendEntries RPC received from new leader: convert to follower"; §5.2 "If the
    leader's term ... is at least as large as the candidate's current term, then the candidate recognizes the
    leader as legitimate and returns to follower state"."""
    core = new_core(1)
    make_candidate(core)
    t = core.term + dterm
    m = app(2, 1, t, 1, 1) if mtype == MsgType.APP else msg(MsgType.HEARTBEAT, 2, 1, t)
    step(core, m)
    assert core.role == Role.FOLLOWER
    assert core.term == t and core.leader == 2


@pytest.mark.parametrize("mtype", [MsgType.APP, MsgType.HEARTBEAT])
def test_candidate_rejects_an_older_leader(mtype):
    """§5.2 "If the term in the RPC is smaller than the candidate's current term, then the candidate rejects the
    RPC and continues in candidate state"."""
    core = new_core(1, term=3)
    make_candidate(core)
    m = app(2, 1, 3, 1, 1, [(2, 3)]) if mtype == MsgType.APP else msg(MsgType.HEARTBEAT, 2, 1, 3)
    step(core, m)
    assert core.role == Role.CANDIDATE and core.term == 4
    assert core.log.last_index() == 1


def test_candidate_starts_a_new_election_on_timeout():
    """Fig2 Candidates: "If election timeout elapses: start new election"; §5.2 "each candidate will time out
    and start a new election by incrementing its term and initiating another round of RequestVote RPCs"."""
    core = new_core(1)
    make_candidate(core)
    assert core.term == 2
    ticks = 0
    out = None
    while core.term == 2:
        core.tick()
        ticks += 1
        assert ticks < 2 * ELECTION
    out = drain(core)
    assert ELECTION <= ticks < 2 * ELECTION
    assert core.role == Role.CANDIDATE and core.term == 3 and core.vote == 1
    assert sorted((m.to, m.term) for m in out.of(MsgType.VOTE)) == [(2, 3), (3, 3)]


@pytest.mark.parametrize("n", [1, 2])
def test_small_clusters_elect_a_leader(n):
    """§5.2 liveness: "Raft uses randomized election timeouts to ensure that ... elections are resolved quickly"
    -- with every node up and no message lost, a one- or two-voter cluster elects a leader."""
    net = Network(n)
    net.tick(4 * ELECTION)
    assert len(net.leaders()) == 1


# ----- split votes and election safety -----


def _chaos(seed: int, check, rounds: int = 400, nodes: int = 5) -> Network:
    """Run a cluster for `rounds` ticks under 20% message loss, cutting off the current leader every 40 ticks
    and proposing now and then; `check(net)` runs after every tick.  Ends healed and quiet."""
    net = Network(nodes, seed=seed)
    rng = random.Random(seed)
    lossy = lambda m: rng.random() < 0.2  # noqa: E731
    net.drop(lossy)
    for round_ in range(rounds):
        if round_ % 40 == 0:
            net.heal()
            net.drop(lossy)
            for nid in net.leaders():
                if rng.random() < 0.7:
                    net.isolate(nid)
        for nid in net.leaders():
            if rng.random() < 0.3:
                net[nid].propose(f"r{round_}".encode())
        net.tick(1)
        check(net)
    net.heal()
    return net


@pytest.mark.parametrize("seed", range(3))
def test_at_most_one_leader_per_term(seed):
    """§5.2 Election Safety: "at most one leader can be elected in a given term" -- under random message loss
    and repeated partitions that cut off the current leader, with every node's timer running."""
    leaders: dict[int, int] = {}

    def check(net):
        for nid in net.leaders():
            assert leaders.setdefault(net[nid].term, nid) == nid, f"two leaders in term {net[nid].term}"

    _chaos(seed, check)
    assert len(leaders) >= 3, "the partitions should have forced several elections"


@pytest.mark.parametrize("seed", range(3))
def test_leader_completeness(seed):
    """§5.4 Leader Completeness: "if a log entry is committed in a given term, then that entry will be present in
    the logs of the leaders for all higher-numbered terms" -- checked for every entry applied anywhere."""
    seen_leaders: set[tuple[int, int]] = set()

    def check(net):
        applied = {e.index: e for node in net.nodes.values() for e in node.applied}
        for nid in net.leaders():
            if (nid, net[nid].term) in seen_leaders:
                continue
            seen_leaders.add((nid, net[nid].term))
            log = net[nid].log
            for idx, e in applied.items():
                assert log.entry(idx) == e, f"leader {nid} of term {net[nid].term} lacks committed entry {idx}"

    _chaos(seed, check)
    assert len(seen_leaders) >= 3


@pytest.mark.parametrize("seed", range(3))
def test_log_matching(seed):
    """§5.3 Log Matching: "if two entries in different logs have the same index and term, then the logs are
    identical in all preceding entries" -- checked for every pair of nodes after every tick."""

    def check(net):
        cores = [net[i] for i in net.nodes]
        for a in cores:
            for b in cores:
                if a.id >= b.id:
                    continue
                top = min(a.log.last_index(), b.log.last_index())
                while top > 0 and a.log.term(top) != b.log.term(top):
                    top -= 1
                assert a.log.entries[:top] == b.log.entries[:top], f"logs of {a.id} and {b.id} differ below {top}"

    _chaos(seed, check, rounds=200)


@pytest.mark.parametrize("seed", range(3))
def test_leader_retries_until_every_follower_has_every_entry(seed):
    """§5.3 "the leader retries AppendEntries RPCs indefinitely ... until all followers eventually store all log
    entries"; §5.4.3 State Machine Safety: every server applies the same entries in the same order."""
    net = _chaos(seed, lambda net: None, rounds=200)
    net.tick(3 * ELECTION)
    [leader] = net.leaders()
    [x] = net.propose(leader, b"final")
    net.tick(1)
    ref = net[leader].log.entries
    for nid, node in net.nodes.items():
        assert node.core.log.entries == ref
        assert node.core.log.committed == x
        assert node.applied == ref[1:x]  # entry 1 (bootstrap) was applied before the start


# =====================================================================================================
# Figure 2 "RequestVote RPC / Receiver implementation" and §5.4.1
# =====================================================================================================


def test_vote_request_with_stale_term_is_not_granted():
    """Fig2 RequestVote receiver 1: "Reply false if term < currentTerm"."""
    core = new_core(1, term=3)
    out = step(core, vote_req(2, 1, 2, 10, 2))
    assert not [m for m in out.of(MsgType.VOTE_RESP) if not m.reject]
    assert core.term == 3 and core.vote == NONE


VOTE_FCFS_CASES = [
    pytest.param(NONE, False, True, id="Fig2 RequestVote 2: if votedFor is null ... grant vote"),
    pytest.param(2, False, True, id="Fig2 RequestVote 2: if votedFor is candidateId ... grant vote (again)"),
    pytest.param(
        3,
        False,
        False,
        id="5.2 each server will vote for at most one candidate in a given term, first-come-first-served",
    ),
    pytest.param(
        NONE, True, False, id="5.2 a follower that already knows this term's leader gives no vote in that term"
    ),
]


@pytest.mark.parametrize("voted_for,knows_leader,granted", VOTE_FCFS_CASES)
def test_vote_at_most_once_per_term(voted_for, knows_leader, granted):
    core = new_core(1, terms=[2], term=2, vote=voted_for)
    if knows_leader:
        step(core, msg(MsgType.HEARTBEAT, 3, 1, 2))
    out = step(core, vote_req(2, 1, 2, 3, 2))
    resp = out.of(MsgType.VOTE_RESP, to=2)
    assert len(resp) == 1 and resp[0].reject is (not granted) and resp[0].term == 2
    assert core.vote == (2 if granted else voted_for)


def test_vote_survives_a_restart():
    """Fig2 State: votedFor is "Persistent state on all servers" -- a server that voted and restarted does
    not vote for another candidate in the same term."""
    net = Network(3)
    net.campaign(2)
    assert net[2].role == Role.LEADER and net[1].vote == 2
    net.restart(1)
    assert net[1].vote == 2 and net[1].term == net[2].term
    out = step(net[1], vote_req(3, 1, net[2].term, 10, 10))
    assert [m.reject for m in out.of(MsgType.VOTE_RESP)] == [True]


UP_TO_DATE_CASES = [
    # voter's log ends at (index 3, term 2)
    pytest.param(3, 2, True, id="5.4.1 logs ending with the same term and index: the candidate is up-to-date"),
    pytest.param(4, 2, True, id="5.4.1 same last term, the longer log is more up-to-date (candidate longer)"),
    pytest.param(2, 2, False, id="5.4.1 same last term, the longer log is more up-to-date (voter longer): deny"),
    pytest.param(2, 3, True, id="5.4.1 the log with the later last term is more up-to-date (candidate, shorter)"),
    pytest.param(9, 1, False, id="5.4.1 a voter denies its vote if its own log is more up-to-date (later term)"),
    pytest.param(3, 1, False, id="5.4.1 deny: same length, earlier last term"),
    pytest.param(1, 1, False, id="5.4.1 deny: the candidate holds only the bootstrap entry"),
]


@pytest.mark.parametrize("last_index,last_term,granted", UP_TO_DATE_CASES)
def test_election_restriction(last_index, last_term, granted):
    """Fig2 RequestVote receiver 2: grant only if "candidate's log is at least as up-to-date as receiver's
    log"; the receiver still adopts the candidate's newer term."""
    core = new_core(1, terms=[1, 2], term=2)
    out = step(core, vote_req(2, 1, 3, last_index, last_term))
    resp = out.of(MsgType.VOTE_RESP, to=2)
    assert len(resp) == 1
    assert resp[0].reject is (not granted) and resp[0].term == 3
    assert core.term == 3
    assert core.vote == (2 if granted else NONE)


def test_candidate_with_stale_log_cannot_win():
    """§5.4.1 "a candidate must contact a majority of the cluster in order to be elected, which means that
    every committed entry must be present in at least one of those servers" -- so a server missing committed
    entries loses, and a server holding them wins next."""
    net = Network(3)
    net.elect(1)
    net.isolate(3)
    net.propose(1, b"a", b"b")
    assert net[1].log.committed == 4
    net.heal()
    net.campaign(3)
    assert net[3].role != Role.LEADER
    assert net.leaders() == []  # node 1 saw the higher term and stepped down
    net.elect(2)
    net.tick(1)
    for nid in (1, 2, 3):
        assert [e.data for e in net.nodes[nid].applied][:3] == [b"", b"a", b"b"]


# =====================================================================================================
# Figure 2 "Leaders" and §5.3 log replication
# =====================================================================================================


def test_new_leader_sends_initial_append_to_every_server():
    """Fig2 Leaders: "Upon election: send initial empty AppendEntries RPCs (heartbeat) to each server" -- here
    the initial append carries the leader's empty no-op entry of its new term (§8 / dissertation §6.4)."""
    core = new_core(1, voters=range(1, 6), terms=[2, 2], term=2)
    out = make_leader(core)
    apps = out.of(MsgType.APP)
    assert sorted(m.to for m in apps) == [2, 3, 4, 5]
    noop = Entry(3, 4, EntryType.NORMAL, b"")
    for m in apps:
        assert (m.term, m.index, m.log_term, m.entries, m.commit) == (3, 3, 2, (noop,), 1)
    assert core.log.entry(4) == noop


@pytest.mark.parametrize("hb", [1, 3])
def test_leader_sends_heartbeats_when_idle(hb):
    """Fig2 Leaders: "repeat during idle periods to prevent election timeouts" (heartbeats carry the leader's
    commit index, §5.3 "including heartbeats")."""
    core = new_core(1, heartbeat_tick=hb)
    make_leader(core, acks=True)
    committed = core.log.committed
    assert committed == 2
    for _ in range(hb - 1):
        core.tick()
        assert not drain(core).of(MsgType.HEARTBEAT)
    core.tick()
    beats = drain(core).of(MsgType.HEARTBEAT)
    assert sorted(m.to for m in beats) == [2, 3]
    for m in beats:
        assert m.term == core.term and m.commit == committed


def test_idle_leader_keeps_followers_from_campaigning():
    """§5.2 "Leaders send periodic heartbeats ... to all followers in order to maintain their authority"."""
    net = Network(3)
    net.elect(1)
    term = net[1].term
    net.clear_trace()
    net.tick(5 * ELECTION)
    assert net.leaders() == [1] and all(net[i].term == term for i in (1, 2, 3))
    assert not net.sent_of(MsgType.VOTE)


def test_leader_appends_a_client_command_and_replicates_it():
    """Fig2 Leaders: "If command received from client: append entry to local log"; §5.3 "then issues
    AppendEntries RPCs in parallel to each of the other servers to replicate the entry" with prevLogIndex and
    prevLogTerm of the entry immediately preceding the new ones."""
    core = new_core(1)
    make_leader(core, acks=True)
    idx = core.propose(b"x")
    assert idx == 3 and core.log.entry(3) == Entry(2, 3, EntryType.NORMAL, b"x")
    apps = drain(core).of(MsgType.APP)
    assert sorted(m.to for m in apps) == [2, 3]
    for m in apps:
        assert (m.index, m.log_term, m.entries, m.commit) == (2, 2, (core.log.entry(3),), 2)


def test_successful_append_updates_next_and_match_index():
    """Fig2 Leaders: "If successful: update nextIndex and matchIndex for follower"."""
    core = new_core(1)
    make_leader(core, acks=True)
    core.propose_many([b"a", b"b"])
    drain(core)
    step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=4))
    prog = core.status()["progress"]
    assert (prog[2]["match"], prog[2]["next"]) == (4, 5)
    assert prog[3]["match"] == 2


COMMIT_CASES = [
    # leader 1 of 5, term 3; log: 2@t2 3@t2 4@t3 (no-op) 5@t3; the leader's own match is 5
    pytest.param({2: 5}, 1, id="Fig2 Leaders: commit needs a majority of matchIndex >= N (2 of 5 is not)"),
    pytest.param(
        {2: 5, 3: 5},
        5,
        id="Fig2 Leaders: a majority of matchIndex[i] >= N and log[N].term == " "currentTerm: set commitIndex = N",
    ),
    pytest.param({2: 4, 3: 4}, 4, id="Fig2 Leaders: commitIndex = the largest such N"),
    pytest.param({2: 5, 3: 4, 4: 3}, 4, id="Fig2 Leaders: the median matchIndex decides"),
    pytest.param({2: 3, 3: 3}, 1, id="5.4.2 Raft never commits log entries from previous terms by counting replicas"),
    pytest.param({2: 5, 3: 3, 4: 3}, 1, id="5.4.2 a majority on an old-term entry commits nothing"),
]


@pytest.mark.parametrize("acks,expected", COMMIT_CASES)
def test_leader_commit_rule(acks, expected):
    core = new_core(1, voters=range(1, 6), terms=[2, 2], term=2)
    make_leader(core)
    core.propose(b"x")
    drain(core)
    assert core.status()["progress"][1]["match"] == 5
    for frm, index in acks.items():
        step(core, msg(MsgType.APP_RESP, frm, 1, core.term, index=index))
    assert core.log.committed == expected


def test_commit_of_current_term_entry_commits_earlier_entries():
    """§5.4.2 "once an entry from the current term has been committed in this way, then all prior entries are
    committed indirectly because of the Log Matching Property" -- and they are handed to the state machine."""
    core = new_core(1, terms=[2, 2], term=2)
    make_leader(core)
    out = step(core, msg(MsgType.APP_RESP, 2, 1, core.term, index=4))
    assert core.log.committed == 4
    assert [e.index for e in out.committed] == [2, 3, 4]


# =====================================================================================================
# Figure 2 "AppendEntries RPC / Receiver implementation"
# =====================================================================================================


@pytest.mark.parametrize(
    "pre_vote,check_quorum",
    [(False, False), (True, False), (False, True), (True, True)],
    ids=lambda v: str(v),
)
def test_append_with_stale_term_is_rejected(pre_vote, check_quorum):
    """Fig2 AppendEntries receiver 1: "Reply false if term < currentTerm" -- the stale leader learns the newer
    term (with pre-vote or check-quorum on; in the plain algorithm the core, like etcd, just ignores it)."""
    core = new_core(2, term=3, pre_vote=pre_vote, check_quorum=check_quorum)
    out = step(core, app(1, 2, 2, 1, 1, [(2, 2)], commit=2))
    assert core.log.last_index() == 1 and core.log.committed == 1
    assert core.term == 3 and core.leader == NONE
    resps = out.of(MsgType.APP_RESP, to=1)
    assert not [m for m in resps if m.term <= 2], "no acknowledgement in the stale term"
    if pre_vote or check_quorum:
        assert [m.term for m in resps] == [3]


CONSISTENCY_CASES = [
    # follower log: 1@t1(conf) 2@t1 3@t2; (prev_index, prev_term) -> (reject, index, hint, hint_term)
    pytest.param(
        3, 2, (False, 3, 0, 0), id="Fig2 AppendEntries: accept when the entry at prevLogIndex has prevLogTerm"
    ),
    pytest.param(2, 1, (False, 2, 0, 0), id="Fig2 AppendEntries: accept a match in the middle of the log"),
    pytest.param(
        4, 2, (True, 4, 3, 2), id="Fig2 AppendEntries 2: Reply false if log doesn't contain an entry at prevLogIndex"
    ),
    pytest.param(
        3, 3, (True, 3, 3, 2), id="Fig2 AppendEntries 2: Reply false if the entry at prevLogIndex has another term"
    ),
    pytest.param(2, 2, (True, 2, 2, 1), id="Fig2 AppendEntries 2: reject a term mismatch in the middle"),
    pytest.param(5, 3, (True, 5, 3, 2), id="Fig2 AppendEntries 2: reject well past the end of the log"),
    pytest.param(0, 0, (False, 1, 0, 0), id="an append before the commit index is acknowledged at the commit index"),
]


@pytest.mark.parametrize("prev_index,prev_term,expected", CONSISTENCY_CASES)
def test_append_consistency_check(prev_index, prev_term, expected):
    core = new_core(2, terms=[1, 2], term=2)
    before = list(core.log.entries)
    out = step(core, app(1, 2, 2, prev_index, prev_term))
    resps = out.of(MsgType.APP_RESP, to=1)
    assert len(resps) == 1
    r = resps[0]
    assert (r.reject, r.index) == expected[:2]
    if r.reject:
        assert (r.reject_hint, r.log_term) == expected[2:]
    assert r.term == 2
    assert core.log.entries == before


CONFLICT_CASES = [
    # follower log: 1@t1(conf) 2@t1 3@t2, commit 1; expected terms of 2.., indexes (re)written to disk
    pytest.param(
        3,
        2,
        [(4, 3), (5, 3)],
        [1, 2, 3, 3],
        [4, 5],
        id="Fig2 AppendEntries 4: Append any new entries not already in the log",
    ),
    pytest.param(
        2,
        1,
        [(3, 3), (4, 4)],
        [1, 3, 4],
        [3, 4],
        id="Fig2 AppendEntries 3: If an existing entry conflicts with a new one (same index but different "
        "terms), delete the existing entry and all that follow it",
    ),
    pytest.param(
        1, 1, [(2, 3)], [3], [2], id="Fig2 AppendEntries 3: a conflict at the first new entry drops the whole tail"
    ),
    pytest.param(
        1,
        1,
        [(2, 1)],
        [1, 2],
        [],
        id="Fig2 AppendEntries 3-4: entries already held are kept; later entries are not truncated",
    ),
    pytest.param(
        1, 1, [(2, 1), (3, 2), (4, 2)], [1, 2, 2], [4], id="Fig2 AppendEntries 4: skip held entries, append the rest"
    ),
]


@pytest.mark.parametrize("prev_index,prev_term,ents,expected_terms,written", CONFLICT_CASES)
def test_append_conflicting_and_new_entries(prev_index, prev_term, ents, expected_terms, written):
    core = new_core(2, terms=[1, 2], term=2)
    out = step(core, app(1, 2, 4, prev_index, prev_term, ents))
    assert log_terms(core) == expected_terms
    assert [e.index for rd in out.readies for e in rd.entries] == written
    assert [(m.index, m.reject) for m in out.of(MsgType.APP_RESP)] == [(prev_index + len(ents), False)]
    assert core.log.stabled == core.log.last_index()


COMMIT_FOLLOW_CASES = [
    # follower log: 1@t1 2@t1 3@t2, commit 1
    pytest.param(
        3, 2, [], 2, 2, id="Fig2 AppendEntries 5: If leaderCommit > commitIndex, set commitIndex = leaderCommit"
    ),
    pytest.param(3, 2, [], 3, 3, id="Fig2 AppendEntries 5: commit up to the last entry"),
    pytest.param(3, 2, [], 9, 3, id="Fig2 AppendEntries 5: commitIndex = min(leaderCommit, index of last new entry)"),
    pytest.param(
        1,
        1,
        [(2, 1)],
        3,
        2,
        id="Fig2 AppendEntries 5: the limit is the last *new* entry, not the end of the follower's log",
    ),
    pytest.param(2, 1, [], 3, 2, id="Fig2 AppendEntries 5: a heartbeat-style append only vouches for prevLogIndex"),
    pytest.param(3, 2, [(4, 2)], 9, 4, id="Fig2 AppendEntries 5: commit through newly appended entries"),
]


@pytest.mark.parametrize("prev_index,prev_term,ents,leader_commit,expected", COMMIT_FOLLOW_CASES)
def test_follower_commit_index(prev_index, prev_term, ents, leader_commit, expected):
    core = new_core(2, terms=[1, 2], term=2)
    step(core, app(1, 2, 2, prev_index, prev_term, ents, commit=leader_commit))
    assert core.log.committed == expected


def test_follower_commit_index_never_decreases():
    """Fig2 State: commitIndex is "monotonically increasing"."""
    core = new_core(2, terms=[1, 2], term=2)
    step(core, app(1, 2, 2, 3, 2, commit=3))
    assert core.log.committed == 3
    step(core, app(1, 2, 2, 3, 2, commit=1))
    step(core, msg(MsgType.HEARTBEAT, 1, 2, 2, commit=0))
    assert core.log.committed == 3


@pytest.mark.parametrize(
    "order",
    [
        pytest.param("dup", id="5.5 Raft RPCs are idempotent: a repeated AppendEntries changes nothing"),
        pytest.param("reorder", id="5.5 an older, shorter AppendEntries arriving late does not truncate the log"),
    ],
)
def test_appends_are_idempotent(order):
    core = new_core(2, term=2)
    long = app(1, 2, 2, 1, 1, [(2, 2), (3, 2)])
    short = app(1, 2, 2, 1, 1, [(2, 2)])
    first = step(core, long)
    assert [m.index for m in first.of(MsgType.APP_RESP)] == [3]
    entries = list(core.log.entries)
    again = step(core, long if order == "dup" else short)
    assert core.log.entries == entries
    assert [(m.index, m.reject) for m in again.of(MsgType.APP_RESP)] == [(3 if order == "dup" else 2, False)]


# =====================================================================================================
# §5.3 / §5.4 whole-cluster properties
# =====================================================================================================

FIGURE_7 = {
    # the leader's log (indexes 2..11 here; index 1 is the bootstrap configuration): 1 1 1 4 4 5 5 6 6 6
    "a": ([1, 1, 1, 4, 4, 5, 5, 6, 6], 1),
    "b": ([1, 1, 1, 4], 1),
    "c": ([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 6], 0),
    "d": ([1, 1, 1, 4, 4, 5, 5, 6, 6, 6, 7, 7], 0),
    "e": ([1, 1, 1, 4, 4, 4, 4], 1),
    "f": ([1, 1, 1, 2, 2, 2, 3, 3, 3, 3, 3], 1),
}
LEADER_7 = [1, 1, 1, 4, 4, 5, 5, 6, 6, 6]


@pytest.mark.parametrize(
    "case",
    sorted(FIGURE_7),
    ids=[
        f"5.3 Figure 7 ({c}): the leader forces the follower's " f"log to duplicate its own" for c in sorted(FIGURE_7)
    ],
)
def test_leader_brings_figure_7_followers_in_line(case):
    """§5.3 "the leader handles inconsistencies by forcing the followers' logs to duplicate its own ...
    Conflicting entries in follower logs will be overwritten"; Fig2 "If AppendEntries fails because of log
    inconsistency: decrement nextIndex and retry" (here: with the conflict-term hint, one retry per case);
    §5.3 Leader Append-Only: the leader's own entries never change."""
    follower, rejections = FIGURE_7[case]
    net = Network(3, logs={1: LEADER_7, 2: follower, 3: LEADER_7}, terms={1: 7, 2: 7, 3: 7})
    before = list(net[1].log.entries)
    net.elect(1)
    net.tick(1)
    leader = net[1]
    assert leader.term == 8
    assert leader.log.entries[: len(before)] == before
    assert net[2].log.entries == leader.log.entries
    assert net[2].log.committed == leader.log.committed == leader.log.last_index()
    rejects = [m for m in net.sent_of(MsgType.APP_RESP, frm=2) if m.reject]
    assert len(rejects) == rejections


def test_state_machine_safety_across_a_partition():
    """§5.4.3 State Machine Safety: "if a server has applied a log entry at a given index to its state machine,
    no other server will ever apply a different log entry for the same index" -- the uncommitted entries of a
    deposed leader are discarded (§5.3)."""
    net = Network(5)
    net.elect(1)
    net.propose(1, b"a")
    for a in (1, 2):
        for b in (3, 4, 5):
            net.cut(a, b)
    net.propose(1, b"lost")
    assert net[1].log.committed == 3
    net.elect(3)
    net.propose(3, b"c")
    net.heal()
    net.tick(2)
    assert net.leaders() == [3]
    seqs = {nid: [(e.term, e.data) for e in node.applied] for nid, node in net.nodes.items()}
    assert all(s == seqs[3] for s in seqs.values()), seqs
    assert (2, b"lost") not in seqs[1] and (3, b"c") in seqs[1]
    assert all(net[i].log.entries == net[3].log.entries for i in (1, 2, 4, 5))
