"""`Database`: the node's async handle on its SQLite database, callable from Trio.

The design card fixes aiosqlite as the driver.  aiosqlite is asyncio code that runs each connection on its own
worker thread; we call it from Trio through `trio_asyncio.aio_as_trio`, so every method here must run inside
``async with trio_asyncio.open_loop():``, and `close()` must be awaited before that loop exits (an unclosed
aiosqlite connection keeps a non-daemon thread alive).

Two connections:

* the writer -- the only one that changes the database: `apply` (one transaction per batch, see
  store.state_machine) and `install_snapshot`.  These are serialised by a lock (normally only the node's
  DB-writer actor calls them anyway).
* the reader -- `read(fn, *args)` for queries; WAL mode lets it read committed state while the writer applies.
  It is `query_only`, so a read function can never change replicated state.

`snapshot` copies the database on a third connection, opened for the copy, so applies go on meanwhile.
`checkpoint` copies the WAL into the database file, mostly on a connection of its own while applies go on
(SQLite's own checkpoint, inside a commit, is only a backstop).

Every call is ONE hop onto the connection's thread that runs a whole synchronous function there (a batch, a
query function), not one await per SQL statement: a thread hop costs far more than a SQLite statement.  Work
that is expected to be short takes no hop at all: it runs on the event loop's own thread (see `_Costs`).

Writes (`apply`, `snapshot`, `install_snapshot`, `close`) are shielded from Trio cancellation: once queued on
the worker thread the work happens anyway, so the caller waits for it and always learns the outcome (an
apply that "was cancelled" but committed would otherwise leave the applier unsure what was applied).
"""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, TypeVar

import aiosqlite
import trio
import trio_asyncio

from . import facts, queries, schema
from .commands import Result
from .state_machine import apply_batch, read_meta_int

T = TypeVar("T")

READ_BATCH_MAX = 64  # aio_read: reads run together in one hop onto the reader's thread, at most this many

# Work expected to take at most this long runs on the event loop's thread instead of the connection's (see
# _Costs).  Long work keeps its thread, so heartbeats and other calls never wait behind it for long (an
# election timeout is 500 ms or more).
INLINE_APPLY_S = 0.05  # an applied batch
INLINE_READ_S = 0.002  # one read (by its function's cost) ...
INLINE_READS_S = 0.02  # ... and the reads run together in one turn, in all; the rest take the reader's thread
APPLY_PROBATION = 16  # batches a freshly opened database applies on its thread (cold caches), measuring them
COST_WEIGHT = 0.2  # weight of the newest measurement in a moving average
PEAK_DECAY = 0.9  # a cost's peak shrinks by this factor with each new measurement
INLINE_STALL_WARN_S = 0.2  # inline work that took longer than this is logged
# WAL checkpoints (see Database.checkpoint): one is due once about this many pages were written to the
# WAL since the last one (SQLite's own default); SQLite's automatic checkpoint stays as a backstop, for a
# writer nobody checkpoints.  The first estimate of pages per applied entry, until a checkpoint measures it.
CHECKPOINT_FRAMES = 1000
AUTOCHECKPOINT_BACKSTOP_FRAMES = 10 * CHECKPOINT_FRAMES
FRAMES_PER_ENTRY_GUESS = 5.0

log = logging.getLogger("railraft.db")


class DatabaseClosedError(RuntimeError):
    """The Database was closed (or a snapshot install failed to reopen it)."""


class SnapshotError(ValueError):
    """A snapshot file is not a usable railraft database; the current database was left untouched."""


def _fault_disk_full() -> None:
    """Test hook RAILRAFT_FAULT_DISK_FULL=<path> (see raft.filestorage): while the file exists, writes fail as
    SQLite fails them on a full disk.  Never set in production."""
    flag = os.environ.get("RAILRAFT_FAULT_DISK_FULL")
    if flag and os.path.exists(flag):
        err = sqlite3.OperationalError("database or disk is full (test hook RAILRAFT_FAULT_DISK_FULL)")
        err.sqlite_errorcode = sqlite3.SQLITE_FULL  # type: ignore[attr-defined]
        raise err


