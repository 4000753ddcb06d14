"""What a leader knows about each follower's log, and how fast it may send to it.

A follower is in one of three modes (etcd-io/raft's names): PROBE (we don't know where its log ends; one
append at a time until it answers), REPLICATE (we know; stream appends optimistically, at most
`max_inflight` unacknowledged) and SNAPSHOT (it needs a snapshot; send nothing else until it arrives).
"""

from __future__ import annotations

from collections import deque
from enum import IntEnum


class ProgressState(IntEnum):
    """Replication mode of one follower."""

    PROBE = 0
    REPLICATE = 1
    SNAPSHOT = 2


class Progress:
    """Replication state of one follower, as seen by the leader."""

    __slots__ = (
        "match",
        "next",
        "state",
        "probe_sent",
        "inflight",
        "max_inflight",
        "pending_snapshot",
        "snapshot_ticks",
        "recent_active",
        "lease_ack",
    )

    def __init__(self, next_index: int, max_inflight: int) -> None:
        self.match = 0
        self.next = next_index
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.inflight: deque[int] = deque()  # last index of each unacknowledged append, ascending
        self.max_inflight = max_inflight
        self.pending_snapshot = 0
        self.snapshot_ticks = 0
        self.recent_active = False
        self.lease_ack = -1  # leader tick of the newest heartbeat this follower acknowledged

    def __repr__(self) -> str:
        return f"Progress({self.state.name} match={self.match} next={self.next} inflight={len(self.inflight)})"

    def become_probe(self) -> None:
        """Go back to one-at-a-time probing from just after what we know it has."""
        if self.state == ProgressState.SNAPSHOT:
            self.next = max(self.match + 1, self.pending_snapshot + 1)
        else:
            self.next = self.match + 1
        self.state = ProgressState.PROBE
        self.probe_sent = False
        self.pending_snapshot = 0
        self.inflight.clear()

    def become_replicate(self) -> None:
        """We know where its log ends: stream from there."""
        self.state = ProgressState.REPLICATE
        self.next = self.match + 1
        self.probe_sent = False
        self.inflight.clear()

    def become_snapshot(self, index: int) -> None:
        """It needs the snapshot at `index` before anything else."""
        self.state = ProgressState.SNAPSHOT
        self.pending_snapshot = index
        self.snapshot_ticks = 0
        self.probe_sent = False
        self.inflight.clear()

    def maybe_update(self, index: int) -> bool:
        """An acknowledgement up to `index` arrived; True if it taught us something new."""
        updated = False
        if self.match < index:
            self.match = index
            updated = True
            self.probe_sent = False
        if self.next < index + 1:
            self.next = index + 1
        return updated

    def maybe_decr_to(self, rejected: int, hint: int) -> bool:
        """A rejection of the append after `rejected`; move `next` back (using `hint`), False if stale."""
        if self.state == ProgressState.REPLICATE:
            if rejected <= self.match:
                return False  # an old, reordered rejection
            self.next = max(self.match + 1, min(rejected, hint + 1))
            return True
        if self.next - 1 != rejected:
            return False
        self.next = max(min(rejected, hint + 1), self.match + 1, 1)
        self.probe_sent = False
        return True

    def is_paused(self) -> bool:
        """May nothing be sent right now?"""
        if self.state == ProgressState.PROBE:
            return self.probe_sent
        if self.state == ProgressState.REPLICATE:
            return len(self.inflight) >= self.max_inflight
        return True

    def sent(self, last_index: int, count: int) -> None:
        """Record an append carrying `count` entries up to `last_index`."""
        if self.state == ProgressState.REPLICATE:
            if count:
                self.next = last_index + 1
                self.inflight.append(last_index)
        elif self.state == ProgressState.PROBE:
            self.probe_sent = True

    def free_to(self, index: int) -> None:
        """Appends up to `index` are acknowledged; their in-flight slots are free again."""
        inflight = self.inflight
        while inflight and inflight[0] <= index:
            inflight.popleft()
