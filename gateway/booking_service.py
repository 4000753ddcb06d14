"""`railraft.v1.Booking`: the whole booking model over grpclib (proto/booking.proto).

Every handler follows the same shape: validate the request and, for writes, build the store command stamped
here (time, PNR candidate, session hash, password hash), run `store.rules.precheck` and the cheap database
checks (unknown station, unknown run) so bad input is refused with INVALID_ARGUMENT / NOT_FOUND before anything
reaches the log; propose it through `BookingCore` (exactly-once per caller and request id, from any node);
map a failed `Result` to the gRPC status of the same name with the apply's human message; and answer with the
state read back after the write (read-your-writes from any node).

Reads honour `consistency`: LINEARIZABLE (default: a ReadIndex barrier, then this node's database), LEASE
(the leader's lease instead of a heartbeat round) or STALE (this node's database as it is).  A LEASE or
STALE read never denies a session or an object that exists: a miss is confirmed linearizably.

Roles come from the server's session table: admin RPCs answer PERMISSION_DENIED to customers before
proposing (and the apply checks again).  A booking that is not the caller's is NOT_FOUND, exactly like one
that does not exist.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from typing import Any

from grpclib import GRPCError
from grpclib.const import Status

from actors.node import Node
from proto.gen.railraft.v1 import (
    Ack,
    AddStationRequest,
    AddTrainRequest,
    BatchReply,
    BatchRequest,
    BookingBase,
    BookingEvent,
    BookingInfo,
    BookingList,
    BookingState,
    CancelRequest,
    CancelRunRequest,
    ClassAvailability,
    ClassReport,
    Coach,
    GetBookingRequest,
    HoldRequest,
    ListRunsRequest,
    ListStationsRequest,
    ListTrainsRequest,
    LoginRequest,
    LogoutRequest,
    MyBookingsRequest,
    Passenger,
    PayRequest,
    PnrStatusRequest,
    Refund,
    RefundQuoteResponse,
    RegisterRequest,
    RunInfo,
    RunList,
    RunReportRequest,
    RunReportResponse,
    ScheduleRunsRequest,
    SearchRequest,
    SearchResponse,
    SearchResult,
    SeatClass,
    SeatMapRequest,
    SeatMapResponse,
    Session,
    StationInfo,
    StationList,
    Stop,
    TrainInfo,
    TrainList,
    UserInfo,
    WhoAmIRequest,
)
from store import auth, civil, rules
from store import booking_queries as bq
from store.commands import (
    AddTrain,
    CancelBooking,
    CancelRun,
    CoachSpec,
    CreateStation,
    HoldSeats,
    PassengerSpec,
    ScheduleRuns,
    StopSpec,
)
from store.payments import PaymentProvider, new_pnr

from .booking_core import (
    LINEARIZABLE,
    STALE,
    BookingCore,
    Caller,
    check_request_id,
    check_text,
    invalid,
    now_ms,
    pnr_of,
    precheck,
    raise_for,
    station_code,
)
from .batch_calls import batch_handlers, run_batch
from .booking_wire import booking_info_reply, passenger_seat, passenger_status, reply_message, unpaid_pending
from .rpc import LeaderHintMixin, current_stream
from .search_wire import search_reply
from .seat_map_wire import seat_map_reply
from .submit import Submitter

log = logging.getLogger("railraft.booking")

LIST_LIMIT_MAX = 1000
RUN_ID_MAX = 2**62  # ids are SQLite integers; the wire's uint64 goes beyond (rules.precheck's bound)


# ================================================================================================ mapping


def seat_class_name(value: Any) -> str:
    """The store's class name of a SeatClass value; INVALID_ARGUMENT if unspecified or unknown."""
    try:
        cls = SeatClass(int(value))
    except ValueError:
        cls = SeatClass.UNSPECIFIED
    if cls == SeatClass.UNSPECIFIED:
        raise invalid(f"choose a seat class: {', '.join(rules.TRAVEL_CLASSES)}")
    return cls.name


