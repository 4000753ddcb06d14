"""railraft.v1.Booking against a real 3-node cluster on 127.0.0.1 (processes started and reaped by the tests).

One cluster serves the module (the tests build their own trains, so they do not interfere); the concurrency
test starts its own, because it ends by stopping every node and comparing the databases.  The nodes run with
RAILRAFT_ADMIN_PASSWORD (the first admin is bootstrapped by the leader), a 200 ms housekeeping loop and
holds expiring 57 s early (tests/booking_helpers.NODE_ENV), so a 60-second hold lapses in about 3 s.

Order matters only at the end: the exactly-once test SIGKILLs leaders, and the last test restarts every node
and checks that all replicas hold identical databases.
"""

from __future__ import annotations

import asyncio
import time

import pytest
from grpclib import GRPCError
from grpclib.const import Status

from proto.gen.railraft.v1 import (
    AddStationRequest,
    AddTrainRequest,
    BatchCall,
    BatchRequest,
    BookingInfo,
    BookingState,
    CancelRequest,
    CancelRunRequest,
    ChosenSeat,
    CoachInput,
    Consistency,
    GetBookingRequest,
    HoldRequest,
    ListRunsRequest,
    ListStationsRequest,
    ListTrainsRequest,
    LoginRequest,
    LogoutRequest,
    MyBookingsRequest,
    PassengerInput,
    PayRequest,
    PnrStatusRequest,
    RegisterRequest,
    RunReportRequest,
    ScheduleRunsRequest,
    SearchRequest,
    SearchResponse,
    SeatClass,
    SeatMapRequest,
    StopInput,
    WhoAmIRequest,
)
from proto.gen.train_booking import InitiateBookingRequest, SearchRequest as OldSearchRequest
from proto.gen.train_booking import AddTrainServiceRequest, SeatInfo, SeatType
from proto.gen.train_booking import RegisterRequest as OldRegisterRequest

from .booking_helpers import (
    off_loop,
    ADMIN_PASSWORD,
    ADMIN_USER,
    PASSWORD,
    TEST_CARD,
    Api,
    assert_same_databases,
    day,
    expect_error,
    rid,
    start_cluster,
)
from .cluster_harness import run

pytestmark = pytest.mark.slow


# ============================================================================================== fixtures


@pytest.fixture(scope="module")
def cluster(tmp_path_factory):
    c = start_cluster(tmp_path_factory.mktemp("booking-api"))
    yield c
    try:
        print(c.describe())  # shown only when a test failed
    except Exception as e:  # noqa: BLE001
        print(f"(describe failed: {e!r})")
    c.close()


async def admin_login(api: Api, timeout: float = 15.0) -> str:
    """The bootstrapped admin's token (the leader creates the admin shortly after the cluster forms)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            s = await api.b("login", LoginRequest(username=ADMIN_USER, password=ADMIN_PASSWORD))
            assert s.user.role == "ADMIN"
            return s.token
        except Exception:
            if time.monotonic() > deadline:
                raise
            await asyncio.sleep(0.2)


async def customer(api: Api, name: str, via: int = 0) -> str:
    """Register `name` (Register opens a session too) and return the token."""
    s = await api.b("register", RegisterRequest(username=name, password=PASSWORD, request_id=rid()), via=via)
    assert s.user.role == "CUSTOMER" and s.token
    return s.token


def stops(*codes_mins_km):
    return [StopInput(station_code=c, arrival_offset_min=a, departure_offset_min=d, distance_km=k)
            for c, a, d, k in codes_mins_km]


ROUTE = (("TSA", 0, 0, 0), ("TSB", 120, 125, 100), ("TSC", 240, 240, 200))


async def add_train(api: Api, token: str, number: int, coaches: list[CoachInput], route=ROUTE,
                    first: int = 10, last: int = 10) -> int:
    """A train on `route` with `coaches`, run on day+first..day+last; returns the first run's id."""
    await api.b("add_train", AddTrainRequest(token=token, request_id=rid(), number=number, name=f"Test {number}",
                                             type="Express", departure_time="08:00", stops=stops(*route),
                                             coaches=coaches))
    runs = await api.b("schedule_runs", ScheduleRunsRequest(token=token, request_id=rid(), train_number=number,
                                                            first_date=day(first), last_date=day(last)))
    assert len(runs.runs) == last - first + 1
    return runs.runs[0].id


@pytest.fixture(scope="module")
def catalogue(cluster):
    """Stations TSA, TSB, TSC (route TSA -> TSB -> TSC, 100 km apart) created by the bootstrapped admin."""
    async def main():
        async with Api(cluster.addrs()) as api:
            token = await admin_login(api)
            for code, name in (("TSA", "Test Alpha"), ("TSB", "Test Bravo"), ("TSC", "Test Charlie")):
                st = await api.b("add_station", AddStationRequest(token=token, request_id=rid(), code=code, name=name))
                assert st.code == code and st.id
            return token
    return run(main())


def hold_req(token, run_id, cls=SeatClass.AC2, a="TSA", b="TSC", names=("Pax One",), seats=(), **kw):
    return HoldRequest(token=token, request_id=kw.pop("request_id", None) or rid(), run_id=run_id, seat_class=cls,
                       from_station=a, to_station=b, passengers=[PassengerInput(name=n, age=30) for n in names],
                       chosen_seats=[ChosenSeat(coach=c, seat=s) for c, s in seats], **kw)


def pay_req(token, pnr, **kw):
    return PayRequest(token=token, request_id=kw.pop("request_id", None) or rid(), pnr=pnr, card_number=TEST_CARD, **kw)


