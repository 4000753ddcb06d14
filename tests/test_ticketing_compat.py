"""The original train_booking.Ticketing API on a real 3-node cluster: an old client's admin and passenger
journeys (AddTrain, AddTrainService, GetAllTrains, ListCities, SearchTrainServices, InitiateBooking,
ProcessPayment, GetMyBookings, CancelBooking) with the original meanings -- city ids are station ids,
rupees as doubles, SLEEPER shown as UNKNOWN, booking_id = PNR, `success` = what the apply did."""

from __future__ import annotations

import asyncio
import time

import pytest

from proto.gen.railraft.v1 import AddStationRequest, BookingState, Consistency, GetBookingRequest
from proto.gen.train_booking import (
    AddTrainRequest,
    AddTrainServiceRequest,
    CancelBookingRequest,
    GetAllTrainsRequest,
    GetMyBookingsRequest,
    InitiateBookingRequest,
    ListCitiesRequest,
    LoginRequest,
    ProcessPaymentRequest,
    RegisterRequest,
    SearchRequest,
    SeatInfo,
    SeatType,
)
from store import civil

from .booking_helpers import ADMIN_PASSWORD, ADMIN_USER, PASSWORD, Api, day, rid, start_cluster
from .cluster_harness import run

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("ticketing-compat"))
    yield c
    try:
        print(c.describe())
    except Exception as e:  # noqa: BLE001
        print(f"(describe failed: {e!r})")
    c.close()


async def old_login(api: Api, user: str, password: str, timeout: float = 15.0) -> tuple[str, str]:
    deadline = time.monotonic() + timeout
    while True:
        r = await api.t("login", LoginRequest(username=user, password=password))
        if r.success or time.monotonic() > deadline:
            assert r.success, r.message
            return r.token, r.role
        await asyncio.sleep(0.2)  # the admin appears once the leader has bootstrapped it


async def old_customer(api: Api, name: str, via: int = 0) -> str:
    r = await api.t("register", RegisterRequest(username=name, password=PASSWORD, request_id=rid()), via=via)
    assert r.success, r.message
    token, role = await old_login(api, name, PASSWORD)
    assert role == "CUSTOMER"
    return token


