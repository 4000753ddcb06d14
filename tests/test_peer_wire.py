"""The hand-written peer stream codec (gateway/peer_wire.py) against betterproto (gateway/peer_codec.py).

proto/raft.proto is the contract between old and new nodes, so the hand codec must produce exactly the bytes
betterproto produces and decode every input exactly as betterproto + message_from_proto did: same Message,
or CodecError where that refused.  Arbitrary bytes never raise anything but CodecError.
"""

from __future__ import annotations

import io
import subprocess
import sys

import pytest
from hypothesis import HealthCheck, currently_in_test_context, event, example, given, settings
from hypothesis import strategies as st

from gateway.peer_auth import ClusterAuth, frame
from gateway.peer_codec import (
    NETWORK_TYPES,
    CodecError,
    bench,
    decode_envelope,
    decode_envelope_betterproto,
    encode_envelope,
    encode_envelope_betterproto,
    message_to_proto,
)
from gateway.peer_service import STREAM_METHOD
from gateway.peer_wire import decode_envelope as wire_decode
from raft.types import Configuration, Entry, EntryType, Message, MsgType, Snapshot, SnapshotMeta

U64 = 2**64 - 1

# uint64 values: mostly small, often multi-byte varints, sometimes the extremes.
u64 = st.one_of(
    st.integers(min_value=0, max_value=200),
    st.integers(min_value=0, max_value=2**21),
    st.integers(min_value=0, max_value=U64),
    st.sampled_from([0, 1, 127, 128, 16383, 16384, 2**32 - 1, 2**32, 2**63 - 1, 2**63, U64]),
)
node_ids = st.one_of(st.integers(min_value=0, max_value=7), u64)
payloads = st.one_of(
    st.binary(max_size=64),
    st.binary(min_size=100, max_size=2000),
    st.sampled_from([b"", b"\x00", bytes(300), bytes(range(256)) * 40]),
)
cluster_ids = st.one_of(st.sampled_from(["", "railraft", "test-cluster"]), st.text(max_size=40))
group_ids = u64

entries = st.lists(
    st.builds(Entry, term=u64, index=u64, type=st.sampled_from(list(EntryType)), data=payloads), max_size=40
).map(tuple)

snapshots = st.builds(
    Snapshot,
    meta=st.builds(
        SnapshotMeta,
        index=u64,
        term=u64,
        conf=st.builds(
            Configuration,
            voters=st.frozensets(st.integers(min_value=0, max_value=U64), max_size=9),
            learners=st.frozensets(st.integers(min_value=0, max_value=U64), max_size=4),
        ),
    ),
    data=st.none(),
)


def _msg(t: MsgType, **fields: st.SearchStrategy) -> st.SearchStrategy[Message]:
    return st.builds(Message, type=st.just(t), to=node_ids, frm=node_ids, term=u64, **fields)


vote_ctx = st.sampled_from([b"", b"transfer"])

MESSAGES: dict[MsgType, st.SearchStrategy[Message]] = {
    MsgType.APP: _msg(MsgType.APP, log_term=u64, index=u64, entries=entries, commit=u64),
    MsgType.APP_RESP: _msg(
        MsgType.APP_RESP, index=u64, reject=st.booleans(), reject_hint=u64, log_term=u64, commit=u64
    ),
    MsgType.VOTE: _msg(MsgType.VOTE, log_term=u64, index=u64, context=vote_ctx),
    MsgType.PRE_VOTE: _msg(MsgType.PRE_VOTE, log_term=u64, index=u64, context=vote_ctx),
    MsgType.VOTE_RESP: _msg(MsgType.VOTE_RESP, reject=st.booleans()),
    MsgType.PRE_VOTE_RESP: _msg(MsgType.PRE_VOTE_RESP, reject=st.booleans()),
    MsgType.HEARTBEAT: _msg(MsgType.HEARTBEAT, commit=u64, context=payloads, index=u64),
    MsgType.HEARTBEAT_RESP: _msg(MsgType.HEARTBEAT_RESP, commit=u64, context=payloads, index=u64),
    MsgType.TIMEOUT_NOW: _msg(MsgType.TIMEOUT_NOW),
    MsgType.READ_INDEX: _msg(MsgType.READ_INDEX, index=u64, context=payloads),
    MsgType.READ_INDEX_RESP: _msg(MsgType.READ_INDEX_RESP, index=u64, context=payloads),
    MsgType.PROP: _msg(MsgType.PROP, entries=entries),
    MsgType.TRANSFER_LEADER: _msg(MsgType.TRANSFER_LEADER, index=u64),
    MsgType.SNAP: _msg(MsgType.SNAP, snapshot=snapshots),
    MsgType.SNAP_STATUS: _msg(MsgType.SNAP_STATUS, reject=st.booleans()),
}
any_message = st.one_of(*MESSAGES.values())

