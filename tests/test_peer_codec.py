"""Round trips of raft.types.Message through the peer protocol (gateway/peer_codec.py)."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.peer_codec import (
    NETWORK_TYPES,
    CodecError,
    decode_envelope,
    message_from_peer,
    message_from_proto,
    message_to_peer,
    message_to_proto,
)
from proto.gen.railraft.raft.v1 import InstallSnapshotChunk, PeerEnvelope, VoteRequest
from raft.types import Configuration, Entry, EntryType, Message, MsgType, Snapshot, SnapshotMeta

U64 = 2**64 - 1

node_ids = st.integers(min_value=0, max_value=1000)
terms = st.integers(min_value=0, max_value=2**40)
indexes = st.integers(min_value=0, max_value=2**48)
small_bytes = st.binary(max_size=64)
cluster_ids = st.text(max_size=24)
group_ids = st.integers(min_value=0, max_value=U64)

entries = st.lists(
    st.builds(
        Entry,
        term=terms,
        index=indexes,
        type=st.sampled_from(list(EntryType)),
        data=st.binary(max_size=256),
    ),
    max_size=8,
).map(tuple)

configurations = st.builds(
    Configuration,
    voters=st.frozensets(st.integers(min_value=1, max_value=1000), max_size=7),
    learners=st.frozensets(st.integers(min_value=1, max_value=1000), max_size=3),
)
snapshots = st.builds(
    Snapshot,
    meta=st.builds(SnapshotMeta, index=indexes, term=terms, conf=configurations),
    data=st.none(),  # the bytes travel in later chunks, not in the Message mapping
)


def _msg(t: MsgType, **fields: st.SearchStrategy) -> st.SearchStrategy[Message]:
    return st.builds(Message, type=st.just(t), to=node_ids, frm=node_ids, term=terms, **fields)


vote_ctx = st.sampled_from([b"", b"transfer"])

MESSAGES: dict[MsgType, st.SearchStrategy[Message]] = {
    MsgType.APP: _msg(MsgType.APP, log_term=terms, index=indexes, entries=entries, commit=indexes),
    MsgType.APP_RESP: _msg(
        MsgType.APP_RESP,
        index=indexes,
        reject=st.booleans(),
        reject_hint=indexes,
        log_term=terms,
        commit=indexes,
    ),
    MsgType.VOTE: _msg(MsgType.VOTE, log_term=terms, index=indexes, context=vote_ctx),
    MsgType.PRE_VOTE: _msg(MsgType.PRE_VOTE, log_term=terms, index=indexes, context=vote_ctx),
    MsgType.VOTE_RESP: _msg(MsgType.VOTE_RESP, reject=st.booleans()),
    MsgType.PRE_VOTE_RESP: _msg(MsgType.PRE_VOTE_RESP, reject=st.booleans()),
    MsgType.HEARTBEAT: _msg(MsgType.HEARTBEAT, commit=indexes, context=small_bytes, index=indexes),
    MsgType.HEARTBEAT_RESP: _msg(MsgType.HEARTBEAT_RESP, commit=indexes, context=small_bytes, index=indexes),
    MsgType.TIMEOUT_NOW: _msg(MsgType.TIMEOUT_NOW),
    MsgType.READ_INDEX: _msg(MsgType.READ_INDEX, context=small_bytes),
    MsgType.READ_INDEX_RESP: _msg(MsgType.READ_INDEX_RESP, index=indexes, context=small_bytes),
    MsgType.PROP: _msg(MsgType.PROP, entries=entries),
    MsgType.TRANSFER_LEADER: _msg(MsgType.TRANSFER_LEADER, index=node_ids),
    MsgType.SNAP: _msg(MsgType.SNAP, snapshot=snapshots),
    MsgType.SNAP_STATUS: _msg(MsgType.SNAP_STATUS, reject=st.booleans()),
}

any_message = st.one_of(*MESSAGES.values())


def test_every_network_type_has_a_strategy() -> None:
    assert set(MESSAGES) == set(NETWORK_TYPES)


@settings(max_examples=400)
@given(msg=any_message, cluster_id=cluster_ids, group_id=group_ids)
def test_round_trip_through_envelope(msg: Message, cluster_id: str, group_id: int) -> None:
    env = message_to_proto(msg, cluster_id, group_id)
    assert message_from_proto(env) == (cluster_id, group_id, msg)


@settings(max_examples=400)
@given(msg=any_message, cluster_id=cluster_ids, group_id=group_ids)
def test_round_trip_through_wire_bytes(msg: Message, cluster_id: str, group_id: int) -> None:
    wire = bytes(message_to_proto(msg, cluster_id, group_id))
    assert message_from_proto(PeerEnvelope().parse(wire)) == (cluster_id, group_id, msg)


@given(msg=any_message, cluster_id=cluster_ids, group_id=group_ids)
def test_round_trip_of_bare_peer_message(msg: Message, cluster_id: str, group_id: int) -> None:
    inner = message_to_peer(msg, cluster_id, group_id)
    again = type(inner)().parse(bytes(inner))
    assert message_from_peer(again) == (cluster_id, group_id, msg)


@given(
    t=st.sampled_from([MsgType.VOTE, MsgType.PRE_VOTE]),
    ctx=vote_ctx,
    cluster_id=cluster_ids,
)
def test_vote_transfer_context_is_the_leader_transfer_flag(t: MsgType, ctx: bytes, cluster_id: str) -> None:
    pb = message_to_peer(Message(type=t, to=2, frm=1, term=5, context=ctx), cluster_id, 0)
    assert isinstance(pb, VoteRequest)
    assert pb.leader_transfer == (ctx == b"transfer")
    assert pb.pre_vote == (t is MsgType.PRE_VOTE)


def test_snap_is_the_first_chunk_without_data() -> None:
    conf = Configuration(voters=frozenset({3, 1, 2}), learners=frozenset({4}))
    msg = Message(
        type=MsgType.SNAP, to=2, frm=1, term=7, snapshot=Snapshot(SnapshotMeta(100, 6, conf), data="/some/file")
    )
    pb = message_to_peer(msg, "c", 9)
    assert isinstance(pb, InstallSnapshotChunk)
    assert (pb.offset, pb.data, pb.done) == (0, b"", False)
    assert (pb.meta.index, pb.meta.term, pb.meta.voters, pb.meta.learners) == (100, 6, [1, 2, 3], [4])
    _, _, back = message_from_proto(message_to_proto(msg, "c", 9))
    assert back.snapshot == Snapshot(SnapshotMeta(100, 6, conf), data=None)


@pytest.mark.parametrize("t", [MsgType.HUP, MsgType.BEAT, MsgType.UNREACHABLE])
def test_local_messages_do_not_encode(t: MsgType) -> None:
    with pytest.raises(CodecError, match="local"):
        message_to_proto(Message(type=t), "c", 1)


@pytest.mark.parametrize(
    "msg",
    [
        Message(type=MsgType.HEARTBEAT, entries=(Entry(1, 1),)),
        Message(type=MsgType.VOTE_RESP, index=3),
        Message(type=MsgType.TIMEOUT_NOW, commit=1),
        Message(type=MsgType.VOTE, context=b"something else"),
        Message(type=MsgType.SNAP),
    ],
)
def test_fields_that_would_be_lost_are_refused(msg: Message) -> None:
    with pytest.raises(CodecError):
        message_to_proto(msg, "c", 1)


def test_empty_envelope_is_refused() -> None:
    with pytest.raises(CodecError, match="empty"):
        message_from_proto(PeerEnvelope())
    with pytest.raises(CodecError):
        message_from_proto(PeerEnvelope().parse(b""))


@settings(max_examples=300)
@given(wire=st.binary(max_size=128))
def test_garbage_bytes_raise_codec_error_only(wire: bytes) -> None:
    """Bad input must not crash a node: decoding arbitrary bytes either works or raises CodecError."""
    try:
        decode_envelope(wire)
    except CodecError:
        pass


@given(msg=any_message, cluster_id=cluster_ids, group_id=group_ids)
def test_decode_envelope_of_valid_bytes(msg: Message, cluster_id: str, group_id: int) -> None:
    assert decode_envelope(bytes(message_to_proto(msg, cluster_id, group_id))) == (cluster_id, group_id, msg)


def test_append_entries_travel_packed_and_both_forms_decode():
    """Nodes send a batch as one packed bytes field; a peer that sends repeated Entry messages is understood too."""
    from gateway.peer_codec import message_from_proto, message_to_proto, pack_entries
    from proto.gen.railraft.raft.v1 import AppendEntriesRequest, PeerEnvelope
    from proto.gen.railraft.raft.v1 import Entry as PbEntry

    ents = tuple(Entry(term=3, index=10 + i, data=bytes([i]) * i) for i in range(5))
    msg = Message(type=MsgType.APP, to=2, frm=1, term=3, log_term=2, index=9, entries=ents, commit=8)
    env = message_to_proto(msg, "c", 1)
    assert env.append_entries_request.packed_entries == pack_entries(ents)
    assert not env.append_entries_request.entries
    assert message_from_proto(env)[2] == msg
    plain = PeerEnvelope(append_entries_request=AppendEntriesRequest(
        cluster_id="c", group_id=1, from_id=1, to_id=2, term=3, prev_log_index=9, prev_log_term=2, leader_commit=8,
        entries=[PbEntry(term=e.term, index=e.index, data=e.data) for e in ents]))
    assert message_from_proto(plain)[2] == msg


def test_malformed_packed_entries_are_refused():
    from gateway.peer_codec import CodecError, pack_entries, unpack_entries

    blob = pack_entries((Entry(term=1, index=1, data=b"abc"),))
    for bad in (blob[:-1], blob[:5], blob[:17] + b"\x09" + blob[18:]):
        with pytest.raises(CodecError):
            unpack_entries(bad)
