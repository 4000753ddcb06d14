"""gateway.booking_wire: the hand-encoded BookingInfo reply is byte for byte what betterproto makes of
booking_service.booking_info for the same booking, decodes to the same message, and travels through grpclib's
codec and the Batch call unchanged."""

from __future__ import annotations

import asyncio

from grpclib.const import Cardinality, Handler
from grpclib.encoding.proto import ProtoCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batch_calls import _one
from gateway.booking_service import booking_info
from gateway.booking_wire import EncodedBookingInfo, booking_info_reply, encode_booking_info
from proto.gen.railraft.v1 import BatchCall, BookingInfo, BookingState, GetBookingRequest, SeatClass
from store import booking_queries as bq

u32 = st.integers(0, 2**32 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
text = st.text(max_size=40)
states = st.sampled_from([s.name for s in BookingState if s.value])
label = st.from_regex(r"[A-Z][A-Z0-9]{0,4}", fullmatch=True)
seat = st.one_of(st.just(""), st.builds(lambda lab, n: f"{lab}-{n}", label, st.integers(1, 999)))
passenger = st.builds(bq.PassengerView, st.integers(0, 6), text, st.integers(0, 130), text,
                      st.sampled_from(["ACTIVE", "CANCELLED"]), seat, text, i64)
event = st.builds(bq.BookingEvent, st.integers(1, 99), i64, states, text)
refund = st.builds(bq.RefundView, st.integers(1, 99), i64, i64, st.integers(0, 100), text, text,
                   st.one_of(st.none(), i64))
view = st.builds(
    bq.BookingView, st.integers(0, 2**63 - 1), text, states, text, st.integers(0, 2**63 - 1), text, text,
    st.integers(-(2**31), 2**31 - 1), text, st.sampled_from([c.name for c in SeatClass if c.value]),
    text, text, text, text, i64, i64, text, text, i64, i64, i64, i64, u32, i64, i64,
    st.lists(passenger, max_size=6).map(tuple), st.lists(event, max_size=5).map(tuple),
    st.lists(refund, max_size=3).map(tuple),
)


@settings(max_examples=400, deadline=None, derandomize=True)
@given(view, st.one_of(st.just(""), text))
def test_same_bytes_as_betterproto(v, message) -> None:
    expected = booking_info(v, message)
    wire = encode_booking_info(v, message)
    assert wire == bytes(expected)
    assert BookingInfo().parse(wire) == expected


def test_a_fresh_hold_as_the_benchmark_makes_it() -> None:
    v = bq.BookingView(
        41, "BBPUVSXSBT", "HELD", "cust0001", 1405, "2026-12-01", "SCHEDULED", 12047, "Bench Express 47", "SLEEPER",
        "BS018", "Station 18", "BS038", "Station 38", 1780284730000, 1780294730000, "2026-12-01 08:00",
        "2026-12-01 10:46", 29400, 0, 0, 1780286530000, 0, 1780284700000, 1780284700000,
        (bq.PassengerView(1, "Bench Passenger", 30, "", "ACTIVE", "S10-7", "LOWER", 29400),),
        (bq.BookingEvent(1, 1780284700000, "HELD", "held S10-7 (SLEEPER, BS018 to BS038); pay Rs 294.00"),), (),
    )
    reply = booking_info_reply(v, "PNR BBPUVSXSBT: 1 SLEEPER seat(s) held")
    expected = bytes(booking_info(v, "PNR BBPUVSXSBT: 1 SLEEPER seat(s) held"))
    assert isinstance(reply, BookingInfo) and isinstance(reply, EncodedBookingInfo)
    assert ProtoCodec().encode(reply, BookingInfo) == expected  # what a unary reply goes out as
    back = BookingInfo().parse(expected)
    assert (back.pnr, back.state, back.passengers[0].coach, back.passengers[0].seat, back.hold_expires_ms) == (
        "BBPUVSXSBT", BookingState.HELD, "S10", 7, 1780286530000)

    async def handler(stream) -> None:  # what a generated __rpc_get_booking does with its reply
        await stream.send_message(reply)

    handlers = {"GetBooking": Handler(handler, Cardinality.UNARY_UNARY, GetBookingRequest, BookingInfo)}
    result = asyncio.run(_one(handlers, BatchCall(method="GetBooking", request=b""), None))
    assert result.status == 0 and result.reply == expected  # what a Batch call's result carries
