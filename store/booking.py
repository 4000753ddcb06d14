"""The booking domain's deterministic apply: stations, trains, runs, seats, holds, payment, cancellation.

Handlers for the booking commands of store.commands, registered in store.state_machine (which wraps each in a
savepoint, and remembers its result for exactly-once retries).  Like the rest of the apply they read nothing
but the command and the database: the time is `cmd.ts_ms`, new PNRs and payment outcomes come in the command.

Authentication
    Customer and admin commands carry `token_sha256`; the session must exist, not be revoked and not be
    expired at `cmd.ts_ms` (else UNAUTHENTICATED).  Admin-only commands need role ADMIN (else
    PERMISSION_DENIED).  A booking that is not the caller's is NOT_FOUND, exactly like one that does not
    exist, so nobody learns which PNRs exist.  Admins may cancel (and read) any booking; paying is owner-only.

Booking states
    HELD        seats allocated, unpaid, until hold_expires_ms (default 10 minutes after the request).
    CONFIRMED   paid; seats allocated (also a waitlisted booking once promoted).
    WAITLISTED  no seats yet.  Paid up front with ConfirmPayment like a hold (unpaid, it expires like one).
                When seats are released on its run and class (cancellation, expiry), the paid waitlisted
                bookings are tried oldest first and every one whose party now fits is CONFIRMED with seats;
                its history says "promoted from the waitlist".
    CANCELLED   cancelled by the customer (or an admin); a refund record by the rule in store.tariff.
    EXPIRED     an unpaid hold (or unpaid waitlist entry) that lapsed; its seats went back on sale.
    REFUNDED    refunded in full by the railway: the run was cancelled, or a paid waitlisted booking was
                never promoted before the train left the boarding station.
    Cancelling some passengers keeps the booking's state; those passengers become CANCELLED, their seats are
    released and their share refunded.

Seat inventory is per segment: an allocation holds one seat of a run from stop `from_seq` to stop `to_seq`.
Two allocations of a seat conflict iff `a.from < b.to and b.from < a.to`, so A->B and B->C share a seat.

Seat allocation (`allocate`), deterministic, for the passengers of one booking:
    1. the chosen seats, if the request names seats and all of them are free (passengers without a chosen
       seat are then placed by the rules below); if any chosen seat is taken, all choices are ignored;
    2. else one coach that holds the whole party AND gives every passenger their berth preference: the
       first such coach in composition order;
    3. else the first coach (composition order) that holds the whole party, preferences where it can;
    4. else spread over the coaches in composition order, lowest seat numbers first, preferences where it can.
    Inside a coach, passengers with a preference take, in passenger order, the lowest free seat of their
    berth; the others take the lowest remaining seats.

PNRs are 10 characters of rules.PNR_ALPHABET.  The proposer draws a random candidate (unguessable); apply
takes it if it is free, else the next free one counting in base 32 -- so HoldSeats never fails on a
collision, and every replica picks the same PNR.

Money is integer paise; fares and the refund rule are in store.tariff (quoted in the README).
"""

from __future__ import annotations

import functools
import sqlite3
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from operator import itemgetter
from typing import Any, NamedTuple

from . import civil, facts, rules, tariff
from .commands import (
    ALREADY_EXISTS,
    FAILED_PRECONDITION,
    INVALID_ARGUMENT,
    NOT_FOUND,
    PERMISSION_DENIED,
    UNAUTHENTICATED,
    AddTrain,
    AddTrainService,
    BootstrapAdmin,
    CancelBooking,
    CancelRun,
    CommandBase,
    ConfirmPayment,
    CreateStation,
    ExpireHolds,
    HoldSeats,
    Result,
    ScheduleRuns,
    SetUserRole,
    SettleRefunds,
)
from .failures import CommandFailed, check

CLASS_ORDER = {c: i for i, c in enumerate(rules.TRAVEL_CLASSES)}  # the order classes are listed in

HELD = "HELD"
CONFIRMED = "CONFIRMED"
WAITLISTED = "WAITLISTED"
CANCELLED = "CANCELLED"
EXPIRED = "EXPIRED"
REFUNDED = "REFUNDED"
BOOKING_STATES = (HELD, CONFIRMED, WAITLISTED, CANCELLED, EXPIRED, REFUNDED)
LIVE_STATES = (HELD, CONFIRMED, WAITLISTED)

RUN_SCHEDULED = "SCHEDULED"
RUN_CANCELLED = "CANCELLED"

# ExpireHolds handles at most this many bookings per command (it says `more` when there are others), so one
# log entry never holds up the applier for long.
EXPIRE_BATCH = 500
# How many following PNRs are tried when the proposer's candidate is taken (collisions are ~never).
PNR_PROBES = 1000
_PNR_SPACE = len(rules.PNR_ALPHABET) ** rules.PNR_LENGTH


# =============================================================================================== helpers


def _fail(code: str, message: str, **data: Any) -> CommandFailed:
    return CommandFailed(code, message, data)


def _session_user(conn: sqlite3.Connection, token_sha256: str, ts_ms: int) -> tuple[int, str]:
    """(user_id, role) of the live session `token_sha256` at ts_ms; UNAUTHENTICATED otherwise."""
    row = conn.execute(
        "SELECT s.user_id, u.role, s.expires_at_ms, s.revoked_ms FROM sessions AS s"
        " JOIN users AS u ON u.id = s.user_id WHERE s.token_sha256 = ?",
        (token_sha256,),
    ).fetchone()
    if row is None or row[3] is not None or row[2] <= ts_ms:
        raise _fail(UNAUTHENTICATED, "not logged in (unknown, expired or revoked session); please log in")
    return row[0], row[1]


def _admin(conn: sqlite3.Connection, cmd: Any) -> int:
    """The user id of an ADMIN session, else UNAUTHENTICATED / PERMISSION_DENIED."""
    user_id, role = _session_user(conn, cmd.token_sha256, cmd.ts_ms)
    if role != rules.ROLE_ADMIN:
        raise _fail(PERMISSION_DENIED, "only an administrator may do this")
    return user_id


def _next_id(conn: sqlite3.Connection, table: str) -> int:
    # Explicit ids (as for users): dense, and visibly independent of SQLite's rowid choice.
    return conn.execute(f"SELECT COALESCE(MAX(id), 0) + 1 FROM {table}").fetchone()[0]


def _when(ms: int) -> str:
    return civil.format_local(ms)


