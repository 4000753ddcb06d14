"""The Raft consensus algorithm as a pure, deterministic state machine.

`RaftCore` never touches a clock, a socket or a disk.  The runtime drives it (etcd-io/raft's shape):

    core.tick()                 # every tick of the node's clock
    core.step(message)          # every message from a peer (or a local one such as HUP)
    core.propose(data)          # a client write, on the leader
    core.read_index(ctx)        # a linearizable read
    if core.has_ready():
        rd = core.ready()       # what to send, persist and apply -- see types.Ready for the order
        ...
        core.advance(rd)

Implemented: elections with randomized timeouts, pre-vote and check-quorum; replication with fast
backtracking, batching and pipelining (probe/replicate modes, bounded in-flight appends); commitment of
current-term entries by counting; two outboxes (messages that may go now, and acknowledgements that may go only
once durable); ReadIndex and lease reads; leadership transfer; snapshots and InstallSnapshot; single-server
membership changes with learners.  The references are the Raft paper, Ongaro's dissertation and etcd-io/raft.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

from .log import LogInvariantError, RaftLog
from .progress import Progress, ProgressState
from .types import (
    NONE,
    ConfChange,
    ConfChangeType,
    Configuration,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    NotLeader,
    ProposalDropped,
    RaftError,
    Ready,
    ReadState,
    Role,
    Snapshot,
    SnapshotMeta,
    SoftState,
)

TRANSFER = b"transfer"  # context of a vote that a leadership transfer started: it may break a lease

__all__ = ["Config", "RaftCore", "bootstrap_entries", "LogInvariantError"]


@dataclass(frozen=True)
class Config:
    """Tunables of one Raft node.  Times are in ticks of the runtime's clock."""

    id: int
    election_tick: int = 10  # randomized in [election_tick, 2*election_tick)
    heartbeat_tick: int = 1
    max_msg_entries: int = 512  # entries per append message
    max_msg_bytes: int = 1 << 20  # payload bytes per append message (soft)
    max_inflight: int = 64  # unacknowledged appends per follower in REPLICATE mode
    max_apply: int = 4096  # committed entries handed out per Ready
    pre_vote: bool = True
    check_quorum: bool = True
    promote_lag: int = 0  # a learner may be promoted once its log is within this many entries of the commit

    def __post_init__(self) -> None:
        if self.id <= NONE:
            raise ValueError("node id must be >= 1")
        if self.heartbeat_tick < 1 or self.election_tick <= self.heartbeat_tick:
            raise ValueError("need 1 <= heartbeat_tick < election_tick")
        if self.max_inflight < 1 or self.max_msg_entries < 1:
            raise ValueError("max_inflight and max_msg_entries must be >= 1")


def bootstrap_entries(voters: list[int] | set[int] | frozenset[int]) -> tuple[HardState, list[Entry]]:
    """The identical first state every founding member writes: entry 1 = the initial configuration, committed."""
    conf = Configuration(voters=frozenset(voters))
    if not conf.voters:
        raise ValueError("a cluster needs at least one voter")
    return HardState(term=1, vote=NONE, commit=1), [Entry(term=1, index=1, type=EntryType.CONF, data=conf.encode())]


@dataclass
class _ReadRequest:
    index: int
    frm: int  # NONE = this node's own request
    ctx: bytes
    acks: set[int] = field(default_factory=set)


