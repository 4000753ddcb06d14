"""The peer stream's hot path: PeerEnvelope wire bytes <-> raft.types.Message, by hand.

    wire = encode_envelope(msg, cluster_id, group_id)          # -> bytes of a PeerEnvelope
    cluster_id, group_id, msg = decode_envelope(wire)

This is the same mapping as gateway/peer_codec.py's `message_to_proto` / `message_from_proto` (whose
docstring gives the field meanings), minus betterproto: betterproto 2's Python Message machinery costs tens
to hundreds of microseconds per message (measured: ~20% of a leader's CPU under booking load), this module a
few.  proto/raft.proto stays the contract, byte for byte:

* `encode_envelope(m, c, g)` returns exactly `bytes(message_to_proto(m, c, g))`: fields in number order,
  proto3 defaults omitted, the envelope's oneof member and SnapshotMeta always present, repeated uint64s
  packed, APP entries in `packed_entries`.
* `decode_envelope(wire)` returns exactly what betterproto's parse followed by `message_from_proto` returns,
  and refuses (CodecError) whatever that refuses.  Protobuf rules as betterproto applies them: fields in any
  order, a scalar seen twice keeps the last value, a message field seen twice keeps the last occurrence (no
  merging), the last oneof member wins, repeated fields accept packed and unpacked form, unknown fields of
  wire types 0/1/2/5 are skipped.  Refused: truncation anywhere, a varint longer than 10 bytes or above
  2**64-1, a known field with the wrong wire type, field number 0, groups (wire types 3/4) and 6/7, invalid
  UTF-8 in a string, an entry type this node does not know, a PeerAuth or an empty envelope where a Raft
  message is expected.

Decoding never trusts its input and raises nothing but CodecError (a ValueError).  Both tests/test_peer_wire.py
(property tests against betterproto, and fuzzing) and `python -m gateway.peer_codec --bench` check this.

This module must not import betterproto: it is what the stream uses instead.  The cold paths (unary RPCs,
InstallSnapshot chunks) still go through betterproto in peer_codec.py.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from operator import attrgetter
from typing import Any

from raft.types import Configuration, Entry, EntryType, Message, MsgType, Snapshot, SnapshotMeta

__all__ = [
    "CodecError",
    "NETWORK_TYPES",
    "TRANSFER_CONTEXT",
    "decode_envelope",
    "encode_envelope",
    "pack_entries",
    "unpack_entries",
]

U64 = (1 << 64) - 1

# VOTE/PRE_VOTE context that marks an election caused by a leadership transfer.
TRANSFER_CONTEXT = b"transfer"


class CodecError(ValueError):
    """A message that cannot be encoded, or protobuf input that does not decode to a valid message."""


# Message fields other than type/to/frm/term, with their defaults: a field a type does not carry must
# hold its default, or encoding fails.
OPTIONAL_FIELDS: dict[str, Any] = {
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
CARRIED: dict[MsgType, frozenset[str]] = {
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
NETWORK_TYPES = frozenset(CARRIED)


def check_carried(msg: Message) -> None:
    """CodecError unless `msg` is a network message whose fields its protobuf form can all carry."""
    carried = CARRIED.get(msg.type)
    if carried is None:
        raise CodecError(f"{msg.type.name} is a local message and never crosses the network")
    for name, default in OPTIONAL_FIELDS.items():
        if name not in carried and getattr(msg, name) != default:
            raise CodecError(f"{msg.type.name} cannot carry field {name!r} (value {getattr(msg, name)!r})")


# Per type: one attrgetter for the fields it does not carry (every type has at least two, so it returns a
# tuple), and their defaults -- the fast form of check_carried.
_NOT_CARRIED: dict[MsgType, tuple[Callable[[Message], Any], tuple[Any, ...]]] = {}
for _t, _carried in CARRIED.items():
    _names = [n for n in OPTIONAL_FIELDS if n not in _carried]
    assert len(_names) > 1, _t
    _NOT_CARRIED[_t] = (attrgetter(*_names), tuple(OPTIONAL_FIELDS[n] for n in _names))
del _t, _carried, _names


# === packed entries ======================================================================================

_PACKED_HEADER = struct.Struct("<QQBI")  # term, index, type, data length
_PACKED_SIZE = _PACKED_HEADER.size
_ENTRY_TYPES = tuple(EntryType)  # indexable by value (0, 1, ...)
assert all(int(t) == i for i, t in enumerate(_ENTRY_TYPES))


def pack_entries(entries: tuple[Entry, ...] | list[Entry]) -> bytes:
    """The `packed_entries` form of a batch (see raft.proto): one bytes field instead of a message per entry."""
    try:
        return b"".join(_packed_parts(entries))
    except struct.error as exc:
        raise CodecError(f"entry out of range for packed_entries: {exc}") from None


def _packed_parts(entries: tuple[Entry, ...] | list[Entry]) -> list[bytes]:
    parts: list[bytes] = []
    ap = parts.append
    head = _PACKED_HEADER.pack
    for e in entries:
        d = e.data
        ap(head(e.term, e.index, e.type, len(d)))
        ap(d)
    return parts


def unpack_entries(blob: bytes) -> tuple[Entry, ...]:
    """Inverse of `pack_entries`; CodecError on a malformed blob."""
    return _unpack_entries(bytes(blob), 0, len(blob))


def _unpack_entries(buf: bytes, pos: int, end: int) -> tuple[Entry, ...]:
    out = []
    ap = out.append
    unpack = _PACKED_HEADER.unpack_from
    types = _ENTRY_TYPES
    ntypes = len(types)
    while pos < end:
        if pos + _PACKED_SIZE > end:
            raise CodecError(f"packed entries: truncated header at byte {pos}")
        term, index, kind, length = unpack(buf, pos)
        pos += _PACKED_SIZE
        nxt = pos + length
        if nxt > end:
            raise CodecError(f"packed entries: entry {index} claims {length} bytes past the end")
        if kind >= ntypes:
            raise CodecError(f"unknown entry type {kind} at index {index}")
        ap(Entry(term, index, types[kind], buf[pos:nxt]))
        pos = nxt
    return tuple(out)


# === encoding ============================================================================================

_V1 = tuple(bytes((i,)) for i in range(128))


def _uv(n: int) -> bytes:
    """A uint64 as a protobuf varint."""
    if 0 <= n < 0x80:
        return _V1[n]
    if n < 0 or n > U64:
        raise CodecError(f"{n} does not fit a uint64 field")
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


uvarint = _uv  # the public name: gateway.peer_auth encodes its PeerAuth with it


def _tag(num: int, wire_type: int) -> bytes:
    return _uv((num << 3) | wire_type)


# Tags (all one byte: field numbers below 16) of varint fields 1..15 and length-delimited fields 1..15.
_TV = tuple(_tag(i, 0) if i else b"" for i in range(16))
_TL = tuple(_tag(i, 2) if i else b"" for i in range(16))

# PeerEnvelope oneof field number of each message type.
_ENVELOPE_FIELD = {
    MsgType.VOTE: 1,
    MsgType.PRE_VOTE: 1,
    MsgType.VOTE_RESP: 2,
    MsgType.PRE_VOTE_RESP: 2,
    MsgType.APP: 3,
    MsgType.APP_RESP: 4,
    MsgType.HEARTBEAT: 5,
    MsgType.HEARTBEAT_RESP: 6,
    MsgType.TIMEOUT_NOW: 7,
    MsgType.READ_INDEX: 8,
    MsgType.READ_INDEX_RESP: 9,
    MsgType.PROP: 10,
    MsgType.TRANSFER_LEADER: 11,
    MsgType.SNAP: 12,
    MsgType.SNAP_STATUS: 13,
}
ENVELOPE_AUTH_FIELD = 14

_prefixes: dict[tuple[str, int], bytes] = {}


def _prefix(cluster_id: str, group_id: int) -> bytes:
    """Fields 1 (cluster_id) and 2 (group_id), which open every peer message; cached per (cluster, group)."""
    key = (cluster_id, group_id)
    p = _prefixes.get(key)
    if p is None:
        try:
            c = cluster_id.encode()
        except (UnicodeEncodeError, AttributeError) as exc:
            raise CodecError(f"cluster id {cluster_id!r} is not a string protobuf can carry: {exc}") from None
        if not isinstance(group_id, int):
            raise CodecError(f"group id {group_id!r} is not an integer")
        p = (_TL[1] + _uv(len(c)) + c if c else b"") + (_TV[2] + _uv(group_id) if group_id else b"")
        if len(_prefixes) >= 64:
            _prefixes.clear()
        _prefixes[key] = p
    return p


def _put(parts: list[bytes], num: int, v: int) -> None:
    """A uint64 (or bool) field, omitted when zero."""
    if v:
        parts.append(_TV[num])
        parts.append(_V1[v] if 0 < v < 0x80 else _uv(v))


def _put_bytes(parts: list[bytes], num: int, b: bytes) -> None:
    """A bytes field, omitted when empty."""
    if b:
        parts.append(_TL[num])
        parts.append(_uv(len(b)))
        parts.append(b)


def _put_packed(parts: list[bytes], num: int, values: list[int]) -> None:
    if values:
        body = b"".join([_uv(v) for v in values])
        parts.append(_TL[num])
        parts.append(_uv(len(body)))
        parts.append(body)


def _entry_bytes(e: Entry) -> bytes:
    """One Entry message (ProposeRequest.entries)."""
    parts: list[bytes] = []
    _put(parts, 1, e.term)
    _put(parts, 2, e.index)
    _put(parts, 3, int(e.type))
    _put_bytes(parts, 4, e.data)
    return b"".join(parts)


def encode_envelope(msg: Message, cluster_id: str, group_id: int) -> bytes:
    """The PeerEnvelope wire bytes for `msg`: `bytes(message_to_proto(msg, cluster_id, group_id))`.

    Raises CodecError for a message that cannot cross the network (a local type, a field its protobuf form
    cannot carry, a value out of range)."""
    t = msg.type
    nc = _NOT_CARRIED.get(t)
    if nc is None or nc[0](msg) != nc[1]:
        check_carried(msg)  # raises, with the precise reason
    parts: list[bytes] = [b"", b"", _prefix(cluster_id, group_id)]
    frm, to, term = msg.frm, msg.to, msg.term
    # header fields 3, 4, 5
    if frm:
        parts.append(b"\x18")
        parts.append(_V1[frm] if 0 < frm < 0x80 else _uv(frm))
    if to:
        parts.append(b"\x20")
        parts.append(_V1[to] if 0 < to < 0x80 else _uv(to))
    if term:
        parts.append(b"\x28")
        parts.append(_V1[term] if 0 < term < 0x80 else _uv(term))
    ap = parts.append
    if t is MsgType.APP:
        _put(parts, 6, msg.index)  # prev_log_index
        _put(parts, 7, msg.log_term)  # prev_log_term
        _put(parts, 9, msg.commit)  # leader_commit
        ents = msg.entries
        if ents:
            try:
                packed = _packed_parts(ents)
            except struct.error as exc:
                raise CodecError(f"entry out of range for packed_entries: {exc}") from None
            ap(b"\x52")  # packed_entries, field 10
            ap(_uv(sum(map(len, packed))))
            parts += packed
    elif t is MsgType.APP_RESP:
        _put(parts, 6, msg.reject)
        _put(parts, 7, msg.index)
        _put(parts, 8, msg.reject_hint)
        _put(parts, 9, msg.log_term)  # conflict_term
        _put(parts, 10, msg.commit)
    elif t is MsgType.HEARTBEAT or t is MsgType.HEARTBEAT_RESP:
        _put(parts, 6, msg.commit)
        _put_bytes(parts, 7, msg.context)
        _put(parts, 8, msg.index)  # leader_tick
    elif t is MsgType.VOTE or t is MsgType.PRE_VOTE:
        ctx = msg.context
        if ctx and ctx != TRANSFER_CONTEXT:
            raise CodecError(f"{t.name} context must be empty or {TRANSFER_CONTEXT!r}, not {ctx!r}")
        _put(parts, 6, msg.index)  # last_log_index
        _put(parts, 7, msg.log_term)  # last_log_term
        if t is MsgType.PRE_VOTE:
            ap(b"\x40\x01")  # pre_vote
        if ctx:
            ap(b"\x48\x01")  # leader_transfer
    elif t is MsgType.VOTE_RESP or t is MsgType.PRE_VOTE_RESP:
        _put(parts, 6, msg.reject)
        if t is MsgType.PRE_VOTE_RESP:
            ap(b"\x38\x01")  # pre_vote
    elif t is MsgType.READ_INDEX or t is MsgType.READ_INDEX_RESP:
        _put_bytes(parts, 6, msg.context)
        _put(parts, 7, msg.index)
    elif t is MsgType.PROP:
        for e in msg.entries:
            body = _entry_bytes(e)
            ap(b"\x32")
            ap(_uv(len(body)))
            ap(body)
    elif t is MsgType.TRANSFER_LEADER:
        _put(parts, 6, msg.index)  # target
    elif t is MsgType.SNAP:
        snap = msg.snapshot
        if snap is None:
            raise CodecError("SNAP without a snapshot")
        meta = snap.meta
        mparts: list[bytes] = []
        _put(mparts, 1, meta.index)
        _put(mparts, 2, meta.term)
        _put_packed(mparts, 3, sorted(meta.conf.voters))
        _put_packed(mparts, 4, sorted(meta.conf.learners))
        mbody = b"".join(mparts)
        ap(b"\x32")  # meta, field 6 (always present); offset 0, no data, done=False: all omitted
        ap(_uv(len(mbody)))
        ap(mbody)
    elif t is MsgType.SNAP_STATUS:
        _put(parts, 6, msg.reject)
    # TIMEOUT_NOW: the header only
    parts[0] = _TL[_ENVELOPE_FIELD[t]]
    parts[1] = _uv(sum(map(len, parts)) - 1)
    return b"".join(parts)


# === decoding ============================================================================================
#
# Two phases, as betterproto's parse followed by message_from_proto: `_scan` checks a message's wire form
# and collects its fields by number (phase 1, applied to every occurrence of an envelope member), then a
# builder makes the Message of the last one (phase 2, where entry types and such are checked).

# Field kinds.
_SKIP = 0  # unknown field: skipped
_U64 = 1  # uint64 / uint32 / enum: varint
_BOOL = 2  # varint, true if nonzero
_STR = 3  # length-delimited UTF-8
_BYTES = 4  # length-delimited
_SPAN = 5  # length-delimited, kept as (start, end) offsets (packed_entries)
_ENTRIES = 6  # repeated Entry message
_META = 7  # SnapshotMeta message (the last occurrence wins)
_U64S = 8  # repeated uint64, packed or not


def _kinds(**by_number: int) -> tuple[int, ...]:
    out = [_SKIP] * (max(int(k[1:]) for k in by_number) + 1)
    for k, v in by_number.items():
        out[int(k[1:])] = v
    return tuple(out)


_HDR = dict(f1=_STR, f2=_U64, f3=_U64, f4=_U64, f5=_U64)
_KINDS: dict[int, tuple[int, ...]] = {
    1: _kinds(**_HDR, f6=_U64, f7=_U64, f8=_BOOL, f9=_BOOL),  # VoteRequest
    2: _kinds(**_HDR, f6=_BOOL, f7=_BOOL),  # VoteResponse
    3: _kinds(**_HDR, f6=_U64, f7=_U64, f8=_ENTRIES, f9=_U64, f10=_SPAN),  # AppendEntriesRequest
    4: _kinds(**_HDR, f6=_BOOL, f7=_U64, f8=_U64, f9=_U64, f10=_U64),  # AppendEntriesResponse
    5: _kinds(**_HDR, f6=_U64, f7=_BYTES, f8=_U64),  # HeartbeatRequest
    6: _kinds(**_HDR, f6=_U64, f7=_BYTES, f8=_U64),  # HeartbeatResponse
    7: _kinds(**_HDR),  # TimeoutNowRequest
    8: _kinds(**_HDR, f6=_BYTES, f7=_U64),  # ReadIndexRequest
    9: _kinds(**_HDR, f6=_BYTES, f7=_U64),  # ReadIndexResponse
    10: _kinds(**_HDR, f6=_ENTRIES),  # ProposeRequest
    11: _kinds(**_HDR, f6=_U64),  # TransferLeaderRequest
    12: _kinds(**_HDR, f6=_META, f7=_U64, f8=_BYTES, f9=_BOOL, f10=_BYTES),  # InstallSnapshotChunk
    13: _kinds(**_HDR, f6=_BOOL, f7=_U64),  # InstallSnapshotResponse
    14: _kinds(f1=_U64, f2=_U64, f3=_U64, f4=_BYTES, f5=_U64, f6=_U64, f7=_BYTES),  # PeerAuth
}
_ENTRY_KINDS = _kinds(f1=_U64, f2=_U64, f3=_U64, f4=_BYTES)
_META_KINDS = _kinds(f1=_U64, f2=_U64, f3=_U64S, f4=_U64S)

# Default values by kind (lists are created fresh per message).
_DEFAULTS = {_SKIP: None, _U64: 0, _BOOL: False, _STR: "", _BYTES: b"", _SPAN: None, _ENTRIES: None,
             _META: None, _U64S: None}
_INITIAL: dict[int, list[Any]] = {n: [_DEFAULTS[k] for k in kinds] for n, kinds in _KINDS.items()}
_ENTRY_INITIAL = [_DEFAULTS[k] for k in _ENTRY_KINDS]
_META_INITIAL = [_DEFAULTS[k] for k in _META_KINDS]


def _bad(what: str) -> CodecError:
    return CodecError(f"malformed PeerEnvelope: {what}")


def _varint_tail(buf: bytes, pos: int, end: int, b: int) -> tuple[int, int]:
    """The rest of a varint whose first byte `b` (>= 0x80) was just read; returns (value, next position)."""
    v = b & 0x7F
    shift = 7
    while True:
        if pos >= end:
            raise _bad("truncated varint")
        b = buf[pos]
        pos += 1
        if shift == 63:
            if b > 1:
                raise _bad("varint longer than 64 bits")
            return v | (b << 63), pos
        v |= (b & 0x7F) << shift
        if b < 0x80:
            return v, pos
        shift += 7


def _skip(buf: bytes, pos: int, end: int, wt: int) -> int:
    """Skip an unknown field's value of wire type `wt` starting at `pos`."""
    if wt == 0:
        if pos >= end:
            raise _bad("truncated varint")
        b = buf[pos]
        pos += 1
        if b >= 0x80:
            _, pos = _varint_tail(buf, pos, end, b)
        return pos
    if wt == 2:
        if pos >= end:
            raise _bad("truncated length")
        n = buf[pos]
        pos += 1
        if n >= 0x80:
            n, pos = _varint_tail(buf, pos, end, n)
        pos += n
    elif wt == 1:
        pos += 8
    elif wt == 5:
        pos += 4
    else:
        raise _bad(f"wire type {wt}")
    if pos > end:
        raise _bad("truncated field")
    return pos