# ================================================================================================ tests


def test_bad_input_is_refused_before_it_reaches_the_log(cluster, catalogue):
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11100, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=6)])
            cust = await customer(api, "bad-input")
            leader = await off_loop(cluster.wait_leader)
            before = (await off_loop(cluster.status, leader))["last_log_index"]
            E = Status
            calls = [
                (E.INVALID_ARGUMENT, "unknown station", api.b("search", SearchRequest(from_station="TSA", to_station="ZZZZ", date=day(10)))),
                (E.INVALID_ARGUMENT, "past", api.b("search", SearchRequest(from_station="TSA", to_station="TSC", date=day(-1)))),
                (E.INVALID_ARGUMENT, "", api.b("search", SearchRequest(from_station="TSA", to_station="TSC", date="2030-13-45"))),
                (E.INVALID_ARGUMENT, "station code", api.b("search", SearchRequest(from_station="x" * 100_000, to_station="TSC", date=day(10)))),
                (E.INVALID_ARGUMENT, "1 to 6 passengers", api.b("hold", hold_req(cust, run_id, names=[f"P {i}" for i in range(7)]))),
                (E.INVALID_ARGUMENT, "at least one passenger", api.b("hold", hold_req(cust, run_id, names=()))),
                (E.INVALID_ARGUMENT, "class", api.b("hold", hold_req(cust, run_id, cls=SeatClass.UNSPECIFIED))),
                (E.INVALID_ARGUMENT, "passenger name", api.b("hold", hold_req(cust, run_id, names=("N" * 10_000,)))),
                (E.INVALID_ARGUMENT, "age", api.b("hold", HoldRequest(token=cust, request_id=rid(), run_id=run_id, seat_class=SeatClass.AC2, from_station="TSA", to_station="TSC", passengers=[PassengerInput(name="Old", age=400)]))),
                (E.INVALID_ARGUMENT, "seat", api.b("hold", hold_req(cust, run_id, seats=[("a1!", 3)]))),
                (E.INVALID_ARGUMENT, "hold duration", api.b("hold", hold_req(cust, run_id, hold_seconds=5))),
                (E.INVALID_ARGUMENT, "unknown station", api.b("hold", hold_req(cust, run_id, a="QQQ"))),
                (E.INVALID_ARGUMENT, "differ", api.b("hold", hold_req(cust, run_id, a="TSB", b="TSB"))),
                (E.INVALID_ARGUMENT, "before", api.b("hold", hold_req(cust, run_id, a="TSC", b="TSA"))),
                (E.NOT_FOUND, "no run", api.b("hold", hold_req(cust, 987654))),
                (E.INVALID_ARGUMENT, "request_id", api.b("hold", hold_req(cust, run_id, request_id="r" * 65))),
                (E.UNAUTHENTICATED, "log in", api.b("hold", hold_req("", run_id))),
                (E.UNAUTHENTICATED, "not logged in", api.b("hold", hold_req("forged-token", run_id))),
                (E.INVALID_ARGUMENT, "PNR", api.b("pay", pay_req(cust, "hello"))),
                (E.INVALID_ARGUMENT, "card", api.b("pay", PayRequest(token=cust, request_id=rid(), pnr="ABCDEFGHJK", card_number="12"))),
                (E.NOT_FOUND, "no booking", api.b("pay", pay_req(cust, "ABCDEFGHJK"))),
                (E.INVALID_ARGUMENT, "PNR", api.b("get_booking", GetBookingRequest(token=cust, pnr="0" * 1000))),
                (E.INVALID_ARGUMENT, "passenger numbers", api.b("cancel", CancelRequest(token=cust, request_id=rid(), pnr="ABCDEFGHJK", passengers=[9]))),
                (E.PERMISSION_DENIED, "administrator", api.b("add_station", AddStationRequest(token=cust, request_id=rid(), code="TSZ", name="Nope"))),
                (E.PERMISSION_DENIED, "administrator", api.b("run_report", RunReportRequest(token=cust, run_id=run_id))),
                (E.INVALID_ARGUMENT, "station code", api.b("add_station", AddStationRequest(token=admin, request_id=rid(), code="a", name="Bad"))),
                (E.INVALID_ARGUMENT, "station name", api.b("add_station", AddStationRequest(token=admin, request_id=rid(), code="TSZ", name="n" * 500))),
                (E.INVALID_ARGUMENT, "unknown station", api.b("add_train", AddTrainRequest(token=admin, request_id=rid(), number=11199, name="Ghost", type="EXPRESS", departure_time="08:00", stops=stops(("TSA", 0, 0, 0), ("NOPE", 60, 60, 50)), coaches=[CoachInput(label="A1", seat_class=SeatClass.AC2, seats=6)]))),
                (E.INVALID_ARGUMENT, "seat count", api.b("add_train", AddTrainRequest(token=admin, request_id=rid(), number=11199, name="Empty", type="EXPRESS", departure_time="08:00", stops=stops(*ROUTE), coaches=[CoachInput(label="A1", seat_class=SeatClass.AC2, seats=0)]))),
                (E.INVALID_ARGUMENT, "past", api.b("schedule_runs", ScheduleRunsRequest(token=admin, request_id=rid(), train_number=11100, first_date=day(-3), last_date=day(-2)))),
                (E.UNAUTHENTICATED, "", api.b("my_bookings", MyBookingsRequest(token="garbage"))),
                (E.NOT_FOUND, "", api.b("pnr_status", PnrStatusRequest(pnr="ABCDEFGHJK", passenger_name="Nobody"))),
                (E.NOT_FOUND, "no run", api.b("seat_map", SeatMapRequest(run_id=999999, coach="A1", from_station="TSA", to_station="TSC"))),
            ]
            for status, text, call in calls:
                await expect_error(status, call, text)
            # The old API: success=false with a message, and also nothing proposed.
            r = await api.t("initiate_booking", InitiateBookingRequest(customer_token=cust, service_id=f"R{run_id}-AC2-TSA-TSC", number_of_seats=-2))
            assert not r.success and "number_of_seats" in r.message
            r = await api.t("initiate_booking", InitiateBookingRequest(customer_token=cust, service_id="garbage", number_of_seats=1))
            assert not r.success and "service id" in r.message
            r = await api.t("add_train_service", AddTrainServiceRequest(admin_token=admin, train_number=11100, datetime_of_departure=f"{day(12)} 10:00:00", seat_info=[SeatInfo(seat_type=SeatType.AC2, seats_available=-5, price=100.0)]))
            assert not r.success and "seats_available" in r.message
            await expect_error(Status.INVALID_ARGUMENT, api.t("search_train_services", OldSearchRequest(source_city_id=1, destination_city_id=99999, date=day(10))), "unknown city")
            after = (await off_loop(cluster.status, leader))["last_log_index"]
            assert after == before, f"bad input reached the log: last index {before} -> {after}"

    run(main())