def seat_class_of(name: str) -> SeatClass:
    """The SeatClass of a store class name."""
    return SeatClass[name]


def run_id_of(value: int) -> int:
    """A run id as the store can hold it (1 .. 2**62, as rules.precheck says); INVALID_ARGUMENT otherwise."""
    if not value:
        raise invalid("run_id is required")
    if not 1 <= value <= RUN_ID_MAX:
        raise invalid(f"run_id must be between 1 and {RUN_ID_MAX}")
    return value


def consistency_of(value: Any) -> int:
    """A Consistency value as the int BookingCore expects (unknown numbers are refused)."""
    n = int(value)
    if n not in (0, 1, 2):
        raise invalid("consistency must be LINEARIZABLE, LEASE or STALE")
    return n


def booking_info(v: bq.BookingView, message: str = "") -> BookingInfo:
    """A store BookingView as the wire's BookingInfo.  `message` defaults to the latest history note.  (What a
    handler sends is `booking_wire.booking_info_reply`: the same bytes, encoded by hand.)"""
    pax = []
    for p in v.passengers:
        coach, seat = passenger_seat(p)
        pax.append(Passenger(index=p.pax_no, name=p.name, age=p.age, coach=coach, seat=seat, berth=p.berth,
                             status=passenger_status(v, p)))
    return BookingInfo(
        id=v.booking_id, pnr=v.pnr, state=BookingState[v.status], run_id=v.run_id, train_number=v.train_number,
        train_name=v.train_name, date=v.departure[:10], from_station=v.from_code, to_station=v.to_code,
        departure_ms=v.depart_ms, arrival_ms=v.arrive_ms, seat_class=seat_class_of(v.travel_class),
        passengers=pax, amount_paise=v.amount_paise, paid_paise=v.paid_paise,
        hold_expires_ms=v.hold_expires_ms if unpaid_pending(v) else 0, waitlist_position=v.waitlist_position,
        refunds=[Refund(amount_paise=r.amount_paise, at_ms=r.ts_ms, reason=r.reason, percent=r.percent,
                        settled_ms=r.settled_ms or 0) for r in v.refunds],
        history=[BookingEvent(at_ms=e.ts_ms, state=BookingState[e.status], note=e.detail) for e in v.history],
        message=reply_message(v, message),
        refunded_paise=v.refunded_paise,
    )


def search_response(found: list[bq.SearchResult]) -> SearchResponse:
    """Search results as the wire's SearchResponse.  (What the handler sends is `search_wire.search_reply`:
    the same bytes, encoded by hand.)"""
    return SearchResponse(results=[
        SearchResult(
            run_id=r.run_id, train_number=r.train_number, train_name=r.train_name, train_type=r.train_type,
            date=r.departure[:10], from_station=r.from_code, to_station=r.to_code, departure_ms=r.depart_ms,
            arrival_ms=r.arrive_ms, distance_km=r.distance_km, status=r.status,
            classes=[ClassAvailability(seat_class=seat_class_of(c.travel_class), free_seats=c.free,
                                       fare_paise=c.fare_paise, service_id=c.service_id) for c in r.classes],
        )
        for r in found
    ])


def train_info(t: bq.TrainView) -> TrainInfo:
    """A store TrainView as TrainInfo (`id` carries the train number: trains are known by number)."""
    return TrainInfo(
        id=t.number, number=t.number, name=t.name, type=t.train_type, departure_time=t.depart_time,
        stops=[Stop(station_code=s.code, station_name=s.name, arrival_offset_min=s.arrive_min,
                    departure_offset_min=s.depart_min, distance_km=s.km) for s in t.stops],
        coaches=[Coach(label=c.label, seat_class=seat_class_of(c.travel_class), seats=c.seats) for c in t.coaches],
    )


def run_info(r: bq.RunView, train_name: str) -> RunInfo:
    """A store RunView as RunInfo."""
    return RunInfo(id=r.run_id, train_number=r.train_number, train_name=train_name, date=r.run_date,
                   status=r.status, departure_ms=r.depart_ms)