SLOW = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _outcome(decode, wire: bytes):
    """("ok", result) or ("error", None); anything but CodecError fails the test."""
    try:
        return "ok", decode(wire)
    except CodecError:
        return "error", None


def _agree(wire: bytes) -> None:
    new, old = _outcome(decode_envelope, wire), _outcome(decode_envelope_betterproto, wire)
    assert new == old, wire.hex()
    if currently_in_test_context():
        event(f"decoded: {new[0]}")  # (--hypothesis-show-statistics: both outcomes should be common)


def test_every_network_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(NETWORK_TYPES)


def test_the_stream_uses_the_hand_codec() -> None:
    assert decode_envelope is wire_decode
    code = "import sys, gateway.peer_wire; assert 'betterproto' not in sys.modules, 'peer_wire imports betterproto'"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr


# --- equivalence with betterproto --------------------------------------------------------------------------


@SLOW
@given(msg=any_message, cluster_id=cluster_ids, group_id=group_ids)
def test_encoding_is_byte_identical_to_betterproto(msg: Message, cluster_id: str, group_id: int) -> None:
    wire = encode_envelope(msg, cluster_id, group_id)
    assert wire == encode_envelope_betterproto(msg, cluster_id, group_id)
    assert decode_envelope(wire) == decode_envelope_betterproto(wire) == (cluster_id, group_id, msg)


@pytest.mark.parametrize("t", sorted(NETWORK_TYPES))
def test_minimal_message_of_each_type(t: MsgType) -> None:
    """All-default fields: empty inner messages still appear in the envelope, as betterproto writes them."""
    msg = Message(t, snapshot=Snapshot(SnapshotMeta()) if t is MsgType.SNAP else None)
    for cluster_id, group_id in (("", 0), ("c", 1)):
        wire = encode_envelope(msg, cluster_id, group_id)
        assert wire == encode_envelope_betterproto(msg, cluster_id, group_id)
        expected = msg if t is not MsgType.SNAP else Message(t, snapshot=Snapshot(SnapshotMeta(), data=None))
        assert decode_envelope(wire) == (cluster_id, group_id, expected)


def test_typical_append_batch() -> None:
    ents = tuple(Entry(7, 1_000 + i, EntryType.NORMAL, bytes([i]) * 300) for i in range(32))
    ents += (Entry(7, 1_032, EntryType.CONF, Configuration(frozenset({1, 2, 3})).encode()),)
    msg = Message(MsgType.APP, to=2, frm=1, term=7, log_term=7, index=999, entries=ents, commit=990)
    wire = encode_envelope(msg, "railraft", 1)
    assert wire == bytes(message_to_proto(msg, "railraft", 1))
    assert decode_envelope(wire) == ("railraft", 1, msg)
    assert decode_envelope(bytearray(wire)) == decode_envelope(memoryview(wire)) == ("railraft", 1, msg)


def test_snapshot_data_is_not_encoded() -> None:
    meta = SnapshotMeta(100, 6, Configuration(frozenset({3, 1, 2}), frozenset({4})))
    msg = Message(MsgType.SNAP, to=2, frm=1, term=7, snapshot=Snapshot(meta, data="/some/file"))
    wire = encode_envelope(msg, "c", 9)
    assert wire == encode_envelope_betterproto(msg, "c", 9)
    assert decode_envelope(wire)[2].snapshot == Snapshot(meta, data=None)


# --- encoding refusals -------------------------------------------------------------------------------------


@pytest.mark.parametrize("t", [MsgType.HUP, MsgType.BEAT, MsgType.UNREACHABLE])
def test_local_messages_do_not_encode(t: MsgType) -> None:
    with pytest.raises(CodecError, match="local"):
        encode_envelope(Message(type=t), "c", 1)


