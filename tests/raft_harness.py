"""A small deterministic in-process harness for the Raft core (after etcd-io/raft's `network` in raft_test.go).

Two levels:

* **Single cores**, driven by hand: `new_core()` builds one `RaftCore` whose log is the bootstrap entry plus
  entries of given terms; `step()`, `drain()` and `persist()` let a test look at exactly what the core wants
  to send and persist, and when.
* **A whole cluster**: `Network` builds N cores from `bootstrap_entries`, each over a `MemoryStorage`, and
  drives them the way the runtime does (types.Ready's order: send `messages`, persist, send
  `persist_messages`, apply, `advance`).  Messages sit in one FIFO queue; `stabilize()` delivers until
  nothing is left.  Links can be cut, nodes isolated or stopped, and arbitrary messages dropped by a
  predicate.  Every message handed to the network is recorded in `Network.sent` (dropped or not).

Everything is deterministic: each node gets `random.Random(seed * 1000 + id)`.

The harness defaults to the paper's plain algorithm (`pre_vote=False, check_quorum=False`, as etcd's tests
do); tests of the dissertation's extensions switch them on.  Cores are created "warm" (`fresh=False`): a
founding member that has never heard of a leader does not sit out an election timeout before voting (the
restart-lease rule has its own tests with `warm=False`).
"""

from __future__ import annotations

import random
from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from raft.core import Config, RaftCore, bootstrap_entries
from raft.storage import MemoryStorage
from raft.types import (
    NONE,
    Configuration,
    Entry,
    EntryType,
    HardState,
    Message,
    MsgType,
    ReadState,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)

ELECTION = 10
HEARTBEAT = 1

PAPER = {"pre_vote": False, "check_quorum": False}


def make_config(nid: int, **kw) -> Config:
    """A Config with the harness defaults (election 10 ticks, heartbeat 1, paper mode) overridden by `kw`."""
    opts = {"election_tick": ELECTION, "heartbeat_tick": HEARTBEAT, **PAPER}
    opts.update(kw)
    return Config(nid, **opts)


def conf_entry(index: int, term: int, voters: Iterable[int], learners: Iterable[int] = ()) -> Entry:
    """A CONF entry holding the given configuration."""
    c = Configuration(frozenset(voters), frozenset(learners))
    return Entry(term, index, EntryType.CONF, c.encode())


def build_log(voters: Iterable[int], terms: Iterable[int], learners: Iterable[int] = ()) -> list[Entry]:
    """Entry 1 = the bootstrap configuration (term 1); entries 2.. have the given terms, data b"i<index>t<term>"."""
    ents = [conf_entry(1, 1, voters, learners)]
    for t in terms:
        i = len(ents) + 1
        ents.append(Entry(t, i, EntryType.NORMAL, f"i{i}t{t}".encode()))
    return ents


def new_core(
    nid: int,
    voters: Iterable[int] = (1, 2, 3),
    *,
    terms: Iterable[int] = (),
    term: int | None = None,
    vote: int = NONE,
    commit: int = 1,
    learners: Iterable[int] = (),
    entries: list[Entry] | None = None,
    snapshot: SnapshotMeta = SnapshotMeta(),
    applied: int | None = None,
    warm: bool = True,
    seed: int = 0,
    **cfg,
) -> RaftCore:
    """One core with a chosen log (bootstrap conf + entries of `terms`) and hard state."""
    voters = list(voters)
    ents = entries if entries is not None else build_log(voters, terms, learners)
    if term is None:
        term = max([e.term for e in ents] + [snapshot.term, 1])
    core = RaftCore(
        make_config(nid, **cfg),
        random.Random(seed * 1000 + nid),
        HardState(term, vote, commit),
        snapshot,
        ents,
        applied=commit if applied is None else applied,
    )
    if warm:
        core.fresh = False
    return core


# ----- driving one core by hand -----


def msg(type: MsgType, frm: int, to: int, term: int, **kw) -> Message:
    """A message as a peer would send it."""
    return Message(type, to=to, frm=frm, term=term, **kw)


def app(
    frm: int, to: int, term: int, prev_index: int, prev_term: int, ents: Iterable[tuple[int, int]] = (), commit: int = 0
) -> Message:
    """An APP message; `ents` is (index, term) pairs (data b"i<index>t<term>")."""
    entries = tuple(Entry(t, i, EntryType.NORMAL, f"i{i}t{t}".encode()) for i, t in ents)
    return Message(
        MsgType.APP, to=to, frm=frm, term=term, index=prev_index, log_term=prev_term, entries=entries, commit=commit
    )


