"""The peer side of the Raft transport: the `railraft.raft.v1.Raft` gRPC service a node serves.

A leader (or candidate, or follower answering) opens one long-lived `Stream` call to each peer and sends
it PeerEnvelopes; this service decodes them (gateway/peer_codec.py), checks that they are meant for this
node, and hands each resulting `raft.types.Message` to the node's Trio `deliver` callable, which puts it
into the consensus inbox.  Nothing is sent back on the stream: answers travel on the answering node's own
stream to the asker.  A call that carries a message for another cluster, group or node ends with
PERMISSION_DENIED; undecodable bytes end it with INVALID_ARGUMENT.

Snapshots arrive on `InstallSnapshot` (client stream of chunks).  The chunks are written to a temp file in
`snapshot_dir`, fsynced, and the complete file is handed to the node's Trio `receive_snapshot(message,
path)`, whose boolean verdict is sent back as InstallSnapshotResponse.reject.

The unary RPCs (RequestVote, AppendEntries, TimeoutNow) deliver their message the same way and answer with
an acknowledgement that carries no Raft meaning.

With a cluster secret (`auth`, gateway/peer_auth.py) every call must prove that its sender holds it: a Stream
opens with a PeerAuth envelope and each batch is preceded by one whose MAC covers the batch; InstallSnapshot
carries its opening PeerAuth in metadata and a MAC in every chunk; the unary RPCs carry a PeerAuth in
metadata.  Nothing of a batch is delivered before its MAC checked out; a missing or bad MAC, a replayed
opening or a batch out of sequence ends the call with UNAUTHENTICATED (logged once per peer).

Performance: grpclib runs on asyncio, the node on Trio, and every trio-asyncio crossing costs a task
spawn.  The stream handler therefore receives on one asyncio task and delivers on another: whatever
arrived while the previous delivery was running goes to Trio in a single hop, so under load the number of
hops is far below the number of messages.  With `deliver_now` (the node's Node.deliver_now) a batch needs
no hop at all while the consensus inbox has room: the trio-asyncio loop runs inside a Trio task, so the
asyncio side may hand it over with a memory channel's `send_nowait`.  We also tell grpclib to hand us raw
message bytes (`RawBytes`) and decode them ourselves, so that malformed input becomes INVALID_ARGUMENT
instead of a generic "Internal Server Error".  Stream envelopes are decoded by hand (gateway/peer_wire.py: no
betterproto object is built for them); the unary calls and snapshot chunks, which are rare, still go through
betterproto.
"""

from __future__ import annotations

import asyncio
import dataclasses
import errno
import logging
import os
import pathlib
import tempfile
from collections.abc import Awaitable, Callable
from typing import Any

import grpclib.const
import grpclib.server
import trio_asyncio
from grpclib.const import Status
from grpclib.exceptions import GRPCError

from gateway.peer_auth import AUTH_METADATA, Auth, ClusterAuth, StreamVerifier, envelope_auth, frame, peer_host
from gateway.peer_codec import CodecError, message_from_peer
from gateway.peer_wire import decode_envelope
from proto.gen.railraft.raft.v1 import (
    AppendEntriesRequest,
    AppendEntriesResponse,
    InstallSnapshotChunk,
    InstallSnapshotResponse,
    RaftBase,
    TimeoutNowRequest,
    TimeoutNowResponse,
    VoteRequest,
    VoteResponse,
)
from raft.types import Message, MsgType, Snapshot

__all__ = [
    "Deliver",
    "DeliverBatch",
    "RaftPeerService",
    "RawBytes",
    "ReceiveSnapshot",
    "STREAM_METHOD",
    "INSTALL_SNAPSHOT_METHOD",
]

log = logging.getLogger(__name__)

Deliver = Callable[[Message], Awaitable[None]]
DeliverBatch = Callable[[list[Message]], Awaitable[None]]
DeliverNow = Callable[[list[Message]], bool]
ReceiveSnapshot = Callable[[Message, pathlib.Path], Awaitable[bool]]

