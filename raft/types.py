"""Plain data shared by the Raft core, its storage and its transports.

Everything here is an immutable value: log entries, the durable hard state, snapshot metadata, cluster
configurations and the messages nodes exchange.  The transport (gateway/) maps `Message` to and from the
protobuf peer protocol; the core never sees protobuf.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from enum import IntEnum
from typing import Any

NONE = 0  # "no node": node ids start at 1


class EntryType(IntEnum):
    """What an entry's payload means to the core."""

    NORMAL = 0  # application command (opaque bytes); empty data = a leader's no-op
    CONF = 1  # a full cluster Configuration (see Configuration.encode)


@dataclass(frozen=True, slots=True)
class Entry:
    """One log entry."""

    term: int
    index: int
    type: EntryType = EntryType.NORMAL
    data: bytes = b""


@dataclass(frozen=True, slots=True)
class HardState:
    """What must be durable before a vote or an append is acknowledged."""

    term: int = 0
    vote: int = NONE
    commit: int = 0


@dataclass(frozen=True, slots=True)
class Configuration:
    """Cluster membership: voters decide elections and commitment, learners only receive the log."""

    voters: frozenset[int] = frozenset()
    learners: frozenset[int] = frozenset()

    def encode(self) -> bytes:
        """Stable byte form used as the payload of CONF entries and in snapshot metadata."""
        return json.dumps({"voters": sorted(self.voters), "learners": sorted(self.learners)}).encode()

    @classmethod
    def decode(cls, data: bytes) -> Configuration:
        """Inverse of `encode`."""
        obj = json.loads(data.decode())
        return cls(frozenset(obj["voters"]), frozenset(obj["learners"]))

    def members(self) -> frozenset[int]:
        """Every node that receives the log."""
        return self.voters | self.learners

    def quorum(self) -> int:
        """Votes needed for a majority of voters."""
        return len(self.voters) // 2 + 1


class ConfChangeType(IntEnum):
    """The single-server membership changes the core accepts."""

    ADD_LEARNER = 0
    PROMOTE = 1  # learner -> voter, refused until the learner has caught up
    REMOVE = 2  # voter or learner


@dataclass(frozen=True, slots=True)
class ConfChange:
    """A request to change membership by one server."""

    type: ConfChangeType
    node_id: int


@dataclass(frozen=True, slots=True)
class SnapshotMeta:
    """Where a snapshot sits in the log and which configuration was in force there."""

    index: int = 0
    term: int = 0
    conf: Configuration = Configuration()


@dataclass(frozen=True, slots=True)
class Snapshot:
    """A snapshot travelling to a follower.  `data` is opaque to the core (bytes, a file path, ...)."""

    meta: SnapshotMeta
    data: Any = None


class MsgType(IntEnum):
    """Message kinds, after etcd-io/raft.  Local ones never cross the network."""

    HUP = 0  # local: start an election now
    BEAT = 1  # local: leader sends heartbeats now
    PROP = 2  # proposal forwarded from a follower to its leader
    APP = 3
    APP_RESP = 4
    VOTE = 5
    VOTE_RESP = 6
    PRE_VOTE = 7
    PRE_VOTE_RESP = 8
    SNAP = 9
    HEARTBEAT = 10
    HEARTBEAT_RESP = 11
    TIMEOUT_NOW = 12
    READ_INDEX = 13  # follower asks its leader for a read index
    READ_INDEX_RESP = 14
    TRANSFER_LEADER = 15  # local or forwarded: move leadership to `frm`'s chosen target (`index` field)
    SNAP_STATUS = 16  # local: the transport reports whether a snapshot reached `frm`
    UNREACHABLE = 17  # local: the transport could not reach `frm`


RESPONSE_TYPES = frozenset(
    {MsgType.APP_RESP, MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP, MsgType.HEARTBEAT_RESP, MsgType.READ_INDEX_RESP}
)


@dataclass(frozen=True, slots=True)
class Message:
    """A Raft message.  Field meanings depend on `type`:

    APP:        log_term/index = previous entry, entries = batch, commit = leader commit
    APP_RESP:   index = highest index now matching (accept) or the rejected prev index (reject);
                reject_hint = the last index the follower may share with the leader (it resumes after it),
                log_term = the follower's term at reject_hint (0 if none)
    (PRE_)VOTE: log_term/index = candidate's last entry; context = b"transfer" for a leadership transfer
    HEARTBEAT:  commit = min(leader commit, follower match); context = read-index context;
                index = the leader's tick when sent (echoed in HEARTBEAT_RESP, for the leader lease)
    SNAP:       snapshot = the snapshot to install
    READ_INDEX(_RESP): context = caller's request id; index = read index in the response
    TRANSFER_LEADER: index = the node that should become leader
    SNAP_STATUS: reject = True if the snapshot failed to reach `frm`
    """

    type: MsgType
    to: int = NONE
    frm: int = NONE
    term: int = 0
    log_term: int = 0
    index: int = 0
    entries: tuple[Entry, ...] = ()
    commit: int = 0
    reject: bool = False
    reject_hint: int = 0
    snapshot: Snapshot | None = None
    context: bytes = b""


class Role(IntEnum):
    """A node's role in its group."""

    FOLLOWER = 0
    PRE_CANDIDATE = 1
    CANDIDATE = 2
    LEADER = 3


@dataclass(frozen=True, slots=True)
class SoftState:
    """Volatile facts worth telling the runtime about: who leads, and our role."""

    leader: int
    role: Role


@dataclass(frozen=True, slots=True)
class ReadState:
    """A read may be served once the state machine has applied `index`."""

    index: int
    context: bytes


@dataclass(slots=True)
class Ready:
    """Work the runtime must do, in this order:

    1. send `messages` now (they promise nothing that is not yet durable);
    2. durably write `snapshot` (if any), then `entries` (the first one may replace a suffix of the log),
       then `hard_state` (if any), with one fsync;
    3. then send `persist_messages` (acknowledgements and vote grants that rely on step 2);
    4. apply `committed_entries` in order, and serve `read_states` once applied >= their index;
    5. call `advance(ready)`.
    """

    soft_state: SoftState | None = None
    hard_state: HardState | None = None
    entries: list[Entry] = field(default_factory=list)
    snapshot: Snapshot | None = None
    committed_entries: list[Entry] = field(default_factory=list)
    messages: list[Message] = field(default_factory=list)
    persist_messages: list[Message] = field(default_factory=list)
    read_states: list[ReadState] = field(default_factory=list)

    def must_sync(self) -> bool:
        """True when step 2 has something to write."""
        return bool(self.entries) or self.hard_state is not None or self.snapshot is not None


class RaftError(Exception):
    """A request the core refuses (not leader, a change already pending, ...)."""


class NotLeader(RaftError):
    """Raised by proposals on a node that is not the leader; `leader` is the hint (0 = unknown)."""

    def __init__(self, leader: int) -> None:
        super().__init__(f"not the leader (leader hint: {leader or 'unknown'})")
        self.leader = leader


class ProposalDropped(RaftError):
    """The leader cannot take proposals right now (leadership transfer in progress)."""
