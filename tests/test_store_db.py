"""store.db.Database from Trio (through trio-asyncio): apply, read, replay, snapshot export and install."""

from __future__ import annotations

import os
import sqlite3
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import trio
import trio_asyncio

from store import queries
from store.commands import OK, CreateSession, RegisterUser, Result, RevokeSession, SetMember, encode_command
from store import db as db_module
from store.db import Database, DatabaseClosedError, SnapshotError
from store.state_machine import KIND_CONF, KIND_NORMAL, ApplyOrderError

T0 = 1_700_000_000_000
TOKEN = "f" * 64


def log_entries(n_users: int, start: int = 1) -> list[tuple[int, int, bytes]]:
    """A small log: users, a session, a member, a no-op and a conf entry."""
    out: list[tuple[int, int, bytes]] = []
    index = start
    for i in range(n_users):
        c = RegisterUser(request_id=f"u{index}", client_id="c", ts_ms=T0 + index, username=f"user{index}",
                         password_hash="h", role="CUSTOMER")
        out.append((index, KIND_NORMAL, encode_command(c)))
        index += 1
    out.append((index, KIND_NORMAL, b""))
    out.append((index + 1, KIND_CONF, b'{"voters":[1,2,3]}'))
    return out


@pytest.mark.trio
async def test_apply_read_and_replay_after_reopen(tmp_path: Path) -> None:
    path = tmp_path / "node.db"
    log = log_entries(5)
    async with trio_asyncio.open_loop():
        db = await Database.open(path)
        try:
            results = await db.apply(log[:3])
            assert [r.data for r in results] == [{"user_id": 1}, {"user_id": 2}, {"user_id": 3}]
            assert await db.applied_index() == 3
            user = await db.read(queries.user_by_name, "user2")
            assert user is not None and user.id == 2
            before = await db.canonical_dump()
        finally:
            await db.close()

        # Restart: the log after applied_index replays; everything up to it is skipped, so replaying the whole
        # log from the start is harmless.
        db = await Database.open(path)
        try:
            assert await db.canonical_dump() == before
            results = await db.apply(log)
            assert results[:3] == [None, None, None]
            assert [r.code for r in results[3:5]] == [OK, OK] and results[5:] == [None, None]
            assert await db.applied_index() == len(log)
            state = await db.canonical_dump()
            assert await db.apply(log) == [None] * len(log)
            assert await db.canonical_dump() == state
        finally:
            await db.close()


@pytest.mark.trio
async def test_login_logout_through_database(tmp_path: Path) -> None:
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            base = {"client_id": "web", "ts_ms": T0}
            cmds = [
                RegisterUser(request_id="1", **base, username="bob", password_hash="h", role="CUSTOMER"),
                CreateSession(request_id="2", **base, user_id=1, token_sha256=TOKEN, expires_at_ms=T0 + 1000),
                SetMember(request_id="3", **base, node_id=2, host="127.0.0.1", port=7002),
            ]
            results = await db.apply([(i + 1, KIND_NORMAL, encode_command(c)) for i, c in enumerate(cmds)])
            assert all(r.ok for r in results)
            assert await db.read(queries.session, TOKEN) == queries.SessionInfo(1, "bob", "CUSTOMER", T0 + 1000, False)
            assert await db.read(queries.members) == [queries.Member(2, "127.0.0.1", 7002)]
            [out] = await db.apply([(4, KIND_NORMAL, encode_command(
                RevokeSession(request_id="4", **base, token_sha256=TOKEN)))])
            assert out == Result(True, OK, "logged out", {"user_id": 1})
            assert (await db.read(queries.session, TOKEN)).revoked


