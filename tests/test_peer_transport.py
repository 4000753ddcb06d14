"""The Raft peer transport over real gRPC on 127.0.0.1: gateway/grpc_server.py, peer_service.py and
peer_client.py.

Every test opens its own trio-asyncio loop, serves on an ephemeral port and shuts every server down.
"""

from __future__ import annotations

import asyncio
import os
import pathlib
import socket
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

import pytest
import trio
import trio_asyncio
from grpclib.client import Channel
from grpclib.const import Cardinality, Status
from grpclib.exceptions import GRPCError

from gateway.cluster import free_ports
from gateway.grpc_server import serve_grpc
from gateway.peer_client import PeerLink, PeerUnavailable
from gateway.peer_codec import message_to_peer, message_to_proto
from gateway.peer_service import INSTALL_SNAPSHOT_METHOD, STREAM_METHOD, RaftPeerService, RawBytes
from proto.gen.railraft.raft.v1 import AppendEntriesResponse, InstallSnapshotChunk, RaftStub
from raft.types import Configuration, Entry, Message, MsgType, Snapshot, SnapshotMeta

CLUSTER = "test-cluster"
GROUP = 1
HOST = "127.0.0.1"


@dataclass
class Node:
    """One in-process peer service and what reached it."""

    node_id: int
    port: int
    service: RaftPeerService
    delivered: list[Message] = field(default_factory=list)
    batches: list[int] = field(default_factory=list)  # sizes of deliver_batch calls
    snapshots: list[tuple[Message, pathlib.Path, bytes]] = field(default_factory=list)
    cancel: trio.CancelScope = field(default_factory=trio.CancelScope)


@asynccontextmanager
async def serving(
    node_id: int, snapshot_dir: pathlib.Path, *, port: int = 0, accept_snapshots: bool = True, batched: bool = False,
    deliver_now=None,
) -> AsyncIterator[Node]:
    """Serve a RaftPeerService for `node_id` on 127.0.0.1 until the block exits (`batched`: through
    `deliver_batch` instead of `deliver`)."""
    node: Node

    async def deliver(msg: Message) -> None:
        node.delivered.append(msg)

    async def deliver_batch(msgs: list[Message]) -> None:
        assert msgs
        node.batches.append(len(msgs))
        node.delivered.extend(msgs)

    async def receive_snapshot(msg: Message, path: pathlib.Path) -> bool:
        node.snapshots.append((msg, path, path.read_bytes()))
        return accept_snapshots

    if batched:
        service = RaftPeerService(
            CLUSTER, GROUP, node_id, None, receive_snapshot, snapshot_dir, deliver_batch=deliver_batch,
            deliver_now=deliver_now,
        )
    else:
        service = RaftPeerService(CLUSTER, GROUP, node_id, deliver, receive_snapshot, snapshot_dir)
    async with trio.open_nursery() as nursery:
        bound = await nursery.start(serve_grpc, [service], HOST, port)
        node = Node(node_id, bound, service)
        node.cancel = nursery.cancel_scope
        try:
            yield node
        finally:
            nursery.cancel_scope.cancel()


def link_to(node: Node, frm: int, **kw) -> PeerLink:
    kw.setdefault("cluster_id", CLUSTER)
    return PeerLink(node.node_id, HOST, node.port, group_id=GROUP, node_id=frm, **kw)


async def wait_for(predicate, timeout: float = 5.0) -> None:
    with trio.fail_after(timeout):
        while not predicate():
            await trio.sleep(0.005)