class RaftCore:
    """One Raft group member.  Not thread-safe; drive it from one task."""

    def __init__(
        self,
        config: Config,
        rng: random.Random,
        hard_state: HardState = HardState(),
        snapshot: SnapshotMeta = SnapshotMeta(),
        entries: list[Entry] | None = None,
        applied: int = 0,
    ) -> None:
        self.cfg = config
        self.id = config.id
        self.rng = rng
        self.log = RaftLog(snapshot, entries or [], hard_state.commit, applied)
        self.term = hard_state.term
        self.vote = hard_state.vote
        self.durable_term = hard_state.term
        self.durable_vote = hard_state.vote
        self.role = Role.FOLLOWER
        self.leader = NONE
        self.prs: dict[int, Progress] = {}
        self.votes: dict[int, bool] = {}
        self.lead_transferee = NONE
        self.transfer_elapsed = 0
        self.pending_conf_index = 0
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self.randomized_timeout = 0
        self.msgs: list[Message] = []
        self.msgs_after_persist: list[Message] = []
        self.read_states: list[ReadState] = []
        self.reads: dict[bytes, _ReadRequest] = {}
        self.read_queue: list[bytes] = []
        self.reads_waiting_commit: list[Message] = []
        self.need_bcast = False
        self.ticks = 0  # this node's logical clock, for the leader lease
        self.transfer_sent = False
        # A node that just started may have acknowledged a leader before it crashed: treat it as inside that
        # leader's lease (refuse votes) for one election timeout, or lease reads would be unsafe.
        self.fresh = True
        self.prev_soft = SoftState(NONE, Role.FOLLOWER)
        self.prev_hard = HardState(self.term, self.vote, self.log.committed)
        self.ready_outstanding = False
        self._reset_randomized_timeout()

    # ================= public API =================
    def conf(self) -> Configuration:
        """The configuration in force (the latest in the log)."""
        return self.log.conf()

    def promotable(self) -> bool:
        """May this node campaign?  Only voters may."""
        return self.id in self.log.conf().voters

    def tick(self) -> None:
        """Advance logical time by one tick."""
        self.ticks += 1
        if self.role == Role.LEADER:
            self._tick_leader()
        else:
            self.election_elapsed += 1
            if self.election_elapsed >= self.cfg.election_tick:
                self.fresh = False
            if self.promotable() and self.election_elapsed >= self.randomized_timeout:
                self.election_elapsed = 0
                self.step(Message(MsgType.HUP, frm=self.id))

    def campaign(self) -> None:
        """Start an election now (as if the election timer fired)."""
        self.step(Message(MsgType.HUP, frm=self.id))

    def propose(self, data: bytes) -> int:
        """Append a client command on the leader; returns its log index.  Raises NotLeader / ProposalDropped."""
        return self.propose_many([data])[0]

    def propose_many(self, datas: list[bytes]) -> list[int]:
        """Append several commands at once (one batch for the log writer and the replicators)."""
        self._check_can_propose()
        first = self.log.last_index() + 1
        ents = [Entry(self.term, first + i, EntryType.NORMAL, d) for i, d in enumerate(datas)]
        self._append_entries(ents)
        return [e.index for e in ents]

    def propose_conf_change(self, cc: ConfChange) -> int:
        """Change membership by one server; returns the CONF entry's index.

        Refused (RaftError) while another change is uncommitted, before this leader has committed an entry of
        its own term, for a learner that has not caught up, or if it would leave no voter.
        """
        self._check_can_propose()
        if self.log.term(self.log.committed) != self.term:
            raise RaftError("the new leader has not committed an entry of its term yet; retry shortly")
        if self.pending_conf_index > self.log.committed:
            raise RaftError("another membership change is still in progress")
        conf = self.log.conf()
        node = cc.node_id
        if node <= NONE:
            raise RaftError("node ids start at 1")
        if cc.type == ConfChangeType.ADD_LEARNER:
            if node in conf.members():
                raise RaftError(f"node {node} is already a member")
            new = Configuration(conf.voters, conf.learners | {node})
        elif cc.type == ConfChangeType.PROMOTE:
            if node not in conf.learners:
                raise RaftError(f"node {node} is not a learner")
            pr = self.prs.get(node)
            if pr is None or pr.match + self.cfg.promote_lag < self.log.committed:
                have = pr.match if pr else 0
                raise RaftError(f"learner {node} has not caught up (has {have}, commit is {self.log.committed})")
            new = Configuration(conf.voters | {node}, conf.learners - {node})
        elif cc.type == ConfChangeType.REMOVE:
            if node not in conf.members():
                raise RaftError(f"node {node} is not a member")
            new = Configuration(conf.voters - {node}, conf.learners - {node})
            if not new.voters:
                raise RaftError("cannot remove the last voter")
        else:  # pragma: no cover - enum is closed
            raise RaftError(f"unknown change {cc.type}")
        index = self.log.last_index() + 1
        self._append_entries([Entry(self.term, index, EntryType.CONF, new.encode())])
        self.pending_conf_index = index
        return index

    def read_index(self, ctx: bytes, lease: bool = False) -> None:
        """Ask for a linearizable read; a ReadState with `ctx` appears in a later Ready.

        With `lease=True` and check-quorum on, the leader answers from its lease without a heartbeat round
        (safe as long as clocks do not drift by more than the election timeout).  Followers forward to the
        leader; with no known leader the request is dropped and the caller retries.
        """
        if self.role == Role.LEADER:
            self._leader_read(Message(MsgType.READ_INDEX, frm=self.id, to=self.id, context=ctx), lease)
        elif self.leader != NONE:
            self._send(Message(MsgType.READ_INDEX, to=self.leader, context=ctx))

    def transfer_leadership(self, target: int) -> None:
        """Hand leadership to `target` (on the leader; forwarded by followers)."""
        self.step(Message(MsgType.TRANSFER_LEADER, frm=self.id, index=target))

    def compact(self, index: int) -> SnapshotMeta:
        """The application saved a snapshot of its state at `index` (<= applied): drop the log up to there."""
        return self.log.compact(index)

    def status(self) -> dict:
        """A plain dict for operators: role, term, leader, indexes, and (on the leader) peer progress."""
        out = {
            "id": self.id,
            "role": self.role.name.lower(),
            "term": self.term,
            "vote": self.vote,
            "leader": self.leader,
            "commit": self.log.committed,
            "applied": self.log.applied,
            "last_index": self.log.last_index(),
            "snapshot_index": self.log.snap.index,
            "voters": sorted(self.log.conf().voters),
            "learners": sorted(self.log.conf().learners),
        }
        if self.role == Role.LEADER:
            out["progress"] = {
                nid: {"match": pr.match, "next": pr.next, "state": pr.state.name.lower()}
                for nid, pr in sorted(self.prs.items())
            }
        return out

    # ----- Ready / advance -----
    def take_messages(self) -> list[Message]:
        """Drain the messages that may be sent now without waiting for a Ready (they promise nothing durable)."""
        self._flush()
        msgs, self.msgs = self.msgs, []
        return msgs

    def has_ready(self) -> bool:
        """Is there anything for the runtime to do?"""
        if self.ready_outstanding:
            return False
        self._flush()
        log = self.log
        return bool(
            self.msgs
            or self.msgs_after_persist
            or self.read_states
            or log.pending_snapshot is not None
            or log.stabled < log.last_index()
            or min(log.committed, log.stabled) > log.applied
            or SoftState(self.leader, self.role) != self.prev_soft
            or HardState(self.term, self.vote, log.committed) != self.prev_hard
        )

    def ready(self) -> Ready:
        """Collect the pending work; the caller must `advance(ready)` once it has done it."""
        if self.ready_outstanding:
            raise RaftError("advance() the previous Ready first")
        self._flush()
        log = self.log
        rd = Ready()
        soft = SoftState(self.leader, self.role)
        if soft != self.prev_soft:
            rd.soft_state = self.prev_soft = soft
        hard = HardState(self.term, self.vote, log.committed)
        if hard != self.prev_hard:
            rd.hard_state = self.prev_hard = hard
        rd.snapshot = log.pending_snapshot
        rd.entries = log.unstable()
        rd.committed_entries = log.next_committed(self.cfg.max_apply)
        if rd.committed_entries:
            log.applied = rd.committed_entries[-1].index
        rd.messages, self.msgs = self.msgs, []
        rd.persist_messages, self.msgs_after_persist = self.msgs_after_persist, []
        rd.read_states, self.read_states = self.read_states, []
        self.ready_outstanding = True
        return rd

    def advance(self, rd: Ready) -> None:
        """The runtime has persisted and sent what `rd` asked for."""
        self.ready_outstanding = False
        log = self.log
        if rd.hard_state is not None:
            self.durable_term = rd.hard_state.term
            self.durable_vote = rd.hard_state.vote
        if rd.snapshot is not None and log.pending_snapshot is rd.snapshot:
            log.pending_snapshot = None
        if rd.entries:
            last = rd.entries[-1]
            log.stable_to(last.index, last.term)
        if self.role == Role.LEADER:
            me = self.prs.get(self.id)
            if me is not None:
                me.maybe_update(log.stabled)
            if self._maybe_commit():
                self.need_bcast = True
        elif self.role == Role.CANDIDATE and rd.hard_state is not None:
            self._poll()

    # ================= message dispatch =================
    def step(self, m: Message) -> None:
        """Feed one message into the state machine."""
        t = m.type
        if m.term == 0:
            pass  # local message
        elif m.term > self.term:
            if t in (MsgType.VOTE, MsgType.PRE_VOTE):
                in_lease = (
                    self.cfg.check_quorum
                    and (self.leader != NONE or self.fresh)
                    and self.election_elapsed < self.cfg.election_tick
                )
                if in_lease and m.context != TRANSFER:
                    return  # we heard from a live leader recently: don't let a partitioned node disrupt it
            if t == MsgType.PRE_VOTE:
                pass  # a pre-vote never changes our term
            elif t == MsgType.PRE_VOTE_RESP and not m.reject:
                pass  # a grant carries the term we would campaign in, not a newer leader's
            else:
                if t in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
                    self._become_follower(m.term, m.frm)
                else:
                    self._become_follower(m.term, NONE)
        elif m.term < self.term:
            if (self.cfg.check_quorum or self.cfg.pre_vote) and t in (MsgType.HEARTBEAT, MsgType.APP):
                # A stale leader, e.g. after a partition healed: tell it our term so it steps down.  Without
                # this, pre-vote could leave it and us both stuck.
                self._send(Message(MsgType.APP_RESP, to=m.frm))
            elif t == MsgType.PRE_VOTE:
                self._send(Message(MsgType.PRE_VOTE_RESP, to=m.frm, term=self.term, reject=True))
            return

        if t == MsgType.HUP:
            self._hup(transfer=False)
        elif t in (MsgType.VOTE, MsgType.PRE_VOTE):
            self._handle_vote_request(m)
        elif self.role == Role.LEADER:
            self._step_leader(m)
        elif self.role in (Role.CANDIDATE, Role.PRE_CANDIDATE):
            self._step_candidate(m)
        else:
            self._step_follower(m)

    # ================= roles =================
    def _reset(self, term: int) -> None:
        if term != self.term:
            self.term = term
            self.vote = NONE
            # Acks and grants not yet sent were promises to an older term's leader/candidate: drop them so we
            # never acknowledge, after the fact, entries that the new term's leader made us truncate.
            self.msgs_after_persist = [x for x in self.msgs_after_persist if x.term >= term]
        self.leader = NONE
        self.election_elapsed = 0
        self.heartbeat_elapsed = 0
        self._reset_randomized_timeout()
        self.lead_transferee = NONE
        self.transfer_sent = False
        self.votes = {}
        self.prs = {}
        self.reads = {}
        self.read_queue = []
        self.reads_waiting_commit = []
        self.need_bcast = False

    def _reset_randomized_timeout(self) -> None:
        self.randomized_timeout = self.cfg.election_tick + self.rng.randrange(self.cfg.election_tick)

    def _become_follower(self, term: int, leader: int) -> None:
        self._reset(term)
        self.role = Role.FOLLOWER
        self.leader = leader

    def _become_pre_candidate(self) -> None:
        # Like etcd: the term and vote stay as they are; only a won pre-vote moves the term.
        self.role = Role.PRE_CANDIDATE
        self.votes = {}
        self.leader = NONE
        self.prs = {}
        self._reset_randomized_timeout()

    def _become_candidate(self) -> None:
        self._reset(self.term + 1)
        self.vote = self.id
        self.role = Role.CANDIDATE

    def _become_leader(self) -> None:
        self._reset(self.term)
        self.role = Role.LEADER
        self.leader = self.id
        last = self.log.last_index()
        for nid in self.log.conf().members() | {self.id}:
            self.prs[nid] = Progress(last + 1, self.cfg.max_inflight)
        me = self.prs[self.id]
        me.match = self.log.stabled
        me.become_replicate()
        me.next = last + 1
        # A configuration entry may sit uncommitted in the tail we inherited: no new change until it commits.
        self.pending_conf_index = last
        # The no-op lets us commit everything before it (the paper's rule 5.4.2) and serve reads.
        self._append_entries([Entry(self.term, last + 1, EntryType.NORMAL, b"")])

    def _hup(self, transfer: bool) -> None:
        if self.role == Role.LEADER or not self.promotable():
            return
        if self.log.pending_snapshot is not None:
            return  # a snapshot we have not yet installed: our log is not what it seems
        if self.cfg.pre_vote and not transfer:
            self._campaign(pre=True, transfer=False)
        else:
            self._campaign(pre=False, transfer=transfer)

    def _campaign(self, pre: bool, transfer: bool) -> None:
        if pre:
            self._become_pre_candidate()
            term = self.term + 1
            mtype = MsgType.PRE_VOTE
        else:
            self._become_candidate()
            term = self.term
            mtype = MsgType.VOTE
        self.votes[self.id] = True
        if self._poll():
            return
        ctx = TRANSFER if transfer else b""
        last_index, last_term = self.log.last_index(), self.log.last_term()
        for nid in sorted(self.log.conf().voters):
            if nid != self.id:
                self._send(Message(mtype, to=nid, term=term, index=last_index, log_term=last_term, context=ctx))

    def _poll(self) -> bool:
        """Count the votes; act on a decided election.  True if it was decided."""
        voters = self.log.conf().voters
        granted = rejected = 0
        for nid in voters:
            v = self.votes.get(nid)
            if nid == self.id and self.role == Role.CANDIDATE:
                # Our own vote counts only once it is durable, or a crash could let us vote twice in a term.
                # Until then it is undecided (None), not a refusal.
                v = True if (v and self.durable_term == self.term and self.durable_vote == self.id) else None
            if v is True:
                granted += 1
            elif v is False:
                rejected += 1
        quorum = len(voters) // 2 + 1
        if granted >= quorum:
            if self.role == Role.PRE_CANDIDATE:
                self._campaign(pre=False, transfer=False)
            else:
                self._become_leader()
                self.need_bcast = True
            return True
        if rejected > len(voters) - quorum:
            self._become_follower(self.term, NONE)
            return True
        return False

    def _handle_vote_request(self, m: Message) -> None:
        resp = MsgType.PRE_VOTE_RESP if m.type == MsgType.PRE_VOTE else MsgType.VOTE_RESP
        can_vote = (
            self.vote == m.frm
            or (self.vote == NONE and self.leader == NONE)
            or (m.type == MsgType.PRE_VOTE and m.term > self.term)
        )
        if can_vote and self.log.is_up_to_date(m.index, m.log_term):
            if m.type == MsgType.VOTE:
                self.election_elapsed = 0
                self.vote = m.frm
                # The grant may leave only once our vote is on disk.
                self.msgs_after_persist.append(Message(resp, to=m.frm, frm=self.id, term=m.term))
            else:
                self._send(Message(resp, to=m.frm, term=m.term))
        else:
            self._send(Message(resp, to=m.frm, term=self.term, reject=True))

    # ----- follower -----
    def _step_follower(self, m: Message) -> None:
        t = m.type
        if t == MsgType.APP:
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_append(m)
        elif t == MsgType.HEARTBEAT:
            self.election_elapsed = 0
            self.leader = m.frm
            self.log.commit_to(m.commit)
            self._send(Message(MsgType.HEARTBEAT_RESP, to=m.frm, index=m.index, context=m.context))
        elif t == MsgType.SNAP:
            self.election_elapsed = 0
            self.leader = m.frm
            self._handle_snapshot(m)
        elif t == MsgType.TIMEOUT_NOW:
            self._hup(transfer=True)
        elif t == MsgType.TRANSFER_LEADER:
            if self.leader != NONE and m.frm == self.id:
                self._send(Message(MsgType.TRANSFER_LEADER, to=self.leader, index=m.index))
        elif t == MsgType.READ_INDEX_RESP:
            self.read_states.append(ReadState(m.index, m.context))
        elif t == MsgType.READ_INDEX:
            if self.leader != NONE and m.frm == self.id:
                self._send(Message(MsgType.READ_INDEX, to=self.leader, context=m.context))
        # PROP, stray responses: ignored (clients talk to the leader; the gateway forwards).

    def _handle_append(self, m: Message) -> None:
        log = self.log
        if m.index < log.committed:
            self._ack(m.frm, log.committed)
            return
        if log.match_term(m.index, m.log_term):
            last_new = m.index + len(m.entries)
            conflict = log.find_conflict(m.entries)
            if conflict:
                if conflict <= log.committed:
                    raise LogInvariantError(f"entry {conflict} conflicts with committed {log.committed}")
                log.append(m.entries[conflict - m.index - 1 :])
            log.commit_to(min(m.commit, last_new))
            self._ack(m.frm, last_new)
            return
        # Reject, with a hint that lets the leader skip a whole term of mismatches at once.
        hint = log.find_conflict_by_term(min(m.index, log.last_index()), m.log_term)
        hint_term = log.term(hint) or 0
        self._ack(m.frm, m.index, reject=True, hint=hint, hint_term=hint_term)

    def _ack(self, to: int, index: int, reject: bool = False, hint: int = 0, hint_term: int = 0) -> None:
        # Every append response waits for the Ready it belongs to to be durable: an accept promises entries on
        # disk, and keeping rejections in the same queue keeps them in order.
        self.msgs_after_persist.append(
            Message(
                MsgType.APP_RESP,
                to=to,
                frm=self.id,
                term=self.term,
                index=index,
                reject=reject,
                reject_hint=hint,
                log_term=hint_term,
            )
        )

    def _handle_snapshot(self, m: Message) -> None:
        snap = m.snapshot
        if snap is None:
            return
        meta = snap.meta
        log = self.log
        if meta.index <= log.committed:
            self._ack(m.frm, log.committed)
        elif log.match_term(meta.index, meta.term):
            log.commit_to(meta.index)  # we already hold it: just fast-forward the commit
            self._ack(m.frm, log.committed)
        else:
            log.restore(snap)
            self._ack(m.frm, log.last_index())

    # ----- candidate -----
    def _step_candidate(self, m: Message) -> None:
        t = m.type
        if t in (MsgType.APP, MsgType.HEARTBEAT, MsgType.SNAP):
            # A leader of our term (or newer) exists.
            self._become_follower(m.term, m.frm)
            self._step_follower(m)
        elif (t == MsgType.VOTE_RESP and self.role == Role.CANDIDATE) or (
            t == MsgType.PRE_VOTE_RESP and self.role == Role.PRE_CANDIDATE
        ):
            if m.frm in self.log.conf().voters:
                self.votes.setdefault(m.frm, not m.reject)
                self._poll()

    # ----- leader -----
    def _tick_leader(self) -> None:
        self.heartbeat_elapsed += 1
        self.election_elapsed += 1
        if self.election_elapsed >= self.cfg.election_tick:
            self.election_elapsed = 0
            if self.cfg.check_quorum and not self._quorum_active():
                self._become_follower(self.term, NONE)
                return
            if self.lead_transferee != NONE:
                self.lead_transferee = NONE  # the transfer took too long: take proposals again
        for nid, pr in self.prs.items():
            if pr.state == ProgressState.SNAPSHOT:
                pr.snapshot_ticks += 1
                if pr.snapshot_ticks >= 4 * self.cfg.election_tick:
                    pr.become_probe()  # the snapshot never got there; start over
        if self.heartbeat_elapsed >= self.cfg.heartbeat_tick:
            self.heartbeat_elapsed = 0
            self._bcast_heartbeat()

    def _quorum_active(self) -> bool:
        voters = self.log.conf().voters
        active = 0
        for nid in voters:
            if nid == self.id:
                active += 1
                continue
            pr = self.prs.get(nid)
            if pr is not None and pr.recent_active:
                active += 1
        for nid, pr in self.prs.items():
            if nid != self.id:
                pr.recent_active = False
        return active >= len(voters) // 2 + 1

    def _step_leader(self, m: Message) -> None:
        t = m.type
        if t == MsgType.BEAT:
            self._bcast_heartbeat()
            return
        if t == MsgType.READ_INDEX:
            self._leader_read(m, lease=False)
            return
        if t == MsgType.TRANSFER_LEADER:
            self._handle_transfer(m.index)
            return
        pr = self.prs.get(m.frm)
        if pr is None:
            return
        if t == MsgType.APP_RESP:
            pr.recent_active = True
            if m.reject:
                hint = m.reject_hint
                if m.log_term > 0:
                    hint = self.log.find_conflict_by_term(m.reject_hint, m.log_term)
                if pr.maybe_decr_to(m.index, hint):
                    if pr.state == ProgressState.REPLICATE:
                        nxt = pr.next
                        pr.become_probe()
                        pr.next = nxt
                    self._send_append(m.frm)
                return
            if pr.maybe_update(m.index):
                if pr.state == ProgressState.PROBE:
                    pr.become_replicate()
                elif pr.state == ProgressState.SNAPSHOT and pr.match >= pr.pending_snapshot:
                    pr.become_probe()
                    pr.become_replicate()
                elif pr.state == ProgressState.REPLICATE:
                    pr.free_to(m.index)
                if self._maybe_commit():
                    self.need_bcast = True
                    if self.role != Role.LEADER:
                        return  # the commit removed us from the cluster
                # Refill the pipeline (only REPLICATE may have more than one append in flight).
                while pr.state == ProgressState.REPLICATE and self._send_append(m.frm, send_if_empty=False):
                    pass
                if m.frm == self.lead_transferee and pr.match == self.log.last_index():
                    self._send_timeout_now(m.frm)
        elif t == MsgType.HEARTBEAT_RESP:
            pr.recent_active = True
            pr.probe_sent = False
            if m.index > pr.lease_ack:
                pr.lease_ack = m.index
            if pr.state == ProgressState.REPLICATE and len(pr.inflight) >= pr.max_inflight:
                pr.inflight.popleft()
            if pr.match < self.log.last_index():
                self._send_append(m.frm)
            if m.context:
                self._read_ack(m.frm, m.context)
        elif t == MsgType.SNAP_STATUS:
            if pr.state == ProgressState.SNAPSHOT:
                if m.reject:
                    pr.pending_snapshot = 0
                pr.become_probe()
                pr.probe_sent = True  # wait for the follower's answer (or a heartbeat) before probing
        elif t == MsgType.UNREACHABLE:
            if pr.state == ProgressState.REPLICATE:
                pr.become_probe()

    def _handle_transfer(self, target: int) -> None:
        if target == self.id or target not in self.log.conf().voters:
            return
        if self.lead_transferee == target:
            return
        self.lead_transferee = target
        self.election_elapsed = 0
        pr = self.prs[target]
        if pr.match == self.log.last_index():
            self._send_timeout_now(target)
        else:
            self._send_append(target)

    def _send_timeout_now(self, target: int) -> None:
        # Votes started by TimeoutNow break followers' leases, so ours is over for the rest of this term.
        self.transfer_sent = True
        self._send(Message(MsgType.TIMEOUT_NOW, to=target))

    def _lease_valid(self) -> bool:
        """Can no other leader exist yet?  True while a quorum acknowledged a heartbeat that we sent less
        than an election timeout ago (minus two ticks for unaligned clocks): each of them refuses votes for an
        election timeout after hearing from us.  Assumes clocks run at the same rate."""
        if not self.cfg.check_quorum or self.transfer_sent or self.lead_transferee != NONE:
            return False
        voters = self.log.conf().voters
        if self.id not in voters:
            return False
        acks = sorted(
            (self.ticks if n == self.id else (self.prs[n].lease_ack if n in self.prs else -1)) for n in voters
        )
        start = acks[len(acks) - (len(voters) // 2 + 1)]
        return start >= 0 and self.ticks < start + self.cfg.election_tick - 2

    def _check_can_propose(self) -> None:
        if self.role != Role.LEADER:
            raise NotLeader(self.leader)
        if self.lead_transferee != NONE:
            raise ProposalDropped(f"leadership is moving to node {self.lead_transferee}")
        if self.id not in self.log.conf().members():
            raise NotLeader(NONE)  # removed from the cluster: stepping down once that commits

    def _append_entries(self, ents: list[Entry]) -> None:
        self.log.append(ents)
        self.need_bcast = True  # sent lazily (_flush), so proposals arriving together share one append
        # Keep followers' progress objects in step with membership (append-time configuration).
        if any(e.type == EntryType.CONF for e in ents):
            self._sync_progress()

    def _sync_progress(self) -> None:
        members = self.log.conf().members() | {self.id}
        last = self.log.last_index()
        for nid in members:
            if nid not in self.prs:
                pr = Progress(last, self.cfg.max_inflight)
                pr.recent_active = True  # a newcomer gets an election timeout before it counts as dead
                self.prs[nid] = pr
        for nid in list(self.prs):
            if nid not in members:
                del self.prs[nid]

    def _maybe_commit(self) -> bool:
        voters = self.log.conf().voters
        if not voters:
            return False
        matches = sorted((self.prs[n].match if n in self.prs else 0) for n in voters)
        quorum = len(voters) // 2 + 1
        mci = matches[len(matches) - quorum]
        if mci > self.log.committed and self.log.term(mci) == self.term:
            self.log.commit_to(mci)
            self._after_commit()
            return True
        return False

    def _after_commit(self) -> None:
        if self.reads_waiting_commit:
            waiting, self.reads_waiting_commit = self.reads_waiting_commit, []
            for m in waiting:
                self._leader_read(m, lease=False)
        # A leader removed from the configuration leads until that change commits, then steps down.
        if self.id not in self.log.conf().voters and self.log.committed >= self.log.conf_index():
            self._become_follower(self.term, NONE)

    def _flush(self) -> None:
        if self.need_bcast and self.role == Role.LEADER:
            self.need_bcast = False
            self._bcast_append()

    def _bcast_append(self) -> None:
        for nid, pr in self.prs.items():
            if nid == self.id:
                continue
            if self._send_append(nid):
                while pr.state == ProgressState.REPLICATE and self._send_append(nid, send_if_empty=False):
                    pass

    def _send_append(self, to: int, send_if_empty: bool = True) -> bool:
        pr = self.prs[to]
        if pr.is_paused():
            return False
        log = self.log
        prev = pr.next - 1
        prev_term = log.term(prev)
        if prev_term is None:
            if prev < log.snap.index:
                pr.become_snapshot(log.snap.index)
                self._send(Message(MsgType.SNAP, to=to, snapshot=Snapshot(log.snap)))
                return True
            # next is past our end (a stale optimistic next after truncation); rewind
            pr.next = log.last_index() + 1
            prev = pr.next - 1
            prev_term = log.term(prev)
        if pr.next <= log.last_index():
            ents = log.slice(pr.next, self.cfg.max_msg_entries, self.cfg.max_msg_bytes)
        else:
            ents = []
        if not ents and not send_if_empty:
            return False
        self._send(
            Message(MsgType.APP, to=to, index=prev, log_term=prev_term, entries=tuple(ents), commit=log.committed)
        )
        pr.sent(ents[-1].index if ents else prev, len(ents))
        return True

    def _bcast_heartbeat(self) -> None:
        ctx = self.read_queue[-1] if self.read_queue else b""
        for nid, pr in self.prs.items():
            if nid == self.id:
                continue
            self._send(
                Message(
                    MsgType.HEARTBEAT,
                    to=nid,
                    index=self.ticks,
                    commit=min(pr.match, self.log.committed),
                    context=ctx,
                )
            )

    # ----- reads -----
    def _leader_read(self, m: Message, lease: bool) -> None:
        """Serve a read request from ourselves (m.frm == self.id) or from a follower."""
        if self.log.term(self.log.committed) != self.term:
            # We cannot know the commit index before our first commit in this term.
            self.reads_waiting_commit.append(m)
            return
        index = self.log.committed
        voters = self.log.conf().voters
        if voters == {self.id} or (lease and self._lease_valid()):
            self._release_read(_ReadRequest(index, m.frm, m.context))
            return
        if m.context in self.reads:
            return  # duplicate request; the first one will answer
        req = _ReadRequest(index, m.frm, m.context, {self.id})
        self.reads[m.context] = req
        self.read_queue.append(m.context)
        self._bcast_heartbeat()

    def _read_ack(self, frm: int, ctx: bytes) -> None:
        req = self.reads.get(ctx)
        if req is None:
            return
        req.acks.add(frm)
        voters = self.log.conf().voters
        if len(req.acks & voters) < len(voters) // 2 + 1:
            return
        # A heartbeat round confirms every request queued before this one too.
        pos = self.read_queue.index(ctx)
        done, self.read_queue = self.read_queue[: pos + 1], self.read_queue[pos + 1 :]
        for c in done:
            self._release_read(self.reads.pop(c))

    def _release_read(self, req: _ReadRequest) -> None:
        if req.frm in (NONE, self.id):
            self.read_states.append(ReadState(req.index, req.ctx))
        else:
            self._send(Message(MsgType.READ_INDEX_RESP, to=req.frm, index=req.index, context=req.ctx))

    # ----- sending -----
    def _send(self, m: Message) -> None:
        # Forwarded requests keep term 0 (the leader treats them as local); everything else carries our term.
        stamp_term = m.term == 0 and m.type not in (MsgType.PROP, MsgType.READ_INDEX, MsgType.TRANSFER_LEADER)
        if stamp_term or m.frm == NONE:
            m = Message(
                m.type, m.to, self.id, self.term if stamp_term else m.term, m.log_term, m.index, m.entries,
                m.commit, m.reject, m.reject_hint, m.snapshot, m.context,
            )
        self.msgs.append(m)