@pytest.mark.trio
async def test_snapshot_install_round_trip(tmp_path: Path) -> None:
    async with trio_asyncio.open_loop():
        leader = await Database.open(tmp_path / "leader.db")
        follower = await Database.open(tmp_path / "follower.db")
        try:
            await leader.apply(log_entries(20))
            snap = tmp_path / "snap.db"
            index = await leader.snapshot(snap)
            assert index == 22 == await leader.applied_index()
            # The snapshot is one self-contained file.
            assert not any(p.name.startswith("snap.db-") for p in tmp_path.iterdir())

            # The follower had diverging, older state of its own (and a WAL with content).
            await follower.apply(log_entries(3))
            assert await follower.install_snapshot(snap) == 22
            assert await follower.applied_index() == 22
            assert await follower.canonical_dump() == await leader.canonical_dump()

            # It goes on applying from there exactly like the leader.
            more = log_entries(4, start=23)
            assert await leader.apply(more) == await follower.apply(more)
            assert await follower.canonical_dump() == await leader.canonical_dump()
        finally:
            await leader.close()
            await follower.close()
        assert not (tmp_path / "follower.db.install").exists()

        # Durable: reopening the follower's file gives the installed state.
        reopened = await Database.open(tmp_path / "follower.db")
        try:
            assert await reopened.applied_index() == 28
        finally:
            await reopened.close()


@pytest.mark.trio
async def test_bad_snapshot_leaves_database_untouched(tmp_path: Path) -> None:
    garbage = tmp_path / "garbage.db"
    garbage.write_bytes(b"this is not a database" * 100)
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            await db.apply(log_entries(2))
            state = await db.canonical_dump()
            with pytest.raises(SnapshotError):
                await db.install_snapshot(garbage)
            with pytest.raises(FileNotFoundError):
                await db.install_snapshot(tmp_path / "missing.db")
            # A valid SQLite file without the railraft schema is refused too.
            empty = tmp_path / "empty.db"
            sqlite3.connect(empty).close()
            with pytest.raises(SnapshotError, match="schema version 0"):
                await db.install_snapshot(empty)
            assert await db.canonical_dump() == state
            await db.apply(log_entries(1, start=5))  # still writable
    assert not (tmp_path / "n.db.install").exists()


@pytest.mark.trio
async def test_reads_during_install_wait_and_see_the_new_state(tmp_path: Path) -> None:
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "a.db") as src:
            await src.apply(log_entries(10))
            await src.snapshot(tmp_path / "s.db")
        async with await Database.open(tmp_path / "b.db") as db:
            seen: list[list[int]] = []

            async def reader() -> None:
                mine: list[int] = []
                seen.append(mine)
                while not mine or mine[-1] != 12:  # read until the installed state shows up
                    mine.append(await db.applied_index())
                    await trio.sleep(0)

            with trio.fail_after(10):
                async with trio.open_nursery() as nursery:
                    for _ in range(4):
                        nursery.start_soon(reader)
                    await trio.sleep(0)
                    assert await db.install_snapshot(tmp_path / "s.db") == 12
            # Every read saw either the old or the new database, never an error, and never went back.
            for mine in seen:
                assert mine == sorted(mine) and set(mine) <= {0, 12}


@pytest.mark.trio
async def test_cancelled_apply_still_reports_its_commit(tmp_path: Path) -> None:
    """apply is shielded: a cancelled caller cannot lose track of a committed batch."""
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            with trio.CancelScope() as scope:
                scope.cancel()
                results = await db.apply(log_entries(2))
            assert results[0].ok and await db.applied_index() == 4


@pytest.mark.trio
async def test_closed_database_refuses_calls(tmp_path: Path) -> None:
    async with trio_asyncio.open_loop():
        db = await Database.open(tmp_path / "n.db")
        await db.close()
        await db.close()  # idempotent
        with pytest.raises(DatabaseClosedError):
            await db.read(queries.members)
        with pytest.raises(DatabaseClosedError):
            await db.apply(log_entries(1))
        with pytest.raises(DatabaseClosedError):
            await db.snapshot(tmp_path / "s.db")
    assert sorted(os.listdir(tmp_path)) == ["n.db"]  # the last close removed the WAL sidecars