def conversation(leader: int, follower: int) -> tuple[list[Message], list[Message]]:
    """Some messages a leader sends a follower, and the follower's answers."""
    to_f = [
        Message(MsgType.VOTE, to=follower, frm=leader, term=3, log_term=2, index=7),
        Message(MsgType.PRE_VOTE, to=follower, frm=leader, term=4, log_term=2, index=7, context=b"transfer"),
        Message(
            MsgType.APP,
            to=follower,
            frm=leader,
            term=3,
            log_term=2,
            index=7,
            commit=6,
            entries=(Entry(3, 8, data=b"book seat 12A"), Entry(3, 9, data=b"")),
        ),
        Message(MsgType.HEARTBEAT, to=follower, frm=leader, term=3, commit=9, context=b"rd-1", index=42),
        Message(MsgType.APP, to=follower, frm=leader, term=3, log_term=3, index=9, commit=9),
        Message(MsgType.TIMEOUT_NOW, to=follower, frm=leader, term=3),
    ]
    to_l = [
        Message(MsgType.VOTE_RESP, to=leader, frm=follower, term=3),
        Message(MsgType.APP_RESP, to=leader, frm=follower, term=3, index=9),
        Message(MsgType.APP_RESP, to=leader, frm=follower, term=3, index=7, reject=True, reject_hint=5, log_term=2),
        Message(MsgType.HEARTBEAT_RESP, to=leader, frm=follower, term=3, commit=9, context=b"rd-1", index=42),
    ]
    return to_f, to_l


@pytest.mark.trio
async def test_two_nodes_exchange_batches_in_order(tmp_path):
    async with trio_asyncio.open_loop():
        async with serving(1, tmp_path / "n1") as n1, serving(2, tmp_path / "n2") as n2:
            to_2, to_1 = conversation(1, 2)
            async with link_to(n2, frm=1) as l12, link_to(n1, frm=2) as l21:
                await l12.send(to_2[:3])
                await l12.send(to_2[3:])
                await l21.send(to_1)
                await wait_for(lambda: len(n2.delivered) == len(to_2) and len(n1.delivered) == len(to_1))
                assert l12.connected and l21.connected
            assert n2.delivered == to_2
            assert n1.delivered == to_1


@pytest.mark.trio
async def test_deliver_batch_gets_whole_batches_in_order(tmp_path):
    msgs = [Message(MsgType.HEARTBEAT, to=2, frm=1, term=1, index=i) for i in range(2000)]
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path, batched=True) as n2, link_to(n2, frm=1) as link:
            for i in range(0, len(msgs), 200):
                await link.send(msgs[i : i + 200])
            await wait_for(lambda: len(n2.delivered) == len(msgs))
            assert n2.delivered == msgs
            assert sum(n2.batches) == len(msgs)
    with pytest.raises(TypeError):
        RaftPeerService(CLUSTER, GROUP, 2, None, None, tmp_path)


@pytest.mark.trio
async def test_deliver_now_takes_batches_on_the_asyncio_side_and_order_holds_when_it_declines(tmp_path):
    """A batch `deliver_now` takes never hops into Trio; one it declines (its inbox is full) goes through
    `deliver_batch`.  Taken and declined batches interleave, and the node still sees arrival order."""
    msgs = [Message(MsgType.HEARTBEAT, to=2, frm=1, term=1, index=i) for i in range(600)]
    taken: list[bool] = []
    serving_node: list[Node] = []

    def deliver_now(batch: list[Message]) -> bool:
        trio.lowlevel.current_task()  # it runs inside a Trio task, as Node.deliver_now needs
        taken.append(len(taken) % 2 == 0)
        if not taken[-1]:
            return False
        serving_node[0].delivered.extend(batch)  # the same list deliver_batch extends
        return True

    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path, batched=True, deliver_now=deliver_now) as n2, link_to(n2, frm=1) as link:
            serving_node.append(n2)
            for i in range(0, len(msgs), 20):
                await link.send(msgs[i : i + 20])
                await trio.sleep(0.001)  # separate batches on the receiving side, some taken, some declined
            await wait_for(lambda: len(n2.delivered) == len(msgs))
            assert taken.count(True) >= 2 and taken.count(False) >= 2
            assert len(n2.batches) == taken.count(False)  # deliver_batch got exactly the declined batches
            assert n2.delivered == msgs  # each declined batch went in before the next was offered


