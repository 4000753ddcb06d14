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

The peer stream does not use this betterproto mapping any more: `encode_envelope` / `decode_envelope`
(gateway/peer_wire.py, re-exported here) go straight between Message and PeerEnvelope wire bytes, with the
same bytes and the same results (tests/test_peer_wire.py proves it against the functions below).  The
betterproto forms remain for the cold paths (unary RPCs, InstallSnapshot chunks) and as the reference:

    wire = encode_envelope(msg, cluster_id, group_id)          # == bytes(message_to_proto(...))
    cluster_id, group_id, msg = decode_envelope(wire)          # == decode_envelope_betterproto(wire)

`python -m gateway.peer_codec --bench` times both forms.
"""

from __future__ import annotations

import sys
import time
from collections.abc import Callable
from typing import Any

import betterproto

from gateway.peer_wire import (
    NETWORK_TYPES,
    TRANSFER_CONTEXT,
    CodecError,
    check_carried,
    decode_envelope,
    encode_envelope,
    pack_entries,
    unpack_entries,
)
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
    "TRANSFER_CONTEXT",
    "decode_envelope",
    "decode_envelope_betterproto",
    "encode_envelope",
    "encode_envelope_betterproto",
    "pack_entries",
    "unpack_entries",
    "message_from_peer",
    "message_from_proto",
    "message_to_peer",
    "message_to_proto",
]

# CodecError, the table of fields each message type carries (check_carried) and the packed-entries format
# live in gateway/peer_wire.py, the hand codec the peer stream uses; they are re-exported here.


# --- Message -> protobuf -------------------------------------------------------------------------------


def _entries_to_pb(entries: tuple[Entry, ...]) -> list[PbEntry]:
    return [PbEntry(term=e.term, index=e.index, type=PbEntryType(int(e.type)), data=e.data) for e in entries]


def message_to_peer(msg: Message, cluster_id: str, group_id: int) -> betterproto.Message:
    """The protobuf peer message for `msg` (not wrapped in an envelope)."""
    check_carried(msg)
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
    raise AssertionError(f"unhandled message type {t!r}")  # check_carried lets only known types through


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


def encode_envelope_betterproto(msg: Message, cluster_id: str, group_id: int) -> bytes:
    """What `encode_envelope` returns, through betterproto (the reference; slow)."""
    return bytes(message_to_proto(msg, cluster_id, group_id))


def decode_envelope_betterproto(wire: bytes) -> tuple[str, int, Message]:
    """What `decode_envelope` returns, through betterproto (the reference; slow).  Malformed input raises
    CodecError.

    (betterproto's Rust codec reports bad bytes as RuntimeError, its Python fallback as assorted
    exceptions; this folds them all into CodecError.)
    """
    try:
        env = PeerEnvelope().parse(wire)
    except Exception as exc:  # noqa: BLE001 - whatever the parser raises, the input was bad
        raise CodecError(f"malformed PeerEnvelope: {exc}") from exc
    return message_from_proto(env)


# --- microbenchmark ------------------------------------------------------------------------------------


def _bench_messages() -> dict[str, Message]:
    """Typical peer messages of a busy 3-node cluster."""
    term, base = 7, 1_234_567
    ents = tuple(Entry(term, base + 1 + i, EntryType.NORMAL, bytes(range(256)) + bytes(44)) for i in range(32))
    return {
        "append 32x300B": Message(MsgType.APP, to=2, frm=1, term=term, log_term=term, index=base, entries=ents,
                                  commit=base - 5),
        "append 1x300B": Message(MsgType.APP, to=2, frm=1, term=term, log_term=term, index=base,
                                 entries=ents[:1], commit=base - 5),
        "append ack": Message(MsgType.APP_RESP, to=1, frm=2, term=term, index=base + 32, commit=base - 5),
        "heartbeat": Message(MsgType.HEARTBEAT, to=2, frm=1, term=term, commit=base, index=987_654),
        "heartbeat ack": Message(MsgType.HEARTBEAT_RESP, to=1, frm=2, term=term, commit=base, index=987_654),
    }


def _time_us(fn: Callable[[], object], min_s: float = 0.2) -> float:
    """Best of 5 runs of µs per call."""
    n = 1
    while True:  # calibrate
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        dt = time.perf_counter() - t0
        if dt >= min_s / 5:
            break
        n *= 2
    best = dt
    for _ in range(4):
        t0 = time.perf_counter()
        for _ in range(n):
            fn()
        best = min(best, time.perf_counter() - t0)
    return best / n * 1e6


def bench(out: Any = None, min_s: float = 0.2) -> dict[str, dict[str, float]]:
    """µs per encode and decode of typical peer messages, betterproto vs the hand codec; printed to `out`
    (each figure: the best of 5 runs of about `min_s` / 5 seconds)."""
    out = out or sys.stdout
    results: dict[str, dict[str, float]] = {}
    print(f"{'message':<16} {'bytes':>6} {'encode old':>11} {'encode new':>11} {'decode old':>11} {'decode new':>11}"
          "   (µs per message)", file=out)
    for name, msg in _bench_messages().items():
        wire = encode_envelope(msg, "railraft", 1)
        assert wire == encode_envelope_betterproto(msg, "railraft", 1)
        assert decode_envelope(wire) == decode_envelope_betterproto(wire) == ("railraft", 1, msg)
        r = {
            "bytes": len(wire),
            "encode_old_us": _time_us(lambda: encode_envelope_betterproto(msg, "railraft", 1), min_s),
            "encode_new_us": _time_us(lambda: encode_envelope(msg, "railraft", 1), min_s),
            "decode_old_us": _time_us(lambda: decode_envelope_betterproto(wire), min_s),
            "decode_new_us": _time_us(lambda: decode_envelope(wire), min_s),
        }
        results[name] = r
        print(f"{name:<16} {len(wire):>6} {r['encode_old_us']:>11.1f} {r['encode_new_us']:>11.1f} "
              f"{r['decode_old_us']:>11.1f} {r['decode_new_us']:>11.1f}", file=out)
    return results


if __name__ == "__main__":
    if sys.argv[1:] != ["--bench"]:
        sys.exit("usage: python -m gateway.peer_codec --bench")
    bench()