@pytest.mark.trio
async def test_a_snapshot_taken_while_batches_apply_is_the_state_at_its_index(tmp_path: Path) -> None:
    # The copy runs on a connection of its own, so applies go on meanwhile; whatever index the copy holds,
    # its contents must be exactly the state at that index (users 1..index, one per entry).
    async with trio_asyncio.open_loop():
        db = await Database.open(tmp_path / "node.db")
        try:
            def one_user(i: int) -> tuple[int, int, bytes]:
                c = RegisterUser(request_id=f"u{i}", client_id="c", ts_ms=T0 + i, username=f"user{i}",
                                 password_hash="h", role="CUSTOMER")
                return i, KIND_NORMAL, encode_command(c)

            await db.apply([one_user(i) for i in range(1, 3001)])
            index = 3000
            snaps: list[tuple[int, Path]] = []
            applied_during = 0

            async def applier() -> None:
                nonlocal index, applied_during
                while len(snaps) < 3:
                    index += 1
                    await db.apply([one_user(index)])
                    applied_during += 1

            overlapped = 0  # batches that finished while a copy was in progress

            async def snapshotter() -> None:
                nonlocal overlapped
                for k in range(3):
                    path = tmp_path / f"snap{k}.db"
                    before = index
                    snaps.append((await db.snapshot(path), path))
                    overlapped += index - before

            async with trio.open_nursery() as n:
                n.start_soon(applier)
                n.start_soon(snapshotter)
            assert applied_during > 0
            # Waiting for the copies, at most the one batch in flight as each copy began would finish during it.
            assert overlapped > len(snaps), "applies waited for the copies"
            for got, path in snaps:
                copy = sqlite3.connect(path)
                try:
                    users = copy.execute("SELECT COUNT(*), MAX(id) FROM users").fetchone()
                    assert users == (got, got)
                    assert copy.execute("PRAGMA quick_check").fetchone()[0] == "ok"
                finally:
                    copy.close()
            # A snapshot install waits for a copy in progress, and then works as usual.
            other = await Database.open(tmp_path / "other.db")
            try:
                assert await other.install_snapshot(snaps[-1][1]) == snaps[-1][0]
            finally:
                await other.close()
        finally:
            await db.close()


# ------------------------------------------------------------------ where the work runs: inline or a thread


def _spy_applies(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Record the thread each applied batch runs on."""
    threads: list[int] = []
    real = db_module.apply_batch

    def spy(conn: sqlite3.Connection, entries: list[tuple[int, int, bytes]]) -> list[Result | None]:
        threads.append(threading.get_ident())
        return real(conn, entries)

    monkeypatch.setattr(db_module, "apply_batch", spy)
    return threads


@pytest.mark.trio
async def test_short_batches_apply_on_the_event_loop_and_long_ones_on_the_writer_thread(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No thread hop for a batch expected to be short.  A freshly opened database (cold caches) applies its
    first batches on the writer's thread, measuring them; a batch expected to take longer than INLINE_APPLY_S
    (a replay, a slow disk, a spike lately) goes there too, so the event loop goes on meanwhile."""
    threads = _spy_applies(monkeypatch)
    loop_thread = threading.get_ident()
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            index = 1
            for _ in range(db_module.APPLY_PROBATION):
                await db.apply(log_entries(1, start=index))
                index += 3
            assert loop_thread not in threads and len(threads) == db_module.APPLY_PROBATION
            await db.apply(log_entries(1, start=index))
            index += 3
            assert threads[-1] == loop_thread
            # A batch bigger than INLINE_APPLY_S at the average cost per entry takes the thread.
            big = int(db_module.INLINE_APPLY_S / db.costs.apply.per_entry()) + 1
            await db.apply(log_entries(big, start=index))
            index += big + 2
            assert threads[-1] != loop_thread
            # One slow batch (a checkpoint, say) sends the next ones to the thread; its peak decays as fast
            # batches are measured there, and they come back.
            db.costs.apply.learn(db_module.INLINE_APPLY_S * 1.5, 1)
            await db.apply(log_entries(1, start=index))
            index += 3
            assert threads[-1] != loop_thread
            for _ in range(80):
                await db.apply(log_entries(1, start=index))
                index += 3
            assert threads[-1] == loop_thread
            assert await db.applied_index() == index - 1

            # An installed snapshot is another database: on probation again.
            await db.snapshot(tmp_path / "s.db")
            await db.install_snapshot(tmp_path / "s.db")
            await db.apply(log_entries(1, start=index))
            assert threads[-1] != loop_thread


def test_a_batch_cost_spreads_a_spike_over_the_entries_and_remembers_it_for_a_while() -> None:
    cost = db_module._ApplyCost(0.016, 64)
    for _ in range(30):
        cost.learn(0.016, 64)  # 0.25 ms per entry
    cost.learn(0.030, 1)  # a checkpoint on a one-entry batch
    assert cost.per_entry() < 0.0004  # not 30 ms per entry
    assert cost.expected(1) == pytest.approx(0.030)  # but the next batches expect the spike, for a while
    for _ in range(40):
        cost.learn(0.0003, 1)
    assert cost.expected(1) < 0.001 and cost.expected(64) > 0.01


def test_a_cost_remembers_a_spike_for_a_while() -> None:
    cost = db_module._Cost(0.001)
    for _ in range(10):
        cost.learn(0.001)
    assert cost.expected() == pytest.approx(0.001)
    cost.learn(0.1)  # one slow piece of work
    assert cost.expected() == pytest.approx(0.1)
    for _ in range(5):
        cost.learn(0.001)
    assert cost.expected() == pytest.approx(0.1 * db_module.PEAK_DECAY ** 5)
    for _ in range(60):
        cost.learn(0.001)
    assert cost.expected() < 0.0015


@pytest.mark.trio
async def test_a_failing_inline_apply_rolls_back_and_reports_its_error(tmp_path: Path) -> None:
    """The inline path keeps apply_batch's contract: out-of-order entries apply nothing, and raise."""
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            await db.apply(log_entries(2))
            with pytest.raises(ApplyOrderError):
                await db.apply(log_entries(1, start=9))
            assert await db.applied_index() == 4
            results = await db.apply(log_entries(1, start=5))
            assert results[0].ok and await db.applied_index() == 7


def _where(conn: sqlite3.Connection, key: str) -> tuple[int, int]:
    """A read function: the thread it ran on, and a row count (it reads the database)."""
    return threading.get_ident(), conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]