@pytest.mark.trio
async def test_open_stream_sends_without_a_hop_into_asyncio_unless_the_window_is_short(tmp_path, monkeypatch):
    """Once the stream is open, a batch the peer's flow-control window takes is written straight from Trio
    (also one bigger than an HTTP/2 frame); a batch bigger than the window waits for it on the asyncio path.
    Either way everything arrives, in order."""
    hops = []
    aio_send = PeerLink._aio_send

    async def counting(self, payloads):
        hops.append(len(payloads))
        await aio_send(self, payloads)

    monkeypatch.setattr(PeerLink, "_aio_send", counting)

    def app(i: int, size: int) -> Message:
        return Message(MsgType.APP, to=2, frm=1, term=1, log_term=1, index=i, commit=i,
                       entries=(Entry(1, i + 1, data=bytes([i % 251]) * size),))

    small = [app(i, 100) for i in range(50)]
    multi_frame = [app(50 + i, 10_000) for i in range(3)]  # 30 kB: two or more DATA frames
    huge = [app(60 + i, 2_000_000) for i in range(3)]  # 6 MB: more than grpclib's 4 MiB window
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path, batched=True) as n2, link_to(n2, frm=1) as link:
            await link.send(small[:1])  # opens the stream: the asyncio path
            assert hops == [1]
            for m in small[1:]:
                await link.send([m])
            await link.send(multi_frame)
            assert hops == [1]
            await link.send(huge)
            assert hops == [1, 3]
            await link.send(small[:2])
            await wait_for(lambda: len(n2.delivered) == len(small) + len(multi_frame) + len(huge) + 2)
            assert n2.delivered == small + multi_frame + huge + small[:2]


@pytest.mark.trio
async def test_send_checks_messages_before_sending(tmp_path):
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path) as n2, link_to(n2, frm=1) as link:
            snap = Message(MsgType.SNAP, to=2, frm=1, term=1, snapshot=Snapshot(SnapshotMeta(5, 1)))
            with pytest.raises(ValueError, match="send_snapshot"):
                await link.send([snap])
            with pytest.raises(ValueError, match="node 3"):
                await link.send([Message(MsgType.HEARTBEAT, to=3, frm=1, term=1)])
            with pytest.raises(ValueError):  # CodecError: a local message never crosses the network
                await link.send([Message(MsgType.HUP, to=2, frm=1)])
            assert not link.connected and n2.delivered == []


@pytest.mark.trio
async def test_wrong_cluster_id_is_refused_and_never_delivered(tmp_path):
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path) as n2:
            msg = Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)
            async with link_to(n2, frm=1, cluster_id="another-cluster") as link:
                # The refusal comes back asynchronously; the link reports it on a later send.
                with trio.fail_after(5):
                    with pytest.raises(PeerUnavailable) as info:
                        while True:
                            await link.send([msg])
                            await trio.sleep(0.02)
                assert info.value.status is Status.PERMISSION_DENIED
                assert "cluster id" in str(info.value)

            # The same refusal seen by a plain gRPC client, for the cluster, the group and the addressee.
            async def refused(cluster_id: str, group_id: int, to: int) -> GRPCError:
                env = message_to_proto(Message(MsgType.HEARTBEAT, to=to, frm=1, term=1), cluster_id, group_id)
                channel = Channel(HOST, n2.port)
                try:
                    with pytest.raises(GRPCError) as err:
                        async for _ in RaftStub(channel).stream([env]):
                            pass
                    return err.value
                finally:
                    channel.close()

            for args in [("another-cluster", GROUP, 2), (CLUSTER, GROUP + 1, 2), (CLUSTER, GROUP, 3)]:
                err = await trio_asyncio.aio_as_trio(refused)(*args)
                assert err.status is Status.PERMISSION_DENIED, args
            assert n2.delivered == []


