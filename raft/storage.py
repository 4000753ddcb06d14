"""Durable Raft storage: the interface the runtime writes through, and an in-memory twin.

A node's durable Raft state is three things:

* the **hard state** (term, vote, commit), rewritten as a whole;
* the **snapshot metadata** (index, term, configuration) of the latest snapshot, which says where the log
  begins (the snapshot's data itself belongs to the state machine, not to this module);
* the **log**: every entry after the snapshot, with consecutive indexes and non-decreasing terms.

`LogStorage` is the contract; `MemoryStorage` implements it in Python lists for unit tests and the
deterministic simulation, and `raft.filestorage.FileStorage` implements it on disk.  Both validate every
call the same way and raise `ValueError` before changing anything, so a simulation run on the twin rejects
exactly what a real node would.

Semantics of `save` (applied in this order, as one durable batch):

1. `snapshot`: the log is replaced by the snapshot; every stored entry is discarded.  Its index may not be
   below the current snapshot's.
2. `entries`: the first entry may replace a suffix (every stored entry with index >= entries[0].index is
   dropped, then the batch is appended).  entries[0].index must lie in (snapshot index, last index + 1];
   the batch must have consecutive indexes, and terms must not decrease along the resulting log.
3. `hard_state`.

`compact(meta)` records a snapshot taken locally at `meta.index` (which must be held, with term
`meta.term`) and drops the entries up to it, keeping those after it.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

from .types import Entry, HardState, SnapshotMeta

__all__ = [
    "CorruptLogError",
    "LogStorage",
    "MemoryStorage",
    "Recovered",
    "StorageClosedError",
    "check_compact",
    "check_save",
]


class CorruptLogError(Exception):
    """Durable Raft state is damaged in a way recovery must not paper over (e.g. bad data followed by good)."""


class StorageClosedError(Exception):
    """The storage was closed, or a previous write failed and its durable state is unknown."""


@dataclass(frozen=True)
class Recovered:
    """Everything `load()` found: the starting point for a restarted node."""

    hard_state: HardState = HardState()
    snapshot: SnapshotMeta = SnapshotMeta()
    entries: list[Entry] = field(default_factory=list)  # every entry after snapshot.index, consecutive
    report: list[str] = field(default_factory=list)  # human lines about what recovery did


@runtime_checkable
class LogStorage(Protocol):
    """Durable home of one Raft group's hard state, snapshot metadata and log."""

    def load(self) -> Recovered:
        """Read (and, on disk, repair a torn tail of) the stored state."""
        ...

    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Durably apply one batch: snapshot, then entries, then hard state (see the module docstring)."""
        ...

    def compact(self, meta: SnapshotMeta) -> None:
        """Durably record a local snapshot at meta.index and drop the entries up to it."""
        ...

    def first_index(self) -> int:
        """Snapshot index + 1."""
        ...

    def last_index(self) -> int:
        """Index of the last stored entry, or the snapshot index when there is none."""
        ...

    def log_bytes(self) -> int:
        """Bytes of log segments on disk (0 for storage that has no disk)."""
        ...

    def close(self) -> None:
        """Release files; later calls raise `StorageClosedError`."""
        ...


# ----- validation shared by both implementations -----


def check_save(
    *,
    snap: SnapshotMeta,
    last_index: int,
    term_at: Callable[[int], int],
    entries: Sequence[Entry],
    snapshot: SnapshotMeta | None,
) -> None:
    """Raise ValueError if `save(entries=..., snapshot=...)` would break the log's invariants.

    `snap` and `last_index` describe the stored log; `term_at(i)` gives the stored term of a held index
    (snap.index <= i <= last_index).  Nothing is checked against the hard state: that is the core's business.
    """
    if snapshot is not None:
        if snapshot.index < snap.index:
            raise ValueError(f"snapshot at index {snapshot.index} is older than the stored one at {snap.index}")
        snap, last_index = snapshot, snapshot.index
        stored_term_at = None
    else:
        stored_term_at = term_at
    if not entries:
        return
    first = entries[0].index
    if first <= snap.index:
        raise ValueError(f"entry index {first} is not after the snapshot index {snap.index}")
    if first > last_index + 1:
        raise ValueError(f"entry index {first} leaves a gap after the last index {last_index}")
    prev_term = snap.term if first - 1 == snap.index or stored_term_at is None else stored_term_at(first - 1)
    prev_index = first - 1
    for e in entries:
        if e.index != prev_index + 1:
            raise ValueError(f"entries are not consecutive: index {e.index} follows {prev_index}")
        if e.term < prev_term:
            raise ValueError(f"term goes backwards at index {e.index}: {e.term} after {prev_term}")
        prev_index, prev_term = e.index, e.term


def check_compact(*, snap: SnapshotMeta, last_index: int, term_at: Callable[[int], int], meta: SnapshotMeta) -> None:
    """Raise ValueError unless `meta` names a held index (>= the snapshot's) with its stored term."""
    if meta.index < snap.index:
        raise ValueError(f"compact to {meta.index} is below the snapshot index {snap.index}")
    if meta.index > last_index:
        raise ValueError(f"compact to {meta.index} is beyond the last index {last_index}")
    term = snap.term if meta.index == snap.index else term_at(meta.index)
    if meta.term != term:
        raise ValueError(f"compact to {meta.index} with term {meta.term}, but the stored term there is {term}")


# ----- the in-memory twin -----


class MemoryStorage:
    """`LogStorage` held in Python lists: same validation and semantics as `FileStorage`, no durability.

    Every call is O(size of the call) except `compact` (O(entries dropped)) and `load` (one list copy).
    Entries are immutable, so they are stored as given, never copied.
    """

    def __init__(self) -> None:
        self._hard = HardState()
        self._snap = SnapshotMeta()
        self._entries: list[Entry] = []  # _entries[i].index == _snap.index + 1 + i
        self._closed = False

    def load(self) -> Recovered:
        """Return the stored state; the entry list is a fresh copy the caller may keep or mutate."""
        self._check_open()
        return Recovered(self._hard, self._snap, list(self._entries), [])

    def save(
        self,
        *,
        hard_state: HardState | None = None,
        entries: Sequence[Entry] = (),
        snapshot: SnapshotMeta | None = None,
    ) -> None:
        """Apply snapshot, entries, hard state (see the module docstring); ValueError leaves state untouched."""
        self._check_open()
        check_save(
            snap=self._snap, last_index=self.last_index(), term_at=self._term, entries=entries, snapshot=snapshot
        )
        if snapshot is not None:
            self._snap = snapshot
            self._entries = []
        if entries:
            del self._entries[entries[0].index - self._snap.index - 1 :]
            self._entries.extend(entries)
        if hard_state is not None and needs_hard_state_write(self._hard, hard_state):
            self._hard = hard_state

    def compact(self, meta: SnapshotMeta) -> None:
        """Record a snapshot at meta.index and drop the entries up to it."""
        self._check_open()
        check_compact(snap=self._snap, last_index=self.last_index(), term_at=self._term, meta=meta)
        del self._entries[: meta.index - self._snap.index]
        self._snap = meta

    def first_index(self) -> int:
        """Snapshot index + 1."""
        return self._snap.index + 1

    def last_index(self) -> int:
        """Index of the last stored entry, or the snapshot index when there is none."""
        return self._snap.index + len(self._entries)

    def log_bytes(self) -> int:
        """Always 0: nothing is on disk."""
        return 0

    def close(self) -> None:
        """Mark the storage closed (idempotent)."""
        self._closed = True

    def _term(self, index: int) -> int:
        return self._entries[index - self._snap.index - 1].term

    def _check_open(self) -> None:
        if self._closed:
            raise StorageClosedError("storage is closed")


def needs_hard_state_write(durable: HardState, new: HardState) -> bool:
    """Whether `new` must be written: only a new term or vote must be durable before anything is sent.

    The commit index rides along when they change but is not written on its own: rewriting the state file
    (write, fsync, rename, directory fsync) every time the commit index moves cost more than appending the
    entries.  Losing it in a crash is safe -- a restarted node learns the commit index again from the leader,
    and what it had applied is known from its database (RaftLog takes max(commit, applied)).
    """
    return new.term != durable.term or new.vote != durable.vote
