"""gateway.seat_map_wire: the hand-encoded SeatMap reply is byte for byte what betterproto makes of the same
values, decodes to the same message, and travels through grpclib's codec and the Batch call unchanged."""

from __future__ import annotations

import asyncio
import sys
import typing

import pytest
from grpclib.const import Cardinality, Handler
from grpclib.encoding.proto import ProtoCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway import seat_map_wire
from gateway.batch_calls import _one
from gateway.seat_map_wire import EncodedSeatMap, encode_seat_map, seat_map_reply
from proto.gen.railraft.v1 import BatchCall, Coach, SeatClass, SeatInfo, SeatMapRequest, SeatMapResponse

u32 = st.integers(0, 2**32 - 1)
text = st.text(max_size=12)
seats = st.lists(st.tuples(u32, text, st.booleans()), max_size=80)
classes = st.sampled_from([c.value for c in SeatClass])
coaches = st.lists(st.tuples(text, classes, u32, u32), max_size=25)


def betterproto_bytes(run_id, coach, seat_class, seat_list, coach_list) -> bytes:
    return bytes(SeatMapResponse(
        run_id=run_id, coach=coach, seat_class=SeatClass(seat_class),
        seats=[SeatInfo(number=n, berth=b, free=f) for n, b, f in seat_list],
        coaches=[Coach(label=label, seat_class=SeatClass(c), seats=s, free_seats=f) for label, c, s, f in coach_list],
    ))


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.integers(0, 2**64 - 1), text, classes, seats, coaches)
def test_same_bytes_as_betterproto(run_id, coach, seat_class, seat_list, coach_list) -> None:
    wire = encode_seat_map(run_id, coach, seat_class, seat_list, coach_list)
    assert wire == betterproto_bytes(run_id, coach, seat_class, seat_list, coach_list)
    back = SeatMapResponse().parse(wire)
    assert back.run_id == run_id and back.coach == coach and back.seat_class == seat_class
    assert [(s.number, s.berth, s.free) for s in back.seats] == seat_list
    assert [(c.label, c.seat_class, c.seats, c.free_seats) for c in back.coaches] == coach_list


def test_cached_pieces_are_reused_and_the_cache_stays_bounded(monkeypatch) -> None:
    monkeypatch.setattr(seat_map_wire, "CACHE_MAX", 10)
    seat_map_wire._SEATS.clear()
    seat_list = [(n, "LOWER", n % 2 == 0) for n in range(1, 31)]
    first = encode_seat_map(7, "S1", 4, seat_list, [("S1", 4, 72, 40)])
    assert len(seat_map_wire._SEATS) <= 10
    assert encode_seat_map(7, "S1", 4, seat_list, [("S1", 4, 72, 40)]) == first
    assert first == betterproto_bytes(7, "S1", 4, seat_list, [("S1", 4, 72, 40)])


def test_negative_numbers_are_refused() -> None:
    with pytest.raises(ValueError):
        encode_seat_map(-1, "S1", 4, [], [])


def test_the_reply_goes_through_grpclib_and_batch_encoding_unchanged() -> None:
    values = (9, "B2", SeatClass.AC3.value, [(1, "UPPER", True), (2, "", False)],
              [("B1", SeatClass.AC3.value, 64, 0), ("B2", SeatClass.AC3.value, 64, 1)])
    reply, expected = seat_map_reply(*values), betterproto_bytes(*values)
    assert isinstance(reply, SeatMapResponse) and isinstance(reply, EncodedSeatMap)
    # betterproto can describe the subclass: it resolves the field types in the subclass's own module
    hints = typing.get_type_hints(EncodedSeatMap, vars(sys.modules[EncodedSeatMap.__module__]), {})
    assert hints["seats"] == list[SeatInfo] or hints["seats"] == typing.List[SeatInfo]  # noqa: UP006
    assert ProtoCodec().encode(reply, SeatMapResponse) == expected  # what a unary reply goes out as

    async def handler(stream) -> None:  # what a generated __rpc_seat_map does with its reply
        await stream.send_message(reply)

    handlers = {"SeatMap": Handler(handler, Cardinality.UNARY_UNARY, SeatMapRequest, SeatMapResponse)}
    result = asyncio.run(_one(handlers, BatchCall(method="SeatMap", request=b""), None))
    assert result.status == 0 and result.reply == expected  # what a Batch call's result carries