def _scan(buf: bytes, pos: int, end: int, kinds: tuple[int, ...], vals: list[Any]) -> list[Any]:
    """Phase 1: parse the message in buf[pos:end] into `vals` (indexed by field number) and return it."""
    nk = len(kinds)
    while pos < end:
        tag = buf[pos]
        pos += 1
        if tag >= 0x80:
            tag, pos = _varint_tail(buf, pos, end, tag)
            if tag > 0xFFFFFFFF:
                raise _bad("field tag out of range")
        num = tag >> 3
        wt = tag & 7
        kind = kinds[num] if num < nk else _SKIP
        if kind == _SKIP:
            if num == 0:
                raise _bad("field number 0")
            pos = _skip(buf, pos, end, wt)
            continue
        if wt == 0:
            if kind == _U64:
                if pos >= end:
                    raise _bad("truncated varint")
                v = buf[pos]
                pos += 1
                if v >= 0x80:
                    v, pos = _varint_tail(buf, pos, end, v)
                vals[num] = v
                continue
            if kind == _BOOL:
                if pos >= end:
                    raise _bad("truncated varint")
                v = buf[pos]
                pos += 1
                if v >= 0x80:
                    v, pos = _varint_tail(buf, pos, end, v)
                vals[num] = v > 0
                continue
            if kind == _U64S:
                if pos >= end:
                    raise _bad("truncated varint")
                v = buf[pos]
                pos += 1
                if v >= 0x80:
                    v, pos = _varint_tail(buf, pos, end, v)
                lst = vals[num]
                if lst is None:
                    vals[num] = [v]
                else:
                    lst.append(v)
                continue
            raise _bad(f"field {num} has wire type 0")
        if wt != 2 or kind == _U64 or kind == _BOOL:
            raise _bad(f"field {num} has wire type {wt}")
        # length-delimited
        if pos >= end:
            raise _bad("truncated length")
        n = buf[pos]
        pos += 1
        if n >= 0x80:
            n, pos = _varint_tail(buf, pos, end, n)
        nxt = pos + n
        if nxt > end:
            raise _bad(f"field {num} claims {n} bytes past the end")
        if kind == _BYTES:
            vals[num] = buf[pos:nxt]
        elif kind == _SPAN:
            vals[num] = (pos, nxt)
        elif kind == _STR:
            try:
                vals[num] = buf[pos:nxt].decode()
            except UnicodeDecodeError:
                raise _bad(f"field {num} is not valid UTF-8") from None
        elif kind == _ENTRIES:
            e = _scan(buf, pos, nxt, _ENTRY_KINDS, _ENTRY_INITIAL.copy())
            lst = vals[num]
            if lst is None:
                vals[num] = [e]
            else:
                lst.append(e)
        elif kind == _META:
            vals[num] = _scan(buf, pos, nxt, _META_KINDS, _META_INITIAL.copy())
        else:  # _U64S, packed
            lst = vals[num]
            if lst is None:
                lst = vals[num] = []
            p = pos
            while p < nxt:
                v = buf[p]
                p += 1
                if v >= 0x80:
                    v, p = _varint_tail(buf, p, nxt, v)
                lst.append(v)
        pos = nxt
    return vals