@pytest.mark.trio
async def test_garbage_is_invalid_argument(tmp_path):
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path) as n2:

            async def send_raw(payloads: list[bytes]) -> GRPCError:
                channel = Channel(HOST, n2.port)
                try:
                    async with channel.request(STREAM_METHOD, Cardinality.STREAM_STREAM, RawBytes, RawBytes) as call:
                        for p in payloads:
                            await call.send_message(RawBytes(p))
                        await call.end()
                        with pytest.raises(GRPCError) as err:
                            await call.recv_message()
                    return err.value
                finally:
                    channel.close()

            hb = Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)
            good = bytes(message_to_proto(hb, CLUSTER, GROUP))
            for payloads in [[b"\xff\xff\xff"], [b""], [good, b"\x0a\x05abc"]]:
                err = await trio_asyncio.aio_as_trio(send_raw)(payloads)
                assert err.status is Status.INVALID_ARGUMENT, payloads
            # what came before the bad envelope was delivered, nothing after it
            assert n2.delivered == [hb]


@pytest.mark.trio
async def test_unary_append_entries_delivers(tmp_path):
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path) as n2:
            app = Message(MsgType.APP, to=2, frm=1, term=2, log_term=1, index=4, entries=(Entry(2, 5, data=b"x"),))

            async def call() -> AppendEntriesResponse:
                channel = Channel(HOST, n2.port)
                try:
                    return await RaftStub(channel).append_entries(message_to_peer(app, CLUSTER, GROUP))
                finally:
                    channel.close()

            reply = await trio_asyncio.aio_as_trio(call)()
            assert (reply.from_id, reply.to_id) == (2, 1)
            assert n2.delivered == [app]


def _snapshot_message(index: int = 120) -> Message:
    meta = SnapshotMeta(index=index, term=4, conf=Configuration(frozenset({1, 2, 3}), frozenset({4})))
    return Message(MsgType.SNAP, to=2, frm=1, term=5, snapshot=Snapshot(meta, data=None))


@pytest.mark.trio
async def test_snapshot_arrives_byte_identical(tmp_path):
    payload = os.urandom(3 * 1024 * 1024 + 12345)  # 3 MB and a bit: four chunks, the last one short
    src = tmp_path / "leader" / "snap.db"
    src.parent.mkdir()
    src.write_bytes(payload)
    incoming = tmp_path / "follower"
    async with trio_asyncio.open_loop():
        async with serving(2, incoming) as n2, link_to(n2, frm=1) as link:
            msg = _snapshot_message()
            assert await link.send_snapshot(msg, src) is True
            assert len(n2.snapshots) == 1
            got_msg, path, data = n2.snapshots[0]
            assert data == payload
            assert path.parent == incoming and path.read_bytes() == payload  # accepted: the file is kept
            assert got_msg.type is MsgType.SNAP and (got_msg.frm, got_msg.to, got_msg.term) == (1, 2, 5)
            assert got_msg.snapshot.meta == msg.snapshot.meta
            assert got_msg.snapshot.data == path
            assert n2.delivered == []  # a snapshot goes to receive_snapshot, not to deliver

            # an empty snapshot file is fine too
            empty = tmp_path / "leader" / "empty.db"
            empty.write_bytes(b"")
            assert await link.send_snapshot(_snapshot_message(121), empty) is True
            assert n2.snapshots[1][2] == b""

            with pytest.raises(ValueError):
                await link.send_snapshot(Message(MsgType.APP, to=2, frm=1), src)
            with pytest.raises(FileNotFoundError):  # our own problem, not the peer's
                await link.send_snapshot(msg, tmp_path / "missing.db")


