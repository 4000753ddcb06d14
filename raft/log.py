"""The core's in-memory view of the replicated log.

Holds the latest snapshot's metadata and every entry after it, and tracks three marks: `stabled` (durable on
this node), `committed` and `applied` (handed to the application).  Compaction keeps memory bounded: the
entries before the snapshot are gone.  The configuration history (one item per CONF entry, plus the
snapshot's) lets membership follow the log: a configuration is in force from the moment its entry is appended
(the dissertation's rule for single-server changes) and is rolled back if that entry is truncated away.
"""

from __future__ import annotations

from bisect import bisect_right

from .types import Configuration, Entry, EntryType, Snapshot, SnapshotMeta


class LogInvariantError(AssertionError):
    """The core was asked to do something that would break Raft's safety (a bug, never bad input)."""


class RaftLog:
    """Snapshot + entries after it, with stable/commit/apply marks and the configuration history."""

    __slots__ = ("snap", "entries", "stabled", "committed", "applied", "pending_snapshot", "confs")

    def __init__(self, snap: SnapshotMeta, entries: list[Entry], committed: int, applied: int) -> None:
        self.snap = snap
        self.entries: list[Entry] = list(entries)
        for i, e in enumerate(self.entries):
            if e.index != snap.index + 1 + i:
                raise LogInvariantError(f"log has a gap at index {snap.index + 1 + i}")
        self.stabled = self.last_index()
        # What the state machine applied was committed, even if the commit index on disk is older (it is
        # written only with term/vote changes, see raft.filestorage.needs_hard_state_write).
        self.committed = max(snap.index, min(max(committed, applied), self.last_index()))
        self.applied = max(snap.index, min(applied, self.committed))
        self.pending_snapshot: Snapshot | None = None
        self.confs: list[tuple[int, Configuration]] = [(snap.index, snap.conf)]
        for e in self.entries:
            if e.type == EntryType.CONF:
                self.confs.append((e.index, Configuration.decode(e.data)))

    # ----- positions -----
    def first_index(self) -> int:
        """Index of the first entry still held (snapshot index + 1)."""
        return self.snap.index + 1

    def last_index(self) -> int:
        """Index of the last entry, or the snapshot's index when no entry follows it."""
        return self.snap.index + len(self.entries)

    def last_term(self) -> int:
        """Term of the last entry (or of the snapshot)."""
        return self.entries[-1].term if self.entries else self.snap.term

    def term(self, index: int) -> int | None:
        """Term of the entry at `index`; None if compacted away or beyond the end."""
        off = index - self.snap.index
        if off == 0:
            return self.snap.term
        if off < 0 or off > len(self.entries):
            return None
        return self.entries[off - 1].term

    def match_term(self, index: int, term: int) -> bool:
        """Does our log hold an entry at `index` with `term`?"""
        return self.term(index) == term

    def is_up_to_date(self, last_index: int, last_term: int) -> bool:
        """The election restriction: is a log ending at (last_index, last_term) at least as up to date as ours?"""
        mine = self.last_term()
        return last_term > mine or (last_term == mine and last_index >= self.last_index())

    def slice(self, lo: int, max_count: int, max_bytes: int) -> list[Entry]:
        """Entries from `lo` on, at most `max_count` of them and about `max_bytes` (always at least one)."""
        start = lo - self.snap.index - 1
        if start < 0:
            raise LogInvariantError(f"slice from compacted index {lo}")
        out = self.entries[start : start + max_count]
        if max_bytes and len(out) > 1:
            size = 0
            for n, e in enumerate(out):
                size += len(e.data) + 24
                if size > max_bytes and n > 0:
                    return out[:n]
        return out

    def entry(self, index: int) -> Entry:
        """The entry at `index` (must be held)."""
        return self.entries[index - self.snap.index - 1]

    def find_conflict_by_term(self, index: int, term: int) -> int:
        """Largest index <= `index` whose term is <= `term` (etcd's fast backtracking helper).

        Terms never decrease along a log, so this is a binary search.  If every held entry up to `index` has
        a larger term, the snapshot index is returned: the two logs certainly agree there.
        """
        index = min(index, self.last_index())
        if index <= self.snap.index:
            return index
        hi = index - self.snap.index  # search entries[0:hi]
        pos = bisect_right(self.entries, term, 0, hi, key=lambda e: e.term)
        return self.snap.index + pos

    # ----- changes -----
    def find_conflict(self, entries: tuple[Entry, ...] | list[Entry]) -> int:
        """Index of the first entry that is new or disagrees with ours, 0 if all are already held."""
        for e in entries:
            t = self.term(e.index)
            if t is None:
                if e.index <= self.snap.index:
                    continue  # compacted, hence committed, hence equal
                return e.index
            if t != e.term:
                return e.index
        return 0

    def append(self, entries: list[Entry] | tuple[Entry, ...]) -> None:
        """Append entries, replacing any suffix that starts at the first one's index."""
        if not entries:
            return
        after = entries[0].index
        if after <= self.committed:
            raise LogInvariantError(f"would overwrite committed index {after} (committed {self.committed})")
        if after > self.last_index() + 1:
            raise LogInvariantError(f"append at {after} leaves a gap after {self.last_index()}")
        keep = after - self.snap.index - 1
        if keep < len(self.entries):
            del self.entries[keep:]
            while self.confs[-1][0] >= after:
                self.confs.pop()
        if self.stabled >= after:
            self.stabled = after - 1
        self.entries.extend(entries)
        for e in entries:
            if e.type == EntryType.CONF:
                self.confs.append((e.index, Configuration.decode(e.data)))

    def commit_to(self, index: int) -> bool:
        """Raise the commit mark (never lowers it); True if it moved."""
        index = min(index, self.last_index())
        if index > self.committed:
            self.committed = index
            return True
        return False

    def stable_to(self, index: int, term: int) -> None:
        """Entries up to `index` are durable, if the entry there is still the one that was written."""
        if index > self.stabled and self.term(index) == term:
            self.stabled = index

    def unstable(self) -> list[Entry]:
        """Entries not yet known to be durable."""
        start = self.stabled - self.snap.index
        return self.entries[start:] if start < len(self.entries) else []

    def next_committed(self, limit: int) -> list[Entry]:
        """Committed, durable, not yet applied entries (at most `limit`)."""
        hi = min(self.committed, self.stabled)
        if hi <= self.applied:
            return []
        start = self.applied - self.snap.index
        return self.entries[start : start + min(limit, hi - self.applied)]

    def restore(self, snapshot: Snapshot) -> None:
        """Replace the whole log with a snapshot received from the leader."""
        meta = snapshot.meta
        self.snap = meta
        self.entries = []
        self.stabled = self.committed = self.applied = meta.index
        self.pending_snapshot = snapshot
        self.confs = [(meta.index, meta.conf)]

    def compact(self, index: int) -> SnapshotMeta:
        """Drop entries up to `index` (already applied) and return the new snapshot's metadata."""
        if index <= self.snap.index:
            return self.snap
        if index > self.applied:
            raise LogInvariantError(f"compact({index}) beyond applied index {self.applied}")
        term = self.term(index)
        assert term is not None
        meta = SnapshotMeta(index=index, term=term, conf=self.conf_at(index))
        del self.entries[: index - self.snap.index]
        self.snap = meta
        while len(self.confs) > 1 and self.confs[1][0] <= index:
            self.confs.pop(0)
        self.confs[0] = (index, meta.conf)
        return meta

    # ----- configuration -----
    def conf(self) -> Configuration:
        """The configuration in force: the latest one in the log."""
        return self.confs[-1][1]

    def conf_index(self) -> int:
        """Index of the entry (or snapshot) that holds the configuration in force."""
        return self.confs[-1][0]

    def conf_at(self, index: int) -> Configuration:
        """The configuration in force at `index`."""
        conf = self.confs[0][1]
        for i, c in self.confs:
            if i > index:
                break
            conf = c
        return conf