def _entries(pbs: list[list[Any]] | None) -> tuple[Entry, ...]:
    """Entries sent as repeated Entry messages (ProposeRequest, or an AppendEntriesRequest of another sender)."""
    if not pbs:
        return ()
    out = []
    for _, term, index, kind, data in pbs:
        # protobuf enums are int32: betterproto keeps the low 32 bits, as a signed value
        kind &= 0xFFFFFFFF
        if kind >= 0x80000000:
            kind -= 1 << 32
        if not 0 <= kind < len(_ENTRY_TYPES):
            raise CodecError(f"unknown entry type {kind} at index {index}")
        out.append(Entry(term, index, _ENTRY_TYPES[kind], data))
    return tuple(out)


# Phase 2, per envelope member: fields by number -> Message.  Message's positional fields are
# (type, to, frm, term, log_term, index, entries, commit, reject, reject_hint, snapshot, context).
_M = Message


def _b_vote(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.PRE_VOTE if v[8] else MsgType.VOTE, v[4], v[3], v[5], v[7], v[6],
              context=TRANSFER_CONTEXT if v[9] else b"")


def _b_vote_resp(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.PRE_VOTE_RESP if v[7] else MsgType.VOTE_RESP, v[4], v[3], v[5], reject=v[6])


def _b_app(v: list[Any], buf: bytes) -> Message:
    span = v[10]
    if span is not None and span[0] != span[1]:
        entries = _unpack_entries(buf, span[0], span[1])
    else:
        entries = _entries(v[8])
    return _M(MsgType.APP, v[4], v[3], v[5], v[7], v[6], entries, v[9])


