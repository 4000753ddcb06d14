"""Typed messages between a node's actors (frozen dataclasses), and the one-shot reply slot they carry."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import trio

from raft.types import ConfChange, Entry, Message, ReadState, Ready, SnapshotMeta


class Reply:
    """A one-shot answer from an actor to whoever asked (same Trio thread, so no locking)."""

    __slots__ = ("_event", "value", "error")

    def __init__(self) -> None:
        self._event = trio.Event()
        self.value: Any = None
        self.error: BaseException | None = None

    def set(self, value: Any = None) -> None:
        """Answer with a value (ignored if already answered)."""
        if not self._event.is_set():
            self.value = value
            self._event.set()

    def fail(self, error: BaseException) -> None:
        """Answer with an error the waiter will raise."""
        if not self._event.is_set():
            self.error = error
            self._event.set()

    def done(self) -> bool:
        """Has it been answered?"""
        return self._event.is_set()

    async def wait(self) -> Any:
        """Wait for the answer; raises the error if it failed."""
        await self._event.wait()
        if self.error is not None:
            raise self.error
        return self.value


# ----- to the consensus actor -----
@dataclass(frozen=True)
class Tick:
    """The election timer fired."""


@dataclass(frozen=True)
class Inbound:
    """Raft messages that arrived from peers (or local ones such as SNAP_STATUS)."""

    msgs: tuple[Message, ...]


@dataclass(frozen=True)
class Propose:
    """Append commands on the leader; reply gets [(index, term), ...] or NotLeader."""

    datas: tuple[bytes, ...]
    reply: Reply = field(compare=False)


@dataclass(frozen=True)
class ReadBarrier:
    """Ask for a linearizable read point; the applier answers once applied >= read index."""

    ctx: bytes
    lease: bool = False


@dataclass(frozen=True)
class ChangeMembership:
    """A single-server membership change; reply gets the CONF entry's (index, term) or an error."""

    change: ConfChange
    reply: Reply = field(compare=False)


@dataclass(frozen=True)
class TransferLeadership:
    """Move leadership to `target`."""

    target: int


@dataclass(frozen=True)
class Persisted:
    """The log writer made `ready` durable."""

    ready: Ready


@dataclass(frozen=True)
class SnapshotTaken:
    """The DB writer saved a snapshot of the state machine at `index` in `path`."""

    index: int
    path: Path


@dataclass(frozen=True)
class Call:
    """Run `fn(core)` inside the consensus actor and reply with its result (status, admin queries)."""

    fn: Any
    reply: Reply = field(compare=False)


# ----- to the log writer -----
@dataclass(frozen=True)
class PersistReady:
    """Make a Ready durable (snapshot, entries, hard state), then report Persisted."""

    ready: Ready


@dataclass(frozen=True)
class CompactLog:
    """Drop the log up to a snapshot the DB writer has saved."""

    meta: SnapshotMeta


# ----- to the applier -----
@dataclass(frozen=True)
class ApplyEntries:
    """Committed entries to apply in order, then read states to release once applied."""

    entries: tuple[Entry, ...]
    read_states: tuple[ReadState, ...] = ()


@dataclass(frozen=True)
class InstallSnapshot:
    """Replace the state machine with a snapshot file received from the leader."""

    meta: SnapshotMeta
    path: Path
    reply: Reply = field(compare=False)