# ========================================================================================== read functions
#
# Run on the reader thread (BookingCore.read / .local): plain values in, plain values out.


class UnknownStation(bq.NotFound):
    """A station code that names no station (bad input, unlike a run that does not call there).  A NotFound,
    so a STALE read confirms it linearizably before it is believed."""


def _hold_target(conn: Any, run_id: int, from_code: str, to_code: str) -> bq.Segment:
    """The run's segment, with unknown stations told apart from a run that does not call there."""
    for code in (from_code, to_code):
        if bq.station_by_code(conn, code) is None:
            raise UnknownStation(f"unknown station {code}")
    return bq.segment(conn, run_id, from_code, to_code)


def _unknown_stations(conn: Any, codes: list[str]) -> list[str]:
    return [c for c in codes if bq.station_by_code(conn, c) is None]


def _runs_with_names(conn: Any, train_number: int, first: str, last: str) -> tuple[str, list[bq.RunView]]:
    t = bq.train(conn, train_number)
    return (t.name if t else ""), bq.runs(conn, train_number, first, last)


def _report(conn: Any, run_id: int) -> tuple[bq.RunReport, bq.RunView | None]:
    rep = bq.run_report(conn, run_id)
    runs = bq.runs(conn, rep.train_number, rep.run_date, rep.run_date)
    return rep, next((r for r in runs if r.run_id == run_id), None)


def _cancel_preview(conn: Any, pnr: str, user_id: int, nos: tuple[int, ...], now: int, is_admin: bool
                    ) -> bq.RefundQuote | str | None:
    """The refund quote, a reason it cannot be cancelled (str), or None if the booking is not visible."""
    view = bq.booking(conn, pnr, user_id, is_admin)
    if view is None:
        return None
    if view.status not in ("HELD", "CONFIRMED", "WAITLISTED"):
        return f"booking {view.pnr} is already {view.status}"
    try:
        return bq.refund_quote(conn, pnr, user_id, nos, now, is_admin)
    except ValueError as e:
        raise GRPCError(Status.INVALID_ARGUMENT, str(e)) from None


# ================================================================================================ service