def _other(conn: sqlite3.Connection, key: str) -> tuple[int, int]:
    return threading.get_ident(), conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]


@pytest.mark.trio
async def test_known_short_reads_run_on_the_event_loop_and_others_on_the_reader_thread(tmp_path: Path) -> None:
    loop_thread = threading.get_ident()
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            aio_read = trio_asyncio.aio_as_trio(db.aio_read)
            await db.apply(log_entries(3))
            # Not measured yet: the reader's thread, once; then known to be short: inline.
            first = await aio_read(_where, "a")
            second = await aio_read(_where, "b")
            assert first == (first[0], 3) and first[0] != loop_thread
            assert second == (loop_thread, 3)
            # A read function known to be slow keeps the thread.
            await aio_read(_other, "a")
            db.costs.read(_other, db_module.INLINE_READ_S * 2)
            assert (await aio_read(_other, "b"))[0] != loop_thread
            # Reads made together: the short ones inline, the slow one on the thread, each its own answer.
            async with trio.open_nursery() as n:
                got: dict[str, tuple[int, int]] = {}

                async def one(fn: Any, key: str) -> None:
                    got[key] = await aio_read(fn, key)

                for k in "xyz":
                    n.start_soon(one, _where, k)
                n.start_soon(one, _other, "slow")
            assert {k: v[0] == loop_thread for k, v in got.items()} == {"x": True, "y": True, "z": True,
                                                                        "slow": False}


@pytest.mark.trio
async def test_no_inline_read_while_a_read_is_on_the_reader_thread(tmp_path: Path) -> None:
    """The reader connection is never used by two threads at once: while a `read` from Trio holds it on the
    reader's thread, reads from asyncio wait for their own hop instead of running inline."""
    loop_thread = threading.get_ident()
    started, release = threading.Event(), threading.Event()

    def slow(conn: sqlite3.Connection) -> int:
        n = conn.execute("SELECT COUNT(*) FROM users").fetchone()[0]
        started.set()
        release.wait(10)
        return n

    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            aio_read = trio_asyncio.aio_as_trio(db.aio_read)
            await db.apply(log_entries(2))
            await aio_read(_where, "learn")
            assert (await aio_read(_where, "inline"))[0] == loop_thread
            async with trio.open_nursery() as n:
                slow_result: list[int] = []

                async def slow_read() -> None:
                    slow_result.append(await db.read(slow))

                n.start_soon(slow_read)
                await trio.to_thread.run_sync(started.wait, 10)
                waiting: list[tuple[int, int]] = []

                async def quick() -> None:
                    waiting.append(await aio_read(_where, "during"))

                n.start_soon(quick)
                await trio.sleep(0.05)
                assert waiting == []  # queued behind the read on the thread, not run beside it
                release.set()
            assert slow_result == [2] and waiting[0][1] == 2 and waiting[0][0] != loop_thread