def vote_req(
    frm: int, to: int, term: int, last_index: int, last_term: int, pre: bool = False, context: bytes = b""
) -> Message:
    """A (PRE_)VOTE request from a candidate whose log ends at (last_index, last_term)."""
    t = MsgType.PRE_VOTE if pre else MsgType.VOTE
    return Message(t, to=to, frm=frm, term=term, index=last_index, log_term=last_term, context=context)


@dataclass
class Outbox:
    """What one Ready cycle produced, split by outbox."""

    immediate: list[Message] = field(default_factory=list)  # take_messages() + Ready.messages
    after_persist: list[Message] = field(default_factory=list)  # Ready.persist_messages
    readies: list[Ready] = field(default_factory=list)

    @property
    def all(self) -> list[Message]:
        return self.immediate + self.after_persist

    def of(self, t: MsgType, to: int | None = None) -> list[Message]:
        return [m for m in self.all if m.type == t and (to is None or m.to == to)]

    @property
    def committed(self) -> list[Entry]:
        return [e for rd in self.readies for e in rd.committed_entries]

    @property
    def read_states(self) -> list[ReadState]:
        return [r for rd in self.readies for r in rd.read_states]


def drain(core: RaftCore, persist: bool = True) -> Outbox:
    """Take everything the core has to say: its immediate messages and, with `persist`, every Ready
    (persisted trivially and advanced) until it has nothing more.  Without `persist`, Readies are left alone."""
    out = Outbox()
    out.immediate.extend(core.take_messages())
    if not persist:
        return out
    for _ in range(100):
        if not core.has_ready():
            break
        rd = core.ready()
        out.readies.append(rd)
        out.immediate.extend(rd.messages)
        out.after_persist.extend(rd.persist_messages)
        core.advance(rd)
        out.immediate.extend(core.take_messages())
    else:  # pragma: no cover
        raise AssertionError("core never ran out of Ready")
    return out


def step(core: RaftCore, m: Message, persist: bool = True) -> Outbox:
    """Step one message into `core` and drain what it produces."""
    core.step(m)
    return drain(core, persist)


def log_terms(core: RaftCore) -> list[int]:
    """Terms of the entries after the bootstrap entry (index 2..last), the shape `terms=` takes."""
    return [core.log.term(i) for i in range(2, core.log.last_index() + 1)]


# ----- a whole cluster -----


class Node:
    """One member: the core, its MemoryStorage, what it applied, the read states it was given."""

    def __init__(self, nid: int, core: RaftCore, storage: MemoryStorage) -> None:
        self.id = nid
        self.core = core
        self.storage = storage
        self.applied: list[Entry] = []
        self.applied_index = core.log.applied
        self.read_states: list[ReadState] = []
        self.readies: list[Ready] = []
        self.up = True

    def __repr__(self) -> str:
        c = self.core
        return f"Node({self.id} {c.role.name} t={c.term} commit={c.log.committed} last={c.log.last_index()})"