@pytest.mark.parametrize(
    "msg",
    [
        Message(type=MsgType.HEARTBEAT, entries=(Entry(1, 1),)),
        Message(type=MsgType.HEARTBEAT, entries=[]),  # a list is not the default () either
        Message(type=MsgType.VOTE_RESP, index=3),
        Message(type=MsgType.TIMEOUT_NOW, commit=1),
        Message(type=MsgType.APP, reject=True),
        Message(type=MsgType.APP_RESP, context=b"x"),
        Message(type=MsgType.PROP, snapshot=Snapshot(SnapshotMeta())),
        Message(type=MsgType.VOTE, context=b"something else"),
        Message(type=MsgType.SNAP),
        Message(type=MsgType.HEARTBEAT, term=-1),
        Message(type=MsgType.HEARTBEAT, to=2**64),
        Message(type=MsgType.APP_RESP, index=-5),
        Message(type=MsgType.APP, entries=(Entry(2**64, 1),)),
        Message(type=MsgType.PROP, entries=(Entry(1, -1),)),
        Message(type=MsgType.SNAP, snapshot=Snapshot(SnapshotMeta(conf=Configuration(frozenset({-1}))))),
    ],
)
def test_unencodable_messages_raise_codec_error(msg: Message) -> None:
    with pytest.raises(CodecError):
        encode_envelope(msg, "c", 1)


def test_bad_cluster_or_group_raise_codec_error() -> None:
    msg = Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)
    with pytest.raises(CodecError):
        encode_envelope(msg, "\udc80", 1)  # not encodable as UTF-8
    with pytest.raises(CodecError):
        encode_envelope(msg, "c", -1)


# --- hostile input -----------------------------------------------------------------------------------------


def _uv(n: int) -> bytes:
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def _ld(num: int, body: bytes) -> bytes:
    return _uv(num << 3 | 2) + _uv(len(body)) + body


def _vi(num: int, value: int) -> bytes:
    return _uv(num << 3) + _uv(value)