def test_old_client_admin_and_passenger_journeys(cluster):
    async def main():
        async with Api(cluster.addrs()) as api:
            admin, role = await old_login(api, ADMIN_USER, ADMIN_PASSWORD)
            assert role == "ADMIN"
            # Cities are stations; the old API has no call to add one, the new one does.
            for code, name in (("OLA", "Old Agra"), ("OLB", "Old Bhopal")):
                await api.b("add_station", AddStationRequest(token=admin, request_id=rid(), code=code, name=name))
            cities = (await api.t("list_cities", ListCitiesRequest(), via=1)).cities
            ids = {c.city_code: c.city_id for c in cities}
            assert {"OLA", "OLB"} <= set(ids) and any(c.city_name == "Old Agra" for c in cities)
            src, dst = ids["OLA"], ids["OLB"]

            # Admin: AddTrain (route source -> destination), AddTrainService (seats and price per class).
            r = await api.t("add_train", AddTrainRequest(admin_token=admin, train_number=12001, train_name="Old Express",
                                                         source_city_id=src, destination_city_id=dst, train_type="Superfast"), via=2)
            assert r.success, r.message
            r = await api.t("add_train", AddTrainRequest(admin_token=admin, train_number=12001, train_name="Again",
                                                         source_city_id=src, destination_city_id=dst, train_type="EXPRESS"))
            assert not r.success and "already exists" in r.message
            dep = f"{day(6)} 10:00:00"
            r = await api.t("add_train_service", AddTrainServiceRequest(
                admin_token=admin, train_number=12001, datetime_of_departure=dep,
                datetime_of_arrival=f"{day(6)} 14:30:00",
                seat_info=[SeatInfo(seat_type=SeatType.AC2, seats_available=5, price=1500.5),
                           SeatInfo(seat_type=SeatType.GENERAL, seats_available=100, price=0.0)]), via=1)
            assert r.success, r.message
            r = await api.t("add_train_service", AddTrainServiceRequest(
                admin_token=admin, train_number=99999, datetime_of_departure=dep,
                seat_info=[SeatInfo(seat_type=SeatType.AC1, seats_available=5, price=10.0)]))
            assert not r.success and "no train 99999" in r.message
            r = await api.t("add_train_service", AddTrainServiceRequest(
                admin_token=admin, train_number=12001, datetime_of_departure=f"{day(7)} 10:00:00",
                seat_info=[SeatInfo(seat_type=SeatType.UNKNOWN, seats_available=5, price=10.0)]))
            assert not r.success and "seat type" in r.message
            trains = (await api.t("get_all_trains", GetAllTrainsRequest(admin_token=admin, source_city_id=src,
                                                                        destination_city_id=dst))).trains
            assert [(t.train_number, t.source_city, t.destination_city, t.train_type) for t in trains] == \
                [(12001, "Old Agra", "Old Bhopal", "SUPERFAST")]

            # A passenger: search, book 3 seats, pay, see it, cancel.
            cust = await old_customer(api, "oldtimer", via=1)
            r = await api.t("add_train", AddTrainRequest(admin_token=cust, train_number=12002, train_name="Nope",
                                                         source_city_id=src, destination_city_id=dst, train_type="EXPRESS"))
            assert not r.success and "administrator" in r.message
            services = (await api.t("search_train_services", SearchRequest(source_city_id=src, destination_city_id=dst,
                                                                           date=day(6)), via=2)).services
            by_type = {s.seat_type: s for s in services}
            ac2 = by_type[SeatType.AC2]
            assert (ac2.train_number, ac2.train_name, ac2.seats_available, ac2.price) == (12001, "Old Express", 5, 1500.5)
            assert (ac2.source_city_name, ac2.destination_city_name) == ("Old Agra", "Old Bhopal")
            assert ac2.datetime_of_departure == dep and ac2.datetime_of_arrival == f"{day(6)} 14:30:00"
            assert by_type[SeatType.GENERAL].price == 40.0  # price 0 = the distance tariff (100 km, GENERAL)

            b = await api.t("initiate_booking", InitiateBookingRequest(customer_token=cust, service_id=ac2.service_id,
                                                                       number_of_seats=3), via=0)
            assert b.success and len(b.booking_id) == 10 and b.total_cost == 4501.5, b
            r = await api.t("initiate_booking", InitiateBookingRequest(customer_token=cust, service_id=ac2.service_id,
                                                                       number_of_seats=3))
            assert not r.success and "sold out" in r.message
            mine = (await api.t("get_my_bookings", GetMyBookingsRequest(customer_token=cust), via=1)).bookings
            assert [(x.booking_id, x.status, x.number_of_seats, x.total_cost, x.seat_type) for x in mine] == \
                [(b.booking_id, "HELD", 3, 4501.5, SeatType.AC2)]
            assert (mine[0].source, mine[0].destination, mine[0].datetime_of_departure) == ("Old Agra", "Old Bhopal", dep)

            # Someone else can neither pay nor cancel it.
            other = await old_customer(api, "stranger", via=2)
            r = await api.t("process_payment", ProcessPaymentRequest(customer_token=other, booking_id=b.booking_id,
                                                                     payment_mode="UPI"))
            assert not r.success and "no booking" in r.message
            r = await api.t("cancel_booking", CancelBookingRequest(customer_token=other, booking_id=b.booking_id))
            assert not r.success and "no booking" in r.message
            assert not (await api.t("get_my_bookings", GetMyBookingsRequest(customer_token=other))).bookings

            r = await api.t("process_payment", ProcessPaymentRequest(customer_token=cust, booking_id=b.booking_id,
                                                                     payment_mode="UPI"), via=2)
            assert r.success and "CONFIRMED" in r.message, r.message
            # A retry of the same payment (no request id: derived from the PNR) answers as the first did ...
            again = await api.t("process_payment", ProcessPaymentRequest(customer_token=cust, booking_id=b.booking_id,
                                                                         payment_mode="UPI"), via=0)
            assert again.success and again.message == r.message
            # ... while an explicitly new payment request is refused: it is paid already.
            r = await api.t("process_payment", ProcessPaymentRequest(customer_token=cust, booking_id=b.booking_id,
                                                                     payment_mode="card", request_id=rid()))
            assert not r.success and "already paid" in r.message
            mine = (await api.t("get_my_bookings", GetMyBookingsRequest(customer_token=cust))).bookings
            assert mine[0].status == "CONFIRMED"
            left = (await api.t("search_train_services", SearchRequest(source_city_id=src, destination_city_id=dst,
                                                                       date=day(6)))).services
            assert {s.seat_type: s.seats_available for s in left}[SeatType.AC2] == 2

            r = await api.t("cancel_booking", CancelBookingRequest(customer_token=cust, booking_id=b.booking_id), via=1)
            assert r.success and "90%" in r.message, r.message
            again = await api.t("cancel_booking", CancelBookingRequest(customer_token=cust, booking_id=b.booking_id))
            assert again.success and again.message == r.message
            r = await api.t("cancel_booking", CancelBookingRequest(customer_token=cust, booking_id=b.booking_id,
                                                                   request_id=rid()))
            assert not r.success and "already CANCELLED" in r.message
            mine = (await api.t("get_my_bookings", GetMyBookingsRequest(customer_token=cust))).bookings
            assert mine[0].status == "CANCELLED"
            g = await api.b("get_booking", GetBookingRequest(token=cust, pnr=b.booking_id))
            assert g.state == BookingState.CANCELLED and g.refunds[0].amount_paise == 450150 * 90 // 100

    run(main())


