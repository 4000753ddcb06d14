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
from .rpc import parse_leader_hint, trio_call

WRITE_TIMEOUT_S = 10.0


class Submitter:
    """Writes and linearizable reads on behalf of the services of one node."""

    def __init__(self, node: Node, auth: ClusterAuth | None = None) -> None:
        self.node = node
        self.auth = auth  # the node's peer authentication (None: no cluster secret); NodeService uses it too
        self._channels: dict[str, Channel] = {}

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
                result, index = await trio_call(self.node.propose, command, remaining)
                return result, index
            except NotLeaderError as e:
                if e.leader_id and e.leader_id != self.node.id and e.leader_addr:
                    try:
                        request = ProposeRequest(command=command)
                        metadata = (self.auth.metadata(PROPOSE_METHOD, e.leader_id, [bytes(request)])
                                    if self.auth is not None else None)
                        resp = await NodeStub(self._channel(e.leader_addr)).propose(
                            request, timeout=remaining, metadata=metadata
                        )
                        return decode_result(resp.result), resp.index
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

    def close(self) -> None:
        """Close channels to other nodes."""
        for addr in list(self._channels):
            self._drop_channel(addr)
