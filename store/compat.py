"""The original `train_booking.Ticketing` API's meanings, mapped onto railraft's commands and queries.

Command builders (the gateway stamps request_id/client_id/ts_ms/token and proposes the result) and read
functions shaped like the old messages.  Pure: no clock, no randomness (the PNR candidate is passed in).

Mapping:

* city ids are station ids (`cities`);
* `AddTrain(number, name, source_city_id, destination_city_id, train_type)` -> an AddTrain with a two-stop
  route source -> destination: DEFAULT_DISTANCE_KM (100 km) apart, DEFAULT_DURATION_MIN (100 min) in the
  timetable, leaving at 00:00, with DEFAULT_COACHES (one coach of each class).  The old API knows no
  distances; the distance only matters for tariff fares, and services added with a price use that price.
  `train_type` is upper-cased ("Superfast" -> SUPERFAST) and must be one of rules.TRAIN_TYPES;
* `AddTrainService(number, departure, arrival, seat_info)` -> AddTrainService: one run at exactly those times
  with, per SeatInfo, that many seats of the class (coaches generated) sold at that price per seat (rupees as
  a double -> paise, rounded to the nearest paisa; 0 = the distance tariff);
* a `service_id` names (run, class, boarding station, alighting station): "R123-AC2-NDLS-BCT";
* `InitiateBooking(service_id, number_of_seats)` -> HoldSeats for N passengers named "Passenger 1".."N",
  age 0 (not asked by the old API), no preferences; `booking_id` is the PNR;
* `ProcessPayment(booking_id, payment_mode)` -> the Pay flow of store.payments with the simulated provider
  (payment_mode is recorded in the description only);
* `CancelBooking(booking_id)` -> CancelBooking of the whole booking;
* `GetMyBookings` -> `my_bookings` rows; `total_cost` = the fare of all its passengers.

SeatType numbers: UNKNOWN=0, AC1=1, AC2=2, AC3=3, GENERAL=4.  SLEEPER has no number in the old enum; its
services are listed with seat_type 0 (UNKNOWN) and cannot be booked through the old API by number.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass

from . import booking_queries as bq
from . import civil, rules
from .commands import (
    AddTrain,
    AddTrainService,
    CancelBooking,
    ClassSeats,
    CoachSpec,
    HoldSeats,
    PassengerSpec,
    StopSpec,
)

SEAT_TYPE_NUMBERS = {"AC1": 1, "AC2": 2, "AC3": 3, "GENERAL": 4}
SEAT_TYPE_CLASSES = {n: cls for cls, n in SEAT_TYPE_NUMBERS.items()}

DEFAULT_DISTANCE_KM = 100
DEFAULT_DURATION_MIN = 100
DEFAULT_DEPART_TIME = "00:00"
DEFAULT_COACHES = (
    CoachSpec(label="H1", travel_class="AC1", seats=24),
    CoachSpec(label="A1", travel_class="AC2", seats=48),
    CoachSpec(label="B1", travel_class="AC3", seats=64),
    CoachSpec(label="S1", travel_class="SLEEPER", seats=72),
    CoachSpec(label="G1", travel_class="GENERAL", seats=90),
)
UNKNOWN_AGE = 0

encode_service_id = rules.encode_service_id
parse_service_id = rules.parse_service_id


def seat_type_number(travel_class: str) -> int:
    """The old SeatType number of a class (0 = UNKNOWN for SLEEPER)."""
    return SEAT_TYPE_NUMBERS.get(travel_class, 0)


def class_of_seat_type(seat_type: int | str) -> str:
    """The class of an old SeatType (number or name); ValueError for UNKNOWN or garbage."""
    if isinstance(seat_type, str):
        name = seat_type.upper()
        if name in rules.TRAVEL_CLASSES:
            return name
        raise ValueError(f"unknown seat type {seat_type!r}")
    cls = SEAT_TYPE_CLASSES.get(seat_type)
    if cls is None:
        raise ValueError(f"seat type must be AC1, AC2, AC3 or GENERAL (got {seat_type!r})")
    return cls


def rupees_to_paise(price: float) -> int:
    """A price in rupees (the old API's double) in paise, to the nearest paisa; ValueError if negative or huge."""
    if not isinstance(price, (int, float)) or price != price or price < 0:
        raise ValueError(f"price must be a non-negative number of rupees (got {price!r})")
    paise = round(price * 100)
    return rules.validate_price_paise(paise, allow_zero=True)


# ============================================================================================ commands


def add_train_command(*, request_id: str, client_id: str, ts_ms: int, token_sha256: str, number: int, name: str,
                      source_code: str, destination_code: str, train_type: str) -> AddTrain:
    """The AddTrain for the old API's AddTrain (station codes looked up from the city ids by the caller).

    ValueError for input the rules refuse (so it never reaches the log).
    """
    ttype = rules.validate_train_type(rules.normalize_train_type(train_type))
    cmd = AddTrain(
        request_id=request_id, client_id=client_id, ts_ms=ts_ms, token_sha256=token_sha256,
        number=rules.validate_train_number(number), name=rules.validate_train_name(name), train_type=ttype,
        depart_time=DEFAULT_DEPART_TIME,
        stops=(
            StopSpec(station_code=source_code, arrive_min=0, depart_min=0, km=0),
            StopSpec(station_code=destination_code, arrive_min=DEFAULT_DURATION_MIN,
                     depart_min=DEFAULT_DURATION_MIN, km=DEFAULT_DISTANCE_KM),
        ),
        coaches=DEFAULT_COACHES,
    )
    rules.validate_route(cmd.stops)
    return cmd


def add_train_service_command(*, request_id: str, client_id: str, ts_ms: int, token_sha256: str,
                              train_number: int, departure: str, arrival: str,
                              seat_info: Sequence[tuple[int | str, int, float]]) -> AddTrainService:
    """The AddTrainService for the old API's: seat_info = [(seat_type, seats_available, price_rupees)]."""
    dep = civil.parse_datetime(departure)
    if dep <= ts_ms:
        raise ValueError(f"departure {departure} is in the past")
    if arrival and civil.parse_datetime(arrival) <= dep:
        raise ValueError("arrival must be after departure")
    seats = []
    for seat_type, count, price in seat_info:
        if not isinstance(count, int) or not 1 <= count <= rules.SERVICE_SEATS_MAX:
            raise ValueError(f"seats_available must be 1 to {rules.SERVICE_SEATS_MAX} (got {count!r})")
        seats.append(ClassSeats(travel_class=class_of_seat_type(seat_type), seats=count,
                                price_paise=rupees_to_paise(price)))
    if not seats:
        raise ValueError("give at least one seat_info")
    return AddTrainService(
        request_id=request_id, client_id=client_id, ts_ms=ts_ms, token_sha256=token_sha256,
        train_number=rules.validate_train_number(train_number), departure=departure, arrival=arrival,
        seats=tuple(seats),
    )


def initiate_booking_command(*, request_id: str, client_id: str, ts_ms: int, token_sha256: str, service_id: str,
                             number_of_seats: int, pnr: str) -> HoldSeats:
    """The HoldSeats for the old API's InitiateBooking (`pnr` from store.payments.new_pnr)."""
    run_id, travel_class, from_code, to_code = parse_service_id(service_id)
    if not isinstance(number_of_seats, int) or not 1 <= number_of_seats <= rules.PASSENGERS_MAX:
        raise ValueError(f"number_of_seats must be 1 to {rules.PASSENGERS_MAX} (got {number_of_seats!r})")
    return HoldSeats(
        request_id=request_id, client_id=client_id, ts_ms=ts_ms, token_sha256=token_sha256,
        pnr=rules.validate_pnr(pnr), run_id=run_id, travel_class=travel_class, from_code=from_code,
        to_code=to_code,
        passengers=tuple(PassengerSpec(name=f"Passenger {i}", age=UNKNOWN_AGE) for i in range(1, number_of_seats + 1)),
        accept_waitlist=False, hold_seconds=rules.HOLD_SECONDS_DEFAULT,
    )


def cancel_booking_command(*, request_id: str, client_id: str, ts_ms: int, token_sha256: str, booking_id: str
                           ) -> CancelBooking:
    """The CancelBooking (whole booking) for the old API's CancelBooking(booking_id = PNR)."""
    return CancelBooking(request_id=request_id, client_id=client_id, ts_ms=ts_ms, token_sha256=token_sha256,
                         pnr=rules.validate_pnr(rules.normalize_pnr(booking_id)), passenger_nos=())


# ============================================================================================== reads


@dataclass(frozen=True, slots=True)
class City:
    """ListCities' City{city_id, city_name, city_code}."""

    city_id: int
    city_name: str
    city_code: str


def cities(conn: sqlite3.Connection) -> list[City]:
    """Every station as a city, by id."""
    return [City(s.id, s.name, s.code) for s in sorted(bq.stations(conn), key=lambda s: s.id)]


@dataclass(frozen=True, slots=True)
class ServiceSummary:
    """SearchTrainServices' ServiceSummary; `price_paise` per seat (the gateway sends rupees as a double)."""

    service_id: str
    train_number: int
    train_name: str
    source_city_name: str
    destination_city_name: str
    datetime_of_departure: str
    datetime_of_arrival: str
    seat_type: str
    seat_type_number: int
    seats_available: int
    price_paise: int


def search_services(conn: sqlite3.Connection, source_city_id: int, destination_city_id: int, date: str,
                    after_ms: int = 0) -> list[ServiceSummary]:
    """One row per scheduled run and class from the source to the destination city on `date` (leaving after
    `after_ms`, see booking_queries.search).  NotFound for an unknown city id; ValueError for a malformed date.
    """
    src, dst = bq.station_by_id(conn, source_city_id), bq.station_by_id(conn, destination_city_id)
    if src is None or dst is None:
        raise bq.NotFound(f"unknown city id {source_city_id if src is None else destination_city_id}")
    out = []
    for r in bq.search(conn, src.code, dst.code, date, after_ms=after_ms):
        for c in r.classes:
            out.append(ServiceSummary(
                c.service_id, r.train_number, r.train_name, src.name, dst.name,
                civil.format_local_seconds(r.depart_ms), civil.format_local_seconds(r.arrive_ms),
                c.travel_class, seat_type_number(c.travel_class), c.free, c.fare_paise,
            ))
    return out


@dataclass(frozen=True, slots=True)
class TrainSummary:
    """GetAllTrains' TrainInfo: the route's first and last station names."""

    train_number: int
    train_name: str
    source_city: str
    destination_city: str
    train_type: str


def all_trains(conn: sqlite3.Connection, source_city_id: int = 0, destination_city_id: int = 0
               ) -> list[TrainSummary]:
    """Every train (0 ids), or those calling at the source and later at the destination city."""
    return [TrainSummary(t.number, t.name, t.stops[0].name, t.stops[-1].name, t.train_type)
            for t in bq.trains(conn, source_city_id, destination_city_id)]


@dataclass(frozen=True, slots=True)
class BookingDetails:
    """GetMyBookings' BookingDetails; `total_cost_paise` = the fare of all its passengers."""

    booking_id: str
    train_name: str
    source: str
    destination: str
    datetime_of_departure: str
    number_of_seats: int
    total_cost_paise: int
    seat_type: str
    status: str


def my_bookings(conn: sqlite3.Connection, user_id: int) -> list[BookingDetails]:
    """The user's bookings, newest first (at most 500)."""
    return [
        BookingDetails(b.pnr, b.train_name, b.from_name, b.to_name, civil.format_local_seconds(b.depart_ms),
                       len(b.passengers), b.total_fare_paise, b.travel_class, b.status)
        for b in bq.my_bookings(conn, user_id, limit=500)
    ]
