"""The original `train_booking.Ticketing` booking RPCs, as a thin adapter over railraft's commands.

`TicketingCompatMixin` is mixed into `gateway.services.TicketingService` (which keeps Register, Login and
Logout): ListCities, SearchTrainServices, AddTrain, AddTrainService, GetAllTrains, InitiateBooking,
ProcessPayment, GetMyBookings and CancelBooking, with their original meanings (store.compat spells the
mapping out): city ids are station ids; a `service_id` names a run, a class and the searched segment;
`booking_id` is the PNR; money is rupees as a double on the wire (paise inside, converted only here);
SLEEPER, which the old SeatType enum lacks, is listed as UNKNOWN.

Replies that have `success`/`message` carry the outcome there -- `success` is what the apply actually did,
never merely that a command was committed -- so clients written against the original system keep working:
bad input, a missing session, a sold-out train are `success=false` with a human sentence.  Replies without
those fields (ListCities, SearchTrainServices, GetAllTrains, GetMyBookings) use gRPC status codes.  A node
that cannot reach a leader still answers UNAVAILABLE with a leader hint (LeaderHintMixin), because that is a
"try another node", not an outcome.

Exactly-once: the old messages had no request ids; railraft added optional ones (new field numbers).
Without one, ProcessPayment and CancelBooking use a request id derived from the PNR -- paying or cancelling a
booking twice can only mean the same intent, so a retry after a lost reply gets the first answer --, while
InitiateBooking, AddTrain and AddTrainService get a fresh one (two identical requests may be two intents).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from grpclib import GRPCError
from grpclib.const import Status

from proto.gen.train_booking import (
    AddTrainRequest,
    AddTrainServiceRequest,
    BookingConfirmation,
    BookingDetails,
    BookingList,
    CancelBookingRequest,
    City,
    GetAllTrainsRequest,
    GetAllTrainsResponse,
    GetMyBookingsRequest,
    InitiateBookingRequest,
    ListCitiesRequest,
    ListCitiesResponse,
    ProcessPaymentRequest,
    SearchRequest,
    SearchResponse,
    SeatType,
    ServiceSummary,
    StatusResponse,
    TrainInfo,
)
from store import compat, rules
from store import booking_queries as bq
from store.payments import TEST_CARD, new_pnr

from .booking_core import (
    LINEARIZABLE,
    STALE,
    BookingCore,
    check_request_id,
    now_ms,
    pnr_of,
    precheck,
)

__all__ = ["TicketingCompatMixin", "rupees"]


def rupees(paise: int) -> float:
    """Paise as the old API's rupees (a double); exact for every amount railraft can hold (< 2**53)."""
    return paise / 100


def _seat_type(travel_class: str) -> SeatType:
    return SeatType(compat.seat_type_number(travel_class))


async def _outcome(make_reply: Callable[..., Any], work: Awaitable[Any]) -> Any:
    """Run `work`; a refusal (GRPCError other than UNAVAILABLE) becomes `success=false, message=...`."""
    try:
        return await work
    except GRPCError as e:
        if e.status in (Status.UNAVAILABLE, Status.DEADLINE_EXCEEDED, Status.INTERNAL):
            raise
        return make_reply(success=False, message=e.message or e.status.name.replace("_", " ").lower())


def _bad(e: ValueError) -> GRPCError:
    return GRPCError(Status.INVALID_ARGUMENT, str(e))


def _station_pair(conn: Any, a: int, b: int) -> tuple[bq.Station | None, bq.Station | None]:
    return bq.station_by_id(conn, a), bq.station_by_id(conn, b)