def _b_app_resp(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.APP_RESP, v[4], v[3], v[5], v[9], v[7], (), v[10], v[6], v[8])


def _b_heartbeat(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.HEARTBEAT, v[4], v[3], v[5], 0, v[8], (), v[6], context=v[7])


def _b_heartbeat_resp(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.HEARTBEAT_RESP, v[4], v[3], v[5], 0, v[8], (), v[6], context=v[7])


def _b_timeout_now(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.TIMEOUT_NOW, v[4], v[3], v[5])


def _b_read_index(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.READ_INDEX, v[4], v[3], v[5], index=v[7], context=v[6])


def _b_read_index_resp(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.READ_INDEX_RESP, v[4], v[3], v[5], index=v[7], context=v[6])


def _b_prop(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.PROP, v[4], v[3], v[5], entries=_entries(v[6]))


def _b_transfer(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.TRANSFER_LEADER, v[4], v[3], v[5], index=v[6])


def _b_snap(v: list[Any], buf: bytes) -> Message:
    m = v[6] or _META_INITIAL
    conf = Configuration(voters=frozenset(m[3] or ()), learners=frozenset(m[4] or ()))
    snap = Snapshot(meta=SnapshotMeta(index=m[1], term=m[2], conf=conf), data=None)
    return _M(MsgType.SNAP, v[4], v[3], v[5], snapshot=snap)