class Network:
    """N cores exchanging messages through one FIFO queue, with drop rules."""

    def __init__(
        self,
        ids: int | Iterable[int] = 3,
        *,
        voters: Iterable[int] | None = None,
        learners: Iterable[int] = (),
        logs: dict[int, list[int]] | None = None,
        terms: dict[int, int] | None = None,
        seed: int = 0,
        warm: bool = True,
        **cfg,
    ) -> None:
        """`ids` are the nodes to build (an int n means 1..n); `voters` (default: all ids) and `learners`
        form the bootstrap configuration.  `logs` gives a node the terms of its entries after the bootstrap
        entry, `terms` its starting term."""
        ids = list(range(1, ids + 1)) if isinstance(ids, int) else list(ids)
        self.voters = list(voters) if voters is not None else [i for i in ids if i not in set(learners)]
        self.learner_ids = list(learners)
        self.seed = seed
        self.cfg = cfg
        self.warm = warm
        self.nodes: dict[int, Node] = {}
        self.queue: deque[Message] = deque()
        self.sent: list[Message] = []  # everything handed to the network, in order
        self.delivered: list[Message] = []
        self.cuts: set[tuple[int, int]] = set()
        self.filters: list[Callable[[Message], bool]] = []  # a True result drops the message
        logs = logs or {}
        terms = terms or {}
        for nid in ids:
            storage = MemoryStorage()
            hs, ents = bootstrap_entries(self.voters)
            if self.learner_ids:
                ents = [conf_entry(1, 1, self.voters, self.learner_ids)]
            extra = build_log(self.voters, logs.get(nid, ()), self.learner_ids)[1:]
            t = max([hs.term, *(e.term for e in extra), terms.get(nid, 0)])
            storage.save(hard_state=HardState(t, NONE, hs.commit), entries=ents + extra)
            self.nodes[nid] = self._start(nid, storage)

    def _start(self, nid: int, storage: MemoryStorage, applied: int = 1, **override) -> Node:
        rec = storage.load()
        core = RaftCore(
            make_config(nid, **{**self.cfg, **override}),
            random.Random(self.seed * 1000 + nid),
            rec.hard_state,
            rec.snapshot,
            rec.entries,
            applied=max(rec.snapshot.index, min(rec.hard_state.commit, applied)),
        )
        if self.warm:
            core.fresh = False
        return Node(nid, core, storage)

    # ----- membership of the harness itself -----
    def add_node(self, nid: int, **override) -> Node:
        """A new, empty node (no bootstrap entries): it learns everything from the leader."""
        node = self._start(nid, MemoryStorage(), applied=0, **override)
        self.nodes[nid] = node
        return node

    def restart(self, nid: int) -> Node:
        """Crash `nid` (losing anything not persisted) and start it again from its storage."""
        old = self.nodes[nid]
        node = self._start(nid, old.storage, applied=old.applied_index)
        node.applied = old.applied
        node.applied_index = node.core.log.applied
        self.nodes[nid] = node
        return node

    def core(self, nid: int) -> RaftCore:
        return self.nodes[nid].core

    def __getitem__(self, nid: int) -> RaftCore:
        return self.nodes[nid].core

    # ----- faults -----
    def cut(self, a: int, b: int) -> None:
        """Drop everything between a and b, both ways."""
        self.cuts |= {(a, b), (b, a)}

    def cut_one_way(self, frm: int, to: int) -> None:
        self.cuts.add((frm, to))

    def isolate(self, nid: int) -> None:
        """Cut `nid` off from every other node."""
        for other in self.nodes:
            if other != nid:
                self.cut(nid, other)

    def heal(self) -> None:
        """Remove every cut and filter."""
        self.cuts.clear()
        self.filters.clear()

    def drop(self, pred: Callable[[Message], bool]) -> None:
        """Drop every future message for which `pred` is true (until `heal`)."""
        self.filters.append(pred)

    def drop_type(self, *types: MsgType) -> None:
        self.drop(lambda m, ts=frozenset(types): m.type in ts)

    def stop(self, nid: int) -> None:
        """The node neither ticks nor receives (its messages in flight are still delivered)."""
        self.nodes[nid].up = False

    def resume(self, nid: int) -> None:
        """A stopped node ticks and receives again (with whatever state it had)."""
        self.nodes[nid].up = True

    def dropped(self, m: Message) -> bool:
        if (m.frm, m.to) in self.cuts:
            return True
        target = self.nodes.get(m.to)
        if target is None or not target.up:
            return True
        return any(f(m) for f in self.filters)

    # ----- the runtime loop -----
    def send(self, m: Message) -> None:
        self.sent.append(m)
        if not self.dropped(m):
            self.queue.append(m)

    def flush(self, nid: int) -> None:
        """Run node `nid`'s runtime: send its messages, then persist/send/apply/advance every Ready."""
        node = self.nodes[nid]
        core = node.core
        for m in core.take_messages():
            self.send(m)
        while core.has_ready():
            rd = core.ready()
            node.readies.append(rd)
            for m in rd.messages:
                self.send(m)
            node.storage.save(
                hard_state=rd.hard_state,
                entries=rd.entries,
                snapshot=rd.snapshot.meta if rd.snapshot is not None else None,
            )
            if rd.snapshot is not None:
                node.applied_index = rd.snapshot.meta.index
            for m in rd.persist_messages:
                self.send(m)
            for e in rd.committed_entries:
                assert e.index == node.applied_index + 1, f"node {nid} applied {e.index} after {node.applied_index}"
                node.applied.append(e)
                node.applied_index = e.index
            node.read_states.extend(rd.read_states)
            core.advance(rd)
            for m in core.take_messages():
                self.send(m)

    def flush_all(self) -> None:
        for nid in list(self.nodes):
            if self.nodes[nid].up:
                self.flush(nid)

    def deliver(self, m: Message) -> None:
        """Step one message into its target (if it is still up) and run that node's runtime."""
        node = self.nodes.get(m.to)
        if node is None or not node.up:
            return
        self.delivered.append(m)
        node.core.step(m)
        self.flush(m.to)

    def stabilize(self, limit: int = 100_000) -> None:
        """Deliver messages until none are left in flight."""
        self.flush_all()
        n = 0
        while self.queue:
            n += 1
            if n > limit:  # pragma: no cover
                raise AssertionError("network did not stabilize")
            self.deliver(self.queue.popleft())
            if not self.queue:
                self.flush_all()

    def take_queue(self) -> list[Message]:
        """Remove and return every message in flight (to inspect, reorder or deliver by hand)."""
        self.flush_all()
        out = list(self.queue)
        self.queue.clear()
        return out

    def tick(self, n: int = 1, ids: Iterable[int] | None = None, stabilize: bool = True) -> None:
        """Tick the given nodes (default: all that are up) n times, stabilizing after each round."""
        targets = list(ids) if ids is not None else [i for i, nd in self.nodes.items() if nd.up]
        for _ in range(n):
            for nid in targets:
                self.nodes[nid].core.tick()
            if stabilize:
                self.stabilize()
            else:
                self.flush_all()

    # ----- conveniences -----
    def campaign(self, nid: int) -> None:
        """`nid`'s election timer fires now; deliver everything that follows."""
        self.nodes[nid].core.campaign()
        self.stabilize()

    def elect(self, nid: int) -> RaftCore:
        """Make `nid` leader (it must win) and let the cluster settle."""
        self.campaign(nid)
        core = self.nodes[nid].core
        assert core.role == Role.LEADER, f"node {nid} did not win: {self.nodes}"
        return core

    def propose(self, nid: int, *datas: bytes) -> list[int]:
        """Propose on `nid` and let the cluster settle; returns the indexes."""
        idx = self.nodes[nid].core.propose_many(list(datas))
        self.stabilize()
        return idx

    def leaders(self) -> list[int]:
        return [i for i, nd in self.nodes.items() if nd.up and nd.core.role == Role.LEADER]

    def compact(self, nid: int, index: int) -> SnapshotMeta:
        """The application of `nid` snapshotted at `index`: compact the core and its storage."""
        node = self.nodes[nid]
        meta = node.core.compact(index)
        node.storage.compact(meta)
        return meta

    def sent_of(self, t: MsgType, frm: int | None = None, to: int | None = None) -> list[Message]:
        return [m for m in self.sent if m.type == t and (frm is None or m.frm == frm) and (to is None or m.to == to)]

    def clear_trace(self) -> None:
        self.sent.clear()
        self.delivered.clear()


