"""`MemoryDatabase`: the in-memory twin of store.db.Database, for actor tests under Trio's mock clock.

Same methods and the same state machine (`apply_batch` on a real SQLite connection), but everything runs
synchronously in the calling Trio task: no threads and no asyncio, so a test with `autojump_clock` stays
deterministic.  Snapshots are real SQLite files, made and checked by the same helpers as Database's.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import trio

from . import facts, queries, schema
from .commands import Result
from .db import _backup_to, _prepare_install
from .state_machine import apply_batch

T = TypeVar("T")


class MemoryDatabase:
    """A node's database held in memory (see module docstring)."""

    def __init__(self) -> None:
        self.conn = self._fresh()

    @staticmethod
    def _fresh() -> sqlite3.Connection:
        conn = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False, factory=facts.Connection)
        schema.migrate(conn)
        return conn

    @classmethod
    async def open(cls, path: Any = None) -> MemoryDatabase:
        """Match Database.open; the path is ignored."""
        return cls()

    async def applied_index(self) -> int:
        """The last applied log index."""
        return queries.applied_index(self.conn)

    async def apply(self, batch: Iterable[tuple[int, int, bytes]]) -> list[Result | None]:
        """Apply committed entries in one transaction (store.state_machine.apply_batch)."""
        await trio.lowlevel.checkpoint()
        return apply_batch(self.conn, [(int(i), int(k), bytes(d)) for i, k, d in batch])

    def checkpoint_due(self) -> bool:
        """Match Database.checkpoint_due: an in-memory database has no WAL to copy."""
        return False

    async def checkpoint(self) -> float | None:
        """Match Database.checkpoint: nothing to copy, nothing held up."""
        return 0.0

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run a read function on the connection."""
        await trio.lowlevel.checkpoint()
        return fn(self.conn, *args)

    async def aio_read(self, fn: Callable[..., T], *args: Any) -> T:
        """`read`, from asyncio code (as store.db.Database.aio_read)."""
        return fn(self.conn, *args)

    async def snapshot(self, dest_path: str | os.PathLike[str]) -> int:
        """Write a snapshot file; return its applied index."""
        return _backup_to(self.conn, os.fspath(dest_path))

    async def install_snapshot(self, src_path: str | os.PathLike[str]) -> int:
        """Replace the contents with a snapshot file; return its applied index."""
        tmp = Path(os.fspath(src_path) + ".memcheck")
        index = _prepare_install(os.fspath(src_path), tmp)
        src = sqlite3.connect(tmp, isolation_level=None)
        try:
            fresh = sqlite3.connect(":memory:", isolation_level=None, check_same_thread=False,
                                    factory=facts.Connection)
            src.backup(fresh)
        finally:
            src.close()
            tmp.unlink(missing_ok=True)
        schema.migrate(fresh)
        self.conn.close()
        self.conn = fresh
        return index

    async def canonical_dump(self) -> str:
        """Deterministic dump for comparing replicas."""
        return queries.canonical_dump(self.conn)

    async def close(self) -> None:
        """Close the connection."""
        self.conn.close()
