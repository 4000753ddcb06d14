"""Getting a write applied from any node: propose here if we lead, otherwise forward to the leader.

`Submitter.submit(command)` retries across leader changes until its deadline, always with the same encoded
command, so the state machine's exactly-once table turns a retried write into the first one's result.
It is an asyncio coroutine (it runs inside grpclib handlers).

With a cluster secret (`auth`), every forwarded Propose carries the node's PeerAuth in its metadata (a fresh
nonce per attempt): the leader takes forwarded commands only from members (gateway/peer_auth.py).
"""

from __future__ import annotations

import asyncio

from grpclib import GRPCError
from grpclib.client import Channel
from grpclib.const import Status
from grpclib.exceptions import StreamTerminatedError

from actors.node import Node, NotLeaderError, ProposalLost
from proto.gen.railraft.node.v1 import NodeStub, ProposeRequest
from store.commands import Result, decode_result

from .peer_auth import PROPOSE_METHOD, ClusterAuth
from .leader_hint import parse_leader_hint
from .rpc import LoopTurnBatch, trio_call

WRITE_TIMEOUT_S = 10.0
PROPOSE_BATCH_MAX = 256  # commands one forwarded Propose may carry


class _Outbox:
    """Writes waiting to be forwarded to one leader, and whether a Propose to it is in flight."""

    def __init__(self) -> None:
        self.items: list[tuple[bytes, asyncio.Future]] = []
        self.sending = False


class Submitter:
    """Writes and linearizable reads on behalf of the services of one node."""

    def __init__(self, node: Node, auth: ClusterAuth | None = None) -> None:
        self.node = node
        self.auth = auth  # the node's peer authentication (None: no cluster secret); NodeService uses it too
        self._channels: dict[str, Channel] = {}
        self._outboxes: dict[str, _Outbox] = {}
        # Writes proposed here in one turn of the event loop go into the node together (_propose_here).
        self._proposals = LoopTurnBatch(self._propose_together)

    def _channel(self, addr: str) -> Channel:
        ch = self._channels.get(addr)
        if ch is None:
            host, _, port = addr.rpartition(":")
            ch = self._channels[addr] = Channel(host, int(port))
        return ch

    def _drop_channel(self, addr: str) -> None:
        ch = self._channels.pop(addr, None)
        if ch is not None:
            ch.close()

    async def submit(self, command: bytes, timeout: float = WRITE_TIMEOUT_S) -> Result:
        """Apply `command` exactly once, wherever the leader is; returns its result (TimeoutError if no leader)."""
        return (await self.submit_at(command, timeout))[0]

    async def submit_at(self, command: bytes, timeout: float = WRITE_TIMEOUT_S) -> tuple[Result, int]:
        """`submit`, also returning the log index the command was applied at (0 if the leader did not say).

        A read on this node once it has applied that index sees the write (Node.wait_applied): no ReadIndex
        round is needed to read back what was just written.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        delay = 0.02
        while True:
            remaining = deadline - loop.time()
            if remaining <= 0:
                raise TimeoutError("no leader applied the write in time")
            try:
                if not self.node.is_leader() and self.node.leader and self.node.leader != self.node.id:
                    # A follower that knows its leader forwards at once (no hop into the node to learn that).
                    raise NotLeaderError(self.node.leader, self.node.leader_address())
                return await self._propose_here(command, remaining)
            except NotLeaderError as e:
                if e.leader_id and e.leader_id != self.node.id and e.leader_addr:
                    try:
                        return await self._forward(e.leader_id, e.leader_addr, command, remaining)
                    except GRPCError as g:
                        if g.status not in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED):
                            raise
                        _, hinted = parse_leader_hint(g.message)
                        if not hinted:
                            pass  # the leader we knew is gone; wait for the election
                    except (OSError, asyncio.TimeoutError, StreamTerminatedError, AttributeError):
                        # AttributeError: grpclib's race on a connection that was just lost (grpclib #110).
                        self._drop_channel(e.leader_addr)
            except ProposalLost:
                pass  # leadership moved under the proposal; retrying with the same request id is safe
            await asyncio.sleep(min(delay, max(0.0, deadline - loop.time())))
            delay = min(delay * 2, 0.3)

    async def _propose_here(self, command: bytes, timeout: float) -> tuple[Result, int]:
        """Propose `command` on this node (the leader), together with every other write proposed here in the
        same turn of the event loop: one hop into Trio and one log append for the lot, each write with its own
        outcome.  Raises what proposing it raised (NotLeaderError, ProposalLost, TimeoutError, ...)."""
        return await self._proposals((command, timeout))  # type: ignore[no-any-return]

    async def _propose_together(self, items: list[tuple[bytes, float]]) -> list[tuple[Result, int] | BaseException]:
        return await trio_call(self.node.propose_each, [c for c, _ in items], max(t for _, t in items))

    async def _forward(self, leader_id: int, addr: str, command: bytes, timeout: float) -> tuple[Result, int]:
        """Have the leader at `addr` apply `command`: queued with the other writes this node forwards there, and
        sent in one Propose with them (one RPC and one log append on the leader for the lot).  Raises what
        the Propose raised."""
        box = self._outboxes.setdefault(addr, _Outbox())
        fut = asyncio.get_running_loop().create_future()
        # Retrieved even if our caller gave up waiting (no "exception was never retrieved" noise).
        fut.add_done_callback(lambda f: f.cancelled() or f.exception())
        box.items.append((command, fut))
        if not box.sending:
            box.sending = True
            asyncio.ensure_future(self._drain(leader_id, addr, box))
        return await asyncio.wait_for(asyncio.shield(fut), timeout)

    async def _drain(self, leader_id: int, addr: str, box: _Outbox) -> None:
        """Send what is queued for `addr`, one Propose at a time, until nothing is left; what arrives while a
        Propose is in flight goes in the next one."""
        try:
            while box.items:
                items, box.items = box.items[:PROPOSE_BATCH_MAX], box.items[PROPOSE_BATCH_MAX:]
                commands = [c for c, _ in items]
                request = ProposeRequest(command=commands[0]) if len(commands) == 1 else ProposeRequest(
                    commands=commands)
                metadata = (self.auth.metadata(PROPOSE_METHOD, leader_id, [bytes(request)])
                            if self.auth is not None else None)
                try:
                    resp = await NodeStub(self._channel(addr)).propose(request, timeout=WRITE_TIMEOUT_S,
                                                                       metadata=metadata)
                except (OSError, asyncio.TimeoutError, StreamTerminatedError, AttributeError, GRPCError) as e:
                    for _, f in items:
                        if not f.done():
                            f.set_exception(e)
                    continue
                if len(commands) == 1:
                    outcomes = [(resp.result, resp.index)]
                else:
                    outcomes = list(zip(resp.results, resp.indexes))
                for (_, f), (raw, index) in zip(items, outcomes):
                    if not f.done():
                        f.set_result((decode_result(raw), index))
                for _, f in items[len(outcomes):]:  # a short answer: those must be retried
                    if not f.done():
                        f.set_exception(GRPCError(Status.UNAVAILABLE, "the leader did not answer for this write"))
        finally:
            box.sending = False
            for _, f in box.items:  # cancelled while items were queued: let their callers retry
                if not f.done():
                    f.set_exception(GRPCError(Status.UNAVAILABLE, "forwarding stopped"))
            box.items.clear()

    def close(self) -> None:
        """Close channels to other nodes, and stop proposals still on their way into the node."""
        self._proposals.close()
        for addr in list(self._channels):
            self._drop_channel(addr)