# ----------------------------------------------------------------------------------- the asyncio edge


async def _aio_connect(path: str) -> aiosqlite.Connection:
    # isolation_level=None: no implicit transactions from the sqlite3 module; the state machine issues
    # BEGIN/SAVEPOINT/COMMIT itself and reads wrap themselves in BEGIN...ROLLBACK.  check_same_thread=False:
    # short work runs on the event loop's thread too, never at the same time as work on the connection's own
    # (Database sees to that: the write lock, and no inline read while a hop onto the reader is in flight).
    # facts.Connection: a memo of the catalogue rows that never change (store/facts.py).
    return await aiosqlite.connect(path, isolation_level=None, check_same_thread=False, factory=facts.Connection)


async def _on_thread(conn: aiosqlite.Connection, fn: Callable[..., T], *args: Any) -> T:
    """Run `fn(sqlite3_connection, *args)` on `conn`'s worker thread, in one hop, from Trio.

    aiosqlite has no public API for "run my function on your connection's thread"; `Connection._execute(fn,
    *args)` is exactly that (it queues fn(*args) on the worker and awaits the result) and is what its own
    public methods use.  Using it lets a whole batch or query function run in a single hop.  `conn._conn` is
    the underlying sqlite3.Connection (it raises ValueError once the connection is closed).
    """
    return await trio_asyncio.aio_as_trio(conn._execute)(fn, conn._conn, *args)


async def _aio_close(conn: aiosqlite.Connection) -> None:
    await trio_asyncio.aio_as_trio(conn.close)()


async def _open_connection(path: str, *, reader: bool) -> aiosqlite.Connection:
    conn = await trio_asyncio.aio_as_trio(_aio_connect)(path)
    try:
        await _on_thread(conn, _setup, reader)
    except BaseException:
        with trio.CancelScope(shield=True):
            await _aio_close(conn)
        raise
    return conn


def _setup(conn: sqlite3.Connection, reader: bool) -> None:
    schema.configure(conn, reader=reader)
    if not reader:
        conn.execute(f"PRAGMA wal_autocheckpoint = {AUTOCHECKPOINT_BACKSTOP_FRAMES}")
        schema.migrate(conn)


# ------------------------------------------------------------------------------ worker-thread functions


def _read_txn(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple[Any, ...]) -> T:
    """Run a read function inside one read transaction, so its SELECTs all see the same committed state."""
    conn.execute("BEGIN")
    try:
        return fn(conn, *args)
    finally:
        if conn.in_transaction:
            conn.execute("ROLLBACK")  # ends the read transaction; there is nothing to commit


def _read_many(conn: sqlite3.Connection, jobs: list[tuple[Callable[..., Any], tuple[Any, ...]]],
               clock: Callable[[], float] = time.perf_counter) -> list[tuple[bool, Any, float]]:
    """Several read functions, each in its own read transaction: (True, value, seconds) or (False, the
    exception, seconds), timed by `clock`."""
    out: list[tuple[bool, Any, float]] = []
    for fn, args in jobs:
        t0 = clock()
        try:
            value = _read_txn(conn, fn, args)
        except Exception as e:  # noqa: BLE001 - raised to that read's caller
            out.append((False, e, clock() - t0))
        else:
            out.append((True, value, clock() - t0))
    return out


def _timed_apply(conn: sqlite3.Connection, entries: list[tuple[int, int, bytes]]
                 ) -> tuple[list[Result | None], float]:
    """apply_batch, and the CPU seconds it took this thread (on a worker thread, waiting for the GIL is not
    work the event loop would have to do)."""
    t0 = time.thread_time()
    results = apply_batch(conn, entries)
    return results, time.thread_time() - t0