# Hand-made envelopes at the edges of the protobuf rules, each decoded the same by both codecs.
EDGE_CASES = {
    "empty": b"",
    "unknown fields only": _vi(20, 5) + _ld(21, b"abc"),
    "unknown fields around a member": _vi(20, 5) + _ld(5, _vi(3, 1)) + b"\x79" + bytes(8) + b"\x7d" + bytes(4),
    "unknown fields inside": _ld(5, _vi(3, 1) + _vi(99, 2**64 - 1) + _ld(100, b"zz") + b"\x79" + bytes(8)),
    "field number 0": b"\x00\x05",
    "field number 0 inside": _ld(5, b"\x00\x05"),
    "tag above 32 bits": _uv(2**32 << 3) + b"\x00",
    "tag above 32 bits inside": _ld(5, _uv(2**32 + 8) + b"\x05"),
    "largest field number": _ld(5, _vi(2**29 - 1, 5)),
    "group": _ld(5, b"\x7b\x7c"),
    "wire type 6": _ld(5, b"\x7e\x00"),
    "wire type 7": b"\x7f\x00",
    "truncated fixed64": _ld(5, b"\x79" + bytes(7)),
    "truncated fixed32": _ld(5, b"\x7d" + bytes(3)),
    "member as varint": _vi(5, 5),
    "auth member": _ld(14, _vi(1, 1) + _ld(4, bytes(16))),
    "auth then message": _ld(14, _vi(6, 2**40)) + _ld(5, _vi(3, 1)),
    "message then auth": _ld(5, _vi(3, 1)) + _ld(14, _vi(6, 2**40)),
    "member twice (the last replaces)": _ld(5, _vi(6, 1)) + _ld(5, _vi(3, 5)),
    "members A, B, A": _ld(5, _vi(6, 1)) + _ld(6, _vi(3, 5)) + _ld(5, _vi(4, 2)),
    "bad earlier member": _ld(5, b"\x0a\x01\xff") + _ld(6, _vi(3, 5)),
    "bad entry type in an earlier member": _ld(10, _ld(6, _vi(3, 9))) + _ld(6, _vi(3, 5)),
    "scalar twice (the last wins)": _ld(4, _vi(7, 5) + _vi(7, 9) + _vi(6, 1) + _vi(6, 0)),
    "bool 2**63": _ld(2, _vi(6, 2**63)),
    "non-minimal varint": _ld(5, b"\x18\x85\x80\x80\x00"),
    "10-byte varint, 2**64-1": _ld(5, b"\x18" + b"\xff" * 9 + b"\x01"),
    "10-byte varint, too big": _ld(5, b"\x18" + b"\xff" * 9 + b"\x02"),
    "11-byte varint": _ld(5, b"\x18" + b"\xff" * 10 + b"\x01"),
    "10-byte length": _ld(5, b"\x3a" + b"\x80" * 9 + b"\x00"),
    "huge length": _ld(5, b"\x3a" + b"\xff" * 9 + b"\x01"),
    "length past the end": _ld(5, b"\x3a\x05ab"),
    "truncated varint": _ld(5, b"\x18\x80"),
    "invalid UTF-8": _ld(5, _ld(1, b"\xed\xa0\x80")),
    "UTF-8": _ld(5, _ld(1, "gare de l'Est, Zürich → 東京".encode())),
    "string as varint": _ld(5, _vi(1, 3)),
    "bytes as varint": _ld(5, _vi(7, 3)),
    "uint64 as length-delimited": _ld(5, _ld(3, b"\x01")),
    "bool as length-delimited": _ld(2, _ld(6, b"\x01")),
    "voters packed and unpacked": _ld(12, _ld(6, _ld(3, _uv(1) + _uv(300)) + _vi(3, 7) + _ld(4, b""))),
    "voters truncated": _ld(12, _ld(6, _ld(3, b"\x80"))),
    "meta twice (the last replaces)": _ld(12, _ld(6, _vi(1, 5)) + _ld(6, _vi(2, 7))),
    "meta as varint": _ld(12, _vi(6, 1)),
    "snapshot chunk with data": _ld(12, _vi(3, 1) + _vi(9, 1) + _ld(8, b"xx") + _vi(7, 5) + _ld(10, bytes(32))),
    "snapshot chunk without meta": _ld(12, _vi(3, 1)),
    "snapshot status": _ld(13, _vi(6, 1) + _vi(7, 5)),
    "entries and packed entries (packed wins)": _ld(3, _ld(8, _vi(3, 9)) + _ld(10, bytes(21))),
    "empty packed entries, repeated entries": _ld(3, _ld(8, _vi(1, 4) + _ld(4, b"cmd")) + _ld(10, b"")),
    "packed entry of unknown type": _ld(3, _ld(10, bytes(16) + b"\x09" + bytes(4))),
    "packed entry past the end": _ld(3, _ld(10, bytes(17) + b"\x05\x00\x00\x00abc")),
    "packed entry header truncated": _ld(3, _ld(10, bytes(20))),
    "entry as varint": _ld(3, _vi(8, 1)),
}
for _t in (0, 1, 2, 5, 2**31, 2**32, 2**32 + 1, 2**32 + 2**31, 2**63, U64):
    # enums are int32: betterproto keeps the low 32 bits (signed), so 2**32 is type 0
    EDGE_CASES[f"entry type {_t}"] = _ld(10, _ld(6, _vi(1, 1) + _vi(2, 2) + _vi(3, _t)))
    EDGE_CASES[f"unpacked append entry type {_t}"] = _ld(3, _ld(8, _vi(1, 1) + _vi(2, 2) + _vi(3, _t)))


@pytest.mark.parametrize("wire", list(EDGE_CASES.values()), ids=list(EDGE_CASES))
def test_edge_cases_decode_as_betterproto_does(wire: bytes) -> None:
    _agree(wire)


def test_some_edge_cases_decode_and_some_are_refused() -> None:
    """(So that the parametrized test above compares successes as well as refusals.)"""
    ok = {name for name, wire in EDGE_CASES.items() if _outcome(decode_envelope, wire)[0] == "ok"}
    assert {"unknown fields inside", "largest field number", "members A, B, A", "10-byte varint, 2**64-1",
            "voters packed and unpacked", f"entry type {2**32}"} <= ok
    assert not ok & {"empty", "group", "10-byte varint, too big", "invalid UTF-8", "auth member",
                     "bad earlier member", "packed entry of unknown type", f"entry type {2**31}"}


