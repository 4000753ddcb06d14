"""`CheckpointSpyDatabase`: the in-memory database, with a WAL checkpoint that is due on demand and counted."""

from __future__ import annotations

import trio

from store.memdb import MemoryDatabase


class CheckpointSpyDatabase(MemoryDatabase):
    """MemoryDatabase whose `checkpoint_if_due`, while `due`, runs one "checkpoint" of `seconds` (Trio time)."""

    due = True
    seconds = 0.0
    checkpoints = 0

    async def checkpoint_if_due(self) -> bool:
        if not self.due:
            return False
        self.checkpoints += 1
        await trio.sleep(self.seconds)
        return True