class _Cost:
    """The cost of one kind of work: a moving average, and a peak that decays with each new measurement.

    Work is expected to cost the larger of the two: a spike (pages not yet cached, a slow query plan) keeps
    that work off the event loop for the next few rounds instead of being averaged away."""

    __slots__ = ("avg", "peak")

    def __init__(self, seconds: float) -> None:
        self.avg = self.peak = seconds

    def learn(self, seconds: float) -> None:
        """Take in one measurement."""
        self.avg += COST_WEIGHT * (seconds - self.avg)
        self.peak = max(seconds, self.peak * PEAK_DECAY)

    def expected(self) -> float:
        """What the next piece of this work is expected to cost."""
        return max(self.avg, self.peak)


class _ApplyCost:
    """The cost of applied batches: a batch's seconds as a `_Cost`, and the moving average of its entries.
    Seconds per entry are the ratio of the two averages (so a WAL checkpoint that lands on a one-entry batch
    is spread over the entries whose pages it writes, as it should be); the peak is a whole batch's (so after
    a batch that took long -- a checkpoint of a big database, cold caches -- the next ones take the thread
    for a while, whatever their size)."""

    __slots__ = ("batch", "entries")

    def __init__(self, seconds: float, entries: int) -> None:
        self.batch = _Cost(seconds)
        self.entries = float(entries)

    def learn(self, seconds: float, entries: int) -> None:
        """Take in one batch."""
        self.batch.learn(seconds)
        self.entries += COST_WEIGHT * (entries - self.entries)

    def per_entry(self) -> float:
        """Seconds per entry, on average."""
        return self.batch.avg / self.entries

    def expected(self, entries: int) -> float:
        """What a batch of `entries` is expected to cost."""
        return max(entries * self.per_entry(), self.batch.peak)


class _Costs:
    """What the database's work has been costing, to choose where the next piece runs.

    A hop onto a connection's thread and back -- queueing, waking the thread, handing the GIL over while the
    event loop is busy, waking the loop with the result -- took 1.5-2 ms of wall time around a 0.65 ms apply
    at one client, and under load the apply and the event loop fought over the GIL a statement at a time.
    So work expected to be short runs inline on the event loop's thread, as log saves do
    (actors.node.INLINE_SAVE_S): an applied batch by what batches have been costing, a read by what reads
    of its function have.  A freshly opened database applies its first APPLY_PROBATION batches on its
    thread, and a read function not measured yet takes the thread once.  Work that is slow, or was lately,
    keeps its thread, so the event loop does not stall behind a big replay, a checkpoint-heavy database or a
    heavy query.
    """

    def __init__(self) -> None:
        self.apply: _ApplyCost | None = None
        self.probation = APPLY_PROBATION
        self.reads: dict[Any, _Cost] = {}  # by the read function's code (a closure made per call shares it)

    def apply_inline(self, entries: int) -> bool:
        """Whether a batch of `entries` is expected to apply within INLINE_APPLY_S."""
        cost = self.apply
        return self.probation <= 0 and cost is not None and cost.expected(entries) <= INLINE_APPLY_S

    def applied(self, entries: int, seconds: float) -> None:
        """Learn from a batch of `entries` that took `seconds`."""
        self.probation -= 1
        if entries:
            if self.apply is None:
                self.apply = _ApplyCost(seconds, entries)
            else:
                self.apply.learn(seconds, entries)

    @staticmethod
    def _key(fn: Callable[..., Any]) -> Any:
        return getattr(fn, "__code__", None)

    def read_cost(self, fn: Callable[..., Any]) -> float | None:
        """The expected seconds of a read by `fn`, or None if not known."""
        cost = self.reads.get(self._key(fn))
        return None if cost is None else cost.expected()

    def read(self, fn: Callable[..., Any], seconds: float) -> None:
        """Learn from a read by `fn` that took `seconds`."""
        key = self._key(fn)
        if key is not None:
            cost = self.reads.get(key)
            if cost is None:
                self.reads[key] = _Cost(seconds)
            else:
                cost.learn(seconds)

    def split_reads(self, jobs: list[Any]) -> tuple[list[Any], list[Any]]:
        """`jobs` [(fn, args, ...)] split into those to run inline (known to be short, up to INLINE_READS_S in
        all, in arrival order) and those for the reader's thread."""
        inline: list[Any] = []
        hop: list[Any] = []
        budget = INLINE_READS_S
        for job in jobs:
            cost = self.read_cost(job[0])
            if cost is not None and cost <= INLINE_READ_S and cost <= budget:
                budget -= cost
                inline.append(job)
            else:
                hop.append(job)
        return inline, hop