@pytest.mark.trio
async def test_a_failed_hop_onto_the_reader_teaches_no_cost(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    """When the reader's thread fails the whole hop, every caller gets the error, and the read function is not
    taken to be free (which would send it inline next time, however slow it is)."""
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            aio_read = trio_asyncio.aio_as_trio(db.aio_read)

            async def broken(*_: Any) -> Any:
                raise sqlite3.OperationalError("disk I/O error")

            with monkeypatch.context() as m:  # undone before close, which needs the real one
                m.setattr(db._reader, "_execute", broken)
                with pytest.raises(sqlite3.OperationalError, match="disk I/O error"):
                    await aio_read(_where, "x")
            assert db.costs.read_cost(_where) is None
            assert (await aio_read(_where, "y"))[1] == 0  # the reader works again


def _wal_pages(path: Path) -> int:
    wal = Path(f"{path}-wal")
    return wal.stat().st_size // 4096 if wal.exists() else 0


@pytest.mark.trio
async def test_the_wal_is_copied_into_the_database_after_batches_not_inside_their_commits(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite's own checkpoint ran inside the commit of the batch that crossed its line, and that batch's
    callers waited for it; now the node asks for one once it is due, and the WAL stays about CHECKPOINT_FRAMES
    pages long.  Without those calls SQLite's checkpoint is only a distant backstop."""
    monkeypatch.setattr(db_module, "CHECKPOINT_FRAMES", 40)
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "a.db") as db:
            index, ran = 1, 0
            for _ in range(60):
                await db.apply(log_entries(4, start=index))
                index += 6
                if db.checkpoint_due():
                    held_up = await db.checkpoint()
                    assert held_up is not None and held_up >= 0
                    ran += 1
            assert ran >= 5 and not db.checkpoint_due()
            assert _wal_pages(tmp_path / "a.db") < 4 * 40
            assert await db.applied_index() == index - 1
        async with await Database.open(tmp_path / "b.db") as db:
            index = 1
            for _ in range(60):
                await db.apply(log_entries(4, start=index))
                index += 6
            assert _wal_pages(tmp_path / "b.db") > 4 * 40
            assert _wal_pages(tmp_path / "b.db") < db_module.AUTOCHECKPOINT_BACKSTOP_FRAMES


def _wal_salt(path: Path) -> bytes:
    """The WAL header's salts: SQLite changes them each time the WAL starts over from its first page."""
    with open(f"{path}-wal", "rb") as f:
        return f.read(24)[16:24]


@pytest.mark.trio
async def test_applies_go_on_while_the_wal_is_copied_and_the_wal_still_starts_over(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Most of the WAL is copied on a connection of its own while batches are applied; the writer then copies
    what was committed after that copy began, so every checkpoint is complete and the WAL starts over instead
    of growing to the backstop (a copy beside a busy writer alone never catches up with it)."""
    monkeypatch.setattr(db_module, "CHECKPOINT_FRAMES", 40)
    real_copy = db_module._copy_wal

    def overlapped_copy(path: str) -> tuple[int, int]:
        # A commit lands while the copy runs, as one always does at a million bookings (the copy takes 30 ms):
        # a read transaction keeps the copy from reaching it, and then ends.
        pin = sqlite3.connect(path, isolation_level=None)
        pin.execute("BEGIN")
        pin.execute("SELECT COUNT(*) FROM meta").fetchone()
        other = sqlite3.connect(path, isolation_level=None)
        other.execute("PRAGMA busy_timeout = 10000")
        other.execute("UPDATE meta SET value = value WHERE key = 'clock_ms'")  # changes nothing
        other.close()
        got = real_copy(path)
        pin.close()
        time.sleep(0.05)  # and batches are applied meanwhile
        return got

    monkeypatch.setattr(db_module, "_copy_wal", overlapped_copy)
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "a.db") as db:
            index, copies, applied_while_copying, restarts = 1, [], 0, 0
            copying = False

            async def copy() -> None:
                nonlocal copying
                copies.append(await db.checkpoint())
                copying = False

            async with trio.open_nursery() as nursery:
                salt = b""
                while len(copies) < 5:
                    await db.apply(log_entries(4, start=index))
                    index += 6
                    restarts += salt != (salt := _wal_salt(tmp_path / "a.db"))
                    applied_while_copying += copying
                    if not copying and db.checkpoint_due():
                        copying = True
                        nursery.start_soon(copy)
                    await trio.sleep(0.002)
            assert all(c is not None for c in copies)
            assert applied_while_copying >= 5 * 5  # about 20 batches in each copy's 50 ms
            assert restarts >= len(copies)  # its first page, then after every copy but the last (copying alone: 2-3)
            assert await db.applied_index() == index - 1


@pytest.mark.trio
async def test_a_failed_checkpoint_is_logged_and_tried_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    monkeypatch.setattr(db_module, "CHECKPOINT_FRAMES", 10)
    real = db_module._passive_checkpoint

    def failing(conn: sqlite3.Connection) -> tuple[int, int]:
        raise sqlite3.OperationalError("disk I/O error")

    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "n.db") as db:
            await db.apply(log_entries(5))
            assert db.checkpoint_due()
            monkeypatch.setattr(db_module, "_passive_checkpoint", failing)
            assert await db.checkpoint() is None
            assert "WAL checkpoint" in caplog.text and "disk I/O error" in caplog.text
            assert db.checkpoint_due()  # still due: the pages were never copied
            monkeypatch.setattr(db_module, "_passive_checkpoint", real)
            assert await db.checkpoint() is not None
            assert not db.checkpoint_due()
            assert (await db.read(queries.user_by_name, "user3")) is not None


def test_wal_growth_is_learnt_from_what_the_wal_held() -> None:
    wal = db_module._WalGrowth()
    wal.entries = 199
    assert not wal.due()
    wal.entries = 200
    assert wal.due()  # the first guess: 5 pages an entry
    wal.learn(600, 200)
    assert wal.frames_per_entry == 3.0 and not wal.due()
    wal.checkpointed(640, 640)  # complete: the WAL starts over
    assert wal.entries == 0
    wal.learn(400, 200)
    assert wal.frames_per_entry == 2.0
    wal.checkpointed(500, 350)  # incomplete (a reader on old pages): the WAL grows on from its 500 pages
    wal.learn(600, 100)
    assert wal.frames_per_entry == 1.0
    wal.learn(0, 0)  # nothing to learn from
    assert wal.frames_per_entry == 1.0


@pytest.mark.trio
async def test_checkpoints_stay_on_time_when_the_wal_starts_over_before_the_writers_part(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A copy that caught up with the writer lets the next batch start the WAL over before the writer's part of
    the checkpoint, which then sees only that batch's pages.  Learnt from those, the pages per entry collapsed
    and the next checkpoint came many times later (at a million bookings the WAL grew to SQLite's backstop,
    whose checkpoint inside a commit held a leader's event loop for 180 ms)."""
    monkeypatch.setattr(db_module, "CHECKPOINT_FRAMES", 40)
    real_copy = db_module._copy_wal

    def copy_then_wait(path: str) -> tuple[int, int]:
        got = real_copy(path)
        time.sleep(0.05)  # a batch is applied meanwhile, and starts the WAL over
        return got

    monkeypatch.setattr(db_module, "_copy_wal", copy_then_wait)
    async with trio_asyncio.open_loop():
        async with await Database.open(tmp_path / "a.db") as db:
            index, spacing = 1, []
            for _ in range(4):
                batches = 0
                while not db.checkpoint_due():
                    await db.apply(log_entries(2, start=index))
                    index, batches = index + 4, batches + 1
                spacing.append(batches)
                async with trio.open_nursery() as nursery:
                    nursery.start_soon(db.checkpoint)
                    await trio.sleep(0.02)  # the copy is done, the writer's part not yet
                    await db.apply(log_entries(2, start=index))
                    index += 4
            # About 60 pages; learnt from the writer's part, the checkpoints came after 2, 20, 140 and 940 batches
            # and the WAL grew to 6,700 pages.
            assert _wal_pages(tmp_path / "a.db") < 3 * 40, spacing