STREAM_METHOD = "/railraft.raft.v1.Raft/Stream"
INSTALL_SNAPSHOT_METHOD = "/railraft.raft.v1.Raft/InstallSnapshot"
REQUEST_VOTE_METHOD = "/railraft.raft.v1.Raft/RequestVote"
APPEND_ENTRIES_METHOD = "/railraft.raft.v1.Raft/AppendEntries"
TIMEOUT_NOW_METHOD = "/railraft.raft.v1.Raft/TimeoutNow"

# Messages decoded but not yet handed to Trio, per stream.  When the node's inbox is slow this fills, the
# reader stops reading, and HTTP/2 flow control pushes back on the sender (whose send then times out).
MAX_PENDING = 1024

# What may arrive on the Stream: everything that crosses the network except snapshots, which have their
# own RPC (SNAP) or only exist as that RPC's answer (SNAP_STATUS).
_STREAM_TYPES = frozenset(MsgType) - {
    MsgType.HUP,
    MsgType.BEAT,
    MsgType.SNAP,
    MsgType.SNAP_STATUS,
    MsgType.UNREACHABLE,
}


class RawBytes:
    """A protobuf message kept as its wire bytes, for grpclib's codec.

    grpclib's ProtoCodec decodes with `message_type.FromString(data)` and encodes with
    `message.SerializeToString()` after an isinstance check.  Declaring this as a method's message type
    makes grpclib pass bytes through untouched: the peer code encodes and decodes PeerEnvelopes itself
    (one parse, its own error handling).  `FromString` returns plain `bytes`.
    """

    __slots__ = ("data",)

    def __init__(self, data: bytes) -> None:
        self.data = data

    @classmethod
    def FromString(cls, data: bytes) -> bytes:  # noqa: N802 - grpclib's codec protocol
        """Receive side: hand the wire bytes over as they are."""
        return bytes(data)

    def SerializeToString(self) -> bytes:  # noqa: N802 - grpclib's codec protocol
        """Send side: the bytes are already encoded."""
        return self.data


class _Inbox:
    """Decoded messages between a stream's reader task and its delivering task (asyncio side).

    Single producer, single consumer.  `take` returns everything queued so far, which is what lets one
    Trio hop deliver many messages.
    """

    def __init__(self, limit: int) -> None:
        self.items: list[Message] = []
        self.closed = False
        self.error: BaseException | None = None
        self._limit = limit
        self._ready = asyncio.Event()
        self._room = asyncio.Event()
        self._room.set()

    async def put(self, msg: Message) -> None:
        while len(self.items) >= self._limit:
            self._room.clear()
            await self._room.wait()
        self.items.append(msg)
        self._ready.set()

    def close(self, error: BaseException | None = None) -> None:
        """No more messages; `error` (if any) is what the call should end with."""
        self.closed = True
        self.error = error
        self._ready.set()

    async def take(self) -> list[Message]:
        """Everything queued; waits while nothing is queued and the reader is still reading.
        An empty list means the reader is done."""
        while not self.items and not self.closed:
            self._ready.clear()
            await self._ready.wait()
        batch, self.items = self.items, []
        self._room.set()
        return batch


def _invalid(text: str) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, text)


def _claimed_sender(wire: bytes, pb_type: type | None = None) -> int:
    """The sender an unauthenticated message names (-1 if it does not parse): for the refusal's log line."""
    try:
        if pb_type is not None:
            return int(pb_type().parse(wire).from_id)
        return decode_envelope(wire)[2].frm
    except Exception:  # noqa: BLE001 - anything unparsable names nobody
        return -1


def _sync_and_close(fh: Any) -> None:
    """Flush and fsync a file, then close it (runs in a worker thread)."""
    try:
        fh.flush()
        os.fsync(fh.fileno())
    finally:
        fh.close()