class BookingService(LeaderHintMixin, BookingBase):
    """`railraft.v1.Booking` on one node (see the module docstring)."""

    def __init__(self, node: Node, submitter: Submitter, provider: PaymentProvider | None = None,
                 core: BookingCore | None = None) -> None:
        self.node = node
        self.core = core if core is not None else BookingCore(node, submitter, provider)
        self._batch_handlers: dict[str, Any] | None = None

    async def batch(self, batch_request: BatchRequest) -> AsyncIterator[BatchReply]:
        """Several calls of this service in one round trip, each as if made alone (gateway/batch_calls.py)."""
        if self._batch_handlers is None:
            self._batch_handlers = batch_handlers(self.__mapping__())
        async for reply in run_batch(self._batch_handlers, batch_request, current_stream()):
            yield reply

    # ------------------------------------------------------------------------------------ helpers
    async def _booking(self, caller: Caller, pnr: str, consistency: int = LINEARIZABLE, message: str = ""
                       ) -> BookingInfo:
        view = await self.core.read(consistency, bq.booking, pnr, caller.user_id, caller.is_admin)
        if view is None:
            raise GRPCError(Status.NOT_FOUND, f"no booking {pnr} among your bookings")
        return booking_info_reply(view, message)

    @staticmethod
    def _not_found(e: bq.NotFound) -> GRPCError:
        return GRPCError(Status.NOT_FOUND, str(e))

    # ----------------------------------------------------------------------------------- accounts
    async def register(self, register_request: RegisterRequest) -> Session:
        req = register_request
        try:
            username = auth.validate_username(req.username)
            auth.validate_password(req.password)
        except ValueError as e:
            raise invalid(str(e)) from None
        res = raise_for(await self.core.register(username, req.password, check_request_id(req.request_id)))
        return await self._open_session(int(res.data["user_id"]), username, rules.ROLE_CUSTOMER)

    async def _open_session(self, user_id: int, username: str, role: str, password_hash: str | None = None
                            ) -> Session:
        token, expires_at_ms, res = await self.core.open_session(user_id, password_hash)
        raise_for(res)
        return Session(token=token, user=UserInfo(id=user_id, username=res.data.get("username", username),
                                                  role=res.data.get("role", role)),
                       expires_at_ms=expires_at_ms)

    async def login(self, login_request: LoginRequest) -> Session:
        user = await self.core.authenticate(login_request.username, login_request.password)
        if user is None:
            raise GRPCError(Status.UNAUTHENTICATED, "wrong username or password")
        return await self._open_session(user.id, user.username, user.role, user.password_hash)

    async def logout(self, logout_request: LogoutRequest) -> Ack:
        req = logout_request
        if not req.token or len(req.token) > 512:
            raise GRPCError(Status.UNAUTHENTICATED, "not logged in (no session token given)")
        res = await self.core.revoke_session(req.token, check_request_id(req.request_id))
        if not res.ok:
            raise GRPCError(Status.UNAUTHENTICATED, "not logged in (unknown or already revoked session)")
        return Ack(ok=True, message="logged out")

    async def who_am_i(self, who_am_i_request: WhoAmIRequest) -> UserInfo:
        c = await self.core.session(who_am_i_request.token, LINEARIZABLE)
        return UserInfo(id=c.user_id, username=c.username, role=c.role)

    # ------------------------------------------------------------------------- catalogue (reads)
    async def list_stations(self, list_stations_request: ListStationsRequest) -> StationList:
        req = list_stations_request
        prefix = check_text(req.prefix, "prefix", rules.STATION_NAME_MAX)
        limit = min(req.limit, LIST_LIMIT_MAX) if req.limit else LIST_LIMIT_MAX
        stations = await self.core.read(consistency_of(req.consistency), bq.stations, prefix, limit)
        return StationList(stations=[StationInfo(id=s.id, code=s.code, name=s.name) for s in stations])

    async def list_trains(self, list_trains_request: ListTrainsRequest) -> TrainList:
        # The timetable is public: the token is not required (it is accepted for symmetry).
        trains = await self.core.read(consistency_of(list_trains_request.consistency), bq.trains)
        return TrainList(trains=[train_info(t) for t in trains])

    async def search(self, search_request: SearchRequest) -> SearchResponse:
        req = search_request
        a, b = station_code(req.from_station, "from_station"), station_code(req.to_station, "to_station")
        if a == b:
            raise invalid("from and to stations must differ")
        now = now_ms()
        try:
            rules.validate_date_not_past(req.date, now)
        except ValueError as e:
            raise invalid(str(e)) from None
        try:
            found = await self.core.read(consistency_of(req.consistency), bq.search, a, b, req.date, False, now)
        except bq.NotFound as e:
            raise invalid(str(e)) from None  # an unknown station is bad input here
        return search_reply(found)  # encoded by hand (gateway/search_wire.py): search_response(found)'s bytes

    async def seat_map(self, seat_map_request: SeatMapRequest) -> SeatMapResponse:
        req = seat_map_request
        run_id_of(req.run_id)
        a, b = station_code(req.from_station, "from_station"), station_code(req.to_station, "to_station")
        coach = req.coach.strip().upper()
        if coach:
            try:
                rules.validate_coach_label(coach)
            except ValueError as e:
                raise invalid(str(e)) from None

        try:
            summaries, cmap = await self.core.read(consistency_of(req.consistency), bq.coaches_and_seat_map,
                                                   req.run_id, coach, a, b)
        except bq.NotFound as e:
            raise self._not_found(e) from None
        except ValueError as e:
            raise invalid(str(e)) from None
        # Encoded by hand (gateway/seat_map_wire.py): the same bytes, a tenth of the CPU.
        return seat_map_reply(
            req.run_id, coach, SeatClass[cmap.travel_class].value if cmap is not None else 0,
            [(s.seat_no, s.berth, s.free) for s in cmap.seats] if cmap is not None else (),
            [(c.coach_label, SeatClass[c.travel_class].value, c.seats, c.free) for c in summaries],
        )

    # ------------------------------------------------------------------------------------ bookings
    async def hold(self, hold_request: HoldRequest) -> BookingInfo:
        req = hold_request
        request_id = check_request_id(req.request_id)
        travel_class = seat_class_name(req.seat_class)
        a, b = station_code(req.from_station, "from_station"), station_code(req.to_station, "to_station")
        if not req.passengers:
            raise invalid("a booking needs at least one passenger")
        if len(req.passengers) > rules.PASSENGERS_MAX:
            raise invalid(f"a booking is for 1 to {rules.PASSENGERS_MAX} passengers (got {len(req.passengers)})")
        if len(req.chosen_seats) > len(req.passengers):
            raise invalid("more chosen seats than passengers")
        seats = []
        for s in req.chosen_seats:
            if not s.coach and not s.seat:
                seats.append("")  # no choice for this passenger
                continue
            if not s.seat:
                raise invalid("a chosen seat needs a coach and a seat number")
            seats.append(rules.seat_ref(s.coach.strip().upper()[:8], s.seat))
        seats += [""] * (len(req.passengers) - len(seats))
        passengers = tuple(
            PassengerSpec(name=p.name.strip(), age=p.age, berth_pref=p.berth_preference.strip().upper(), seat=seat)
            for p, seat in zip(req.passengers, seats)
        )
        # The caller, and the checks that need the database before proposing (an unknown run or station, a
        # segment the train does not run), in one read; the input rules are applied in between, as before.
        # (Seat availability is the apply's alone: it changes under us.)
        run_id_of(req.run_id)  # in range before it reaches SQLite
        caller, target = await self.core.session_and(req.token, _hold_target, req.run_id, a, b)
        cmd = HoldSeats(
            request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(), token_sha256=caller.token_sha256,
            pnr=new_pnr(), run_id=req.run_id, travel_class=travel_class, from_code=a, to_code=b,
            passengers=passengers, accept_waitlist=req.accept_waitlist,
            hold_seconds=req.hold_seconds or rules.HOLD_SECONDS_DEFAULT,
        )
        checked = precheck(cmd)
        try:
            await target()
        except UnknownStation as e:
            raise invalid(str(e)) from None
        except bq.NotFound as e:
            raise self._not_found(e) from None
        except ValueError as e:
            raise invalid(str(e)) from None
        res, index = await self.core.submit_at(checked)
        raise_for(res)
        view = await self.core.read_after(index, bq.booking, res.data["pnr"], caller.user_id, caller.is_admin)
        if view is None:  # pragma: no cover - the hold just created it
            raise GRPCError(Status.NOT_FOUND, f"no booking {res.data['pnr']} among your bookings")
        return booking_info_reply(view, res.message)

    async def pay(self, pay_request: PayRequest) -> BookingInfo:
        req = pay_request
        request_id = check_request_id(req.request_id)
        pnr = pnr_of(req.pnr)
        if req.amount_paise < 0:
            raise invalid("amount_paise must not be negative")
        caller = await self.core.session(req.token)
        res = raise_for(await self.core.pay(caller, request_id, pnr, req.card_number,
                                            expected_amount_paise=req.amount_paise))
        return await self._booking(caller, pnr, message=res.message)

    def _passenger_nos(self, nos: list[int]) -> tuple[int, ...]:
        if len(nos) > rules.PASSENGERS_MAX or any(not 1 <= n <= rules.PASSENGERS_MAX for n in nos):
            raise invalid(f"passenger numbers are 1 to {rules.PASSENGERS_MAX}")
        if len(set(nos)) != len(nos):
            raise invalid("a passenger is listed twice")
        return tuple(nos)

    async def cancel(self, cancel_request: CancelRequest) -> BookingInfo:
        req = cancel_request
        request_id = check_request_id(req.request_id)
        pnr = pnr_of(req.pnr)
        nos = self._passenger_nos(list(req.passengers))
        caller = await self.core.session(req.token)
        cmd = CancelBooking(request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(),
                            token_sha256=caller.token_sha256, pnr=pnr, passenger_nos=nos)
        res = raise_for(await self.core.submit(cmd))
        return await self._booking(caller, pnr, message=res.message)

    async def refund_quote(self, cancel_request: CancelRequest) -> RefundQuoteResponse:
        req = cancel_request
        pnr = pnr_of(req.pnr)
        nos = self._passenger_nos(list(req.passengers))
        caller = await self.core.session(req.token, LINEARIZABLE)
        got = await self.core.read(LINEARIZABLE, _cancel_preview, pnr, caller.user_id, nos, now_ms(),
                                   caller.is_admin)
        if got is None:
            raise GRPCError(Status.NOT_FOUND, f"no booking {pnr} among your bookings")
        if isinstance(got, str):
            raise GRPCError(Status.FAILED_PRECONDITION, got)
        return RefundQuoteResponse(refund_paise=got.refund_paise, percent=got.percent, rule=got.rule)

    async def get_booking(self, get_booking_request: GetBookingRequest) -> BookingInfo:
        req = get_booking_request
        pnr = pnr_of(req.pnr)
        consistency = consistency_of(req.consistency)
        caller = await self.core.session(req.token, consistency)
        return await self._booking(caller, pnr, consistency)

    async def my_bookings(self, my_bookings_request: MyBookingsRequest) -> BookingList:
        req = my_bookings_request
        consistency = consistency_of(req.consistency)
        caller = await self.core.session(req.token, consistency)
        views = await self.core.read(consistency, bq.my_bookings, caller.user_id, 500)
        return BookingList(bookings=[booking_info(v) for v in views])

    async def pnr_status(self, pnr_status_request: PnrStatusRequest) -> BookingInfo:
        req = pnr_status_request
        pnr = pnr_of(req.pnr)
        name = check_text(req.passenger_name.strip(), "passenger name", rules.PASSENGER_NAME_MAX)
        if not name:
            raise invalid("give the name of one of the booking's passengers")
        consistency = consistency_of(req.consistency)
        view = await self.core.read(consistency, bq.pnr_status, pnr, name)
        if view is None and consistency != LINEARIZABLE:
            view = await self.core.read(LINEARIZABLE, bq.pnr_status, pnr, name)
        if view is None:
            raise GRPCError(Status.NOT_FOUND, f"no booking {pnr} with a passenger called {name!r}")
        return booking_info_reply(view)

    # ------------------------------------------------------------------------------ administration
    async def add_station(self, add_station_request: AddStationRequest) -> StationInfo:
        req = add_station_request
        request_id = check_request_id(req.request_id)
        code = station_code(req.code, "code")
        caller = await self.core.session(req.token, admin=True)
        cmd = CreateStation(request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(),
                            token_sha256=caller.token_sha256, code=code, name=req.name.strip())
        res = raise_for(await self.core.submit(cmd))
        return StationInfo(id=int(res.data["station_id"]), code=code, name=cmd.name)

    async def add_train(self, add_train_request: AddTrainRequest) -> TrainInfo:
        req = add_train_request
        request_id = check_request_id(req.request_id)
        if len(req.stops) > rules.ROUTE_STOPS_MAX or len(req.coaches) > rules.COACHES_MAX:
            raise invalid(f"a train has at most {rules.ROUTE_STOPS_MAX} stops and {rules.COACHES_MAX} coaches")
        stops = tuple(StopSpec(station_code=station_code(s.station_code, f"stop {i + 1}"),
                               arrive_min=s.arrival_offset_min, depart_min=s.departure_offset_min,
                               km=s.distance_km) for i, s in enumerate(req.stops))
        coaches = tuple(CoachSpec(label=c.label.strip().upper(), travel_class=seat_class_name(c.seat_class),
                                  seats=c.seats) for c in req.coaches)
        caller = await self.core.session(req.token, admin=True)
        cmd = AddTrain(request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(),
                       token_sha256=caller.token_sha256, number=req.number, name=req.name.strip(),
                       train_type=rules.normalize_train_type(req.type) if req.type else "", depart_time=req.departure_time,
                       stops=stops, coaches=coaches)
        checked = precheck(cmd)
        unknown = await self.core.read(STALE, _unknown_stations, [s.station_code for s in stops])
        if unknown:
            unknown = await self.core.read(LINEARIZABLE, _unknown_stations, unknown)
        if unknown:
            raise invalid(f"unknown station(s): {', '.join(unknown)}")
        raise_for(await self.core.submit(checked))
        t = await self.core.read(LINEARIZABLE, bq.train, req.number)
        return train_info(t)

    async def schedule_runs(self, schedule_runs_request: ScheduleRunsRequest) -> RunList:
        req = schedule_runs_request
        request_id = check_request_id(req.request_id)
        caller = await self.core.session(req.token, admin=True)
        cmd = ScheduleRuns(request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(),
                           token_sha256=caller.token_sha256, train_number=req.train_number,
                           first_date=req.first_date, last_date=req.last_date or req.first_date)
        res = raise_for(await self.core.submit(cmd))
        ids = set(res.data.get("run_ids", []))
        name, runs = await self.core.read(LINEARIZABLE, _runs_with_names, req.train_number, cmd.first_date,
                                          cmd.last_date)
        return RunList(runs=[run_info(r, name) for r in runs if r.run_id in ids])

    async def list_runs(self, list_runs_request: ListRunsRequest) -> RunList:
        req = list_runs_request
        last = req.last_date or req.first_date
        try:
            rules.validate_train_number(req.train_number)
            first_day, last_day = civil.parse_date(req.first_date), civil.parse_date(last)
        except ValueError as e:
            raise invalid(str(e)) from None
        if last_day < first_day or last_day - first_day >= rules.SCHEDULE_DAYS_MAX:
            raise invalid(f"give a date range of 1 to {rules.SCHEDULE_DAYS_MAX} days")
        name, runs = await self.core.read(consistency_of(req.consistency), _runs_with_names, req.train_number,
                                          req.first_date, last)
        return RunList(runs=[run_info(r, name) for r in runs])

    async def cancel_run(self, cancel_run_request: CancelRunRequest) -> Ack:
        req = cancel_run_request
        request_id = check_request_id(req.request_id)
        if not req.run_id:
            raise invalid("run_id is required")
        caller = await self.core.session(req.token, admin=True)
        cmd = CancelRun(request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(),
                        token_sha256=caller.token_sha256, run_id=req.run_id, reason=req.reason.strip())
        res = raise_for(await self.core.submit(cmd))
        return Ack(ok=True, message=res.message)

    async def run_report(self, run_report_request: RunReportRequest) -> RunReportResponse:
        req = run_report_request
        consistency = consistency_of(req.consistency)
        run_id_of(req.run_id)
        await self.core.session(req.token, consistency, admin=True)
        try:
            rep, run = await self.core.read(consistency, _report, req.run_id)
        except bq.NotFound as e:
            raise self._not_found(e) from None
        return RunReportResponse(
            run=RunInfo(id=rep.run_id, train_number=rep.train_number, train_name=rep.train_name,
                        date=rep.run_date, status=rep.status, departure_ms=run.depart_ms if run else 0),
            classes=[ClassReport(seat_class=seat_class_of(c.travel_class), seats=c.seats, seats_sold=c.seats_sold,
                                 occupancy_percent=c.occupancy_percent, revenue_paise=c.revenue_paise,
                                 refunds_paise=c.refunds_paise) for c in rep.classes],
            bookings=rep.bookings, waitlisted=rep.waitlisted, revenue_paise=rep.revenue_paise,
            refunds_paise=rep.refunded_paise,
        )