class _WalGrowth:
    """How many pages the WAL has grown by since the last complete checkpoint, estimated from the entries applied
    since then and the pages per entry the WAL held when last looked at (SQLite's Python module does not report
    the WAL's size on each commit)."""

    __slots__ = ("entries", "frames_per_entry", "_carried")

    def __init__(self) -> None:
        self.entries = 0
        self.frames_per_entry = FRAMES_PER_ENTRY_GUESS
        self._carried = 0  # pages left in the WAL by an incomplete checkpoint (counted before)

    def due(self) -> bool:
        """Whether about CHECKPOINT_FRAMES pages were written since the last complete checkpoint."""
        return self.entries * self.frames_per_entry >= CHECKPOINT_FRAMES

    def learn(self, wal_frames: int, entries: int) -> None:
        """The WAL held `wal_frames` pages when `entries` entries had been applied since the last checkpoint."""
        grown = wal_frames - self._carried
        if entries > 0 and grown > 0:
            self.frames_per_entry = grown / entries

    def checkpointed(self, wal_frames: int, done: int) -> None:
        """A checkpoint found `wal_frames` pages in the WAL and copied `done` of them."""
        # After a complete checkpoint the next write starts the WAL over; after an incomplete one (a reader
        # still on old pages) it goes on growing from where it was.
        self.entries = 0
        self._carried = 0 if done >= wal_frames else wal_frames


def _warn_if_stalled(what: str, seconds: float) -> None:
    if seconds > INLINE_STALL_WARN_S:
        log.warning("the database held up the event loop for %.0f ms (%s); such work will take a thread for a"
                    " while", seconds * 1000, what)


async def _settle(fut: asyncio.Future[Any], aw: Any) -> None:
    """Await `aw` and put its outcome in `fut` (unless its caller gave up meanwhile)."""
    try:
        value = await aw
    except Exception as e:  # noqa: BLE001 - handed to the caller
        if not fut.done():
            fut.set_exception(e)
    else:
        if not fut.done():
            fut.set_result(value)


def _fsync_path(path: Path, *, directory: bool = False) -> None:
    fd = os.open(path, (os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)) if directory else os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _remove(path: Path) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


_SIDECARS = ("-wal", "-shm", "-journal")


def _sidecar(path: Path, suffix: str) -> Path:
    return path.with_name(path.name + suffix)


def _backup_to(conn: sqlite3.Connection, dest: str) -> int:
    """Copy the database to `dest` atomically and durably; return the applied index the copy holds."""
    dest_path = Path(dest)
    tmp = _sidecar(dest_path, ".tmp")
    for p in (tmp, *(_sidecar(tmp, s) for s in _SIDECARS)):
        _remove(p)
    out = sqlite3.connect(tmp, isolation_level=None)
    try:
        # One backup step copies every page inside one read transaction of `conn`: a consistent picture of
        # the database even while the writer commits (WAL), and apply_batch commits whole batches, so the
        # copy's applied_index matches its contents.
        conn.backup(out)
        # A self-contained single file (no -wal to ship alongside); the receiver switches back to WAL.
        out.execute("PRAGMA journal_mode = DELETE")
        index = read_meta_int(out, "applied_index")
    finally:
        out.close()
    _fsync_path(tmp)
    os.replace(tmp, dest_path)
    _fsync_path(dest_path.parent, directory=True)
    return index


