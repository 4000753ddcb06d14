"""`CheckpointSpyDatabase`: the in-memory database, with a WAL checkpoint that is due on demand and counted."""

from __future__ import annotations

import trio

from store.memdb import MemoryDatabase


class CheckpointSpyDatabase(MemoryDatabase):
    """MemoryDatabase whose checkpoint is due while `due`; each one takes `seconds` (Trio time), and holds up
    applies for `held_up` of them, as the real one does for its last pages."""

    due = True
    seconds = 0.0
    held_up = 0.001
    checkpoints = 0

    def checkpoint_due(self) -> bool:
        return self.due

    async def checkpoint(self) -> float | None:
        await trio.sleep(self.seconds)
        self.checkpoints += 1
        return self.held_up
