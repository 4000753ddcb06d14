"""The sending side of the Raft transport: one `PeerLink` per peer, used by that peer's replicator task.

    link = PeerLink(2, "127.0.0.1", 7002, cluster_id="rail", group_id=1, node_id=1)
    try:
        await link.send([append, heartbeat])         # one batch, in order, on a persistent stream
    except PeerUnavailable:
        ...                                          # back off, tell the core UNREACHABLE, retry later
    accepted = await link.send_snapshot(snap_msg, path)
    await link.close()

All methods are Trio-callable and must run inside the trio-asyncio loop.  `send` writes PeerEnvelopes on a
long-lived bidirectional `Raft.Stream` call that is opened on first use; the peer never answers on it (its
answers come back on its own stream to us), so we only watch it for the end of the call.  Any trouble --
refused or lost connection, a call the peer ended (wrong cluster id, shutdown), a send that makes no
progress within `send_timeout` -- tears the call and its connection down and raises `PeerUnavailable`;
the next `send` reconnects.  A failure noticed between sends is reported by the next `send`.  Messages
handed to a `send` that failed, or written just before the connection broke, may be lost: Raft
retransmits, so the transport does not.

Snapshots go through `send_snapshot` on their own short-lived connection, so that megabytes of snapshot
data never queue in front of heartbeats, and a stream failure never kills a snapshot in flight.

Cost: once the stream is open, a batch the peer's flow-control window takes is written right from Trio, with
no hop into asyncio (`_send_now`: the synchronous part of grpclib's own send).  Otherwise the whole batch
crosses from Trio to asyncio in one hop.  Either way its envelopes go to the HTTP/2 stream as one DATA write
(or as few as the peer's frame size allows), since grpclib would otherwise issue one socket write per
message.  Envelopes are encoded by hand (gateway/peer_wire.py), never through betterproto objects.

With a cluster secret (`auth`, gateway/peer_auth.py) a new stream starts with an opening PeerAuth envelope,
and each batch is preceded by a PeerAuth envelope whose MAC covers the batch: one HMAC per batch (a few
microseconds for a typical batch).  Snapshot calls carry their opening PeerAuth in metadata and a MAC at the
end of every chunk.
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import struct
from typing import Any

import h2.exceptions
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.client import Stream as CallStream
from grpclib.config import Configuration
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError, ProtocolError, StreamTerminatedError

from actors.transport import PeerUnavailable as _TransportPeerUnavailable
from gateway.peer_auth import AUTH_METADATA, ClusterAuth, StreamSigner, encode_auth
from gateway.peer_codec import message_to_peer
from gateway.peer_service import INSTALL_SNAPSHOT_METHOD, STREAM_METHOD, RawBytes
from gateway.peer_wire import encode_envelope
from proto.gen.railraft.raft.v1 import InstallSnapshotChunk, InstallSnapshotResponse
from raft.types import Message, MsgType

__all__ = ["PeerLink", "PeerUnavailable"]

log = logging.getLogger(__name__)

# Exceptions that mean "the peer or the path to it is in trouble" (as opposed to a bug of ours).
# asyncio.TimeoutError is TimeoutError (an OSError) on Python >= 3.11.  AttributeError: grpclib can fail with
# "'Connection' object has no attribute '_transport'" when a call starts on a connection just lost (grpclib #110).
_TRANSPORT_ERRORS = (
    OSError, EOFError, GRPCError, StreamTerminatedError, ProtocolError, h2.exceptions.H2Error, AttributeError,
)

# gRPC statuses of a snapshot call that mean the peer was unreachable rather than that it refused.
_UNREACHABLE_STATUSES = frozenset({Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.CANCELLED})


class PeerUnavailable(_TransportPeerUnavailable):
    """The peer cannot be reached right now, or it ended our call.  Back off and retry: the next call
    reconnects.  `status` is the gRPC status if the peer ended the call with one (e.g. PERMISSION_DENIED
    for a peer configured with another cluster id), else None."""

    def __init__(self, peer_id: int, reason: str, status: Status | None = None) -> None:
        super().__init__(f"peer {peer_id} unavailable: {reason}")
        self.peer_id = peer_id
        self.reason = reason
        self.status = status


def _describe(exc: BaseException) -> str:
    if isinstance(exc, GRPCError):
        return f"{exc.status.name}: {exc.message}"
    if isinstance(exc, TimeoutError) and not str(exc):
        return "timed out"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__


# Room left in a DATA frame for the authentication envelopes of a batch (an opening and a MAC envelope, each
# well under 200 bytes) when `_send_now` decides whether the batch fits.
_AUTH_ROOM = 512


def _grpc_frame(payload: bytes) -> bytes:
    """A gRPC length-prefixed message: uncompressed flag, big-endian length, payload."""
    return struct.pack(">?I", False, len(payload)) + payload


class PeerLink:
    """The connection from this node to one peer, for one Raft group.

    `connect_timeout` bounds connection setup, `send_timeout` a whole `send` (so a peer that stopped
    reading is given up after that long); `snapshot_chunk_timeout` bounds each snapshot chunk and
    `snapshot_install_timeout` the follower's installation after the last chunk.  `keepalive` is the
    HTTP/2 ping interval (and ping timeout) that detects a silent peer between sends.
    """

    def __init__(
        self,
        peer_id: int,
        host: str,
        port: int,
        *,
        cluster_id: str,
        group_id: int,
        node_id: int,
        connect_timeout: float = 1.0,
        send_timeout: float = 2.0,
        snapshot_chunk_timeout: float = 10.0,
        snapshot_install_timeout: float = 60.0,
        keepalive: float = 5.0,
        auth: ClusterAuth | None = None,
    ) -> None:
        self.peer_id = peer_id
        self.host = host
        self.port = port
        self.cluster_id = cluster_id
        self.group_id = group_id
        self.node_id = node_id
        self.connect_timeout = connect_timeout
        self.send_timeout = send_timeout
        self.snapshot_chunk_timeout = snapshot_chunk_timeout
        self.snapshot_install_timeout = snapshot_install_timeout
        self._config = Configuration(
            _keepalive_time=keepalive,
            _keepalive_timeout=keepalive,
            # keep pinging while the stream is open, even when no data flows
            _http2_max_pings_without_data=0,
            _http2_min_sent_ping_interval_without_data=keepalive / 2,
        )
        self._lock = trio.Lock()  # one send at a time: batches must not interleave on the stream
        self._closed = False
        # Stream state (asyncio objects, touched only while holding _lock or from the watcher):
        self._channel: Channel | None = None
        self._call: CallStream | None = None
        self._watch: asyncio.Task[None] | None = None
        self._failure: BaseException | None = None  # why the watcher saw the call end
        # Peer authentication (None: the cluster has no secret): the current stream's signer, and its opening
        # envelope until it has gone out with the stream's first batch.
        self._auth = auth
        self._signer: StreamSigner | None = None
        self._opening: bytes | None = None
        self._refusal_logged = False

    def __repr__(self) -> str:
        return f"PeerLink(peer={self.peer_id}, {self.host}:{self.port}, connected={self.connected})"

    @property
    def connected(self) -> bool:
        """True while a stream call is open and not known to have failed."""
        return self._call is not None and self._failure is None

    async def __aenter__(self) -> PeerLink:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    # --- checks ----------------------------------------------------------------------------------------

    def _check_route(self, msg: Message) -> None:
        if msg.to != self.peer_id:
            raise ValueError(f"{msg.type.name} for node {msg.to} handed to the link to node {self.peer_id}")
        if msg.frm != self.node_id:
            raise ValueError(f"{msg.type.name} from node {msg.frm} handed to the link of node {self.node_id}")

    # --- send ------------------------------------------------------------------------------------------

    async def send(self, msgs: list[Message]) -> None:
        """Send a batch of messages, in order, on the persistent stream (connecting first if needed).

        Raises ValueError for a SNAP message (use `send_snapshot`) or one addressed elsewhere, CodecError
        (a ValueError) for a message that cannot cross the network -- both before anything is sent -- and
        PeerUnavailable if the peer cannot be reached, ended the call, or does not take the batch within
        `send_timeout`.
        """
        if not msgs:
            return
        payloads = []
        cluster_id, group_id = self.cluster_id, self.group_id
        for msg in msgs:
            if msg.type is MsgType.SNAP:
                raise ValueError("SNAP goes through PeerLink.send_snapshot, not send")
            self._check_route(msg)
            # PeerEnvelope bytes by hand (gateway/peer_wire.py): the exact bytes betterproto would produce,
            # ~100x cheaper.  These bytes are what goes on the wire and what the batch MAC covers.
            payloads.append(encode_envelope(msg, cluster_id, group_id))

        async with self._lock:
            if self._closed:
                raise PeerUnavailable(self.peer_id, "link closed")
            if self._failure is not None:
                # The watcher saw the call end since the last send: report it now, reconnect next time.
                failure = self._failure
                await self._teardown()
                raise self._unavailable(failure)
            ok = False
            try:
                if not self._send_now(payloads):
                    with trio.fail_after(self.send_timeout):
                        await trio_asyncio.aio_as_trio(self._aio_send)(payloads)
                ok = True
            except trio.TooSlowError:
                raise PeerUnavailable(self.peer_id, f"send did not complete within {self.send_timeout}s") from None
            except _TRANSPORT_ERRORS as exc:
                # If the watcher knows why the call ended (say, PERMISSION_DENIED), that is the better reason.
                raise self._unavailable(self._failure or exc) from exc
            finally:
                if not ok:
                    # Also on cancellation: a batch may be half written, so the stream is unusable.
                    await self._teardown()

    def _unavailable(self, exc: BaseException) -> PeerUnavailable:
        status = exc.status if isinstance(exc, GRPCError) else None
        return PeerUnavailable(self.peer_id, _describe(exc), status)

    def _framed(self, payloads: list[bytes]) -> tuple[list[bytes], bytes]:
        """The envelopes to write and their gRPC framing, with the authentication envelopes first (the
        stream's opening, once, then the batch's MAC) when the cluster has a secret."""
        frames = b"".join([_grpc_frame(p) for p in payloads])
        if self._signer is not None:
            auth = [self._opening] if self._opening is not None else []
            auth.append(self._signer.batch_envelope(len(payloads), frames))
            self._opening = None
            payloads = auth + payloads
            frames = b"".join([_grpc_frame(p) for p in auth]) + frames
        return payloads, frames

    def _send_now(self, payloads: list[bytes]) -> bool:
        """Write the batch right here in Trio, without a hop into asyncio, when that cannot block: the call is
        open, the connection is writable, and the peer's flow-control window takes the whole batch.  Then it
        does exactly what grpclib's `send_data` does when the window is open (DATA frames of at most the
        peer's frame size, a socket write each, keepalive bookkeeping), all of it synchronous.  False
        (nothing written, nothing signed): take the asyncio path, which connects, or waits for the window.
        Raises what h2 or the transport raise (a reset stream, a lost connection), as the asyncio path would."""
        call = self._call
        if call is None:
            return False
        try:
            h2_stream = call._stream
            conn, h2_conn, transport = h2_stream.connection, h2_stream._h2_connection, h2_stream._transport
            stream_id = h2_stream.id
        except AttributeError:  # pragma: no cover - depends on grpclib internals
            return False
        size = sum(len(p) + 5 for p in payloads) + _AUTH_ROOM
        if (stream_id is None or not conn.write_ready.is_set() or transport is None or transport.is_closing()
                or size > h2_conn.local_flow_control_window(stream_id)):
            return False
        _, frames = self._framed(payloads)
        step = h2_conn.max_outbound_frame_size
        for at in range(0, len(frames), step):
            chunk = frames[at:at + step]
            h2_conn.send_data(stream_id, chunk)
            transport.write(h2_conn.data_to_send())
            h2_stream.data_sent += len(chunk)
            conn.data_sent += len(chunk)
            conn.data_send_process()
        return True

    async def _aio_send(self, payloads: list[bytes]) -> None:
        """asyncio side of `send`: open the call if needed, then write the batch of encoded envelopes."""
        call = self._call
        if call is None:
            call = await self._aio_open()
        # One DATA write for the whole batch: gRPC allows several length-prefixed messages per DATA frame,
        # and the peer's grpclib parses them one by one.  call.send_message would cost an h2 frame and a
        # socket write per message (measured: transport-only throughput halves).  grpclib has no public
        # "send pre-encoded messages" call, so this uses the call's HTTP/2 stream (`_stream`) and its
        # cancellation wrapper (`_wrapper`, which lets a reset or lost connection interrupt a blocked
        # write); should a grpclib upgrade rename them, we fall back to the public path.
        payloads, frames = self._framed(payloads)
        try:
            wrapper, h2_stream = call._wrapper, call._stream
        except AttributeError:  # pragma: no cover - depends on grpclib internals
            for payload in payloads:
                await call.send_message(RawBytes(payload))
            return
        with wrapper:
            await h2_stream.send_data(frames)

    async def _aio_open(self) -> CallStream:
        """Connect and open the Stream call; start the task that watches for its end."""
        channel = Channel(self.host, self.port, config=self._config)
        self._channel = channel  # before connecting, so that teardown closes a half-open connection
        call = channel.request(STREAM_METHOD, Cardinality.STREAM_STREAM, RawBytes, RawBytes)
        await call.__aenter__()
        await asyncio.wait_for(call.send_request(), self.connect_timeout)
        self._call = call
        self._failure = None
        if self._auth is not None:
            self._signer = self._auth.stream_signer(STREAM_METHOD, self.peer_id)
            self._opening = self._signer.opening_envelope()
        self._watch = asyncio.get_running_loop().create_task(self._aio_watch(call))
        log.debug("stream to peer %d at %s:%d open", self.peer_id, self.host, self.port)
        return call

    async def _aio_watch(self, call: CallStream) -> None:
        """Wait for the peer to end the call (it sends nothing before that) and record why.

        This task belongs to the link: `_teardown` (from a failed send or `close`) cancels and awaits it.
        """
        failure: BaseException
        try:
            await call.recv_initial_metadata()  # raises GRPCError for a trailers-only refusal
            while await call.recv_message() is not None:
                pass  # the protocol says nothing comes back; ignore it if it does
            await call.end()  # our side must be ended before grpclib lets us read the trailers
            await call.recv_trailing_metadata()  # raises GRPCError for a non-OK status
            failure = GRPCError(Status.UNAVAILABLE, "peer ended the stream")
        except asyncio.CancelledError:
            raise
        except StreamTerminatedError as exc:
            # A refusal arrives as trailers followed by RST_STREAM; the reset interrupts us before we can
            # read the status, but grpclib's __aexit__ recovers it from the received headers.
            failure = exc
            try:
                await call.__aexit__(type(exc), exc, exc.__traceback__)
            except Exception as better:  # noqa: BLE001 - whatever it raises explains the end better
                failure = better
        except Exception as exc:  # noqa: BLE001 - any end of the call is a failure to report
            failure = exc
        if self._call is call:
            self._failure = failure
            if isinstance(failure, GRPCError) and failure.status is Status.UNAUTHENTICATED:
                # Retried with backoff for as long as it lasts: say it once, loudly.
                if not self._refusal_logged:
                    self._refusal_logged = True
                    log.warning("peer %d refused our stream: %s (does every node have the same cluster secret?)",
                                self.peer_id, _describe(failure))
                return
            self._refusal_logged = False
            log.info("stream to peer %d ended: %s", self.peer_id, _describe(failure))

    async def _teardown(self) -> None:
        """Drop the call and its connection (idempotent, runs even when cancelled)."""
        channel, watch = self._channel, self._watch
        self._channel = self._call = self._watch = None
        self._failure = None
        self._signer = self._opening = None
        if channel is None and watch is None:
            return
        with trio.CancelScope(shield=True) as scope:
            scope.deadline = trio.current_time() + 2.0
            await trio_asyncio.aio_as_trio(self._aio_teardown)(channel, watch)

    @staticmethod
    async def _aio_teardown(channel: Channel | None, watch: asyncio.Task[None] | None) -> None:
        if channel is not None:
            # Closing the connection ends the call on both sides; a reset alone could leave a
            # half-dead TCP connection behind.
            channel.close()
        if watch is not None:
            watch.cancel()
            await asyncio.wait([watch])

    # --- snapshots -------------------------------------------------------------------------------------

    async def send_snapshot(self, msg: Message, path: pathlib.Path, chunk_bytes: int = 1 << 20) -> bool:
        """Stream the snapshot file at `path` to the peer via InstallSnapshot.

        `msg` is the core's SNAP message (its `snapshot.meta` is sent with every chunk).  Returns True if
        the follower installed the snapshot, False if it rejected it or refused the call (wrong cluster,
        bad stream); raises PeerUnavailable if it could not be reached or stalled.
        """
        if msg.type is not MsgType.SNAP or msg.snapshot is None:
            raise ValueError(f"send_snapshot needs a SNAP message with a snapshot, not {msg.type.name}")
        if chunk_bytes <= 0:
            raise ValueError("chunk_bytes must be positive")
        self._check_route(msg)
        if self._closed:
            raise PeerUnavailable(self.peer_id, "link closed")
        header = message_to_peer(msg, self.cluster_id, self.group_id)  # offset 0, no data, meta
        assert isinstance(header, InstallSnapshotChunk)
        # Opened here so that a missing file is the caller's error, not a PeerUnavailable.
        fh = await trio.to_thread.run_sync(open, path, "rb")
        try:
            reply = await trio_asyncio.aio_as_trio(self._aio_send_snapshot)(header, fh, chunk_bytes)
        except GRPCError as exc:
            if exc.status in _UNREACHABLE_STATUSES:
                raise self._unavailable(exc) from exc
            log.warning(
                "peer %d refused snapshot at index %d: %s", self.peer_id, msg.snapshot.meta.index, _describe(exc)
            )
            return False
        except _TRANSPORT_ERRORS as exc:
            raise self._unavailable(exc) from exc
        finally:
            fh.close()
        return not reply.reject

    async def _aio_send_snapshot(
        self, header: InstallSnapshotChunk, fh: Any, chunk_bytes: int
    ) -> InstallSnapshotResponse:
        loop = asyncio.get_running_loop()
        chunk_timeout = self.snapshot_chunk_timeout
        channel = Channel(self.host, self.port, config=self._config)
        signer = self._auth.stream_signer(INSTALL_SNAPSHOT_METHOD, self.peer_id) if self._auth is not None else None
        metadata = {AUTH_METADATA: encode_auth(signer.opening())} if signer is not None else None

        def encode(chunk: InstallSnapshotChunk) -> RawBytes:
            wire = bytes(chunk)
            return RawBytes(signer.sign_chunk(wire) if signer is not None else wire)

        try:
            call = channel.request(
                INSTALL_SNAPSHOT_METHOD, Cardinality.STREAM_UNARY, RawBytes, InstallSnapshotResponse,
                metadata=metadata,
            )
            async with call:
                await asyncio.wait_for(call.send_request(), self.connect_timeout)
                await asyncio.wait_for(call.send_message(encode(header)), chunk_timeout)
                offset = 0
                data = await loop.run_in_executor(None, fh.read, chunk_bytes)  # file I/O in a worker thread
                while True:
                    # read one chunk ahead: the chunk is the last one if nothing follows it
                    nxt = await loop.run_in_executor(None, fh.read, chunk_bytes) if data else b""
                    done = not nxt
                    chunk = InstallSnapshotChunk(
                        cluster_id=header.cluster_id,
                        group_id=header.group_id,
                        from_id=header.from_id,
                        to_id=header.to_id,
                        term=header.term,
                        meta=header.meta,
                        offset=offset,
                        data=data,
                        done=done,
                    )
                    await asyncio.wait_for(call.send_message(encode(chunk), end=done), chunk_timeout)
                    offset += len(data)
                    if done:
                        break
                    data = nxt
                reply = await asyncio.wait_for(call.recv_message(), self.snapshot_install_timeout)
            if reply is None:
                raise GRPCError(Status.UNKNOWN, "no InstallSnapshotResponse")
            log.info(
                "snapshot (%d bytes) to peer %d: %s", offset, self.peer_id, "rejected" if reply.reject else "installed"
            )
            return reply
        finally:
            channel.close()

    # --- close -----------------------------------------------------------------------------------------

    async def close(self) -> None:
        """End the stream and close the connection.  Later sends raise PeerUnavailable.  Safe to call
        more than once, and when cancelled."""
        self._closed = True
        call = self._call
        if call is not None and self._failure is None and not self._lock.locked():
            # Politely end our side so the peer's handler finishes normally rather than seeing a reset.
            # (Not while a send is writing: END_STREAM in the middle of a batch would cut a message.)
            with trio.CancelScope(shield=True), trio.move_on_after(0.5):
                try:
                    await trio_asyncio.aio_as_trio(call.end)()
                except _TRANSPORT_ERRORS:
                    pass
        await self._teardown()