def snapshot_message(frm: int, to: int, term: int, meta: SnapshotMeta) -> Message:
    """A SNAP message carrying a snapshot with the given metadata."""
    return Message(MsgType.SNAP, to=to, frm=frm, term=term, snapshot=Snapshot(meta, data=None))


def make_candidate(core: RaftCore) -> Outbox:
    """Campaign (winning any pre-vote by granting it from every other voter) and persist the candidate's
    own vote; stops as a CANDIDATE (or LEADER in a one-voter cluster)."""
    core.campaign()
    out = drain(core)
    if core.role == Role.PRE_CANDIDATE:
        for v in sorted(core.conf().voters - {core.id}):
            if core.role != Role.PRE_CANDIDATE:
                break
            core.step(msg(MsgType.PRE_VOTE_RESP, v, core.id, core.term + 1))
        nxt = drain(core)
        out.immediate += nxt.immediate
        out.after_persist += nxt.after_persist
        out.readies += nxt.readies
    assert core.role in (Role.CANDIDATE, Role.LEADER), core.role
    return out


def make_leader(core: RaftCore, acks: bool = False) -> Outbox:
    """Win an election with grants from the other voters; with `acks`, every other member then
    acknowledges the leader's whole log (so they are all in REPLICATE mode with match = last index)."""
    out = make_candidate(core)
    for v in sorted(core.conf().voters - {core.id}):
        if core.role == Role.LEADER:
            break
        core.step(msg(MsgType.VOTE_RESP, v, core.id, core.term))
    assert core.role == Role.LEADER, core.role
    nxt = drain(core)
    out.immediate += nxt.immediate
    out.after_persist += nxt.after_persist
    out.readies += nxt.readies
    if acks:
        ack_all(core)
    return out


def ack_all(core: RaftCore, index: int | None = None) -> Outbox:
    """Every other member acknowledges the leader's log up to `index` (default: its last index)."""
    idx = core.log.last_index() if index is None else index
    for nid in sorted(core.conf().members() - {core.id}):
        core.step(msg(MsgType.APP_RESP, nid, core.id, core.term, index=idx))
    return drain(core)