def _prepare_install(src: str, tmp: Path) -> int:
    """Copy a received snapshot next to our database, check it, fsync it; return its applied index."""
    for p in (tmp, *(_sidecar(tmp, s) for s in _SIDECARS)):
        _remove(p)
    shutil.copyfile(src, tmp)
    try:
        check = sqlite3.connect(tmp, isolation_level=None)
        try:
            ok = check.execute("PRAGMA quick_check").fetchone()[0]
            if ok != "ok":
                raise SnapshotError(f"snapshot {src} is corrupt: {ok}")
            version = check.execute("PRAGMA user_version").fetchone()[0]
            if not 1 <= version <= schema.SCHEMA_VERSION:
                raise SnapshotError(
                    f"snapshot {src} has schema version {version}; this node understands 1..{schema.SCHEMA_VERSION}"
                )
            index = read_meta_int(check, "applied_index")
        except sqlite3.DatabaseError as e:
            raise SnapshotError(f"snapshot {src} is not a railraft database: {e}") from None
        except RuntimeError as e:  # read_meta_int: no meta row
            raise SnapshotError(f"snapshot {src} is not a railraft database: {e}") from None
        finally:
            check.close()
        _fsync_path(tmp)
    except BaseException:
        _remove(tmp)
        raise
    return index


def _swap_in(tmp: Path, path: Path) -> None:
    """Make `tmp` the database at `path`.  Called with every connection to `path` closed."""
    # Stale sidecars of the old database must go first: SQLite would replay an old -wal onto the new file.
    # They are empty anyway (we checkpointed with TRUNCATE before closing), so a crash here loses nothing:
    # either the old or the new file is the database, each complete on its own.
    for suffix in _SIDECARS:
        _remove(_sidecar(path, suffix))
    os.replace(tmp, path)
    _fsync_path(path.parent, directory=True)


def _passive_checkpoint(conn: sqlite3.Connection) -> tuple[int, int]:
    # (pages in the WAL, pages of it now in the main file)
    _, wal_frames, done = conn.execute("PRAGMA wal_checkpoint(PASSIVE)").fetchone()
    return wal_frames, done


def _copy_wal(path: str) -> tuple[int, int]:
    """The long part of a checkpoint, on a connection of its own (in a worker thread): a passive checkpoint
    copies the WAL's pages into the main file without waiting for the writer, who goes on appending."""
    # Configured as every connection is (synchronous: the copy is fsynced as the writer's would be), and
    # query_only: a checkpoint copies pages, it never changes the database.
    conn = schema.connect(path, reader=True)
    try:
        return _passive_checkpoint(conn)
    finally:
        conn.close()


def _checkpoint(conn: sqlite3.Connection) -> None:
    # Move everything from the WAL into the main file and truncate the WAL, so the main file alone is the
    # complete database before it is replaced.
    conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")


# --------------------------------------------------------------------------------------------- Database


