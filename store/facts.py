"""Catalogue facts a connection remembers: rows that never change once written.

A run's coaches and classes are written when the run is scheduled, a train's stops when the train is added,
and nothing ever updates or deletes them.  Every hold read them again -- four of its seventeen statements,
and a list of coach objects built anew -- on every node, for every booking.  A `Connection` (what the
project opens: `schema.connect`, `store.db.Database`, `MemoryDatabase`) keeps what such a query found in
`facts`, so the next hold on the run finds it there.

Only rows that exist are remembered: an absent run or stop may be written later.  And only what one command
wrote at once: a run's classes, yes; the trains between two stations, no (a new train adds to them).  A
connection's memo goes with the connection (installing a snapshot opens new ones), and `forget` empties it
when a batch is rolled back, so nothing read from rows a rolled-back transaction wrote outlives them.  A
plain `sqlite3.Connection` (tools, some tests) has no memo and reads every time.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

T = TypeVar("T")

# Facts a connection keeps: the benchmark's catalogue (1,500 runs) needs about 17,000 (7-12 MB per node).
FACTS_MAX = 20_000


class Connection(sqlite3.Connection):
    """A sqlite3 connection with a memo of catalogue facts (`sqlite3.connect(..., factory=Connection)`)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.facts: dict[Hashable, Any] = {}


def fact(conn: sqlite3.Connection, key: Hashable, read: Callable[[], T]) -> T:
    """What `read()` returns for `key`, remembered by `conn` once it is there (a truthy value): `read` must
    only read rows that are never updated or deleted."""
    memo = getattr(conn, "facts", None)
    if memo is None:
        return read()
    found = memo.get(key)
    if found is None:
        found = read()
        if found:
            if len(memo) >= FACTS_MAX:
                memo.clear()  # a catalogue bigger than the memo: start again rather than grow without end
            memo[key] = found
    return found


def forget(conn: sqlite3.Connection) -> None:
    """Empty `conn`'s memo (after a rollback: what it read from rows written since may be gone)."""
    memo = getattr(conn, "facts", None)
    if memo is not None:
        memo.clear()