@pytest.mark.trio
async def test_rejected_or_broken_snapshot_leaves_no_temp_file(tmp_path):
    src = tmp_path / "snap.db"
    src.write_bytes(os.urandom(300_000))
    incoming = tmp_path / "incoming"
    async with trio_asyncio.open_loop():
        async with serving(2, incoming, accept_snapshots=False) as n2, link_to(n2, frm=1) as link:
            assert await link.send_snapshot(_snapshot_message(), src, chunk_bytes=64 * 1024) is False
            assert len(n2.snapshots) == 1
            assert list(incoming.iterdir()) == []

            # A stream with a gap in the offsets is refused, and its partial file removed.
            header = message_to_peer(_snapshot_message(), CLUSTER, GROUP)

            async def gap() -> GRPCError:
                channel = Channel(HOST, n2.port)
                try:
                    call = channel.request(
                        INSTALL_SNAPSHOT_METHOD, Cardinality.STREAM_UNARY, InstallSnapshotChunk, InstallSnapshotChunk
                    )
                    with pytest.raises(GRPCError) as err:
                        async with call:
                            await call.send_message(header)
                            await call.send_message(
                                InstallSnapshotChunk(**_hdr(header), meta=header.meta, offset=0, data=b"abc")
                            )
                            await call.send_message(
                                InstallSnapshotChunk(**_hdr(header), meta=header.meta, offset=10, data=b"d"), end=True
                            )
                            await call.recv_message()
                    return err.value
                finally:
                    channel.close()

            err = await trio_asyncio.aio_as_trio(gap)()
            assert err.status is Status.INVALID_ARGUMENT and "offset" in err.message
            assert len(n2.snapshots) == 1
            assert list(incoming.iterdir()) == []

            # a snapshot for another cluster is refused: False, not an exception
            other = link_to(n2, frm=1, cluster_id="another-cluster")
            try:
                assert await other.send_snapshot(_snapshot_message(), src) is False
            finally:
                await other.close()
            assert list(incoming.iterdir()) == []


def _hdr(chunk: InstallSnapshotChunk) -> dict:
    return dict(
        cluster_id=chunk.cluster_id, group_id=chunk.group_id, from_id=chunk.from_id, to_id=chunk.to_id, term=chunk.term
    )


@pytest.mark.trio
async def test_send_to_a_port_without_server_fails_fast():
    port = free_ports(1)[0]
    async with trio_asyncio.open_loop():
        link = PeerLink(2, HOST, port, cluster_id=CLUSTER, group_id=GROUP, node_id=1)
        try:
            start = trio.current_time()
            with pytest.raises(PeerUnavailable):
                await link.send([Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)])
            assert trio.current_time() - start < 3.0
            with pytest.raises(PeerUnavailable):
                await link.send_snapshot(_snapshot_message(), pathlib.Path(__file__))
            assert trio.current_time() - start < 6.0
        finally:
            await link.close()


@pytest.mark.trio
async def test_a_silent_peer_is_detected():
    """A peer that accepts connections but never answers (think SIGSTOP): a send that cannot complete
    times out, and an idle link notices through unanswered HTTP/2 pings."""
    async with trio_asyncio.open_loop():
        listener = trio.socket.socket()
        await listener.bind((HOST, 0))
        listener.listen()
        port = listener.getsockname()[1]
        hb = Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)
        link = PeerLink(2, HOST, port, cluster_id=CLUSTER, group_id=GROUP, node_id=1)
        try:
            big = Message(MsgType.APP, to=2, frm=1, term=1, entries=(Entry(1, 1, data=b"x" * 100_000),))
            start = trio.current_time()
            with pytest.raises(PeerUnavailable, match="within"):
                # the HTTP/2 window (64 KiB until the peer's SETTINGS arrive) fills; the send then times out
                await link.send([big])
            assert trio.current_time() - start < 3.0
        finally:
            await link.close()

        link = PeerLink(2, HOST, port, cluster_id=CLUSTER, group_id=GROUP, node_id=1, keepalive=0.3)
        try:
            # a small send fits in the socket buffers and "succeeds"; the keepalive ping then goes unanswered
            await link.send([hb])
            assert link.connected
            await wait_for(lambda: not link.connected, timeout=3)
            with pytest.raises(PeerUnavailable, match="Connection lost"):
                await link.send([hb])
        finally:
            await link.close()
            listener.close()


