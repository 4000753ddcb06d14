"""gateway.search_wire: the hand-encoded Search reply is byte for byte what betterproto makes of
booking_service.search_response for the same results, decodes to the same message, and travels through
grpclib's codec and the Batch call unchanged."""

from __future__ import annotations

import asyncio

from grpclib.const import Cardinality, Handler
from grpclib.encoding.proto import ProtoCodec
from hypothesis import given, settings
from hypothesis import strategies as st

from gateway.batch_calls import _one
from gateway.booking_service import search_response
from gateway.search_wire import EncodedSearchResponse, encode_search, search_reply
from proto.gen.railraft.v1 import BatchCall, SearchRequest, SearchResponse, SeatClass
from store import booking_queries as bq

u32 = st.integers(0, 2**32 - 1)
i32 = st.integers(-(2**31), 2**31 - 1)
i64 = st.integers(-(2**63), 2**63 - 1)
text = st.text(max_size=30)
availability = st.builds(bq.ClassAvailability, st.sampled_from([c.name for c in SeatClass if c.value]), u32, u32,
                         i64, text)
result = st.builds(
    bq.SearchResult, st.integers(0, 2**64 - 1), text, i32, text, text, text, text, text, text, u32, u32, i64, i64,
    text, text, i32, i32, st.sampled_from(["SCHEDULED", "CANCELLED", ""]),
    st.lists(availability, max_size=5).map(tuple),
)


@settings(max_examples=300, deadline=None, derandomize=True)
@given(st.lists(result, max_size=6))
def test_same_bytes_as_betterproto(found) -> None:
    expected = search_response(found)
    wire = encode_search(found)
    assert wire == bytes(expected)
    assert SearchResponse().parse(wire) == expected


def test_the_reply_goes_through_grpclib_and_batch_encoding_unchanged() -> None:
    found = [bq.SearchResult(
        812, "2026-12-01", 12047, "Bench Express 47", "EXPRESS", "BS018", "Station 18", "BS038", "Station 38", 4, 8,
        1780284730000, 1780294730000, "2026-12-01 08:00", "2026-12-01 10:46", 420, 166, "SCHEDULED",
        (bq.ClassAvailability("AC2", 96, 95, 180000, "812:AC2:BS018:BS038"),
         bq.ClassAvailability("SLEEPER", 576, 0, 29400, "812:SLEEPER:BS018:BS038")),
    )]
    reply, expected = search_reply(found), bytes(search_response(found))
    assert isinstance(reply, SearchResponse) and isinstance(reply, EncodedSearchResponse)
    assert ProtoCodec().encode(reply, SearchResponse) == expected  # what a unary reply goes out as
    back = SearchResponse().parse(expected)
    assert [(c.seat_class, c.free_seats) for c in back.results[0].classes] == [(SeatClass.AC2, 95),
                                                                               (SeatClass.SLEEPER, 0)]

    async def handler(stream) -> None:  # what a generated __rpc_search does with its reply
        await stream.send_message(reply)

    handlers = {"Search": Handler(handler, Cardinality.UNARY_UNARY, SearchRequest, SearchResponse)}
    result = asyncio.run(_one(handlers, BatchCall(method="Search", request=b""), None))
    assert result.status == 0 and result.reply == expected  # what a Batch call's result carries