def test_sleeper_is_unknown_and_late_cancellation_refunds_half(cluster):
    """SLEEPER, missing from the old SeatType enum, is listed as UNKNOWN (still bookable by service id); a
    cancellation between 48 h and 4 h before departure refunds 50 %."""
    async def main():
        async with Api(cluster.addrs()) as api:
            admin, _ = await old_login(api, ADMIN_USER, ADMIN_PASSWORD)
            cities = {c.city_code: c.city_id for c in (await api.t("list_cities", ListCitiesRequest())).cities}
            r = await api.t("add_train", AddTrainRequest(admin_token=admin, train_number=12010, train_name="Night Old",
                                                         source_city_id=cities["OLA"], destination_city_id=cities["OLB"],
                                                         train_type="mail", request_id=rid()))
            assert r.success, r.message
            # Departing in about 30 hours: inside the 48 h .. 4 h band of the refund rule.
            dep_ms = (int(time.time() * 1000) // 60_000 + 30 * 60) * 60_000
            dep = civil.format_local_seconds(dep_ms)
            r = await api.t("add_train_service", AddTrainServiceRequest(
                admin_token=admin, train_number=12010, datetime_of_departure=dep,
                seat_info=[SeatInfo(seat_type=SeatType.AC1, seats_available=2, price=999.99)]))
            assert r.success, r.message
            # A SLEEPER service from the new API's side: scheduled runs of a train with a sleeper coach.
            services = (await api.t("search_train_services", SearchRequest(
                source_city_id=cities["OLA"], destination_city_id=cities["OLB"], date=dep[:10]))).services
            night = [s for s in services if s.train_number == 12010]
            assert [(s.seat_type, s.seats_available, s.price) for s in night] == [(SeatType.AC1, 2, 999.99)]
            cust = await old_customer(api, "latecomer")
            b = await api.t("initiate_booking", InitiateBookingRequest(customer_token=cust, service_id=night[0].service_id,
                                                                       number_of_seats=1, request_id=rid()))
            assert b.success and b.total_cost == 999.99
            assert (await api.t("process_payment", ProcessPaymentRequest(customer_token=cust, booking_id=b.booking_id))).success
            r = await api.t("cancel_booking", CancelBookingRequest(customer_token=cust, booking_id=b.booking_id))
            assert r.success and "50%" in r.message, r.message
            g = await api.b("get_booking", GetBookingRequest(token=cust, pnr=b.booking_id, consistency=Consistency.LEASE))
            assert g.refunds[0].percent == 50 and g.refunds[0].amount_paise == 99999 // 2

            # The default compat composition has a SLEEPER coach: a Booking-API run of train 12001 shows it.
            from proto.gen.railraft.v1 import ScheduleRunsRequest
            await api.b("schedule_runs", ScheduleRunsRequest(token=admin, request_id=rid(), train_number=12001,
                                                             first_date=day(9), last_date=day(9)))
            services = (await api.t("search_train_services", SearchRequest(
                source_city_id=cities["OLA"], destination_city_id=cities["OLB"], date=day(9)))).services
            sleeper = [s for s in services if s.service_id.split("-")[1] == "SLEEPER"]
            assert len(sleeper) == 1 and sleeper[0].seat_type == SeatType.UNKNOWN and sleeper[0].seats_available == 72
            b = await api.t("initiate_booking", InitiateBookingRequest(customer_token=cust, service_id=sleeper[0].service_id,
                                                                       number_of_seats=2))
            assert b.success, b.message
            mine = (await api.t("get_my_bookings", GetMyBookingsRequest(customer_token=cust))).bookings
            assert mine[0].booking_id == b.booking_id and mine[0].seat_type == SeatType.UNKNOWN

    run(main())
