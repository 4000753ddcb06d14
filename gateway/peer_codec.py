"""Maps Raft messages (raft.types.Message) to and from the peer protocol (proto/raft.proto).

    env = message_to_proto(msg, cluster_id, group_id)          # -> PeerEnvelope
    cluster_id, group_id, msg = message_from_proto(env)

`message_to_peer` / `message_from_peer` do the same for the bare protobuf message inside the envelope,
for the unary RPCs and the InstallSnapshot stream.

The mapping is exact: every message that encodes decodes to an equal Message.  A Message with a field
its protobuf form cannot carry (say, entries on a heartbeat) is refused with `CodecError` instead of
silently losing the field, and so is a local message type (HUP, BEAT, UNREACHABLE).  Two cases need the
transport's help:

* SNAP encodes as the *first* InstallSnapshotChunk (offset 0, no data, done=False) carrying the snapshot
  metadata; `Snapshot.data` is not encoded, the transport streams the bytes in later chunks.  Decoding any
  chunk gives a SNAP message whose snapshot has `data=None`.
* SNAP_STATUS (local to the leader) maps to the follower's InstallSnapshotResponse: the follower answers
  a snapshot stream with `reject`, from=follower, to=leader, which is exactly the SNAP_STATUS the leader's
  core expects from its transport.

Decoding never trusts its input: malformed envelopes raise `CodecError` (a ValueError), which the
transport logs and drops.
"""

from __future__ import annotations

import struct

from collections.abc import Callable
from typing import Any

import betterproto

from proto.gen.railraft.raft.v1 import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    HeartbeatRequest,
    HeartbeatResponse,
    InstallSnapshotChunk,
    InstallSnapshotResponse,
    PeerEnvelope,
    ProposeRequest,
    ReadIndexRequest,
    ReadIndexResponse,
    TimeoutNowRequest,
    TransferLeaderRequest,
    VoteRequest,
    VoteResponse,
)
from proto.gen.railraft.raft.v1 import Entry as PbEntry
from proto.gen.railraft.raft.v1 import EntryType as PbEntryType
from proto.gen.railraft.raft.v1 import SnapshotMeta as PbSnapshotMeta
from raft.types import Configuration, Entry, EntryType, Message, MsgType, Snapshot, SnapshotMeta

__all__ = [
    "CodecError",
    "NETWORK_TYPES",
    "decode_envelope",
    "message_from_peer",
    "message_from_proto",
    "message_to_peer",
    "message_to_proto",
]

# VOTE/PRE_VOTE context that marks an election caused by a leadership transfer.
TRANSFER_CONTEXT = b"transfer"

# Message fields other than type/to/frm/term, with their defaults: a field a type does not carry must
# hold its default, or encoding fails.
_OPTIONAL_FIELDS: dict[str, Any] = {
    "log_term": 0,
    "index": 0,
    "entries": (),
    "commit": 0,
    "reject": False,
    "reject_hint": 0,
    "snapshot": None,
    "context": b"",
}

# Which of those fields each network message type carries.
_CARRIED: dict[MsgType, frozenset[str]] = {
    MsgType.APP: frozenset({"log_term", "index", "entries", "commit"}),
    MsgType.APP_RESP: frozenset({"index", "reject", "reject_hint", "log_term", "commit"}),
    MsgType.VOTE: frozenset({"log_term", "index", "context"}),
    MsgType.PRE_VOTE: frozenset({"log_term", "index", "context"}),
    MsgType.VOTE_RESP: frozenset({"reject"}),
    MsgType.PRE_VOTE_RESP: frozenset({"reject"}),
    MsgType.HEARTBEAT: frozenset({"commit", "context", "index"}),
    MsgType.HEARTBEAT_RESP: frozenset({"commit", "context", "index"}),
    MsgType.TIMEOUT_NOW: frozenset(),
    MsgType.READ_INDEX: frozenset({"index", "context"}),
    MsgType.READ_INDEX_RESP: frozenset({"index", "context"}),
    MsgType.PROP: frozenset({"entries"}),
    MsgType.TRANSFER_LEADER: frozenset({"index"}),
    MsgType.SNAP: frozenset({"snapshot"}),
    MsgType.SNAP_STATUS: frozenset({"reject"}),
}

