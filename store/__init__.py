"""SQLite schema and migrations, the deterministic apply of booking commands, read queries, and snapshot
export/import.  May import `proto`.

Modules:

* `commands`      -- typed commands (frozen dataclasses, nested records), `Result`, and their byte encodings.
* `rules`         -- pure input rules shared by both sides; `rules.precheck(cmd)` is what the gateway runs
  before proposing a booking command (and what the apply runs first).
* `schema`        -- migrations by `PRAGMA user_version`, connection pragmas (WAL, synchronous=NORMAL).
* `state_machine` -- `apply_batch(conn, [(index, kind, data), ...])`: the deterministic, exactly-once apply.
  Pure: no clock, no randomness, nothing outside the entries and the database.
* `booking`       -- the booking domain's command handlers (stations, trains, runs, seats, holds, payment,
  cancellation, waitlist, expiry) and the deterministic seat allocator.
* `civil`         -- dates and IST wall-clock times in integers (the apply may not use `datetime`).
* `tariff`        -- fares and the refund rule, in integer paise (quoted in the README).
* `failures`      -- `CommandFailed`, shared by the handlers.
* `queries`       -- read functions for `Database.read` (users, sessions, members), and `canonical_dump`.
* `booking_queries` -- reads of the booking domain: search, seat map, bookings, PNR status, reports, and the
  proposer's helpers (payment_quote, refund_quote, next_hold_expiry, pending_refunds).
* `compat`        -- the original train_booking.Ticketing API mapped onto the commands and queries.
* `db`            -- `Database`: the async (Trio, via trio-asyncio over aiosqlite) writer/reader handle,
  with snapshot export and install.  `memdb` -- its in-memory twin for actor tests.
* `auth`          -- proposer-side helpers (password hashing, session tokens): may use clocks and randomness
  because they run before a command is proposed, never inside the apply.
* `payments`      -- proposer-side: the payment-provider interface, the simulated provider, new PNRs.
* `demo`          -- demo and benchmark data as lists of commands.
* `apply_bench`   -- `python -m store.apply_bench`: apply and search costs on the benchmark dataset.
"""
