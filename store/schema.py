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

from . import facts

# meta:             key/value of the state machine itself:
#                     applied_index  the last log index whose effects are in this database
#                     clock_ms       the replicated clock: the largest ts_ms of any applied command
# users:            COLLATE NOCASE so 'Bob' and 'bob' are the same account (usernames are ASCII, see rules.py).
# sessions:         only the SHA-256 of a token is stored; revoked_ms is NULL while the session is live.
# client_requests:  exactly-once: the first result of every (client_id, request_id), pruned after 24 h, and
#                   (migration 3) the type tag of the command that produced it.
# members:          the cluster's replicated address book.
# Migration 2 adds the booking domain (stations, trains, runs, seats, bookings, payments, refunds); its
# tables are described in the script itself.
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
    # 2: the booking domain.  See store/booking.py for the meaning of each state; the index comments say which
    # query each index serves (the hot paths: seat allocation, search, ExpireHolds, waitlist promotion).
    """
    CREATE TABLE stations (
        id         INTEGER PRIMARY KEY,
        code       TEXT NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    );

    -- depart_min: IST minute of the day at which the train leaves its origin (runs may override, see runs).
    CREATE TABLE trains (
        id         INTEGER PRIMARY KEY,
        number     INTEGER NOT NULL UNIQUE,
        name       TEXT NOT NULL,
        train_type TEXT NOT NULL,
        depart_min INTEGER NOT NULL,
        created_ms INTEGER NOT NULL
    );

    -- A route: stop seq 0..n-1, times in minutes after the origin departure, km cumulative from the origin.
    CREATE TABLE train_stops (
        train_id   INTEGER NOT NULL REFERENCES trains (id),
        seq        INTEGER NOT NULL,
        station_id INTEGER NOT NULL REFERENCES stations (id),
        arrive_min INTEGER NOT NULL,
        depart_min INTEGER NOT NULL,
        km         INTEGER NOT NULL,
        PRIMARY KEY (train_id, seq)
    ) WITHOUT ROWID;
    -- search: the trains that call at a station (a route visits a station at most once).
    CREATE UNIQUE INDEX train_stops_by_station ON train_stops (station_id, train_id);

    -- A train's default composition; berths = the comma-separated berth pattern seat n follows cyclically.
    CREATE TABLE train_coaches (
        train_id     INTEGER NOT NULL REFERENCES trains (id),
        coach_no     INTEGER NOT NULL,
        label        TEXT NOT NULL,
        travel_class TEXT NOT NULL,
        seats        INTEGER NOT NULL,
        berths       TEXT NOT NULL,
        PRIMARY KEY (train_id, coach_no)
    ) WITHOUT ROWID;

    -- A train on a date.  run_date is the IST date of the departure from the origin; depart_ms that instant.
    -- arrive_override_min replaces the last stop's arrival offset (AddTrainService gives explicit times).
    CREATE TABLE runs (
        id                  INTEGER PRIMARY KEY,
        train_id            INTEGER NOT NULL REFERENCES trains (id),
        run_date            TEXT NOT NULL,
        depart_ms           INTEGER NOT NULL,
        arrive_override_min INTEGER,
        status              TEXT NOT NULL CHECK (status IN ('SCHEDULED', 'CANCELLED')),
        created_ms          INTEGER NOT NULL,
        cancelled_ms        INTEGER,
        cancel_reason       TEXT
    );
    CREATE UNIQUE INDEX runs_by_train ON runs (train_id, run_date, depart_ms);

    -- Per run and class: seats in total, and a fixed price per seat (NULL = the distance tariff).
    CREATE TABLE run_classes (
        run_id            INTEGER NOT NULL REFERENCES runs (id),
        travel_class      TEXT NOT NULL,
        seats             INTEGER NOT NULL,
        fixed_price_paise INTEGER,
        PRIMARY KEY (run_id, travel_class)
    ) WITHOUT ROWID;

    -- A run's coaches (copied from the train when scheduled, or generated by AddTrainService).
    CREATE TABLE run_coaches (
        run_id       INTEGER NOT NULL REFERENCES runs (id),
        coach_no     INTEGER NOT NULL,
        label        TEXT NOT NULL,
        travel_class TEXT NOT NULL,
        seats        INTEGER NOT NULL,
        berths       TEXT NOT NULL,
        PRIMARY KEY (run_id, coach_no)
    ) WITHOUT ROWID;

    -- amount_paise: the fare of the passengers still on the booking; paid/refunded: money in and out.
    -- hold_expires_ms: when the unpaid hold lapses (kept for the record); pending_until_ms: the same while the
    -- booking awaits payment, NULL otherwise, so ExpireHolds's index holds only bookings it may expire.
    CREATE TABLE bookings (
        id               INTEGER PRIMARY KEY,
        pnr              TEXT NOT NULL UNIQUE,
        user_id          INTEGER NOT NULL REFERENCES users (id),
        run_id           INTEGER NOT NULL REFERENCES runs (id),
        travel_class     TEXT NOT NULL,
        from_seq         INTEGER NOT NULL,
        to_seq           INTEGER NOT NULL,
        board_ms         INTEGER NOT NULL,
        status           TEXT NOT NULL
                         CHECK (status IN ('HELD', 'CONFIRMED', 'WAITLISTED', 'CANCELLED', 'EXPIRED', 'REFUNDED')),
        amount_paise     INTEGER NOT NULL,
        paid_paise       INTEGER NOT NULL,
        refunded_paise   INTEGER NOT NULL,
        hold_expires_ms  INTEGER NOT NULL,
        pending_until_ms INTEGER,
        payment_ref      TEXT,
        created_ms       INTEGER NOT NULL,
        updated_ms       INTEGER NOT NULL,
        events           INTEGER NOT NULL,
        CHECK (from_seq < to_seq)
    );
    CREATE INDEX bookings_by_user ON bookings (user_id, id);
    -- Run cancellation and the run report (not keyed on status: a status change then leaves this index alone).
    CREATE INDEX bookings_by_run ON bookings (run_id);
    -- ExpireHolds: the unpaid bookings in expiry order.
    CREATE INDEX bookings_pending ON bookings (pending_until_ms) WHERE pending_until_ms IS NOT NULL;
    -- Waitlist promotion (oldest first per run and class) and the refund of waitlists left at departure.
    CREATE INDEX bookings_waitlist ON bookings (run_id, travel_class, id) WHERE status = 'WAITLISTED';
    CREATE INDEX bookings_waitlist_by_departure ON bookings (board_ms) WHERE status = 'WAITLISTED';

    -- status ACTIVE or CANCELLED; coach_no/seat_no: the seat while it is allocated (kept after for history).
    CREATE TABLE passengers (
        booking_id INTEGER NOT NULL REFERENCES bookings (id),
        pax_no     INTEGER NOT NULL,
        name       TEXT NOT NULL,
        age        INTEGER NOT NULL,
        berth_pref TEXT NOT NULL,
        fare_paise INTEGER NOT NULL,
        status     TEXT NOT NULL CHECK (status IN ('ACTIVE', 'CANCELLED')),
        coach_no   INTEGER,
        seat_no    INTEGER,
        PRIMARY KEY (booking_id, pax_no)
    ) WITHOUT ROWID;

    -- Seat inventory per segment: a row = seat (coach_no, seat_no) of the run is taken from stop from_seq to
    -- stop to_seq.  Two rows of one seat never overlap (from < other.to AND other.from < to); the apply
    -- guarantees it, the primary key catches equal starts.  Rows exist only for HELD and CONFIRMED seats.
    CREATE TABLE allocations (
        run_id       INTEGER NOT NULL,
        coach_no     INTEGER NOT NULL,
        seat_no      INTEGER NOT NULL,
        from_seq     INTEGER NOT NULL,
        to_seq       INTEGER NOT NULL,
        travel_class TEXT NOT NULL,
        booking_id   INTEGER NOT NULL,
        PRIMARY KEY (run_id, coach_no, seat_no, from_seq)
    ) WITHOUT ROWID;
    -- "Which seats of class C on run R are taken on [f, t)": a range scan on from_seq < t, filtered on
    -- to_seq > f, covering (the primary key's coach_no, seat_no ride along in a WITHOUT ROWID index).
    CREATE INDEX allocations_by_class ON allocations (run_id, travel_class, from_seq, to_seq);

    -- History: one row per state change of a booking, seq = 1, 2, ...
    CREATE TABLE booking_events (
        booking_id INTEGER NOT NULL REFERENCES bookings (id),
        seq        INTEGER NOT NULL,
        ts_ms      INTEGER NOT NULL,
        status     TEXT NOT NULL,
        detail     TEXT NOT NULL,
        PRIMARY KEY (booking_id, seq)
    ) WITHOUT ROWID;

    -- Accepted charges; a provider reference pays for one booking only.
    CREATE TABLE payments (
        id           INTEGER PRIMARY KEY,
        booking_id   INTEGER NOT NULL REFERENCES bookings (id),
        ts_ms        INTEGER NOT NULL,
        amount_paise INTEGER NOT NULL,
        provider_ref TEXT NOT NULL UNIQUE
    );

    -- Money owed back.  settled_ms/settlement_ref are set by SettleRefunds once the provider paid it out
    -- (a zero refund is settled at once).
    CREATE TABLE refunds (
        id             INTEGER PRIMARY KEY,
        booking_id     INTEGER NOT NULL REFERENCES bookings (id),
        ts_ms          INTEGER NOT NULL,
        amount_paise   INTEGER NOT NULL,
        percent        INTEGER NOT NULL,
        passengers     TEXT NOT NULL,
        reason         TEXT NOT NULL,
        payment_ref    TEXT,
        settled_ms     INTEGER,
        settlement_ref TEXT
    );
    CREATE INDEX refunds_by_booking ON refunds (booking_id);
    CREATE INDEX refunds_unsettled ON refunds (id) WHERE settled_ms IS NULL;
    """,
    # 3: the kind of command (store.commands type tag) each remembered request was, so a request id reused
    # for another kind of request is refused instead of being answered with the other request's result.
    """
    ALTER TABLE client_requests ADD COLUMN command TEXT NOT NULL DEFAULT '';
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
    Each connection keeps up to 32 MiB of pages (SQLite's default is 2 MiB): the benchmark's whole catalogue
    and recent bookings stay in memory, which took 5-7% off the CPU of a booking and a read.
    """
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA synchronous = NORMAL")
    conn.execute("PRAGMA busy_timeout = 10000")
    conn.execute("PRAGMA cache_size = -32768")
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
    conn = sqlite3.connect(path, isolation_level=None, factory=facts.Connection)
    try:
        configure(conn, reader=reader)
        if not reader:
            migrate(conn)
    except BaseException:
        conn.close()
        raise
    return conn