@pytest.mark.trio
async def test_link_reconnects_after_the_server_restarts(tmp_path):
    hb = Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path) as first:
            port = first.port
            link = link_to(first, frm=1)
            await link.send([hb])
            await wait_for(lambda: len(first.delivered) == 1)
        # Server gone: the link notices its connection closing; the next send reports it, and the one
        # after that cannot connect.
        await wait_for(lambda: not link.connected, timeout=2)
        with pytest.raises(PeerUnavailable):
            await link.send([hb])
        with pytest.raises(PeerUnavailable, match="Connect|refused"):
            await link.send([hb])
        try:
            async with serving(2, tmp_path, port=port) as second:
                failures = 0
                with trio.fail_after(5):
                    while True:
                        try:
                            await link.send([hb])
                            break
                        except PeerUnavailable:
                            failures += 1
                            await trio.sleep(0.05)
                assert failures == 0  # the link knew its old connection was gone, so it just reconnected
                await wait_for(lambda: len(second.delivered) == 1)
                assert link.connected
        finally:
            await link.close()


async def _live_request_handlers() -> list[str]:
    return [
        t.get_coro().__qualname__
        for t in asyncio.all_tasks()
        if not t.done() and "request_handler" in t.get_coro().__qualname__
    ]


@pytest.mark.trio
async def test_serve_grpc_shuts_down_cleanly_on_cancel(tmp_path):
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path) as n2:
            port = n2.port
            link = link_to(n2, frm=1)
            await link.send([Message(MsgType.HEARTBEAT, to=2, frm=1, term=1)])
            await wait_for(lambda: len(n2.delivered) == 1)
            assert await trio_asyncio.aio_as_trio(_live_request_handlers)() != []  # the open Stream call
        try:
            # the cancelled server closed its handlers and its connections...
            assert await trio_asyncio.aio_as_trio(_live_request_handlers)() == []
            await wait_for(lambda: not link.connected, timeout=2)
            # ...and its listening socket: nothing accepts on the port, and it can be bound again
            with pytest.raises(OSError):
                with socket.create_connection((HOST, port), timeout=1):
                    pass
            with socket.socket() as s:
                s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                s.bind((HOST, port))
                s.listen()
        finally:
            await link.close()

        # port already taken: serve_grpc fails before reporting a port
        with socket.socket() as taken:
            taken.bind((HOST, 0))
            taken.listen()
            with pytest.raises(OSError):
                await serve_grpc([], HOST, taken.getsockname()[1])


@pytest.mark.trio
async def test_throughput_smoke(tmp_path):
    """Not a benchmark (no timing assertion): 20k small APP messages in batches of 100, printed with -s."""
    total, batch = 20_000, 100
    msgs = [
        Message(
            MsgType.APP, to=2, frm=1, term=3, log_term=3, index=i, commit=i, entries=(Entry(3, i + 1, data=b"x" * 64),)
        )
        for i in range(total)
    ]
    async with trio_asyncio.open_loop():
        async with serving(2, tmp_path, batched=True) as n2, link_to(n2, frm=1) as link:
            await link.send(msgs[:1])  # connect outside the measurement
            await wait_for(lambda: len(n2.delivered) == 1)
            n2.delivered.clear()
            n2.batches.clear()
            start = time.perf_counter()
            for i in range(0, total, batch):
                await link.send(msgs[i : i + batch])
            sent = time.perf_counter()
            await wait_for(lambda: len(n2.delivered) == total, timeout=60)
            done = time.perf_counter()
            assert n2.delivered == msgs
    print(
        f"\npeer transport: {total} APP msgs in batches of {batch}: "
        f"{total / (done - start):,.0f} msgs/s end to end (sender done after {sent - start:.2f}s, "
        f"all delivered after {done - start:.2f}s; {len(n2.batches)} Trio hops on the receiver)"
    )