def _b_snap_status(v: list[Any], buf: bytes) -> Message:
    return _M(MsgType.SNAP_STATUS, v[4], v[3], v[5], reject=v[6])


_BUILDERS: dict[int, Callable[[list[Any], bytes], Message]] = {
    1: _b_vote,
    2: _b_vote_resp,
    3: _b_app,
    4: _b_app_resp,
    5: _b_heartbeat,
    6: _b_heartbeat_resp,
    7: _b_timeout_now,
    8: _b_read_index,
    9: _b_read_index_resp,
    10: _b_prop,
    11: _b_transfer,
    12: _b_snap,
    13: _b_snap_status,
}


def decode_envelope(wire: bytes) -> tuple[str, int, Message]:
    """(cluster_id, group_id, Message) for a PeerEnvelope's wire bytes.  Any malformed input raises CodecError."""
    buf = wire if type(wire) is bytes else bytes(wire)
    try:
        pos, end = 0, len(buf)
        last = 0
        vals: list[Any] = []
        while pos < end:
            tag = buf[pos]
            pos += 1
            if tag >= 0x80:
                tag, pos = _varint_tail(buf, pos, end, tag)
                if tag > 0xFFFFFFFF:
                    raise _bad("field tag out of range")
            num = tag >> 3
            wt = tag & 7
            if not 1 <= num <= ENVELOPE_AUTH_FIELD:
                if num == 0:
                    raise _bad("field number 0")
                pos = _skip(buf, pos, end, wt)
                continue
            if wt != 2:
                raise _bad(f"envelope field {num} has wire type {wt}")
            if pos >= end:
                raise _bad("truncated length")
            n = buf[pos]
            pos += 1
            if n >= 0x80:
                n, pos = _varint_tail(buf, pos, end, n)
            nxt = pos + n
            if nxt > end:
                raise _bad(f"envelope field {num} claims {n} bytes past the end")
            vals = _scan(buf, pos, nxt, _KINDS[num], _INITIAL[num].copy())
            last = num
            pos = nxt
        if not last:
            raise CodecError("empty PeerEnvelope")
        if last == ENVELOPE_AUTH_FIELD:
            raise CodecError("PeerAuth is not a Raft peer message")
        return vals[1], vals[2], _BUILDERS[last](vals, buf)
    except CodecError:
        raise
    except (IndexError, ValueError, TypeError, OverflowError, struct.error) as exc:  # pragma: no cover - a bug here
        raise CodecError(f"malformed PeerEnvelope: {type(exc).__name__}: {exc}") from exc