class RaftPeerService(RaftBase):
    """The Raft peer service of one Raft group on one node.

    `deliver(message)` and `receive_snapshot(message, path) -> bool` are Trio async callables.  If the
    node can take a whole batch at once, pass `deliver_batch(messages)` instead (then `deliver` may be
    None): each batch that crossed into Trio in one hop is handed over in one call, in arrival order.
    `deliver_now(messages) -> bool`, if given, is tried first for each batch of the Stream call: a plain
    function, called right on the asyncio side (the trio-asyncio loop runs inside a Trio task, so it may
    hand the batch to a Trio memory channel with `send_nowait`); True means it took the batch, False
    that it would have to wait, and the batch takes the hop into Trio as before.
    The service must be served from inside the trio-asyncio loop (see gateway.grpc_server.serve_grpc).

    A node hosting several Raft groups would need one service that routes on group id, since gRPC method
    paths are per server; this class answers for exactly one group and refuses the others.
    """

    def __init__(
        self,
        cluster_id: str,
        group_id: int,
        node_id: int,
        deliver: Deliver | None,
        receive_snapshot: ReceiveSnapshot,
        snapshot_dir: pathlib.Path | str,
        *,
        deliver_batch: DeliverBatch | None = None,
        deliver_now: DeliverNow | None = None,
        max_pending: int = MAX_PENDING,
        auth: ClusterAuth | None = None,
    ) -> None:
        if deliver is None and deliver_batch is None:
            raise TypeError("RaftPeerService needs deliver or deliver_batch")
        self.cluster_id = cluster_id
        self.group_id = group_id
        self.node_id = node_id
        self._deliver = deliver
        self._deliver_batch = deliver_batch
        self._deliver_now = deliver_now
        self._receive_snapshot = receive_snapshot
        self.snapshot_dir = pathlib.Path(snapshot_dir)
        self._max_pending = max_pending
        self._auth = auth  # None: no cluster secret, calls are not authenticated

    # --- grpclib wiring --------------------------------------------------------------------------------

    def __mapping__(self) -> dict[str, grpclib.const.Handler]:
        """The method table grpclib serves.  Replaces the generated one so that requests arrive as raw
        bytes (see RawBytes) and the stream handler can batch its deliveries."""
        c = grpclib.const.Cardinality
        h = grpclib.const.Handler
        return {
            STREAM_METHOD: h(self._rpc_stream, c.STREAM_STREAM, RawBytes, RawBytes),
            INSTALL_SNAPSHOT_METHOD: h(self._rpc_install_snapshot, c.STREAM_UNARY, RawBytes, InstallSnapshotResponse),
            REQUEST_VOTE_METHOD: h(self._rpc_request_vote, c.UNARY_UNARY, RawBytes, VoteResponse),
            APPEND_ENTRIES_METHOD: h(self._rpc_append_entries, c.UNARY_UNARY, RawBytes, AppendEntriesResponse),
            TIMEOUT_NOW_METHOD: h(self._rpc_timeout_now, c.UNARY_UNARY, RawBytes, TimeoutNowResponse),
        }

    # --- checks ----------------------------------------------------------------------------------------

    def _check_addressed(self, cluster_id: str, group_id: int, msg: Message) -> None:
        """Refuse a message meant for another cluster, group or node (a misrouted or misconfigured peer)."""
        if cluster_id != self.cluster_id:
            raise GRPCError(
                Status.PERMISSION_DENIED,
                f"wrong cluster id {cluster_id!r}: this node belongs to cluster {self.cluster_id!r}",
            )
        if group_id != self.group_id:
            raise GRPCError(
                Status.PERMISSION_DENIED, f"wrong group id {group_id}: this service serves group {self.group_id}"
            )
        if msg.to != self.node_id:
            raise GRPCError(
                Status.PERMISSION_DENIED, f"message addressed to node {msg.to}, this is node {self.node_id}"
            )
        if msg.frm == 0:
            raise _invalid(f"{msg.type.name} without a sender")

    def _decode_stream_message(self, wire: bytes) -> Message:
        try:
            cluster_id, group_id, msg = decode_envelope(wire)
        except CodecError as exc:
            raise _invalid(str(exc)) from None
        self._check_addressed(cluster_id, group_id, msg)
        if msg.type not in _STREAM_TYPES:
            raise _invalid(f"{msg.type.name} does not travel on the Stream call")
        return msg

    def _stream_auth(self, wire: bytes) -> Auth | None:
        """The PeerAuth in a Stream envelope, None if the envelope carries a Raft message instead."""
        try:
            return envelope_auth(wire)
        except ValueError as exc:
            raise _invalid(f"malformed authentication envelope: {exc}") from None

    def _check_sender(self, msg: Message, verifier: StreamVerifier | Auth) -> None:
        if msg.frm != verifier.from_id:
            raise GRPCError(Status.UNAUTHENTICATED,
                            f"{msg.type.name} from node {msg.frm} on a call authenticated by node {verifier.from_id}")

    def _verify_unary(self, stream: grpclib.server.Stream, method: str, wire: bytes, claimed: int) -> Auth | None:
        """With a cluster secret: the call's checked PeerAuth (UNAUTHENTICATED if missing or bad)."""
        if self._auth is None:
            return None
        return self._auth.verify_metadata(stream.metadata, method, [wire], peer=peer_host(stream), claimed=claimed)

    def _decode_unary(self, wire: bytes, pb_type: type, allowed: frozenset[MsgType]) -> Message:
        try:
            pb = pb_type().parse(wire)
        except Exception as exc:  # noqa: BLE001 - the parser raises assorted types for bad bytes
            raise _invalid(f"malformed {pb_type.__name__}: {exc}") from None
        try:
            cluster_id, group_id, msg = message_from_peer(pb)
        except CodecError as exc:
            raise _invalid(str(exc)) from None
        self._check_addressed(cluster_id, group_id, msg)
        if msg.type not in allowed:
            raise _invalid(f"{msg.type.name} does not travel on this call")
        return msg

    # --- Trio side -------------------------------------------------------------------------------------

    async def _deliver_all(self, batch: list[Message]) -> None:
        """Runs in Trio: one hop for the whole batch, in arrival order."""
        if self._deliver_batch is not None:
            await self._deliver_batch(batch)
            return
        deliver = self._deliver
        assert deliver is not None
        for msg in batch:
            await deliver(msg)

    # --- Stream ----------------------------------------------------------------------------------------

    async def _read_stream(self, stream: grpclib.server.Stream, inbox: _Inbox) -> None:
        """Reader task: decode and check envelopes until the client ends its side or sends garbage."""
        try:
            if self._auth is not None:
                await self._read_authenticated(stream, inbox, self._auth)
            else:
                while (wire := await stream.recv_message()) is not None:
                    await inbox.put(self._decode_stream_message(wire))
        except asyncio.CancelledError:
            inbox.close()
            raise
        except BaseException as exc:  # the handler task turns this into the call's status
            inbox.close(exc)
            if not isinstance(exc, Exception):
                raise
        else:
            inbox.close()

    async def _read_authenticated(self, stream: grpclib.server.Stream, inbox: _Inbox, auth: ClusterAuth) -> None:
        """`_read_stream` with a cluster secret: an opening PeerAuth, then batches that each start with one.
        A batch is buffered until its MAC checked out; only then is any of it decoded and delivered."""
        verifier = auth.stream_verifier(STREAM_METHOD, peer=peer_host(stream))
        while True:
            wire = await stream.recv_message()
            if wire is None:
                return
            pa = self._stream_auth(wire)
            if not verifier.opened:
                verifier.open(pa, claimed=_claimed_sender(wire) if pa is None else -1)
                continue
            count = verifier.batch_size(pa)
            assert pa is not None
            wires = []
            for _ in range(count):
                more = await stream.recv_message()
                if more is None:
                    raise _invalid(f"the stream ended inside a batch ({len(wires)} of {count} messages)")
                wires.append(more)
            verifier.check(pa.seq, count, pa.mac, b"".join([frame(w) for w in wires]))
            for w in wires:
                msg = self._decode_stream_message(w)
                self._check_sender(msg, verifier)
                await inbox.put(msg)

    async def _rpc_stream(self, stream: grpclib.server.Stream) -> None:
        """Stream handler: deliver every envelope in order; end the call on the first bad one."""
        inbox = _Inbox(self._max_pending)
        reader = asyncio.get_running_loop().create_task(self._read_stream(stream, inbox))
        deliver_all = trio_asyncio.trio_as_aio(self._deliver_all)
        deliver_now = self._deliver_now
        try:
            while True:
                batch = await inbox.take()
                if not batch:
                    break
                # One batch at a time, each delivered before the next is taken: arrival order holds whichever
                # way a batch goes in.
                if deliver_now is None or not deliver_now(batch):
                    await deliver_all(batch)
            if inbox.error is not None:
                # messages before the bad one were delivered above; the bad one ends the call
                error = inbox.error
                if isinstance(error, GRPCError) and error.status is not Status.UNAUTHENTICATED:
                    # (refused authentication is logged by the ClusterAuth, once per peer)
                    log.warning("peer stream refused: %s", error.message)
                raise inbox.error
        finally:
            if not reader.done():
                reader.cancel()
                await asyncio.wait([reader])

    # --- InstallSnapshot -------------------------------------------------------------------------------

    @staticmethod
    def _parse_chunk(wire: bytes) -> InstallSnapshotChunk:
        try:
            return InstallSnapshotChunk().parse(wire)
        except Exception as exc:  # noqa: BLE001 - the parser raises assorted types for bad bytes
            raise _invalid(f"malformed InstallSnapshotChunk: {exc}") from None

    def _new_temp_file(self, msg: Message) -> tuple[Any, pathlib.Path]:
        assert msg.snapshot is not None
        self.snapshot_dir.mkdir(parents=True, exist_ok=True)
        fd, name = tempfile.mkstemp(
            dir=self.snapshot_dir,
            prefix=f"incoming-g{self.group_id}-i{msg.snapshot.meta.index}-from{msg.frm}-",
            suffix=".part",
        )
        return os.fdopen(fd, "wb"), pathlib.Path(name)

    async def _rpc_install_snapshot(self, stream: grpclib.server.Stream) -> None:
        """InstallSnapshot handler: receive the chunks into a temp file, then let the node install it.

        The file belongs to `receive_snapshot` once it returns True (it is expected to move or keep it);
        on a rejection or any error the temp file is removed here.
        """
        loop = asyncio.get_running_loop()
        fh: Any = None
        path: pathlib.Path | None = None
        accepted = False
        verifier: StreamVerifier | None = None
        try:
            wire = await stream.recv_message()
            if wire is None:
                raise _invalid("empty InstallSnapshot stream")
            if self._auth is not None:
                verifier = self._auth.stream_verifier(INSTALL_SNAPSHOT_METHOD, peer=peer_host(stream))
                raw = stream.metadata.get(AUTH_METADATA) if stream.metadata else None
                if raw:
                    verifier.open(self._auth.parse(raw, verifier.peer))
                else:
                    verifier.open(None, claimed=_claimed_sender(wire, InstallSnapshotChunk))
            first = self._parse_chunk(verifier.check_chunk(wire) if verifier is not None else wire)
            try:
                cluster_id, group_id, msg = message_from_peer(first)
            except CodecError as exc:
                raise _invalid(str(exc)) from None
            self._check_addressed(cluster_id, group_id, msg)
            if verifier is not None:
                self._check_sender(msg, verifier)
            if first.offset != 0:
                raise _invalid(f"first snapshot chunk at offset {first.offset}, expected 0")

            fh, path = await self._disk_io(loop, self._new_temp_file, msg)
            received = 0
            chunk = first
            while True:
                if chunk is not first and (
                    chunk.meta != first.meta
                    or (chunk.cluster_id, chunk.group_id, chunk.from_id, chunk.to_id, chunk.term)
                    != (first.cluster_id, first.group_id, first.from_id, first.to_id, first.term)
                ):
                    raise _invalid("snapshot chunk belongs to a different snapshot or sender")
                if chunk.offset != received:
                    raise _invalid(f"snapshot chunk at offset {chunk.offset}, expected {received}")
                if chunk.data:
                    await self._disk_io(loop, fh.write, chunk.data)
                    received += len(chunk.data)
                if chunk.done:
                    break
                wire = await stream.recv_message()
                if wire is None:
                    raise _invalid(f"snapshot stream ended at offset {received} before the last chunk")
                chunk = self._parse_chunk(verifier.check_chunk(wire) if verifier is not None else wire)
            if await stream.recv_message() is not None:
                raise _invalid("snapshot chunk after the last one")

            await self._disk_io(loop, _sync_and_close, fh)
            fh = None
            assert msg.snapshot is not None
            # The core gets the file's location as the snapshot's (opaque) data.
            msg = dataclasses.replace(msg, snapshot=Snapshot(meta=msg.snapshot.meta, data=path))
            accepted = bool(await trio_asyncio.trio_as_aio(self._receive_snapshot)(msg, path))
            log.info(
                "snapshot at index %d (%d bytes) from node %d %s",
                msg.snapshot.meta.index,
                received,
                msg.frm,
                "installed" if accepted else "rejected",
            )
            await stream.send_message(
                InstallSnapshotResponse(
                    cluster_id=self.cluster_id,
                    group_id=self.group_id,
                    from_id=self.node_id,
                    to_id=msg.frm,
                    term=msg.term,
                    reject=not accepted,
                    received=received,
                )
            )
        finally:
            if fh is not None:
                fh.close()
            if path is not None and not accepted:
                path.unlink(missing_ok=True)

    async def _disk_io(self, loop: Any, fn: Any, *args: Any) -> Any:
        """Blocking file work of a snapshot being received, off the loop; a failing disk (full, read-only,
        I/O error) answers the sender with a status and a sentence instead of an unhandled error."""
        try:
            return await loop.run_in_executor(None, fn, *args)
        except OSError as e:
            status = Status.RESOURCE_EXHAUSTED if e.errno in (errno.ENOSPC, errno.EDQUOT) else Status.UNAVAILABLE
            log.warning("node %d: cannot store an incoming snapshot: %s", self.node_id, e)
            raise GRPCError(status, f"node {self.node_id}: cannot store the snapshot ({e.strerror or e})") from None

    # --- unary forms -----------------------------------------------------------------------------------
    # They deliver like the stream does; the reply only acknowledges receipt.  It carries no Raft meaning
    # (the real answer comes back on the answering node's own stream) and must never be fed to a core.

    async def _recv_unary(self, stream: grpclib.server.Stream, method: str, pb_type: type,
                          allowed: frozenset[MsgType]) -> Message:
        wire = await stream.recv_message()
        msg = self._decode_unary(wire, pb_type, allowed)  # (decoding is safe; nothing is delivered yet)
        pa = self._verify_unary(stream, method, wire, msg.frm)
        if pa is not None:
            self._check_sender(msg, pa)
        return msg

    async def _rpc_request_vote(self, stream: grpclib.server.Stream) -> None:
        msg = await self._recv_unary(stream, REQUEST_VOTE_METHOD, VoteRequest, frozenset({MsgType.VOTE, MsgType.PRE_VOTE}))
        await trio_asyncio.trio_as_aio(self._deliver_all)([msg])
        # reject=True so that nobody could mistake the acknowledgement for a granted vote
        await stream.send_message(VoteResponse(**self._ack_header(msg), reject=True))

    async def _rpc_append_entries(self, stream: grpclib.server.Stream) -> None:
        msg = await self._recv_unary(stream, APPEND_ENTRIES_METHOD, AppendEntriesRequest, frozenset({MsgType.APP}))
        await trio_asyncio.trio_as_aio(self._deliver_all)([msg])
        await stream.send_message(AppendEntriesResponse(**self._ack_header(msg)))

    async def _rpc_timeout_now(self, stream: grpclib.server.Stream) -> None:
        msg = await self._recv_unary(stream, TIMEOUT_NOW_METHOD, TimeoutNowRequest, frozenset({MsgType.TIMEOUT_NOW}))
        await trio_asyncio.trio_as_aio(self._deliver_all)([msg])
        await stream.send_message(TimeoutNowResponse(**self._ack_header(msg)))

    def _ack_header(self, msg: Message) -> dict[str, Any]:
        # term 0: the acknowledgement states nothing about this node's term
        return dict(cluster_id=self.cluster_id, group_id=self.group_id, from_id=self.node_id, to_id=msg.frm, term=0)