def test_a_batch_answers_each_call_as_it_would_be_answered_alone(cluster, catalogue):
    """Booking/Batch sent to a follower: good holds (forwarded to the leader), bad input of several kinds, a
    read, a call of no such method and a Batch inside the Batch, in one round trip.  Every result has the
    status and the message the same call gets alone, and the good holds are booked once each."""
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11150, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=6)])
            cust = await customer(api, "batcher")
            leader = await off_loop(cluster.wait_leader)
            follower = cluster.address(next(n for n in cluster.live() if n != leader))
            bad = [
                ("Hold", "hold", hold_req(cust, run_id, names=())),
                ("Hold", "hold", hold_req(cust, run_id, a="QQQ")),
                ("Hold", "hold", hold_req("forged-token", run_id)),
                ("Hold", "hold", hold_req(cust, 987654)),
                ("Pay", "pay", pay_req(cust, "hello")),
                ("MyBookings", "my_bookings", MyBookingsRequest(token="garbage")),
                ("Search", "search", SearchRequest(from_station="TSA", to_station="ZZZZ", date=day(10))),
            ]
            alone = []
            for _, snake, req in bad:
                try:
                    await api.b(snake, req, via=follower)
                    raise AssertionError(f"{snake} should fail")
                except GRPCError as e:
                    alone.append((e.status.value, e.message))
            good = [hold_req(cust, run_id, names=(f"Pax {i}",)) for i in range(3)]
            calls = [BatchCall(method="Hold", request=bytes(r)) for r in good]
            calls += [BatchCall(method=m, request=bytes(r)) for m, _, r in bad]
            calls += [BatchCall(method="Search", request=bytes(SearchRequest(from_station="TSA", to_station="TSC",
                                                                              date=day(10)))),
                      BatchCall(method="Hold", request=b"\xff\xff\xff"),
                      BatchCall(method="NoSuchMethod"), BatchCall(method="Batch")]
            results = {}
            async for reply in api.booking(follower).batch(BatchRequest(calls=calls), timeout=20):
                for r in reply.results:
                    assert r.index not in results
                    results[r.index] = r
            assert sorted(results) == list(range(len(calls)))
            held = [BookingInfo.FromString(results[i].reply) for i in range(3)]
            assert [results[i].status for i in range(3)] == [0, 0, 0]
            assert [b.passengers[0].name for b in held] == ["Pax 0", "Pax 1", "Pax 2"]
            assert len({b.pnr for b in held}) == 3 and all(b.state == BookingState.HELD for b in held)
            assert [(results[3 + i].status, results[3 + i].message) for i in range(len(bad))] == alone
            search = SearchResponse.FromString(results[3 + len(bad)].reply)
            assert results[3 + len(bad)].status == 0 and run_id in [r.run_id for r in search.results]
            tail = [results[i] for i in range(len(calls) - 3, len(calls))]
            assert tail[0].status == Status.INVALID_ARGUMENT.value and "malformed" in tail[0].message
            assert tail[1].status == tail[2].status == Status.UNIMPLEMENTED.value
            # The customer has the three holds and no more; a retry of one is answered with the first result.
            mine = await api.b("my_bookings", MyBookingsRequest(token=cust), via=leader - 1)
            assert sorted(b.pnr for b in mine.bookings) == sorted(b.pnr for b in held)
            again = await api.b("hold", good[1], via=follower)
            assert again.pnr == held[1].pnr

    run(main())