class Database:
    """The node's database: one aiosqlite writer connection and one reader connection (see module doc)."""

    def __init__(self, path: str, writer: aiosqlite.Connection, reader: aiosqlite.Connection) -> None:
        """Use `await Database.open(path)`."""
        self.path = path
        self._writer: aiosqlite.Connection | None = writer
        self._reader: aiosqlite.Connection | None = reader
        self._write_lock = trio.Lock()
        self._copy_lock = trio.Lock()  # a snapshot copy in progress (see snapshot, install_snapshot)
        # While a snapshot is being installed, new reads wait on this event; reads already in flight are
        # counted so the install can wait for them before closing the reader.
        self._swapping: trio.Event | None = None
        self._reads_in_flight = 0
        self._reads_drained: trio.Event | None = None
        self._read_queue: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]] = []
        self._read_draining = False
        self.costs = _Costs()
        self._wal = _WalGrowth()

    # ---------------------------------------------------------------------------------------- lifecycle

    @classmethod
    async def open(cls, path: str | os.PathLike[str]) -> Database:
        """Open (creating if needed) and migrate the database at `path`; needs a running trio_asyncio loop."""
        spath = os.fspath(path)
        writer, reader = await cls._open_pair(spath)
        return cls(spath, writer, reader)

    @staticmethod
    async def _open_pair(path: str) -> tuple[aiosqlite.Connection, aiosqlite.Connection]:
        # Shielded: a half-opened pair would leak a worker thread.
        with trio.CancelScope(shield=True):
            writer = await _open_connection(path, reader=False)  # migrates before the reader looks
            try:
                reader = await _open_connection(path, reader=True)
            except BaseException:
                await _aio_close(writer)
                raise
        return writer, reader

    async def close(self) -> None:
        """Close both connections (waits for a write in progress).  Idempotent."""
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                await self._close_connections()

    async def _close_connections(self) -> None:
        reader, writer = self._reader, self._writer
        self._reader = self._writer = None
        try:
            if reader is not None:
                await _aio_close(reader)
        finally:
            if writer is not None:
                await _aio_close(writer)

    async def __aenter__(self) -> Database:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def _require_writer(self) -> aiosqlite.Connection:
        if self._writer is None:
            raise DatabaseClosedError(f"database {self.path} is closed")
        return self._writer

    # ------------------------------------------------------------------------------------------- writes

    async def apply(self, batch: Iterable[tuple[int, int, bytes]]) -> list[Result | None]:
        """Apply committed entries (index, kind, data) in one transaction; see state_machine.apply_batch.

        A batch expected to be short (see _Costs) is applied right here on the event loop's thread, a longer
        one in one hop onto the writer's thread.  Shielded from cancellation: when this returns, the batch is
        committed and the results are those of the commit.
        """
        # Normalise here, on the Trio side: EntryType -> int, memoryview -> bytes.
        entries = [(int(index), int(kind), bytes(data)) for index, kind, data in batch]
        _fault_disk_full()
        with trio.CancelScope(shield=True):
            async with self._write_lock:
                writer = self._require_writer()
                self._wal.entries += len(entries)
                if self.costs.apply_inline(len(entries)):
                    t0 = time.perf_counter()
                    try:
                        return apply_batch(writer._conn, entries)
                    finally:
                        seconds = time.perf_counter() - t0
                        self.costs.applied(len(entries), seconds)
                        _warn_if_stalled(f"applying {len(entries)} entries", seconds)
                results, seconds = await _on_thread(writer, _timed_apply, entries)
                self.costs.applied(len(entries), seconds)
                return results

    def checkpoint_due(self) -> bool:
        """Whether about CHECKPOINT_FRAMES pages were written to the WAL since the last checkpoint."""
        return self._writer is not None and self._wal.due()

    async def checkpoint(self) -> float | None:
        """Copy the WAL's pages into the database file; return how long applies were held up for it, or None
        if the copy failed (it is logged and loses nothing: the pages stay in the WAL; try again later).

        Most pages are copied on a connection of its own while applies go on; then the writer copies the few
        appended meanwhile, between two batches, so the copy is complete and the next batch starts the WAL
        over (a copy beside a busy writer alone never catches up, and the WAL grows to SQLite's backstop).
        The node runs this in the background once `checkpoint_due`.  Left to SQLite, the checkpoint ran
        inside the commit of whichever batch crossed the line, and that batch's callers waited for all of it:
        100-160 ms with a million bookings stored.
        """
        with trio.CancelScope(shield=True):
            # Not while a snapshot is installed: no connection of the copy may outlive the file it is on.
            async with self._copy_lock:
                self._require_writer()
                try:
                    entries = self._wal.entries
                    wal_frames, _ = await trio.to_thread.run_sync(_copy_wal, self.path)
                    # Learnt here, not from the writer's part: a copy that caught up with the writer lets the
                    # next batch start the WAL over before that part, which then sees only the newest pages.
                    self._wal.learn(wal_frames, entries)
                    async with self._write_lock:
                        writer = self._require_writer()
                        t0 = time.perf_counter()
                        wal_frames, done = await _on_thread(writer, _passive_checkpoint)
                        held_up = time.perf_counter() - t0
                except (OSError, sqlite3.Error) as e:
                    log.warning("WAL checkpoint of %s failed (tried again after the next batch): %s", self.path, e)
                    return None
        self._wal.checkpointed(wal_frames, done)
        return held_up

    async def snapshot(self, dest_path: str | os.PathLike[str]) -> int:
        """Write a consistent, fsynced copy of the database to `dest_path`; return the applied index it holds.

        SQLite's backup API copies every page in one step on a connection of its own, opened for the copy:
        one step holds one read transaction, so the copy is the database exactly as some applied batch left
        it (WAL lets the writer go on applying meanwhile -- a 1.2 GB database takes seconds to copy, and
        applies used to wait for it).  The index returned is the one the copy holds.  It goes into a
        temporary file that is then renamed into place; the copy is a single-file (rollback-journal mode)
        database, ready to ship to a follower.
        """
        _fault_disk_full()
        self._require_writer()
        with trio.CancelScope(shield=True):
            # Not while a snapshot is being installed: the copy's connection must not outlive the old file.
            async with self._copy_lock:
                conn = await _open_connection(self.path, reader=True)
                try:
                    return await _on_thread(conn, _backup_to, os.fspath(dest_path))
                finally:
                    await _aio_close(conn)

    async def install_snapshot(self, src_path: str | os.PathLike[str]) -> int:
        """Replace the whole database with a snapshot file from the leader; return its applied index.

        The file is copied beside the database, checked (SQLite quick_check, schema version, meta row) and
        fsynced BEFORE anything is closed, so a bad snapshot raises SnapshotError and leaves the database as
        it was.  Then reads are paused, both connections closed, the copy renamed over the database (stale
        -wal/-shm removed first), the directory fsynced, and the connections reopened (which migrates an
        older snapshot).  If reopening fails the Database stays closed and the error propagates.
        """
        path = Path(self.path)
        tmp = _sidecar(path, ".install")
        with trio.CancelScope(shield=True):
            # The lock order is the same in every method: copy, then write.  A copy in progress (snapshot) is
            # waited for, so no connection of it is left on the file about to be replaced.
            async with self._copy_lock, self._write_lock:
                writer = self._require_writer()
                index = await trio.to_thread.run_sync(_prepare_install, os.fspath(src_path), tmp)
                self._swapping = swapping = trio.Event()
                try:
                    while self._reads_in_flight:
                        self._reads_drained = trio.Event()
                        await self._reads_drained.wait()
                    await _on_thread(writer, _checkpoint)
                    await self._close_connections()
                    await trio.to_thread.run_sync(_swap_in, tmp, path)
                    self._writer, self._reader = await self._open_pair(self.path)
                    self.costs = _Costs()  # another database: nothing learnt holds, its caches are cold
                    self._wal = _WalGrowth()
                finally:
                    self._swapping = None
                    swapping.set()
                    await trio.to_thread.run_sync(_remove, tmp)  # only left over if something failed
        # Migrations never touch meta, so the snapshot's index is the database's index now.
        return index

    # -------------------------------------------------------------------------------------------- reads

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn(sqlite3_connection, *args)` on the reader's thread inside one read transaction.

        `fn` must be synchronous and return plain values (see store.queries).  It sees the latest committed
        batch.  Raises DatabaseClosedError after `close()`.
        """
        while self._swapping is not None:
            await self._swapping.wait()
        reader = self._reader
        if reader is None:
            raise DatabaseClosedError(f"database {self.path} is closed")
        self._reads_in_flight += 1
        try:
            return await _on_thread(reader, _read_txn, fn, args)
        finally:
            self._read_done()

    def _read_done(self) -> None:
        """A read hop finished: wake a snapshot install waiting for the reads to drain."""
        self._reads_in_flight -= 1
        if self._reads_in_flight == 0 and self._reads_drained is not None:
            self._reads_drained.set()
            self._reads_drained = None

    async def aio_read(self, fn: Callable[..., T], *args: Any) -> T:
        """`read`, awaited from asyncio code (a grpclib handler) instead of from Trio.

        Reads that arrive together run together, each in its own read transaction: those known to be short
        (see _Costs) right on the event loop's thread, the others in one hop onto the reader's thread (under
        load a hop -- queueing, waking the thread, handing the result back -- costs more than the queries).
        It also skips the two trio-asyncio crossings (asyncio -> Trio -> asyncio) a handler would pay to
        reach `read`.  While a snapshot is being installed the reads wait through `read`, from Trio.
        """
        if self._swapping is not None or self._reader is None:
            return await trio_asyncio.trio_as_aio(self.read)(fn, *args)
        fut: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._read_queue.append((fn, args, fut))
        if not self._read_draining:
            self._read_draining = True
            asyncio.ensure_future(self._drain_reads())
        return await fut

    async def _drain_reads(self) -> None:
        """Run the queued `aio_read`s, READ_BATCH_MAX per hop, until none are left."""
        try:
            while self._read_queue:
                jobs = self._read_queue[:READ_BATCH_MAX]
                del self._read_queue[:READ_BATCH_MAX]
                jobs = [j for j in jobs if not j[2].done()]  # callers that gave up (cancelled)
                if not jobs:
                    continue
                reader = self._reader
                if self._swapping is not None or reader is None:
                    for fn, args, fut in jobs:
                        await _settle(fut, trio_asyncio.trio_as_aio(self.read)(fn, *args))
                    continue
                # Inline only while nothing runs on the reader's thread: the two must never share the
                # connection at the same time (a `read` from Trio may be in flight).
                inline, jobs = self.costs.split_reads(jobs) if self._reads_in_flight == 0 else ([], jobs)
                if inline:
                    t0 = time.perf_counter()
                    self._settle_reads(inline, _read_many(reader._conn, [(fn, args) for fn, args, _ in inline]))
                    _warn_if_stalled(f"{len(inline)} reads", time.perf_counter() - t0)
                if not jobs:
                    if self._read_queue:
                        await asyncio.sleep(0)  # the next reads in a later turn: the loop runs in between
                    continue
                self._reads_in_flight += 1
                try:
                    outcomes = await reader._execute(_read_many, reader._conn, [(fn, args) for fn, args, _ in jobs],
                                                     time.thread_time)
                except Exception as e:  # noqa: BLE001 - the connection failed: every caller learns why
                    outcomes = [(False, e, None)] * len(jobs)  # nothing measured, nothing to learn
                finally:
                    self._read_done()
                self._settle_reads(jobs, outcomes)
        finally:
            self._read_draining = False

    def _settle_reads(self, jobs: list[tuple[Callable[..., Any], tuple[Any, ...], asyncio.Future[Any]]],
                      outcomes: list[tuple[bool, Any, float | None]]) -> None:
        """Hand each read its outcome, and learn what each cost (None: not measured)."""
        for (fn, _, fut), (ok, value, seconds) in zip(jobs, outcomes):
            if seconds is not None:
                self.costs.read(fn, seconds)
            if not fut.done():
                if ok:
                    fut.set_result(value)
                else:
                    fut.set_exception(value)

    async def applied_index(self) -> int:
        """The last log index whose effects are committed in the database."""
        return await self.read(queries.applied_index)

    async def canonical_dump(self) -> str:
        """A deterministic text dump of every table (rows by primary key), for comparing replicas."""
        return await self.read(queries.canonical_dump)
