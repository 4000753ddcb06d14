"""Read functions of the booking domain, for `Database.read(fn, *args)` (see store.queries for the conventions).

Each takes the connection first and returns frozen dataclasses / tuples (never live rows).  Functions that show
a booking take the caller's `user_id` (the gateway resolves the session token with `queries.session`) and
return None for a booking that is not the caller's -- the same as for one that does not exist, so a customer
cannot learn which PNRs exist.  `is_admin=True` lifts that for administrators.

Unknown stations, runs or coaches in a query raise `NotFound` (a LookupError); malformed input (a bad date)
raises ValueError.  The gateway maps them to NOT_FOUND and INVALID_ARGUMENT.

Times: `*_ms` are instants (epoch ms); the matching strings are IST "YYYY-MM-DD HH:MM" (store.civil).
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass

from . import civil, facts, rules, tariff
from .booking import BOOKING_STATES, Coach, berth_of, run_classes, run_coaches, train_stop
from .booking import CLASS_ORDER as _CLASS_ORDER


class NotFound(LookupError):
    """A station, run, train or coach named in a query does not exist (message says which)."""


# ============================================================================================ stations


@dataclass(frozen=True, slots=True)
class Station:
    """A station; `id` doubles as the original API's city id."""

    id: int
    code: str
    name: str


def stations(conn: sqlite3.Connection, prefix: str = "", limit: int = 0) -> list[Station]:
    """Stations by code; with `prefix`, those whose code or name starts with it (case-insensitive, ASCII);
    at most `limit` (0 = all)."""
    rows = [Station(*r) for r in conn.execute("SELECT id, code, name FROM stations ORDER BY code")]
    if prefix:
        p = prefix.strip().casefold()
        rows = [s for s in rows if s.code.casefold().startswith(p) or s.name.casefold().startswith(p)]
    return rows[:limit] if limit > 0 else rows


def station_by_code(conn: sqlite3.Connection, code: str) -> Station | None:
    """The station with this code, or None (remembered: store/facts.py)."""
    row = facts.fact(conn, ("station", code),
                     lambda: conn.execute("SELECT id, code, name FROM stations WHERE code = ?", (code,)).fetchone())
    return Station(*row) if row else None


def station_by_id(conn: sqlite3.Connection, station_id: int) -> Station | None:
    """The station with this id, or None."""
    row = conn.execute("SELECT id, code, name FROM stations WHERE id = ?", (station_id,)).fetchone()
    return Station(*row) if row else None


def _station(conn: sqlite3.Connection, code: str) -> Station:
    s = station_by_code(conn, code)
    if s is None:
        raise NotFound(f"unknown station {code}")
    return s


# ============================================================================================== search


@dataclass(frozen=True, slots=True)
class ClassAvailability:
    """A class on a run for one segment: seats in total, seats free on the segment, fare per passenger."""

    travel_class: str
    seats: int
    free: int
    fare_paise: int
    service_id: str


@dataclass(frozen=True, slots=True)
class SearchResult:
    """A run that calls at `from` and then at `to`, with the times at those stations.  A cancelled run
    (`status` "CANCELLED") shows no free seats."""

    run_id: int
    run_date: str
    train_number: int
    train_name: str
    train_type: str
    from_code: str
    from_name: str
    to_code: str
    to_name: str
    from_seq: int
    to_seq: int
    depart_ms: int
    arrive_ms: int
    departure: str
    arrival: str
    distance_km: int
    duration_min: int
    status: str
    classes: tuple[ClassAvailability, ...]


def _free_count(conn: sqlite3.Connection, run_id: int, travel_class: str, seats: int, f: int, t: int) -> int:
    # A seat can hold two allocations that both overlap [f, t) (A->B and B->C over A->C): count seats, not rows.
    # DISTINCT over one expression (unique: a coach has at most 120 seats) keeps the plan on the covering
    # allocations_by_class range; DISTINCT over two columns made the planner walk the whole run by primary key.
    taken = conn.execute(
        "SELECT COUNT(DISTINCT coach_no * 1000 + seat_no) FROM allocations"
        " WHERE run_id = ? AND travel_class = ? AND from_seq < ? AND to_seq > ?",
        (run_id, travel_class, t, f),
    ).fetchone()[0]
    return seats - taken


def availability(conn: sqlite3.Connection, run_id: int, from_seq: int, to_seq: int, distance_km: int,
                 from_code: str, to_code: str, cancelled: bool = False) -> tuple[ClassAvailability, ...]:
    """Per class of the run (in class order): seats, free seats on stops [from_seq, to_seq), the fare, and
    the service id naming that class and segment (none free if the run is `cancelled`)."""
    return tuple(
        ClassAvailability(cls, seats, 0 if cancelled else _free_count(conn, run_id, cls, seats, from_seq, to_seq),
                          price if price is not None else tariff.fare_paise(cls, distance_km),
                          rules.encode_service_id(run_id, cls, from_code, to_code))
        for cls, seats, price in run_classes(conn, run_id)
    )


def search(conn: sqlite3.Connection, from_code: str, to_code: str, date: str, include_cancelled: bool = False,
           after_ms: int = 0) -> list[SearchResult]:
    """Runs that leave `from_code` on IST date `date` and later call at `to_code`, by departure time.

    `date` is the date at the BOARDING station (a train that left its origin the day before is found by the
    date the passenger boards).  Cancelled runs are left out unless `include_cancelled`; runs leaving
    `from_code` at or before `after_ms` (pass the caller's clock to hide trains that have gone) too.
    """
    day = civil.parse_date(date)
    a_st, b_st = _station(conn, from_code), _station(conn, to_code)
    pairs = conn.execute(
        "SELECT a.train_id, a.seq, a.depart_min, a.km, b.seq, b.arrive_min, b.km, t.number, t.name, t.train_type,"
        " (SELECT MAX(seq) FROM train_stops WHERE train_id = a.train_id)"
        " FROM train_stops AS a JOIN train_stops AS b ON b.train_id = a.train_id AND b.seq > a.seq"
        " JOIN trains AS t ON t.id = a.train_id"
        " WHERE a.station_id = ? AND b.station_id = ?",
        (a_st.id, b_st.id),
    ).fetchall()
    out = []
    for train_id, f, dep_min, f_km, t, arr_min, t_km, number, name, ttype, last_seq in pairs:
        # A run departs its origin on run_date at any minute of that day, and reaches `from` dep_min later,
        # so the runs boarding on `day` started on one of these dates.
        first = civil.format_date(day - (dep_min + civil.DAY_MINUTES - 1) // civil.DAY_MINUTES)
        runs = conn.execute(
            "SELECT id, run_date, depart_ms, arrive_override_min, status FROM runs"
            " WHERE train_id = ? AND run_date BETWEEN ? AND ?",
            (train_id, first, civil.format_date(day)),
        ).fetchall()
        for run_id, run_date, depart_ms, override, status in runs:
            if status != "SCHEDULED" and not include_cancelled:
                continue
            board_ms = depart_ms + dep_min * civil.MINUTE_MS
            if civil.local_day(board_ms) != day or board_ms <= after_ms:
                continue
            arrive_min = override if override is not None and t == last_seq else arr_min
            arrive_ms = depart_ms + arrive_min * civil.MINUTE_MS
            out.append(SearchResult(
                run_id, run_date, number, name, ttype, a_st.code, a_st.name, b_st.code, b_st.name, f, t,
                board_ms, arrive_ms, civil.format_local(board_ms), civil.format_local(arrive_ms), t_km - f_km,
                (arrive_ms - board_ms) // civil.MINUTE_MS, status,
                availability(conn, run_id, f, t, t_km - f_km, a_st.code, b_st.code, status != "SCHEDULED"),
            ))
    out.sort(key=lambda r: (r.depart_ms, r.train_number, r.run_id))
    return out


# ============================================================================================ seat map


@dataclass(frozen=True, slots=True)
class Segment:
    """A run's stops [from_seq, to_seq) between two stations, with the train's facts the queries need."""

    run_id: int
    train_id: int
    train_number: int
    train_name: str
    run_status: str
    from_seq: int
    to_seq: int
    distance_km: int


def segment(conn: sqlite3.Connection, run_id: int, from_code: str, to_code: str) -> Segment:
    """Resolve a run and two station codes to stop numbers; NotFound / ValueError if that is not a segment."""
    run = conn.execute(
        "SELECT r.train_id, t.number, t.name, r.status FROM runs AS r JOIN trains AS t ON t.id = r.train_id"
        " WHERE r.id = ?",
        (run_id,),
    ).fetchone()
    if run is None:
        raise NotFound(f"no run {run_id}")
    a = train_stop(conn, run[0], from_code)  # (seq, depart_min, km)
    b = train_stop(conn, run[0], to_code)
    if a is None or b is None:
        raise NotFound(f"train {run[1]} does not stop at {from_code if a is None else to_code}")
    if a[0] >= b[0]:
        raise ValueError(f"train {run[1]} reaches {to_code} before {from_code}")
    return Segment(run_id, run[0], run[1], run[2], run[3], a[0], b[0], b[2] - a[2])


@dataclass(frozen=True, slots=True)
class SeatState:
    """One seat of a coach for a segment."""

    seat_no: int
    label: str
    berth: str
    free: bool


@dataclass(frozen=True, slots=True)
class CoachMap:
    """A coach's seats for a segment."""

    run_id: int
    coach_label: str
    travel_class: str
    from_code: str
    to_code: str
    seats: tuple[SeatState, ...]

    @property
    def free(self) -> int:
        """How many seats are free on the segment."""
        return sum(s.free for s in self.seats)


@dataclass(frozen=True, slots=True)
class CoachSummary:
    """A coach of a run with its free seats on a segment (to pick a coach before its seat map)."""

    coach_label: str
    travel_class: str
    seats: int
    free: int


def coaches(conn: sqlite3.Connection, run_id: int, from_code: str, to_code: str) -> list[CoachSummary]:
    """The run's coaches in composition order, with the seats free on the segment."""
    return coaches_and_seat_map(conn, run_id, "", from_code, to_code)[0]


def seat_map(conn: sqlite3.Connection, run_id: int, coach_label: str, from_code: str, to_code: str) -> CoachMap:
    """Every seat of coach `coach_label` of the run with its berth type and whether it is free on the segment."""
    cmap = coaches_and_seat_map(conn, run_id, coach_label, from_code, to_code)[1]
    if cmap is None:  # no label: no such coach (after the segment's own errors, as for any unknown label)
        raise NotFound(f"run {run_id} has no coach {coach_label}")
    return cmap


def coaches_and_seat_map(conn: sqlite3.Connection, run_id: int, coach_label: str, from_code: str, to_code: str
                         ) -> tuple[list[CoachSummary], CoachMap | None]:
    """The run's coaches with the seats free on the segment, and the seat map of coach `coach_label` (None if
    it is ""): what SeatMap answers, from one look at the run -- its segment, its coaches and the seats taken
    on the segment are read once.  NotFound / ValueError for a bad segment first, then NotFound for an unknown
    coach."""
    seg = segment(conn, run_id, from_code, to_code)
    all_coaches = run_coaches(conn, run_id)
    chosen: Coach | None = None
    if coach_label:
        chosen = next((c for c in all_coaches if c.label == coach_label), None)
        if chosen is None:
            raise NotFound(f"run {run_id} has no coach {coach_label}")
    # Every class at once (allocations_by_class, on run_id): a seat booked on two pieces of the segment
    # counts once, as taken_seats' set does.
    taken = set(conn.execute(
        "SELECT coach_no, seat_no FROM allocations WHERE run_id = ? AND from_seq < ? AND to_seq > ?",
        (run_id, seg.to_seq, seg.from_seq),
    ).fetchall())
    per_coach: dict[int, int] = {}
    for coach_no, _ in taken:
        per_coach[coach_no] = per_coach.get(coach_no, 0) + 1
    summaries = [CoachSummary(c.label, c.travel_class, c.seats, c.seats - per_coach.get(c.coach_no, 0))
                 for c in all_coaches]
    if chosen is None:
        return summaries, None
    no = chosen.coach_no
    return summaries, CoachMap(
        run_id, chosen.label, chosen.travel_class, from_code, to_code,
        tuple(SeatState(n, rules.seat_ref(chosen.label, n), chosen.berth(n), (no, n) not in taken)
              for n in range(1, chosen.seats + 1)),
    )


# ============================================================================================ bookings


@dataclass(frozen=True, slots=True)
class BookingEvent:
    """One step of a booking's history."""

    seq: int
    ts_ms: int
    status: str
    detail: str


@dataclass(frozen=True, slots=True)
class RefundView:
    """A refund of a booking; `settled_ms` None until the provider has paid it out."""

    refund_id: int
    ts_ms: int
    amount_paise: int
    percent: int
    passengers: str
    reason: str
    settled_ms: int | None


@dataclass(frozen=True, slots=True)
class PassengerView:
    """A passenger of a booking.  `seat` "" while waitlisted; a cancelled passenger keeps the seat it had."""

    pax_no: int
    name: str
    age: int
    berth_pref: str
    status: str
    seat: str
    berth: str
    fare_paise: int


@dataclass(frozen=True, slots=True)
class BookingView:
    """A booking as its owner (or an admin, or the PNR-status page) sees it, with its history and refunds."""

    booking_id: int
    pnr: str
    status: str
    username: str
    run_id: int
    run_date: str
    run_status: str
    train_number: int
    train_name: str
    travel_class: str
    from_code: str
    from_name: str
    to_code: str
    to_name: str
    depart_ms: int
    arrive_ms: int
    departure: str
    arrival: str
    amount_paise: int
    paid_paise: int
    refunded_paise: int
    hold_expires_ms: int
    waitlist_position: int
    created_ms: int
    updated_ms: int
    passengers: tuple[PassengerView, ...]
    history: tuple[BookingEvent, ...]
    refunds: tuple[RefundView, ...]

    @property
    def total_fare_paise(self) -> int:
        """The fare of every passenger ever on the booking (cancelled ones included)."""
        return sum(p.fare_paise for p in self.passengers)


_VIEW_SQL = (
    "SELECT b.id, b.pnr, b.status, u.username, b.run_id, r.run_date, r.status, t.number, t.name, b.travel_class,"
    " b.from_seq, b.to_seq, b.board_ms, r.depart_ms, r.arrive_override_min, b.amount_paise, b.paid_paise,"
    " b.refunded_paise, b.hold_expires_ms, b.created_ms, b.updated_ms, b.user_id, r.train_id"
    " FROM bookings AS b JOIN runs AS r ON r.id = b.run_id JOIN trains AS t ON t.id = r.train_id"
    " JOIN users AS u ON u.id = b.user_id"
)


def _ends(conn: sqlite3.Connection, train_id: int, f: int, t: int) -> tuple[list[tuple], int]:
    """The train's stops number f and t as (seq, code, name, arrive_min), and its last stop's number."""
    stops = conn.execute(
        "SELECT s.seq, st.code, st.name, s.arrive_min FROM train_stops AS s JOIN stations AS st"
        " ON st.id = s.station_id WHERE s.train_id = ? AND s.seq IN (?, ?) ORDER BY s.seq",
        (train_id, f, t),
    ).fetchall()
    return stops, conn.execute("SELECT MAX(seq) FROM train_stops WHERE train_id = ?", (train_id,)).fetchone()[0]


def _view(conn: sqlite3.Connection, row: tuple) -> BookingView:
    (b_id, pnr, status, username, run_id, run_date, run_status, number, name, cls, f, t, board_ms, depart_ms,
     override, amount, paid, refunded, expires, created, updated, _user_id, train_id) = row
    stops, last = facts.fact(conn, ("ends", train_id, f, t), lambda: _ends(conn, train_id, f, t))
    arrive_min = override if override is not None and t == last else stops[1][3]
    arrive_ms = depart_ms + arrive_min * civil.MINUTE_MS
    pax = []
    # Each passenger with the label and berth layout of its own coach (not every coach of the run: this is
    # on the path of every Hold's reply).
    for no, p_name, age, pref, p_status, fare, seat_no, label, berths in conn.execute(
        "SELECT p.pax_no, p.name, p.age, p.berth_pref, p.status, p.fare_paise, p.seat_no, rc.label, rc.berths"
        " FROM passengers AS p LEFT JOIN run_coaches AS rc ON rc.run_id = ? AND rc.coach_no = p.coach_no"
        " WHERE p.booking_id = ? ORDER BY p.pax_no",
        (run_id, b_id),
    ):
        if seat_no is not None and label is not None:
            seat, berth = rules.seat_ref(label, seat_no), berth_of(berths.split(","), seat_no)
        else:
            seat = berth = ""
        pax.append(PassengerView(no, p_name, age, pref, p_status, seat, berth, fare))
    position = 0
    if status == "WAITLISTED":
        position = conn.execute(
            "SELECT COUNT(*) FROM bookings WHERE run_id = ? AND travel_class = ? AND status = 'WAITLISTED'"
            " AND id <= ?",
            (run_id, cls, b_id),
        ).fetchone()[0]
    history = tuple(BookingEvent(*r) for r in conn.execute(
        "SELECT seq, ts_ms, status, detail FROM booking_events WHERE booking_id = ? ORDER BY seq", (b_id,)
    ))
    refund_rows = tuple(RefundView(*r) for r in conn.execute(
        "SELECT id, ts_ms, amount_paise, percent, passengers, reason, settled_ms FROM refunds"
        " WHERE booking_id = ? ORDER BY id", (b_id,)
    ))
    return BookingView(
        b_id, pnr, status, username, run_id, run_date, run_status, number, name, cls, stops[0][1], stops[0][2],
        stops[1][1], stops[1][2], board_ms, arrive_ms, civil.format_local(board_ms), civil.format_local(arrive_ms),
        amount, paid, refunded, expires, position, created, updated, tuple(pax), history, refund_rows,
    )


def _booking_row(conn: sqlite3.Connection, pnr: str, user_id: int | None, is_admin: bool) -> tuple | None:
    row = conn.execute(_VIEW_SQL + " WHERE b.pnr = ?", (rules.normalize_pnr(pnr),)).fetchone()
    if row is None or (not is_admin and row[21] != user_id):
        return None
    return row


def booking(conn: sqlite3.Connection, pnr: str, user_id: int, is_admin: bool = False) -> BookingView | None:
    """The booking `pnr` if it is `user_id`'s (any booking for an admin), else None."""
    row = _booking_row(conn, pnr, user_id, is_admin)
    return _view(conn, row) if row else None


def _name_key(name: str) -> str:
    return " ".join(name.casefold().split())


def pnr_status(conn: sqlite3.Connection, pnr: str, passenger_name: str) -> BookingView | None:
    """PNR status without login: the booking if `passenger_name` is one of its passengers (case- and
    space-insensitive), else None (also for an unknown PNR)."""
    try:
        row = conn.execute(_VIEW_SQL + " WHERE b.pnr = ?", (rules.normalize_pnr(pnr),)).fetchone()
    except ValueError:
        return None
    if row is None:
        return None
    key = _name_key(passenger_name)
    names = [r[0] for r in conn.execute("SELECT name FROM passengers WHERE booking_id = ?", (row[0],))]
    if not key or all(_name_key(n) != key for n in names):
        return None
    return _view(conn, row)


def my_bookings(conn: sqlite3.Connection, user_id: int, limit: int = 50, before_pnr: str = "") -> list[BookingView]:
    """The user's bookings, newest first, at most `limit`; `before_pnr` continues after that booking."""
    before = 2**62
    if before_pnr:
        row = conn.execute("SELECT id FROM bookings WHERE pnr = ? AND user_id = ?",
                           (rules.normalize_pnr(before_pnr), user_id)).fetchone()
        if row:
            before = row[0]
    rows = conn.execute(_VIEW_SQL + " WHERE b.user_id = ? AND b.id < ? ORDER BY b.id DESC LIMIT ?",
                        (user_id, before, max(0, min(limit, 500)))).fetchall()
    return [_view(conn, r) for r in rows]


def booking_history(conn: sqlite3.Connection, pnr: str, user_id: int, is_admin: bool = False
                    ) -> tuple[BookingEvent, ...] | None:
    """Every state change of the booking with its time, oldest first; None if not visible to the user."""
    view = booking(conn, pnr, user_id, is_admin)
    return view.history if view else None


# ====================================================================================== proposer helpers


@dataclass(frozen=True, slots=True)
class PaymentQuote:
    """What the proposer needs before charging a card: may it be paid now, and how much."""

    pnr: str
    status: str
    amount_paise: int
    payable: bool
    reason: str


def payment_quote(conn: sqlite3.Connection, pnr: str, user_id: int, now_ms: int) -> PaymentQuote | None:
    """Whether the user's booking `pnr` can be paid at `now_ms`, and the amount due; None if not theirs.

    The gateway calls this BEFORE charging, so a card is not charged for an expired or already paid booking
    (the apply re-checks at its own ts_ms; a charge it refuses comes back with `void_charge`).
    """
    row = conn.execute(
        "SELECT pnr, status, amount_paise, paid_paise, pending_until_ms, hold_expires_ms, user_id FROM bookings"
        " WHERE pnr = ?",
        (rules.normalize_pnr(pnr),),
    ).fetchone()
    if row is None or row[6] != user_id:
        return None
    pnr_, status, amount, paid, pending, expires, _ = row
    if paid:
        return PaymentQuote(pnr_, status, 0, False, f"booking {pnr_} is already paid ({status})")
    if status not in ("HELD", "WAITLISTED"):
        return PaymentQuote(pnr_, status, 0, False, f"booking {pnr_} is {status}")
    if pending is None or pending <= now_ms:
        return PaymentQuote(pnr_, status, 0, False, f"hold expired at {civil.format_local(expires)}")
    return PaymentQuote(pnr_, status, amount, True, "")


@dataclass(frozen=True, slots=True)
class RefundQuote:
    """What cancelling would refund now: amount, percentage, and the rule in words."""

    refund_paise: int
    percent: int
    rule: str


def refund_quote(conn: sqlite3.Connection, pnr: str, user_id: int, passenger_nos: tuple[int, ...], now_ms: int,
                 is_admin: bool = False) -> RefundQuote | None:
    """The refund CancelBooking would give at `now_ms` (the same rule as the apply, store.tariff); None if the
    booking is not visible to the user; ValueError if it cannot be cancelled or a passenger number is wrong."""
    row = _booking_row(conn, pnr, user_id, is_admin)
    if row is None:
        return None
    b_id, status, paid, board_ms = row[0], row[2], row[16], row[12]
    if status not in ("HELD", "CONFIRMED", "WAITLISTED"):
        raise ValueError(f"booking {row[1]} is already {status}")
    fares = dict(conn.execute(
        "SELECT pax_no, fare_paise FROM passengers WHERE booking_id = ? AND status = 'ACTIVE'", (b_id,)
    ).fetchall())
    if len(set(passenger_nos)) != len(passenger_nos):
        raise ValueError("a passenger is listed twice")
    for no in passenger_nos:
        if no not in fares:
            raise ValueError(f"booking {row[1]} has no passenger {no} left to cancel")
    fare = sum(fares[no] for no in (passenger_nos or tuple(fares)))
    if not paid:
        return RefundQuote(0, 0, "nothing was paid, so nothing is refunded")
    percent = 100 if status == "WAITLISTED" else tariff.refund_percent(board_ms, now_ms)
    return RefundQuote(tariff.refund_paise(fare, percent), percent, tariff.REFUND_RULE)


def next_hold_expiry(conn: sqlite3.Connection) -> int | None:
    """The earliest hold_expires_ms of an unpaid booking (the leader proposes ExpireHolds when it has passed),
    or the earliest boarding time of a waitlisted booking if sooner; None if neither exists."""
    a = conn.execute("SELECT MIN(pending_until_ms) FROM bookings WHERE pending_until_ms IS NOT NULL").fetchone()[0]
    b = conn.execute("SELECT MIN(board_ms) FROM bookings WHERE status = 'WAITLISTED'").fetchone()[0]
    known = [x for x in (a, b) if x is not None]
    return min(known) if known else None


@dataclass(frozen=True, slots=True)
class PendingRefund:
    """A refund the provider has yet to pay out (then propose SettleRefunds)."""

    refund_id: int
    pnr: str
    amount_paise: int
    payment_ref: str


def pending_refunds(conn: sqlite3.Connection, limit: int = 100) -> list[PendingRefund]:
    """Unsettled refunds, oldest first."""
    return [PendingRefund(*r) for r in conn.execute(
        "SELECT f.id, b.pnr, f.amount_paise, COALESCE(f.payment_ref, '') FROM refunds AS f"
        " JOIN bookings AS b ON b.id = f.booking_id WHERE f.settled_ms IS NULL ORDER BY f.id LIMIT ?",
        (limit,),
    )]


# ============================================================================================== trains


@dataclass(frozen=True, slots=True)
class StopView:
    """A stop of a route."""

    seq: int
    code: str
    name: str
    arrive_min: int
    depart_min: int
    km: int


@dataclass(frozen=True, slots=True)
class TrainView:
    """A train with its route and default coaches."""

    number: int
    name: str
    train_type: str
    depart_time: str
    stops: tuple[StopView, ...]
    coaches: tuple[Coach, ...]


def _stops(conn: sqlite3.Connection, train_id: int) -> tuple[StopView, ...]:
    return tuple(StopView(*r) for r in conn.execute(
        "SELECT s.seq, st.code, st.name, s.arrive_min, s.depart_min, s.km FROM train_stops AS s"
        " JOIN stations AS st ON st.id = s.station_id WHERE s.train_id = ? ORDER BY s.seq",
        (train_id,),
    ))


def train(conn: sqlite3.Connection, number: int) -> TrainView | None:
    """Train `number` with its route and coaches, or None."""
    row = conn.execute("SELECT id, number, name, train_type, depart_min FROM trains WHERE number = ?",
                       (number,)).fetchone()
    if row is None:
        return None
    coach_rows = conn.execute(
        "SELECT coach_no, label, travel_class, seats, berths FROM train_coaches WHERE train_id = ? ORDER BY coach_no",
        (row[0],),
    ).fetchall()
    return TrainView(row[1], row[2], row[3], civil.format_hhmm(row[4]), _stops(conn, row[0]),
                     tuple(Coach(c[0], c[1], c[2], c[3], tuple(c[4].split(","))) for c in coach_rows))


def trains(conn: sqlite3.Connection, from_station_id: int = 0, to_station_id: int = 0) -> list[TrainView]:
    """All trains (by number); with station ids (0 = any), those calling at the first and later at the second."""
    rows = conn.execute("SELECT number, id FROM trains ORDER BY number").fetchall()
    out = []
    for number, train_id in rows:
        if from_station_id or to_station_id:
            seqs = dict(conn.execute("SELECT station_id, seq FROM train_stops WHERE train_id = ?", (train_id,)))
            a = seqs.get(from_station_id) if from_station_id else -1
            b = seqs.get(to_station_id) if to_station_id else 10**9
            if a is None or b is None or a >= b:
                continue
        view = train(conn, number)
        assert view is not None
        out.append(view)
    return out


@dataclass(frozen=True, slots=True)
class RunView:
    """A scheduled (or cancelled) run of a train."""

    run_id: int
    train_number: int
    run_date: str
    depart_ms: int
    departure: str
    status: str


def runs(conn: sqlite3.Connection, train_number: int, first_date: str, last_date: str) -> list[RunView]:
    """The runs of a train between two dates (inclusive), by departure."""
    civil.parse_date(first_date)
    civil.parse_date(last_date)
    return [RunView(r[0], train_number, r[1], r[2], civil.format_local(r[2]), r[3]) for r in conn.execute(
        "SELECT r.id, r.run_date, r.depart_ms, r.status FROM runs AS r JOIN trains AS t ON t.id = r.train_id"
        " WHERE t.number = ? AND r.run_date BETWEEN ? AND ? ORDER BY r.depart_ms",
        (train_number, first_date, last_date),
    )]


# ============================================================================================== report


@dataclass(frozen=True, slots=True)
class ClassReport:
    """Occupancy and money of one class of a run.

    `legs[i]` = seats taken (held or confirmed) between stop i and stop i+1; `segments` = passengers per
    (from, to) station pair; seat-km: sold vs. offered, and their ratio in percent; `seats_sold` = confirmed
    passengers; revenue = paid - refunded, `refunds_paise` the refunded part.
    """

    travel_class: str
    seats: int
    legs: tuple[int, ...]
    segments: tuple[tuple[str, str, int], ...]
    seat_km_sold: int
    seat_km_offered: int
    occupancy_percent: float
    confirmed_passengers: int
    held_passengers: int
    waitlisted_passengers: int
    revenue_paise: int
    refunds_paise: int

    @property
    def seats_sold(self) -> int:
        """Confirmed passengers (each holds one seat on their segment)."""
        return self.confirmed_passengers


@dataclass(frozen=True, slots=True)
class RunReport:
    """Occupancy and revenue of a run.  revenue = paid - refunded over all its bookings."""

    run_id: int
    train_number: int
    train_name: str
    run_date: str
    status: str
    stops: tuple[str, ...]
    classes: tuple[ClassReport, ...]
    bookings_by_status: tuple[tuple[str, int], ...]
    paid_paise: int
    refunded_paise: int
    revenue_paise: int

    @property
    def bookings(self) -> int:
        """Bookings ever made on the run, in any state."""
        return sum(n for _, n in self.bookings_by_status)

    @property
    def waitlisted(self) -> int:
        """Bookings waiting now."""
        return dict(self.bookings_by_status)["WAITLISTED"]


def run_report(conn: sqlite3.Connection, run_id: int) -> RunReport:
    """The occupancy and revenue report of a run (for admins); NotFound if there is no such run."""
    run = conn.execute(
        "SELECT r.train_id, t.number, t.name, r.run_date, r.status FROM runs AS r JOIN trains AS t"
        " ON t.id = r.train_id WHERE r.id = ?",
        (run_id,),
    ).fetchone()
    if run is None:
        raise NotFound(f"no run {run_id}")
    stops = _stops(conn, run[0])
    codes = tuple(s.code for s in stops)
    kms = [s.km for s in stops]
    classes = []
    for cls, seats in sorted(conn.execute("SELECT travel_class, seats FROM run_classes WHERE run_id = ?", (run_id,)),
                             key=lambda r: _CLASS_ORDER[r[0]]):
        legs = [0] * (len(stops) - 1)
        seat_km = 0
        for f, t in conn.execute(
            "SELECT from_seq, to_seq FROM allocations WHERE run_id = ? AND travel_class = ?", (run_id, cls)
        ):
            for i in range(f, t):
                legs[i] += 1
            seat_km += kms[t] - kms[f]
        pax: dict[str, int] = {}
        segs: dict[tuple[int, int], int] = {}
        for status, f, t, n in conn.execute(
            "SELECT b.status, b.from_seq, b.to_seq, COUNT(*) FROM bookings AS b JOIN passengers AS p"
            " ON p.booking_id = b.id AND p.status = 'ACTIVE' WHERE b.run_id = ? AND b.travel_class = ?"
            " GROUP BY b.status, b.from_seq, b.to_seq",
            (run_id, cls),
        ):
            pax[status] = pax.get(status, 0) + n
            if status in ("HELD", "CONFIRMED"):
                segs[(f, t)] = segs.get((f, t), 0) + n
        cls_paid, cls_refunded = conn.execute(
            "SELECT COALESCE(SUM(paid_paise), 0), COALESCE(SUM(refunded_paise), 0) FROM bookings"
            " WHERE run_id = ? AND travel_class = ?",
            (run_id, cls),
        ).fetchone()
        offered = seats * (kms[-1] - kms[0])
        classes.append(ClassReport(
            cls, seats, tuple(legs), tuple((codes[f], codes[t], n) for (f, t), n in sorted(segs.items())),
            seat_km, offered, round(100.0 * seat_km / offered, 2) if offered else 0.0,
            pax.get("CONFIRMED", 0), pax.get("HELD", 0), pax.get("WAITLISTED", 0), cls_paid - cls_refunded,
            cls_refunded,
        ))
    counts = dict(conn.execute("SELECT status, COUNT(*) FROM bookings WHERE run_id = ? GROUP BY status", (run_id,)))
    paid, refunded = conn.execute(
        "SELECT COALESCE(SUM(paid_paise), 0), COALESCE(SUM(refunded_paise), 0) FROM bookings WHERE run_id = ?",
        (run_id,),
    ).fetchone()
    return RunReport(
        run_id, run[1], run[2], run[3], run[4], codes, tuple(classes),
        tuple((s, counts.get(s, 0)) for s in BOOKING_STATES), paid, refunded, paid - refunded,
    )