# Every message type that can cross the network (SNAP_STATUS only as an InstallSnapshotResponse).
NETWORK_TYPES = frozenset(_CARRIED)


class CodecError(ValueError):
    """A message that cannot be encoded, or protobuf input that does not decode to a valid message."""


# --- Message -> protobuf -------------------------------------------------------------------------------


def _entries_to_pb(entries: tuple[Entry, ...]) -> list[PbEntry]:
    return [PbEntry(term=e.term, index=e.index, type=PbEntryType(int(e.type)), data=e.data) for e in entries]


_PACKED_HEADER = struct.Struct("<QQBI")


def pack_entries(entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    """The `packed_entries` form of a batch (see raft.proto): one bytes field instead of a message per entry."""
    parts = []
    head = _PACKED_HEADER.pack
    for e in entries:
        parts.append(head(e.term, e.index, int(e.type), len(e.data)))
        parts.append(e.data)
    return b"".join(parts)


def unpack_entries(blob: bytes) -> tuple[Entry, ...]:
    """Inverse of `pack_entries`; CodecError on a malformed blob."""
    out = []
    pos, end = 0, len(blob)
    size = _PACKED_HEADER.size
    unpack = _PACKED_HEADER.unpack_from
    while pos < end:
        if pos + size > end:
            raise CodecError(f"packed entries: truncated header at byte {pos}")
        term, index, kind, length = unpack(blob, pos)
        pos += size
        if pos + length > end:
            raise CodecError(f"packed entries: entry {index} claims {length} bytes past the end")
        try:
            etype = EntryType(kind)
        except ValueError:
            raise CodecError(f"unknown entry type {kind} at index {index}") from None
        out.append(Entry(term, index, etype, bytes(blob[pos : pos + length])))
        pos += length
    return tuple(out)


def _check_carried(msg: Message) -> None:
    carried = _CARRIED.get(msg.type)
    if carried is None:
        raise CodecError(f"{msg.type.name} is a local message and never crosses the network")
    for name, default in _OPTIONAL_FIELDS.items():
        if name not in carried and getattr(msg, name) != default:
            raise CodecError(f"{msg.type.name} cannot carry field {name!r} (value {getattr(msg, name)!r})")


def message_to_peer(msg: Message, cluster_id: str, group_id: int) -> betterproto.Message:
    """The protobuf peer message for `msg` (not wrapped in an envelope)."""
    _check_carried(msg)
    hdr = dict(cluster_id=cluster_id, group_id=group_id, from_id=msg.frm, to_id=msg.to, term=msg.term)
    t = msg.type
    if t in (MsgType.VOTE, MsgType.PRE_VOTE):
        if msg.context not in (b"", TRANSFER_CONTEXT):
            raise CodecError(f"{t.name} context must be empty or {TRANSFER_CONTEXT!r}, not {msg.context!r}")
        return VoteRequest(
            **hdr,
            last_log_index=msg.index,
            last_log_term=msg.log_term,
            pre_vote=t is MsgType.PRE_VOTE,
            leader_transfer=msg.context == TRANSFER_CONTEXT,
        )
    if t in (MsgType.VOTE_RESP, MsgType.PRE_VOTE_RESP):
        return VoteResponse(**hdr, reject=msg.reject, pre_vote=t is MsgType.PRE_VOTE_RESP)
    if t is MsgType.APP:
        return AppendEntriesRequest(
            **hdr,
            prev_log_index=msg.index,
            prev_log_term=msg.log_term,
            packed_entries=pack_entries(msg.entries),
            leader_commit=msg.commit,
        )
    if t is MsgType.APP_RESP:
        return AppendEntriesResponse(
            **hdr,
            reject=msg.reject,
            index=msg.index,
            reject_hint=msg.reject_hint,
            conflict_term=msg.log_term,
            commit=msg.commit,
        )
    if t is MsgType.HEARTBEAT:
        return HeartbeatRequest(**hdr, commit=msg.commit, context=msg.context, leader_tick=msg.index)
    if t is MsgType.HEARTBEAT_RESP:
        return HeartbeatResponse(**hdr, commit=msg.commit, context=msg.context, leader_tick=msg.index)
    if t is MsgType.TIMEOUT_NOW:
        return TimeoutNowRequest(**hdr)
    if t is MsgType.READ_INDEX:
        return ReadIndexRequest(**hdr, context=msg.context, index=msg.index)
    if t is MsgType.READ_INDEX_RESP:
        return ReadIndexResponse(**hdr, context=msg.context, index=msg.index)
    if t is MsgType.PROP:
        return ProposeRequest(**hdr, entries=_entries_to_pb(msg.entries))
    if t is MsgType.TRANSFER_LEADER:
        return TransferLeaderRequest(**hdr, target=msg.index)
    if t is MsgType.SNAP:
        if msg.snapshot is None:
            raise CodecError("SNAP without a snapshot")
        meta = msg.snapshot.meta
        return InstallSnapshotChunk(
            **hdr,
            meta=PbSnapshotMeta(
                index=meta.index,
                term=meta.term,
                voters=sorted(meta.conf.voters),
                learners=sorted(meta.conf.learners),
            ),
            offset=0,
            data=b"",
            done=False,
        )
    if t is MsgType.SNAP_STATUS:
        return InstallSnapshotResponse(**hdr, reject=msg.reject)
    raise AssertionError(f"unhandled message type {t!r}")  # _check_carried lets only known types through


# PeerEnvelope oneof field name for each protobuf message class.
_ENVELOPE_FIELD: dict[type, str] = {
    VoteRequest: "vote_request",
    VoteResponse: "vote_response",
    AppendEntriesRequest: "append_entries_request",
    AppendEntriesResponse: "append_entries_response",
    HeartbeatRequest: "heartbeat_request",
    HeartbeatResponse: "heartbeat_response",
    TimeoutNowRequest: "timeout_now_request",
    ReadIndexRequest: "read_index_request",
    ReadIndexResponse: "read_index_response",
    ProposeRequest: "propose_request",
    TransferLeaderRequest: "transfer_leader_request",
    InstallSnapshotChunk: "install_snapshot_chunk",
    InstallSnapshotResponse: "install_snapshot_response",
}


def message_to_proto(msg: Message, cluster_id: str, group_id: int) -> PeerEnvelope:
    """Wrap `msg` for the peer stream.  Raises CodecError for messages that cannot cross the network."""
    inner = message_to_peer(msg, cluster_id, group_id)
    return PeerEnvelope(**{_ENVELOPE_FIELD[type(inner)]: inner})


# --- protobuf -> Message -------------------------------------------------------------------------------


def _entries_from_pb(entries: list[PbEntry]) -> tuple[Entry, ...]:
    out = []
    for e in entries:
        try:
            kind = EntryType(int(e.type))
        except ValueError:
            raise CodecError(f"unknown entry type {int(e.type)} at index {e.index}") from None
        out.append(Entry(term=e.term, index=e.index, type=kind, data=bytes(e.data)))
    return tuple(out)


def _hdr(pb: Any) -> dict[str, int]:
    return dict(frm=pb.from_id, to=pb.to_id, term=pb.term)


def _vote(pb: VoteRequest) -> Message:
    return Message(
        type=MsgType.PRE_VOTE if pb.pre_vote else MsgType.VOTE,
        **_hdr(pb),
        log_term=pb.last_log_term,
        index=pb.last_log_index,
        context=TRANSFER_CONTEXT if pb.leader_transfer else b"",
    )


def _vote_resp(pb: VoteResponse) -> Message:
    return Message(type=MsgType.PRE_VOTE_RESP if pb.pre_vote else MsgType.VOTE_RESP, **_hdr(pb), reject=pb.reject)


def _app(pb: AppendEntriesRequest) -> Message:
    return Message(
        type=MsgType.APP,
        **_hdr(pb),
        log_term=pb.prev_log_term,
        index=pb.prev_log_index,
        entries=unpack_entries(pb.packed_entries) if pb.packed_entries else _entries_from_pb(pb.entries),
        commit=pb.leader_commit,
    )


def _app_resp(pb: AppendEntriesResponse) -> Message:
    return Message(
        type=MsgType.APP_RESP,
        **_hdr(pb),
        reject=pb.reject,
        index=pb.index,
        reject_hint=pb.reject_hint,
        log_term=pb.conflict_term,
        commit=pb.commit,
    )


def _snap(pb: InstallSnapshotChunk) -> Message:
    m = pb.meta
    conf = Configuration(voters=frozenset(m.voters), learners=frozenset(m.learners))
    return Message(
        type=MsgType.SNAP,
        **_hdr(pb),
        snapshot=Snapshot(meta=SnapshotMeta(index=m.index, term=m.term, conf=conf), data=None),
    )


_DECODERS: dict[type, Callable[[Any], Message]] = {
    VoteRequest: _vote,
    VoteResponse: _vote_resp,
    AppendEntriesRequest: _app,
    AppendEntriesResponse: _app_resp,
    HeartbeatRequest: lambda pb: Message(
        type=MsgType.HEARTBEAT, **_hdr(pb), commit=pb.commit, context=bytes(pb.context), index=pb.leader_tick
    ),
    HeartbeatResponse: lambda pb: Message(
        type=MsgType.HEARTBEAT_RESP,
        **_hdr(pb),
        commit=pb.commit,
        context=bytes(pb.context),
        index=pb.leader_tick,
    ),
    TimeoutNowRequest: lambda pb: Message(type=MsgType.TIMEOUT_NOW, **_hdr(pb)),
    ReadIndexRequest: lambda pb: Message(
        type=MsgType.READ_INDEX, **_hdr(pb), index=pb.index, context=bytes(pb.context)
    ),
    ReadIndexResponse: lambda pb: Message(
        type=MsgType.READ_INDEX_RESP, **_hdr(pb), index=pb.index, context=bytes(pb.context)
    ),
    ProposeRequest: lambda pb: Message(type=MsgType.PROP, **_hdr(pb), entries=_entries_from_pb(pb.entries)),
    TransferLeaderRequest: lambda pb: Message(type=MsgType.TRANSFER_LEADER, **_hdr(pb), index=pb.target),
    InstallSnapshotChunk: _snap,
    InstallSnapshotResponse: lambda pb: Message(type=MsgType.SNAP_STATUS, **_hdr(pb), reject=pb.reject),
}


def message_from_peer(pb: betterproto.Message) -> tuple[str, int, Message]:
    """(cluster_id, group_id, Message) for a bare protobuf peer message."""
    decode = _DECODERS.get(type(pb))
    if decode is None:
        raise CodecError(f"{type(pb).__name__} is not a Raft peer message")
    return pb.cluster_id, pb.group_id, decode(pb)


def message_from_proto(env: PeerEnvelope) -> tuple[str, int, Message]:
    """(cluster_id, group_id, Message) for an envelope from the peer stream."""
    name, inner = betterproto.which_one_of(env, "msg")
    if not name or inner is None:
        raise CodecError("empty PeerEnvelope")
    return message_from_peer(inner)


def decode_envelope(wire: bytes) -> tuple[str, int, Message]:
    """Parse and decode an envelope's wire bytes.  Any malformed input raises CodecError.

    (betterproto's Rust codec reports bad bytes as RuntimeError, its Python fallback as assorted
    exceptions; this folds them all into CodecError.)
    """
    try:
        env = PeerEnvelope().parse(wire)
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the input was bad
        raise CodecError(f"malformed PeerEnvelope: {exc}") from exc
    return message_from_proto(env)