def test_passenger_journey(cluster, catalogue):
    """Register, log in, search, seat map, hold chosen seats, pay, my bookings, refund quote, cancel, the
    refund paid out, PNR status without login, log out -- spread over all three nodes."""
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11101, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=6),
                                                         CoachInput(label="S1", seat_class=SeatClass.SLEEPER, seats=8)])
            await customer(api, "pat", via=1)
            s = await api.b("login", LoginRequest(username="pat", password=PASSWORD), via=2)
            tok = s.token
            me = await api.b("who_am_i", WhoAmIRequest(token=tok), via=0)
            assert (me.username, me.role) == ("pat", "CUSTOMER")
            await expect_error(Status.UNAUTHENTICATED, api.b("login", LoginRequest(username="pat", password="wrong-password")), "wrong")

            sts = await api.b("list_stations", ListStationsRequest(prefix="ts"))
            assert [x.code for x in sts.stations] == ["TSA", "TSB", "TSC"]
            trains = await api.b("list_trains", ListTrainsRequest(consistency=Consistency.STALE))
            assert any(t.number == 11101 and [x.station_code for x in t.stops] == ["TSA", "TSB", "TSC"] for t in trains.trains)

            found = await api.b("search", SearchRequest(from_station="tsa", to_station="TSC", date=day(10)), via=1)
            res = next(r for r in found.results if r.train_number == 11101)
            assert res.run_id == run_id and res.distance_km == 200 and res.status == "SCHEDULED"
            ac2 = next(c for c in res.classes if c.seat_class == SeatClass.AC2)
            assert ac2.free_seats == 6 and ac2.fare_paise > 0 and ac2.service_id == f"R{run_id}-AC2-TSA-TSC"

            sm = await api.b("seat_map", SeatMapRequest(run_id=run_id, coach="A1", from_station="TSA", to_station="TSC"), via=2)
            assert [x.number for x in sm.seats] == [1, 2, 3, 4, 5, 6] and all(x.free for x in sm.seats)
            assert {c.label for c in sm.coaches} == {"A1", "S1"}

            h = await api.b("hold", hold_req(tok, run_id, names=("Pat One", "Pat Two"), seats=[("A1", 3), ("A1", 4)]), via=2)
            assert h.state == BookingState.HELD and len(h.pnr) == 10
            assert [(p.coach, p.seat) for p in h.passengers] == [("A1", 3), ("A1", 4)]
            assert h.amount_paise == 2 * ac2.fare_paise and h.hold_expires_ms > time.time() * 1000
            assert "held" in h.message

            sm = await api.b("seat_map", SeatMapRequest(run_id=run_id, coach="A1", from_station="TSA", to_station="TSB"), via=0)
            assert {x.number for x in sm.seats if not x.free} == {3, 4}

            p = await api.b("pay", pay_req(tok, h.pnr, amount_paise=h.amount_paise), via=0)
            assert p.state == BookingState.CONFIRMED and p.paid_paise == h.amount_paise
            await expect_error(Status.FAILED_PRECONDITION, api.b("pay", pay_req(tok, h.pnr), via=1), "already paid")

            mine = await api.b("my_bookings", MyBookingsRequest(token=tok), via=1)
            assert [b.pnr for b in mine.bookings] == [h.pnr]
            assert mine.bookings[0].state == BookingState.CONFIRMED

            q = await api.b("refund_quote", CancelRequest(token=tok, pnr=h.pnr), via=2)
            assert q.percent == 90 and q.refund_paise == h.amount_paise * 90 // 100 and "48 hours" in q.rule
            c = await api.b("cancel", CancelRequest(token=tok, request_id=rid(), pnr=h.pnr), via=1)
            assert c.state == BookingState.CANCELLED and "refund" in c.message
            assert [r.amount_paise for r in c.refunds] == [q.refund_paise] and c.refunds[0].percent == 90
            await expect_error(Status.FAILED_PRECONDITION, api.b("refund_quote", CancelRequest(token=tok, pnr=h.pnr)), "already")

            # The leader pays the refund out through the provider and records it (SettleRefunds).
            deadline = time.monotonic() + 10
            while True:
                g = await api.b("get_booking", GetBookingRequest(token=tok, pnr=h.pnr), via=2)
                if g.refunds[0].settled_ms:
                    break
                assert time.monotonic() < deadline, "the refund was never paid out"
                await asyncio.sleep(0.1)
            assert g.refunded_paise == q.refund_paise
            assert [e.state for e in g.history] == [BookingState.HELD, BookingState.CONFIRMED, BookingState.CANCELLED]
            sm = await api.b("seat_map", SeatMapRequest(run_id=run_id, coach="A1", from_station="TSA", to_station="TSC"))
            assert all(x.free for x in sm.seats), "cancelled seats are back on sale"

            # PNR status: no login, any node, case-insensitive name; a wrong name learns nothing.
            ps = await api.b("pnr_status", PnrStatusRequest(pnr=h.pnr.lower(), passenger_name="  pat TWO "), via=0)
            assert ps.state == BookingState.CANCELLED and ps.pnr == h.pnr
            await expect_error(Status.NOT_FOUND, api.b("pnr_status", PnrStatusRequest(pnr=h.pnr, passenger_name="Mallory")))

            await api.b("logout", LogoutRequest(token=tok, request_id=rid()), via=2)
            await expect_error(Status.UNAUTHENTICATED, api.b("my_bookings", MyBookingsRequest(token=tok), via=0))

    run(main())


def test_register_retry_is_exactly_once_but_never_hands_over_anothers_account(cluster):
    async def main():
        async with Api(cluster.addrs()) as api:
            req = RegisterRequest(username="reggie", password=PASSWORD, request_id=rid())
            first = await api.b("register", req, via=0)
            again = await api.b("register", req, via=2)  # a retry after a lost reply: same account, new session
            assert again.user.id == first.user.id and again.token != first.token
            # Someone else replaying the same (username, request id) with another password gets nothing.
            await expect_error(Status.ALREADY_EXISTS, api.b("register", RegisterRequest(
                username="Reggie", password="another-password", request_id=req.request_id), via=1), "taken")
            await expect_error(Status.ALREADY_EXISTS, api.b("register", RegisterRequest(
                username="reggie", password=PASSWORD, request_id=rid())), "taken")
            old = await api.t("register", OldRegisterRequest(username="reggie", password="another-password",
                                                             request_id=req.request_id))
            assert not old.success and "taken" in old.message

    run(main())