def pnr_to_int(pnr: str) -> int:
    """The base-32 value of a PNR (rules.PNR_ALPHABET digits)."""
    value = 0
    for ch in pnr:
        value = value * len(rules.PNR_ALPHABET) + rules.PNR_ALPHABET.index(ch)
    return value


def int_to_pnr(value: int) -> str:
    """Inverse of `pnr_to_int` (value modulo the PNR space)."""
    base = len(rules.PNR_ALPHABET)
    value %= _PNR_SPACE
    out = []
    for _ in range(rules.PNR_LENGTH):
        value, digit = divmod(value, base)
        out.append(rules.PNR_ALPHABET[digit])
    return "".join(reversed(out))


def _unique_pnr(conn: sqlite3.Connection, candidate: str) -> str:
    value = pnr_to_int(candidate)
    for _ in range(PNR_PROBES):
        pnr = int_to_pnr(value)
        if conn.execute("SELECT 1 FROM bookings WHERE pnr = ?", (pnr,)).fetchone() is None:
            return pnr
        value += 1
    raise _fail(FAILED_PRECONDITION, "could not find a free PNR near the proposed one; retry with a new one")


class _Booking(NamedTuple):
    id: int
    pnr: str
    user_id: int
    run_id: int
    travel_class: str
    from_seq: int
    to_seq: int
    board_ms: int
    status: str
    amount_paise: int
    paid_paise: int
    refunded_paise: int
    hold_expires_ms: int
    pending_until_ms: int | None
    payment_ref: str | None
    events: int


_BOOKING_COLUMNS = (
    "id, pnr, user_id, run_id, travel_class, from_seq, to_seq, board_ms, status, amount_paise, paid_paise,"
    " refunded_paise, hold_expires_ms, pending_until_ms, payment_ref, events"
)


