"""The deterministic apply: committed log entries in, database changes and per-command results out.

`apply_batch` is pure synchronous code over a `sqlite3.Connection`.  It reads nothing but the entries and the
database -- no clock, no random source, no environment -- so applying the same log on any replica, in any
batching, any number of times, gives byte-identical databases (tests/test_store_state_machine.py checks this,
including with hypothesis).  Everything that would differ between replicas (time, random tokens, password
hashes) is stamped into the command by the proposing node.

Per batch: one transaction, which also records `applied_index` -- so after a crash the database is exactly at
some applied_index and the node replays the Raft log after it.  Per command: a SAVEPOINT, so a command that
fails part-way rolls back only its own changes and the rest of the batch still applies.

Exactly-once: the first result of every (client_id, request_id) is stored in `client_requests`, with the
command's type; a retry of the same request returns that result without applying again (a different kind of
command under the same ids is not a retry: INVALID_ARGUMENT, nothing applied or remembered).  Rows older than 24 h of replicated time are
pruned at every 1000th log index, so the table stays bounded (and the pruning itself is deterministic).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Iterable

from . import booking, facts, rules
from .commands import (
    ALREADY_EXISTS,
    INTERNAL,
    INVALID_ARGUMENT,
    NOT_FOUND,
    CommandBase,
    CommandDecodeError,
    CreateSession,
    RegisterUser,
    RemoveMember,
    Result,
    RevokeSession,
    SetMember,
    decode_command,
    decode_result,
    encode_result,
)
from .failures import CommandFailed, check

__all__ = ["apply_batch", "read_meta_int", "CommandFailed", "ApplyOrderError", "KIND_NORMAL", "KIND_CONF"]

KIND_NORMAL = 0  # raft.types.EntryType.NORMAL: a command (empty data = a leader's no-op)
KIND_CONF = 1  # raft.types.EntryType.CONF: a Raft configuration entry; the state machine only counts it

# How long a request's first result is kept for retries, in replicated time (the largest applied ts_ms).
DEDUP_WINDOW_MS = 24 * 60 * 60 * 1000
# Expired or revoked sessions are kept this long after they ended (lookups of a pruned token simply find
# nothing, which the gateway treats exactly like an expired session).
SESSION_RETENTION_MS = 24 * 60 * 60 * 1000
# Prune at every log index divisible by this.  Keyed on the index (not on the batch) so every replica prunes
# at the same points whatever its batching.
PRUNE_EVERY = 1000

Entry = tuple[int, int, bytes]  # (log index, entry kind, data)


class ApplyOrderError(ValueError):
    """The batch skips a log index: the caller lost an entry.  Nothing of the batch is applied."""


def _is_environmental(e: BaseException) -> bool:
    """True for errors that come from this machine (I/O, locking, disk full, corruption, memory).

    Those are not properties of the command, so turning them into a result would let replicas diverge (one
    node fails the command, the others apply it).  They abort the whole batch instead; the node retries or
    crashes and replays the log.  Constraint, data and programming errors are deterministic (the same code
    on the same data fails the same way everywhere) and become an INTERNAL result.
    """
    if isinstance(e, (sqlite3.IntegrityError, sqlite3.DataError, sqlite3.ProgrammingError, sqlite3.InterfaceError)):
        return False
    return isinstance(e, (sqlite3.DatabaseError, MemoryError, OSError))


# ------------------------------------------------------------------------------------------------- meta


def read_meta_int(conn: sqlite3.Connection, key: str) -> int:
    """An integer from the meta table (applied_index, clock_ms)."""
    row = conn.execute("SELECT value FROM meta WHERE key = ?", (key,)).fetchone()
    if row is None:
        raise RuntimeError(f"meta row {key!r} is missing: the database was not migrated")
    return int(row[0])


def _write_meta(conn: sqlite3.Connection, key: str, value: int) -> None:
    conn.execute("UPDATE meta SET value = ? WHERE key = ?", (value, key))


# ------------------------------------------------------------------------------------------------- apply


def apply_batch(conn: sqlite3.Connection, batch: Iterable[Entry]) -> list[Result | None]:
    """Apply committed log entries in one transaction; return one result per entry, in order.

    Each entry is (log index, kind, data), kind 0 = command, 1 = Raft configuration entry.  The result is
    None for entries that only advance the index (configuration entries, empty no-op data) and for entries
    at or below the stored applied_index (already applied: replay after a restart is idempotent).  Indexes
    above it must be consecutive, else ApplyOrderError and nothing is applied.

    `conn` must not be inside a transaction.  Errors from the environment (I/O, locking, corruption) roll
    back the whole batch and propagate; a failing command only rolls back its own savepoint.
    """
    entries = list(batch)
    if not entries:
        return []
    if conn.in_transaction:
        raise RuntimeError("apply_batch() needs a connection outside any transaction")
    # IMMEDIATE takes the write lock now, so the applied_index we read cannot change under us.
    conn.execute("BEGIN IMMEDIATE")
    try:
        applied = start_applied = read_meta_int(conn, "applied_index")
        clock = start_clock = read_meta_int(conn, "clock_ms")
        results: list[Result | None] = []
        for index, kind, data in entries:
            if index <= applied:
                results.append(None)
                continue
            if index != applied + 1:
                raise ApplyOrderError(f"log index {index} follows applied index {applied}: entries are missing")
            if kind == KIND_NORMAL:
                if data:
                    result, clock = _apply_command(conn, index, bytes(data), clock)
                    results.append(result)
                else:
                    results.append(None)  # a new leader's no-op
            elif kind == KIND_CONF:
                results.append(None)  # membership lives in the Raft core; the address book is SetMember's
            else:
                raise ValueError(f"log index {index}: unknown entry kind {kind!r}")
            applied = index
            if index % PRUNE_EVERY == 0:
                _prune(conn, clock)
        if applied != start_applied:
            _write_meta(conn, "applied_index", applied)
        if clock != start_clock:
            _write_meta(conn, "clock_ms", clock)
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        facts.forget(conn)  # it may have read rows this batch wrote
        raise
    return results


def _apply_command(conn: sqlite3.Connection, index: int, data: bytes, clock: int) -> tuple[Result, int]:
    """Apply one command inside the batch transaction; return its result and the advanced replicated clock."""
    try:
        cmd = decode_command(data)
    except CommandDecodeError as e:
        # Undecodable bytes carry no (client_id, request_id), so there is nothing to remember.
        return Result.error(INVALID_ARGUMENT, str(e)), clock
    clock = max(clock, cmd.ts_ms)

    if cmd.request_id:
        row = conn.execute(
            "SELECT result, command FROM client_requests WHERE client_id = ? AND request_id = ?",
            (cmd.client_id, cmd.request_id),
        ).fetchone()
        if row is not None:
            if row[1] != cmd.TYPE:
                # Not a retry: the client reused a request id for another kind of request.  Nothing applied,
                # nothing remembered (the first request keeps its result).
                return Result.error(INVALID_ARGUMENT, f"request id {cmd.request_id!r} was already used for another"
                                                      " kind of request; send a fresh one"), clock
            return decode_result(row[0]), clock  # a retry: the first result, nothing re-applied

    handler = _HANDLERS[type(cmd)]
    # An environmental error anywhere below propagates; apply_batch's ROLLBACK then discards this savepoint
    # together with the rest of the batch.
    conn.execute("SAVEPOINT command")
    remember = True
    try:
        if cmd.ts_ms < 0:
            raise CommandFailed(INVALID_ARGUMENT, "ts_ms must not be negative")
        result = handler(conn, cmd)
    except CommandFailed as e:
        conn.execute("ROLLBACK TO command")
        result = Result.error(e.code, e.message, e.data)
    except Exception as e:
        if _is_environmental(e):
            raise
        conn.execute("ROLLBACK TO command")
        result = Result.error(INTERNAL, f"internal error applying {type(cmd).__name__}: {type(e).__name__}: {e}")
        # Not remembered: the command changed nothing, so a retry (perhaps after a fix) may run it again.
        remember = False
    # An empty request_id opts out of exactly-once (internal commands whose repetition is harmless).
    # Failures are remembered too: a retry gets the first answer, not a different one.
    if remember and cmd.request_id:
        conn.execute(
            "INSERT INTO client_requests (client_id, request_id, applied_index, ts_ms, result, command)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            (cmd.client_id, cmd.request_id, index, cmd.ts_ms, encode_result(result), cmd.TYPE),
        )
    conn.execute("RELEASE command")
    return result, clock


def _prune(conn: sqlite3.Connection, clock: int) -> None:
    """Forget old request results and long-dead sessions (deterministic: depends only on `clock`)."""
    conn.execute("DELETE FROM client_requests WHERE ts_ms < ?", (clock - DEDUP_WINDOW_MS,))
    cutoff = clock - SESSION_RETENTION_MS
    conn.execute("DELETE FROM sessions WHERE expires_at_ms < ? OR revoked_ms < ?", (cutoff, cutoff))


# ---------------------------------------------------------------------------------------------- handlers


def _check(rule: Callable[[object], object], value: object) -> None:
    """Run a rules.validate_* function, turning its ValueError into an INVALID_ARGUMENT failure."""
    check(rule, value)


def _register_user(conn: sqlite3.Connection, cmd: RegisterUser) -> Result:
    _check(rules.validate_username, cmd.username)
    _check(rules.validate_role, cmd.role)
    if not cmd.password_hash or len(cmd.password_hash) > rules.PASSWORD_HASH_MAX:
        raise CommandFailed(INVALID_ARGUMENT, "password_hash is missing or too long")
    # users.username is COLLATE NOCASE, so this finds 'Bob' when registering 'bob'.
    if conn.execute("SELECT 1 FROM users WHERE username = ?", (cmd.username,)).fetchone():
        raise CommandFailed(ALREADY_EXISTS, f"username {cmd.username!r} is already taken")
    # Explicit id rather than SQLite's rowid choice, so the rule is visible: ids are dense and never reused
    # while the highest exists.
    user_id = conn.execute("SELECT COALESCE(MAX(id), 0) + 1 FROM users").fetchone()[0]
    conn.execute(
        "INSERT INTO users (id, username, password_hash, role, created_ms) VALUES (?, ?, ?, ?, ?)",
        (user_id, cmd.username, cmd.password_hash, cmd.role, cmd.ts_ms),
    )
    return Result.success({"user_id": user_id}, f"registered user {cmd.username!r}")


def _create_session(conn: sqlite3.Connection, cmd: CreateSession) -> Result:
    _check(rules.validate_token_sha256, cmd.token_sha256)
    user = conn.execute("SELECT username, role FROM users WHERE id = ?", (cmd.user_id,)).fetchone()
    if user is None:
        raise CommandFailed(NOT_FOUND, f"user {cmd.user_id} does not exist")
    if cmd.expires_at_ms <= cmd.ts_ms:
        raise CommandFailed(INVALID_ARGUMENT, "expires_at_ms must be later than ts_ms")
    if conn.execute("SELECT 1 FROM sessions WHERE token_sha256 = ?", (cmd.token_sha256,)).fetchone():
        raise CommandFailed(ALREADY_EXISTS, "a session with this token already exists")
    conn.execute(
        "INSERT INTO sessions (token_sha256, user_id, created_ms, expires_at_ms, revoked_ms)"
        " VALUES (?, ?, ?, ?, NULL)",
        (cmd.token_sha256, cmd.user_id, cmd.ts_ms, cmd.expires_at_ms),
    )
    return Result.success(
        {"user_id": cmd.user_id, "username": user[0], "role": user[1], "expires_at_ms": cmd.expires_at_ms},
        f"logged in as {user[0]!r}",
    )


def _revoke_session(conn: sqlite3.Connection, cmd: RevokeSession) -> Result:
    _check(rules.validate_token_sha256, cmd.token_sha256)
    row = conn.execute(
        "SELECT user_id FROM sessions WHERE token_sha256 = ? AND revoked_ms IS NULL", (cmd.token_sha256,)
    ).fetchone()
    if row is None:
        raise CommandFailed(NOT_FOUND, "no such session (unknown token, or already logged out)")
    conn.execute("UPDATE sessions SET revoked_ms = ? WHERE token_sha256 = ?", (cmd.ts_ms, cmd.token_sha256))
    return Result.success({"user_id": row[0]}, "logged out")


def _set_member(conn: sqlite3.Connection, cmd: SetMember) -> Result:
    if cmd.node_id < 1:
        raise CommandFailed(INVALID_ARGUMENT, f"node_id must be a positive integer (got {cmd.node_id})")
    _check(rules.validate_host, cmd.host)
    _check(rules.validate_port, cmd.port)
    conn.execute(
        "INSERT INTO members (node_id, host, port) VALUES (?, ?, ?)"
        " ON CONFLICT (node_id) DO UPDATE SET host = excluded.host, port = excluded.port",
        (cmd.node_id, cmd.host, cmd.port),
    )
    return Result.success({"node_id": cmd.node_id}, f"node {cmd.node_id} is at {cmd.host}:{cmd.port}")


def _remove_member(conn: sqlite3.Connection, cmd: RemoveMember) -> Result:
    if conn.execute("DELETE FROM members WHERE node_id = ?", (cmd.node_id,)).rowcount == 0:
        raise CommandFailed(NOT_FOUND, f"node {cmd.node_id} is not in the address book")
    return Result.success({"node_id": cmd.node_id}, f"node {cmd.node_id} removed from the address book")


_HANDLERS: dict[type[CommandBase], Callable[[sqlite3.Connection, CommandBase], Result]] = {
    RegisterUser: _register_user,  # type: ignore[dict-item]
    CreateSession: _create_session,  # type: ignore[dict-item]
    RevokeSession: _revoke_session,  # type: ignore[dict-item]
    SetMember: _set_member,  # type: ignore[dict-item]
    RemoveMember: _remove_member,  # type: ignore[dict-item]
    **booking.HANDLERS,
}