def test_admin_journey_cancel_run_refunds_everyone(cluster, catalogue):
    """The bootstrapped admin adds stations and a train with a route and coaches, schedules runs; passengers
    find and book it; the run report adds up; cancelling the run refunds everyone in full."""
    async def main():
        async with Api(cluster.addrs()) as api:
            admin = await admin_login(api)
            me = await api.b("who_am_i", WhoAmIRequest(token=admin), via=2)
            assert (me.username, me.role) == (ADMIN_USER, "ADMIN")
            for code in ("TJA", "TJB", "TJC"):
                await api.b("add_station", AddStationRequest(token=admin, request_id=rid(), code=code, name=f"Junction {code}"), via=1)
            t = await api.b("add_train", AddTrainRequest(
                token=admin, request_id=rid(), number=11200, name="Admin Mail", type="mail", departure_time="06:30",
                stops=stops(("TJA", 0, 0, 0), ("TJB", 300, 310, 350), ("TJC", 600, 600, 700)),
                coaches=[CoachInput(label="B1", seat_class=SeatClass.AC3, seats=8),
                         CoachInput(label="S1", seat_class=SeatClass.SLEEPER, seats=8)]), via=2)
            assert t.type == "MAIL" and [s.distance_km for s in t.stops] == [0, 350, 700] and len(t.coaches) == 2
            runs = await api.b("schedule_runs", ScheduleRunsRequest(token=admin, request_id=rid(), train_number=11200,
                                                                    first_date=day(5), last_date=day(6)))
            assert [r.date for r in runs.runs] == [day(5), day(6)] and all(r.status == "SCHEDULED" for r in runs.runs)
            listed = await api.b("list_runs", ListRunsRequest(train_number=11200, first_date=day(0), last_date=day(30)))
            assert [r.id for r in listed.runs] == [r.id for r in runs.runs]

            # Passengers find it (boarding mid-route too) and book.
            tokens = [await customer(api, f"rider{i}", via=i) for i in range(2)]
            found = await api.b("search", SearchRequest(from_station="TJB", to_station="TJC", date=day(5)))
            hit = next(r for r in found.results if r.train_number == 11200)
            run_id = hit.run_id
            assert hit.run_id == runs.runs[0].id
            paid = 0
            pnrs = []
            for i, tok in enumerate(tokens):
                names = ("Rider A",) if i == 0 else ("Rider B", "Rider C")
                a, b = ("TJA", "TJC") if i == 0 else ("TJB", "TJC")
                h = await api.b("hold", hold_req(tok, run_id, cls=SeatClass.SLEEPER, a=a, b=b, names=names), via=i + 1)
                p = await api.b("pay", pay_req(tok, h.pnr), via=i)
                assert p.state == BookingState.CONFIRMED
                paid += p.paid_paise
                pnrs.append((tok, h.pnr))
            rep = await api.b("run_report", RunReportRequest(token=admin, run_id=run_id), via=1)
            sl = next(c for c in rep.classes if c.seat_class == SeatClass.SLEEPER)
            assert (sl.seats, sl.seats_sold) == (8, 3) and sl.revenue_paise == paid
            assert rep.revenue_paise == paid and rep.bookings == 2 and rep.run.train_name == "Admin Mail"
            assert 0 < sl.occupancy_percent < 100

            ack = await api.b("cancel_run", CancelRunRequest(token=admin, request_id=rid(), run_id=run_id, reason="flooding"), via=0)
            assert ack.ok and "refunded" in ack.message
            for tok, pnr in pnrs:
                g = await api.b("get_booking", GetBookingRequest(token=tok, pnr=pnr))
                assert g.state == BookingState.REFUNDED and g.refunded_paise == g.paid_paise
                assert g.refunds[0].percent == 100 and "flooding" in g.refunds[0].reason
            rep = await api.b("run_report", RunReportRequest(token=admin, run_id=run_id))
            assert rep.run.status == "CANCELLED" and rep.revenue_paise == 0 and rep.refunds_paise == paid
            await expect_error(Status.FAILED_PRECONDITION, api.b("cancel_run", CancelRunRequest(token=admin, request_id=rid(), run_id=run_id)), "already cancelled")
            found = await api.b("search", SearchRequest(from_station="TJB", to_station="TJC", date=day(5)))
            assert run_id not in [r.run_id for r in found.results]

    run(main())