def _booking_by_id(conn: sqlite3.Connection, booking_id: int) -> _Booking:
    return _Booking(*conn.execute(f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE id = ?", (booking_id,)).fetchone())


def _visible_booking(conn: sqlite3.Connection, pnr: str, user_id: int, role: str, *, admin_ok: bool) -> _Booking:
    """The booking `pnr` if the caller owns it (or is an admin and `admin_ok`); NOT_FOUND otherwise."""
    row = conn.execute(f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE pnr = ?", (pnr,)).fetchone()
    if row is None or (row[2] != user_id and not (admin_ok and role == rules.ROLE_ADMIN)):
        # The same answer for "no such PNR" and "not yours": existence is not leaked.
        raise _fail(NOT_FOUND, f"no booking {pnr} among your bookings")
    return _Booking(*row)


def _event(conn: sqlite3.Connection, b: _Booking, ts_ms: int, status: str, detail: str, **changes: Any) -> None:
    """Record a history event for booking `b` and apply `changes` (column=value) to its row in one UPDATE."""
    seq = b.events + 1
    conn.execute(
        "INSERT INTO booking_events (booking_id, seq, ts_ms, status, detail) VALUES (?, ?, ?, ?, ?)",
        (b.id, seq, ts_ms, status, detail),
    )
    changes.update(status=status, updated_ms=ts_ms, events=seq)
    names = sorted(changes)  # a fixed column order: same SQL text every time
    conn.execute(
        f"UPDATE bookings SET {', '.join(f'{n} = ?' for n in names)} WHERE id = ?",
        (*[changes[n] for n in names], b.id),
    )


def _add_refund(conn: sqlite3.Connection, b: _Booking, ts_ms: int, amount: int, percent: int,
                passengers: Sequence[int], reason: str) -> int:
    """A refund record; a zero refund is settled at once (nothing to pay out)."""
    refund_id = _next_id(conn, "refunds")
    conn.execute(
        "INSERT INTO refunds (id, booking_id, ts_ms, amount_paise, percent, passengers, reason, payment_ref,"
        " settled_ms, settlement_ref) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
        (refund_id, b.id, ts_ms, amount, percent, ",".join(map(str, passengers)), reason, b.payment_ref,
         ts_ms if amount == 0 else None, "" if amount == 0 else None),
    )
    return refund_id


# =============================================================================================== seats


@dataclass(frozen=True, slots=True)
class Coach:
    """A coach of a run: composition order `coach_no`, and the berth pattern its seats follow cyclically."""

    coach_no: int
    label: str
    travel_class: str
    seats: int
    berths: tuple[str, ...]

    def berth(self, seat_no: int) -> str:
        """The berth type of seat `seat_no` (1-based)."""
        return berth_of(self.berths, seat_no)


def berth_of(berths: Sequence[str], seat_no: int) -> str:
    """The berth type of seat `seat_no` (1-based) in a coach whose seats follow the pattern `berths`."""
    return berths[(seat_no - 1) % len(berths)]


def run_coaches(conn: sqlite3.Connection, run_id: int, travel_class: str | None = None) -> tuple[Coach, ...]:
    """The coaches of a run (of one class, if given), in composition order (remembered: store/facts.py)."""
    return facts.fact(conn, ("coaches", run_id, travel_class), lambda: _read_run_coaches(conn, run_id, travel_class))


def _read_run_coaches(conn: sqlite3.Connection, run_id: int, travel_class: str | None) -> tuple[Coach, ...]:
    if travel_class is None:
        rows = conn.execute(
            "SELECT coach_no, label, travel_class, seats, berths FROM run_coaches WHERE run_id = ? ORDER BY coach_no",
            (run_id,),
        ).fetchall()
    else:
        rows = conn.execute(
            "SELECT coach_no, label, travel_class, seats, berths FROM run_coaches WHERE run_id = ? AND travel_class = ?"
            " ORDER BY coach_no",
            (run_id, travel_class),
        ).fetchall()
    return tuple(Coach(r[0], r[1], r[2], r[3], _berth_pattern(r[4])) for r in rows)


@functools.lru_cache(maxsize=256)  # a few patterns for all the coaches a connection remembers (store/facts.py)
def _berth_pattern(berths: str) -> tuple[str, ...]:
    return tuple(berths.split(","))


def train_stop(conn: sqlite3.Connection, train_id: int, code: str) -> tuple[int, int, int] | None:
    """(seq, depart_min, km) of the train's stop at station `code`, None if it does not call there
    (remembered: store/facts.py)."""
    return facts.fact(conn, ("stop", train_id, code), lambda: conn.execute(
        "SELECT s.seq, s.depart_min, s.km FROM train_stops AS s JOIN stations AS st ON st.id = s.station_id"
        " WHERE st.code = ? AND s.train_id = ?",
        (code, train_id),
    ).fetchone())


def run_classes(conn: sqlite3.Connection, run_id: int) -> tuple[tuple[str, int, int | None], ...]:
    """(class, seats, fixed_price_paise or None) of each class of the run, in class order (remembered:
    store/facts.py)."""
    return facts.fact(conn, ("classes", run_id), lambda: _read_run_classes(conn, run_id))


def _read_run_classes(conn: sqlite3.Connection, run_id: int) -> tuple[tuple[str, int, int | None], ...]:
    rows = conn.execute(
        "SELECT travel_class, seats, fixed_price_paise FROM run_classes WHERE run_id = ?", (run_id,)
    ).fetchall()
    return tuple(sorted(rows, key=lambda r: CLASS_ORDER[r[0]]))


def run_class(conn: sqlite3.Connection, run_id: int, travel_class: str) -> tuple[int, int | None] | None:
    """(seats, fixed_price_paise or None) of a run's class, None if the run has no such class."""
    for cls, seats, price in run_classes(conn, run_id):
        if cls == travel_class:
            return seats, price
    return None


def taken_seats(conn: sqlite3.Connection, run_id: int, travel_class: str, from_seq: int, to_seq: int
                ) -> set[tuple[int, int]]:
    """{(coach_no, seat_no)} of the class's seats with an allocation overlapping stops [from_seq, to_seq)."""
    # Served by allocations_by_class: range on from_seq < to_seq, filter to_seq > from_seq, covering.
    return set(conn.execute(
        "SELECT coach_no, seat_no FROM allocations"
        " WHERE run_id = ? AND travel_class = ? AND from_seq < ? AND to_seq > ?",
        (run_id, travel_class, to_seq, from_seq),
    ).fetchall())


def _assign_in(pool: Sequence[tuple[int, int, str]], prefs: Sequence[str], strict: bool
               ) -> list[tuple[int, int]] | None:
    """Assign seats from `pool` [(coach_no, seat_no, berth)] (in preference order) to passengers.

    Passengers with a preference first take the first free seat of their berth; the rest take the first
    remaining seats.  With `strict`, None if some preference cannot be met.
    """
    out: list[tuple[int, int] | None] = [None] * len(prefs)
    used: set[int] = set()
    for i, pref in enumerate(prefs):
        if not pref:
            continue
        for j, (_, _, berth) in enumerate(pool):
            if berth == pref and j not in used:
                used.add(j)
                out[i] = pool[j][:2]
                break
        else:
            if strict:
                return None
    j = 0
    for i in range(len(prefs)):
        if out[i] is None:
            while j in used:
                j += 1
            if j >= len(pool):
                return None
            used.add(j)
            out[i] = pool[j][:2]
    return out  # type: ignore[return-value]


def allocate(coaches: Sequence[Coach], taken: set[tuple[int, int]], prefs: Sequence[str],
             chosen: Sequence[tuple[int, int] | None] = ()) -> tuple[list[tuple[int, int]], bool] | None:
    """Seats [(coach_no, seat_no)] for passengers with berth preferences `prefs`, by the rules of the module
    docstring; plus whether the chosen seats were honoured.  None if fewer seats are free than passengers.

    `coaches` are the class's coaches in composition order; `taken` the seats already taken on the segment;
    `chosen` per passenger a (coach_no, seat_no) or None (all None / empty = no choice).
    """
    n = len(prefs)
    # Counted in C: with a million bookings a class of a run has hundreds of taken seats per segment.
    taken_in = Counter(map(itemgetter(0), taken))
    free_in = {c.coach_no: c.seats - taken_in.get(c.coach_no, 0) for c in coaches}
    if sum(free_in.values()) < n:
        return None

    fixed: dict[int, tuple[int, int]] = {}
    honoured = False
    if any(chosen):
        picks = [(i, s) for i, s in enumerate(chosen) if s is not None]
        if all(s not in taken for _, s in picks):
            fixed = dict(picks)
            honoured = True
    if len(fixed) == n:
        return [fixed[i] for i in range(n)], honoured

    rest = [i for i in range(n) if i not in fixed]
    rest_prefs = [prefs[i] for i in rest]
    blocked = taken | set(fixed.values()) if fixed else taken  # only read below: no copy when nothing is fixed
    k = len(rest)

    def pool_of(c: Coach) -> list[tuple[int, int, str]]:
        return [(c.coach_no, s, c.berth(s)) for s in range(1, c.seats + 1) if (c.coach_no, s) not in blocked]

    fixed_in = {}
    for coach_no, _ in fixed.values():
        fixed_in[coach_no] = fixed_in.get(coach_no, 0) + 1
    roomy = [c for c in coaches if free_in[c.coach_no] - fixed_in.get(c.coach_no, 0) >= k]
    seats: list[tuple[int, int]] | None = None
    if not any(rest_prefs) and roomy:
        # The common case (no preferences): the lowest k free seats of the first coach that fits the party,
        # found without listing the whole coach.  Same answer as rule 3 below.
        c = roomy[0]
        seats = []
        for s in range(1, c.seats + 1):
            if (c.coach_no, s) not in blocked:
                seats.append((c.coach_no, s))
                if len(seats) == k:
                    break
    elif any(rest_prefs):
        for c in roomy:  # rule 2: together, every preference met
            seats = _assign_in(pool_of(c), rest_prefs, strict=True)
            if seats is not None:
                break
    if seats is None and roomy:  # rule 3: together
        seats = _assign_in(pool_of(roomy[0]), rest_prefs, strict=False)
    if seats is None:  # rule 4: spread
        pool: list[tuple[int, int, str]] = []
        for c in coaches:
            pool.extend(pool_of(c))
        seats = _assign_in(pool, rest_prefs, strict=False)
    assert seats is not None  # enough seats are free (checked above)
    out = dict(fixed)
    out.update(zip(rest, seats))
    return [out[i] for i in range(n)], honoured


def _insert_allocations(conn: sqlite3.Connection, b_id: int, run_id: int, travel_class: str, from_seq: int,
                        to_seq: int, pax_nos: Sequence[int], seats: Sequence[tuple[int, int]]) -> None:
    conn.executemany(
        "INSERT INTO allocations (run_id, coach_no, seat_no, from_seq, to_seq, travel_class, booking_id)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(run_id, c, s, from_seq, to_seq, travel_class, b_id) for c, s in seats],
    )
    conn.executemany(
        "UPDATE passengers SET coach_no = ?, seat_no = ? WHERE booking_id = ? AND pax_no = ?",
        [(c, s, b_id, p) for p, (c, s) in zip(pax_nos, seats)],
    )


def _release(conn: sqlite3.Connection, b: _Booking, pax_nos: Sequence[int] | None = None) -> int:
    """Delete the allocations of the booking's active passengers (all, or those in `pax_nos`)."""
    rows = conn.execute(
        "SELECT pax_no, coach_no, seat_no FROM passengers WHERE booking_id = ? AND status = 'ACTIVE'"
        " AND seat_no IS NOT NULL ORDER BY pax_no",
        (b.id,),
    ).fetchall()
    keys = [(b.run_id, c, s, b.from_seq) for p, c, s in rows if pax_nos is None or p in pax_nos]
    conn.executemany(
        "DELETE FROM allocations WHERE run_id = ? AND coach_no = ? AND seat_no = ? AND from_seq = ?", keys
    )
    return len(keys)


def _seat_labels(coaches: Sequence[Coach], seats: Sequence[tuple[int, int]]) -> list[str]:
    label = {c.coach_no: c.label for c in coaches}
    return [rules.seat_ref(label[c], s) for c, s in seats]


def _waitlist_position(conn: sqlite3.Connection, b: _Booking) -> int:
    return conn.execute(
        "SELECT COUNT(*) FROM bookings WHERE run_id = ? AND travel_class = ? AND status = 'WAITLISTED' AND id <= ?",
        (b.run_id, b.travel_class, b.id),
    ).fetchone()[0]


def _promote(conn: sqlite3.Connection, run_id: int, travel_class: str, ts_ms: int) -> list[str]:
    """Give seats to the paid waitlisted bookings of a run and class that now fit, oldest first; their PNRs."""
    status = conn.execute("SELECT status FROM runs WHERE id = ?", (run_id,)).fetchone()[0]
    if status != RUN_SCHEDULED:
        return []
    waiting = [
        _Booking(*row) for row in conn.execute(
            f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE run_id = ? AND travel_class = ? AND status = 'WAITLISTED'"
            " ORDER BY id",
            (run_id, travel_class),
        ).fetchall()
    ]
    if not waiting:
        return []
    coaches = run_coaches(conn, run_id, travel_class)
    promoted = []
    position = 0
    for b in waiting:
        position += 1
        if b.paid_paise == 0 or b.board_ms <= ts_ms:
            continue  # unpaid entries wait for their payment; a train that has left takes nobody on
        pax = conn.execute(
            "SELECT pax_no, berth_pref FROM passengers WHERE booking_id = ? AND status = 'ACTIVE' ORDER BY pax_no",
            (b.id,),
        ).fetchall()
        got = allocate(coaches, taken_seats(conn, run_id, travel_class, b.from_seq, b.to_seq), [p[1] for p in pax])
        if got is None:
            continue
        seats = got[0]
        _insert_allocations(conn, b.id, run_id, travel_class, b.from_seq, b.to_seq, [p[0] for p in pax], seats)
        _event(conn, b, ts_ms, CONFIRMED,
               f"promoted from waitlist position {position}: seats {', '.join(_seat_labels(coaches, seats))}")
        position -= 1  # it no longer waits: the ones behind it move up
        promoted.append(b.pnr)
    return promoted


# =============================================================================================== admin


def _bootstrap_admin(conn: sqlite3.Connection, cmd: BootstrapAdmin) -> Result:
    check(rules.precheck, cmd)
    if conn.execute("SELECT 1 FROM users WHERE role = 'ADMIN' LIMIT 1").fetchone():
        raise _fail(FAILED_PRECONDITION, "an administrator already exists; ask them to make you one")
    if conn.execute("SELECT 1 FROM users WHERE username = ?", (cmd.username,)).fetchone():
        raise _fail(ALREADY_EXISTS, f"username {cmd.username!r} is already taken")
    user_id = _next_id(conn, "users")
    conn.execute(
        "INSERT INTO users (id, username, password_hash, role, created_ms) VALUES (?, ?, ?, 'ADMIN', ?)",
        (user_id, cmd.username, cmd.password_hash, cmd.ts_ms),
    )
    return Result.success({"user_id": user_id}, f"administrator {cmd.username!r} created")


def _set_user_role(conn: sqlite3.Connection, cmd: SetUserRole) -> Result:
    admin_id = _admin(conn, cmd)
    check(rules.precheck, cmd)
    row = conn.execute("SELECT id, role FROM users WHERE username = ?", (cmd.username,)).fetchone()
    if row is None:
        raise _fail(NOT_FOUND, f"no user {cmd.username!r}")
    if row[1] == rules.ROLE_ADMIN and cmd.role != rules.ROLE_ADMIN:
        if conn.execute("SELECT COUNT(*) FROM users WHERE role = 'ADMIN'").fetchone()[0] == 1:
            raise _fail(FAILED_PRECONDITION, "the last administrator cannot be demoted")
    conn.execute("UPDATE users SET role = ? WHERE id = ?", (cmd.role, row[0]))
    return Result.success({"user_id": row[0], "role": cmd.role, "by": admin_id}, f"{cmd.username} is now {cmd.role}")


def _create_station(conn: sqlite3.Connection, cmd: CreateStation) -> Result:
    _admin(conn, cmd)
    check(rules.precheck, cmd)
    if conn.execute("SELECT 1 FROM stations WHERE code = ?", (cmd.code,)).fetchone():
        raise _fail(ALREADY_EXISTS, f"station {cmd.code} already exists")
    station_id = _next_id(conn, "stations")
    conn.execute("INSERT INTO stations (id, code, name, created_ms) VALUES (?, ?, ?, ?)",
                 (station_id, cmd.code, cmd.name, cmd.ts_ms))
    return Result.success({"station_id": station_id, "code": cmd.code}, f"station {cmd.code} ({cmd.name}) created")


def _add_train(conn: sqlite3.Connection, cmd: AddTrain) -> Result:
    _admin(conn, cmd)
    check(rules.precheck, cmd)
    depart_min = civil.parse_hhmm(cmd.depart_time)
    if conn.execute("SELECT 1 FROM trains WHERE number = ?", (cmd.number,)).fetchone():
        raise _fail(ALREADY_EXISTS, f"train {cmd.number} already exists")
    station_ids = []
    for stop in cmd.stops:
        row = conn.execute("SELECT id FROM stations WHERE code = ?", (stop.station_code,)).fetchone()
        if row is None:
            raise _fail(NOT_FOUND, f"unknown station code {stop.station_code}")
        station_ids.append(row[0])
    train_id = _next_id(conn, "trains")
    conn.execute(
        "INSERT INTO trains (id, number, name, train_type, depart_min, created_ms) VALUES (?, ?, ?, ?, ?, ?)",
        (train_id, cmd.number, cmd.name, cmd.train_type, depart_min, cmd.ts_ms),
    )
    conn.executemany(
        "INSERT INTO train_stops (train_id, seq, station_id, arrive_min, depart_min, km) VALUES (?, ?, ?, ?, ?, ?)",
        [(train_id, seq, sid, s.arrive_min, s.depart_min, s.km)
         for seq, (sid, s) in enumerate(zip(station_ids, cmd.stops))],
    )
    conn.executemany(
        "INSERT INTO train_coaches (train_id, coach_no, label, travel_class, seats, berths) VALUES (?, ?, ?, ?, ?, ?)",
        [(train_id, no, c.label, c.travel_class, c.seats, ",".join(c.berths or rules.DEFAULT_BERTHS[c.travel_class]))
         for no, c in enumerate(cmd.coaches, start=1)],
    )
    return Result.success(
        {"train_id": train_id, "number": cmd.number},
        f"train {cmd.number} {cmd.name} added: {cmd.stops[0].station_code} to {cmd.stops[-1].station_code},"
        f" {len(cmd.coaches)} coaches",
    )


def _train(conn: sqlite3.Connection, number: int) -> tuple[int, int, str]:
    """(train_id, depart_min, name) of train `number`; NOT_FOUND otherwise."""
    row = conn.execute("SELECT id, depart_min, name FROM trains WHERE number = ?", (number,)).fetchone()
    if row is None:
        raise _fail(NOT_FOUND, f"no train {number}")
    return row


def _insert_run(conn: sqlite3.Connection, run_id: int, train_id: int, day: int, depart_ms: int,
                arrive_override_min: int | None, ts_ms: int, classes: dict[str, tuple[int, int | None]]) -> None:
    conn.execute(
        "INSERT INTO runs (id, train_id, run_date, depart_ms, arrive_override_min, status, created_ms)"
        " VALUES (?, ?, ?, ?, ?, 'SCHEDULED', ?)",
        (run_id, train_id, civil.format_date(day), depart_ms, arrive_override_min, ts_ms),
    )
    conn.executemany(
        "INSERT INTO run_classes (run_id, travel_class, seats, fixed_price_paise) VALUES (?, ?, ?, ?)",
        [(run_id, cls, seats, price) for cls, (seats, price) in sorted(classes.items())],
    )


def _schedule_runs(conn: sqlite3.Connection, cmd: ScheduleRuns) -> Result:
    _admin(conn, cmd)
    check(rules.precheck, cmd)
    first, last = civil.parse_date(cmd.first_date), civil.parse_date(cmd.last_date)
    prices = {p.travel_class: p.price_paise for p in cmd.prices}
    train_id, depart_min, name = _train(conn, cmd.train_number)
    seats: dict[str, int] = {}
    for cls, n in conn.execute("SELECT travel_class, seats FROM train_coaches WHERE train_id = ?", (train_id,)):
        seats[cls] = seats.get(cls, 0) + n
    if not seats:
        raise _fail(FAILED_PRECONDITION, f"train {cmd.train_number} has no coaches to run with")
    for cls in sorted(prices):
        if cls not in seats:
            raise _fail(INVALID_ARGUMENT, f"train {cmd.train_number} has no {cls} coaches to price")
    classes = {cls: (n, prices.get(cls)) for cls, n in seats.items()}
    existing = {
        row[0] for row in conn.execute(
            "SELECT run_date FROM runs WHERE train_id = ? AND run_date BETWEEN ? AND ?",
            (train_id, civil.format_date(first), civil.format_date(last)),
        )
    }
    run_id = _next_id(conn, "runs")
    run_ids, skipped = [], []
    for day in range(first, last + 1):
        date = civil.format_date(day)
        if date in existing:
            skipped.append(date)
            continue
        _insert_run(conn, run_id, train_id, day, civil.local_ms(day, depart_min), None, cmd.ts_ms, classes)
        conn.execute(
            "INSERT INTO run_coaches (run_id, coach_no, label, travel_class, seats, berths)"
            " SELECT ?, coach_no, label, travel_class, seats, berths FROM train_coaches WHERE train_id = ?",
            (run_id, train_id),
        )
        run_ids.append(run_id)
        run_id += 1
    return Result.success(
        {"run_ids": run_ids, "skipped_dates": skipped},
        f"train {cmd.train_number} {name}: {len(run_ids)} run(s) scheduled"
        + (f", {len(skipped)} date(s) already had one" if skipped else ""),
    )


def _add_train_service(conn: sqlite3.Connection, cmd: AddTrainService) -> Result:
    _admin(conn, cmd)
    check(rules.precheck, cmd)
    depart_ms = civil.parse_datetime(cmd.departure)
    classes: dict[str, tuple[int, int | None]] = {s.travel_class: (s.seats, s.price_paise or None) for s in cmd.seats}
    coaches: list[tuple[str, str, int]] = []
    for cls in rules.TRAVEL_CLASSES:  # generated coaches: H1 H2 .. A1 .. B1 .. S1 .. G1 .., the last one partial
        if cls in classes:
            left, i = classes[cls][0], 1
            while left > 0:
                size = min(left, rules.COACH_CAPACITY[cls])
                coaches.append((f"{rules.COACH_PREFIX[cls]}{i}", cls, size))
                left -= size
                i += 1
    train_id, _, name = _train(conn, cmd.train_number)
    stops = conn.execute(
        "SELECT seq, arrive_min, depart_min FROM train_stops WHERE train_id = ? ORDER BY seq DESC LIMIT 2",
        (train_id,),
    ).fetchall()
    override = None
    if cmd.arrival:
        minutes = (civil.parse_datetime(cmd.arrival) - depart_ms) // civil.MINUTE_MS
        if minutes <= stops[1][2]:
            raise _fail(INVALID_ARGUMENT, f"arrival {cmd.arrival} must be after the departure from the last-but-one stop")
        if minutes != stops[0][1]:
            override = minutes
    day = civil.local_day(depart_ms)
    if conn.execute("SELECT 1 FROM runs WHERE train_id = ? AND run_date = ? AND depart_ms = ?",
                    (train_id, civil.format_date(day), depart_ms)).fetchone():
        raise _fail(ALREADY_EXISTS, f"train {cmd.train_number} already runs at {cmd.departure}")
    run_id = _next_id(conn, "runs")
    _insert_run(conn, run_id, train_id, day, depart_ms, override, cmd.ts_ms, classes)
    conn.executemany(
        "INSERT INTO run_coaches (run_id, coach_no, label, travel_class, seats, berths) VALUES (?, ?, ?, ?, ?, ?)",
        [(run_id, no, label, cls, n, ",".join(rules.DEFAULT_BERTHS[cls]))
         for no, (label, cls, n) in enumerate(coaches, start=1)],
    )
    return Result.success(
        {"run_id": run_id, "run_date": civil.format_date(day), "coaches": len(coaches)},
        f"train {cmd.train_number} {name} scheduled for {_when(depart_ms)}",
    )


def _cancel_run(conn: sqlite3.Connection, cmd: CancelRun) -> Result:
    _admin(conn, cmd)
    check(rules.precheck, cmd)
    row = conn.execute("SELECT status FROM runs WHERE id = ?", (cmd.run_id,)).fetchone()
    if row is None:
        raise _fail(NOT_FOUND, f"no run {cmd.run_id}")
    if row[0] != RUN_SCHEDULED:
        raise _fail(FAILED_PRECONDITION, f"run {cmd.run_id} is already cancelled")
    reason = "run cancelled by the railway" + (f": {cmd.reason}" if cmd.reason else "")
    bookings = [_Booking(*r) for r in conn.execute(
        f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE run_id = ? AND status IN ('HELD', 'CONFIRMED', 'WAITLISTED')"
        " ORDER BY id",
        (cmd.run_id,),
    ).fetchall()]
    total = 0
    for b in bookings:
        due = b.paid_paise - b.refunded_paise
        if b.paid_paise:
            _add_refund(conn, b, cmd.ts_ms, due, 100, (), reason)
        total += due
        _event(conn, b, cmd.ts_ms, REFUNDED, f"{reason}; refund {tariff.rupees(due)}",
               refunded_paise=b.paid_paise, pending_until_ms=None)
    conn.execute("DELETE FROM allocations WHERE run_id = ?", (cmd.run_id,))
    conn.execute("UPDATE runs SET status = 'CANCELLED', cancelled_ms = ?, cancel_reason = ? WHERE id = ?",
                 (cmd.ts_ms, cmd.reason, cmd.run_id))
    return Result.success(
        {"run_id": cmd.run_id, "refunded_bookings": len(bookings), "refund_paise": total},
        f"run {cmd.run_id} cancelled; {len(bookings)} booking(s) refunded {tariff.rupees(total)} in total",
    )


# ============================================================================================ customers


def _hold_seats(conn: sqlite3.Connection, cmd: HoldSeats) -> Result:
    check(rules.precheck, cmd)
    user_id, _ = _session_user(conn, cmd.token_sha256, cmd.ts_ms)

    run = conn.execute(
        "SELECT r.train_id, r.status, r.depart_ms, t.number, t.name FROM runs AS r JOIN trains AS t"
        " ON t.id = r.train_id WHERE r.id = ?",
        (cmd.run_id,),
    ).fetchone()
    if run is None:
        raise _fail(NOT_FOUND, f"no run {cmd.run_id}")
    train_id, run_status, depart_ms, number, train_name = run
    if run_status != RUN_SCHEDULED:
        raise _fail(FAILED_PRECONDITION, f"train {number} on this date is cancelled")
    a = train_stop(conn, train_id, cmd.from_code)
    b = train_stop(conn, train_id, cmd.to_code)
    for code, stop in ((cmd.from_code, a), (cmd.to_code, b)):
        if stop is None:
            raise _fail(NOT_FOUND, f"train {number} does not stop at {code}")
    if a[0] >= b[0]:
        raise _fail(INVALID_ARGUMENT, f"train {number} reaches {cmd.to_code} before {cmd.from_code}")
    board_ms = depart_ms + a[1] * civil.MINUTE_MS
    if board_ms <= cmd.ts_ms:
        raise _fail(FAILED_PRECONDITION, f"train {number} left {cmd.from_code} at {_when(board_ms)}")
    cls = run_class(conn, cmd.run_id, cmd.travel_class)
    if cls is None:
        raise _fail(NOT_FOUND, f"train {number} has no {cmd.travel_class} class")
    fare = cls[1] if cls[1] is not None else tariff.fare_paise(cmd.travel_class, b[2] - a[2])
    from_seq, to_seq = a[0], b[0]

    coaches = run_coaches(conn, cmd.run_id, cmd.travel_class)
    by_label = {c.label: c for c in coaches}
    chosen: list[tuple[int, int] | None] = []
    for p in cmd.passengers:
        if not p.seat:
            chosen.append(None)
            continue
        label, seat_no = rules.parse_seat_ref(p.seat)
        coach = by_label.get(label)
        if coach is None or seat_no > coach.seats:
            raise _fail(INVALID_ARGUMENT, f"seat {p.seat} is not a {cmd.travel_class} seat of train {number}")
        chosen.append((coach.coach_no, seat_no))

    n = len(cmd.passengers)
    taken = taken_seats(conn, cmd.run_id, cmd.travel_class, from_seq, to_seq)
    got = allocate(coaches, taken, [p.berth_pref for p in cmd.passengers], chosen)
    route = f"{cmd.from_code} to {cmd.to_code}"
    if got is None:
        free = sum(c.seats for c in coaches) - len(taken)
        if not cmd.accept_waitlist:
            raise _fail(FAILED_PRECONDITION,
                        f"sold out: {free} {cmd.travel_class} seat(s) free from {route} on train {number}"
                        f" for {n} passenger(s); you may ask for a waitlist position",
                        free_seats=free)
        waiting = conn.execute(
            "SELECT COUNT(*) FROM bookings WHERE run_id = ? AND travel_class = ? AND status = 'WAITLISTED'",
            (cmd.run_id, cmd.travel_class),
        ).fetchone()[0]
        if waiting >= rules.WAITLIST_MAX:
            raise _fail(FAILED_PRECONDITION, f"sold out, and the {cmd.travel_class} waitlist of train {number} is full")
    status = HELD if got is not None else WAITLISTED

    pnr = _unique_pnr(conn, cmd.pnr)
    booking_id = _next_id(conn, "bookings")
    expires = cmd.ts_ms + cmd.hold_seconds * 1000
    amount = fare * n
    conn.execute(
        "INSERT INTO bookings (id, pnr, user_id, run_id, travel_class, from_seq, to_seq, board_ms, status,"
        " amount_paise, paid_paise, refunded_paise, hold_expires_ms, pending_until_ms, payment_ref, created_ms,"
        " updated_ms, events) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 0, 0, ?, ?, NULL, ?, ?, 1)",
        (booking_id, pnr, user_id, cmd.run_id, cmd.travel_class, from_seq, to_seq, board_ms, status, amount,
         expires, expires, cmd.ts_ms, cmd.ts_ms),
    )
    conn.executemany(
        "INSERT INTO passengers (booking_id, pax_no, name, age, berth_pref, fare_paise, status, coach_no, seat_no)"
        " VALUES (?, ?, ?, ?, ?, ?, 'ACTIVE', ?, ?)",
        [(booking_id, i, p.name, p.age, p.berth_pref, fare, *(got[0][i - 1] if got else (None, None)))
         for i, p in enumerate(cmd.passengers, start=1)],
    )
    data: dict[str, Any] = {
        "pnr": pnr, "status": status, "amount_paise": amount, "hold_expires_ms": expires,
    }
    if got is not None:
        seats, honoured = got
        conn.executemany(
            "INSERT INTO allocations (run_id, coach_no, seat_no, from_seq, to_seq, travel_class, booking_id)"
            " VALUES (?, ?, ?, ?, ?, ?, ?)",
            [(cmd.run_id, c, s, from_seq, to_seq, cmd.travel_class, booking_id) for c, s in seats],
        )
        labels = _seat_labels(coaches, seats)
        data["seats"] = labels
        if any(chosen):
            data["chosen_seats_honoured"] = honoured
        detail = (f"held {', '.join(labels)} ({cmd.travel_class}, {route}); pay {tariff.rupees(amount)}"
                  f" by {_when(expires)}")
        message = (f"PNR {pnr}: {n} {cmd.travel_class} seat(s) held on train {number} {train_name} from {route}"
                   f" ({', '.join(labels)}); pay {tariff.rupees(amount)} by {_when(expires)}")
    else:
        position = waiting + 1
        data["waitlist_position"] = position
        detail = (f"waitlisted at position {position} ({cmd.travel_class}, {route}); pay {tariff.rupees(amount)}"
                  f" by {_when(expires)} to keep the place")
        message = (f"PNR {pnr}: sold out; waitlist position {position} on train {number} {train_name} from {route};"
                   f" pay {tariff.rupees(amount)} by {_when(expires)} to keep it")
    # The first history event; the booking row was inserted with events = 1 already (one write fewer).
    conn.execute("INSERT INTO booking_events (booking_id, seq, ts_ms, status, detail) VALUES (?, 1, ?, ?, ?)",
                 (booking_id, cmd.ts_ms, status, detail))
    return Result.success(data, message)


def _confirm_payment(conn: sqlite3.Connection, cmd: ConfirmPayment) -> Result:
    check(rules.precheck, cmd)
    user_id, role = _session_user(conn, cmd.token_sha256, cmd.ts_ms)
    b = _visible_booking(conn, cmd.pnr, user_id, role, admin_ok=False)
    # `void_charge` tells the proposer the provider's charge was not accepted and must be voided/refunded.
    void = cmd.approved
    if b.paid_paise > 0 and b.status in (CONFIRMED, WAITLISTED):
        raise _fail(FAILED_PRECONDITION, f"booking {b.pnr} is already paid ({b.status}); nothing was charged again",
                    void_charge=void, status=b.status)
    if b.status == EXPIRED:
        raise _fail(FAILED_PRECONDITION, f"hold expired at {_when(b.hold_expires_ms)}; booking {b.pnr} is EXPIRED",
                    void_charge=void, status=b.status)
    if b.status not in (HELD, WAITLISTED):
        raise _fail(FAILED_PRECONDITION, f"booking {b.pnr} is {b.status} and cannot be paid",
                    void_charge=void, status=b.status)
    if b.pending_until_ms is not None and b.pending_until_ms <= cmd.ts_ms:
        # ExpireHolds may not have run yet; the hold is over all the same.
        raise _fail(FAILED_PRECONDITION, f"hold expired at {_when(b.hold_expires_ms)}; please book again",
                    void_charge=void, status=b.status)
    if b.board_ms <= cmd.ts_ms:
        raise _fail(FAILED_PRECONDITION, f"the train left at {_when(b.board_ms)}; booking {b.pnr} cannot be paid",
                    void_charge=void, status=b.status)
    if not cmd.approved:
        raise _fail(FAILED_PRECONDITION,
                    f"payment declined{': ' + cmd.decline_reason if cmd.decline_reason else ''};"
                    f" booking {b.pnr} stays {b.status} until {_when(b.hold_expires_ms)}",
                    declined=True, status=b.status)
    if cmd.amount_paise != b.amount_paise:
        raise _fail(FAILED_PRECONDITION,
                    f"amount {tariff.rupees(cmd.amount_paise)} does not match the {tariff.rupees(b.amount_paise)}"
                    f" due for {b.pnr}", void_charge=True, status=b.status)
    if conn.execute("SELECT 1 FROM payments WHERE provider_ref = ?", (cmd.provider_ref,)).fetchone():
        # Not voided: that charge legitimately paid another booking.
        raise _fail(FAILED_PRECONDITION, "this payment reference has already paid for a booking", status=b.status)
    conn.execute("INSERT INTO payments (id, booking_id, ts_ms, amount_paise, provider_ref) VALUES (?, ?, ?, ?, ?)",
                 (_next_id(conn, "payments"), b.id, cmd.ts_ms, cmd.amount_paise, cmd.provider_ref))
    new_status = CONFIRMED if b.status == HELD else WAITLISTED
    _event(conn, b, cmd.ts_ms, new_status, f"paid {tariff.rupees(cmd.amount_paise)} (ref {cmd.provider_ref})",
           paid_paise=cmd.amount_paise, payment_ref=cmd.provider_ref, pending_until_ms=None)
    promoted = False
    if new_status == WAITLISTED:
        # Seats may have come free while it waited unpaid (unpaid entries are skipped by promotion).
        promoted = b.pnr in _promote(conn, b.run_id, b.travel_class, cmd.ts_ms)
    final = CONFIRMED if promoted else new_status
    data: dict[str, Any] = {"pnr": b.pnr, "status": final, "paid_paise": cmd.amount_paise}
    if final == WAITLISTED:
        data["waitlist_position"] = _waitlist_position(conn, b)
        return Result.success(data, f"paid; booking {b.pnr} keeps waitlist position {data['waitlist_position']}")
    return Result.success(data, f"paid {tariff.rupees(cmd.amount_paise)}; booking {b.pnr} is CONFIRMED")


def _cancel_booking(conn: sqlite3.Connection, cmd: CancelBooking) -> Result:
    check(rules.precheck, cmd)
    user_id, role = _session_user(conn, cmd.token_sha256, cmd.ts_ms)
    b = _visible_booking(conn, cmd.pnr, user_id, role, admin_ok=True)
    if b.status not in LIVE_STATES:
        raise _fail(FAILED_PRECONDITION, f"booking {b.pnr} is already {b.status}")
    active = conn.execute(
        "SELECT pax_no, fare_paise FROM passengers WHERE booking_id = ? AND status = 'ACTIVE' ORDER BY pax_no",
        (b.id,),
    ).fetchall()
    fares = dict(active)
    if cmd.passenger_nos:
        for no in cmd.passenger_nos:
            if no not in fares:
                raise _fail(INVALID_ARGUMENT, f"booking {b.pnr} has no passenger {no} left to cancel")
        selected = sorted(cmd.passenger_nos)
    else:
        selected = sorted(fares)
    whole = len(selected) == len(fares)
    fare = sum(fares[no] for no in selected)

    refund = percent = 0
    if b.paid_paise > 0:
        percent = 100 if b.status == WAITLISTED else tariff.refund_percent(b.board_ms, cmd.ts_ms)
        refund = tariff.refund_paise(fare, percent)
        _add_refund(conn, b, cmd.ts_ms, refund, percent, selected,
                    "waitlisted booking cancelled" if b.status == WAITLISTED else "cancelled by the customer")
    released = _release(conn, b, set(selected)) if b.status in (HELD, CONFIRMED) else 0
    conn.executemany("UPDATE passengers SET status = 'CANCELLED' WHERE booking_id = ? AND pax_no = ?",
                     [(b.id, no) for no in selected])
    who = "all passengers" if whole else "passenger(s) " + ", ".join(map(str, selected))
    detail = f"cancelled {who}" + (f"; refund {tariff.rupees(refund)} ({percent}%)" if b.paid_paise else "")
    changes: dict[str, Any] = {"amount_paise": b.amount_paise - fare, "refunded_paise": b.refunded_paise + refund}
    if whole:
        changes["pending_until_ms"] = None
    _event(conn, b, cmd.ts_ms, CANCELLED if whole else b.status, detail, **changes)
    promoted = _promote(conn, b.run_id, b.travel_class, cmd.ts_ms) if released else []
    return Result.success(
        {"pnr": b.pnr, "status": CANCELLED if whole else b.status, "cancelled_passengers": selected,
         "refund_paise": refund, "refund_percent": percent, "promoted": promoted},
        f"booking {b.pnr}: {detail}",
    )


# =============================================================================================== leader


def _expire_holds(conn: sqlite3.Connection, cmd: ExpireHolds) -> Result:
    check(rules.precheck, cmd)
    due = [_Booking(*r) for r in conn.execute(
        f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE pending_until_ms <= ? ORDER BY pending_until_ms, id LIMIT ?",
        (cmd.now_ms, EXPIRE_BATCH + 1),
    ).fetchall()]
    more = len(due) > EXPIRE_BATCH
    due = due[:EXPIRE_BATCH]
    released: set[tuple[int, str]] = set()
    for b in due:
        if b.status == HELD and _release(conn, b):
            released.add((b.run_id, b.travel_class))
        _event(conn, b, cmd.ts_ms, EXPIRED, f"not paid by {_when(b.hold_expires_ms)}: hold expired",
               pending_until_ms=None)
    # Paid waitlisted bookings whose train has left the boarding station will never get a seat.
    left = [_Booking(*r) for r in conn.execute(
        f"SELECT {_BOOKING_COLUMNS} FROM bookings WHERE status = 'WAITLISTED' AND board_ms <= ?"
        " ORDER BY board_ms, id LIMIT ?",
        (cmd.now_ms, EXPIRE_BATCH + 1),
    ).fetchall()]
    more = more or len(left) > EXPIRE_BATCH
    refunded = 0
    for b in left[:EXPIRE_BATCH]:
        due_back = b.paid_paise - b.refunded_paise
        if b.paid_paise:
            _add_refund(conn, b, cmd.ts_ms, due_back, 100, (), "waitlist not cleared before departure")
            _event(conn, b, cmd.ts_ms, REFUNDED,
                   f"waitlist not cleared before departure; refund {tariff.rupees(due_back)}",
                   refunded_paise=b.paid_paise, pending_until_ms=None)
            refunded += 1
        else:
            _event(conn, b, cmd.ts_ms, EXPIRED, "waitlist not cleared before departure", pending_until_ms=None)
    promoted: list[str] = []
    for run_id, cls in sorted(released):
        promoted += _promote(conn, run_id, cls, cmd.ts_ms)
    return Result.success(
        {"expired": len(due), "waitlist_refunded": refunded, "promoted": promoted, "more": more},
        f"{len(due)} hold(s) expired",
    )


def _settle_refunds(conn: sqlite3.Connection, cmd: SettleRefunds) -> Result:
    check(rules.precheck, cmd)
    settled, ignored = [], []
    for s in cmd.settlements:
        n = conn.execute(
            "UPDATE refunds SET settled_ms = ?, settlement_ref = ? WHERE id = ? AND settled_ms IS NULL",
            (cmd.ts_ms, s.provider_ref, s.refund_id),
        ).rowcount
        (settled if n else ignored).append(s.refund_id)
    return Result.success({"settled": settled, "ignored": ignored}, f"{len(settled)} refund(s) settled")


HANDLERS: dict[type[CommandBase], Callable[[sqlite3.Connection, Any], Result]] = {
    BootstrapAdmin: _bootstrap_admin,
    SetUserRole: _set_user_role,
    CreateStation: _create_station,
    AddTrain: _add_train,
    ScheduleRuns: _schedule_runs,
    AddTrainService: _add_train_service,
    CancelRun: _cancel_run,
    HoldSeats: _hold_seats,
    ConfirmPayment: _confirm_payment,
    CancelBooking: _cancel_booking,
    ExpireHolds: _expire_holds,
    SettleRefunds: _settle_refunds,
}