class TicketingCompatMixin:
    """The original booking RPCs; the class it is mixed into provides `self.core` (a BookingCore)."""

    core: BookingCore

    # ------------------------------------------------------------------------------------------ reads
    async def list_cities(self, list_cities_request: ListCitiesRequest) -> ListCitiesResponse:
        cities = await self.core.read(LINEARIZABLE, compat.cities)
        return ListCitiesResponse(cities=[City(city_id=c.city_id, city_name=c.city_name, city_code=c.city_code)
                                          for c in cities])

    async def search_train_services(self, search_request: SearchRequest) -> SearchResponse:
        req = search_request
        now = now_ms()
        try:
            rules.validate_date_not_past(req.date, now)
        except ValueError as e:
            raise _bad(e) from None
        if req.source_city_id == req.destination_city_id:
            raise GRPCError(Status.INVALID_ARGUMENT, "source and destination cities must differ")
        try:
            found = await self.core.read(LINEARIZABLE, compat.search_services, req.source_city_id,
                                         req.destination_city_id, req.date, now)
        except bq.NotFound as e:
            raise GRPCError(Status.INVALID_ARGUMENT, str(e)) from None
        return SearchResponse(services=[
            ServiceSummary(service_id=s.service_id, train_number=s.train_number, train_name=s.train_name,
                           source_city_name=s.source_city_name, destination_city_name=s.destination_city_name,
                           datetime_of_departure=s.datetime_of_departure, datetime_of_arrival=s.datetime_of_arrival,
                           seat_type=SeatType(s.seat_type_number), seats_available=s.seats_available,
                           price=rupees(s.price_paise))
            for s in found
        ])

    async def get_all_trains(self, get_all_trains_request: GetAllTrainsRequest) -> GetAllTrainsResponse:
        req = get_all_trains_request
        await self.core.session(req.admin_token, LINEARIZABLE, admin=True)
        trains = await self.core.read(LINEARIZABLE, compat.all_trains, max(req.source_city_id, 0),
                                      max(req.destination_city_id, 0))
        return GetAllTrainsResponse(trains=[
            TrainInfo(train_number=t.train_number, train_name=t.train_name, source_city=t.source_city,
                      destination_city=t.destination_city, train_type=t.train_type)
            for t in trains
        ])

    async def get_my_bookings(self, get_my_bookings_request: GetMyBookingsRequest) -> BookingList:
        caller = await self.core.session(get_my_bookings_request.customer_token, LINEARIZABLE)
        rows = await self.core.read(LINEARIZABLE, compat.my_bookings, caller.user_id)
        return BookingList(bookings=[
            BookingDetails(booking_id=b.booking_id, train_name=b.train_name, source=b.source,
                           destination=b.destination, datetime_of_departure=b.datetime_of_departure,
                           number_of_seats=b.number_of_seats, total_cost=rupees(b.total_cost_paise),
                           seat_type=_seat_type(b.seat_type), status=b.status)
            for b in rows
        ])

    # ------------------------------------------------------------------------------------ admin writes
    async def add_train(self, add_train_request: AddTrainRequest) -> StatusResponse:
        return await _outcome(StatusResponse, self._add_train(add_train_request))

    async def _add_train(self, req: AddTrainRequest) -> StatusResponse:
        request_id = check_request_id(req.request_id)
        caller = await self.core.session(req.admin_token, admin=True)
        src, dst = await self.core.read(STALE, _station_pair, req.source_city_id, req.destination_city_id)
        if src is None or dst is None:
            src, dst = await self.core.read(LINEARIZABLE, _station_pair, req.source_city_id, req.destination_city_id)
        if src is None or dst is None:
            missing = req.source_city_id if src is None else req.destination_city_id
            raise GRPCError(Status.INVALID_ARGUMENT, f"unknown city id {missing}")
        try:
            cmd = compat.add_train_command(
                request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(), token_sha256=caller.token_sha256,
                number=req.train_number, name=req.train_name.strip(), source_code=src.code,
                destination_code=dst.code, train_type=req.train_type,
            )
        except ValueError as e:
            raise _bad(e) from None
        res = await self.core.submit(cmd)
        return StatusResponse(success=res.ok, message=res.message)

    async def add_train_service(self, add_train_service_request: AddTrainServiceRequest) -> StatusResponse:
        return await _outcome(StatusResponse, self._add_train_service(add_train_service_request))

    async def _add_train_service(self, req: AddTrainServiceRequest) -> StatusResponse:
        request_id = check_request_id(req.request_id)
        caller = await self.core.session(req.admin_token, admin=True)
        if len(req.seat_info) > len(rules.TRAVEL_CLASSES):
            raise GRPCError(Status.INVALID_ARGUMENT, "give seats for 1 to 5 classes")
        try:
            cmd = compat.add_train_service_command(
                request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(), token_sha256=caller.token_sha256,
                train_number=req.train_number, departure=req.datetime_of_departure.strip(),
                arrival=req.datetime_of_arrival.strip(),
                seat_info=[(int(s.seat_type), s.seats_available, s.price) for s in req.seat_info],
            )
        except OverflowError:  # an infinite price (rupees are a double on the wire)
            raise GRPCError(Status.INVALID_ARGUMENT, "price must be a finite number of rupees") from None
        except ValueError as e:
            raise _bad(e) from None
        res = await self.core.submit(cmd)
        return StatusResponse(success=res.ok, message=res.message)

    # --------------------------------------------------------------------------------- customer writes
    async def initiate_booking(self, initiate_booking_request: InitiateBookingRequest) -> BookingConfirmation:
        return await _outcome(BookingConfirmation, self._initiate_booking(initiate_booking_request))

    async def _initiate_booking(self, req: InitiateBookingRequest) -> BookingConfirmation:
        request_id = check_request_id(req.request_id)
        caller = await self.core.session(req.customer_token)
        try:
            cmd = compat.initiate_booking_command(
                request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(), token_sha256=caller.token_sha256,
                service_id=req.service_id[:80], number_of_seats=req.number_of_seats, pnr=new_pnr(),
            )
        except ValueError as e:
            raise _bad(e) from None
        checked = precheck(cmd)
        try:
            await self.core.read(STALE, bq.segment, cmd.run_id, cmd.from_code, cmd.to_code)
        except bq.NotFound as e:
            raise GRPCError(Status.NOT_FOUND, f"no such service {req.service_id!r}: {e}") from None
        except ValueError as e:
            raise _bad(e) from None
        res = await self.core.submit(checked)
        if not res.ok:
            return BookingConfirmation(success=False, message=res.message)
        return BookingConfirmation(success=True, message=res.message, booking_id=res.data["pnr"],
                                   total_cost=rupees(int(res.data["amount_paise"])))

    async def process_payment(self, process_payment_request: ProcessPaymentRequest) -> StatusResponse:
        return await _outcome(StatusResponse, self._process_payment(process_payment_request))

    async def _process_payment(self, req: ProcessPaymentRequest) -> StatusResponse:
        pnr = pnr_of(req.booking_id)
        mode = req.payment_mode.strip()[:32] or "unspecified"
        request_id = check_request_id(req.request_id or f"compat-pay:{pnr}")
        caller = await self.core.session(req.customer_token)
        # The old API takes no card: the simulated provider's approved test card stands in for the payment
        # mode, which is recorded in the charge's description.
        res = await self.core.pay(caller, request_id, pnr, TEST_CARD, description=f"PNR {pnr} ({mode})")
        return StatusResponse(success=res.ok, message=res.message)

    async def cancel_booking(self, cancel_booking_request: CancelBookingRequest) -> StatusResponse:
        return await _outcome(StatusResponse, self._cancel_booking(cancel_booking_request))

    async def _cancel_booking(self, req: CancelBookingRequest) -> StatusResponse:
        pnr = pnr_of(req.booking_id)
        request_id = check_request_id(req.request_id or f"compat-cancel:{pnr}")
        caller = await self.core.session(req.customer_token)
        try:
            cmd = compat.cancel_booking_command(request_id=request_id, client_id=caller.client_id, ts_ms=now_ms(),
                                                token_sha256=caller.token_sha256, booking_id=pnr)
        except ValueError as e:
            raise _bad(e) from None
        res = await self.core.submit(cmd)
        return StatusResponse(success=res.ok, message=res.message)