def test_segments_share_a_seat_back_to_back_but_never_overlap(cluster, catalogue):
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11102, [CoachInput(label="H1", seat_class=SeatClass.AC1, seats=1)])
            t1, t2, t3 = [await customer(api, f"seg{i}", via=i) for i in range(3)]
            ab = await api.b("hold", hold_req(t1, run_id, cls=SeatClass.AC1, a="TSA", b="TSB", seats=[("H1", 1)]), via=0)
            bc = await api.b("hold", hold_req(t2, run_id, cls=SeatClass.AC1, a="TSB", b="TSC", seats=[("H1", 1)]), via=1)
            assert (ab.passengers[0].coach, ab.passengers[0].seat) == ("H1", 1)
            assert (bc.passengers[0].coach, bc.passengers[0].seat) == ("H1", 1)
            for a, b in (("TSA", "TSC"), ("TSA", "TSB"), ("TSB", "TSC")):
                await expect_error(Status.FAILED_PRECONDITION,
                                   api.b("hold", hold_req(t3, run_id, cls=SeatClass.AC1, a=a, b=b, seats=[("H1", 1)]), via=2),
                                   "sold out")
            found = await api.b("search", SearchRequest(from_station="TSA", to_station="TSC", date=day(10)), via=2)
            ac1 = next(c for r in found.results if r.run_id == run_id for c in r.classes)
            assert ac1.free_seats == 0
            for tok, pnr in ((t1, ab.pnr), (t2, bc.pnr)):
                assert (await api.b("pay", pay_req(tok, pnr))).state == BookingState.CONFIRMED

    run(main())


def test_hold_expiry_releases_seats_on_every_node(cluster, catalogue):
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11103, [CoachInput(label="S1", seat_class=SeatClass.SLEEPER, seats=2)])
            tok = await customer(api, "expiring")
            other = await customer(api, "too-late")
            h = await api.b("hold", hold_req(tok, run_id, cls=SeatClass.SLEEPER, names=("A", "B"), hold_seconds=60), via=1)
            assert h.state == BookingState.HELD
            await expect_error(Status.FAILED_PRECONDITION, api.b("hold", hold_req(other, run_id, cls=SeatClass.SLEEPER)), "sold out")
            t0 = time.monotonic()
            # Read each node's own database (STALE): every replica must show the booking EXPIRED and both
            # seats free again -- the leader's ExpireHolds entry reached them all.
            for i, addr in enumerate(cluster.addrs()):
                while True:
                    g = await api.booking(addr).get_booking(GetBookingRequest(token=tok, pnr=h.pnr, consistency=Consistency.STALE))
                    sm = await api.booking(addr).seat_map(SeatMapRequest(run_id=run_id, coach="S1", from_station="TSA", to_station="TSC", consistency=Consistency.STALE))
                    if g.state == BookingState.EXPIRED and all(s.free for s in sm.seats):
                        break
                    assert time.monotonic() - t0 < 20, f"node {i + 1}: {g.state}, seats {sm.seats}"
                    await asyncio.sleep(0.1)
            print(f"hold expired and released on all nodes {time.monotonic() - t0:.1f}s after the check began")
            assert "expired" in g.history[-1].note
            await expect_error(Status.FAILED_PRECONDITION, api.b("pay", pay_req(tok, h.pnr)), "EXPIRED")
            # The seats are on sale again.
            h2 = await api.b("hold", hold_req(other, run_id, cls=SeatClass.SLEEPER), via=2)
            assert h2.state == BookingState.HELD

    run(main())


def test_cancellation_refunds_by_the_rule_and_promotes_the_waitlist(cluster, catalogue):
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11104, [CoachInput(label="H1", seat_class=SeatClass.AC1, seats=1)])
            ta, tb, tc = [await customer(api, f"wl{i}", via=i) for i in range(3)]
            a = await api.b("hold", hold_req(ta, run_id, cls=SeatClass.AC1, names=("Asha",)))
            a = await api.b("pay", pay_req(ta, a.pnr), via=1)
            assert a.state == BookingState.CONFIRMED
            await expect_error(Status.FAILED_PRECONDITION, api.b("hold", hold_req(tb, run_id, cls=SeatClass.AC1)), "waitlist")
            b = await api.b("hold", hold_req(tb, run_id, cls=SeatClass.AC1, names=("Bala",), accept_waitlist=True), via=2)
            assert b.state == BookingState.WAITLISTED and b.waitlist_position == 1 and not b.passengers[0].coach
            b = await api.b("pay", pay_req(tb, b.pnr), via=0)
            assert b.state == BookingState.WAITLISTED and b.paid_paise > 0 and b.waitlist_position == 1
            c = await api.b("hold", hold_req(tc, run_id, cls=SeatClass.AC1, names=("Chitra",), accept_waitlist=True))
            assert c.waitlist_position == 2

            quote = await api.b("refund_quote", CancelRequest(token=ta, pnr=a.pnr))
            cancelled = await api.b("cancel", CancelRequest(token=ta, request_id=rid(), pnr=a.pnr), via=2)
            # More than 48 h before departure: 90 % of the fare back.
            assert cancelled.refunds[0].percent == 90 == quote.percent
            assert cancelled.refunds[0].amount_paise == a.paid_paise * 90 // 100 == quote.refund_paise

            b = await api.b("get_booking", GetBookingRequest(token=tb, pnr=b.pnr), via=1)
            assert b.state == BookingState.CONFIRMED and (b.passengers[0].coach, b.passengers[0].seat) == ("H1", 1)
            assert "promoted" in b.history[-1].note and b.waitlist_position == 0
            c = await api.b("get_booking", GetBookingRequest(token=tc, pnr=c.pnr))
            assert c.state == BookingState.WAITLISTED and c.waitlist_position == 1  # unpaid: not promoted, moved up

            # A waitlisted booking cancelled gets everything back.
            c = await api.b("pay", pay_req(tc, c.pnr))
            c = await api.b("cancel", CancelRequest(token=tc, request_id=rid(), pnr=c.pnr))
            assert c.state == BookingState.CANCELLED and c.refunds[0].percent == 100

    run(main())


