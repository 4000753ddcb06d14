"""SQLite schema and migrations, the deterministic apply of booking commands, read queries, and snapshot
export/import.  May import `proto`.

Modules:

* `commands`      -- typed commands (frozen dataclasses), `Result`, and their byte encodings (log payloads).
* `rules`         -- pure input rules (username, password, role, token hash, host/port) shared by both sides.
* `schema`        -- migrations by `PRAGMA user_version`, connection pragmas (WAL, synchronous=NORMAL).
* `state_machine` -- `apply_batch(conn, [(index, kind, data), ...])`: the deterministic, exactly-once apply.
  Pure: no clock, no randomness, nothing outside the entries and the database.
* `queries`       -- read functions for `Database.read`, and `canonical_dump` for comparing replicas.
* `db`            -- `Database`: the async (Trio, via trio-asyncio over aiosqlite) writer/reader handle,
  with snapshot export and install.
* `auth`          -- proposer-side helpers (password hashing, session tokens): may use clocks and randomness
  because they run before a command is proposed, never inside the apply.
"""