@st.composite
def mutated(draw: st.DrawFn) -> bytes:
    """A valid envelope with a few bytes flipped, inserted, deleted or appended, or cut short."""
    msg = draw(st.one_of(MESSAGES[MsgType.APP], MESSAGES[MsgType.APP_RESP], MESSAGES[MsgType.HEARTBEAT], any_message))
    wire = bytearray(encode_envelope(msg, draw(cluster_ids), draw(group_ids)))
    for _ in range(draw(st.integers(min_value=1, max_value=4))):
        op = draw(st.sampled_from(["flip", "set", "cut", "insert", "delete", "append"]))
        at = draw(st.integers(min_value=0, max_value=max(0, len(wire) - 1)))
        if op == "flip" and wire:
            wire[at] ^= 1 << draw(st.integers(min_value=0, max_value=7))
        elif op == "set" and wire:
            wire[at] = draw(st.integers(min_value=0, max_value=255))
        elif op == "cut":
            del wire[at:]
        elif op == "insert":
            wire[at:at] = draw(st.binary(min_size=1, max_size=4))
        elif op == "delete":
            del wire[at : at + draw(st.integers(min_value=1, max_value=3))]
        else:
            wire += draw(st.binary(max_size=12))
    return bytes(wire)


@settings(max_examples=1500, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(wire=mutated())
def test_mutated_envelopes_decode_as_betterproto_does(wire: bytes) -> None:
    _agree(wire)


@settings(max_examples=1000, deadline=None)
@given(wire=st.binary(max_size=200))
@example(wire=b"\xff" * 20)
@example(wire=b"\x1a\xff\xff\xff\xff\x0f")
def test_random_bytes_decode_as_betterproto_does(wire: bytes) -> None:
    _agree(wire)


@settings(max_examples=100, deadline=None)
@given(msg=any_message, cluster_id=cluster_ids, group_id=group_ids)
def test_every_truncation_is_refused_or_agrees(msg: Message, cluster_id: str, group_id: int) -> None:
    wire = encode_envelope(msg, cluster_id, group_id)
    for cut in range(len(wire)) if len(wire) < 300 else range(0, len(wire), 37):
        outcome = _outcome(decode_envelope, wire[:cut])
        assert outcome[0] == "error" or outcome == _outcome(decode_envelope_betterproto, wire[:cut])


# --- authentication covers the bytes sent ------------------------------------------------------------------


def test_batch_mac_covers_the_hand_encoded_bytes() -> None:
    secret = bytes(range(32))
    sender, receiver = ClusterAuth(secret, "c", 1), ClusterAuth(secret, "c", 2)
    msgs = [
        Message(MsgType.APP, to=2, frm=1, term=3, log_term=3, index=9, commit=8,
                entries=tuple(Entry(3, 10 + i, data=bytes(300)) for i in range(4))),
        Message(MsgType.HEARTBEAT, to=2, frm=1, term=3, commit=9, index=77),
    ]
    wires = [encode_envelope(m, "c", 1) for m in msgs]
    signer = sender.stream_signer(STREAM_METHOD, 2)
    opening = signer.opening_envelope()
    batch_auth = signer.batch_envelope(len(wires), b"".join(frame(w) for w in wires))

    from gateway.peer_auth import envelope_auth

    verifier = receiver.stream_verifier(STREAM_METHOD)
    verifier.open(envelope_auth(opening))
    pa = envelope_auth(batch_auth)
    verifier.check(pa.seq, verifier.batch_size(pa), pa.mac, b"".join(frame(w) for w in wires))
    assert [decode_envelope(w)[2] for w in wires] == msgs
    # the auth envelopes are not Raft messages
    with pytest.raises(CodecError, match="PeerAuth"):
        decode_envelope(batch_auth)


# --- the microbenchmark ------------------------------------------------------------------------------------


def test_bench_runs_and_checks_its_messages() -> None:
    out = io.StringIO()
    results = bench(out, min_s=0.001)
    assert "append 32x300B" in results and "append ack" in results
    assert "decode new" in out.getvalue()