def test_a_customer_cannot_see_pay_or_cancel_anothers_booking(cluster, catalogue):
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11105, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=4)])
            owner, thief = await customer(api, "owner"), await customer(api, "thief", via=1)
            owner_req = hold_req(owner, run_id)
            h = await api.b("hold", owner_req)
            for call in (api.b("get_booking", GetBookingRequest(token=thief, pnr=h.pnr)),
                         api.b("pay", pay_req(thief, h.pnr)),
                         api.b("cancel", CancelRequest(token=thief, request_id=rid(), pnr=h.pnr)),
                         api.b("refund_quote", CancelRequest(token=thief, pnr=h.pnr))):
                await expect_error(Status.NOT_FOUND, call, "no booking")
            assert not (await api.b("my_bookings", MyBookingsRequest(token=thief))).bookings
            # The owner's request id, sent by the thief, is the thief's own request: not the owner's result.
            own = await api.b("hold", hold_req(thief, run_id, request_id=owner_req.request_id))
            assert own.pnr != h.pnr
            g = await api.b("get_booking", GetBookingRequest(token=owner, pnr=h.pnr))
            assert g.state == BookingState.HELD
            # An admin may look at (and cancel) any booking.
            g = await api.b("get_booking", GetBookingRequest(token=admin, pnr=h.pnr))
            assert g.pnr == h.pnr

    run(main())


def test_exactly_once_across_a_leader_crash(cluster, catalogue):
    """A Hold whose reply is lost -- the leader is SIGKILLed after a follower applied it and before the client
    read the answer -- retried with the same request id on another node yields ONE booking; a Pay lost the
    same way and retried charges once."""
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            run_id = await add_train(api, admin, 11106, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=6)])
            tok = await customer(api, "crashy")
            leader = await off_loop(cluster.wait_leader)
            followers = [n for n in cluster.live() if n != leader]
            hold = hold_req(tok, run_id, names=("Kim",))

            async def lose_reply(call, follower_sees) -> None:
                task = asyncio.ensure_future(call)
                deadline = time.monotonic() + 10
                while not await follower_sees():
                    assert time.monotonic() < deadline, "the write never reached a follower"
                    await asyncio.sleep(0.002)
                arrived = task.done()
                cluster.kill(leader)  # SIGKILL: the reply, if not sent yet, is gone with the process
                print(f"hold: the reply {'had reached the client (unread)' if arrived else 'was in flight'}"
                      " when the leader was killed")
                task.cancel()
                try:
                    await task
                except BaseException:  # noqa: BLE001 - cancelled or broken: either way, the reply is lost
                    pass

            f_addr = cluster.address(followers[0])

            async def follower_has_booking() -> bool:
                mine = await api.booking(f_addr).my_bookings(MyBookingsRequest(token=tok, consistency=Consistency.STALE))
                return bool(mine.bookings)

            await lose_reply(api.booking(cluster.address(leader)).hold(hold, timeout=10), follower_has_booking)
            retry_addr = cluster.address(followers[1])
            h = await api.b("hold", hold, via=retry_addr)  # the same request, on another node, after failover
            mine = await api.b("my_bookings", MyBookingsRequest(token=tok), via=retry_addr)
            assert [b.pnr for b in mine.bookings] == [h.pnr], "the retried hold booked twice"
            assert h.state == BookingState.HELD

            # Bring the node back so the cluster can lose another leader.
            cluster.start(leader)
            await off_loop(cluster.wait_serving, [leader])
            await off_loop(cluster.wait_caught_up)
            return tok, h

    tok, h = run(main())

    async def pay_phase():
        async with Api(cluster.addrs()) as api:
            leader = await off_loop(cluster.wait_leader)
            followers = [n for n in cluster.live() if n != leader]
            pay = pay_req(tok, h.pnr, amount_paise=h.amount_paise)
            f_addr = cluster.address(followers[0])
            task = asyncio.ensure_future(api.booking(cluster.address(leader)).pay(pay, timeout=10))
            deadline = time.monotonic() + 10
            while True:
                g = await api.booking(f_addr).get_booking(GetBookingRequest(token=tok, pnr=h.pnr, consistency=Consistency.STALE))
                if g.paid_paise:
                    break
                assert time.monotonic() < deadline
                await asyncio.sleep(0.002)
            arrived = task.done()
            cluster.kill(leader)
            print(f"pay: the reply {'had reached the client (unread)' if arrived else 'was in flight'}"
                  " when the leader was killed")
            task.cancel()
            try:
                await task
            except BaseException:  # noqa: BLE001
                pass
            p = await api.b("pay", pay, via=cluster.address(followers[1]))
            assert p.state == BookingState.CONFIRMED and p.paid_paise == h.amount_paise
            again = await api.b("pay", pay, via=cluster.address(followers[0]))  # and once more, elsewhere
            assert again.paid_paise == h.amount_paise
            paid_events = [e for e in again.history if e.state == BookingState.CONFIRMED]
            assert len(paid_events) == 1, "the retried payment was applied twice"
            cluster.start(leader)
            await off_loop(cluster.wait_serving, [leader])

    run(pay_phase())


