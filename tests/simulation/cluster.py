"""A deterministic, seeded simulation of a Raft cluster in one process.

Every node is a real `raft.core.RaftCore` over a `raft.storage.MemoryStorage`, driven the way the node
runtime drives it (take messages, Ready -> persist -> send acknowledgements -> apply -> advance).  All
randomness comes from one seed: the network drops, duplicates, reorders and delays messages and cuts links
(symmetric and one-way partitions); nodes crash, losing every write not yet persisted, and restart from
their storage; membership changes and leadership transfers happen in the middle of it all; clients run a
key-value workload whose history is checked for linearizability.  Safety invariants are checked on every
step; liveness is checked once the faults heal.

`run_seed(seed)` returns a `SeedResult`; a failure names the broken property, and `python -m
tests.simulation.run --seed N` replays it exactly.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any

from raft.core import Config, RaftCore, bootstrap_entries
from raft.storage import MemoryStorage
from raft.types import (
    ConfChange,
    ConfChangeType,
    Entry,
    EntryType,
    Message,
    MsgType,
    RaftError,
    Ready,
    Role,
    Snapshot,
    SnapshotMeta,
)
from tests.linearizability import KV_MODEL, Operation, check

TICK = 10  # time units per node tick
ELECTION_TICK = 10


class InvariantViolation(AssertionError):
    """A safety property of Raft was broken."""


@dataclass
class Params:
    """The fault and workload knobs of one seed, all drawn from the seed."""

    nodes: int
    drop: float
    dup: float
    max_delay: int
    fault_time: int
    clients: int
    keys: int
    snapshot_every: int
    crashes: bool
    partitions: bool
    membership: bool
    transfers: bool
    pre_vote: bool
    check_quorum: bool
    storm: bool  # faults every few ticks instead of every few election timeouts
    max_persist: int  # slowest fsync, in time units: the window in which a crash loses writes
    batch: int  # entries per append message: small batches leave old-term entries replicated apart

    @classmethod
    def from_rng(cls, rng: random.Random) -> Params:
        """Draw a scenario."""
        return cls(
            nodes=rng.choice((3, 5)),
            drop=rng.choice((0.0, 0.02, 0.1, 0.2, 0.3)),
            dup=rng.choice((0.0, 0.02, 0.1)),
            max_delay=rng.choice((2, 5, 15, 30)),
            fault_time=rng.randrange(2000, 4000),
            clients=rng.randrange(2, 6),
            keys=rng.randrange(2, 5),
            snapshot_every=rng.choice((10, 30, 100)),
            crashes=rng.random() < 0.7,
            partitions=rng.random() < 0.7,
            membership=rng.random() < 0.5,
            transfers=rng.random() < 0.5,
            pre_vote=rng.random() < 0.8,
            check_quorum=rng.random() < 0.7,
            storm=rng.random() < 0.5,
            max_persist=rng.choice((1, 4, 20)),
            batch=rng.choice((1, 3, 8)),
        )


@dataclass
class PendingOp:
    client: int
    input: tuple
    call: int
    node: int
    data: bytes = b""
    deadline: int = 0


class SimNode:
    """One node: the core, its durable storage and snapshot, and its volatile key-value state machine."""

    def __init__(self, sim: Simulation, nid: int, founding: list[int] | None) -> None:
        self.sim = sim
        self.id = nid
        self.storage = MemoryStorage()
        self.snap_data: dict[str, Any] = {}  # durable: the state machine at storage's snapshot index
        if founding:
            hs, ents = bootstrap_entries(founding)
            self.storage.save(hard_state=hs, entries=ents)
        self.alive = False
        self.retired = False
        self.gen = 0
        self.core: RaftCore
        self.kv: dict[str, Any] = {}
        self.kv_applied = 0
        self.rd: Ready | None = None
        self.writes: dict[int, PendingOp] = {}  # log index -> op proposed here
        self.reads: dict[bytes, PendingOp] = {}  # read ctx -> op
        self.read_states: list[tuple[int, bytes]] = []
        self.start()

    def start(self) -> None:
        """(Re)start from durable state: whatever was not persisted is gone."""
        rec = self.storage.load()
        self.gen += 1
        self.alive = True
        self.core = RaftCore(
            Config(
                self.id,
                election_tick=ELECTION_TICK,
                heartbeat_tick=1,
                max_msg_entries=self.sim.p.batch,
                max_inflight=4,
                pre_vote=self.sim.p.pre_vote,
                check_quorum=self.sim.p.check_quorum,
            ),
            random.Random(self.sim.rng.random()),
            rec.hard_state,
            rec.snapshot,
            rec.entries,
            applied=rec.snapshot.index,
        )
        self.kv = dict(self.snap_data)
        self.kv_applied = rec.snapshot.index
        self.rd = None
        self.read_states = []

    def crash(self) -> None:
        """Lose all volatile state, including the Ready being persisted."""
        self.alive = False
        self.gen += 1
        self.rd = None
        for op in list(self.writes.values()):
            self.sim.finish_unknown(op)
        for op in list(self.reads.values()):
            self.sim.finish_dropped(op)
        self.writes.clear()
        self.reads.clear()


class Simulation:
    """One seeded run."""

    def __init__(self, seed: int) -> None:
        self.seed = seed
        self.rng = random.Random(seed)
        self.p = Params.from_rng(self.rng)
        self.now = 0
        self.events: list[tuple[int, int, str, tuple]] = []
        self.seq = 0
        ids = list(range(1, self.p.nodes + 1))
        self.nodes: dict[int, SimNode] = {i: SimNode(self, i, ids) for i in ids}
        self.next_node_id = self.p.nodes + 1
        self.cut: set[tuple[int, int]] = set()  # (from, to) links that drop everything
        self.drop = self.p.drop
        self.dup = self.p.dup
        self.healed = False
        self.link_clock: dict[tuple[int, int], int] = {}
        self.probes: list[tuple[int, int, int]] = []
        self.history: list[Operation] = []
        self.applied: dict[int, tuple[int, bytes]] = {}
        self.max_applied = 0
        self.leaders: dict[int, int] = {}
        self.op_counter = 0
        self.client_ids = list(range(self.p.clients))
        self.next_client = self.p.clients
        self.events_run = 0
        self.stats = {"elections": 0, "crashes": 0, "partitions": 0, "conf_changes": 0, "transfers": 0,
                      "snapshots_sent": 0, "ops": 0}
        self.liveness_done: int | None = None
        self.admin_plan: list[tuple[ConfChangeType, int]] = []
        for i in ids:
            self.schedule(self.rng.randrange(TICK), "tick", (i,))
        for c in self.client_ids:
            self.schedule(self.rng.randrange(50), "client", (c,))

    # ----- event plumbing -----
    def schedule(self, at: int, kind: str, args: tuple) -> None:
        self.seq += 1
        heapq.heappush(self.events, (at, self.seq, kind, args))

    def send(self, m: Message) -> None:
        if m.type == MsgType.SNAP:
            src = self.nodes[m.frm]
            assert m.snapshot is not None
            m = Message(m.type, m.to, m.frm, m.term, m.log_term, m.index, m.entries, m.commit, m.reject,
                        m.reject_hint, Snapshot(m.snapshot.meta, dict(src.snap_data)), m.context)
            self.stats["snapshots_sent"] += 1
        copies = 1
        if self.rng.random() < self.dup:
            copies = 2
        for _ in range(copies):
            lost = self.rng.random() < self.drop
            delay = 1 + self.rng.randrange(self.p.max_delay)
            if self.healed:
                # A healed network behaves like TCP: delays, but in order on each link.
                link = (m.frm, m.to)
                at = max(self.now + delay, self.link_clock.get(link, 0))
                self.link_clock[link] = at
                delay = at - self.now
            if lost:
                if m.type == MsgType.SNAP:
                    self.schedule(self.now + delay, "snap_status", (m.frm, m.to, True))
                continue
            self.schedule(self.now + delay, "deliver", (m,))

    # ----- the node runtime, simulated -----
    def pump(self, node: SimNode) -> None:
        if not node.alive:
            return
        core = node.core
        for m in core.take_messages():
            self.send(m)
        if node.rd is None and core.has_ready():
            rd = core.ready()
            if rd.soft_state is not None and rd.soft_state.role == Role.LEADER:
                self.on_leader(node)
            for m in rd.messages:
                self.send(m)
            node.rd = rd
            delay = self.rng.randrange(self.p.max_persist + 1) if rd.must_sync() else 0
            self.schedule(self.now + delay, "persisted", (node.id, node.gen))

    def persisted(self, node: SimNode) -> None:
        rd = node.rd
        assert rd is not None
        node.rd = None
        node.storage.save(
            hard_state=rd.hard_state,
            entries=rd.entries,
            snapshot=rd.snapshot.meta if rd.snapshot is not None else None,
        )
        if rd.snapshot is not None:
            node.snap_data = dict(rd.snapshot.data)
            node.kv = dict(rd.snapshot.data)
            node.kv_applied = rd.snapshot.meta.index
        for m in rd.persist_messages:
            self.send(m)
        for e in rd.committed_entries:
            self.apply(node, e)
        node.read_states.extend((rs.index, rs.context) for rs in rd.read_states)
        self.serve_reads(node)
        node.core.advance(rd)
        if node.kv_applied - node.core.log.snap.index >= self.p.snapshot_every:
            meta = node.core.compact(node.kv_applied)
            node.storage.compact(meta)
            node.snap_data = dict(node.kv)
        self.pump(node)

    def apply(self, node: SimNode, e: Entry) -> None:
        if e.index != node.kv_applied + 1:
            raise InvariantViolation(f"node {node.id} applied {e.index} after {node.kv_applied}")
        seen = self.applied.get(e.index)
        if seen is None:
            self.applied[e.index] = (e.term, e.data)
            self.max_applied = max(self.max_applied, e.index)
        elif seen != (e.term, e.data):
            raise InvariantViolation(
                f"state machine safety: node {node.id} applied {e.data!r}@{e.term} at index {e.index}, "
                f"another node applied {seen[1]!r}@{seen[0]}"
            )
        node.kv_applied = e.index
        result: Any = None
        if e.type == EntryType.NORMAL and e.data:
            _client, _op, kind, key, a, b = e.data.decode().split("|")
            if kind == "put":
                node.kv[key] = int(a)
            elif kind == "cas":
                cur = node.kv.get(key)
                result = cur == (int(a) if a else None)
                if result:
                    node.kv[key] = int(b)
        op = node.writes.pop(e.index, None)
        if op is not None:
            if op.data == e.data:
                self.finish(op, result)
            else:
                self.finish_dropped(op)  # another entry took that index: ours never happened

    def serve_reads(self, node: SimNode) -> None:
        keep = []
        for index, ctx in node.read_states:
            if index > node.kv_applied:
                keep.append((index, ctx))
                continue
            op = node.reads.pop(ctx, None)
            if op is not None:
                self.finish(op, node.kv.get(op.input[1]))
        node.read_states = keep

    # ----- invariants -----
    def on_leader(self, node: SimNode) -> None:
        term = node.core.term
        self.stats["elections"] += 1
        other = self.leaders.setdefault(term, node.id)
        if other != node.id:
            raise InvariantViolation(f"election safety: nodes {other} and {node.id} both lead term {term}")
        log = node.core.log
        # Leader completeness: every entry applied anywhere is in the new leader's log.
        for i in range(log.snap.index + 1, self.max_applied + 1):
            t = log.term(i)
            if t is None or (t, log.entry(i).data) != self.applied[i]:
                raise InvariantViolation(
                    f"leader completeness: leader {node.id} of term {term} lacks applied entry {i}"
                )

    def check_log_matching(self) -> None:
        alive = [n for n in self.nodes.values() if n.alive]
        for a_i, a in enumerate(alive):
            la = a.core.log
            for b in alive[a_i + 1 :]:
                lb = b.core.log
                lo = max(la.snap.index, lb.snap.index) + 1
                hi = min(la.last_index(), lb.last_index())
                # Find the highest index where both logs hold the same term ...
                top = 0
                for i in range(hi, lo - 1, -1):
                    if la.term(i) == lb.term(i):
                        top = i
                        break
                # ... then everything before it must be identical.
                for i in range(lo, top + 1):
                    if la.entry(i) != lb.entry(i):
                        raise InvariantViolation(
                            f"log matching: nodes {a.id} and {b.id} agree at {top} but differ at {i}"
                        )

    def check_convergence(self) -> None:
        """After the quiet end of the run, every live member has applied the same log to the same state."""
        leaders = [n for n in self.nodes.values() if n.alive and n.core.role == Role.LEADER]
        if not leaders:
            raise InvariantViolation("no leader at the end of the run")
        members = leaders[0].core.conf().members()
        live = [self.nodes[i] for i in sorted(members) if i in self.nodes and self.nodes[i].alive]
        applied = {n.id: n.kv_applied for n in live}
        if len(set(applied.values())) != 1:
            raise InvariantViolation(f"members did not converge: applied indexes {applied}")
        states = {n.id: sorted(n.kv.items()) for n in live}
        first = states[live[0].id]
        for nid, st in states.items():
            if st != first:
                raise InvariantViolation(f"state machines differ at index {applied[nid]}: {live[0].id} vs {nid}")

    # ----- clients -----
    def finish(self, op: PendingOp, output: Any) -> None:
        self.history.append(Operation(op.client, op.input, output, op.call, self.now))
        self.stats["ops"] += 1
        self.schedule(self.now + self.rng.randrange(1, 20), "client", (op.client,))

    def finish_unknown(self, op: PendingOp) -> None:
        if op.input[0] != "get":
            self.history.append(Operation(op.client, op.input, None, op.call, None))
        self.next_client += 1  # an indeterminate client never issues again; a new one takes its place
        self.schedule(self.now + self.rng.randrange(1, 20), "client", (self.next_client,))

    def finish_dropped(self, op: PendingOp) -> None:
        self.schedule(self.now + self.rng.randrange(1, 20), "client", (op.client,))

    def pick_node(self, want_leader: bool) -> SimNode | None:
        alive = [n for n in self.nodes.values() if n.alive]
        if not alive:
            return None
        if want_leader:
            leaders = [n for n in alive if n.core.role == Role.LEADER]
            if leaders and self.rng.random() < 0.9:
                return self.rng.choice(leaders)
        return self.rng.choice(alive)

    def client(self, cid: int) -> None:
        if self.healed and self.now > self.end_time - 1000:
            return  # quiesce
        self.op_counter += 1
        key = f"k{self.rng.randrange(self.p.keys)}"
        r = self.rng.random()
        if r < 0.4:
            node = self.pick_node(want_leader=self.rng.random() < 0.5)
            if node is None:
                self.schedule(self.now + 20, "client", (cid,))
                return
            ctx = f"{cid}/{self.op_counter}".encode()
            op = PendingOp(cid, ("get", key), self.now, node.id, deadline=self.now + 300)
            node.reads[ctx] = op
            lease = self.rng.random() < 0.3
            node.core.read_index(ctx, lease=lease)
            self.schedule(op.deadline, "timeout", (node.id, node.gen, "r", ctx))
            self.pump(node)
            return
        node = self.pick_node(want_leader=True)
        value = self.op_counter
        if r < 0.8:
            inp: tuple = ("put", key, value)
            data = f"{cid}|{self.op_counter}|put|{key}|{value}|"
        else:
            old = self.rng.choice([None] + [o.input[2] for o in self.history[-5:] if o.input[0] == "put"])
            inp = ("cas", key, old, value)
            data = f"{cid}|{self.op_counter}|cas|{key}|{'' if old is None else old}|{value}"
        if node is None or node.core.role != Role.LEADER:
            self.schedule(self.now + 10, "client", (cid,))
            return
        try:
            index = node.core.propose(data.encode())
        except RaftError:
            self.schedule(self.now + 10, "client", (cid,))
            return
        op = PendingOp(cid, inp, self.now, node.id, data.encode(), deadline=self.now + 400)
        node.writes[index] = op
        self.schedule(op.deadline, "timeout", (node.id, node.gen, "w", index))
        self.pump(node)

    def timeout(self, nid: int, gen: int, kind: str, key: Any) -> None:
        node = self.nodes[nid]
        if node.gen != gen:
            return
        if kind == "r":
            op = node.reads.pop(key, None)
            if op is not None:
                self.finish_dropped(op)
        else:
            op = node.writes.get(key)
            if op is not None and op.deadline <= self.now:
                del node.writes[key]
                self.finish_unknown(op)

    # ----- faults -----
    def plan_faults(self) -> None:
        p, rng = self.p, self.rng
        t = 300
        while t < p.fault_time:
            t += rng.randrange(20, 150) if p.storm else rng.randrange(100, 600)
            kinds = []
            if p.crashes:
                kinds += ["crash", "crash_leader"]
            if p.partitions:
                kinds += ["partition", "oneway", "isolate_leader"]
            if p.transfers:
                kinds.append("transfer")
            if not kinds:
                break
            self.schedule(t, "fault", (rng.choice(kinds),))
        if p.membership:
            # Replace one voter: add a learner, promote it once caught up, remove another voter.
            new = self.next_node_id
            self.next_node_id += 1
            self.schedule(rng.randrange(200, 800), "add_node", (new,))
        self.schedule(p.fault_time, "heal", ())

    def fault(self, kind: str) -> None:
        rng = self.rng
        members = sorted(self.nodes)
        alive = [n for n in self.nodes.values() if n.alive]
        leaders = [n for n in alive if n.core.role == Role.LEADER]
        if kind in ("crash", "crash_leader"):
            if len(alive) > 1:
                victim = rng.choice(alive)
                if kind == "crash_leader" and leaders:
                    victim = rng.choice(leaders)
                victim.crash()
                self.stats["crashes"] += 1
                down = rng.randrange(20, 300) if self.p.storm else rng.randrange(50, 600)
                self.schedule(self.now + down, "restart", (victim.id,))
        elif kind == "isolate_leader":
            if leaders:
                # The leader, maybe with one follower, in a minority: the classic stale-leader setup.
                ld = rng.choice(leaders)
                left = {ld.id}
                others = [m for m in members if m != ld.id]
                if len(members) >= 5 and rng.random() < 0.5:
                    left.add(rng.choice(others))
                right = set(members) - left
                self.cut = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
                self.stats["partitions"] += 1
                self.schedule(self.now + rng.randrange(100, 800), "unpartition", ())
        elif kind == "partition":
            rng.shuffle(members)
            k = rng.randrange(1, len(members))
            left, right = set(members[:k]), set(members[k:])
            self.cut = {(a, b) for a in left for b in right} | {(b, a) for a in left for b in right}
            self.stats["partitions"] += 1
            self.schedule(self.now + rng.randrange(100, 800), "unpartition", ())
        elif kind == "oneway":
            a, b = rng.sample(members, 2)
            self.cut = self.cut | {(a, b)}
            if rng.random() < 0.5:
                self.cut |= {(a, c) for c in members if c != a}  # a's outgoing traffic is lost
            self.stats["partitions"] += 1
            self.schedule(self.now + rng.randrange(100, 800), "unpartition", ())
        elif kind == "transfer":
            leaders = [n for n in self.nodes.values() if n.alive and n.core.role == Role.LEADER]
            if leaders:
                ld = leaders[0]
                voters = sorted(ld.core.conf().voters - {ld.id})
                if voters:
                    ld.core.transfer_leadership(rng.choice(voters))
                    self.stats["transfers"] += 1
                    self.pump(ld)

    def admin(self, step: int, new: int, deadline: int) -> None:
        """Drive the replace-a-voter plan, retrying each step until the leader takes it."""
        if self.now > deadline:
            return
        leaders = [n for n in self.nodes.values() if n.alive and n.core.role == Role.LEADER]
        if not leaders:
            self.schedule(self.now + 30, "admin", (step, new, deadline))
            return
        ld = leaders[0]
        conf = ld.core.conf()
        if step == 0:
            cc = ConfChange(ConfChangeType.ADD_LEARNER, new)
            done = new in conf.members()
        elif step == 1:
            cc = ConfChange(ConfChangeType.PROMOTE, new)
            done = new in conf.voters
        else:
            others = sorted(conf.voters - {new})
            victim = others[(self.seed // 7) % len(others)]
            cc = ConfChange(ConfChangeType.REMOVE, victim)
            done = len(conf.voters) < self.p.nodes + 1
        if not done:
            try:
                ld.core.propose_conf_change(cc)
                self.stats["conf_changes"] += 1
                self.pump(ld)
            except RaftError:
                self.schedule(self.now + 30, "admin", (step, new, deadline))
                return
            if step == 2:
                self.schedule(self.now + 30, "retire", (cc.node_id,))
        if step < 2:
            self.schedule(self.now + 30, "admin", (step + 1, new, deadline))

    def retire(self, victim: int) -> None:
        """Like an operator, shut a removed node down for good once its removal has committed (a removed node
        that never learned of its removal would otherwise keep disrupting elections, dissertation 4.2.3)."""
        for n in self.nodes.values():
            if n.alive and n.id != victim:
                log = n.core.log
                if victim not in log.conf().members() and log.committed >= log.conf_index():
                    node = self.nodes[victim]
                    if node.alive:
                        node.crash()
                    node.retired = True
                    return
        self.schedule(self.now + 30, "retire", (victim,))

    def heal(self) -> None:
        self.healed = True
        self.cut = set()
        self.drop = 0.0
        self.dup = 0.0
        for n in self.nodes.values():
            if not n.alive and not n.retired:
                n.start()
                self.pump(n)
        self.heal_time = self.now
        self.schedule(self.now, "probe", ())

    def probe(self) -> None:
        """Liveness: after healing, a write must commit within the bound."""
        if self.liveness_done is not None:
            return
        ld = [n for n in self.nodes.values() if n.alive and n.core.role == Role.LEADER]
        if ld:
            node = ld[0]
            try:
                index = node.core.propose(b"")
                self.probes.append((node.id, node.gen, index))
            except RaftError:
                pass
            self.pump(node)
        self.schedule(self.now + 50, "probe", ())

    def check_probe(self) -> None:
        """Done when any probe (an empty entry proposed after healing) has been applied where it was proposed."""
        if self.liveness_done is not None or not self.probes:
            return
        for nid, gen, index in self.probes:
            node = self.nodes[nid]
            if node.gen == gen and node.kv_applied >= index and self.applied.get(index, (0, b"x"))[1] == b"":
                self.liveness_done = self.now
                return

    # ----- main loop -----
    def run(self) -> None:
        self.plan_faults()
        liveness_bound = 3000
        self.end_time = self.p.fault_time + liveness_bound
        self.heal_time = self.p.fault_time
        while self.events:
            at, _, kind, args = heapq.heappop(self.events)
            if at > self.end_time:
                break
            self.now = at
            self.events_run += 1
            if kind == "tick":
                (nid,) = args
                node = self.nodes.get(nid)
                if node is not None:
                    if node.alive:
                        node.core.tick()
                        self.pump(node)
                    self.schedule(at + TICK, "tick", (nid,))
            elif kind == "deliver":
                (m,) = args
                node = self.nodes.get(m.to)
                if node is not None and node.alive and (m.frm, m.to) not in self.cut:
                    node.core.step(m)
                    if m.type == MsgType.SNAP:
                        self.schedule(self.now + 1, "snap_status", (m.frm, m.to, False))
                    self.pump(node)
                elif m.type == MsgType.SNAP:
                    self.schedule(self.now + 1, "snap_status", (m.frm, m.to, True))
            elif kind == "persisted":
                nid, gen = args
                node = self.nodes[nid]
                if node.alive and node.gen == gen and node.rd is not None:
                    self.persisted(node)
            elif kind == "snap_status":
                leader, peer, failed = args
                node = self.nodes[leader]
                if node.alive:
                    node.core.step(Message(MsgType.SNAP_STATUS, frm=peer, to=leader, reject=failed))
                    self.pump(node)
            elif kind == "client":
                self.client(*args)
            elif kind == "timeout":
                self.timeout(*args)
            elif kind == "fault":
                if not self.healed:
                    self.fault(*args)
            elif kind == "restart":
                node = self.nodes[args[0]]
                if not node.alive and not node.retired:
                    node.start()
                    self.pump(node)
            elif kind == "unpartition":
                self.cut = set()
            elif kind == "add_node":
                (new,) = args
                self.nodes[new] = SimNode(self, new, None)
                self.schedule(self.now + self.rng.randrange(TICK), "tick", (new,))
                self.schedule(self.now, "admin", (0, new, self.p.fault_time))
            elif kind == "admin":
                self.admin(*args)
            elif kind == "retire":
                self.retire(*args)
            elif kind == "heal":
                self.heal()
            elif kind == "probe":
                self.probe()
            self.check_probe()
            if self.events_run % 400 == 0:
                self.check_log_matching()
        self.check_log_matching()
        self.check_convergence()
        if self.liveness_done is None:
            raise InvariantViolation(
                f"liveness: no write committed within {liveness_bound} time units after the faults healed"
            )


@dataclass
class SeedResult:
    """Outcome of one seed."""

    seed: int
    ok: bool
    reason: str = ""
    stats: dict = field(default_factory=dict)


def run_seed(seed: int) -> SeedResult:
    """Run one seed: faults, workload, invariants, linearizability and liveness."""
    sim = Simulation(seed)
    try:
        sim.run()
    except InvariantViolation as e:
        return SeedResult(seed, False, str(e), sim.stats)
    except Exception as e:  # a crash inside the core is a failure of the seed, with its cause
        import traceback

        return SeedResult(seed, False, f"{type(e).__name__}: {e}\n{traceback.format_exc()}", sim.stats)
    result = check(sim.history, KV_MODEL, max_steps=2_000_000)
    stats = dict(sim.stats, events=sim.events_run, history=len(sim.history),
                 recovered_after=(sim.liveness_done or 0) - sim.heal_time, params=sim.p.__dict__)
    if result.timed_out:
        return SeedResult(seed, False, "linearizability check ran out of steps", stats)
    if not result.ok:
        return SeedResult(seed, False, "history is not linearizable:\n" + result.explain(), stats)
    return SeedResult(seed, True, "", stats)
