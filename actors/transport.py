"""The narrow interface between a node's replicators and the network, and its in-memory twin.

A `PeerLink` moves Raft messages to one peer: `send(batch)` for everything but snapshots and
`send_snapshot(msg, path)` for InstallSnapshot.  The real one is gateway.peer_client.PeerLink (grpclib);
`MemoryNetwork` links nodes that live in one process, for actor tests, and can cut links.
"""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Protocol

from raft.types import Message


class PeerUnavailable(Exception):
    """The peer could not be reached; the replicator backs off and tries again."""


class PeerLink(Protocol):
    """Moves messages to one peer."""

    async def send(self, msgs: list[Message]) -> None:
        """Deliver a batch in order, or raise PeerUnavailable."""

    async def send_snapshot(self, msg: Message, path: Path) -> bool:
        """Stream a snapshot file; True if the peer accepted it."""

    async def close(self) -> None:
        """Release connections."""


LinkFactory = Callable[[int, str, int], PeerLink]  # (peer id, host, port) -> link


class MemoryNetwork:
    """In-process message delivery between nodes registered by id; links can be cut."""

    def __init__(self) -> None:
        self.deliver: dict[int, Callable[[list[Message]], Awaitable[None]]] = {}
        self.receive_snapshot: dict[int, Callable[[Message, Path], Awaitable[bool]]] = {}
        self.cut: set[tuple[int, int]] = set()

    def register(
        self,
        node_id: int,
        deliver: Callable[[list[Message]], Awaitable[None]],
        receive_snapshot: Callable[[Message, Path], Awaitable[bool]],
    ) -> None:
        """Make a node reachable."""
        self.deliver[node_id] = deliver
        self.receive_snapshot[node_id] = receive_snapshot

    def unregister(self, node_id: int) -> None:
        """Make a node unreachable (it stopped)."""
        self.deliver.pop(node_id, None)
        self.receive_snapshot.pop(node_id, None)

    def factory(self, src: int) -> LinkFactory:
        """Link factory for node `src`."""
        return lambda peer, host, port: _MemoryLink(self, src, peer)


class _MemoryLink:
    def __init__(self, net: MemoryNetwork, src: int, dst: int) -> None:
        self.net, self.src, self.dst = net, src, dst

    def _target(self) -> Callable[[list[Message]], Awaitable[None]]:
        fn = self.net.deliver.get(self.dst)
        if fn is None or (self.src, self.dst) in self.net.cut:
            raise PeerUnavailable(f"node {self.dst} unreachable")
        return fn

    async def send(self, msgs: list[Message]) -> None:
        await self._target()(msgs)

    async def send_snapshot(self, msg: Message, path: Path) -> bool:
        self._target()
        fn = self.net.receive_snapshot[self.dst]
        # Hand the receiver its own copy, as a network transfer would.
        tmp = Path(tempfile.mkdtemp(prefix="railraft-memsnap-")) / "snap.db"
        try:
            shutil.copyfile(path, tmp)
            return await fn(msg, tmp)
        finally:
            # The receiver has moved the file into its own snapshot directory (or refused it): nothing here
            # is needed any more, and a test run would otherwise leave a directory behind per snapshot.
            shutil.rmtree(tmp.parent, ignore_errors=True)

    async def close(self) -> None:
        return None