def test_the_leaders_chores_move_with_the_leadership(cluster, catalogue):
    """Hold expiry and refund payouts are the leader's chores: after the leader is SIGKILLed, the new leader
    expires a hold and pays out a refund that the old one never saw."""
    admin = catalogue

    async def main():
        async with Api(cluster.addrs()) as api:
            for nid in cluster.nodes:
                if not cluster.nodes[nid].running():
                    cluster.start(nid)
            await off_loop(cluster.wait_serving)
            run_id = await add_train(api, admin, 11107, [CoachInput(label="A1", seat_class=SeatClass.AC2, seats=4)])
            tok = await customer(api, "chores")
            paid = await api.b("hold", hold_req(tok, run_id))
            paid = await api.b("pay", pay_req(tok, paid.pnr))
            leader = await off_loop(cluster.wait_leader)
            cluster.kill(leader)
            survivors = [cluster.address(n) for n in cluster.live()]
            api.addrs = survivors
            short = await api.b("hold", hold_req(tok, run_id, hold_seconds=60))
            await api.b("cancel", CancelRequest(token=tok, request_id=rid(), pnr=paid.pnr))
            t0 = time.monotonic()
            for addr in survivors:
                while True:
                    g = await api.booking(addr).get_booking(GetBookingRequest(token=tok, pnr=short.pnr, consistency=Consistency.STALE))
                    r = await api.booking(addr).get_booking(GetBookingRequest(token=tok, pnr=paid.pnr, consistency=Consistency.STALE))
                    if g.state == BookingState.EXPIRED and r.refunds and r.refunds[0].settled_ms:
                        break
                    assert time.monotonic() - t0 < 20, f"{addr}: hold {g.state}, refunds {r.refunds}"
                    await asyncio.sleep(0.1)
            cluster.start(leader)
            await off_loop(cluster.wait_serving, [leader])

    run(main())


def test_all_replicas_hold_identical_databases(cluster, catalogue):
    """After everything above (including two leader crashes and restarts): identical canonical dumps."""
    for nid in cluster.nodes:
        if not cluster.nodes[nid].running():
            cluster.start(nid)
    cluster.wait_serving()
    assert_same_databases(cluster)


# ============================================================================================ concurrency


def test_200_clients_race_for_50_seats(tmp_path):
    """200 concurrent clients, spread over the three nodes, compete for the 50 seats of one class: exactly 50
    are confirmed, no seat is sold twice on the segment, every loser hears "sold out" or gets a waitlist
    position, and afterwards all nodes' databases are identical."""
    c = start_cluster(tmp_path / "race")
    try:
        async def main():
            async with Api(c.addrs()) as api:
                t0 = time.monotonic()
                admin = await admin_login(api)
                for code in ("RCA", "RCB"):
                    await api.b("add_station", AddStationRequest(token=admin, request_id=rid(), code=code, name=f"Race {code}"))
                run_id = await add_train(api, admin, 11300, [CoachInput(label="G1", seat_class=SeatClass.GENERAL, seats=50)],
                                         route=(("RCA", 0, 0, 0), ("RCB", 90, 90, 80)), first=7, last=7)
                # 200 clients: 50 accounts with 4 concurrent clients each (4 devices of one traveller), so the
                # server hashes 50 passwords rather than 200 -- every client still races on its own.
                sem = asyncio.Semaphore(16)

                async def account(i: int) -> str:
                    async with sem:
                        return await customer(api, f"racer{i:03d}", via=i)

                tokens = await asyncio.gather(*(account(i) for i in range(50)))
                t1 = time.monotonic()

                async def client(i: int) -> tuple[str, object]:
                    tok = tokens[i % 50]
                    waitlist = i % 2 == 1
                    try:
                        h = await api.b("hold", hold_req(tok, run_id, cls=SeatClass.GENERAL, a="RCA", b="RCB",
                                                         names=(f"Racer {i}",), accept_waitlist=waitlist), via=i)
                    except Exception as e:  # noqa: BLE001 - classified below
                        return "error", e
                    if h.state == BookingState.WAITLISTED:
                        return "waitlisted", h
                    p = await api.b("pay", pay_req(tok, h.pnr, amount_paise=h.amount_paise), via=i + 1)
                    return "confirmed", p

                outcomes = await asyncio.gather(*(client(i) for i in range(200)))
                t2 = time.monotonic()
                confirmed = [x for k, x in outcomes if k == "confirmed"]
                waitlisted = [x for k, x in outcomes if k == "waitlisted"]
                errors = [x for k, x in outcomes if k == "error"]
                assert len(confirmed) == 50, f"{len(confirmed)} confirmed"
                assert all(p.state == BookingState.CONFIRMED for p in confirmed)
                seats = [(p.passengers[0].coach, p.passengers[0].seat) for p in confirmed]
                assert len(set(seats)) == 50 and {s for _, s in seats} == set(range(1, 51)), "a seat was sold twice"
                for e in errors:
                    assert getattr(e, "status", None) == Status.FAILED_PRECONDITION and "sold out" in e.message, repr(e)
                assert len(waitlisted) + len(errors) == 150
                positions = sorted(w.waitlist_position for w in waitlisted)
                assert positions == list(range(1, len(waitlisted) + 1)), "waitlist positions must be 1..n"
                rep = await api.b("run_report", RunReportRequest(token=admin, run_id=run_id))
                gen = rep.classes[0]
                assert gen.seats_sold == 50 and gen.revenue_paise == sum(p.paid_paise for p in confirmed)
                found = await api.b("search", SearchRequest(from_station="RCA", to_station="RCB", date=day(7)))
                assert found.results[0].classes[0].free_seats == 0
                print(f"race: setup {t1 - t0:.1f}s, 200 clients {t2 - t1:.1f}s: 50 confirmed, "
                      f"{len(waitlisted)} waitlisted, {len(errors)} sold out")

        run(main())
        assert_same_databases(c)
    finally:
        try:
            print(c.describe())
        except Exception:  # noqa: BLE001
            pass
        c.close()
