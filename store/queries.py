"""Read functions over a `sqlite3.Connection`, for `Database.read(fn, *args)` (on the reader connection's
thread, or on the event loop's when the function is known to be quick).

Each takes the connection first and returns plain immutable values (never a cursor or a live row), because
the result may cross from the reader's thread to Trio.  `Database.read` wraps the call in a read transaction,
so a function that runs several SELECTs sees one consistent state.
"""

from __future__ import annotations

from collections.abc import Iterator

import sqlite3
from dataclasses import dataclass

from .state_machine import read_meta_int


@dataclass(frozen=True, slots=True)
class User:
    """A row of `users`.  `password_hash` is the self-describing scrypt string (see store.auth)."""

    id: int
    username: str
    password_hash: str
    role: str
    created_ms: int


@dataclass(frozen=True, slots=True)
class SessionInfo:
    """A session joined with its user.  `revoked` = logged out; expiry is the caller's check (`is_live`)."""

    user_id: int
    username: str
    role: str
    expires_at_ms: int
    revoked: bool

    def is_live(self, now_ms: int) -> bool:
        """True if the session is neither revoked nor expired at `now_ms` (the gateway's clock)."""
        return not self.revoked and now_ms < self.expires_at_ms


@dataclass(frozen=True, slots=True)
class Member:
    """An entry of the replicated address book."""

    node_id: int
    host: str
    port: int


def applied_index(conn: sqlite3.Connection) -> int:
    """The last log index whose effects are in the database."""
    return read_meta_int(conn, "applied_index")


def user_by_name(conn: sqlite3.Connection, username: str) -> User | None:
    """The user called `username` (case-insensitive), or None."""
    row = conn.execute(
        "SELECT id, username, password_hash, role, created_ms FROM users WHERE username = ?", (username,)
    ).fetchone()
    return User(*row) if row else None


def user_by_id(conn: sqlite3.Connection, user_id: int) -> User | None:
    """The user with id `user_id`, or None."""
    row = conn.execute(
        "SELECT id, username, password_hash, role, created_ms FROM users WHERE id = ?", (user_id,)
    ).fetchone()
    return User(*row) if row else None


def session(conn: sqlite3.Connection, token_sha256: str) -> SessionInfo | None:
    """The session whose token hashes to `token_sha256`, with its user's name and role; None if unknown."""
    row = conn.execute(
        "SELECT s.user_id, u.username, u.role, s.expires_at_ms, s.revoked_ms IS NOT NULL"
        " FROM sessions AS s JOIN users AS u ON u.id = s.user_id WHERE s.token_sha256 = ?",
        (token_sha256,),
    ).fetchone()
    if row is None:
        return None
    return SessionInfo(row[0], row[1], row[2], row[3], bool(row[4]))


def admin_exists(conn: sqlite3.Connection) -> bool:
    """True once any user has the ADMIN role (the leader bootstraps the first one from the environment)."""
    return conn.execute("SELECT 1 FROM users WHERE role = 'ADMIN' LIMIT 1").fetchone() is not None


def request_result(conn: sqlite3.Connection, client_id: str, request_id: str, command: str | None = None
                   ) -> bytes | None:
    """The stored first result (store.commands.encode_result bytes) of request (client_id, request_id), if
    it was applied within the dedup window -- so a proposer can answer a retry before doing side effects
    again (e.g. charging a card).

    With `command` (a type tag), a stored result of another kind of command raises RequestIdReused: the
    request id was reused, this is not a retry."""
    row = conn.execute(
        "SELECT result, command FROM client_requests WHERE client_id = ? AND request_id = ?", (client_id, request_id)
    ).fetchone()
    if row is None:
        return None
    if command is not None and row[1] != command:
        raise RequestIdReused(f"request id {request_id!r} was already used for another kind of request;"
                              " send a fresh one")
    return bytes(row[0])


class RequestIdReused(ValueError):
    """A request id that was already used (by the same client) for another kind of request."""


def members(conn: sqlite3.Connection) -> list[Member]:
    """The replicated address book, ordered by node id."""
    return [Member(*row) for row in conn.execute("SELECT node_id, host, port FROM members ORDER BY node_id")]


def _literal(value: object) -> str:
    """Rendering that keeps types apart (1 vs '1' vs b'1') and shows JSON blobs readably."""
    if value is None:
        return "NULL"
    if isinstance(value, bytes):
        return repr(value)
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)  # int, float


def canonical_lines(conn: sqlite3.Connection) -> Iterator[str]:
    """The lines of `canonical_dump`, one at a time (so a database of any size can be hashed streaming)."""
    yield f"user_version {conn.execute('PRAGMA user_version').fetchone()[0]}"
    objects = conn.execute(
        "SELECT type, name, tbl_name, sql FROM sqlite_master ORDER BY type, name"
    ).fetchall()
    for typ, name, tbl_name, sql in objects:
        yield f"schema {typ} {name} on {tbl_name}: {sql}"
    tables = [name for typ, name, _, _ in objects if typ == "table" and not name.startswith("sqlite_")]
    for table in tables:
        info = conn.execute(f'PRAGMA table_info("{table}")').fetchall()  # cid, name, type, notnull, dflt, pk
        columns = [col[1] for col in info]
        pk = [col[1] for col in sorted((c for c in info if c[5]), key=lambda c: c[5])] or columns
        quoted = ", ".join(f'"{c}"' for c in columns)
        order = ", ".join(f'"{c}"' for c in pk)
        yield f"table {table} ({', '.join(columns)})"
        for row in conn.execute(f'SELECT {quoted} FROM "{table}" ORDER BY {order}'):
            yield "  " + "|".join(_literal(v) for v in row)


def canonical_dump(conn: sqlite3.Connection) -> str:
    """A deterministic text form of the whole database, for comparing replicas.

    Lists the schema version and every schema object's SQL, then every table's rows ordered by primary key
    (by all columns for a table without one).  Two replicas with equal dumps hold the same state.
    """
    return "\n".join(canonical_lines(conn)) + "\n"
