"""SQLite schema, migrations and connection settings.

Migrations are an ordered list of SQL scripts; `PRAGMA user_version` records how many have run.  `migrate`
runs the missing ones, each in its own transaction together with its user_version bump, so it is idempotent
and a crash mid-migration leaves the previous version intact.  Scripts are append-only: never edit one that
has shipped (a snapshot taken by an older node is migrated by the same list when it is installed).

Migrations must be deterministic (no `random()`, no `CURRENT_TIMESTAMP`): two replicas that migrate the same
state must end up byte-identical.
"""

from __future__ import annotations

import sqlite3
from pathlib import PurePath

# meta:             key/value of the state machine itself:
#                     applied_index  the last log index whose effects are in this database
#                     clock_ms       the replicated clock: the largest ts_ms of any applied command
# users:            COLLATE NOCASE so 'Bob' and 'bob' are the same account (usernames are ASCII, see rules.py).
# sessions:         only the SHA-256 of a token is stored; revoked_ms is NULL while the session is live.
# client_requests:  exactly-once: the first result of every (client_id, request_id), pruned after 24 h.
# members:          the cluster's replicated address book.
MIGRATIONS: list[str] = [
    """
    CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value
    );
    INSERT INTO meta (key, value) VALUES ('applied_index', 0), ('clock_ms', 0);

    CREATE TABLE users (
        id            INTEGER PRIMARY KEY,
        username      TEXT NOT NULL UNIQUE COLLATE NOCASE,
        password_hash TEXT NOT NULL,
        role          TEXT NOT NULL CHECK (role IN ('CUSTOMER', 'ADMIN')),
        created_ms    INTEGER NOT NULL
    );

    CREATE TABLE sessions (
        token_sha256  TEXT PRIMARY KEY,
        user_id       INTEGER NOT NULL REFERENCES users (id),
        created_ms    INTEGER NOT NULL,
        expires_at_ms INTEGER NOT NULL,
        revoked_ms    INTEGER
    );
    CREATE INDEX sessions_by_expiry ON sessions (expires_at_ms);

    CREATE TABLE client_requests (
        client_id     TEXT NOT NULL,
        request_id    TEXT NOT NULL,
        applied_index INTEGER NOT NULL,
        ts_ms         INTEGER NOT NULL,
        result        BLOB NOT NULL,
        PRIMARY KEY (client_id, request_id)
    );
    CREATE INDEX client_requests_by_ts ON client_requests (ts_ms);

    CREATE TABLE members (
        node_id INTEGER PRIMARY KEY,
        host    TEXT NOT NULL,
        port    INTEGER NOT NULL
    );
    """,
]

SCHEMA_VERSION = len(MIGRATIONS)


class SchemaTooNewError(RuntimeError):
    """The database was written by a newer version of railraft than this one."""


def configure(conn: sqlite3.Connection, *, reader: bool = False) -> None:
    """Set the per-connection pragmas every railraft connection uses.

    WAL lets the reader connection see committed state while the writer applies the next batch.
    synchronous=NORMAL does not fsync on every commit, so a power loss may lose the last few committed
    batches -- that is safe because the Raft log, not SQLite, is the durability source: the log writer fsyncs
    entries before they count, and on restart the log after the database's applied_index is replayed.
    The reader is query_only, so a read function can never change replicated state by accident.
    """
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    if reader:
        conn.execute("PRAGMA query_only = ON")


def migrate(conn: sqlite3.Connection) -> int:
    """Run the migrations this database has not had yet; return the resulting schema version.

    `conn` must not be inside a transaction.  Each script runs in a transaction together with its
    `PRAGMA user_version` bump (user_version is part of the database header, so it commits atomically).
    """
    if conn.in_transaction:
        raise RuntimeError("migrate() needs a connection outside any transaction")
    version = conn.execute("PRAGMA user_version").fetchone()[0]
    if version > SCHEMA_VERSION:
        raise SchemaTooNewError(
            f"database schema version {version} is newer than this railraft's {SCHEMA_VERSION}"
        )
    for number in range(version + 1, SCHEMA_VERSION + 1):
        script = MIGRATIONS[number - 1]
        try:
            # executescript runs the statements as given; BEGIN/COMMIT are in the script so the DDL and the
            # version bump are one transaction.
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version = {number};\nCOMMIT;")
        except BaseException:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise
    return SCHEMA_VERSION


def connect(path: str | PurePath, *, reader: bool = False) -> sqlite3.Connection:
    """A plain (synchronous) configured connection; the writer form also runs migrations.

    `isolation_level=None` turns off the sqlite3 module's implicit transactions: the state machine issues
    BEGIN / SAVEPOINT / COMMIT itself.  Used by tests and tools; the node uses store.db.Database.
    """
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        configure(conn, reader=reader)
        if not reader:
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn
