"""The booking domain at the state-machine level (sync sqlite3): every rule of store/booking.py.

A small world: four stations P -> Q -> R -> S (100 km apart), train 100 (coaches A1, A2: 6 AC2 seats each; S1: 8
sleeper berths) leaving P at 08:00, train 200 (one GENERAL seat, so "sold out" is one booking away) leaving
P at 22:30 (so its later stops are on the next date), both run on 2026-06-05.  "Now" is 2026-06-01 09:00 IST.
"""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path

import pytest

from store import booking_queries as bq
from store import civil, compat, queries, schema, tariff
from store.booking import Coach, allocate, int_to_pnr, pnr_to_int
from store.commands import (
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
    ClassPrice,
    CoachSpec,
    ConfirmPayment,
    CreateSession,
    CreateStation,
    ExpireHolds,
    HoldSeats,
    PassengerSpec,
    RefundSettlement,
    RegisterUser,
    Result,
    RevokeSession,
    ScheduleRuns,
    SetUserRole,
    SettleRefunds,
    StopSpec,
    encode_command,
)
from store.state_machine import KIND_NORMAL, apply_batch

MIN = 60_000
HOUR = 60 * MIN
DAY_MS = 24 * HOUR
T0 = civil.parse_datetime("2026-06-01 09:00")
DAY = "2026-06-05"
BOARD_P = civil.parse_datetime(f"{DAY} 08:00")  # train 100 leaves P
ADMIN, ALICE, BOB, CAROL = "a" * 64, "b" * 64, "c" * 64, "d" * 64
RUN, RUN1SEAT = 1, 2

ROUTE = (
    StopSpec(station_code="PPP", arrive_min=0, depart_min=0, km=0),
    StopSpec(station_code="QQQ", arrive_min=60, depart_min=65, km=100),
    StopSpec(station_code="RRR", arrive_min=120, depart_min=125, km=200),
    StopSpec(station_code="SSS", arrive_min=180, depart_min=180, km=300),
)
COACHES = (
    CoachSpec(label="A1", travel_class="AC2", seats=6),
    CoachSpec(label="A2", travel_class="AC2", seats=6),
    CoachSpec(label="S1", travel_class="SLEEPER", seats=8),
)


class World:
    """A database plus helpers that stamp request ids, log indexes and times."""

    def __init__(self, conn: sqlite3.Connection) -> None:
        self.conn = conn
        self.index = 0
        self._rid = itertools.count(1)
        self._pnr = itertools.count(1)
        self.log: list[tuple[int, int, bytes]] = []  # every entry applied, for replaying elsewhere
        self.results: list[Result] = []

    def entries(self, cmds) -> list[tuple[int, int, bytes]]:
        out = []
        for c in cmds:
            self.index += 1
            out.append((self.index, KIND_NORMAL, encode_command(c)))
        return out

    def apply(self, *cmds) -> list[Result]:
        batch = self.entries(cmds)
        results = apply_batch(self.conn, batch)
        self.log += batch
        self.results += results  # type: ignore[arg-type]
        return results  # type: ignore[return-value]

    def one(self, cmd) -> Result:
        return self.apply(cmd)[0]

    def cmd(self, cls, *, ts: int = T0, client: str = "c1", rid: str | None = None, **fields):
        return cls(request_id=rid if rid is not None else f"r{next(self._rid)}", client_id=client, ts_ms=ts, **fields)

    def new_pnr(self) -> str:
        return int_to_pnr(next(self._pnr) * 1_000_003)

    def hold(self, token: str, run: int = RUN, cls: str = "AC2", f: str = "PPP", t: str = "SSS", *,
             names=("Asha",), prefs=None, seats=None, waitlist=False, ts: int = T0, pnr: str | None = None,
             hold_seconds: int = 600, rid: str | None = None) -> Result:
        prefs = prefs or [""] * len(names)
        seats = seats or [""] * len(names)
        pax = tuple(PassengerSpec(name=n, age=30, berth_pref=p, seat=s) for n, p, s in zip(names, prefs, seats))
        return self.one(self.cmd(HoldSeats, ts=ts, rid=rid, token_sha256=token, pnr=pnr or self.new_pnr(), run_id=run,
                                 travel_class=cls, from_code=f, to_code=t, passengers=pax, accept_waitlist=waitlist,
                                 hold_seconds=hold_seconds))

    def amount(self, pnr: str) -> int:
        return self.conn.execute("SELECT amount_paise FROM bookings WHERE pnr = ?", (pnr,)).fetchone()[0]

    def pay(self, token: str, pnr: str, *, ts: int = T0 + MIN, approved: bool = True, amount: int | None = None,
            ref: str | None = None, rid: str | None = None) -> Result:
        return self.one(self.cmd(ConfirmPayment, ts=ts, rid=rid, token_sha256=token, pnr=pnr,
                                 amount_paise=self.amount(pnr) if amount is None else amount,
                                 provider_ref=ref or f"sim-{pnr}", approved=approved,
                                 decline_reason="" if approved else "card declined"))

    def cancel(self, token: str, pnr: str, pax=(), *, ts: int = T0 + 2 * MIN) -> Result:
        return self.one(self.cmd(CancelBooking, ts=ts, token_sha256=token, pnr=pnr, passenger_nos=tuple(pax)))

    def expire(self, now: int) -> Result:
        return self.one(self.cmd(ExpireHolds, ts=now, rid="", client="leader", now_ms=now))

    def status(self, pnr: str) -> str:
        return self.conn.execute("SELECT status FROM bookings WHERE pnr = ?", (pnr,)).fetchone()[0]

    def free(self, run: int = RUN, f: str = "PPP", t: str = "SSS", cls: str = "AC2") -> int:
        seg = bq.segment(self.conn, run, f, t)
        return {c.travel_class: c.free for c in bq.availability(self.conn, run, seg.from_seq, seg.to_seq, 0, f, t)}[cls]

    def setup(self) -> World:
        res = self.apply(
            self.cmd(BootstrapAdmin, username="admin", password_hash="h"),
            *[self.cmd(RegisterUser, username=u, password_hash="h", role="CUSTOMER") for u in ("alice", "bob", "carol")],
            *[self.cmd(CreateSession, user_id=i, token_sha256=tok, expires_at_ms=T0 + 30 * DAY_MS)
              for i, tok in enumerate((ADMIN, ALICE, BOB, CAROL), start=1)],
            *[self.cmd(CreateStation, token_sha256=ADMIN, code=c, name=f"{c.title()} Junction")
              for c in ("PPP", "QQQ", "RRR", "SSS", "XXX")],
            self.cmd(AddTrain, token_sha256=ADMIN, number=100, name="Test Express", train_type="EXPRESS",
                     depart_time="08:00", stops=ROUTE, coaches=COACHES),
            self.cmd(AddTrain, token_sha256=ADMIN, number=200, name="Night Local", train_type="LOCAL",
                     depart_time="22:30", stops=ROUTE,
                     coaches=(CoachSpec(label="G1", travel_class="GENERAL", seats=1),)),
            self.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=100, first_date=DAY, last_date=DAY),
            self.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=200, first_date=DAY, last_date=DAY),
        )
        assert all(r.ok for r in res), [r for r in res if not r.ok]
        return self


@pytest.fixture
def conn(tmp_path: Path):
    c = schema.connect(tmp_path / "node.db")
    yield c
    c.close()


@pytest.fixture
def w(conn) -> World:
    return World(conn).setup()


# ============================================================================================ admin


def test_bootstrap_admin_only_once(w: World) -> None:
    again = w.one(w.cmd(BootstrapAdmin, username="root2", password_hash="h"))
    assert again.code == FAILED_PRECONDITION and "already exists" in again.message
    assert queries.user_by_name(w.conn, "admin").role == "ADMIN"


def test_admin_commands_refused_for_customers_and_strangers(w: World) -> None:
    admin_only = [
        lambda tok: w.cmd(CreateStation, token_sha256=tok, code="ZZZ", name="Z"),
        lambda tok: w.cmd(AddTrain, token_sha256=tok, number=300, name="X", train_type="EXPRESS",
                          depart_time="08:00", stops=ROUTE, coaches=COACHES),
        lambda tok: w.cmd(ScheduleRuns, token_sha256=tok, train_number=100, first_date="2026-06-06",
                          last_date="2026-06-06"),
        lambda tok: w.cmd(AddTrainService, token_sha256=tok, train_number=100, departure="2026-06-07 10:00",
                          arrival="", seats=()),
        lambda tok: w.cmd(CancelRun, token_sha256=tok, run_id=RUN),
        lambda tok: w.cmd(SetUserRole, token_sha256=tok, username="alice", role="ADMIN"),
    ]
    before = queries.canonical_dump(w.conn)
    for make in admin_only:
        assert w.one(make(ALICE)).code == PERMISSION_DENIED
        assert w.one(make("e" * 64)).code == UNAUTHENTICATED
    # Only the index, the clock and remembered results changed.
    after = queries.canonical_dump(w.conn)
    assert [ln for ln in after.splitlines() if ln.startswith("  ") and "'c1'" not in ln and "_index" not in ln
            and "clock_ms" not in ln] == [ln for ln in before.splitlines() if ln.startswith("  ")
                                           and "'c1'" not in ln and "_index" not in ln and "clock_ms" not in ln]


def test_sessions_are_checked_at_the_commands_time(w: World) -> None:
    assert w.hold(ALICE, ts=T0 + 30 * DAY_MS).code == UNAUTHENTICATED  # expired by then
    assert w.one(w.cmd(RevokeSession, token_sha256=BOB)).ok
    assert w.hold(BOB).code == UNAUTHENTICATED
    assert w.hold(ALICE).ok


def test_set_user_role_and_last_admin(w: World) -> None:
    assert w.one(w.cmd(SetUserRole, token_sha256=ADMIN, username="admin", role="CUSTOMER")).code == FAILED_PRECONDITION
    assert w.one(w.cmd(SetUserRole, token_sha256=ADMIN, username="ghost", role="ADMIN")).code == NOT_FOUND
    assert w.one(w.cmd(SetUserRole, token_sha256=ADMIN, username="bob", role="ADMIN")).ok
    assert w.one(w.cmd(CreateStation, token_sha256=BOB, code="BOB", name="Bob Nagar")).ok
    assert w.one(w.cmd(SetUserRole, token_sha256=BOB, username="admin", role="CUSTOMER")).ok


def _stops(*spec):
    return tuple(StopSpec(station_code=c, arrive_min=a, depart_min=d, km=k) for c, a, d, k in spec)


@pytest.mark.parametrize(
    ("fields", "code", "needle"),
    [
        ({"number": 100}, ALREADY_EXISTS, "already exists"),
        ({"stops": _stops(("PPP", 0, 0, 0), ("ZZZ", 10, 10, 10))}, NOT_FOUND, "unknown station code ZZZ"),
        ({"stops": _stops(("PPP", 0, 0, 0))}, INVALID_ARGUMENT, "2 to 60 stops"),
        ({"stops": _stops(("PPP", 0, 0, 0), ("PPP", 10, 10, 10))}, INVALID_ARGUMENT, "appears twice"),
        ({"stops": _stops(("PPP", 0, 0, 0), ("QQQ", 10, 10, 0))}, INVALID_ARGUMENT, "farther"),
        ({"stops": _stops(("PPP", 0, 0, 0), ("QQQ", 10, 5, 10))}, INVALID_ARGUMENT, "departs before"),
        ({"stops": _stops(("PPP", 5, 5, 0), ("QQQ", 10, 10, 10))}, INVALID_ARGUMENT, "minute 0"),
        ({"stops": _stops(("PPP", 0, 0, 0), ("QQQ", 10, 15, 10))}, INVALID_ARGUMENT, "last stop"),
        ({"coaches": ()}, INVALID_ARGUMENT, "1 to 100 coaches"),
        ({"coaches": (CoachSpec(label="A1", travel_class="AC2", seats=6),) * 2}, INVALID_ARGUMENT, "twice"),
        ({"coaches": (CoachSpec(label="A1", travel_class="FIRST", seats=6),)}, INVALID_ARGUMENT, "class must be"),
        ({"coaches": (CoachSpec(label="A1", travel_class="AC2", seats=0),)}, INVALID_ARGUMENT, "seat count"),
        ({"coaches": (CoachSpec(label="A1", travel_class="AC2", seats=4, berths=("TOP",)),)}, INVALID_ARGUMENT,
         "berth must be"),
        ({"train_type": "ROCKET"}, INVALID_ARGUMENT, "train type"),
        ({"depart_time": "25:00"}, INVALID_ARGUMENT, "HH:MM"),
        ({"name": " x"}, INVALID_ARGUMENT, "spaces"),
    ],
)
def test_add_train_rules(w: World, fields, code, needle) -> None:
    base = dict(token_sha256=ADMIN, number=300, name="New Train", train_type="EXPRESS", depart_time="08:00",
                stops=ROUTE, coaches=COACHES)
    base.update(fields)
    r = w.one(w.cmd(AddTrain, **base))
    assert r.code == code and needle in r.message, r


def test_schedule_runs_skips_existing_dates_and_refuses_the_past(w: World) -> None:
    r = w.one(w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=100, first_date="2026-06-04",
                    last_date="2026-06-06", prices=(ClassPrice(travel_class="SLEEPER", price_paise=12_345),)))
    assert r.ok and r.data == {"run_ids": [3, 4], "skipped_dates": [DAY]}
    assert w.one(w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=100, first_date="2026-05-31",
                       last_date="2026-06-02")).code == INVALID_ARGUMENT
    assert w.one(w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=999, first_date=DAY,
                       last_date=DAY)).code == NOT_FOUND
    bad_price = w.one(w.cmd(ScheduleRuns, token_sha256=ADMIN, train_number=100, first_date="2026-06-09",
                            last_date="2026-06-09", prices=(ClassPrice(travel_class="AC1", price_paise=100),)))
    assert bad_price.code == INVALID_ARGUMENT and "no AC1" in bad_price.message
    [res] = bq.search(w.conn, "PPP", "QQQ", "2026-06-06")
    fares = {c.travel_class: c.fare_paise for c in res.classes}
    assert fares == {"AC2": tariff.fare_paise("AC2", 100), "SLEEPER": 12_345}
    assert [r.run_date for r in bq.runs(w.conn, 100, "2026-06-01", "2026-06-30")] == [
        "2026-06-04", DAY, "2026-06-06"]


# =========================================================================================== search


def test_search_finds_runs_in_stop_order_with_times_and_fares(w: World) -> None:
    results = bq.search(w.conn, "QQQ", "SSS", DAY)
    assert [(r.train_number, r.departure, r.arrival, r.distance_km) for r in results] == [
        (100, f"{DAY} 09:05", f"{DAY} 11:00", 200),
        (200, f"{DAY} 23:35", "2026-06-06 01:30", 200),
    ]
    r = results[0]
    assert r.classes == (
        bq.ClassAvailability("AC2", 12, 12, tariff.fare_paise("AC2", 200), "R1-AC2-QQQ-SSS"),
        bq.ClassAvailability("SLEEPER", 8, 8, tariff.fare_paise("SLEEPER", 200), "R1-SLEEPER-QQQ-SSS"),
    )
    assert bq.search(w.conn, "SSS", "QQQ", DAY) == []  # wrong direction
    assert bq.search(w.conn, "PPP", "XXX", DAY) == []  # no train calls there
    assert bq.search(w.conn, "QQQ", "SSS", "2026-06-06") == []
    assert [r.train_number for r in bq.search(w.conn, "QQQ", "SSS", DAY, after_ms=BOARD_P + 65 * MIN)] == [200]
    with pytest.raises(bq.NotFound):
        bq.search(w.conn, "PPP", "NOPE", DAY)
    with pytest.raises(ValueError):
        bq.search(w.conn, "PPP", "SSS", "2026-02-30")


def test_search_uses_the_boarding_stations_date(w: World) -> None:
    # Train 200 leaves P at 22:30 on DAY; it reaches R at 00:35 and S at 01:30 the next day.
    assert [r.train_number for r in bq.search(w.conn, "PPP", "SSS", DAY)] == [100, 200]
    [night] = bq.search(w.conn, "RRR", "SSS", "2026-06-06")
    assert (night.train_number, night.departure, night.arrival, night.run_date) == (
        200, "2026-06-06 00:35", "2026-06-06 01:30", DAY)
    assert [r.train_number for r in bq.search(w.conn, "RRR", "SSS", DAY)] == [100]


def test_seat_map_and_coaches(w: World) -> None:
    w.hold(ALICE, f="PPP", t="QQQ", seats=["A1-2"])
    m = bq.seat_map(w.conn, RUN, "A1", "PPP", "RRR")
    assert [(s.label, s.berth, s.free) for s in m.seats] == [
        ("A1-1", "LOWER", True), ("A1-2", "UPPER", False), ("A1-3", "LOWER", True), ("A1-4", "UPPER", True),
        ("A1-5", "SIDE_LOWER", True), ("A1-6", "SIDE_UPPER", True),
    ]
    assert bq.seat_map(w.conn, RUN, "A1", "QQQ", "SSS").free == 6  # the seat is free after Q
    assert [(c.coach_label, c.free) for c in bq.coaches(w.conn, RUN, "PPP", "SSS")] == [
        ("A1", 5), ("A2", 6), ("S1", 8)]
    with pytest.raises(bq.NotFound):
        bq.seat_map(w.conn, RUN, "Z9", "PPP", "SSS")


# =================================================================================== seat inventory


def test_segment_reuse_back_to_back_and_overlap_refused(w: World) -> None:
    one = dict(run=RUN1SEAT, cls="GENERAL")
    a = w.hold(ALICE, f="PPP", t="QQQ", **one)
    b = w.hold(BOB, f="QQQ", t="SSS", **one)  # back to back: the same seat
    assert a.ok and b.ok and a.data["seats"] == b.data["seats"] == ["G1-1"]
    c = w.hold(CAROL, f="PPP", t="RRR", **one)
    assert c.code == FAILED_PRECONDITION and c.message.startswith("sold out: 0 GENERAL seat(s) free from PPP to RRR")
    assert [w.free(RUN1SEAT, f, t, "GENERAL") for f, t in (("PPP", "QQQ"), ("QQQ", "RRR"), ("PPP", "SSS"))] == [0, 0, 0]
    assert w.cancel(ALICE, a.data["pnr"]).ok
    assert w.free(RUN1SEAT, "PPP", "QQQ", "GENERAL") == 1
    assert w.free(RUN1SEAT, "PPP", "RRR", "GENERAL") == 0
    assert w.hold(CAROL, f="PPP", t="QQQ", **one).ok


def test_chosen_seats_used_when_free_else_automatic(w: World) -> None:
    r = w.hold(ALICE, names=("A", "B"), seats=["A2-5", "A2-6"])
    assert r.data["seats"] == ["A2-5", "A2-6"] and r.data["chosen_seats_honoured"] is True
    r = w.hold(BOB, names=("C", "D"), seats=["A2-6", "A2-1"])  # A2-6 is taken: choices ignored
    assert r.data["seats"] == ["A1-1", "A1-2"] and r.data["chosen_seats_honoured"] is False
    bad = w.hold(CAROL, seats=["S1-1"])  # a sleeper berth in an AC2 booking
    assert bad.code == INVALID_ARGUMENT and "not a AC2 seat" in bad.message
    assert w.hold(CAROL, seats=["A1-7"]).code == INVALID_ARGUMENT
    assert w.hold(CAROL, names=("E", "F"), seats=["A1-3", "A1-3"]).code == INVALID_ARGUMENT


def _coach(no: int, label: str, seats: int, berths=("LOWER", "UPPER", "LOWER", "UPPER", "SIDE_LOWER", "SIDE_UPPER")):
    return Coach(no, label, "AC2", seats, berths)


def test_allocate_preferences_party_together_and_spread() -> None:
    a1, a2, a3 = _coach(1, "A1", 6), _coach(2, "A2", 6), _coach(3, "A3", 6)
    coaches = [a1, a2, a3]
    # Preferences met in the first coach, others get the lowest remaining seats.
    assert allocate(coaches, set(), ["SIDE_UPPER", "", "UPPER"]) == ([(1, 6), (1, 1), (1, 2)], False)
    # A1 has only 2 free seats: a party of 3 goes together to A2.
    taken = {(1, s) for s in (1, 2, 3, 4)}
    assert allocate(coaches, taken, ["", "", ""]) == ([(2, 1), (2, 2), (2, 3)], False)
    # A1 fits the party but has no LOWER left; A2 has one: together AND preference beats first-coach order.
    taken = {(1, 1), (1, 3)} | {(2, s) for s in (2, 3, 4, 5, 6)} | {(3, 1), (3, 3)}
    assert allocate(coaches, taken, ["LOWER"]) == ([(2, 1)], False)
    # Nobody can have a LOWER and two fit in A1 only: together, preference dropped.
    taken = {(1, 1), (1, 3), (1, 5), (1, 6)} | {(2, s) for s in range(1, 7)} | {(3, s) for s in range(1, 6)}
    assert allocate(coaches, taken, ["LOWER", ""]) == ([(1, 2), (1, 4)], False)
    # No coach holds the party: spread, lowest coach and seat first.
    taken = {(1, s) for s in range(1, 6)} | {(2, s) for s in range(1, 6)} | {(3, s) for s in range(1, 6)}
    assert allocate(coaches, taken, ["", "", ""]) == ([(1, 6), (2, 6), (3, 6)], False)
    # Not enough seats at all.
    assert allocate(coaches, taken, ["", "", "", ""]) is None
    # Chosen seats (some passengers), the rest automatic, preferences respected for the rest.
    assert allocate(coaches, set(), ["", "UPPER"], [(3, 5), None]) == ([(3, 5), (1, 2)], True)
    assert allocate(coaches, {(3, 5)}, ["", ""], [(3, 5), (3, 6)]) == ([(1, 1), (1, 2)], False)


def test_allocation_through_hold_is_deterministic_and_prefers_berths(w: World) -> None:
    r = w.hold(ALICE, cls="SLEEPER", names=("A", "B", "C"), prefs=["UPPER", "SIDE_LOWER", "LOWER"])
    assert r.data["seats"] == ["S1-3", "S1-7", "S1-1"]
    v = bq.booking(w.conn, r.data["pnr"], 2)
    assert [(p.seat, p.berth) for p in v.passengers] == [("S1-3", "UPPER"), ("S1-7", "SIDE_LOWER"), ("S1-1", "LOWER")]


@pytest.mark.parametrize(
    ("names", "ages", "prefs", "needle"),
    [
        (tuple(f"P{i}" for i in range(7)), None, None, "1 to 6 passengers"),
        ((), None, None, "1 to 6 passengers"),
        (("Old",), (126,), None, "age"),
        (("Neg",), (-1,), None, "age"),
        (("",), None, None, "empty"),
        (("x" * 65,), None, None, "at most 64"),
        (("Tab\tName",), None, None, "control"),
        (("A",), None, ("TOP",), "berth"),
    ],
)
def test_passenger_rules(w: World, names, ages, prefs, needle) -> None:
    ages = ages or (30,) * len(names)
    prefs = prefs or ("",) * len(names)
    pax = tuple(PassengerSpec(name=n, age=a, berth_pref=p) for n, a, p in zip(names, ages, prefs))
    r = w.one(w.cmd(HoldSeats, token_sha256=ALICE, pnr=w.new_pnr(), run_id=RUN, travel_class="AC2", from_code="PPP",
                    to_code="SSS", passengers=pax))
    assert r.code == INVALID_ARGUMENT and needle in r.message, r


def test_six_passengers_is_the_limit(w: World) -> None:
    assert w.hold(ALICE, names=tuple(f"P{i}" for i in range(6))).data["seats"] == [f"A1-{i}" for i in range(1, 7)]


@pytest.mark.parametrize(
    ("kw", "code", "needle"),
    [
        ({"run": 99}, NOT_FOUND, "no run 99"),
        ({"cls": "AC1"}, NOT_FOUND, "no AC1"),
        ({"f": "XXX"}, NOT_FOUND, "does not stop at XXX"),
        ({"f": "SSS", "t": "PPP"}, INVALID_ARGUMENT, "reaches PPP before SSS"),
        ({"f": "PPP", "t": "PPP"}, INVALID_ARGUMENT, "must differ"),
        ({"ts": BOARD_P}, FAILED_PRECONDITION, "left PPP"),
        ({"hold_seconds": 10}, INVALID_ARGUMENT, "hold duration"),
        ({"pnr": "ABC"}, INVALID_ARGUMENT, "PNR"),
        ({"pnr": "ABCDEFGHI1"}, INVALID_ARGUMENT, "PNR"),
    ],
)
def test_hold_rules(w: World, kw, code, needle) -> None:
    r = w.hold(ALICE, **kw)
    assert r.code == code and needle in r.message, r


def test_pnr_collision_moves_to_the_next_free_pnr(w: World) -> None:
    a = w.hold(ALICE, pnr="2222222222")
    b = w.hold(BOB, pnr="2222222222")
    c = w.hold(BOB, pnr="ZZZZZZZZZZ")
    d = w.hold(BOB, pnr="ZZZZZZZZZZ")
    assert (a.data["pnr"], b.data["pnr"], c.data["pnr"], d.data["pnr"]) == (
        "2222222222", "2222222223", "ZZZZZZZZZZ", "2222222224")  # wraps around the PNR space
    assert int_to_pnr(pnr_to_int("K7M29XQ4AB")) == "K7M29XQ4AB"


def test_hold_is_exactly_once(w: World) -> None:
    first = w.hold(ALICE, rid="same", pnr="3333333333")
    again = w.hold(ALICE, rid="same", pnr="4444444444")  # a client retry through another gateway: new PNR
    assert first == again and first.data["pnr"] == "3333333333"
    assert w.conn.execute("SELECT COUNT(*) FROM bookings").fetchone()[0] == 1


# ========================================================================================= expiry


def test_hold_expiry_releases_seats_at_expire_holds(w: World) -> None:
    r = w.hold(ALICE, names=("A", "B"), hold_seconds=300)
    pnr, expires = r.data["pnr"], r.data["hold_expires_ms"]
    assert expires == T0 + 300_000 and w.free() == 10
    assert w.expire(expires - 1).data["expired"] == 0
    assert w.status(pnr) == "HELD" and bq.next_hold_expiry(w.conn) == expires
    bad = w.one(w.cmd(ExpireHolds, ts=expires - 1, rid="", now_ms=expires))
    assert bad.code == INVALID_ARGUMENT  # a leader cannot expire the future
    assert w.expire(expires).data == {"expired": 1, "waitlist_refunded": 0, "promoted": [], "more": False}
    assert w.status(pnr) == "EXPIRED" and w.free() == 12 and bq.next_hold_expiry(w.conn) is None
    paid = w.pay(ALICE, pnr, ts=expires + 1)
    assert paid.code == FAILED_PRECONDITION and paid.message.startswith("hold expired at 2026-06-01 09:05")
    assert paid.data["void_charge"] is True
    hist = bq.booking_history(w.conn, pnr, 2)
    assert [(e.status, e.ts_ms) for e in hist] == [("HELD", T0), ("EXPIRED", expires)]


def test_expire_holds_works_in_bounded_batches(w: World, monkeypatch) -> None:
    from store import booking
    monkeypatch.setattr(booking, "EXPIRE_BATCH", 2)
    pnrs = [w.hold(ALICE, ts=T0 + i).data["pnr"] for i in range(3)]
    first = w.expire(T0 + HOUR)
    assert first.data["expired"] == 2 and first.data["more"] is True
    assert [w.status(p) for p in pnrs] == ["EXPIRED", "EXPIRED", "HELD"]
    assert w.expire(T0 + HOUR).data == {"expired": 1, "waitlist_refunded": 0, "promoted": [], "more": False}


# ========================================================================================= payment


def test_payment_owner_only_declined_idempotent_and_once(w: World) -> None:
    pnr = w.hold(ALICE, names=("A", "B")).data["pnr"]
    due = w.amount(pnr)
    assert due == 2 * tariff.fare_paise("AC2", 300)
    assert w.pay(BOB, pnr).code == NOT_FOUND  # not bob's: same answer as a PNR that does not exist
    assert w.pay(BOB, "5555555555", amount=1).code == NOT_FOUND
    declined = w.pay(ALICE, pnr, approved=False)
    assert declined.code == FAILED_PRECONDITION and declined.message.startswith("payment declined: card declined")
    assert declined.data == {"declined": True, "status": "HELD"} and w.status(pnr) == "HELD"
    wrong = w.pay(ALICE, pnr, amount=due - 1)
    assert wrong.code == FAILED_PRECONDITION and wrong.data["void_charge"] is True
    ok = w.pay(ALICE, pnr, rid="pay-1", ref="sim_ch_1")
    assert ok.ok and ok.data == {"pnr": pnr, "status": "CONFIRMED", "paid_paise": due}
    assert w.pay(ALICE, pnr, rid="pay-1", ref="sim_ch_1") == ok  # retry: the first result, charged once
    twice = w.pay(ALICE, pnr, rid="pay-2", ref="sim_ch_2")  # a second, different payment request
    assert twice.code == FAILED_PRECONDITION and "already paid" in twice.message
    assert twice.data["void_charge"] is True
    assert w.conn.execute("SELECT COUNT(*), SUM(amount_paise) FROM payments").fetchone() == (1, due)
    v = bq.booking(w.conn, pnr, 2)
    assert (v.status, v.paid_paise, [e.status for e in v.history]) == ("CONFIRMED", due, ["HELD", "CONFIRMED"])
    # A provider reference pays one booking only.
    other = w.hold(ALICE).data["pnr"]
    reuse = w.pay(ALICE, other, ref="sim_ch_1")
    assert reuse.code == FAILED_PRECONDITION and "void_charge" not in reuse.data


def test_payment_quote_for_the_proposer(w: World) -> None:
    pnr = w.hold(ALICE).data["pnr"]
    q = bq.payment_quote(w.conn, pnr, 2, T0 + MIN)
    assert q.payable and q.amount_paise == w.amount(pnr)
    assert bq.payment_quote(w.conn, pnr, 3, T0) is None
    assert not bq.payment_quote(w.conn, pnr, 2, T0 + 600_000).payable
    w.pay(ALICE, pnr)
    assert "already paid" in bq.payment_quote(w.conn, pnr, 2, T0 + MIN).reason


# ==================================================================================== cancellation


def _paid(w: World, token: str = ALICE, **kw) -> str:
    pnr = w.hold(token, **kw).data["pnr"]
    assert w.pay(token, pnr).ok
    return pnr


@pytest.mark.parametrize(
    ("before_ms", "percent"),
    [
        (48 * HOUR + 1, 90),
        (48 * HOUR, 50),
        (4 * HOUR, 50),
        (4 * HOUR - 1, 0),
        (-HOUR, 0),  # after departure
    ],
)
def test_refund_rule_at_the_boundaries(w: World, before_ms: int, percent: int) -> None:
    pnr = _paid(w, names=("A", "B"))
    fare = tariff.fare_paise("AC2", 300)
    at = BOARD_P - before_ms
    assert bq.refund_quote(w.conn, pnr, 2, (), at) == bq.RefundQuote(2 * fare * percent // 100, percent,
                                                                      tariff.REFUND_RULE)
    r = w.cancel(ALICE, pnr, ts=at)
    assert r.ok and r.data["refund_percent"] == percent and r.data["refund_paise"] == 2 * fare * percent // 100
    row = w.conn.execute("SELECT amount_paise, percent, passengers, settled_ms FROM refunds").fetchone()
    assert row == (2 * fare * percent // 100, percent, "1,2", at if percent == 0 else None)
    assert w.status(pnr) == "CANCELLED" and w.free() == 12


def test_partial_cancellation(w: World) -> None:
    pnr = _paid(w, names=("A", "B", "C"))
    fare = tariff.fare_paise("AC2", 300)
    r = w.cancel(ALICE, pnr, [2])
    assert r.ok and r.data["status"] == "CONFIRMED" and r.data["refund_paise"] == fare * 90 // 100
    v = bq.booking(w.conn, pnr, 2)
    assert [(p.status, p.seat) for p in v.passengers] == [("ACTIVE", "A1-1"), ("CANCELLED", "A1-2"), ("ACTIVE", "A1-3")]
    assert (v.status, v.amount_paise, v.paid_paise, v.refunded_paise) == ("CONFIRMED", 2 * fare, 3 * fare,
                                                                         fare * 90 // 100)
    assert bq.seat_map(w.conn, RUN, "A1", "PPP", "SSS").seats[1].free
    assert w.cancel(ALICE, pnr, [2]).code == INVALID_ARGUMENT  # already cancelled
    assert w.cancel(ALICE, pnr, [1, 1]).code == INVALID_ARGUMENT
    assert w.cancel(ALICE, pnr, [9]).code == INVALID_ARGUMENT
    assert w.cancel(ALICE, pnr, [1, 3]).data["status"] == "CANCELLED"
    assert w.cancel(ALICE, pnr).code == FAILED_PRECONDITION
    assert w.free() == 12
    assert [f.amount_paise for f in bq.booking(w.conn, pnr, 2).refunds] == [fare * 90 // 100, 2 * fare * 90 // 100]


def test_cancelling_an_unpaid_hold_refunds_nothing(w: World) -> None:
    pnr = w.hold(ALICE, names=("A", "B")).data["pnr"]
    r = w.cancel(ALICE, pnr, [1])
    assert r.data["refund_paise"] == 0 and w.amount(pnr) == tariff.fare_paise("AC2", 300)
    assert w.conn.execute("SELECT COUNT(*) FROM refunds").fetchone()[0] == 0
    assert w.pay(ALICE, pnr).ok  # pays for the remaining passenger


def test_refunds_are_settled_by_the_leader(w: World) -> None:
    pnr = _paid(w)
    w.cancel(ALICE, pnr)
    [pending] = bq.pending_refunds(w.conn)
    assert (pending.pnr, pending.payment_ref) == (pnr, f"sim-{pnr}")
    r = w.one(w.cmd(SettleRefunds, rid="", settlements=(
        RefundSettlement(refund_id=pending.refund_id, provider_ref="sim_rf_1"),
        RefundSettlement(refund_id=99, provider_ref="sim_rf_2"),
    )))
    assert r.data == {"settled": [pending.refund_id], "ignored": [99]}
    assert bq.pending_refunds(w.conn) == []


# ======================================================================================== waitlist


def test_waitlist_payment_and_promotion_on_cancellation(w: World) -> None:
    one = dict(run=RUN1SEAT, cls="GENERAL")
    a = _paid(w, ALICE, **one)
    assert w.hold(BOB, **one).code == FAILED_PRECONDITION  # no waitlist unless asked for
    b = w.hold(BOB, names=("Bina",), waitlist=True, **one)
    assert b.ok and b.data["status"] == "WAITLISTED" and b.data["waitlist_position"] == 1 and "seats" not in b.data
    paid = w.pay(BOB, b.data["pnr"])
    assert paid.data == {"pnr": b.data["pnr"], "status": "WAITLISTED", "paid_paise": w.amount(b.data["pnr"]),
                         "waitlist_position": 1}
    c = w.hold(CAROL, waitlist=True, **one)  # unpaid: skipped by promotion
    assert c.data["waitlist_position"] == 2
    assert bq.booking(w.conn, c.data["pnr"], 4).waitlist_position == 2

    r = w.cancel(ALICE, a)
    assert r.data["promoted"] == [b.data["pnr"]]
    v = bq.booking(w.conn, b.data["pnr"], 3)
    assert v.status == "CONFIRMED" and v.passengers[0].seat == "G1-1" and v.waitlist_position == 0
    assert v.history[-1].detail == "promoted from waitlist position 1: seats G1-1"
    assert bq.booking(w.conn, c.data["pnr"], 4).waitlist_position == 1
    # A waitlisted booking that is cancelled is refunded in full.
    w.pay(CAROL, c.data["pnr"])
    r = w.cancel(CAROL, c.data["pnr"])
    assert r.data["refund_percent"] == 100 and r.data["refund_paise"] == w.conn.execute(
        "SELECT paid_paise FROM bookings WHERE pnr = ?", (c.data["pnr"],)).fetchone()[0]


def test_waitlist_promotion_when_a_hold_expires_and_segment_fit(w: World) -> None:
    one = dict(run=RUN1SEAT, cls="GENERAL")
    hold = w.hold(ALICE, f="PPP", t="RRR", **one)
    far = w.hold(BOB, f="PPP", t="SSS", waitlist=True, **one)  # needs P..S
    near = w.hold(CAROL, f="QQQ", t="RRR", waitlist=True, **one)  # needs Q..R
    w.pay(BOB, far.data["pnr"])
    w.pay(CAROL, near.data["pnr"])
    w.pay(ALICE, hold.data["pnr"], ts=T0 + 11 * MIN)  # too late: expired
    res = w.expire(T0 + 10 * MIN)
    # The oldest (bob's, P..S) fits and takes the seat; carol's Q..R no longer fits.
    assert res.data["promoted"] == [far.data["pnr"]]
    assert [w.status(p) for p in (hold.data["pnr"], far.data["pnr"], near.data["pnr"])] == [
        "EXPIRED", "CONFIRMED", "WAITLISTED"]


def test_no_payment_after_the_train_left(w: World) -> None:
    pnr = w.hold(ALICE, ts=BOARD_P - 5 * MIN).data["pnr"]
    late = w.pay(ALICE, pnr, ts=BOARD_P)
    assert late.code == FAILED_PRECONDITION and "left" in late.message and late.data["void_charge"] is True


def test_paid_waitlist_is_refunded_when_the_train_leaves(w: World) -> None:
    one = dict(run=RUN1SEAT, cls="GENERAL")
    _paid(w, ALICE, **one)
    b = w.hold(BOB, waitlist=True, **one).data["pnr"]
    w.pay(BOB, b)
    board = civil.parse_datetime(f"{DAY} 22:30")
    assert bq.next_hold_expiry(w.conn) == board
    r = w.expire(board)
    assert r.data["waitlist_refunded"] == 1 and w.status(b) == "REFUNDED"
    assert bq.booking(w.conn, b, 3).refunded_paise == w.amount(b)


def test_waitlist_is_bounded(w: World, monkeypatch) -> None:
    from store import rules
    monkeypatch.setattr(rules, "WAITLIST_MAX", 1)
    one = dict(run=RUN1SEAT, cls="GENERAL")
    w.hold(ALICE, **one)
    assert w.hold(BOB, waitlist=True, **one).ok
    full = w.hold(CAROL, waitlist=True, **one)
    assert full.code == FAILED_PRECONDITION and "waitlist" in full.message and "full" in full.message


# ======================================================================================== run cancel


def test_cancel_run_refunds_everyone(w: World) -> None:
    confirmed = _paid(w, ALICE, names=("A", "B"))
    held = w.hold(BOB).data["pnr"]
    one = dict(run=RUN1SEAT, cls="GENERAL")
    other_run = _paid(w, CAROL, **one)
    r = w.one(w.cmd(CancelRun, token_sha256=ADMIN, run_id=RUN, reason="flooding"))
    due = w.conn.execute("SELECT paid_paise FROM bookings WHERE pnr = ?", (confirmed,)).fetchone()[0]
    assert r.ok and r.data == {"run_id": RUN, "refunded_bookings": 2, "refund_paise": due}
    assert [w.status(p) for p in (confirmed, held, other_run)] == ["REFUNDED", "REFUNDED", "CONFIRMED"]
    assert w.conn.execute("SELECT COUNT(*) FROM allocations WHERE run_id = ?", (RUN,)).fetchone()[0] == 0
    v = bq.booking(w.conn, confirmed, 2)
    assert v.refunded_paise == due and v.history[-1].detail.startswith("run cancelled by the railway: flooding")
    assert [x.train_number for x in bq.search(w.conn, "PPP", "SSS", DAY)] == [200]
    assert bq.search(w.conn, "PPP", "SSS", DAY, include_cancelled=True)[0].status == "CANCELLED"
    assert w.hold(ALICE).code == FAILED_PRECONDITION
    assert w.one(w.cmd(CancelRun, token_sha256=ADMIN, run_id=RUN)).code == FAILED_PRECONDITION
    assert w.one(w.cmd(CancelRun, token_sha256=ADMIN, run_id=77)).code == NOT_FOUND
    report = bq.run_report(w.conn, RUN)
    assert report.status == "CANCELLED" and report.revenue_paise == 0 and report.refunded_paise == due


# ======================================================================================= visibility


def test_customers_see_only_their_own_bookings(w: World) -> None:
    pnr = _paid(w, ALICE)
    assert bq.booking(w.conn, pnr, 2).pnr == pnr
    assert bq.booking(w.conn, pnr, 3) is None
    assert bq.booking_history(w.conn, pnr, 3) is None
    assert bq.refund_quote(w.conn, pnr, 3, (), T0) is None
    assert bq.payment_quote(w.conn, pnr, 3, T0) is None
    assert [b.pnr for b in bq.my_bookings(w.conn, 3)] == []
    r = w.cancel(BOB, pnr)
    ghost = w.cancel(BOB, "6666666666")
    assert r.code == ghost.code == NOT_FOUND  # no existence leak: the same answer, only the PNR differs
    assert r.message.replace(pnr, "6666666666") == ghost.message
    assert bq.booking(w.conn, pnr, 1, is_admin=True).username == "alice"
    assert w.cancel(ADMIN, pnr).ok  # an admin may cancel any booking


def test_pnr_status_lookup_needs_a_passenger_name(w: World) -> None:
    pnr = w.hold(ALICE, names=("Asha Verma", "Ravi")).data["pnr"]
    spaced = f"{pnr[:4].lower()}-{pnr[4:]}"
    assert bq.pnr_status(w.conn, spaced, "  asha   VERMA ").pnr == pnr
    assert bq.pnr_status(w.conn, pnr, "ravi").status == "HELD"
    assert bq.pnr_status(w.conn, pnr, "Asha") is None
    assert bq.pnr_status(w.conn, pnr, "") is None
    assert bq.pnr_status(w.conn, "7777777777", "Ravi") is None


def test_my_bookings_newest_first_with_paging(w: World) -> None:
    pnrs = [w.hold(ALICE, ts=T0 + i).data["pnr"] for i in range(3)]
    assert [b.pnr for b in bq.my_bookings(w.conn, 2)] == pnrs[::-1]
    assert [b.pnr for b in bq.my_bookings(w.conn, 2, limit=1, before_pnr=pnrs[2])] == [pnrs[1]]


# ============================================================================================ report


def test_run_report_occupancy_and_revenue(w: World) -> None:
    a = _paid(w, ALICE, f="PPP", t="QQQ", names=("A", "B"))
    _paid(w, BOB, f="QQQ", t="SSS")
    w.hold(CAROL, f="RRR", t="SSS")
    w.cancel(ALICE, a, [2])
    rep = bq.run_report(w.conn, RUN)
    [ac2, sl] = rep.classes
    assert ac2.legs == (1, 1, 2) and sl.legs == (0, 0, 0)
    assert ac2.segments == (("PPP", "QQQ", 1), ("QQQ", "SSS", 1), ("RRR", "SSS", 1))
    assert (ac2.seat_km_sold, ac2.seat_km_offered) == (400, 12 * 300)
    assert ac2.occupancy_percent == round(100 * 400 / 3600, 2)
    assert (ac2.seats_sold, ac2.held_passengers) == (2, 1)
    fare1, fare2 = tariff.fare_paise("AC2", 100), tariff.fare_paise("AC2", 200)
    assert ac2.refunds_paise == fare1 * 90 // 100
    assert rep.revenue_paise == ac2.revenue_paise == 2 * fare1 + fare2 - fare1 * 90 // 100
    assert rep.bookings == 3 and rep.waitlisted == 0
    with pytest.raises(bq.NotFound):
        bq.run_report(w.conn, 42)


# ============================================================================================ compat


def test_original_api_helpers(w: World) -> None:
    ids = {c.city_code: c.city_id for c in compat.cities(w.conn)}
    with pytest.raises(ValueError):
        compat.add_train_command(request_id="t", client_id="old", ts_ms=T0, token_sha256=ADMIN, number=501,
                                 name="Old Express", source_code="PPP", destination_code="SSS", train_type="Rocket")
    add = compat.add_train_command(request_id="t", client_id="old", ts_ms=T0, token_sha256=ADMIN, number=501,
                                   name="Old Express", source_code="PPP", destination_code="SSS", train_type="Superfast")
    assert add.train_type == "SUPERFAST" and (add.stops[-1].km, add.stops[-1].arrive_min) == (100, 100)
    assert w.one(add).ok
    svc = compat.add_train_service_command(
        request_id="s", client_id="old", ts_ms=T0, token_sha256=ADMIN, train_number=501,
        departure="2026-06-07 10:00:00", arrival="2026-06-07 18:30:00", seat_info=[(2, 50, 1499.5), (4, 3, 0.0)])
    r = w.one(svc)
    assert r.ok and r.data["coaches"] == 3  # 48 + 2 AC2 seats, 3 GENERAL
    assert [(c.coach_label, c.seats) for c in bq.coaches(w.conn, r.data["run_id"], "PPP", "SSS")] == [
        ("A1", 48), ("A2", 2), ("G1", 3)]
    rows = compat.search_services(w.conn, ids["PPP"], ids["SSS"], "2026-06-07")
    assert [(s.service_id, s.datetime_of_departure, s.datetime_of_arrival, s.seat_type_number, s.seats_available,
             s.price_paise) for s in rows] == [
        (f"R{r.data['run_id']}-AC2-PPP-SSS", "2026-06-07 10:00:00", "2026-06-07 18:30:00", 2, 50, 149_950),
        (f"R{r.data['run_id']}-GENERAL-PPP-SSS", "2026-06-07 10:00:00", "2026-06-07 18:30:00", 4, 3,
         tariff.fare_paise("GENERAL", compat.DEFAULT_DISTANCE_KM)),
    ]
    assert [t.train_number for t in compat.all_trains(w.conn, ids["PPP"], ids["SSS"])] == [100, 200, 501]
    assert compat.all_trains(w.conn, ids["SSS"], ids["PPP"]) == []
    hold = compat.initiate_booking_command(request_id="b", client_id="old", ts_ms=T0, token_sha256=BOB,
                                           service_id=rows[1].service_id.lower(), number_of_seats=3, pnr=w.new_pnr())
    res = w.one(hold)
    assert res.ok and res.data["amount_paise"] == 3 * rows[1].price_paise
    assert compat.search_services(w.conn, ids["PPP"], ids["SSS"], "2026-06-07")[1].seats_available == 0
    [mine] = compat.my_bookings(w.conn, 3)
    assert (mine.booking_id, mine.number_of_seats, mine.status, mine.source, mine.seat_type) == (
        res.data["pnr"], 3, "HELD", "Ppp Junction", "GENERAL")
    cancel = compat.cancel_booking_command(request_id="x", client_id="old", ts_ms=T0, token_sha256=BOB,
                                           booking_id=res.data["pnr"].lower())
    assert w.one(cancel).ok
    with pytest.raises(ValueError):
        compat.initiate_booking_command(request_id="b", client_id="old", ts_ms=T0, token_sha256=BOB,
                                        service_id="R1-AC2-PPP", number_of_seats=1, pnr=w.new_pnr())
    with pytest.raises(ValueError):
        compat.initiate_booking_command(request_id="b", client_id="old", ts_ms=T0, token_sha256=BOB,
                                        service_id=rows[0].service_id, number_of_seats=7, pnr=w.new_pnr())
    with pytest.raises(ValueError):
        compat.add_train_service_command(request_id="s", client_id="old", ts_ms=T0, token_sha256=ADMIN,
                                         train_number=501, departure="2026-05-01 10:00:00", arrival="",
                                         seat_info=[(1, 5, 10.0)])
    dup = w.one(w.cmd(AddTrainService, token_sha256=ADMIN, train_number=501, departure="2026-06-07 10:00",
                      arrival="", seats=svc.seats))
    assert dup.code == ALREADY_EXISTS


def test_add_train_service_rules(w: World) -> None:
    def svc(**kw):
        base = dict(token_sha256=ADMIN, train_number=100, departure="2026-06-08 07:00", arrival="", seats=(
            compat.ClassSeats(travel_class="AC1", seats=10, price_paise=0),))
        base.update(kw)
        return w.one(w.cmd(AddTrainService, **base))

    assert svc(arrival="2026-06-08 08:00").code == INVALID_ARGUMENT  # not after the last-but-one stop (125 min)
    assert svc(departure="2026-06-01 08:00").code == INVALID_ARGUMENT  # in the past
    assert svc(seats=()).code == INVALID_ARGUMENT
    assert svc(seats=(compat.ClassSeats(travel_class="AC1", seats=2001, price_paise=0),)).code == INVALID_ARGUMENT
    ok = svc(arrival="2026-06-08 11:30")  # 270 minutes instead of the timetable's 180
    assert ok.ok
    [res] = [x for x in bq.search(w.conn, "QQQ", "SSS", "2026-06-08")]
    assert (res.departure, res.arrival) == ("2026-06-08 08:05", "2026-06-08 11:30")
    [mid] = bq.search(w.conn, "PPP", "RRR", "2026-06-08")
    assert mid.arrival == "2026-06-08 09:00"  # intermediate stops keep the timetable


# ============================================================================================ demo


def test_demo_catalogue_and_benchmark_apply_cleanly(tmp_path: Path) -> None:
    from store import demo

    c = schema.connect(tmp_path / "demo.db")
    w = World(c)
    w.apply(w.cmd(BootstrapAdmin, username="admin", password_hash="h"),
            w.cmd(CreateSession, user_id=1, token_sha256=ADMIN, expires_at_ms=T0 + DAY_MS))
    results = w.apply(*demo.catalogue_commands(ADMIN, "2026-06-02", T0, days=3))
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    assert len(bq.stations(c)) == len(demo.STATIONS) and len(bq.trains(c)) == 12
    found = bq.search(c, "NDLS", "MAS", "2026-06-02")
    assert [r.train_number for r in found] == [12621] and found[0].distance_km == 2182
    assert {r.train_number for r in bq.search(c, "CBE", "TVC", "2026-06-04")} == {12625}  # boards on day 3
    assert [s.code for s in bq.stations(c, prefix="mu")] == ["BCT", "CSMT"]
    bench = demo.benchmark_commands(ADMIN, "2026-06-02", T0, trains=3, days=2, coaches=20, seats=72)
    results = w.apply(*bench)
    assert all(r.ok for r in results), [r for r in results if not r.ok][:3]
    t = bq.train(c, demo.BENCH_FIRST_TRAIN)
    assert len(t.coaches) == 20 and {x.seats for x in t.coaches} == {72} and len(t.stops) == 10
    c.close()


# ===================================================================================== determinism


def test_same_log_gives_identical_databases(tmp_path: Path) -> None:
    """A log with every booking command: applied in batches on one node, one by one on a second, in batches
    of three on a third, and twice on a fourth -- the same results and byte-identical databases."""
    a = schema.connect(tmp_path / "a.db")
    w = World(a).setup()
    one = dict(run=RUN1SEAT, cls="GENERAL")
    p1 = _paid(w, ALICE, names=("A", "B", "C"), prefs=["LOWER", "", "UPPER"])
    carol = _paid(w, CAROL, **one)
    w.hold(BOB, waitlist=True, **one)
    wl = w.hold(BOB, waitlist=True, **one).data["pnr"]
    w.pay(BOB, wl)
    w.pay(ALICE, wl)  # not hers
    w.hold(ALICE, **one)  # sold out
    w.cancel(ALICE, p1, [2])
    w.hold(ALICE, names=("D",), seats=["A2-4"])
    w.expire(T0 + HOUR)
    w.cancel(CAROL, carol)
    w.one(w.cmd(AddTrainService, token_sha256=ADMIN, train_number=200, departure="2026-06-09 10:00", arrival="",
                seats=(compat.ClassSeats(travel_class="AC3", seats=70, price_paise=50_000),)))
    w.one(w.cmd(CancelRun, token_sha256=ADMIN, run_id=RUN))
    assert len({r.code for r in w.results}) >= 3  # successes and failures both in the log

    expected = queries.canonical_dump(a)
    for name, size in (("b", 1), ("c", 3)):
        other = schema.connect(tmp_path / f"{name}.db")
        results = []
        for i in range(0, len(w.log), size):
            results += apply_batch(other, w.log[i:i + size])
        assert results == w.results
        assert queries.canonical_dump(other) == expected
        assert apply_batch(other, w.log) == [None] * len(w.log)  # replay after a restart: nothing re-applied
        assert queries.canonical_dump(other) == expected
        other.close()
    a.close()


def test_demo_accounts_and_admin_session(tmp_path: Path) -> None:
    from store import auth, demo

    c = schema.connect(tmp_path / "acc.db")
    w = World(c)
    assert all(r.ok for r in w.apply(*demo.account_commands(T0)))
    admin = queries.user_by_name(c, demo.DEMO_ADMIN[0])
    assert admin.role == "ADMIN" and auth.verify_password(demo.DEMO_ADMIN[1], admin.password_hash)
    assert queries.user_by_name(c, demo.DEMO_CUSTOMER[0]).role == "CUSTOMER"
    token, session = demo.session_command(admin.id, T0)
    assert w.one(session).ok
    assert w.one(w.cmd(CreateStation, token_sha256=auth.token_hash(token), code="NDLS", name="New Delhi")).ok
    c.close()
